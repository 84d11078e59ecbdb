"""End to end: simulate a small hospital, scan it, score the alerts with the benchmark's evaluate.

The acceptance figures of the detection issue on a small hospital (seed 1): every planted
attack detected; in every bulk scenario at most 100 patients read before the first alert;
the three kinds of snooping detected; none of the benign traps alerted; at most one false
alert per 1,000 active account-days.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinelle.context import CareContext
from sentinelle.detect import Alert, render_html_report, scan, write_alerts
from sentinelle.simulate import simulate
from sentinelle.simulate.evaluate import EvaluationReport, evaluate
from sentinelle.sources import Quarantine, open_events

BULK = {"privileged_app_bulk", "api_client_overreach", "stolen_credentials", "platform_pull", "throttled_script"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationReport, Path]:
    data = tmp_path_factory.mktemp("hospital")
    simulate(data, "small", 1)
    context = CareContext.load([data / "context"])
    stream: list[Alert] = []
    with Quarantine() as quarantine:
        result = scan(open_events([str(data / "events")], quarantine), context, on_alert=stream.append)
        assert quarantine.count == 0
    alerts = data / "alerts.jsonl"
    write_alerts(alerts, stream)
    render_html_report(result, data / "report.html")
    return evaluate(data, alerts, explain=False), data


def test_every_planted_attack_is_detected(scored: tuple[EvaluationReport, Path]) -> None:
    report, _ = scored
    missed = [a.kind for a in report.attacks if not a.detected]
    assert not missed, f"missed: {missed}"
    assert {"vip_snooping", "coworker_snooping", "relative_snooping"} <= {a.kind for a in report.attacks}


def test_bulk_thefts_are_stopped_within_a_hundred_patients(scored: tuple[EvaluationReport, Path]) -> None:
    report, _ = scored
    for a in report.attacks:
        if a.kind in BULK:
            assert a.patients_exposed <= 100, f"{a.kind}: {a.patients_exposed} patients read before the first alert"


def test_no_benign_trap_alerts_and_few_false_alerts(scored: tuple[EvaluationReport, Path]) -> None:
    report, _ = scored
    assert report.traps_hit == 0, [t.kind for t in report.traps if t.hit]
    assert report.false_alerts_per_1000_account_days <= 1.0


def test_the_report_shows_every_alerted_account(scored: tuple[EvaluationReport, Path]) -> None:
    report, data = scored
    html = (data / "report.html").read_text()
    for a in report.attacks:
        assert a.account in html
