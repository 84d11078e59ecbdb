"""The simulator's output: deterministic, complete, in BALP shapes, with labels that never leak."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sentinelle.errors import ConfigError
from sentinelle.events import parse_time
from sentinelle.simulate import SIZES, simulate
from sentinelle.simulate.attacks import KINDS

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RECORDED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ACTION_OF = {"read": "R", "search-type": "E", "create": "C", "update": "U", "delete": "D"}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _codes(agent: dict[str, Any]) -> set[str]:
    return {c["code"] for c in agent["type"]["coding"]}


def test_same_seed_gives_identical_files(tiny: Path, tmp_path: Path) -> None:
    # Another process with another hash seed: no output may depend on set or dict hashing.
    again = tmp_path / "again"
    code = f"from sentinelle.simulate import simulate; simulate({str(again)!r}, size='tiny', seed=0)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert _digest(again) == _digest(tiny)


def test_another_seed_gives_another_hospital(tiny: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    simulate(other, size="tiny", seed=1)
    a, b = _digest(tiny), _digest(other)
    assert a.keys() == b.keys()
    assert a["events/auditevents.ndjson"] != b["events/auditevents.ndjson"]
    assert a["context/Patient.ndjson"] != b["context/Patient.ndjson"]


def test_progress_and_unknown_size(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    simulate(tmp_path / "p", size="tiny", seed=2, progress=lambda done, total: seen.append((done, total)))
    days = SIZES["tiny"].days
    assert seen == [(d, days) for d in range(1, days + 1)]
    with pytest.raises(ConfigError, match="unknown simulation size"):
        simulate(tmp_path / "x", size="huge")


def test_layout_and_manifest(tiny: Path) -> None:
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert manifest["size"] == "tiny" and manifest["seed"] == 0
    for rel in manifest["files"]["context"] + manifest["files"]["labels"] + [manifest["files"]["events"]]:
        assert (tiny / rel).is_file(), rel
    for name in ("Organization", "Practitioner", "PractitionerRole", "Device", "Patient", "Encounter",
                 "Appointment", "CareTeam"):
        assert (tiny / "context" / f"{name}.ndjson").stat().st_size > 0, name
    lines = (tiny / "events" / "auditevents.ndjson").read_bytes().count(b"\n")
    assert lines == manifest["counts"]["events"] > 20_000
    for name, count in manifest["counts"]["context"].items():
        assert (tiny / "context" / f"{name}.ndjson").read_bytes().count(b"\n") == count


def test_events_follow_balp(tiny: Path, tiny_events: list[dict[str, Any]]) -> None:
    events = tiny_events
    manifest = json.loads((tiny / "manifest.json").read_text())
    start, end = parse_time(manifest["period"]["start"]), parse_time(manifest["period"]["end"])
    last = 0
    seen_ops: set[str] = set()
    for ev in events:
        assert ev["resourceType"] == "AuditEvent" and ev["id"]
        assert RECORDED.match(ev["recorded"]), ev["recorded"]
        t = parse_time(ev["recorded"])
        assert start <= t < end
        assert t >= last, "events are in time order"
        last = t
        assert ev["outcome"] in ("0", "4", "8")
        requestors = [a for a in ev["agent"] if a.get("requestor")]
        assert len(requestors) == 1
        req = requestors[0]
        assert req["who"]["identifier"]["value"]
        assert req["network"]["address"]
        if ev["type"]["code"] == "110114":  # login / logout
            assert ev["subtype"][0]["code"] in ("110122", "110123")
            seen_ops.add("login")
            continue
        assert ev["type"]["code"] == "rest"
        sub = ev["subtype"][0]["code"]
        seen_ops.add(sub)
        assert ev["action"] == ACTION_OF[sub]
        codes = [_codes(a) for a in ev["agent"]]
        assert any("110150" in c for c in codes), "the client application is named"
        server = next(a for a in ev["agent"] if a["who"].get("reference") == "Device/dpi")
        client = next(a for a, c in zip(ev["agent"], codes, strict=True)
                      if c & {"110152", "110153"} and a is not server)
        # BALP: the client is the Destination of reads and writes, the Source of searches.
        if sub == "search-type":
            assert "110153" in _codes(client) and "110152" in _codes(server)
        else:
            assert "110152" in _codes(client) and "110153" in _codes(server)
        assert client["network"]["address"] == req["network"]["address"]
        patients = [e for e in ev["entity"] if e["role"]["code"] == "1"]
        assert len(patients) <= 1
        if patients:
            assert patients[0]["type"]["code"] == "1"
            assert patients[0]["what"]["reference"].startswith("Patient/")
        if sub == "search-type":
            query = next(e for e in ev["entity"] if e["role"]["code"] == "24")
            assert base64.b64decode(query["query"]).startswith(b"GET /fhir/")
        else:
            data = [e for e in ev["entity"] if e["role"]["code"] == "4"]
            assert len(data) == 1 and "/" in data[0]["what"]["reference"]
    assert {"read", "search-type", "create", "update", "delete", "login"} <= seen_ops
    failures = sum(ev["outcome"] != "0" for ev in events)
    assert 0.001 < failures / len(events) < 0.05
    sizes = sorted(len(msgspec.json.encode(ev)) for ev in events[::50])
    assert 900 < sizes[len(sizes) // 2] < 2500, "lines are the size of real BALP events"


def test_every_attack_kind_is_planted_with_events(tiny: Path, tiny_events: list[dict[str, Any]]) -> None:
    attacks = json.loads((tiny / "labels" / "attacks.json").read_text())
    assert sorted(a["kind"] for a in attacks) == sorted(KINDS)
    manifest = json.loads((tiny / "manifest.json").read_text())
    start, end = parse_time(manifest["period"]["start"]), parse_time(manifest["period"]["end"])
    clean_until = start + (end - start) // 3
    ids = {ev["id"]: ev for ev in tiny_events}
    labelled: dict[str, list[dict[str, Any]]] = {a["id"]: [] for a in attacks}
    with (tiny / "labels" / "attack_events.ndjson").open() as f:
        for line in f:
            row = json.loads(line)
            labelled[row["attack"]].append(row)
    for a in attacks:
        rows = labelled[a["id"]]
        assert a["n_events"] == len(rows) > 0, a["id"]
        assert a["seed_case"] and a["description"] and a["addresses"]
        assert parse_time(a["start"]) >= clean_until, f"{a['id']} starts in the learning period"
        patients = set()
        for row in rows:
            ev = ids[row["id"]]
            assert parse_time(ev["recorded"]) == row["time_ms"]
            requestor = next(x for x in ev["agent"] if x.get("requestor"))
            assert requestor["who"]["identifier"]["value"] == a["account"]
            patients.update(row["patients"])
        assert len(patients) == a["n_patients"]
    sizes = {a["kind"]: a["n_patients"] for a in attacks}
    # Bulk thefts are far bigger than snooping.
    assert sizes["privileged_app_bulk"] > 300 and sizes["api_client_overreach"] > 100
    # Snooping targets one person (a name search may list a few homonyms too).
    for kind in ("vip_snooping", "coworker_snooping", "relative_snooping"):
        assert 1 <= sizes[kind] <= 6, kind


def test_traps_are_labelled(tiny: Path) -> None:
    traps = json.loads((tiny / "labels" / "traps.json").read_text())
    kinds = {t["kind"] for t in traps}
    assert {"mass_casualty", "month_end_billing", "recall_campaign", "new_hire", "covering_doctor",
            "vip_admission"} <= kinds
    attackers = {a["account"] for a in json.loads((tiny / "labels" / "attacks.json").read_text())}
    for t in traps:
        assert t["accounts"] and not attackers & set(t["accounts"])
        assert parse_time(t["start"]) < parse_time(t["end"])


def test_labels_never_leak_into_events_or_context(tiny: Path, tiny_events: list[dict[str, Any]]) -> None:
    attacks = json.loads((tiny / "labels" / "attacks.json").read_text())
    forbidden = [b"atk-", b"trap-", b"attack", b"snoop", b"exfiltr", b"Mediboard", b"Doctolib", b"decoy\"}",
                 b"MedecinDirect", b"Normand"]
    for path in [tiny / "events" / "auditevents.ndjson", *sorted((tiny / "context").iterdir())]:
        data = path.read_bytes()
        for word in forbidden:
            if word == b'decoy"}' and path.name == "Patient.ndjson":
                continue  # decoy records are tagged in the context on purpose (honeytokens)
            assert word not in data, f"{word!r} in {path.name}"
    # Malicious and benign events have the same shape: no field tells them apart.
    attack_ids = {json.loads(line)["id"] for line in (tiny / "labels" / "attack_events.ndjson").open()}
    shapes: dict[bool, set[tuple[str, ...]]] = {True: set(), False: set()}
    for ev in tiny_events:
        shapes[ev["id"] in attack_ids].add(tuple(sorted(ev)))
    assert shapes[True] <= shapes[False]
    assert {a["account"] for a in attacks}


def test_reader_reads_the_trail_without_rejects(tiny: Path) -> None:
    from sentinelle.sources import Quarantine, open_events

    quarantine = Quarantine()
    n = 0
    kinds: set[str] = set()
    for ev in open_events([tiny / "events"], quarantine):
        n += 1
        kinds.add(ev.actor_kind)
        assert ev.account and ev.address
    assert quarantine.count == 0, quarantine.by_reason
    assert n == json.loads((tiny / "manifest.json").read_text())["counts"]["events"]
    assert "human" in kinds
