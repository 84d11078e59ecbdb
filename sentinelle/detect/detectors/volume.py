"""Volume: how many patients an account newly opens, over 10 minutes, 1 hour, 24 hours and 7 days.

Each window is compared with the account's own robust maximum (the 95th percentile of
its daily maxima over its learned days; days with signals are not learned, so a slow
drift upwards while suspicious does not raise the bar) and, for an account without
enough history, with its peers' 99th percentile (same role and department, falling
back to role, then actor kind). The engine computes one limit per window each day.

Counting is lazy: after each evaluation the detector knows how many more openings
("slack") it takes before any window could reach its limit, and it only counts
openings until then. A normal account is evaluated a few times a day.

The same windows also count *unexplained* patients (no care relationship). A surge of
explained accesses (a mass-casualty day in the emergency department) is care, not
theft: an all-patients signal whose window is about as explained as usual is capped at
`volume_alone_max`, a hint that needs other evidence.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from sentinelle.detect.detectors.base import Detector, Observation, ev
from sentinelle.detect.signal import Signal, fmt_int, fmt_pct
from sentinelle.detect.state import N_FEATURES, WINDOWS_MS, AccountState, recent_since, window_counts

__all__ = ["VolumeDetector", "VolumeState"]

_WINDOW_FR = ("10 min", "1 h", "24 h", "7 jours")
_WINDOW_EN = ("10 min", "1 h", "24 h", "7 days")
_CODES = ("volume.10min", "volume.hour", "volume.day", "volume.week")
_NO_LIMIT = 1 << 30


class VolumeState(msgspec.Struct):
    """Openings counted since the last evaluation, the slack before the next, and per window
    the count at which a signal was last emitted (0: the window is back under its limit)."""

    pending: int = 0
    slack: int = 0
    lim_day: int = -1
    emitted: list[int] = msgspec.field(default_factory=lambda: [0] * N_FEATURES)


class VolumeDetector(Detector):
    """Newly opened patients over several windows against own history and peers."""

    name: ClassVar[str] = "volume"
    opens: ClassVar[str] = "all"
    hooks: ClassVar[frozenset[str]] = frozenset({"open", "day"})
    kinds: ClassVar[dict[str, tuple[str, str]]] = {
        "volume": ("volume inhabituel de dossiers patients ouverts", "unusual volume of patient records opened"),
    }

    def new_state(self, acc: AccountState) -> VolumeState:
        return VolumeState()

    def state_type(self) -> type[VolumeState]:
        return VolumeState

    def on_open(self, state: VolumeState, obs: Observation) -> Signal | None:
        state.pending += 1
        a = obs.acc
        if state.pending < state.slack and state.lim_day == a.lim_day:
            return None
        state.pending = 0
        state.lim_day = a.lim_day
        counts = window_counts(a, obs.time)
        lim = a.lim
        emitted = state.emitted
        best = -1
        best_ratio = 0.0
        for i in range(N_FEATURES):
            c = counts[i]
            bar = lim[i]
            if c <= bar:
                emitted[i] = 0  # back to normal: the next excess is news again
            elif c >= emitted[i] * 1.5:
                ratio = c / bar
                if ratio > best_ratio:
                    best, best_ratio = i, ratio
        if best >= 0:
            emitted[best] = counts[best]
        # openings it takes before any window could reach its next level (each opening adds
        # at most one to every window, and windows only shrink with time)
        slack = _NO_LIMIT
        for i in range(N_FEATURES):
            nxt = max(lim[i], emitted[i] * 1.5)
            if nxt < _NO_LIMIT:
                slack = min(slack, int(nxt) - counts[i] + 1)
        state.slack = max(1, slack)
        return self._signal(obs, best, counts, best_ratio) if best >= 0 else None

    def _signal(self, obs: Observation, i: int, counts: tuple[int, ...], ratio: float) -> Signal:
        a = obs.acc
        w = i % 4
        unexplained = i >= 4
        c = counts[i]
        total = counts[w]
        unx = counts[w + 4]
        share = unx / total if total else 0.0
        score = 1.0 - 0.45 / ratio
        normal = a.care_p0
        capped = False
        if not unexplained and share <= max(2 * normal, normal + 0.15):
            # the window is about as explained as usual: care, not theft
            score = min(score, self.settings.volume_alone_max)
            capped = True
        own = a.own_ref[i] if a.mature and a.own_ref else -1.0
        peer = a.peer_ref[i] if a.peer_ref else -1.0
        what_fr = "patients sans relation de soins" if unexplained else "patients distincts"
        what_en = "patients without a care relationship" if unexplained else "distinct patients"
        fr = [f"{fmt_int(c, 'fr')} {what_fr} ouverts en {_WINDOW_FR[w]}"]
        en = [f"{fmt_int(c, 'en')} {what_en} opened in {_WINDOW_EN[w]}"]
        if own >= 0:
            fr.append(f"maximum habituel de ce compte : {fmt_int(own, 'fr')}")
            en.append(f"this account's usual maximum: {fmt_int(own, 'en')}")
        else:
            fr.append("compte sans historique propre, comparé à ses pairs")
            en.append("account without a history of its own, judged by its peers")
        if peer >= 0:
            fr.append(f"99e centile des pairs : {fmt_int(peer, 'fr')}")
            en.append(f"peers' 99th percentile: {fmt_int(peer, 'en')}")
        if not unexplained and total:
            fr.append(f"{fmt_pct(share, 'fr')} sans relation de soins")
            en.append(f"{fmt_pct(share, 'en')} without a care relationship")
        code = _CODES[w] + (".unexplained" if unexplained else "")
        patients, first = recent_since(a, obs.time - WINDOWS_MS[w], 50)
        evidence = ev(
            code,
            " ; ".join(fr),
            "; ".join(en),
            count=c,
            window=_WINDOW_EN[w],
            own_max=round(own, 1),
            peer_p99=round(peer, 1),
            limit=round(a.lim[i], 1),
            unexplained_share=round(share, 3),
            capped=int(capped),
        )
        return self.signal(obs, score, "volume", [evidence], patients=tuple(patients), first_time=first)

    def end_day(self, state: VolumeState, acc: AccountState, learned: bool) -> None:
        # Limits change with the day: evaluate at the next opening. Emitted counts are kept,
        # so the openings of an excess already reported (they stay in the 24-hour and 7-day
        # windows for days) are not reported again.
        state.slack = 0
