"""`scan`: the library entry point behind `sentinelle scan`, the engine fed from files.

It runs the same `Engine` the service runs, over any iterable of events in time order,
and gathers what a summary and a report need: the final version of every episode's
alert, counts by severity and kind, the accounts with the most serious alerts, the share
of accesses the care context explains, and an hourly timeline for each alerted account.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import msgspec

from sentinelle.detect.detectors import ContextLike
from sentinelle.detect.engine import Engine, EngineStats, Timeline
from sentinelle.detect.episodes import severity_rank
from sentinelle.detect.settings import Settings
from sentinelle.detect.signal import SEVERITIES, Alert
from sentinelle.events import AccessEvent, format_time
from sentinelle.sources.fhir_json import consumer_cpus

__all__ = ["AccountSummary", "ScanResult", "scan"]


class AccountSummary(msgspec.Struct, kw_only=True):
    """One alerted account in the summary."""

    account: str
    episodes: int
    severity: str
    score: float
    patients: int
    kinds: list[str]


class ScanResult(msgspec.Struct, kw_only=True):
    """What one scan found."""

    alerts: list[Alert]
    updates: int
    by_severity: dict[str, int]
    by_kind: dict[str, int]
    top_accounts: list[AccountSummary]
    events: int
    visits: int
    openings: int
    accounts: int
    patients: int
    explained_share: float
    first_event: str
    last_event: str
    learning_until: str
    elapsed_s: float
    timelines: dict[str, Timeline]
    stats: EngineStats


def scan(
    events: Iterable[AccessEvent],
    context: ContextLike,
    settings: Settings | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    engine: Engine | None = None,
) -> ScanResult:
    """Learn and detect over `events` (event-time order) in one pass.

    `on_alert` receives every alert version as it fires (new episodes and updates);
    the result keeps the last version of each episode. Pass an `engine` to continue
    from a restored state.
    """
    started = time.perf_counter()
    eng = engine or Engine(context, settings)
    final: dict[str, Alert] = {}
    updates = 0
    first = last = 0

    def take(alerts: list[Alert]) -> None:
        nonlocal updates
        for alert in alerts:
            updates += 1
            final[alert.episode] = alert
            if on_alert is not None:
                on_alert(alert)

    # batches keep the per-event loop inside the engine (`process_batch`), same code path
    batch: list[AccessEvent] = []
    append = batch.append
    process_batch = eng.process_batch
    # Detection keeps this process's CPU busy: a parallel reader feeding it leaves it one.
    with consumer_cpus(1):
        for e in events:
            append(e)
            if len(batch) >= 4096:
                take(process_batch(batch))
                batch.clear()
    take(process_batch(batch))
    take(eng.flush())
    st = eng.stats
    if eng.accounts:
        first = min(a.first_time for a in eng.accounts.values())
        last = max(a.last_time for a in eng.accounts.values())
    st.first_time, st.last_time = first, last
    alerts = sorted(final.values(), key=lambda a: (a.first_event, a.account))
    return ScanResult(
        alerts=alerts,
        updates=updates,
        by_severity={s: sum(1 for a in alerts if a.severity == s) for s in SEVERITIES},
        by_kind=_count(a.kind for a in alerts),
        top_accounts=_top_accounts(alerts),
        events=st.events,
        visits=st.visits,
        openings=st.openings,
        accounts=len(eng.accounts),
        patients=eng.patients_seen,
        explained_share=eng.explained_share(),
        first_event=format_time(first) if first else "",
        last_event=format_time(last) if last else "",
        learning_until=format_time(eng._learn_end) if eng._learn_end > 0 else "",
        elapsed_s=time.perf_counter() - started,
        timelines={a.account: eng.timelines[a.account] for a in alerts if a.account in eng.timelines},
        stats=st,
    )


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _top_accounts(alerts: list[Alert], limit: int = 10) -> list[AccountSummary]:
    by: dict[str, AccountSummary] = {}
    for a in alerts:
        s = by.get(a.account)
        if s is None:
            s = by[a.account] = AccountSummary(
                account=a.account, episodes=0, severity=a.severity, score=a.score, patients=0, kinds=[]
            )
        s.episodes += 1
        s.patients += a.patient_count
        if severity_rank(a.severity) > severity_rank(s.severity):
            s.severity = a.severity
        s.score = max(s.score, a.score)
        if a.kind not in s.kinds:
            s.kinds.append(a.kind)
    ranked = sorted(by.values(), key=lambda s: (-severity_rank(s.severity), -s.score, -s.patients, s.account))
    return ranked[:limit]
