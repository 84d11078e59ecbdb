"""API-client detector: a connected software reading outside the scope it has served."""

from __future__ import annotations

from detect_traces import CARDIO, DAY, HOUR, ONCO, T0, Trace, run


def _booking(trace: Trace, days: range, patients: list[str], address: str = "10.7.7.7") -> None:
    for d in days:
        t = T0 + d * DAY + 10 * HOUR
        for k in range(30):
            trace.add(t, "rdv", patients[(d * 30 + k) % len(patients)], kind="api_client", client="rdv",
                      address=address, categories=8 | 1)
            t += 60_000


def test_client_reading_other_departments_alerts() -> None:
    trace = Trace()
    _booking(trace, range(10), CARDIO)
    _booking(trace, range(10, 11), ONCO)
    result = run(trace.sorted(), detectors=["api_client"])
    assert "api_scope" in result.kinds("rdv")
    evidence = " ".join(e.en for s in result.signals if s.kind == "api_scope" for e in s.evidence)
    assert "onco" in evidence
    assert result.alerted("rdv") or max(s.score for s in result.signals) >= 0.7


def test_client_staying_in_its_scope_passes() -> None:
    trace = Trace()
    _booking(trace, range(12), CARDIO)
    result = run(trace.sorted(), detectors=["api_client"])
    assert not result.signals


def test_people_are_not_judged_as_clients() -> None:
    trace = Trace()
    for d in range(12):
        t = T0 + d * DAY + 10 * HOUR
        for p in (CARDIO if d < 10 else ONCO)[:20]:
            trace.add(t, "dr2", p)
            t += 60_000
    result = run(trace.sorted(), detectors=["api_client"])
    assert not result.signals
