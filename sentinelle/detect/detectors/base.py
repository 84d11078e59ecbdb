"""The detector protocol: what the engine gives a detector, what a detector gives back.

A detector is one module with one job. The engine keeps the shared features (windows,
visits, history, explanation) in `AccountState`, keeps one state object per account for
each detector, and calls the detector's hooks with that state and an `Observation`:
`on_event` for each event that starts a visit, `on_open` for each patient the account
newly opens, `end_day` once a day. A hook returns a `Signal` or None; combining signals
into alerts is the engine's job. Hooks are plain functions of (state, observation), so
replaying the same stream gives the same signals, and the state can be snapshotted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from sentinelle.detect.settings import Settings
from sentinelle.detect.signal import Evidence, Signal
from sentinelle.detect.state import AccountState
from sentinelle.events import AccessEvent

__all__ = [
    "DECOY",
    "RESTRICTED",
    "AccountInfoLike",
    "ContextLike",
    "Detector",
    "Found",
    "Observation",
    "ev",
]

#: Patient flags the engine caches once per patient.
RESTRICTED = 1
DECOY = 2


class AccountInfoLike(Protocol):
    """What detection reads of `sentinelle.context.AccountInfo`."""

    @property
    def account(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def department(self) -> str: ...
    @property
    def start(self) -> int | None: ...
    @property
    def end(self) -> int | None: ...
    @property
    def privileged(self) -> bool: ...


class ContextLike(Protocol):
    """What detection asks of the care context (`sentinelle.context.CareContext`)."""

    def resolve_patient(self, ref: str) -> str: ...
    def account_info(self, account: str) -> Any: ...
    def explain(self, account: str, patient_ref: str, time_ms: int) -> int: ...
    def is_restricted(self, patient_ref: str) -> bool: ...
    def is_decoy(self, patient_ref: str) -> bool: ...
    def is_own_record(self, account: str, patient_ref: str) -> bool: ...
    def is_coworker(self, account: str, patient_ref: str) -> bool: ...
    def is_relative(self, account: str, patient_ref: str) -> bool: ...
    def departments_of(self, patient_ref: str, time_ms: int) -> frozenset[str]: ...


class Observation:
    """What a hook sees: the event, the account's shared state, and facts about the current patient.

    The engine reuses one Observation for every call (no allocation per event); a
    detector must not keep a reference to it beyond the call.
    """

    __slots__ = (
        "_depts",
        "acc",
        "context",
        "day",
        "event",
        "flags",
        "in_care",
        "learning",
        "num",
        "off",
        "patient",
        "reason",
        "time",
    )

    def __init__(self, context: ContextLike) -> None:
        self.context = context
        self.event: AccessEvent = _EMPTY_EVENT
        self.acc: AccountState = AccountState(account="")
        self.time = 0
        self.off = 0
        self.day = 0
        self.patient = ""
        self.reason = -1
        self.flags = 0
        self.in_care = -1
        self.num = -1
        self.learning = False
        self._depts: frozenset[str] | None = None

    @property
    def hour(self) -> int:
        """Local hour of day (0-23) of the observed time."""
        return ((self.time + self.off) // 3_600_000) % 24

    def departments(self) -> frozenset[str]:
        """Departments treating the current patient at this time (asked once per observation)."""
        if self._depts is None:
            self._depts = self.context.departments_of(self.patient, self.time) if self.patient else frozenset()
        return self._depts


_EMPTY_EVENT = AccessEvent(id="", time=0, account="", action="")


def ev(code: str, fr: str, en: str, **numbers: int | float | str) -> Evidence:
    """Shorthand for one `Evidence` item."""
    return Evidence(code=code, numbers=numbers, fr=fr, en=en)


#: What a hook returns: nothing, one signal, or several signals of different kinds.
Found = Signal | list[Signal] | None


class Detector:
    """Base of every detector: no-op hooks, a name, and a per-account state factory.

    Subclasses set `name`, `hooks` (the hooks they implement: "event", "open", "day")
    and override those hooks. `opens` says which openings `on_open` sees: "unexplained"
    (the default: openings no care relationship explains, and any opening of a restricted
    or decoy record; `acc.open_explained` counts the others) or "all". `kinds` lists the
    signal kinds the detector may emit, with a French and English label for alert
    summaries; `learning_kinds` are the kinds that do not depend on history and may alert
    during the learning period; `applies(kind)` says which actor kinds it watches, and
`event_actions` (None for all) which actions `on_event` sees.
    """

    name: ClassVar[str] = ""
    hooks: ClassVar[frozenset[str]] = frozenset()
    opens: ClassVar[str] = "unexplained"
    event_actions: ClassVar[frozenset[str] | None] = None
    kinds: ClassVar[dict[str, tuple[str, str]]] = {}
    learning_kinds: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def applies(self, kind: str) -> bool:
        """Whether the detector watches accounts of this actor kind (the engine skips it otherwise)."""
        return True

    def new_state(self, acc: AccountState) -> Any:
        """Fresh per-account state (None when the detector keeps none)."""
        return None

    def state_type(self) -> Any:
        """Type of the per-account state, for restoring snapshots."""
        return None

    def on_event(self, state: Any, obs: Observation) -> Found:
        """Called for each event that starts a visit (a new patient, address, action or a pause)."""
        return None

    def on_open(self, state: Any, obs: Observation) -> Found:
        """Called for each patient the account newly opens (see `opens`)."""
        return None

    def end_day(self, state: Any, acc: AccountState, learned: bool) -> None:
        """Called once per active account at the end of each local day; `learned` says
        whether the day was normal enough to learn from."""

    def signal(
        self,
        obs: Observation,
        score: float,
        kind: str,
        evidence: list[Evidence],
        patients: tuple[str, ...] = (),
        first_time: int = 0,
    ) -> Signal:
        """Build a signal about the observed account at the observed time."""
        return Signal(
            detector=self.name,
            account=obs.acc.account,
            time=obs.time,
            score=round(min(1.0, max(0.0, score)), 4),
            kind=kind,
            evidence=tuple(evidence),
            patients=patients,
            first_time=first_time or obs.time,
        )


DetectorFactory = Callable[[Settings], Detector]
