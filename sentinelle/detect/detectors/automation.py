"""Automation: a script behind a person's account.

People open charts in irregular bursts, pause, go home. A script shows itself by
- machine-regular timing between newly opened patients (low coefficient of variation),
- activity hour after hour with no break no shift explains,
- patients enumerated in identifier order (each id 1 to 3 above the previous),
- searches walking the alphabet or paging through result sets (offset or page growing),
- reading only identity and contact data of many patients, when the account usually
  reads clinical data (harvesting for phishing, as in the Mediboard and Normand'e-Santé
  leaks).
Application and API client accounts are scripts by design, so timing and continuity
are judged only for human accounts.
"""

from __future__ import annotations

import itertools
import re
from typing import ClassVar

import msgspec

from sentinelle.detect.clock import HOUR
from sentinelle.detect.detectors.base import Detector, Observation, ev
from sentinelle.detect.signal import Signal, fmt_int, fmt_pct
from sentinelle.detect.state import AccountState, recent_since

__all__ = ["AutomationDetector", "AutomationState"]

_RING = 32
_OFFSET = re.compile(r"(?:^|[?&])(_offset|_getpagesoffset|offset|_page|page|_skip|skip)=(\d+)", re.I)
_NAME = re.compile(r"(?:^|[?&])(?:family|name|given|nom|lastname)(?::[a-z]+)?=([^&]*)", re.I)


class AutomationState(msgspec.Struct):
    """Recent opening times, id sequence, continuity, search walk and identity-reading history."""

    n: int = 0
    since_check: int = 0
    cadence_emitted: int = 0
    last_num: int = -1
    seq_run: int = 0
    seq_first: int = 0
    seq_emitted: int = 0
    cont_start: int = -1
    cont_last: int = -1
    cont_emitted: int = 0
    last_query: str = ""
    query_base: str = ""
    last_offset: int = -1
    page_run: int = 0
    page_first: int = 0
    page_emitted: int = 0
    last_name: str = ""
    name_run: int = 0
    name_first: int = 0
    name_emitted: int = 0
    id_usual: float = -1.0
    id_days: int = 0
    id_emitted: bool = False


