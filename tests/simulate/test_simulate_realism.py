"""The small hospital looks like a real one (REALISM.md), and its care context is a fair test.

Figures are measured on the benign trail of seed 0 (attacks excluded): emergency arrivals
at night, admissions, weekday/weekend activity, chart-opening bursts, shared workstations,
events per role, failures, bulk readers, and the share of accesses the care context explains.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from sentinelle.events import parse_time

PARIS = ZoneInfo("Europe/Paris")
WARDS = {"dept-cardio", "dept-med", "dept-surg", "dept-peds", "dept-mat", "dept-onco"}


def _local(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(PARIS)


def _ndjson(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


class _Code(msgspec.Struct, frozen=True):
    code: str = ""


class _Who(msgspec.Struct, frozen=True):
    identifier: dict[str, str] = {}


class _Network(msgspec.Struct, frozen=True):
    address: str = ""


class _Agent(msgspec.Struct):
    requestor: bool = False
    who: _Who = _Who()
    network: _Network = _Network()


class _What(msgspec.Struct, frozen=True):
    reference: str = ""


class _Entity(msgspec.Struct):
    role: _Code = _Code()
    what: _What = _What()


class _Event(msgspec.Struct):
    id: str
    recorded: str
    outcome: str
    subtype: list[_Code]
    agent: list[_Agent]
    entity: list[_Entity] = []


@pytest.fixture(scope="module")
def trail(small: Path) -> dict[str, Any]:
    """Benign events of the small hospital, reduced to what the figures need."""
    roles = {}
    logins = {}
    for r in _ndjson(small / "context" / "Practitioner.ndjson"):
        for i in r["identifier"]:
            if i["system"] == "urn:sentinelle:login":
                logins[r["id"]] = i["value"]
    for r in _ndjson(small / "context" / "PractitionerRole.ndjson"):
        login = logins[r["practitioner"]["reference"].split("/")[1]]
        roles[login] = (r["code"][0]["coding"][0]["code"], r["organization"]["reference"].split("/")[1])
    attack_ids = {json.loads(line)["id"] for line in (small / "labels" / "attack_events.ndjson").open()}
    events = []
    decoder = msgspec.json.Decoder(_Event)
    with (small / "events" / "auditevents.ndjson").open("rb") as f:
        for line in f:
            ev = decoder.decode(line)
            if ev.id in attack_ids:
                continue
            req = next(a for a in ev.agent if a.requestor)
            patient = next((e.what.reference for e in ev.entity if e.role.code == "1"), "")
            events.append((parse_time(ev.recorded), req.who.identifier["value"], req.network.address,
                           ev.subtype[0].code, ev.outcome, patient))
    return {"events": events, "roles": roles}


def test_emergency_arrivals_at_night_and_admissions(small: Path) -> None:
    manifest = json.loads((small / "manifest.json").read_text())
    start = parse_time(manifest["period"]["start"])
    visits, night, emer_ids = 0, 0, set()
    encounters = _ndjson(small / "context" / "Encounter.ndjson")
    for e in encounters:
        if e["class"]["code"] == "EMER" and parse_time(e["period"]["start"]) >= start:
            hour = _local(parse_time(e["period"]["start"])).hour
            visits += 1
            night += hour >= 18 or hour < 6
            emer_ids.add(e["id"])
    admitted = sum(1 for e in encounters if e.get("partOf", {}).get("reference", "")[10:] in emer_ids
                   and e["class"]["code"] == "IMP")
    assert visits > 300
    # ~36 % between 18:00 and 06:00 (WSHA); bounds are three standard deviations for ~700 visits.
    assert 0.30 <= night / visits <= 0.43, "~36 % of emergency arrivals between 18:00 and 06:00 (WSHA)"
    assert 0.15 <= admitted / visits <= 0.26, "~20 % of emergency visits end in admission (DREES)"


def test_ward_activity_weekday_against_weekend(trail: dict[str, Any]) -> None:
    day: Counter[Any] = Counter()
    night: Counter[Any] = Counter()
    for t, account, _addr, _sub, _outcome, _p in trail["events"]:
        role = trail["roles"].get(account)
        if role is None or role[1] not in WARDS:
            continue
        lt = _local(t)
        if 8 <= lt.hour < 18:
            day[lt.date()] += 1
        elif lt.hour >= 23 or lt.hour < 6:
            night[(lt if lt.hour >= 23 else lt - timedelta(days=1)).date()] += 1
    weekday = statistics.mean(v for k, v in day.items() if k.weekday() < 5)
    weekend = statistics.mean(v for k, v in day.items() if k.weekday() >= 5)
    assert 1.4 <= weekday / weekend <= 2.2, "Blecker 2013: 1.76x more inpatient EHR activity on weekdays"
    weeknights = statistics.mean(v for k, v in night.items() if k.weekday() < 4)
    saturday = statistics.mean(v for k, v in night.items() if k.weekday() == 5)
    assert 0.85 <= weeknights / saturday <= 1.6, "Blecker 2013: 1.14x at night"


def test_chart_openings_are_bursts(trail: dict[str, Any]) -> None:
    bursts: list[int] = []
    current: dict[tuple[str, str], list[int]] = {}
    for t, account, _addr, sub, _outcome, patient in trail["events"]:
        role = trail["roles"].get(account, ("", ""))[0]
        if role not in ("doctor", "nurse") or sub not in ("read", "search-type") or not patient:
            continue
        c = current.get((account, patient))
        if c is not None and t - c[1] <= 60_000:
            c[0] += 1
            c[1] = t
        else:
            if c is not None:
                bursts.append(c[0])
            current[(account, patient)] = [1, t]
    bursts.extend(c[0] for c in current.values())
    assert 5 <= statistics.median(bursts) <= 40, "opening a chart issues 5-40 reads and searches"
    assert max(bursts) <= 80


def test_network_addresses_are_shared_and_many(trail: dict[str, Any]) -> None:
    by_account: defaultdict[str, set[str]] = defaultdict(set)
    by_address: defaultdict[str, set[str]] = defaultdict(set)
    for _t, account, addr, _sub, _outcome, _p in trail["events"]:
        if account in trail["roles"]:
            by_account[account].add(addr)
            by_address[addr].add(account)
    several = sum(len(a) >= 2 for a in by_account.values()) / len(by_account)
    assert several >= 0.9, "people use several addresses (roaming, VDI, home)"
    assert sum(len(u) >= 5 for u in by_address.values()) >= 20, "ward workstations are shared"
    assert any(not a.startswith("10.") for a in by_address), "some work is done from home"


def test_events_per_role_and_failures(trail: dict[str, Any]) -> None:
    per_role: Counter[str] = Counter()
    failures = logins = failed_logins = 0
    for _t, account, _addr, sub, outcome, _p in trail["events"]:
        per_role[trail["roles"].get(account, ("device", ""))[0]] += 1
        failures += outcome != "0"
        logins += sub == "110122"
        failed_logins += sub == "110122" and outcome != "0"
    human = sum(v for k, v in per_role.items() if k != "device")
    assert (per_role["doctor"] + per_role["nurse"]) / human >= 0.6
    for role in ("secretary", "admissions", "billing", "coding", "pharmacist", "technician", "research", "it"):
        assert per_role[role] > 0, role
    assert 0.002 <= failures / len(trail["events"]) <= 0.03
    assert 0.01 <= failed_logins / logins <= 0.08


def test_benign_bulk_readers_and_fixed_time_export(trail: dict[str, Any]) -> None:
    per_day: defaultdict[tuple[str, Any], set[str]] = defaultdict(set)
    export_hours = set()
    for t, account, addr, _sub, _outcome, patient in trail["events"]:
        if patient:
            per_day[(account, _local(t).date())].add(patient)
        if account == "export-regional":
            export_hours.add((_local(t).hour, addr))
    bulk = {acc for (acc, _d), ps in per_day.items() if len(ps) >= 50 and acc in trail["roles"]}
    assert any(trail["roles"][a][0] == "research" for a in bulk), "researchers read 50-400 records a day"
    assert export_hours == {(2, "10.1.0.22")}, "the nightly export runs at 02:00 from one address"


def test_care_context_explains_benign_not_attacks(small: Path) -> None:
    from sentinelle.simulate.evaluate import explained_shares

    benign, attack, note = explained_shares(small)
    if benign is None:
        pytest.skip(note)
    assert benign >= 0.95, "> 94 % of accesses are explained by care relationships (Fabbri & LeFevre)"
    assert benign <= 0.99, "a few percent stay unexplained (consults, first accesses, group work)"
    assert attack is not None and attack <= 0.05
