"""Snooping: curiosity about people the account holder knows, or about famous patients.

The classic insider case (77 % of snooping is family): a restricted or VIP record, a
coworker's record, a relative's record (same family name and address), or the account
holder's own record (which goes through the patient's right of access, not through the
clinical application), opened without any care relationship; a break-the-glass without
one. With a care relationship these are normal work (staff and VIPs are treated too). Only record
openings count: a patient listed among the homonyms of a name search was not opened.
For an account whose work is mostly unexplained (research, coding), an unexplained
access to a known person tells less, so the scores shrink with its usual unexplained
share; snooping is judged only once that share is learned (not during learning). A
person nobody treats at the time draws less curiosity than one just admitted, so the
scores also shrink (`snoop_not_in_care_factor`) for patients not in care anywhere.
A restricted record opened without care is just short of an alert alone: with a
break-the-glass (which hospital software demands to open one) it alerts.
"""

from __future__ import annotations

from typing import ClassVar

from sentinelle.detect.detectors.base import DECOY, RESTRICTED, Detector, Observation, ev
from sentinelle.detect.signal import Evidence, Signal

__all__ = ["SnoopingDetector"]

_BREAK_GLASS = frozenset({"BTG", "EMER"})


class SnoopingDetector(Detector):
    """Unexplained access to restricted, coworker or relative records; access to one's own record."""

    name: ClassVar[str] = "snooping"
    hooks: ClassVar[frozenset[str]] = frozenset({"open"})
    kinds: ClassVar[dict[str, tuple[str, str]]] = {
        "snoop_restricted": ("consultation d'un dossier protégé sans relation de soins",
                             "restricted record opened without a care relationship"),
        "snoop_coworker": ("consultation du dossier d'un collègue sans relation de soins",
                           "coworker's record opened without a care relationship"),
        "snoop_relative": ("consultation du dossier d'un proche sans relation de soins",
                           "relative's record opened without a care relationship"),
        "snoop_own": ("consultation de son propre dossier", "own record opened"),
        "break_glass": ("bris de glace sans relation de soins", "break-the-glass access without a care relationship"),
    }

    def applies(self, kind: str) -> bool:
        return kind == "human"

    def on_open(self, state: object, obs: Observation) -> Signal | list[Signal] | None:
        if obs.flags & DECOY:
            return None
        ctx = obs.context
        account = obs.acc.account
        patient = obs.patient
        s = self.settings
        if obs.reason != 0:
            return None
        # For an account whose work is mostly unexplained (research, coding), an unexplained
        # access to a known person is less telling: scale by its usual unexplained share.
        damp = min(1.0, (0.15 / max(obs.acc.care_p0, 0.15)) ** 0.5)
        # Curiosity follows events: the admission of a public figure, a colleague's or a
        # relative's visit to the emergency department. A record nobody is treating at the
        # moment is more often opened by batch work (a recall, coding) than by a snooper.
        if obs.in_care != 1:
            damp *= s.snoop_not_in_care_factor
        if ctx.is_own_record(account, patient):
            return self._one(obs, s.snoop_own_score * damp, "snoop_own", ev(
                "snooping.own_record",
                f"le titulaire du compte a ouvert son propre dossier ({patient}) sans relation de soins",
                f"the account holder opened their own record ({patient}) without a care relationship",
                patient=patient,
            ))
        found = self._about_person(obs, damp)
        e = obs.event
        if e.action == "break_glass" or e.purpose.upper() in _BREAK_GLASS:
            how = e.purpose or e.action
            glass = self._one(obs, s.break_glass_score * damp, "break_glass", ev(
                "snooping.break_glass",
                f"bris de glace ({how}) pour ouvrir le dossier {patient}, sans relation de soins",
                f"break-the-glass ({how}) to open record {patient}, without a care relationship",
                patient=patient,
            ))
            return [glass] if found is None else [found, glass]
        return found

    def _about_person(self, obs: Observation, damp: float) -> Signal | None:
        """Who the unexplained record belongs to: a restricted patient, a relative, a coworker."""
        s = self.settings
        ctx = obs.context
        account = obs.acc.account
        patient = obs.patient
        if obs.flags & RESTRICTED:
            return self._one(obs, s.snoop_restricted_score * damp, "snoop_restricted", ev(
                "snooping.restricted",
                f"dossier protégé (VIP/confidentiel) {patient} ouvert sans relation de soins",
                f"restricted (VIP/confidential) record {patient} opened without a care relationship",
                patient=patient,
            ))
        if ctx.is_relative(account, patient):
            return self._one(obs, s.snoop_relative_score * damp, "snoop_relative", ev(
                "snooping.relative",
                f"dossier {patient} d'un proche (même nom de famille et même adresse) ouvert sans "
                "relation de soins",
                f"record {patient} of a relative (same family name and address) opened without a "
                "care relationship",
                patient=patient,
            ))
        if ctx.is_coworker(account, patient):
            return self._one(obs, s.snoop_coworker_score * damp, "snoop_coworker", ev(
                "snooping.coworker",
                f"dossier {patient} d'un collègue du même service ouvert sans relation de soins",
                f"record {patient} of a coworker in the same department opened without a care "
                "relationship",
                patient=patient,
            ))
        return None

    def _one(self, obs: Observation, score: float, kind: str, evidence: Evidence) -> Signal:
        return self.signal(obs, score, kind, [evidence], patients=(obs.patient,))
