"""The records detection emits: a detector's `Signal` with its `Evidence`, and the engine's `Alert`.

A signal is one detector's opinion about one account at one moment, with the numbers
behind it; an alert is the engine's combined judgement about one episode of an account,
written as JSON lines following the alert contract of DESIGN.md. Both carry French and
English sentences, because the analyst and the DPO reading them are mostly French and
the evidence must be readable without the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO

import msgspec

__all__ = [
    "SEVERITIES",
    "Alert",
    "AlertText",
    "Evidence",
    "Signal",
    "fmt_int",
    "fmt_pct",
    "read_alerts",
    "write_alerts",
]

#: Severity levels, lowest first.
SEVERITIES = ("low", "medium", "high", "critical")

Number = int | float | str


class Evidence(msgspec.Struct, frozen=True, gc=False):
    """One fact behind a signal: a stable code, the numbers, and the sentence in French and English.

    `code` is stable across versions (e.g. `volume.hour`) so that tools and tests can rely
    on it; the sentences are for people.
    """

    code: str
    numbers: dict[str, Number]
    fr: str
    en: str


class Signal(msgspec.Struct, frozen=True, gc=False):
    """A detector's finding about one account at one event time.

    `score` (0-1) is the detector's confidence that this alone indicates misuse; the
    engine combines the best signal of each `kind` into an episode score. `patients`
    are the canonical patient references the signal is about (possibly a sample).
    """

    detector: str
    account: str
    time: int
    score: float
    kind: str
    evidence: tuple[Evidence, ...]
    patients: tuple[str, ...] = ()
    first_time: int = 0


class AlertText(msgspec.Struct, frozen=True):
    """An alert's summary and evidence in one language."""

    summary: str
    evidence: list[str]


class Alert(msgspec.Struct, frozen=True, omit_defaults=True):
    """One version of an account's alert for one episode (the alert contract of DESIGN.md).

    Alerts of one episode share `episode`; each later version repeats the earlier facts
    with updated counts, so the last version of an episode is the whole story.
    `patients` is truncated to a setting; `patient_count` is the full number.
    """

    id: str
    account: str
    time: str
    severity: str
    kind: str
    summary: str
    evidence: list[str]
    patients: list[str]
    first_event: str
    last_event: str
    score: float
    client: str = ""
    address: str = ""
    episode: str = ""
    version: int = 1
    patient_count: int = 0
    codes: list[str] = msgspec.field(default_factory=list)
    lang: dict[str, AlertText] = msgspec.field(default_factory=dict)
    time_ms: int = 0


def fmt_int(value: float, lang: str) -> str:
    """A whole number with the thousands separator of the language.

    >>> fmt_int(758912, "fr"), fmt_int(758912, "en")
    ('758\u202f912', '758,912')
    """
    text = f"{round(value):,}"
    return text.replace(",", "\u202f") if lang == "fr" else text


def fmt_pct(share: float, lang: str) -> str:
    """A share as a whole percentage, written the way the language writes it.

    >>> fmt_pct(0.97, "fr"), fmt_pct(0.97, "en")
    ('97\u202f%', '97 %')
    """
    pct = round(share * 100)
    return f"{pct}\u202f%" if lang == "fr" else f"{pct} %"


_ENCODER = msgspec.json.Encoder()


def write_alerts(target: str | Path | IO[bytes], alerts: Iterable[Alert]) -> int:
    """Write alerts as JSON lines to a path or binary stream; returns how many were written."""
    if isinstance(target, str | Path):
        with Path(target).open("wb") as sink:
            return write_alerts(sink, alerts)
    n = 0
    for alert in alerts:
        target.write(_ENCODER.encode(alert) + b"\n")
        n += 1
    return n


def read_alerts(path: str | Path) -> list[Alert]:
    """Alerts of a JSON-lines file written by `write_alerts`."""
    decoder = msgspec.json.Decoder(Alert)
    with Path(path).open("rb") as source:
        return [decoder.decode(line) for line in source if line.strip()]
