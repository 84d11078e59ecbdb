"""`scan` (the library behind `sentinelle scan`), the alert file and the HTML report."""

from __future__ import annotations

from pathlib import Path

from detect_traces import context, everything, settings

from sentinelle.detect import Alert, read_alerts, render_html_report, scan, write_alerts


def test_scan_summarises_what_it_found(tmp_path: Path) -> None:
    stream: list[Alert] = []
    result = scan(everything().sorted(), context(), settings(), on_alert=stream.append)
    assert result.events == len(everything().events)
    assert result.alerts and len(stream) >= len(result.alerts)
    assert {a.episode for a in stream} == {a.episode for a in result.alerts}
    # the result keeps the last version of each episode
    for alert in result.alerts:
        assert alert.version == max(a.version for a in stream if a.episode == alert.episode)
    assert sum(result.by_severity.values()) == len(result.alerts)
    assert sum(result.by_kind.values()) == len(result.alerts)
    assert {"decoy", "snooping"} <= set(result.by_kind)
    assert result.top_accounts[0].severity == "critical"
    assert 0.5 < result.explained_share < 1.0
    assert result.learning_until and result.first_event < result.last_event
    assert set(result.timelines) == {a.account for a in result.alerts}
    path = tmp_path / "alerts.jsonl"
    write_alerts(path, stream)
    assert read_alerts(path) == stream


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    result = scan(everything().sorted(), context(), settings())
    out = render_html_report(result, tmp_path / "report.html")
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "<link" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    assert html.count("<svg") == len(result.timelines) >= 3
    assert "polyline" in html
    assert "dr2" in html and "Alertes" in html
    english = render_html_report(result, tmp_path / "report-en.html", lang="en").read_text()
    assert "Timelines of alerted accounts" in english
