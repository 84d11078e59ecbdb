"""Care-relationship detector: a run of unexplained openings, not a single one."""

from __future__ import annotations

from detect_traces import ARCHIVE, CARDIO, DAY, HOUR, MIN, ONCO, T0, Trace, run, ward_history

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
