"""Scoring alert files: a perfect file, an empty one, false alerts, traps, malformed alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rich.console import Console

from sentinelle.errors import InputFormatError
from sentinelle.events import format_time, parse_time
from sentinelle.simulate.evaluate import (
    EvaluationReport,
    count_active_account_days,
    evaluate,
    read_alerts,
    render_report,
)


def _alert(account: str, first: int, time: int, n: int = 1, client: str | None = None, **extra: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "id": f"al-{n}",
        "account": account,
        "time": format_time(time),
        "severity": "high",
        "kind": "test",
        "summary": "A test alert.",
        "evidence": ["12 patients in 5 minutes."],
        "patients": ["Patient/1"],
        "first_event": format_time(first),
        "last_event": format_time(time),
        "score": 0.9,
    }
    if client is not None:
        alert["client"] = client
    alert.update(extra)
    return alert


def _write(path: Path, alerts: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(a) + "\n" for a in alerts))
    return path


def _attack_events(data: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with (data / "labels" / "attack_events.ndjson").open() as f:
        for line in f:
            row = json.loads(line)
            out.setdefault(row["attack"], []).append(row)
    return out


def test_perfect_alerts_detect_everything_early(tiny: Path, tmp_path: Path) -> None:
    attacks = json.loads((tiny / "labels" / "attacks.json").read_text())
    events = _attack_events(tiny)
    alerts = []
    for n, a in enumerate(attacks):
        rows = events[a["id"]]
        fire = rows[min(2, len(rows) - 1)]["time_ms"]  # after the third malicious event
        alerts.append(_alert(a["account"], rows[0]["time_ms"], fire, n))
    report = evaluate(tiny, _write(tmp_path / "perfect.jsonl", alerts), explain=False)
    assert report.detected == report.total_attacks == len(attacks)
    assert report.false_alerts == 0 and report.traps_hit == 0
    for r in report.attacks:
        assert r.detected and r.delay_s is not None and r.delay_s >= 0
        assert r.patients_exposed <= 3 < r.n_patients or r.patients_exposed <= r.n_patients <= 3


def test_no_alert_detects_nothing_and_exposes_everyone(tiny: Path, tmp_path: Path) -> None:
    report = evaluate(tiny, _write(tmp_path / "empty.jsonl", []), explain=False)
    assert report.detected == 0 and report.alerts == 0
    assert all(r.patients_exposed == r.n_patients and r.delay_s is None for r in report.attacks)
    assert report.false_alerts == 0 and report.false_alerts_per_1000_account_days == 0
    assert report.active_account_days > 100


def test_alert_on_a_benign_account_is_false_and_hits_its_trap(tiny: Path, tmp_path: Path) -> None:
    traps = json.loads((tiny / "labels" / "traps.json").read_text())
    surge = next(t for t in traps if t["kind"] == "mass_casualty")
    t0 = parse_time(surge["start"]) + 3_600_000
    alerts = [_alert(surge["accounts"][0], t0, t0 + 60_000, 1), _alert(surge["accounts"][0], t0, t0 + 120_000, 2)]
    report = evaluate(tiny, _write(tmp_path / "false.jsonl", alerts), explain=False)
    assert report.detected == 0
    assert report.false_alerts == 2 and report.false_account_days == 1
    assert report.false_alerts_per_1000_account_days == pytest.approx(1000 / report.active_account_days, abs=1e-3)
    hit = next(t for t in report.traps if t.kind == "mass_casualty")
    assert hit.hit and hit.alerts == 2 and hit.accounts_hit == [surge["accounts"][0]]


def test_alert_outside_the_attack_window_does_not_detect(tiny: Path, tmp_path: Path) -> None:
    attacks = json.loads((tiny / "labels" / "attacks.json").read_text())
    a = next(x for x in attacks if x["kind"] == "low_and_slow")
    before = parse_time(a["start"]) - 5 * 86_400_000
    report = evaluate(tiny, _write(tmp_path / "early.jsonl", [_alert(a["account"], before, before + 1000)]),
                      explain=False)
    assert report.detected == 0 and report.false_alerts == 1


def test_api_client_attack_matches_on_client(tiny: Path, tmp_path: Path) -> None:
    attacks = json.loads((tiny / "labels" / "attacks.json").read_text())
    a = next(x for x in attacks if x["kind"] == "api_client_overreach")
    t = parse_time(a["end"])
    report = evaluate(tiny, _write(tmp_path / "client.jsonl", [_alert("someone", t - 1000, t, client=a["client"])]),
                      explain=False)
    result = next(r for r in report.attacks if r.id == a["id"])
    assert result.detected and result.patients_exposed == a["n_patients"]


def test_report_round_trips_and_renders(tiny: Path, tmp_path: Path) -> None:
    report = evaluate(tiny, _write(tmp_path / "empty.jsonl", []), explain=True)
    data = report.to_dict()
    assert msgspec.convert(data, EvaluationReport) == report
    assert json.loads(report.to_json())["total_attacks"] == 10
    if report.benign_explained is not None:
        assert report.benign_explained > 0.9 and (report.attack_explained or 0) < 0.1
    console = Console(record=True, width=140)
    console.print(render_report(report))
    text = console.export_text()
    assert "privileged_app_bulk" in text and "per 1,000 active account-days" in text


def test_active_account_days_are_counted(tiny: Path) -> None:
    seen = set()
    with (tiny / "events" / "auditevents.ndjson").open() as f:
        for line in f:
            ev = json.loads(line)
            req = next(a for a in ev["agent"] if a.get("requestor"))
            seen.add((req["who"]["identifier"]["value"], ev["recorded"][:10]))
    assert count_active_account_days(tiny) == len(seen)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"severity": "urgent"}, "severity"),
        ({"score": 1.5}, "score"),
        ({"time": "2025-01-30T10:00:00"}, "offset"),
        ({"evidence": "one string"}, "evidence"),
        ({"first_event": "2025-02-01T10:00:00Z"}, "first_event"),
    ],
)
def test_malformed_alerts_are_refused_with_their_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    t = parse_time("2025-01-30T10:00:00Z")
    good = _alert("jdoe", t - 1000, t)
    bad = {**_alert("jdoe", t - 1000, t, 2), **change}
    path = _write(tmp_path / "bad.jsonl", [good, bad])
    with pytest.raises(InputFormatError, match=message) as info:
        list(read_alerts(path))
    assert f"{path}:2" in str(info.value)


def test_missing_field_is_named(tmp_path: Path) -> None:
    t = parse_time("2025-01-30T10:00:00Z")
    bad = _alert("jdoe", t - 1000, t)
    del bad["kind"]
    path = _write(tmp_path / "missing.jsonl", [bad])
    with pytest.raises(InputFormatError, match=r"missing.*kind") as info:
        list(read_alerts(path))
    assert f"{path}:1" in str(info.value)
    (tmp_path / "junk.jsonl").write_text("\n{not json\n")
    with pytest.raises(InputFormatError, match="not valid JSON") as info:
        list(read_alerts(tmp_path / "junk.jsonl"))
    assert "junk.jsonl:2" in str(info.value)
