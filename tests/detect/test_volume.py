"""Volume detector: newly opened patients over 10 min to 7 days, against own history and peers."""

from __future__ import annotations

from detect_traces import ARCHIVE, CARDIO, DAY, HOUR, MIN, T0, Trace, run, ward_history

DAY12 = T0 + 12 * DAY + 9 * HOUR


def _bulk(trace: Trace, account: str, patients: list[str], t: int, gap_s: float) -> None:
    for p in patients:
        trace.add(t, account, p, categories=3)
        t += int(gap_s * 1000)


def test_bulk_reading_of_unexplained_records_alerts_on_volume_alone() -> None:
    trace = Trace()
    ward_history(trace, days=12)
    _bulk(trace, "dr2", ARCHIVE[:300], DAY12, 4)
    result = run(trace.sorted(), detectors=["volume"])
    alerts = result.alerted("dr2")
    assert alerts, "300 unexplained records in 20 minutes must alert"
    first = alerts[0]
    assert first.kind == "volume"
    assert any(code.startswith("volume.") for code in first.codes)
    # within the first hundred records
    assert first.patient_count <= 100
    assert "usual maximum" in " ".join(first.lang["en"].evidence)


def test_explained_surge_is_a_hint_not_an_alert() -> None:
    # A mass-casualty-like day: the doctor opens four times her usual number of charts,
    # all of patients her department treats.
    trace = Trace()
    ward_history(trace, days=12)
    t = DAY12
    for p in CARDIO[:60]:
        t = trace.chart(t, "dr2", p, reads=4) + 90_000
    result = run(trace.sorted(), detectors=["volume"])
    assert "volume" in result.kinds("dr2")
    assert all(s.score <= 0.7 for s in result.signals if s.account == "dr2")
    assert not result.alerted("dr2")


def test_new_account_is_judged_by_its_peers() -> None:
    trace = Trace()
    ward_history(trace, days=14)
    # newhire starts on day 6 with an ordinary workload: no alert
    trace.history(range(6, 14), {"newhire": CARDIO})
    quiet = run(trace.sorted(), detectors=["volume"])
    assert not quiet.alerted("newhire")
    # the same new account bulk-reading the archive: judged by the nurses' baseline
    _bulk(trace, "newhire", ARCHIVE[:200], T0 + 13 * DAY + 14 * HOUR, 6)
    loud = run(trace.sorted(), detectors=["volume"])
    alerts = loud.alerted("newhire")
    assert alerts
    assert "peers" in " ".join(alerts[0].lang["en"].evidence)


def test_slow_theft_over_a_day_is_caught_by_the_day_window() -> None:
    # 12 unexplained records an hour: under any hourly limit, not under the day's.
    trace = Trace()
    ward_history(trace, days=12)
    _bulk(trace, "dr3", ARCHIVE[:150], DAY12, 5 * MIN / 1000)
    result = run(trace.sorted(), detectors=["volume"])
    codes = result.codes("dr3")
    assert "volume.day.unexplained" in codes
    assert "volume.hour.unexplained" not in codes
