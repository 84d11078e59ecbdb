"""The detection engine: one pass over an event stream that learns, detects and alerts.

Batch (`scan`) and streaming (the service) are one code path: `Engine.process(event)`
for each event in event-time order, `flush()` at the end. The first `learning_days`
of a trail only build history; afterwards history keeps growing from normal days.

Speed comes from the shape of audit trails: opening a chart issues a burst of 5-40 reads
of one patient within seconds. The engine keeps each account's current *visit* (same
patients and address, routine actions, no pause longer than `visit_gap_s`); an event
that continues the visit is only counted (a handful of attribute reads). Only an event that
starts a visit goes further, and only a patient the account had not accessed in the
previous `reopen_hours` (a newly *opened* patient) is explained by the care context and
shown to the detectors. Per-patient facts (canonical reference, restricted, decoy) are
looked up once per patient for the whole run; per-account facts (peer groups, limits)
once per account and day.

State (accounts, peer groups, detector states, open episodes) is msgspec Structs; see
`snapshot` and `restore`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from sentinelle.detect.clock import DAY, HOUR, LocalClock
from sentinelle.detect.detectors import REGISTRY, ContextLike, Detector, Observation
from sentinelle.detect.detectors.base import DECOY, RESTRICTED
from sentinelle.detect.episodes import Episode, build_alert, combined_score, episode_id, severity_of, severity_rank
from sentinelle.detect.settings import Settings
from sentinelle.detect.signal import Alert, Signal
from sentinelle.detect.state import (
    AccountState,
    PeerGroup,
    daily_maxima,
    hourly_counts,
    robust_maxima,
)
from sentinelle.events import SENSITIVE_CATEGORIES, AccessEvent, Category

__all__ = ["Engine", "EngineStats", "Timeline"]

_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")
#: A search of patients by name or birth date: its hits are homonyms shown in a result list,
#: not records opened (the user then reads the right one, which is an opening).
_NAME_LOOKUP = re.compile(r"Patient\?(?:.*&)?(?:name|family|given|birthdate|phonetic)(?::[a-z]+)?=", re.I)
_ADMIN_CATEGORIES = int(Category.IDENTITY | Category.CONTACT | Category.NATIONAL_ID | Category.APPOINTMENT)
_CLINICAL = SENSITIVE_CATEGORIES & ~int(Category.NATIONAL_ID)
_DEFAULT_UNEXPLAINED_RATE = 0.05
#: Actions that continue a visit; anything else (export, print, delete, break-glass, logins)
#: starts a new one so the detectors see it.
_ROUTINE = frozenset({"read", "search", "create", "update", "other"})
_SNAPSHOT_VERSION = 1


class Timeline(msgspec.Struct, kw_only=True):
    """Hourly newly opened patients of an alerted account, with its baseline, for the report."""

    account: str
    start_hour: int
    counts: list[int]
    baseline: float
    peer: float
    alerts: list[tuple[int, str]] = msgspec.field(default_factory=list)

    def add(self, hour: int, n: int) -> None:
        """Count `n` patients in an absolute hour (hours since the epoch)."""
        i = hour - self.start_hour
        if i < 0:
            return
        if i >= len(self.counts):
            self.counts.extend([0] * (i + 1 - len(self.counts)))
        self.counts[i] += n


class EngineStats(msgspec.Struct, kw_only=True):
    """Counters of one run, for the summary."""

    events: int = 0
    visits: int = 0
    openings: int = 0
    explained_events: int = 0
    unexplained_events: int = 0
    no_patient_events: int = 0
    signals: int = 0
    alerts: int = 0
    first_time: int = 0
    last_time: int = 0


class _Snapshot(msgspec.Struct, kw_only=True):
    version: int
    settings: Settings
    start: int
    learn_end: int
    day: int
    next_day_at: int
    now: int
    detectors: list[str]
    accounts: dict[str, AccountState]
    groups: dict[str, PeerGroup]
    stats: EngineStats
    timelines: dict[str, Timeline]


class Engine:
    """Learns and detects in one pass over access events in event-time order.

    Feed it with `process(event)` (streaming) or `process_batch(events)` (the same code
    with the visit test inlined in the loop); each returns the alert versions the events
    caused. Call `flush()` at the end of the input. `snapshot()` and `restore()` carry
    the whole state across a restart.
    """

    def __init__(
        self,
        context: ContextLike,
        settings: Settings | None = None,
        detectors: Iterable[str] | None = None,
    ) -> None:
        self.context = context
        self.settings = s = settings or Settings()
        names = list(detectors) if detectors is not None else list(REGISTRY)
        self.detectors: list[Detector] = [REGISTRY[n](s) for n in names]
        # Hooks per actor kind ("hook sets"): a detector that does not apply to a kind of
        # account is never called for it.
        self._kinds: list[str] = []
        self._open_hooks: list[list[tuple[int, Any]]] = []
        self._open_hooks_all: list[list[tuple[int, Any]]] = []
        self._event_hooks: list[list[tuple[int, Any, frozenset[str] | None]]] = []
        self._day_dets = [(i, d) for i, d in enumerate(self.detectors) if "day" in d.hooks]
        self.labels: dict[str, tuple[str, str]] = {}
        self._learning_kinds: set[str] = set()
        for d in self.detectors:
            self.labels.update(d.kinds)
            self._learning_kinds |= d.learning_kinds
        self.clock = LocalClock(s.utc_offset_mode)
        self.accounts: dict[str, AccountState] = {}
        self.groups: dict[str, PeerGroup] = {}
        self.timelines: dict[str, Timeline] = {}
        self._canon: dict[str, tuple[str, int]] = {}
        # cache: the reference lists each account's limits were computed from
        self._lim_src: dict[str, tuple[list[float], list[float]]] = {}
        self.n_events = 0
        self.n_visits = 0
        self.n_openings = 0
        self.n_explained = 0
        self.n_unexplained = 0
        self.n_signals = 0
        self.n_alerts = 0
        self._obs = Observation(context)
        self._visit_gap = int(s.visit_gap_s * 1000)
        self._reopen2 = int(s.reopen_hours * HOUR) * 2  # `seen` stores time * 2 + explained bit
        self._ttl = int(s.signal_ttl_hours * HOUR)
        self._in_care_weight = s.care_in_care_weight
        self._gap = int(s.episode_gap_hours * HOUR)
        self._start = -1
        self._learn_end = -1
        self._day = -1
        self._next_day_at = -(1 << 62)
        self._now = -(1 << 62)
        self._active: list[AccountState] = []
        self._off = 0
        self._off_lo = 1
        self._off_hi = 0
        self._floors: tuple[float, ...] = (
            s.volume_floor_10min,
            s.volume_floor_hour,
            s.volume_floor_day,
            s.volume_floor_week,
            max(1, s.volume_unexplained_floor_hour * 2 // 3),
            s.volume_unexplained_floor_hour,
            s.volume_unexplained_floor_day,
            s.volume_unexplained_floor_week,
        )
        #: Called with every alert version as it fires, and with every signal the engine
        #: weighs (after the learning period), for streaming consumers and explanations.
        self.on_alert: Callable[[Alert], None] | None = None
        self.on_signal: Callable[[Signal], None] | None = None

    # ------------------------------------------------------------------ hot path
    def process(self, e: AccessEvent) -> list[Alert]:
        """Take one event; return the alerts (new or updated episodes) it caused."""
        a = self.accounts.get(e.account)
        if (
            a is not None
            and e.patients == a.v_pats
            and e.time - a.v_time <= self._visit_gap
            and e.address == a.v_addr
            and e.action in _ROUTINE
            and not e.purpose
        ):
            # continues the current visit: count only
            if e.time > a.v_time:
                a.v_time = e.time
            a.v_cats |= e.categories
            a.v_events += 1
            return []
        return self._start_visit(e, a)

    def process_batch(self, events: Iterable[AccessEvent]) -> list[Alert]:
        """Take many events in order; return every alert version they caused."""
        out: list[Alert] = []
        get = self.accounts.get
        gap = self._visit_gap
        routine = _ROUTINE
        start_visit = self._start_visit
        for e in events:
            # the continuation test of `process`, inlined: most events stop here
            a = get(e.account)
            if (
                a is not None
                and e.patients == a.v_pats
                and e.time - a.v_time <= gap
                and e.address == a.v_addr
                and e.action in routine
                and not e.purpose
            ):
                if e.time > a.v_time:
                    a.v_time = e.time
                a.v_cats |= e.categories
                a.v_events += 1
                continue
            alerts = start_visit(e, a)
            if alerts:
                out.extend(alerts)
        return out

    # ------------------------------------------------------------------ visits
    def _start_visit(self, e: AccessEvent, a: AccountState | None) -> list[Alert]:
        t = e.time
        if a is None:
            a = self._new_account(e)
        if t > self._now:
            self._now = t
            if t >= self._next_day_at:
                self._rollover(t)
        if a.v_events:
            self._end_visit(a)
        self.n_visits += 1
        a.prev_time = a.last_time
        if t > a.last_time:
            a.last_time = t
        if a.lim_day != self._day:
            self._new_account_day(a)
        a.v_pats = pats = e.patients
        a.v_time = t
        a.v_addr = e.address
        a.v_cats = e.categories
        a.v_events = 1
        a.v_reason = -1
        a.v_opened = False
        obs = self._obs
        obs.event = e
        obs.acc = a
        obs.time = t
        alerts: list[Alert] = []
        first = ""
        if pats and not (e.action == "search" and "Patient?" in e.query and _NAME_LOOKUP.search(e.query)):
            seen = a.seen
            cut = 2 * t - self._reopen2
            canon = self._canon
            for raw in pats:
                info = canon.get(raw)
                if info is None:
                    info = self._new_patient(raw)
                p = info[0]
                if not first:
                    first = p
                last = seen.get(p)
                if last is not None and last > cut:
                    seen[p] = 2 * t + (last & 1)
                    if a.v_reason < 0:
                        a.v_reason = last & 1
                    continue
                self._open(a, p, info[1], t, obs, alerts)
        hooks = self._event_hooks[a.hookset]
        if hooks:
            obs.patient = first
            obs.reason = a.v_reason
            obs._depts = None
            dets = a.det
            action = e.action
            for i, hook, actions in hooks:
                if actions is None or action in actions:
                    found = hook(dets[i], obs)
                    if found is not None:
                        self._take(a, found, t, alerts)
        return alerts

    def _end_visit(self, a: AccountState) -> None:
        """Account for the visit that just ended (explained events, identity-only reading)."""
        n = a.v_events
        a.v_events = 0
        self.n_events += n
        r = a.v_reason
        if r > 0:
            self.n_explained += n
        elif r == 0:
            self.n_unexplained += n
        if a.v_opened:
            cats = a.v_cats
            bit = 1 if (cats & _ADMIN_CATEGORIES and not cats & _CLINICAL) else 0
            ring = a.id_ring
            i = a.id_pos
            a.id_sum += bit - ring[i]
            ring[i] = bit
            a.id_pos = (i + 1) % 40
            a.id_n += 1
            a.v_opened = False

    def _open(self, a: AccountState, p: str, info: int, t: int, obs: Observation, alerts: list[Alert]) -> None:
        """A patient newly opened by an account: explain it, count it, show it to the detectors."""
        ctx = self.context
        reason = ctx.explain(a.account, p, t)
        a.v_opened = True
        day_t = a.day_t
        if day_t and t < day_t[-1]:
            t = day_t[-1]  # keep opening times sorted when events arrive late
        day_t.append(t)
        a.day_p.append(p)
        if reason:
            a.seen[p] = 2 * t + 1
            if a.v_reason < 0:
                a.v_reason = 1
            a.open_explained += 1
            obs.in_care = -1
            obs._depts = None
        else:
            a.seen[p] = 2 * t
            a.v_reason = 0
            a.day_u.append(t)
            depts = ctx.departments_of(p, t)
            obs._depts = depts
            if depts:
                obs.in_care = 1
                a.today_unx += self._in_care_weight
            else:
                obs.in_care = 0
                a.today_unx += 1.0
        self.n_openings += 1
        ep: Episode | None = a.episode
        if ep is not None and not reason and t - ep.last_signal <= self._gap:
            # the scope of an open episode: the unexplained patients the account goes on opening
            self._grow_episode(a, ep, p, t, alerts)
        obs.patient = p
        obs.reason = reason
        flags = obs.flags = info & 7
        obs.num = (info >> 3) - 1
        dets = a.det
        # explained openings of unflagged patients only go to the detectors that count them all
        hooks = self._open_hooks if (flags or not reason) else self._open_hooks_all
        for i, hook in hooks[a.hookset]:
            found = hook(dets[i], obs)
            if found is not None:
                self._take(a, found, t, alerts)

    def _grow_episode(self, a: AccountState, ep: Episode, p: str, t: int, alerts: list[Alert]) -> None:
        """A patient opened during an open episode joins its scope."""
        if p not in ep.patients:
            ep.patients[p] = t
            ep.dirty = True
            n = len(ep.patients)
            if n >= 2 * ep.emitted_patients and n >= ep.emitted_patients + 10:
                alerts.append(self._emit(a, ep, t))
        if t > ep.last_event:
            ep.last_event = t
        tl = self.timelines.get(a.account)
        if tl is not None:
            tl.add(t // HOUR, 1)

    # ------------------------------------------------------------------ combining
    def _take(self, a: AccountState, found: Signal | list[Signal], t: int, alerts: list[Alert]) -> None:
        if isinstance(found, list):
            for sig in found:
                self._combine(a, sig, t, alerts)
        else:
            self._combine(a, found, t, alerts)

    def _combine(self, a: AccountState, sig: Signal, t: int, alerts: list[Alert]) -> None:
        if t < self._learn_end and sig.kind not in self._learning_kinds:
            return
        self.n_signals += 1
        if self.on_signal is not None:
            self.on_signal(sig)
        sigs: dict[str, Signal] = a.sigs
        old = sigs.get(sig.kind)
        if old is None or sig.score >= old.score or t - old.time > self._ttl:
            sigs[sig.kind] = sig
        for kind in [k for k, s in sigs.items() if t - s.time > self._ttl]:
            del sigs[kind]
        score = combined_score(sigs, t, self._ttl)
        if score >= self.settings.alert_threshold and t >= self._learn_end:
            a.today_anomalous = True  # not learned: a suspicious day must not raise the bar
        s = self.settings
        ep: Episode | None = a.episode
        if ep is not None and t - ep.last_signal > self._gap:
            ep = a.episode = None
        if ep is None:
            if score < s.alert_threshold:
                return
            start = min(x.first_time for x in sigs.values())
            ep = Episode(
                id=episode_id(a.account, start),
                account=a.account,
                start=start,
                fired=t,
                last_signal=t,
                last_event=t,
                score=score,
                severity="low",
                kind=sig.kind,
                client=self._obs.event.client if self._obs.acc is a else "",
                address=a.v_addr,
            )
            a.episode = ep
            for x in sorted(sigs.values(), key=lambda x: x.first_time):
                for p in x.patients:
                    if p not in ep.patients:
                        ep.patients[p] = x.time
            for x in sigs.values():
                ep.signals[x.kind] = x
            self._start_timeline(a, t)
        else:
            ep.last_signal = t
            ep.last_event = max(ep.last_event, t)
            old_ep = ep.signals.get(sig.kind)
            if old_ep is None or sig.score >= old_ep.score or sig.time - old_ep.time > self._ttl:
                ep.signals[sig.kind] = sig
            for p in sig.patients:
                if p not in ep.patients:
                    ep.patients[p] = sig.time
            ep.score = max(ep.score, score)
            ep.dirty = True
            if e_addr := a.v_addr:
                ep.address = e_addr
        ep.severity = severity_of(ep.score, ep.signals, s)
        if (
            ep.version == 0
            or len(ep.signals) > ep.emitted_kinds
            or severity_rank(ep.severity) > severity_rank(ep.emitted_severity)
            or (len(ep.patients) >= 2 * ep.emitted_patients and len(ep.patients) >= ep.emitted_patients + 10)
        ):
            alerts.append(self._emit(a, ep, t))

    def _emit(self, a: AccountState, ep: Episode, t: int) -> Alert:
        ep.version += 1
        ep.emitted_patients = len(ep.patients)
        ep.emitted_kinds = len(ep.signals)
        ep.emitted_severity = ep.severity
        ep.dirty = False
        alert = build_alert(ep, t, self.labels, self.settings)
        self.n_alerts += 1
        tl = self.timelines.get(a.account)
        if tl is not None and (not tl.alerts or tl.alerts[-1][1] != ep.severity):
            tl.alerts.append((t // HOUR, ep.severity))
        if self.on_alert is not None:
            self.on_alert(alert)
        return alert

    def _start_timeline(self, a: AccountState, t: int) -> None:
        if a.account in self.timelines:
            return
        hour = t // HOUR
        start = hour - 47
        own = a.own_ref[1] if a.mature and a.own_ref else -1.0
        peer = a.peer_ref[1] if a.peer_ref else -1.0
        self.timelines[a.account] = Timeline(
            account=a.account, start_hour=start, counts=hourly_counts(a, start, hour), baseline=own, peer=peer
        )

    def flush(self) -> list[Alert]:
        """End of input: finish open visits and return the final version of changed episodes."""
        alerts: list[Alert] = []
        for a in self.accounts.values():
            if a.v_events:
                self._end_visit(a)
            ep: Episode | None = a.episode
            if ep is not None and ep.dirty and ep.version > 0:
                alerts.append(self._emit(a, ep, max(ep.last_event, a.last_time)))
        return alerts

    # ------------------------------------------------------------------ accounts, patients
    def _new_account(self, e: AccessEvent) -> AccountState:
        info = self.context.account_info(e.account)
        if info is not None:
            kind = info.kind or e.actor_kind
            a = AccountState(
                account=e.account,
                kind=kind,
                role=info.role or "",
                department=info.department or "",
                start=info.start,
                end=info.end,
                privileged=bool(info.privileged),
                known=True,
                declared_addresses=list(getattr(info, "addresses", ()) or ()),
            )
        else:
            kind = e.actor_kind or "human"
            a = AccountState(account=e.account, kind=kind)
        a.groups = [f"{a.kind}|{a.role}|{a.department}", f"{a.kind}|{a.role}", a.kind]
        a.hookset = self._hookset(a.kind)
        a.first_time = e.time
        a.det = [d.new_state(a) for d in self.detectors]
        self.accounts[e.account] = a
        return a

    def _hookset(self, kind: str) -> int:
        """Index of the hook lists for accounts of one actor kind."""
        if kind in self._kinds:
            return self._kinds.index(kind)
        self._kinds.append(kind)
        dets = list(enumerate(self.detectors))
        self._open_hooks.append([(i, d.on_open) for i, d in dets if "open" in d.hooks and d.applies(kind)])
        self._open_hooks_all.append(
            [(i, d.on_open) for i, d in dets if "open" in d.hooks and d.applies(kind) and d.opens == "all"]
        )
        self._event_hooks.append(
            [(i, d.on_event, d.event_actions) for i, d in dets if "event" in d.hooks and d.applies(kind)]
        )
        return len(self._kinds) - 1

    def _new_patient(self, raw: str) -> tuple[str, int]:
        """Canonical reference and facts of a patient reference, looked up once per run.

        The facts are packed in one int: bit 0 restricted, bit 1 decoy, and from bit 3 the
        numeric part of the identifier plus one (0 when it has none), for enumeration.
        """
        ctx = self.context
        p = ctx.resolve_patient(raw)
        known = self._canon.get(p)
        if known is not None and known[0] == p:
            self._canon[raw] = known
            return known
        flags = 0
        if ctx.is_restricted(p):
            flags |= RESTRICTED
        if ctx.is_decoy(p):
            flags |= DECOY
        m = _TRAILING_NUMBER.search(p)
        num = int(m.group(1)) if m and len(m.group(1)) <= 15 else -1
        info = (p, ((num + 1) << 3) | flags)
        self._canon[raw] = info
        self._canon[p] = info
        return info

    # ------------------------------------------------------------------ days
    def _rollover(self, t: int) -> None:
        """A new local day: learn from the day that ended, refresh peer baselines."""
        s = self.settings
        off = self.clock.offset(t)
        day = (t + off) // DAY
        if self._start < 0:
            # learning ends at a local midnight, so "learning" changes only at day boundaries
            self._start = t
            self._learn_end = (day + math.ceil(s.learning_days)) * DAY - off
        self._next_day_at = (day + 1) * DAY - off
        if self._next_day_at <= t:  # offset change at the day boundary
            self._next_day_at = t + 1
        cap = s.peer_reservoir
        reopen2 = 2 * int(s.reopen_hours * HOUR)
        for a in self._active:
            opened = len(a.day_t)
            learned = not a.today_anomalous and opened > 0
            # calendar counts of openings, for accounts that almost never open records
            for key in a.groups[:2]:
                g = self.groups.get(key)
                if g is None:
                    g = self.groups[key] = PeerGroup(key=key)
                if a.account not in g.members:
                    g.members[a.account] = a.first_day
                if not a.today_anomalous:
                    g.opened_all += opened
            if not a.today_anomalous:
                a.past_open += opened
                if opened > a.past_max:
                    a.past_max = opened
            if learned:
                row = daily_maxima(a)
                a.hist.append(row)
                if len(a.hist) > s.history_days:
                    del a.hist[0]
                # the usual maxima move only when a new day exceeds them, or as old days
                # leave the history (checked weekly)
                if len(a.hist) >= s.min_history_days and (
                    not a.own_ref or len(a.hist) % 7 == 0 or any(x > r for x, r in zip(row, a.own_ref, strict=True))
                ):
                    a.own_ref = robust_maxima(a.hist)
                # The unexplained rate learns only from days that look like the account's
                # usual work: a few extra unexplained patients every day (low and slow) would
                # otherwise raise the rate until they look normal.
                expected = a.care_p0 * opened
                if a.today_unx <= expected + 2.0 * math.sqrt(expected) + 0.5 or t < self._learn_end:
                    a.care_open += opened
                    a.care_unx += a.today_unx
                    if a.care_open > 20_000:  # keep the rate recent
                        a.care_open //= 2
                        a.care_unx /= 2
                for key in a.groups:
                    g = self.groups.get(key)
                    if g is None:
                        g = self.groups[key] = PeerGroup(key=key)
                    g.push(row, opened, a.today_unx, cap)
            a.mature = len(a.hist) >= s.min_history_days
            for i, d in self._day_dets:
                d.end_day(a.det[i], a, learned)
            a.today_unx = 0.0
            a.today_anomalous = False
            a.today_active = False
            _rotate_day(a, day)
            if len(a.seen) > a.seen_cap:  # forget patients not accessed for `reopen_hours`
                cut = 2 * t - reopen2
                a.seen = {p: v for p, v in a.seen.items() if v >= cut}
                a.seen_cap = max(64, 2 * len(a.seen))
        for g in self.groups.values():
            g.member_days += len(g.members)
        self._active = []
        self._day = day
        obs = self._obs
        obs.day = day
        obs.off = off
        obs.learning = t < self._learn_end

    def _new_account_day(self, a: AccountState) -> None:
        """First visit of an account on a new local day: rotate its lists, compute its limits."""
        if a.day_no != self._day:
            _rotate_day(a, self._day)
        if a.first_day < 0:
            a.first_day = self._day
        self._limits(a)
        a.today_active = True
        a.active_days += 1
        self._active.append(a)

    def _limits(self, a: AccountState) -> None:
        """Today's window limits and unexplained rate of an account, from its history and peers."""
        s = self.settings
        a.lim_day = self._day
        peer: PeerGroup | None = None
        for key in a.groups:
            g = self.groups.get(key)
            if g is not None and g.n_days >= s.min_peer_days:
                peer = g
                break
        if peer is not None:
            if peer.dirty:
                peer.refresh(self._day)
            a.peer_ref = peer.ref
        else:
            a.peer_ref = []
        if not a.mature:
            a.own_ref = []
        # the limits change only when the references do (new lists when recomputed)
        src = self._lim_src.get(a.account)
        if src is None or src[0] is not a.own_ref or src[1] is not a.peer_ref or not a.lim:
            self._lim_src[a.account] = (a.own_ref, a.peer_ref)
            floors = self._floors
            if a.own_ref:
                k = s.volume_own_factor
                a.lim = [max(o * k, f) for o, f in zip(a.own_ref, floors, strict=True)]
            elif a.peer_ref:
                k = s.volume_peer_factor
                a.lim = [max(o * k, f) for o, f in zip(a.peer_ref, floors, strict=True)]
            else:  # no history and no peers yet (the first days): twice the floors
                a.lim = [2.0 * f for f in floors]
        rate = _DEFAULT_UNEXPLAINED_RATE
        for key in a.groups:
            g = self.groups.get(key)
            if g is not None and g.opened >= 500:
                rate = g.unexplained_rate
                break
        a.peer_unx_rate = rate
        a.peer_open_rate = -1.0
        for key in a.groups[:2]:
            g = self.groups.get(key)
            if g is not None and g.member_days >= s.rare_min_peer_days:
                a.peer_open_rate = g.opened_all / g.member_days
                break
        w = s.care_prior_weight
        p0 = (a.care_unx + w * rate) / (a.care_open + w)
        a.care_p0 = min(0.95, max(0.02, p0))

    # ------------------------------------------------------------------ results, state
    @property
    def stats(self) -> EngineStats:
        """Counters of the run so far."""
        return EngineStats(
            events=self.n_events,
            visits=self.n_visits,
            openings=self.n_openings,
            explained_events=self.n_explained,
            unexplained_events=self.n_unexplained,
            no_patient_events=self.n_events - self.n_explained - self.n_unexplained,
            signals=self.n_signals,
            alerts=self.n_alerts,
        )

    @property
    def patients_seen(self) -> int:
        """Distinct patients (canonical references) seen so far."""
        return len({info[0] for info in self._canon.values()})

    def explained_share(self) -> float:
        """Share of patient accesses (events) that the care context explains."""
        n = self.n_explained + self.n_unexplained
        return self.n_explained / n if n else 0.0

    def snapshot(self) -> bytes:
        """The engine's whole state as bytes (msgpack), for a later `restore`."""
        snap = _Snapshot(
            version=_SNAPSHOT_VERSION,
            settings=self.settings,
            start=self._start,
            learn_end=self._learn_end,
            day=self._day,
            next_day_at=self._next_day_at,
            now=self._now,
            detectors=[d.name for d in self.detectors],
            accounts=self.accounts,
            groups=self.groups,
            stats=self.stats,
            timelines=self.timelines,
        )
        return msgspec.msgpack.encode(snap)

    @classmethod
    def restore(cls, context: ContextLike, data: bytes) -> Engine:
        """An engine continuing from a `snapshot` (same settings and detectors)."""
        snap = msgspec.msgpack.decode(data, type=_Snapshot)
        engine = cls(context, snap.settings, snap.detectors)
        engine._start = snap.start
        engine._learn_end = snap.learn_end
        engine._day = snap.day
        engine._next_day_at = snap.next_day_at
        engine._now = snap.now
        engine.groups = snap.groups
        st = snap.stats
        engine.n_events, engine.n_visits, engine.n_openings = st.events, st.visits, st.openings
        engine.n_explained, engine.n_unexplained = st.explained_events, st.unexplained_events
        engine.n_signals, engine.n_alerts = st.signals, st.alerts
        engine.timelines = snap.timelines
        types = [d.state_type() for d in engine.detectors]
        for a in snap.accounts.values():
            a.det = [
                msgspec.convert(raw, typ) if typ is not None and raw is not None else raw
                for raw, typ in zip(a.det, types, strict=True)
            ]
            a.sigs = {k: msgspec.convert(v, Signal) for k, v in a.sigs.items()}
            if a.episode is not None:
                a.episode = msgspec.convert(a.episode, Episode)
            a.v_pats = tuple(a.v_pats)
            a.hookset = engine._hookset(a.kind)
            if a.today_active:
                engine._active.append(a)
        engine.accounts = snap.accounts
        obs = engine._obs
        obs.day = snap.day
        obs.off = engine.clock.offset(snap.now) if snap.now > 0 else 0
        obs.learning = snap.now < snap.learn_end
        return engine

    def account(self, name: str) -> AccountState | None:
        """The state of one account, if seen."""
        return self.accounts.get(name)

    def unexplained_rate(self, name: str) -> float:
        """Learned unexplained rate of an account (NaN if unseen)."""
        a = self.accounts.get(name)
        return a.care_p0 if a is not None else math.nan


