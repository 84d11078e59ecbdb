"""Per-account and per-peer-group state the engine keeps, and the window features detectors read.

Memory is bounded by the number of accounts and patients, never by the number of
events: an account keeps the times (and references) of the patients it newly opened
today and yesterday, one count per earlier day of the week, one small row of daily
maxima per learned day (last `history_days`), and the patients it accessed in the last
`reopen_hours`; a peer group keeps a reservoir of account-days. Everything is a msgspec
Struct of plain values so the whole engine can be snapshotted and restored when the
service restarts.

The windows count *newly opened* patients: a patient the account had not accessed in the
previous `reopen_hours`. A burst of reads of one chart is one opening; a nurse re-reading
her ward's patients all day opens each once. For a theft, where every record is new,
openings equal distinct patients.

Window counts are computed when asked (a few binary searches over sorted opening
times), not maintained on every opening: the volume detector asks only when enough
openings have accumulated to possibly cross a limit (its "slack"), and daily maxima
are computed once at the end of the day by a sweep.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

import msgspec
import numpy as np

from sentinelle.detect.clock import DAY, HOUR

__all__ = [
    "FEATURES",
    "N_FEATURES",
    "WINDOWS_MS",
    "AccountState",
    "PeerGroup",
    "daily_maxima",
    "hourly_counts",
    "quantile",
    "recent_since",
    "robust_maxima",
    "window_counts",
]

#: The window features, in order: all newly opened patients over 10 min, 1 h, 24 h, 7 days,
#: then the same for unexplained ones (no care relationship).
FEATURES = ("all_10min", "all_hour", "all_day", "all_week", "unx_10min", "unx_hour", "unx_day", "unx_week")
N_FEATURES = len(FEATURES)
WINDOWS_MS = (600_000, HOUR, DAY, 7 * DAY)


def _zeros(n: int) -> list[int]:
    return [0] * n


class AccountState(msgspec.Struct, kw_only=True):
    """Everything the engine knows about one account; detectors read it, the engine writes it."""

    account: str
    kind: str = "human"
    role: str = ""
    department: str = ""
    groups: list[str] = msgspec.field(default_factory=list)
    start: int | None = None
    end: int | None = None
    privileged: bool = False
    known: bool = False
    hookset: int = 0  # index of the engine's hook lists for this account's kind
    declared_addresses: list[str] = msgspec.field(default_factory=list)
    # activity
    first_time: int = 0
    last_time: int = 0
    prev_time: int = 0  # time of the event before the current visit (dormancy)
    n_events: int = 0
    active_days: int = 0
    mature: bool = False  # enough learned days to be judged against its own history
    today_active: bool = False
    # current visit: consecutive events of this account on the same patients
    v_pats: tuple[str, ...] = ()
    v_time: int = -(1 << 62)
    v_addr: str = ""
    v_action: str = ""
    v_cats: int = 0
    v_events: int = 0
    v_reason: int = -1  # 1 explained, 0 unexplained, -1 no patient (for the explained share)
    v_opened: bool = False
    # patients accessed recently: canonical reference -> 2 * last access time + explained bit
    seen: dict[str, int] = msgspec.field(default_factory=dict)
    seen_cap: int = 64  # size at which `seen` is pruned next (twice its size after pruning)
    # newly opened patients today and yesterday: times (non-decreasing), references, and
    # the times of the unexplained ones; counts of the six days before
    day_t: list[int] = msgspec.field(default_factory=list)
    day_p: list[str] = msgspec.field(default_factory=list)
    day_u: list[int] = msgspec.field(default_factory=list)
    prev_t: list[int] = msgspec.field(default_factory=list)
    prev_p: list[str] = msgspec.field(default_factory=list)
    prev_u: list[int] = msgspec.field(default_factory=list)
    week_all: list[int] = msgspec.field(default_factory=list)  # newest last, at most 6
    week_unx: list[int] = msgspec.field(default_factory=list)
    day_no: int = -1  # local day the day_* lists belong to
    today_unx: float = 0.0  # weighted unexplained openings today
    open_explained: int = 0  # explained openings ever (detectors that only see unexplained ones use it)
    # how rarely the account opens patient records at all: its first active local day, the
    # openings of its ordinary (not anomalous) days before today and the most on one day,
    # and its peers' openings per account and calendar day since their first activity
    first_day: int = -1
    past_open: int = 0
    past_max: int = 0
    peer_open_rate: float = -1.0
    today_anomalous: bool = False
    # own history: one row of daily maxima of the window features per learned day, newest last
    hist: list[list[int]] = msgspec.field(default_factory=list)
    care_open: int = 0  # openings and weighted unexplained openings of learned days
    care_unx: float = 0.0
    # limits and references used today (recomputed lazily once a day)
    lim_day: int = -1
    own_ref: list[float] = msgspec.field(default_factory=list)
    peer_ref: list[float] = msgspec.field(default_factory=list)
    lim: list[float] = msgspec.field(default_factory=list)
    care_p0: float = 0.05
    peer_unx_rate: float = 0.05
    # visits that opened a patient and read only identity/contact data, last 40 (bits) and their sum
    id_ring: list[int] = msgspec.field(default_factory=lambda: _zeros(40))
    id_pos: int = 0
    id_n: int = 0
    id_sum: int = 0
    # detector states, one per registered detector, in registry order
    det: list[Any] = msgspec.field(default_factory=list)
    # combining: best active signal per kind, and the open episode
    sigs: dict[str, Any] = msgspec.field(default_factory=dict)
    episode: Any = None


def window_counts(a: AccountState, t: int) -> tuple[int, int, int, int, int, int, int, int]:
    """The eight window features of `a` at time `t`: newly opened patients in the last
    10 min, 1 h, 24 h and 7 days, then the unexplained ones over the same windows."""
    out: list[int] = []
    for times, prev, week in ((a.day_t, a.prev_t, a.week_all), (a.day_u, a.prev_u, a.week_unx)):
        n_today = len(times)
        for w in (600_000, HOUR):
            cut = t - w
            c = n_today - bisect_right(times, cut)
            if prev and prev[-1] > cut:
                c += len(prev) - bisect_right(prev, cut)
            out.append(c)
        cut = t - DAY
        out.append(n_today + len(prev) - bisect_right(prev, cut))
        out.append(n_today + sum(week))
    return out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]


def _maxima(today: list[int], prev: list[int]) -> tuple[int, int, int]:
    """Largest counts within 10 min, 1 h and 24 h of windows ending at one of `today`'s
    times (sorted), counting `prev` (the day before, sorted) too. One pass, three pointers."""
    if not today:
        return 0, 0, 0
    both = prev + today
    k = len(prev)
    j10 = j60 = j24 = 0
    m10 = m60 = m24 = 0
    for i in range(k, len(both)):
        t = both[i]
        cut = t - 600_000
        while both[j10] <= cut:
            j10 += 1
        cut = t - 3_600_000
        while both[j60] <= cut:
            j60 += 1
        cut = t - 86_400_000
        while both[j24] <= cut:
            j24 += 1
        if i - j10 >= m10:
            m10 = i - j10 + 1
        if i - j60 >= m60:
            m60 = i - j60 + 1
        if i - j24 >= m24:
            m24 = i - j24 + 1
    return m10, m60, m24


def daily_maxima(a: AccountState) -> list[int]:
    """Today's maxima of the eight window features (computed at the end of the day)."""
    a10, a60, a24 = _maxima(a.day_t, a.prev_t)
    u10, u60, u24 = _maxima(a.day_u, a.prev_u)
    return [a10, a60, a24, len(a.day_t) + sum(a.week_all), u10, u60, u24, len(a.day_u) + sum(a.week_unx)]


