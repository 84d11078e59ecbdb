"""Detection: detectors, the engine that combines their signals into alerts, and `scan`.

The public API is what `sentinelle scan` and the service need: feed events to an
`Engine` (or to `scan` for a whole trail), get `Alert`s following the alert contract,
write them as JSON lines, render an HTML report. See docs/detection.md.
"""

from __future__ import annotations

from sentinelle.detect.detectors import REGISTRY, Detector, Observation, register
from sentinelle.detect.engine import Engine, EngineStats, Timeline
from sentinelle.detect.report import render_html_report
from sentinelle.detect.scan import AccountSummary, ScanResult, scan
from sentinelle.detect.settings import SETTINGS, Setting, Settings, load_settings
from sentinelle.detect.signal import SEVERITIES, Alert, AlertText, Evidence, Signal, read_alerts, write_alerts

__all__ = [
    "REGISTRY",
    "SETTINGS",
    "SEVERITIES",
    "AccountSummary",
    "Alert",
    "AlertText",
    "Detector",
    "Engine",
    "EngineStats",
    "Evidence",
    "Observation",
    "ScanResult",
    "Setting",
    "Settings",
    "Signal",
    "Timeline",
    "load_settings",
    "read_alerts",
    "register",
    "render_html_report",
    "scan",
    "write_alerts",
]
