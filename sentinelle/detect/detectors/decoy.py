"""Decoy patients: records declared as honeytokens; any access to one is a critical alert.

A decoy (FHIR `meta.tag` code `decoy` in the Sentinelle tag system) has no care, no
appointment, no reason to be opened by anyone: whoever opens it is browsing records
they have no business with, or a script is walking the patient table. No history is
needed, so it alerts even while the engine is still learning.
"""

from __future__ import annotations

from typing import ClassVar

from sentinelle.detect.detectors.base import DECOY, Detector, Observation, ev
from sentinelle.detect.signal import Signal

__all__ = ["DecoyDetector"]


class DecoyDetector(Detector):
    """Any opening of a decoy record: score 1."""

    name: ClassVar[str] = "decoy"
    hooks: ClassVar[frozenset[str]] = frozenset({"open"})
    kinds: ClassVar[dict[str, tuple[str, str]]] = {
        "decoy": ("consultation d'un dossier leurre", "access to a decoy record"),
    }
    learning_kinds: ClassVar[frozenset[str]] = frozenset({"decoy"})

    def on_open(self, state: object, obs: Observation) -> Signal | None:
        if not obs.flags & DECOY:
            return None
        action = obs.event.action
        return self.signal(
            obs,
            1.0,
            "decoy",
            [
                ev(
                    "decoy.access",
                    f"accès ({action}) au dossier leurre {obs.patient}, qu'aucun soin ne justifie",
                    f"{action} of decoy record {obs.patient}, which no care can justify",
                    patient=obs.patient,
                    action=action,
                )
            ],
            patients=(obs.patient,),
        )