def hourly_counts(a: AccountState, first_hour: int, last_hour: int) -> list[int]:
    """Newly opened patients per absolute hour from `first_hour` to `last_hour` (today and yesterday)."""
    counts = _zeros(max(0, last_hour - first_hour + 1))
    for times in (a.prev_t, a.day_t):
        for t in times:
            i = t // HOUR - first_hour
            if 0 <= i < len(counts):
                counts[i] += 1
    return counts


def recent_since(a: AccountState, t0: int, limit: int = 50) -> tuple[list[str], int]:
    """Patients `a` newly opened at or after `t0` (today and yesterday; newest first, at most
    `limit`) and the earliest such opening time (`t0` when none)."""
    out: list[str] = []
    first = -1
    for times, refs in ((a.day_t, a.day_p), (a.prev_t, a.prev_p)):
        i = bisect_left(times, t0)
        if i < len(times):
            first = times[i]
            for k in range(len(refs) - 1, i - 1, -1):
                if len(out) >= limit:
                    break
                out.append(refs[k])
    return out, (first if first >= 0 else t0)


def quantile(values: list[int] | list[float], q: float) -> float:
    """The `q` quantile of values (nearest rank on a sorted copy); 0 for no values.

    >>> quantile([1, 2, 3, 4, 100], 0.5)
    3.0
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[rank])


def robust_maxima(rows: list[list[int]]) -> list[float]:
    """Per feature, the 95th percentile of an account's daily maxima (its usual maximum)."""
    n = len(rows)
    rank = min(n - 1, max(0, round(0.95 * (n - 1))))
    return [float(sorted(column)[rank]) for column in zip(*rows, strict=True)]


