"""Opening incidents: by hand (an account, a client, an address, a window) or from alerts.

Why grouping: one intrusion often fires several alerts (a decoy opened, then a volume
alert, then an unexplained-access alert, each a separate episode); the DPO handles and
notifies one breach. Alerts of the same account (or client application) whose windows
overlap or follow within `gap_hours` become one incident, whose selectors are the
alerts' accounts and windows (widened by `margin_hours` on both sides, as an alert's
window starts at the first suspicious access the detector saw, not necessarily the
intruder's first).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sentinelle.detect import Alert
from sentinelle.errors import ConfigError
from sentinelle.events import parse_time
from sentinelle.incident.model import AlertRef, Incident, Selector

__all__ = ["alert_ref", "group_alerts", "incident_from_alerts", "new_incident_id", "open_incident"]

HOUR_MS = 3_600_000


def new_incident_id(existing: Iterable[str], now: int) -> str:
    """`INC-YYYYMMDD-NNN`, the next free number of that day."""
    day = datetime.fromtimestamp(now / 1000, tz=UTC).strftime("%Y%m%d")
    taken = {i for i in existing if i.startswith(f"INC-{day}-")}
    n = 1
    while f"INC-{day}-{n:03d}" in taken:
        n += 1
    return f"INC-{day}-{n:03d}"


def open_incident(title: str, *, accounts: Sequence[str] = (), clients: Sequence[str] = (),
                  addresses: Sequence[str] = (), start: int | None = None, end: int | None = None,
                  aware: int | None = None, unexplained_only: bool = False, explaining: int = 0,
                  incident_id: str = "",
                  now: int | None = None, origin: str = "external_malicious") -> Incident:
    """An incident opened by hand; `aware` (default: now) starts the 72-hour clock."""
    if not (accounts or clients or addresses or start is not None or end is not None):
        raise ConfigError("an incident needs at least an account, a client application, an address or a window")
    if start is not None and end is not None and end <= start:
        raise ConfigError("the incident window ends before it starts")
    t = int(time.time() * 1000) if now is None else now
    sel = Selector(accounts=tuple(accounts), clients=tuple(clients), addresses=tuple(addresses), start=start,
                   end=end, unexplained_only=unexplained_only, explaining=explaining, label="manual")
    return Incident(id=incident_id or new_incident_id((), t), title=title, opened=t,
                    aware=t if aware is None else aware, selectors=[sel], origin=origin)


def alert_ref(a: Alert) -> AlertRef:
    """What an incident keeps of an alert."""
    en = a.lang.get("en")
    return AlertRef(id=a.id, account=a.account, time=a.time_ms or parse_time(a.time), severity=a.severity,
                    kind=a.kind, summary=a.summary, first_event=parse_time(a.first_event),
                    last_event=parse_time(a.last_event), patient_count=a.patient_count or len(a.patients),
                    client=a.client, address=a.address, summary_en=en.summary if en is not None else "")


def group_alerts(alerts: Iterable[Alert], gap_hours: float = 24.0) -> list[list[Alert]]:
    """Alerts of one account whose windows overlap or follow within `gap_hours`, as groups.

    Only the last version of each episode is kept (later versions repeat earlier facts).
    """
    last: dict[str, Alert] = {}
    for a in alerts:
        key = a.episode or a.id
        prev = last.get(key)
        if prev is None or a.version >= prev.version:
            last[key] = a
    by_account: dict[str, list[Alert]] = {}
    for a in last.values():
        by_account.setdefault(a.account, []).append(a)
    gap = int(gap_hours * HOUR_MS)
    groups: list[list[Alert]] = []
    for acc in sorted(by_account):
        items = sorted(by_account[acc], key=lambda x: parse_time(x.first_event))
        cur: list[Alert] = []
        cur_end = 0
        for a in items:
            s, e = parse_time(a.first_event), parse_time(a.last_event)
            if cur and s > cur_end + gap:
                groups.append(cur)
                cur = []
            cur.append(a)
            cur_end = max(cur_end, e) if len(cur) > 1 else e
        if cur:
            groups.append(cur)
    groups.sort(key=lambda g: min(parse_time(a.first_event) for a in g))
    return groups


def incident_from_alerts(alerts: Sequence[Alert], *, title: str = "", margin_hours: float = 1.0,
                         aware: int | None = None, incident_id: str = "", now: int | None = None,
                         by_address: bool = False) -> Incident:
    """One incident grouping `alerts`: one selector per alert (account and widened window).

    `aware` defaults to the time the first alert fired: the moment the establishment
    could know. `by_address` also restricts each selector to the alert's address.
    """
    if not alerts:
        raise ConfigError("no alerts to open an incident from")
    t = int(time.time() * 1000) if now is None else now
    margin = int(margin_hours * HOUR_MS)
    refs = sorted((alert_ref(a) for a in alerts), key=lambda r: r.time)
    selectors = []
    for r in refs:
        selectors.append(Selector(accounts=(r.account,), addresses=(r.address,) if by_address and r.address else (),
                                  start=r.first_event - margin, end=r.last_event + 1 + margin,
                                  label=f"alert {r.id}"))
    accounts = sorted({r.account for r in refs})
    name = title or (f"Alertes sur {', '.join(accounts)}" if len(accounts) <= 3 else f"Alertes sur {len(accounts)} "
                     "comptes")
    return Incident(id=incident_id or new_incident_id((), t), title=name, opened=t,
                    aware=refs[0].time if aware is None else aware, selectors=selectors, alerts=refs)
