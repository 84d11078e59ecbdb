"""Helpers of the incident tests: a simulated hospital read once, with its planted truth."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from sentinelle.context import CareContext
from sentinelle.events import AccessEvent
from sentinelle.incident.directory import Directory
from sentinelle.sources import Quarantine, open_events

#: Attack kinds whose accesses come from the insider's usual workstation, mixed with their
#: own legitimate work: the investigator keeps the accesses the care context does not explain.
INSIDER_KINDS = {"low_and_slow", "vip_snooping", "coworker_snooping", "relative_snooping"}
#: Attack kinds run by a platform account from its usual servers: its owner department
#: treats many patients, so only encounters, appointments and care teams explain its reads.
PLATFORM_KINDS = {"platform_pull"}


class Hospital:
    """A simulated hospital: paths, events, context, directory and the planted truth."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.events_dir = root / "events"
        self.context_dir = root / "context"
        self.events: list[AccessEvent] = list(open_events([self.events_dir], Quarantine(None)))
        self.context = CareContext.load([self.context_dir])
        self.directory = Directory.load([self.context_dir])
        self.attacks: list[dict[str, object]] = json.loads((root / "labels" / "attacks.json").read_text())
        labels: dict[str, str] = {}
        with (root / "labels" / "attack_events.ndjson").open("rb") as f:
            for line in f:
                d = msgspec.json.decode(line)
                labels[d["id"]] = d["attack"]
        self.labels = labels
        # Truth per attack: patient -> category mask of the successful accesses, and the
        # patients touched only by failed ones.
        self.truth: dict[str, dict[str, int]] = {str(a["id"]): {} for a in self.attacks}
        self.failed: dict[str, set[str]] = {str(a["id"]): set() for a in self.attacks}
        for e in self.events:
            atk = labels.get(e.id)
            if atk is None:
                continue
            for p in e.patients:
                if e.outcome == "success":
                    self.truth[atk][p] = self.truth[atk].get(p, 0) | e.categories
                else:
                    self.failed[atk].add(p)

    def victims(self, attack: str) -> list[str]:
        """Patients whose data an attack returned, sorted."""
        return sorted(self.truth[attack])
