"""Hand-made hospitals and audit traces for the detection tests.

A small care context built from FHIR resources (the conventions of the care context:
login identifiers on Practitioner, roles on PractitionerRole, Devices for applications)
and a `Trace` that writes access events in time order with readable helpers: `chart`
(a burst of reads of one patient, as a person opening a chart), `day_of_work` (a
normal day of an account), and single events.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from sentinelle.context import CareContext
from sentinelle.detect import Alert, Engine, Settings, Signal, load_settings
from sentinelle.events import AccessEvent, format_time, parse_time

LOGIN = "urn:sentinelle:login"
INS = "urn:oid:1.2.250.1.213.1.4.8"
ROLE = "urn:sentinelle:role"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
TAGS = "https://sentinelle.health/tags"
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
#: Monday 6 January 2025, 00:00 in Paris (23:00 UTC the day before).
T0 = parse_time("2025-01-05T23:00:00Z")

#: Patients of each department, treated during the whole trail (so department staff are explained).
CARDIO = [f"Patient/c{i}" for i in range(1, 301)]
ONCO = [f"Patient/o{i}" for i in range(1, 301)]
#: Patients nobody treats during the trail.
ARCHIVE = [f"Patient/a{i}" for i in range(1, 1001)]
VIP = "Patient/vip1"
DECOY = "Patient/decoy1"
COWORKER = "Patient/staff-nurse2"  # nurse2 of cardiology, as a patient (treated in onco)
RELATIVE = "Patient/rel-dr1"  # same family name and address as dr1 (treated in onco)
OWN = "Patient/self-dr1"  # dr1 as a patient

#: Test settings: short learning, small peer groups.
FAST = {"learning_days": 3, "min_history_days": 2, "min_peer_days": 4}


def settings(**overrides: Any) -> Settings:
    """Test settings (short learning) with overrides."""
    return load_settings({**FAST, **overrides})


def _org(oid: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": oid, "name": oid}


def _staff(pid: str, login: str, dept: str, code: str, **extra: Any) -> list[dict[str, Any]]:
    prac: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": pid,
        "identifier": [{"system": LOGIN, "value": login}],
        "name": [{"family": extra.get("family", pid.capitalize()), "given": ["Sam"]}],
    }
    if "ins" in extra:
        prac["identifier"].append({"system": INS, "value": extra["ins"]})
    if "address" in extra:
        prac["address"] = [{"line": [extra["address"]], "postalCode": "76000", "city": "Rouen"}]
    if "birth" in extra:
        prac["birthDate"] = extra["birth"]
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": f"role-{pid}",
        "practitioner": {"reference": f"Practitioner/{pid}"},
        "organization": {"reference": f"Organization/{dept}"},
        "code": [{"coding": [{"system": ROLE, "code": code}]}],
    }
    period: dict[str, str] = {}
    if "start" in extra:
        period["start"] = extra["start"]
    if "end" in extra:
        period["end"] = extra["end"]
    if period:
        role["period"] = period
    return [prac, role]


def _device(did: str, login: str, kind: str, dept: str) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": did,
        "identifier": [{"system": LOGIN, "value": login}],
        "type": {"text": kind},
        "owner": {"reference": f"Organization/{dept}"},
    }


def _patient(ref: str, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": ref.split("/", 1)[1]}
    if extra.get("restricted"):
        res["meta"] = {"security": [{"system": CONF, "code": "R"}]}
    if extra.get("decoy"):
        res["meta"] = {"tag": [{"system": TAGS, "code": "decoy"}]}
    if "ins" in extra:
        res["identifier"] = [{"system": INS, "value": extra["ins"]}]
    if "family" in extra:
        res["name"] = [{"family": extra["family"], "given": [extra.get("given", "Alex")]}]
    if "address" in extra:
        res["address"] = [{"line": [extra["address"]], "postalCode": "76000", "city": "Rouen"}]
    if "birth" in extra:
        res["birthDate"] = extra["birth"]
    return res


def _stay(eid: str, patient: str, dept: str, days: int = 60) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "in-progress",
        "class": {"code": "IMP"},
        "subject": {"reference": patient},
        "serviceProvider": {"reference": f"Organization/{dept}"},
        "period": {"start": format_time(T0 - 2 * DAY), "end": format_time(T0 + days * DAY)},
    }


def hospital() -> CareContext:
    """Two departments, their staff and patients, a VIP, a decoy, staff who are patients."""
    res: list[dict[str, Any]] = [_org("cardio"), _org("onco"), _org("it"), _org("urc")]
    res += _staff("dr1", "dr1", "cardio", "doctor", family="Durand", address="1 rue Haute",
                  ins="180017500000001")
    for k in range(2, 7):
        res += _staff(f"dr{k}", f"dr{k}", "cardio", "doctor")
    res += _staff("nurse2", "nurse2", "cardio", "nurse", ins="280017500000002")
    for k in range(3, 9):
        res += _staff(f"nurse{k}", f"nurse{k}", "cardio", "nurse")
    res += _staff("onc1", "onc1", "onco", "doctor")
    res += _staff("leaver", "leaver", "cardio", "nurse", end=format_time(T0 + 5 * DAY))
    res += _staff("newhire", "newhire", "cardio", "nurse", start=format_time(T0 + 6 * DAY))
    res += _staff("it1", "it1", "it", "it")
    res += _staff("res1", "res1", "urc", "research")
    res.append(_device("dev-rdv", "rdv", "api_client", "cardio"))
    res.append(_device("dev-export", "export", "application", "it"))
    for k, p in enumerate(CARDIO):
        res.append(_patient(p))
        res.append(_stay(f"ec{k}", p, "cardio"))
    for k, p in enumerate(ONCO):
        res.append(_patient(p))
        res.append(_stay(f"eo{k}", p, "onco"))
    res += [_patient(p) for p in ARCHIVE]
    res.append(_patient(VIP, restricted=True))
    res.append(_stay("evip", VIP, "onco"))
    res.append(_patient(DECOY, decoy=True))
    res.append(_patient(COWORKER, ins="280017500000002"))
    res.append(_stay("ecow", COWORKER, "onco"))
    res.append(_patient(RELATIVE, family="Durand", address="1 rue Haute"))
    res.append(_stay("erel", RELATIVE, "onco"))
    res.append(_patient(OWN, ins="180017500000001"))
    res.append(_stay("eown", OWN, "onco"))
    return CareContext.from_resources(res)


_CONTEXT: CareContext | None = None


def context() -> CareContext:
    """The test hospital, built once."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = hospital()
    return _CONTEXT