class AutomationDetector(Detector):
    """Machine cadence, continuity, enumeration, paging, identity-only reading."""

    name: ClassVar[str] = "automation"
    hooks: ClassVar[frozenset[str]] = frozenset({"open", "event", "day"})
    event_actions: ClassVar[frozenset[str] | None] = frozenset({"search"})
    kinds: ClassVar[dict[str, tuple[str, str]]] = {
        "cadence": ("rythme d'accès régulier comme une machine", "machine-regular access timing"),
        "continuous": ("activité ininterrompue pendant de longues heures", "uninterrupted activity for many hours"),
        "enumeration": ("énumération de dossiers patients", "enumeration of patient records"),
        "paging": ("parcours page par page de résultats de recherche", "paging through search results"),
        "identity_only": ("lecture des seules données d'identité et de contact",
                          "reading identity and contact data only"),
    }

    def new_state(self, acc: AccountState) -> AutomationState:
        return AutomationState()

    def state_type(self) -> type[AutomationState]:
        return AutomationState

    def on_open(self, state: AutomationState, obs: Observation) -> list[Signal] | None:
        a = obs.acc
        t = obs.time
        s = self.settings
        out: list[Signal] = []
        human = a.kind == "human"
        # timing: the account's latest opening times (kept by the engine)
        state.n += 1
        state.since_check += 1
        if human and state.n > s.cadence_min_intervals and state.since_check >= 8:
            state.since_check = 0
            sig = self._cadence(state, obs)
            if sig is not None:
                out.append(sig)
        # enumeration by identifier
        num = obs.num
        if num >= 0:
            step = num - state.last_num
            if state.last_num >= 0 and 0 < step <= 3:
                state.seq_run += 1
            else:
                state.seq_run = 0
                state.seq_first = t
            state.last_num = num
            if state.seq_run + 1 == s.sequence_hint_run <= s.sequence_min_run:
                # a short run is only a hint (ward patients admitted together can have
                # neighbouring identifiers): it confirms other evidence, it never alerts alone
                out.append(self._in_order(state, obs, s.sequence_hint_score, "automation.sequential_ids_short"))
            if state.seq_run >= s.sequence_min_run and state.seq_run >= state.seq_emitted * 2:
                state.seq_emitted = state.seq_run
                out.append(self._in_order(state, obs, 0.8, "automation.sequential_ids"))
        elif state.seq_run:
            state.seq_run = 0
        # continuity, for people
        if human:
            hour = t // HOUR
            if hour != state.cont_last:
                if hour == state.cont_last + 1:
                    state.cont_last = hour
                else:
                    state.cont_start = state.cont_last = hour
                run = state.cont_last - state.cont_start + 1
                if run >= s.continuous_hours and run >= state.cont_emitted + 4:
                    state.cont_emitted = run
                    out.append(self.signal(obs, 0.55, "continuous", [ev(
                        "automation.continuous",
                        f"des patients ouverts chaque heure depuis {fmt_int(run, 'fr')} heures, sans pause",
                        f"patients opened every hour for {fmt_int(run, 'en')} hours without a break",
                        hours=run,
                    )], first_time=state.cont_start * HOUR))
                elif run < s.continuous_hours:
                    state.cont_emitted = 0
        # identity-only reading
        if a.id_n >= s.identity_min_visits and not state.id_emitted:
            share = a.id_sum / min(a.id_n, len(a.id_ring))
            if share >= s.identity_max_share and 0.0 <= state.id_usual < 0.5:
                state.id_emitted = True
                out.append(self.signal(obs, 0.5, "identity_only", [ev(
                    "automation.identity_only",
                    f"{fmt_pct(share, 'fr')} des derniers dossiers ouverts : identité et coordonnées seulement, "
                    f"sans données cliniques (habituellement {fmt_pct(state.id_usual, 'fr')})",
                    f"{fmt_pct(share, 'en')} of the latest records opened: identity and contact data only, no "
                    f"clinical data (usually {fmt_pct(state.id_usual, 'en')})",
                    share=round(share, 3),
                    usual=round(state.id_usual, 3),
                )]))
        return out or None

    def _in_order(self, state: AutomationState, obs: Observation, score: float, code: str) -> Signal:
        """The signal of the run of patients opened in the order of their identifiers."""
        patients, _ = recent_since(obs.acc, state.seq_first, 50)
        run = state.seq_run + 1
        return self.signal(obs, score, "enumeration", [ev(
            code,
            f"{fmt_int(run, 'fr')} patients ouverts à la suite dans l'ordre de leurs identifiants",
            f"{fmt_int(run, 'en')} patients opened in a row in the order of their identifiers",
            run=run,
        )], patients=tuple(patients), first_time=state.seq_first)

    def _cadence(self, state: AutomationState, obs: Observation) -> Signal | None:
        a = obs.acc
        times = a.day_t[-_RING:]
        if len(times) < _RING:
            times = a.prev_t[-(_RING - len(times)):] + times
        if len(times) <= self.settings.cadence_min_intervals:
            return None
        gaps = [b - c for c, b in itertools.pairwise(times)]
        mean = sum(gaps) / len(gaps)
        if mean <= 0:
            return None
        var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
        cv = var**0.5 / mean
        if cv >= self.settings.cadence_max_cv or state.n < state.cadence_emitted * 2:
            return None
        state.cadence_emitted = state.n
        return self.signal(obs, 0.6, "cadence", [ev(
            "automation.cadence",
            f"{fmt_int(len(gaps), 'fr')} intervalles réguliers entre patients ouverts : "
            f"{mean / 1000:.1f} s en moyenne, écart relatif {cv:.2f}".replace(".", ","),
            f"{fmt_int(len(gaps), 'en')} regular intervals between patients opened: "
            f"{mean / 1000:.1f} s on average, coefficient of variation {cv:.2f}",
            intervals=len(gaps),
            mean_s=round(mean / 1000, 2),
            cv=round(cv, 3),
        )], first_time=times[0])

    def on_event(self, state: AutomationState, obs: Observation) -> list[Signal] | None:
        q = obs.event.query
        if not q or q == state.last_query:
            return None
        state.last_query = q
        s = self.settings
        out: list[Signal] = []
        m = _OFFSET.search(q) if ("offset=" in q or "page=" in q or "skip=" in q) else None
        if m is not None:
            offset = int(m.group(2))
            base = q[: m.start(2)] + q[m.end(2):]
            if base == state.query_base and offset > state.last_offset:
                state.page_run += 1
            else:
                state.page_run = 0
                state.page_first = obs.time
            state.query_base = base
            state.last_offset = offset
            if state.page_run >= s.paging_min_pages and state.page_run >= state.page_emitted * 2:
                state.page_emitted = state.page_run
                out.append(self.signal(obs, 0.65, "paging", [ev(
                    "automation.paging",
                    f"{fmt_int(state.page_run + 1, 'fr')} pages successives d'une même recherche parcourues",
                    f"{fmt_int(state.page_run + 1, 'en')} successive pages of one search walked through",
                    pages=state.page_run + 1,
                )], first_time=state.page_first))
        m = _NAME.search(q) if ("name=" in q or "family=" in q or "given=" in q or "nom=" in q) else None
        if m is not None:
            name = m.group(1).lower()
            if name > state.last_name and state.last_name:
                state.name_run += 1
            elif name != state.last_name:
                state.name_run = 0
                state.name_first = obs.time
            state.last_name = name
            if state.name_run >= 12 and state.name_run >= state.name_emitted * 2:
                state.name_emitted = state.name_run
                out.append(self.signal(obs, 0.7, "enumeration", [ev(
                    "automation.alphabetical",
                    f"{fmt_int(state.name_run + 1, 'fr')} recherches par nom successives dans l'ordre "
                    "alphabétique",
                    f"{fmt_int(state.name_run + 1, 'en')} successive name searches in alphabetical order",
                    searches=state.name_run + 1,
                )], first_time=state.name_first))
        return out or None

    def end_day(self, state: AutomationState, acc: AccountState, learned: bool) -> None:
        if learned and acc.id_n >= 10:
            share = acc.id_sum / min(acc.id_n, len(acc.id_ring))
            # running mean of daily identity-only shares
            state.id_days += 1
            if state.id_usual < 0:
                state.id_usual = share
            else:
                state.id_usual += (share - state.id_usual) / min(state.id_days, 28)
        state.id_emitted = False
