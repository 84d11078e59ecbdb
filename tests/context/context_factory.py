"""Hand-made FHIR context resources for the care-context tests, and a synthetic hospital.

The small builders keep each test readable (one line per resource); `synthetic_hospital`
makes a hospital of a chosen size with the shapes the simulator emits, for the load and
`explain` benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.events import format_time, parse_time

LOGIN = "urn:sentinelle:login"
INS = "urn:oid:1.2.250.1.213.1.4.8"
IPP = "urn:oid:1.2.250.1.999"
ROLE = "urn:sentinelle:role"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
TAGS = "https://sentinelle.health/tags"
DAY = 86_400_000

Resource = dict[str, Any]


def t(iso: str) -> int:
    """Milliseconds of an ISO time (UTC)."""
    return parse_time(iso)


def _name(family: str | None, given: str | None) -> list[dict[str, Any]]:
    if family is None and given is None:
        return []
    return [{"family": family or "", "given": [given] if given else []}]


def _address(address: tuple[str, str] | None) -> list[dict[str, Any]]:
    if address is None:
        return []
    return [{"line": [address[0]], "postalCode": address[1], "city": "Rouen"}]


def organization(oid: str, name: str = "") -> Resource:
    return {"resourceType": "Organization", "id": oid, "name": name or oid}


def practitioner(
    pid: str,
    login: str | None = None,
    *,
    ins: str | None = None,
    rpps: str | None = None,
    family: str | None = None,
    given: str | None = None,
    birth: str | None = None,
    address: tuple[str, str] | None = None,
) -> Resource:
    identifiers = []
    if login:
        identifiers.append({"system": LOGIN, "value": login})
    if rpps:
        identifiers.append({"system": "urn:oid:1.2.250.1.71.4.2.1", "value": rpps})
    if ins:
        identifiers.append({"system": INS, "value": ins})
    res: Resource = {"resourceType": "Practitioner", "id": pid, "identifier": identifiers}
    if family or given:
        res["name"] = _name(family, given)
    if birth:
        res["birthDate"] = birth
    if address:
        res["address"] = _address(address)
    return res


def role(
    rid: str,
    pid: str,
    org: str | None,
    code: str,
    start: str | None = None,
    end: str | None = None,
    *,
    privileged: bool = False,
) -> Resource:
    codes = [{"coding": [{"system": ROLE, "code": code}]}]
    if privileged:
        codes.append({"coding": [{"system": ROLE, "code": "privileged"}]})
    res: Resource = {
        "resourceType": "PractitionerRole",
        "id": rid,
        "practitioner": {"reference": f"Practitioner/{pid}"},
        "code": codes,
    }
    if org:
        res["organization"] = {"reference": f"Organization/{org}"}
    if start or end:
        res["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    return res


def device(did: str, login: str, kind: str, owner: str | None = None, addresses: Sequence[str] = ()) -> Resource:
    res: Resource = {
        "resourceType": "Device",
        "id": did,
        "identifier": [{"system": LOGIN, "value": login}],
        "type": {"text": kind},
    }
    if owner:
        res["owner"] = {"reference": f"Organization/{owner}"}
    if addresses:
        res["note"] = [{"text": "addresses: " + ", ".join(addresses)}]
    return res


def patient(
    pid: str,
    *,
    ins: str | None = None,
    ipp: str | None = None,
    family: str | None = None,
    given: str | None = None,
    birth: str | None = None,
    address: tuple[str, str] | None = None,
    security: str | None = None,
    decoy: bool = False,
) -> Resource:
    identifiers = []
    if ins:
        identifiers.append({"system": INS, "value": ins})
    if ipp:
        identifiers.append({"system": IPP, "value": ipp})
    res: Resource = {"resourceType": "Patient", "id": pid, "identifier": identifiers}
    if family or given:
        res["name"] = _name(family, given)
    if birth:
        res["birthDate"] = birth
    if address:
        res["address"] = _address(address)
    meta: dict[str, Any] = {}
    if security:
        meta["security"] = [{"system": CONF, "code": security}]
    if decoy:
        meta["tag"] = [{"system": TAGS, "code": "decoy"}]
    if meta:
        res["meta"] = meta
    return res


def encounter(
    eid: str,
    pid: str,
    participants: Sequence[str],
    start: str,
    end: str | None = None,
    org: str | None = None,
    status: str | None = None,
) -> Resource:
    period = {"start": start}
    if end:
        period["end"] = end
    res: Resource = {
        "resourceType": "Encounter",
        "id": eid,
        "status": status or ("finished" if end else "in-progress"),
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{pid}"},
        "participant": [{"individual": {"reference": ref}} for ref in participants],
        "period": period,
    }
    if org:
        res["serviceProvider"] = {"reference": f"Organization/{org}"}
    return res


def appointment(
    aid: str,
    pid: str,
    participants: Sequence[str],
    start: str,
    end: str | None = None,
    *,
    source: str | None = None,
    status: str = "booked",
) -> Resource:
    res: Resource = {
        "resourceType": "Appointment",
        "id": aid,
        "status": status,
        "start": start,
        "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"}]
        + [{"actor": {"reference": ref}, "status": "accepted"} for ref in participants],
    }
    if end:
        res["end"] = end
    if source:
        res["meta"] = {"source": source}
    return res


def care_team(
    cid: str,
    pid: str,
    members: Sequence[str],
    start: str | None = None,
    end: str | None = None,
    status: str = "active",
) -> Resource:
    res: Resource = {
        "resourceType": "CareTeam",
        "id": cid,
        "status": status,
        "subject": {"reference": f"Patient/{pid}"},
        "participant": [{"member": {"reference": ref}} for ref in members],
    }
    if start or end:
        res["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    return res


def write_ndjson(path: Path, resources: Sequence[Resource]) -> Path:
    """Write resources as NDJSON, one per line."""
    enc = msgspec.json.Encoder()
    path.write_bytes(b"".join(enc.encode(r) + b"\n" for r in resources))
    return path


# --- a synthetic hospital for benchmarks -----------------------------------------------

DEPARTMENTS = [
    "cardio", "pneumo", "neuro", "onco", "urgences", "pediatrie", "maternite", "chirurgie",
    "orthopedie", "gastro", "nephro", "radiologie", "labo", "psy", "geriatrie", "rea",
    "dermato", "ophtalmo", "orl", "endocrino",
]  # fmt: skip
_ROLES = ["doctor"] * 3 + ["nurse"] * 6 + ["secretary"] * 2 + ["technician"]


def synthetic_hospital(
    patients: int = 75_000,
    staff: int = 4_000,
    episodes: int = 250_000,
    seed: int = 7,
    start: str = "2024-01-01T00:00:00Z",
    days: int = 365,
) -> Iterator[Resource]:
    """Resources of a hospital of the given size: departments, staff with roles, patients,
    encounters and appointments (three quarters encounters), a few care teams."""
    rng = random.Random(seed)
    t0 = t(start)
    for d in DEPARTMENTS:
        yield organization(d, d.title())
    staff_dept: list[str] = []
    for i in range(staff):
        dept = rng.choice(DEPARTMENTS)
        staff_dept.append(dept)
        yield practitioner(f"s{i}", f"user{i}", rpps=f"10{i:09d}")
        yield role(f"r{i}", f"s{i}", dept, rng.choice(_ROLES), start="2015-01-01")
    by_dept: dict[str, list[int]] = {}
    for i, d in enumerate(staff_dept):
        by_dept.setdefault(d, []).append(i)
    for j in range(patients):
        yield patient(f"p{j}", ins=f"{1_000_000_000_000 + j}", ipp=f"{j:08d}")
    for k in range(episodes):
        pid = f"p{rng.randrange(patients)}"
        dept = rng.choice(DEPARTMENTS)
        members = [f"Practitioner/s{rng.choice(by_dept[dept])}" for _ in range(rng.randint(1, 4))]
        begin = t0 + rng.randrange(days * DAY)
        if k % 4:
            length = rng.choice([2, 4, 24, 72, 120, 240]) * 3_600_000
            ongoing = rng.random() < 0.02
            yield encounter(
                f"e{k}", pid, members, format_time(begin), None if ongoing else format_time(begin + length), dept
            )
        else:
            yield appointment(f"a{k}", pid, members, format_time(begin), format_time(begin + 1_800_000))
    for c in range(patients // 50):
        pid = f"p{rng.randrange(patients)}"
        dept = rng.choice(DEPARTMENTS)
        members = [f"Practitioner/s{rng.choice(by_dept[dept])}" for _ in range(3)]
        yield care_team(f"ct{c}", pid, members, start=format_time(t0))


def write_hospital(folder: Path, resources: Iterator[Resource]) -> None:
    """Write resources as the simulator does: one NDJSON file per resource type."""
    enc = msgspec.json.Encoder()
    files: dict[str, Any] = {}
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for r in resources:
            kind = r["resourceType"]
            if kind not in files:
                files[kind] = (folder / f"{kind}.ndjson").open("wb")
            files[kind].write(enc.encode(r) + b"\n")
    finally:
        for f in files.values():
            f.close()
