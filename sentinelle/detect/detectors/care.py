"""Care relationship: runs of accesses that the care context does not explain.

Explanation-based auditing: most legitimate accesses are explained by an encounter, an
appointment, a care team, the department treating the patient, or earlier care
(> 94 % in published work). One unexplained access is normal (first access before the
encounter is recorded, a consult); a run of them is not. The detector runs a Bernoulli
CUSUM per account on "was this newly opened patient unexplained", testing the account's
own unexplained rate (learned, with its peers' rate as a prior) against
`care_alt_rate`. An unexplained patient whom another department is treating at that
time (covering, consults) weighs `care_in_care_weight` instead of 1.

A second test catches the low and slow: a few extra unexplained patients every day,
never a run. Over the last 7 days, the count of unexplained openings is compared with
what the account's learned rate predicts (a binomial likelihood ratio, signalled from
`care_week_llr`). The rate itself learns only from days close to it, so a daily excess
does not become the new normal.

A third test needs no rate at all: an account that is active day after day but almost
never opens a patient record (IT support, management: at most `rare_max_rate` patients
per active day, never more than `rare_max_day` on a day) opening `rare_min_unexplained`
unexplained patients within an hour (`care.rare_account`). It comes long before a CUSUM
run, whose steps are sized for accounts that open records all day; scored under an alert,
it alerts with a second indication (identifiers in sequence, a new network).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import ClassVar

import msgspec

from sentinelle.detect.clock import HOUR
from sentinelle.detect.detectors.base import Detector, Observation, ev
from sentinelle.detect.signal import Signal, fmt_int, fmt_pct
from sentinelle.detect.state import AccountState, recent_since

__all__ = ["CareDetector", "CareState"]

_KEEP = 50


class CareState(msgspec.Struct):
    """CUSUM of unexplained openings and the run it is about."""

    cusum: float = 0.0
    p0: float = -1.0
    up: float = 0.0
    down: float = 0.0
    run_start: int = 0
    run_open: int = 0
    run_unx: int = 0
    level: float = 0.0
    week_level: float = 0.0  # likelihood ratio of the last 7-day signal
    explained_seen: int = 0  # the account's explained-openings counter when last applied
    rare_level: int = 0  # unexplained openings in an hour last reported for a rarely-opening account
    patients: list[str] = msgspec.field(default_factory=list)


class CareDetector(Detector):
    """Bernoulli CUSUM on unexplained newly opened patients."""

    name: ClassVar[str] = "care"
    hooks: ClassVar[frozenset[str]] = frozenset({"open"})
    kinds: ClassVar[dict[str, tuple[str, str]]] = {
        "care": ("accès sans relation de soins", "accesses without a care relationship"),
        "rare_account": ("dossiers ouverts par un compte qui n'en ouvre presque jamais",
                         "records opened by an account that almost never opens any"),
    }

    def new_state(self, acc: AccountState) -> CareState:
        return CareState()

    def state_type(self) -> type[CareState]:
        return CareState

    def on_open(self, state: CareState, obs: Observation) -> Signal | list[Signal] | None:
        a = obs.acc
        if state.p0 != a.care_p0:
            self._rates(state, a.care_p0)
        # explained openings since the last call: each is a CUSUM step down, floored at 0,
        # so k of them at once are max(0, cusum + k * down)
        k = a.open_explained - state.explained_seen
        state.explained_seen = a.open_explained
        if k and state.cusum > 0.0:
            state.cusum += k * state.down
            state.run_open += k
            if state.cusum <= 0.0:
                state.cusum = 0.0
                state.level = 0.0
        if obs.reason != 0:
            return None
        rare = self._rare(state, obs) if a.kind == "human" else None
        found = self._run(state, obs)
        if rare is None:
            return found
        return [rare, found] if found is not None else rare

    def _run(self, state: CareState, obs: Observation) -> Signal | None:
        """The CUSUM step of an unexplained opening (and the 7-day test when no run is reported)."""
        a = obs.acc
        if state.up <= 0.0:
            return None
        w = self.settings.care_in_care_weight if obs.in_care == 1 else 1.0
        if state.cusum <= 0.0:
            state.run_start = obs.time
            state.run_open = 0
            state.run_unx = 0
            state.patients = []
        state.cusum += w * state.up
        state.run_unx += 1
        if len(state.patients) < _KEEP:
            state.patients.append(obs.patient)
        state.run_open += 1
        h = self.settings.care_cusum_alert
        if state.cusum < h or state.cusum < state.level * 1.5:
            return self._week(state, obs)
        state.level = state.cusum
        score = 0.6 + 0.35 * (1.0 - math.exp(-(state.cusum - h) / h))
        share = state.run_unx / state.run_open if state.run_open else 0.0
        p0 = a.care_p0
        evidence = ev(
            "care.unexplained_run",
            f"{fmt_int(state.run_unx, 'fr')} des {fmt_int(state.run_open, 'fr')} derniers patients ouverts "
            f"n'ont aucune relation de soins avec ce compte ({fmt_pct(share, 'fr')}) ; part habituelle : "
            f"{fmt_pct(p0, 'fr')}",
            f"{fmt_int(state.run_unx, 'en')} of the last {fmt_int(state.run_open, 'en')} patients opened have "
            f"no care relationship with this account ({fmt_pct(share, 'en')}); usual share: {fmt_pct(p0, 'en')}",
            unexplained=state.run_unx,
            opened=state.run_open,
            share=round(share, 3),
            usual_share=round(p0, 4),
            cusum=round(state.cusum, 2),
        )
        return self.signal(obs, score, "care", [evidence], patients=tuple(state.patients),
                           first_time=state.run_start)

    def _rare(self, state: CareState, obs: Observation) -> Signal | None:
        """Several unexplained patients within an hour, by an account that almost never opens any."""
        a = obs.acc
        s = self.settings
        # the account's own calendar rate once it has been around long enough, and its
        # peers' (the only judge of an account new to the trail); either may be unknown,
        # neither may say the account opens records often
        days = obs.day - a.first_day if a.first_day >= 0 else 0
        known = False
        if days >= s.rare_min_days:
            if a.past_max > s.rare_max_day or a.past_open > s.rare_max_rate * days:
                return None
            known = True
        peer = a.peer_open_rate
        if peer >= 0.0:
            if peer > s.rare_max_rate:
                return None
            known = True
        if not known:
            return None
        cut = obs.time - HOUR
        k = len(a.day_u) - bisect_right(a.day_u, cut)
        prev = a.prev_u
        if prev and prev[-1] > cut:
            k += len(prev) - bisect_right(prev, cut)
        if k < s.rare_min_unexplained or k <= 2 * a.past_max:
            state.rare_level = 0  # back to normal: the next burst is news again
            return None
        if k < 2 * state.rare_level:
            return None
        state.rare_level = k
        rate = a.past_open / days if days >= s.rare_min_days else peer
        evidence = ev(
            "care.rare_account",
            f"{fmt_int(k, 'fr')} patients sans relation de soins ouverts en 1 h par un compte qui en ouvre "
            f"d'habitude {rate:.2f} par jour (ses pairs : {max(peer, 0.0):.2f} ; au plus "
            f"{fmt_int(a.past_max, 'fr')} en un jour)".replace(".", ","),
            f"{fmt_int(k, 'en')} patients without a care relationship opened in 1 h by an account that usually "
            f"opens {rate:.2f} a day (its peers: {max(peer, 0.0):.2f}; at most {fmt_int(a.past_max, 'en')} "
            "in a day)",
            unexplained_hour=k,
            usual_per_day=round(rate, 3),
            usual_max_day=a.past_max,
            days=days,
            peer_per_day=round(peer, 3),
        )
        patients, first = recent_since(a, cut, 50)
        return self.signal(obs, s.rare_score, "rare_account", [evidence], patients=tuple(patients),
                           first_time=first)

    def _week(self, state: CareState, obs: Observation) -> Signal | None:
        """Excess of unexplained openings over the last 7 days (low and slow), as a likelihood ratio."""
        a = obs.acc
        if not a.mature or a.care_open < 50:
            return None
        n = len(a.day_t) + sum(a.week_all)
        u = len(a.day_u) + sum(a.week_unx)
        p0 = a.care_p0
        if u < 6 or n <= u or u <= 2 * p0 * n:
            state.week_level = 0.0
            return None
        q = u / n
        llr = u * math.log(q / p0) + (n - u) * math.log((1.0 - q) / (1.0 - p0))
        h = self.settings.care_week_llr
        if llr < h:
            state.week_level = 0.0  # back to normal: the next excess is news again
            return None
        if llr < state.week_level * 1.3:
            return None
        state.week_level = llr
        score = 1.0 - 0.45 * (h / llr) ** 1.2
        evidence = ev(
            "care.unexplained_week",
            f"{fmt_int(u, 'fr')} des {fmt_int(n, 'fr')} patients ouverts en 7 jours n'ont aucune relation de "
            f"soins avec ce compte ({fmt_pct(q, 'fr')}) ; part habituelle : {fmt_pct(p0, 'fr')}, soit "
            f"{fmt_int(p0 * n, 'fr')} attendus",
            f"{fmt_int(u, 'en')} of the {fmt_int(n, 'en')} patients opened in 7 days have no care relationship "
            f"with this account ({fmt_pct(q, 'en')}); usual share: {fmt_pct(p0, 'en')}, i.e. "
            f"{fmt_int(p0 * n, 'en')} expected",
            unexplained=u,
            opened=n,
            share=round(q, 3),
            usual_share=round(p0, 4),
            llr=round(llr, 1),
        )
        patients, first = recent_since(a, obs.time - 7 * 86_400_000, 50)
        return self.signal(obs, score, "care", [evidence], patients=tuple(patients), first_time=first)

    def _rates(self, state: CareState, p0: float) -> None:
        state.p0 = p0
        p1 = self.settings.care_alt_rate
        if p1 <= p0 * 1.5 or p0 <= 0.0 or p0 >= 1.0:
            state.up = state.down = 0.0
            state.cusum = 0.0
            return
        state.up = math.log(p1 / p0)
        state.down = math.log((1.0 - p1) / (1.0 - p0))