class Trace:
    """Access events of a test, kept in time order when read."""

    def __init__(self, seed: int = 0) -> None:
        self.events: list[AccessEvent] = []
        self.rng = random.Random(seed)

    def add(
        self,
        t: int,
        account: str,
        patient: str | None = None,
        action: str = "read",
        *,
        address: str = "10.1.1.10",
        categories: int = 32,
        client: str = "dpi-web",
        kind: str = "human",
        query: str = "",
        purpose: str = "",
    ) -> int:
        """One event; returns its time."""
        self.events.append(AccessEvent(
            id=f"e{len(self.events)}",
            time=t,
            account=account,
            action=action,
            actor_kind=kind,
            patients=(patient,) if patient else (),
            categories=categories,
            client=client,
            address=address,
            query=query,
            purpose=purpose,
        ))
        return t

    def chart(self, t: int, account: str, patient: str, reads: int = 6, **kw: Any) -> int:
        """A person opening a chart: identity first, then a burst of clinical reads; returns the end time."""
        self.add(t, account, patient, categories=3, **kw)
        for _ in range(reads - 1):
            t += self.rng.randint(400, 3000)
            self.add(t, account, patient, categories=32, **kw)
        return t

    def day_of_work(self, day: int, account: str, patients: list[str], n: int = 12, start_hour: float = 8.5,
                    **kw: Any) -> int:
        """A normal working day: `n` charts of `patients`, a few minutes apart; returns the end time."""
        t = T0 + day * DAY + int(start_hour * HOUR)
        for _ in range(n):
            t = self.chart(t, account, self.rng.choice(patients), **kw)
            t += self.rng.randint(3, 25) * MIN
        return t

    def history(self, days: Iterable[int], accounts: dict[str, list[str]], n: int = 12, **kw: Any) -> None:
        """Normal days of work of several accounts (account -> patients it treats)."""
        for d in days:
            if (d % 7) in (5, 6):
                continue  # weekend
            for account, patients in accounts.items():
                self.day_of_work(d, account, patients, n=n, **kw)

    def sorted(self) -> list[AccessEvent]:
        """The events in time order (stable for equal times)."""
        return sorted(self.events, key=lambda e: e.time)


