"""Snooping detector: VIP, coworker, relative and own records opened without care."""

from __future__ import annotations

from detect_traces import (
    ARCHIVE,
    COWORKER,
    DAY,
    HOUR,
    OWN,
    RELATIVE,
    T0,
    VIP,
    Trace,
    run,
    ward_history,
)

AFTER_LEARNING = T0 + 10 * DAY + 10 * HOUR


def _snoop(account: str, patient: str, purpose: str = "") -> Trace:
    trace = Trace()
    ward_history(trace, days=10)
    trace.chart(AFTER_LEARNING, account, patient, purpose=purpose)
    return trace


def test_vip_opened_by_breaking_the_glass_without_care_alerts() -> None:
    result = run(_snoop("nurse4", VIP, purpose="BTG").sorted())
    alerts = result.alerted("nurse4")
    assert alerts and alerts[0].kind == "snooping"
    assert {"snooping.restricted", "snooping.break_glass"} <= set(alerts[0].codes)
    assert VIP in alerts[0].patients
    assert any("VIP" in s for s in alerts[0].lang["en"].evidence)


def test_vip_opened_without_care_is_a_strong_signal_short_of_an_alert() -> None:
    # a night cross-cover doctor opening a restricted record: reviewed with other evidence only
    result = run(_snoop("nurse4", VIP).sorted())
    assert "snoop_restricted" in result.kinds("nurse4")
    assert not result.alerted("nurse4")


def test_breaking_the_glass_alone_is_a_hint() -> None:
    result = run(_snoop("nurse4", "Patient/a77", purpose="BTG").sorted(), detectors=["snooping"])
    assert "break_glass" in result.kinds("nurse4")
    assert not result.alerted("nurse4")


def test_vip_treated_by_the_readers_department_passes() -> None:
    # onc1 works in oncology, where the VIP is treated: care explains it.
    trace = _snoop("onc1", VIP, purpose="BTG")
    result = run(trace.sorted())
    assert not result.alerted("onc1")
    assert "snoop_restricted" not in result.kinds("onc1")


def test_coworker_record_alerts() -> None:
    result = run(_snoop("nurse3", COWORKER).sorted())
    assert "snooping.coworker" in result.alerted("nurse3")[0].codes


def test_relative_record_alerts() -> None:
    result = run(_snoop("dr1", RELATIVE).sorted())
    assert "snooping.relative" in result.alerted("dr1")[0].codes


def test_own_record_alerts() -> None:
    result = run(_snoop("dr1", OWN).sorted())
    assert "snooping.own_record" in result.alerted("dr1")[0].codes


def test_vip_among_name_search_homonyms_is_not_an_opening() -> None:
    trace = Trace()
    ward_history(trace, days=10)
    trace.add(AFTER_LEARNING, "nurse4", VIP, "search", categories=1, query="GET /fhir/Patient?family=Martin&given=Anne")
    result = run(trace.sorted())
    assert not result.alerted("nurse4")


def test_research_account_reading_unexplained_records_daily_is_not_snooping() -> None:
    trace = Trace()
    ward_history(trace, days=10)
    trace.history(range(11), {"res1": ARCHIVE}, n=25)
    trace.chart(AFTER_LEARNING + 8 * HOUR, "res1", VIP)
    result = run(trace.sorted())
    assert not result.alerted("res1")
