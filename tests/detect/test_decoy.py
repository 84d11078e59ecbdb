"""Decoy detector: any opening of a decoy record is critical, even while learning."""

from __future__ import annotations

from detect_traces import CARDIO, DAY, DECOY, HOUR, T0, Trace, run, ward_history


def test_opening_a_decoy_is_a_critical_alert() -> None:
    trace = Trace()
    ward_history(trace, days=10)
    trace.chart(T0 + 8 * DAY + 10 * HOUR, "nurse3", DECOY)
    result = run(trace.sorted())
    alerts = result.alerted("nurse3")
    assert alerts, "a decoy opening must alert"
    assert alerts[0].severity == "critical"
    assert alerts[0].kind == "decoy"
    assert DECOY in alerts[0].patients
    assert "decoy.access" in alerts[0].codes


def test_decoy_alerts_during_learning_too() -> None:
    trace = Trace()
    trace.day_of_work(0, "nurse3", CARDIO)
    trace.chart(T0 + 1 * DAY + 9 * HOUR, "nurse3", DECOY)
    result = run(trace.sorted())
    assert [a.kind for a in result.alerted("nurse3")] == ["decoy"]


def test_normal_work_never_touches_the_decoy_detector() -> None:
    trace = Trace()
    ward_history(trace, days=10)
    result = run(trace.sorted(), detectors=["decoy"])
    assert not result.signals
    assert not result.alerts
