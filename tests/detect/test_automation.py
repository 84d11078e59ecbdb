"""Automation detector: machine cadence, enumeration, paging, identity harvesting."""

from __future__ import annotations

from detect_traces import ARCHIVE, CARDIO, DAY, HOUR, MIN, T0, Trace, run, ward_history

DAY11 = T0 + 11 * DAY + 9 * HOUR


def test_sequential_identifiers_at_a_regular_pace_are_a_script() -> None:
    trace = Trace()
    ward_history(trace, days=11)
    t = DAY11
    for p in ARCHIVE[100:140]:  # a100, a101, ... in order
        trace.add(t, "it1", p, categories=3)
        t += 150_000 + trace.rng.randint(-3000, 3000)
    result = run(trace.sorted(), detectors=["automation"])
    assert {"enumeration", "cadence"} <= result.kinds("it1")
    assert "automation.sequential_ids" in result.codes("it1")


def test_paging_through_search_results() -> None:
    trace = Trace()
    ward_history(trace, days=11)
    t = DAY11
    for page in range(8):
        q = f"GET /fhir/Patient?_sort=_id&_count=20&_offset={page * 20}"
        for p in ARCHIVE[page * 20: page * 20 + 20]:
            trace.add(t, "dr6", p, "search", categories=1, query=q)
            t += 50
        t += 2000
    result = run(trace.sorted(), detectors=["automation"])
    assert "automation.paging" in result.codes("dr6")


def test_alphabetical_name_searches() -> None:
    trace = Trace()
    ward_history(trace, days=11)
    t = DAY11
    for k, name in enumerate(["aa", "ab", "ac", "ad", "ae", "af", "ag", "ah", "ai", "aj", "ak", "al", "am", "an"]):
        trace.add(t, "dr6", ARCHIVE[k], "search", categories=1, query=f"GET /fhir/Patient?family={name}")
        t += 20_000
    result = run(trace.sorted(), detectors=["automation"])
    assert "automation.alphabetical" in result.codes("dr6")


def test_identity_only_reading_when_the_account_reads_clinical_data() -> None:
    trace = Trace()
    ward_history(trace, days=11)
    t = DAY11
    for p in ARCHIVE[:40]:
        trace.add(t, "dr2", p, categories=3)  # identity + contact only
        t += trace.rng.randint(20, 200) * 1000
    result = run(trace.sorted(), detectors=["automation"])
    assert "identity_only" in result.kinds("dr2")


def test_normal_clinical_work_shows_no_automation() -> None:
    trace = Trace()
    ward_history(trace, days=14)
    result = run(trace.sorted(), detectors=["automation"])
    assert not result.signals


def test_application_accounts_are_not_judged_on_timing() -> None:
    trace = Trace()
    t = T0 + 1 * HOUR
    for d in range(12):
        t = T0 + d * DAY + 1 * HOUR
        for p in CARDIO[:60]:
            trace.add(t, "export", p, kind="application", client="export-job", address="10.9.9.9")
            t += 1000
    result = run(trace.sorted(), detectors=["automation"])
    assert "cadence" not in result.kinds("export")
    assert "continuous" not in result.kinds("export")
    assert MIN  # keep the import list honest