def _rotate_day(a: AccountState, day: int) -> None:
    """Move an account's opening lists to a new local day (yesterday kept for 24-hour windows)."""
    gap = day - a.day_no if a.day_no >= 0 else 7
    if gap <= 0:
        return
    if gap == 1:
        a.prev_t, a.prev_p, a.prev_u = a.day_t, a.day_p, a.day_u
    else:
        a.prev_t, a.prev_p, a.prev_u = [], [], []
    a.week_all.append(len(a.day_t))
    a.week_unx.append(len(a.day_u))
    for _ in range(min(gap - 1, 6)):
        a.week_all.append(0)
        a.week_unx.append(0)
    del a.week_all[:-6]
    del a.week_unx[:-6]
    a.day_t, a.day_p, a.day_u = [], [], []
    a.day_no = day


def state_size(engine: Engine) -> dict[str, int]:
    """Rough sizes of the state (for the bounded-memory check): accounts, groups, seen patients."""
    return {
        "accounts": len(engine.accounts),
        "groups": len(engine.groups),
        "seen": sum(len(a.seen) for a in engine.accounts.values()),
        "openings_kept": sum(len(a.day_t) + len(a.prev_t) for a in engine.accounts.values()),
        "patients": len(engine._canon),
        "hist_rows": sum(len(a.hist) for a in engine.accounts.values()),
        "peer_rows": sum(g.rows for g in engine.groups.values()),
    }
