"""Combining signals into one alert per account and episode.

Evidence is weighed, not counted: the engine keeps each account's best recent signal of
each kind (for `signal_ttl_hours`) and combines them with a noisy-OR,
`1 - prod(1 - score)`. A lone hint (a new address for a person, 0.25; an odd hour,
0.3) never reaches `alert_threshold` (0.8); two independent moderate signals, or one
strong one, do. Once an account crosses the threshold an episode opens: every later
signal and every newly opened patient of that account joins it until no signal has
come for `episode_gap_hours`. An episode is re-emitted as a new version of the same
alert (same `episode`, higher `version`) when it gains a kind of evidence, rises in
severity, or its patient count doubles; the last version tells the whole story.
"""

from __future__ import annotations

import hashlib

import msgspec

from sentinelle.detect.settings import Settings
from sentinelle.detect.signal import Alert, AlertText, Signal, fmt_int
from sentinelle.events import format_time

__all__ = ["Episode", "build_alert", "combined_score", "severity_of"]

_SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class Episode(msgspec.Struct, kw_only=True):
    """One account's ongoing suspicious episode."""

    id: str
    account: str
    start: int
    fired: int
    last_signal: int
    last_event: int
    score: float
    severity: str
    kind: str
    signals: dict[str, Signal] = msgspec.field(default_factory=dict)
    patients: dict[str, int] = msgspec.field(default_factory=dict)
    version: int = 0
    emitted_patients: int = 0
    emitted_kinds: int = 0
    emitted_severity: str = ""
    dirty: bool = False
    client: str = ""
    address: str = ""


def combined_score(signals: dict[str, Signal], now: int, ttl: int) -> float:
    """Noisy-OR of the signals still active at `now` (one per kind)."""
    keep = 1.0
    for sig in signals.values():
        if now - sig.time <= ttl:
            keep *= 1.0 - sig.score
    return 1.0 - keep


def severity_of(score: float, signals: dict[str, Signal], settings: Settings) -> str:
    """Severity of an episode from its score; any decoy access is critical."""
    if "decoy" in signals or score >= settings.severity_critical:
        return "critical"
    if score >= settings.severity_high:
        return "high"
    if score >= settings.alert_threshold:
        return "medium"
    return "low"


def episode_id(account: str, start: int) -> str:
    """Stable episode id: the same stream replayed gives the same ids."""
    digest = hashlib.sha1(f"{account}\x00{start}".encode(), usedforsecurity=False).hexdigest()[:16]
    return f"ep-{digest}"


def build_alert(ep: Episode, now: int, labels: dict[str, tuple[str, str]], settings: Settings) -> Alert:
    """The alert version describing `ep` as of event time `now`."""
    ranked = sorted(ep.signals.values(), key=lambda s: (-s.score, s.kind))
    texts: dict[str, AlertText] = {}
    n = len(ep.patients)
    top = labels.get(ranked[0].kind, (ranked[0].kind, ranked[0].kind)) if ranked else ("", "")
    others = len(ranked) - 1
    for k, lang in enumerate(("fr", "en")):
        sentences: list[str] = []
        for sig in ranked:
            for item in sig.evidence:
                text = item.fr if lang == "fr" else item.en
                if text not in sentences:
                    sentences.append(text)
        if lang == "fr":
            summary = f"Compte {ep.account} : {top[k]}"
            summary += f", {fmt_int(n, 'fr')} patient{'s' if n > 1 else ''} concerné{'s' if n > 1 else ''}"
            if others > 0:
                summary += f" ; {others} autre{'s' if others > 1 else ''} indice{'s' if others > 1 else ''}"
        else:
            summary = f"Account {ep.account}: {top[k]}"
            summary += f", {fmt_int(n, 'en')} patient{'s' if n != 1 else ''} involved"
            if others > 0:
                summary += f"; {others} more piece{'s' if others > 1 else ''} of evidence"
        texts[lang] = AlertText(summary=summary + ".", evidence=sentences)
    main = texts.get(settings.language, texts["fr"])
    codes: list[str] = []
    for sig in ranked:
        for item in sig.evidence:
            if item.code not in codes:
                codes.append(item.code)
    return Alert(
        id=f"{ep.id}-{ep.version}",
        account=ep.account,
        time=format_time(now),
        severity=ep.severity,
        kind=ranked[0].detector if ranked else "",
        summary=main.summary,
        evidence=main.evidence,
        patients=list(ep.patients)[: settings.max_alert_patients],
        first_event=format_time(ep.start),
        last_event=format_time(ep.last_event),
        score=round(ep.score, 4),
        client=ep.client,
        address=ep.address,
        episode=ep.id,
        version=ep.version,
        patient_count=n,
        codes=codes,
        lang=texts,
        time_ms=now,
    )


def severity_rank(severity: str) -> int:
    """Order of a severity name (low 0 … critical 3)."""
    return _SEVERITY_RANK.get(severity, 0)