class PeerGroup(msgspec.Struct, kw_only=True):
    """Account-days of one peer group (role and department, a role, or an actor kind).

    A ring of the last `peer_reservoir` account-day rows (stored flat, eight values a
    row, so a refresh is one array conversion) feeds the group's 99th percentile of each
    window feature.
    """

    key: str
    flat: list[int] = msgspec.field(default_factory=list)
    pos: int = 0
    n_days: int = 0
    opened: int = 0
    unexplained: float = 0.0
    ref: list[float] = msgspec.field(default_factory=list)
    dirty: bool = False
    refreshed_at: int = 0  # n_days at the last refresh
    refreshed_day: int = -1
    # calendar view of the group, for accounts that are rarely active at all: members and
    # their first active day, account-days since then, openings of ordinary days
    members: dict[str, int] = msgspec.field(default_factory=dict)
    member_days: int = 0
    opened_all: int = 0

    @property
    def rows(self) -> int:
        """Account-days held."""
        return len(self.flat) // N_FEATURES

    def push(self, row: list[int], opened: int, unexplained: float, capacity: int) -> None:
        """Add one account-day."""
        if len(self.flat) < capacity * N_FEATURES:
            self.flat.extend(row)
        else:
            i = self.pos * N_FEATURES
            self.flat[i: i + N_FEATURES] = row
            self.pos = (self.pos + 1) % capacity
        self.n_days += 1
        self.opened += opened
        self.unexplained += unexplained
        self.dirty = True

    def refresh(self, day: int) -> None:
        """Recompute the 99th percentiles (lazily, when a member asks after new rows; at most
        once a day, and for a large group after 10 % new rows: its percentile barely moves)."""
        if not self.dirty or day == self.refreshed_day:
            return
        self.refreshed_day = day
        if self.ref and self.n_days - self.refreshed_at < max(1, self.rows // 10):
            return
        self.refreshed_at = self.n_days
        arr = np.asarray(self.flat, dtype=np.float64).reshape(-1, N_FEATURES)
        self.ref = [float(v) for v in np.quantile(arr, 0.99, axis=0, method="nearest")]
        self.dirty = False

    @property
    def unexplained_rate(self) -> float:
        """Share of the group's opened patients that no care relationship explains."""
        return self.unexplained / self.opened if self.opened else 0.0
