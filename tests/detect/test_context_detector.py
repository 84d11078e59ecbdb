"""Context detector: new addresses, odd hours, dormancy, use after departure, interactive use."""

from __future__ import annotations

from detect_traces import ARCHIVE, CARDIO, DAY, HOUR, MIN, T0, Trace, run, ward_history


def _export_history(trace: Trace, days: int) -> None:
    # the nightly export application: 40 records a night from its fixed server
    for d in range(days):
        t = T0 + d * DAY + 1 * HOUR
        for p in ARCHIVE[:40]:
            trace.add(t, "export", p, kind="application", client="export-job", address="10.9.9.9", categories=3)
            t += 2000


def test_new_address_of_an_application_account_alerts() -> None:
    trace = Trace()
    _export_history(trace, 10)
    t = T0 + 10 * DAY + 3 * HOUR
    trace.add(t, "export", ARCHIVE[0], kind="application", client="export-job", address="185.220.101.7")
    result = run(trace.sorted(), detectors=["context"])
    alerts = result.alerted("export")
    assert alerts and "context.new_address_service" in alerts[0].codes
    assert alerts[0].address == "185.220.101.7"
    assert "185.220.101.7" in alerts[0].evidence[0]


def test_new_network_of_a_person_is_only_a_hint() -> None:
    trace = Trace()
    ward_history(trace, days=10)
    trace.day_of_work(10, "dr4", CARDIO, address="172.16.5.9")
    result = run(trace.sorted(), detectors=["context"])
    assert "new_address" in result.kinds("dr4")
    assert all(s.score < 0.5 for s in result.signals if s.kind == "new_address")
    assert not result.alerted("dr4")


def test_new_address_in_a_known_network_is_nothing() -> None:
    trace = Trace()
    ward_history(trace, days=10)
    trace.day_of_work(10, "dr4", CARDIO, address="10.1.1.77")
    result = run(trace.sorted(), detectors=["context"])
    assert "new_address" not in result.kinds("dr4")


def test_use_after_employment_end_alerts() -> None:
    trace = Trace()
    ward_history(trace, days=4)
    trace.day_of_work(1, "leaver", CARDIO)
    trace.chart(T0 + 9 * DAY + 20 * HOUR, "leaver", CARDIO[3], address="37.170.2.3")
    result = run(trace.sorted(), detectors=["context"])
    alerts = result.alerted("leaver")
    assert alerts and "context.after_end" in alerts[0].codes
    assert alerts[0].severity in ("high", "critical")


def test_odd_hour_and_dormancy_are_hints() -> None:
    trace = Trace()
    ward_history(trace, days=28)
    # dr5 works four weeks in the daytime, then nothing for 40 days, then a chart at 3 am
    trace.chart(T0 + 68 * DAY + 3 * HOUR, "dr5", CARDIO[0])
    result = run(trace.sorted(), detectors=["context"])
    assert {"dormant", "off_hours"} <= result.kinds("dr5")
    assert not result.alerted("dr5")


def test_working_hours_of_the_account_pass() -> None:
    trace = Trace()
    ward_history(trace, days=14)
    trace.day_of_work(14, "dr5", CARDIO, start_hour=9)
    result = run(trace.sorted(), detectors=["context"])
    assert "off_hours" not in result.kinds("dr5")


def test_application_account_through_a_new_client_is_interactive_use() -> None:
    trace = Trace()
    _export_history(trace, 10)
    trace.add(T0 + 10 * DAY + 14 * HOUR + 5 * MIN, "export", ARCHIVE[3], kind="application",
              client="dpi-web", address="10.9.9.9")
    result = run(trace.sorted(), detectors=["context"])
    assert "interactive" in result.kinds("export")


def test_address_outside_the_declared_ones_alerts_without_history() -> None:
    from detect_traces import settings

    from sentinelle.context import CareContext
    from sentinelle.detect import Engine

    ctx = CareContext.from_resources([
        {"resourceType": "Organization", "id": "it"},
        {"resourceType": "Device", "id": "dev-lab", "identifier": [{"system": "urn:sentinelle:login", "value": "lab"}],
         "type": {"text": "application"}, "owner": {"reference": "Organization/it"},
         "note": [{"text": "addresses: 10.5.0.1"}]},
        {"resourceType": "Patient", "id": "p1"},
    ])
    declared = ctx.account_info("lab")
    assert declared is not None
    if not declared.addresses:
        import pytest

        pytest.skip("the care context does not read declared addresses from Device.note")
    trace = Trace()
    t = T0 + 5 * DAY
    trace.add(t, "lab", "Patient/p1", kind="application", client="lab", address="10.5.0.1")
    trace.add(t + 2 * DAY, "lab", "Patient/p1", kind="application", client="lab", address="45.1.2.3")
    engine = Engine(ctx, settings(learning_days=1))
    alerts = engine.process_batch(trace.sorted())
    assert alerts and "context.undeclared_address" in alerts[0].codes
