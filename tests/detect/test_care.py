"""Care-relationship detector: a run of unexplained openings, not a single one."""

from __future__ import annotations

from detect_traces import ARCHIVE, CARDIO, DAY, HOUR, MIN, ONCO, T0, Trace, run, settings, ward_history

DAY11 = T0 + 11 * DAY + 9 * HOUR


def test_run_of_unexplained_records_alerts() -> None:
    trace = Trace()
    ward_history(trace, days=11)
    t = DAY11
    for p in ARCHIVE[:12]:
        t = trace.chart(t, "dr3", p) + 4 * MIN
    result = run(trace.sorted(), detectors=["care"])
    alerts = result.alerted("dr3")
    assert alerts and alerts[0].kind == "care"
    assert alerts[0].patient_count <= 12
    assert "no care relationship" in alerts[0].lang["en"].evidence[0]
    assert "aucune relation de soins" in alerts[0].lang["fr"].evidence[0]


def test_one_unexplained_record_in_a_day_of_care_passes() -> None:
    trace = Trace()
    ward_history(trace, days=12)
    trace.chart(DAY11 + 3 * HOUR, "dr3", ARCHIVE[0])
    result = run(trace.sorted(), detectors=["care"])
    assert "care" not in result.kinds("dr3")


def test_unexplained_records_spread_among_explained_work_pass() -> None:
    trace = Trace()
    ward_history(trace, days=12)
    t = DAY11
    for k in range(40):
        patient = ARCHIVE[k] if k % 10 == 0 else CARDIO[k]
        t = trace.chart(t, "dr3", patient) + 5 * MIN
    result = run(trace.sorted(), detectors=["care"])
    assert not result.alerted("dr3")


def test_patients_treated_elsewhere_weigh_half() -> None:
    # Covering another unit: the same number of unexplained openings weighs less when
    # another department is treating the patients at that time.
    def cusum(patients: list[str]) -> float:
        trace = Trace()
        ward_history(trace, days=11)
        t = DAY11
        for p in patients:
            t = trace.chart(t, "dr3", p) + 4 * MIN
        engine = run(trace.sorted(), detectors=["care"]).engine
        state = engine.accounts["dr3"].det[0]
        return float(state.cusum)

    assert cusum(ONCO[:4]) < cusum(ARCHIVE[:4])


def _it_support(trace: Trace) -> None:
    """An IT account that opens a record for a ticket every few days (and otherwise none)."""
    for d in range(0, 12, 3):
        trace.chart(T0 + d * DAY + 14 * HOUR, "it1", ARCHIVE[900 + d])


#: The CUSUM out of the way: the tests below are about the rare-account test alone (the
#: hand-made IT account has only unexplained peeks, so its CUSUM never comes down).
NO_RUN = settings(care_cusum_alert=1000.0, care_week_llr=1000.0)


def test_rarely_opening_account_reading_records_in_sequence_alerts_at_the_third() -> None:
    # The throttled script: an IT account reading unexplained records in identifier order,
    # a few minutes apart. Its rarity (0.75) and the short sequence (0.3) together alert.
    trace = Trace()
    ward_history(trace, days=13)
    _it_support(trace)
    t = T0 + 12 * DAY + 2 * HOUR
    for p in ARCHIVE[100:106]:
        t = trace.chart(t, "it1", p) + 3 * MIN
    result = run(trace.sorted(), NO_RUN, detectors=["care", "automation"])
    assert "care.rare_account" in result.codes("it1")
    alerts = result.alerted("it1")
    assert alerts and alerts[0].patient_count == 3
    assert set(alerts[0].codes) == {"care.rare_account", "automation.sequential_ids_short"}
    assert "usually opens 0.33 a day" in " ".join(alerts[0].lang["en"].evidence)
    assert "ouverts en 1 h" in " ".join(alerts[0].lang["fr"].evidence)
    # the busy ward staff never look rare
    assert not any(s.kind == "rare_account" for s in result.signals if s.account != "it1")


def test_rarely_opening_account_alone_does_not_alert() -> None:
    # Three unexplained records in an hour, not in sequence: a signal, under an alert.
    trace = Trace()
    ward_history(trace, days=13)
    _it_support(trace)
    t = T0 + 12 * DAY + 10 * HOUR
    for p in (ARCHIVE[100], ARCHIVE[300], ARCHIVE[500]):
        t = trace.chart(t, "it1", p) + 10 * MIN
    result = run(trace.sorted(), NO_RUN, detectors=["care", "automation"])
    assert "care.rare_account" in result.codes("it1")
    assert not result.alerted("it1")
