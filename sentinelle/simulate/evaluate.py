"""Scoring an alert file against the benchmark hospital's labels.

What matters after a leak is how fast it was seen and how many people were exposed
before, at what cost in false alarms. For every planted attack: detected or not, the
delay from its first event to the first matching alert, and the patients it had read by
then; for the rest: false alerts per 1,000 active account-days, and whether the benign
traps (surges, month-end billing, recalls, new hires...) drew alerts. With the care
context available it also reports the share of benign and attack accesses the context
explains, which says whether the hospital is a fair test.

Matching rule: an alert matches an attack when its account is the attack's account (or,
for an attack by an application or API client, its client is the attack's client) and
its span `[first_event, time]` overlaps the attack's `[start, end]`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.errors import InputFormatError
from sentinelle.events import parse_time
from sentinelle.simulate.labels import AttackLabel, iter_attack_events, load_attacks, load_traps

__all__ = [
    "SEVERITIES",
    "AlertRecord",
    "AttackResult",
    "EvaluationReport",
    "TrapResult",
    "count_active_account_days",
    "evaluate",
    "read_alerts",
    "render_report",
]

SEVERITIES = ("low", "medium", "high", "critical")
DAY_MS = 86_400_000


class AlertRecord(msgspec.Struct, frozen=True):
    """One alert as the alert contract defines it (JSON lines); unknown fields are ignored."""

    id: str
    account: str
    time: str
    severity: str
    kind: str
    summary: str
    evidence: list[str]
    patients: list[Any]
    first_event: str
    last_event: str
    score: float
    client: str | None = None
    address: str | None = None
    lang: dict[str, Any] | None = None
    episode: str | None = None


class _Alert(msgspec.Struct, frozen=True, gc=False):
    """An alert reduced to what scoring needs, with parsed times."""

    id: str
    account: str
    client: str
    time: int
    first: int


class AttackResult(msgspec.Struct):
    """How one planted attack fared."""

    id: str
    kind: str
    seed_case: str
    account: str
    start: str | None
    end: str | None
    n_events: int
    n_patients: int
    detected: bool
    alerts: int = 0
    first_alert: str | None = None
    first_alert_time: str | None = None
    delay_s: float | None = None
    patients_exposed: int = 0


class TrapResult(msgspec.Struct):
    """Whether a benign trap drew alerts (it should not)."""

    id: str
    kind: str
    hit: bool
    alerts: int = 0
    accounts_hit: list[str] = []


class EvaluationReport(msgspec.Struct):
    """The score of one alert file on one simulated data set."""

    data_dir: str
    alerts_path: str
    alerts: int
    attacks: list[AttackResult]
    detected: int
    total_attacks: int
    false_alerts: int
    false_account_days: int
    active_account_days: int
    false_alerts_per_1000_account_days: float
    traps: list[TrapResult]
    traps_hit: int
    benign_explained: float | None = None
    attack_explained: float | None = None
    explained_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    def to_json(self) -> bytes:
        """Indented JSON."""
        return msgspec.json.format(msgspec.json.encode(self), indent=2)


# -- alerts ------------------------------------------------------------------------------------

def _contract_time(text: str, field: str) -> int:
    s = text.strip()
    if not (s.endswith(("Z", "z")) or (len(s) > 6 and s[-6] in "+-" and s[-3] == ":")):
        raise ValueError(f"`{field}` {text!r} has no UTC offset (the contract asks for ISO 8601 with offset)")
    try:
        return parse_time(s)
    except ValueError:
        raise ValueError(f"`{field}` {text!r} is not an ISO 8601 time") from None


def read_alerts(path: Path) -> Iterator[tuple[int, AlertRecord]]:
    """Alerts of a JSON-lines file, validated against the alert contract, with their line numbers.

    Raises `InputFormatError` naming the file and line of the first malformed alert.
    """
    path = Path(path)
    decoder = msgspec.json.Decoder(AlertRecord)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputFormatError(str(path), "alert file not found") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                alert = decoder.decode(line)
            except msgspec.ValidationError as exc:
                raise InputFormatError(where, f"not an alert of the contract: {exc}") from None
            except msgspec.DecodeError as exc:
                raise InputFormatError(where, f"not valid JSON: {exc}") from None
            try:
                _check(alert)
            except ValueError as exc:
                raise InputFormatError(where, f"alert {alert.id!r}: {exc}") from None
            yield n, alert


def _check(a: AlertRecord) -> None:
    for name in ("id", "account", "kind", "summary"):
        if not getattr(a, name).strip():
            raise ValueError(f"`{name}` is empty")
    if a.severity not in SEVERITIES:
        raise ValueError(f"`severity` {a.severity!r} is not one of {', '.join(SEVERITIES)}")
    if not (0.0 <= a.score <= 1.0) or math.isnan(a.score):
        raise ValueError(f"`score` {a.score} is outside 0-1")
    t = _contract_time(a.time, "time")
    first = _contract_time(a.first_event, "first_event")
    _contract_time(a.last_event, "last_event")
    if first > t:
        raise ValueError("`first_event` is after `time` (the alert fires at or after its first event)")


def _load_alerts(path: Path) -> list[_Alert]:
    return [
        _Alert(a.id, a.account, a.client or "", parse_time(a.time), parse_time(a.first_event))
        for _, a in read_alerts(path)
    ]


# -- activity ------------------------------------------------------------------------------------

class _Who(msgspec.Struct, gc=False):
    identifier: dict[str, Any] | None = None
    reference: str | None = None


class _Agent(msgspec.Struct, gc=False):
    requestor: bool = False
    who: _Who | None = None


class _Slim(msgspec.Struct, gc=False):
    recorded: str = ""
    agent: list[_Agent] = []


def count_active_account_days(data_dir: Path) -> int:
    """Distinct (requesting account, UTC day) pairs of the trail: the false-alert denominator.

    Decodes only `recorded` and the agents of each AuditEvent, which keeps a pass over
    millions of lines to seconds.
    """
    path = Path(data_dir) / "events" / "auditevents.ndjson"
    decoder = msgspec.json.Decoder(_Slim)
    seen: set[tuple[str, str]] = set()
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ev = decoder.decode(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise InputFormatError(f"{path}:{n}", f"not an AuditEvent: {exc}") from None
            account = ""
            for agent in ev.agent:
                if agent.requestor and agent.who is not None:
                    ident = agent.who.identifier or {}
                    account = str(ident.get("value") or agent.who.reference or "")
                    break
            if account:
                seen.add((account, ev.recorded[:10]))
    return len(seen)


# -- scoring ------------------------------------------------------------------------------------

def _iso(ms: int) -> str:
    from sentinelle.events import format_time

    return format_time(ms)


def _matches(alert: _Alert, attack: AttackLabel, start: int, end: int) -> bool:
    by_client = attack.client == attack.account  # an application or API client is the attacker
    who = alert.account == attack.account or (by_client and alert.client == attack.client)
    return who and alert.first <= end and alert.time >= start


def evaluate(data_dir: Path, alerts_path: Path, explain: bool = True) -> EvaluationReport:
    """Score `alerts_path` (alert-contract JSON lines) against the labels in `data_dir`.

    `explain` also measures how much of the trail the care context explains (one more pass
    over the events with `sentinelle.context`); it is skipped with a note when the context
    or the readers are not installed.
    """
    data_dir = Path(data_dir)
    attacks = load_attacks(data_dir)
    traps = load_traps(data_dir)
    alerts = _load_alerts(Path(alerts_path))

    spans: list[tuple[int, int]] = []
    for a in attacks:
        if a.start is None or a.end is None:
            spans.append((1, 0))  # an attack with no event in the trail cannot be matched
        else:
            spans.append((parse_time(a.start), parse_time(a.end)))

    matched: set[str] = set()
    firsts: list[_Alert | None] = []
    counts: list[int] = []
    for a, (start, end) in zip(attacks, spans, strict=True):
        mine = [x for x in alerts if _matches(x, a, start, end)]
        matched.update(x.id for x in mine)
        counts.append(len(mine))
        firsts.append(min(mine, key=lambda x: (x.time, x.id)) if mine else None)

    # Patients exposed before the first alert, from the attack events.
    cutoff = {a.id: (f.time if f is not None else None) for a, f in zip(attacks, firsts, strict=True)}
    exposed: dict[str, set[str]] = {a.id: set() for a in attacks}
    for ev in iter_attack_events(data_dir):
        limit = cutoff.get(ev.attack)
        if ev.attack not in exposed:
            continue
        if limit is None or ev.time_ms <= limit:
            exposed[ev.attack].update(ev.patients)

    results = []
    for a, (start, _end), first, n in zip(attacks, spans, firsts, counts, strict=True):
        results.append(
            AttackResult(
                id=a.id, kind=a.kind, seed_case=a.seed_case, account=a.account, start=a.start, end=a.end,
                n_events=a.n_events, n_patients=a.n_patients, detected=first is not None, alerts=n,
                first_alert=first.id if first else None,
                first_alert_time=_iso(first.time) if first else None,
                delay_s=round((first.time - start) / 1000, 1) if first else None,
                patients_exposed=len(exposed[a.id]) if first else a.n_patients,
            )
        )

    false = [x for x in alerts if x.id not in matched]
    false_days = {(x.account, x.time // DAY_MS) for x in false}
    active = count_active_account_days(data_dir)

    trap_results = []
    for trap in traps:
        t0, t1 = parse_time(trap.start), parse_time(trap.end)
        accounts = set(trap.accounts)
        hits = [x for x in false if x.account in accounts and x.first <= t1 and x.time >= t0]
        trap_results.append(TrapResult(trap.id, trap.kind, bool(hits), len(hits), sorted({x.account for x in hits})))

    report = EvaluationReport(
        data_dir=str(data_dir),
        alerts_path=str(alerts_path),
        alerts=len(alerts),
        attacks=results,
        detected=sum(r.detected for r in results),
        total_attacks=len(results),
        false_alerts=len(false),
        false_account_days=len(false_days),
        active_account_days=active,
        false_alerts_per_1000_account_days=round(1000 * len(false_days) / active, 3) if active else 0.0,
        traps=trap_results,
        traps_hit=sum(t.hit for t in trap_results),
    )
    if explain:
        benign, attack, note = explained_shares(data_dir)
        report.benign_explained, report.attack_explained, report.explained_note = benign, attack, note
    else:
        report.explained_note = "not measured (explain=False)"
    return report


def explained_shares(data_dir: Path) -> tuple[float | None, float | None, str]:
    """Shares of benign and of attack accesses (event x patient) the care context explains.

    Needs `sentinelle.context.CareContext` and `sentinelle.sources.open_events`; returns
    (None, None, reason) when they are not available.
    """
    try:
        from sentinelle.context import CareContext
        from sentinelle.sources import Quarantine, open_events
    except ImportError as exc:  # the context or the readers are not installed
        return None, None, f"care context unavailable ({exc}); explained shares not measured"
    data_dir = Path(data_dir)
    attack_ids = {ev.id for ev in iter_attack_events(data_dir)}
    ctx = CareContext.load([data_dir / "context"], Quarantine())
    explain = ctx.explain
    totals = [0, 0]
    explained = [0, 0]
    quarantine = Quarantine()
    for ev in open_events([data_dir / "events"], quarantine):
        if not ev.patients or ev.outcome != "success":
            continue
        k = 1 if ev.id in attack_ids else 0
        for p in ev.patients:
            totals[k] += 1
            if explain(ev.account, p, ev.time):
                explained[k] += 1
    note = f"{totals[0]} benign and {totals[1]} attack accesses (event x patient, successful)"
    if quarantine.count:
        note += f"; {quarantine.count} events quarantined by the reader"
    return (
        round(explained[0] / totals[0], 5) if totals[0] else None,
        round(explained[1] / totals[1], 5) if totals[1] else None,
        note,
    )


# -- rendering ------------------------------------------------------------------------------------

def render_report(report: EvaluationReport) -> Any:
    """A Rich renderable (tables and a summary) of a report, for the command line."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Planted attacks", show_lines=False)
    for col, justify in (("attack", "left"), ("kind", "left"), ("account", "left"), ("detected", "center"),
                         ("delay", "right"), ("patients exposed", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in report.attacks:
        delay = _duration(r.delay_s) if r.delay_s is not None else "—"
        table.add_row(
            r.id, r.kind, r.account,
            Text("yes", style="green") if r.detected else Text("no", style="red"),
            delay, f"{r.patients_exposed} / {r.n_patients}",
        )
    traps = Table(title="Benign traps (alerts here are false)")
    for col in ("trap", "kind", "alerts", "accounts alerted"):
        traps.add_column(col)
    for t in report.traps:
        traps.add_row(t.id, t.kind, Text(str(t.alerts), style="red" if t.hit else "green"),
                      ", ".join(t.accounts_hit[:4]) + (" …" if len(t.accounts_hit) > 4 else ""))
    lines = [
        f"Detected {report.detected} of {report.total_attacks} attacks with {report.alerts} alerts.",
        f"False alerts: {report.false_alerts} ({report.false_account_days} account-days) = "
        f"{report.false_alerts_per_1000_account_days} per 1,000 active account-days "
        f"({report.active_account_days} active).",
        f"Traps that drew alerts: {report.traps_hit} of {len(report.traps)}.",
    ]
    if report.benign_explained is not None:
        lines.append(
            f"Care context explains {report.benign_explained:.1%} of benign accesses and "
            f"{(report.attack_explained or 0):.1%} of attack accesses."
        )
    elif report.explained_note:
        lines.append(report.explained_note)
    return Group(table, traps, Text("\n".join(lines)))


def _duration(seconds: float) -> str:
    if seconds < 0:
        return f"-{_duration(-seconds)}"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"