class Run:
    """What one engine run produced: every alert version and every signal weighed."""

    def __init__(self, engine: Engine, alerts: list[Alert], signals: list[Signal]) -> None:
        self.engine = engine
        self.alerts = alerts
        self.signals = signals

    def kinds(self, account: str | None = None) -> set[str]:
        """Signal kinds seen (for one account)."""
        return {s.kind for s in self.signals if account is None or s.account == account}

    def codes(self, account: str | None = None) -> set[str]:
        """Evidence codes of the signals seen (for one account)."""
        return {e.code for s in self.signals if account is None or s.account == account for e in s.evidence}

    def alerted(self, account: str) -> list[Alert]:
        """Alert versions about one account."""
        return [a for a in self.alerts if a.account == account]


def run(events: Iterable[AccessEvent], settings_: Settings | None = None,
        detectors: Iterable[str] | None = None) -> Run:
    """Feed events to a fresh engine on the test hospital."""
    engine = Engine(context(), settings_ or settings(), detectors)
    signals: list[Signal] = []
    engine.on_signal = signals.append
    alerts = engine.process_batch(events)
    alerts += engine.flush()
    return Run(engine, alerts, signals)


def ward_history(trace: Trace, days: int = 14) -> None:
    """Two weeks of normal cardiology work by the ward's doctors and nurses."""
    staff = {f"dr{k}": CARDIO for k in range(1, 7)}
    staff |= {f"nurse{k}": CARDIO for k in range(2, 9)}
    trace.history(range(days), staff)


def everything() -> Trace:
    """Two weeks of normal work and, after learning, something for every detector to find."""
    trace = Trace(seed=7)
    ward_history(trace, days=12)
    t = T0 + 1 * HOUR
    for d in range(12):  # the export application and the booking client, every day
        t = T0 + d * DAY + 1 * HOUR
        for p in ARCHIVE[:30]:
            trace.add(t, "export", p, kind="application", client="export-job", address="10.9.9.9", categories=3)
            t += 2000
        t = T0 + d * DAY + 10 * HOUR
        for k in range(20):
            trace.add(t, "rdv", CARDIO[(d * 20 + k) % len(CARDIO)], kind="api_client", client="rdv",
                      address="10.7.7.7", categories=9)
            t += 60_000
    day = T0 + 12 * DAY
    trace.add(day + 2 * HOUR, "export", ARCHIVE[5], kind="application", client="export-job",
              address="185.220.101.7", categories=3)  # context: new address of an application
    t = day + 9 * HOUR
    for p in ARCHIVE[200:320]:  # volume, care, automation: a script through a doctor's account
        trace.add(t, "dr2", p, categories=3)
        t += 20_000
    trace.chart(day + 11 * HOUR, "nurse4", VIP, purpose="BTG")  # snooping
    trace.chart(day + 12 * HOUR, "nurse5", DECOY)  # decoy
    t = day + 14 * HOUR
    for p in ONCO[:25]:  # api client out of scope
        trace.add(t, "rdv", p, kind="api_client", client="rdv", address="10.7.7.7", categories=9)
        t += 30_000
    return trace
