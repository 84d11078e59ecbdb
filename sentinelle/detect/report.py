"""A self-contained HTML report of a scan: summary, alerts, and one timeline per alerted account.

One file, no script, no download at view time: tables in HTML, each timeline an inline
SVG of the account's newly opened patients per hour against its own usual hourly
maximum and its peers' 99th percentile, with the alert times marked. Only patient
references appear, never names.
"""

from __future__ import annotations

import html
from pathlib import Path

from sentinelle.detect.engine import Timeline
from sentinelle.detect.scan import ScanResult
from sentinelle.detect.signal import Alert, fmt_int, fmt_pct
from sentinelle.events import format_time

__all__ = ["render_html_report", "timeline_svg"]

_COLOURS = {"low": "#6b7280", "medium": "#d97706", "high": "#dc2626", "critical": "#7f1d1d"}
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#111;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}h3{font-size:1em;margin:1.5em 0 .3em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f4f6}.sev{color:#fff;padding:.1em .5em;border-radius:.3em;font-size:.85em}
ul{margin:.2em 0;padding-left:1.2em}.muted{color:#6b7280;font-size:.85em}svg{background:#fafafa;border:1px solid #eee}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _badge(severity: str) -> str:
    return f'<span class="sev" style="background:{_COLOURS.get(severity, "#444")}">{_e(severity)}</span>'


def timeline_svg(tl: Timeline, width: int = 1000, height: int = 180) -> str:
    """Inline SVG of one account's hourly newly opened patients against its baselines."""
    counts = tl.counts or [0]
    n = len(counts)
    top = max([*counts, tl.baseline, tl.peer, 1.0])
    pad_l, pad_b, pad_t = 40, 20, 10
    w = width - pad_l - 10
    h = height - pad_b - pad_t

    def x(i: float) -> float:
        return pad_l + (i / max(1, n - 1)) * w

    def y(v: float) -> float:
        return pad_t + h - (v / top) * h

    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(counts))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(tl.account)}">',
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>',
        f'<text x="4" y="{pad_t + 10}" font-size="10">{round(top)}</text>',
        f'<text x="4" y="{pad_t + h}" font-size="10">0</text>',
    ]
    if tl.baseline >= 0:
        yb = y(tl.baseline)
        parts.append(f'<line x1="{pad_l}" y1="{yb:.1f}" x2="{pad_l + w}" y2="{yb:.1f}" stroke="#2563eb" '
                     'stroke-dasharray="4 3"><title>own usual hourly maximum</title></line>')
    if tl.peer >= 0:
        yp = y(tl.peer)
        parts.append(f'<line x1="{pad_l}" y1="{yp:.1f}" x2="{pad_l + w}" y2="{yp:.1f}" stroke="#16a34a" '
                     'stroke-dasharray="2 3"><title>peers 99th percentile per hour</title></line>')
    parts.append(f'<polyline fill="none" stroke="#111" stroke-width="1.2" points="{points}"/>')
    for hour, severity in tl.alerts:
        i = hour - tl.start_hour
        if 0 <= i < n:
            xa = x(i)
            parts.append(f'<line x1="{xa:.1f}" y1="{pad_t}" x2="{xa:.1f}" y2="{pad_t + h}" '
                         f'stroke="{_COLOURS.get(severity, "#444")}" stroke-width="2">'
                         f'<title>{_e(severity)} {_e(format_time(hour * 3_600_000))}</title></line>')
    start = format_time(tl.start_hour * 3_600_000)[:16].replace("T", " ")
    end = format_time((tl.start_hour + n - 1) * 3_600_000)[:16].replace("T", " ")
    parts.append(f'<text x="{pad_l}" y="{height - 4}" font-size="10">{_e(start)} UTC</text>')
    parts.append(f'<text x="{pad_l + w}" y="{height - 4}" font-size="10" text-anchor="end">{_e(end)} UTC</text>')
    parts.append("</svg>")
    return "".join(parts)


def _alert_rows(alerts: list[Alert], lang: str) -> str:
    rows = []
    for a in alerts:
        text = a.lang.get(lang)
        summary = text.summary if text else a.summary
        evidence = text.evidence if text else a.evidence
        items = "".join(f"<li>{_e(s)}</li>" for s in evidence)
        rows.append(
            f"<tr><td>{_badge(a.severity)}<br>{a.score:.2f}</td><td>{_e(a.account)}<br>"
            f'<span class="muted">{_e(a.kind)}</span></td><td>{_e(summary)}<ul>{items}</ul>'
            f'<span class="muted">{_e(a.first_event)} → {_e(a.last_event)} · {a.patient_count} patient(s) · '
            f"{_e(a.episode)} v{a.version}</span></td></tr>"
        )
    return "".join(rows)


def render_html_report(result: ScanResult, path: str | Path, lang: str = "fr") -> Path:
    """Write the HTML report of a scan to `path` (French by default, 'en' for English)."""
    fr = lang == "fr"
    t = {
        "title": "Sentinelle — rapport d'analyse" if fr else "Sentinelle — scan report",
        "summary": "Résumé" if fr else "Summary",
        "alerts": "Alertes" if fr else "Alerts",
        "timelines": "Chronologies des comptes en alerte" if fr else "Timelines of alerted accounts",
        "legend": (
            "patients nouvellement ouverts par heure ; tirets bleus : maximum horaire habituel du compte ; "
            "pointillés verts : 99e centile des pairs ; traits verticaux : alertes"
            if fr else
            "newly opened patients per hour; blue dashes: the account's usual hourly maximum; green dots: "
            "peers' 99th percentile; vertical lines: alerts"
        ),
    }
    r = result
    facts = [
        ("events" if not fr else "événements", fmt_int(r.events, lang)),
        ("accounts" if not fr else "comptes", fmt_int(r.accounts, lang)),
        ("patients", fmt_int(r.patients, lang)),
        ("explained share" if not fr else "part expliquée", fmt_pct(r.explained_share, lang)),
        ("period" if not fr else "période", f"{r.first_event} → {r.last_event}"),
        ("learning until" if not fr else "apprentissage jusqu'au", r.learning_until),
        ("alerts (episodes)" if not fr else "alertes (épisodes)", f"{len(r.alerts)} ({r.updates} versions)"),
    ]
    sev = "".join(f"<tr><td>{_badge(k)}</td><td>{v}</td></tr>" for k, v in r.by_severity.items())
    kinds = "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in r.by_kind.items())
    timelines = []
    for account, tl in r.timelines.items():
        timelines.append(f"<h3>{_e(account)}</h3>{timeline_svg(tl)}")
    body = (
        f"<h1>{_e(t['title'])}</h1><h2>{_e(t['summary'])}</h2><table>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
        + f"</table><table><tr><th>severity</th><th>n</th></tr>{sev}</table>"
        + f"<table><tr><th>kind</th><th>n</th></tr>{kinds}</table>"
        + f"<h2>{_e(t['alerts'])}</h2><table>{_alert_rows(r.alerts, lang)}</table>"
        + f"<h2>{_e(t['timelines'])}</h2><p class=\"muted\">{_e(t['legend'])}</p>"
        + "".join(timelines)
    )
    doc = (
        f'<!DOCTYPE html><html lang="{_e(lang)}"><head><meta charset="utf-8">'
        f"<title>{_e(t['title'])}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )
    out = Path(path)
    out.write_text(doc, encoding="utf-8")
    return out
