"""The detector contract, checked on every registered detector (one shared suite).

Every detector: is deterministic on replay, never mutates its input, keeps per-account
state bounded whatever the number of events, keeps state that msgspec can snapshot and
restore, and names its evidence (stable code, numbers, French and English sentence).
"""

from __future__ import annotations

import copy

import msgspec
import pytest
from detect_traces import CARDIO, Trace, everything, run, settings

from sentinelle.detect import REGISTRY, Detector
from sentinelle.events import AccessEvent

NAMES = sorted(REGISTRY)


@pytest.fixture(scope="module")
def trace_events() -> list[AccessEvent]:
    return everything().sorted()


def test_registry_lists_every_detector_module() -> None:
    assert set(NAMES) == {"api_client", "automation", "care", "context", "decoy", "snooping", "volume"}
    for name, cls in REGISTRY.items():
        assert issubclass(cls, Detector)
        assert cls.name == name
        assert cls.kinds, f"{name} declares no signal kinds"
        for kind, (fr, en) in cls.kinds.items():
            assert kind and fr and en and fr != en, f"{name}.{kind} needs a French and an English label"
        assert cls.opens in ("all", "unexplained")
        assert cls.hooks <= {"open", "event", "day"} and cls.hooks


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_finds_something_in_the_mixed_trace(name: str, trace_events: list[AccessEvent]) -> None:
    result = run(trace_events, detectors=[name])
    assert result.signals, f"{name} found nothing in a trace made to contain what it looks for"


@pytest.mark.parametrize("name", NAMES)
def test_signals_name_their_evidence(name: str, trace_events: list[AccessEvent]) -> None:
    cls = REGISTRY[name]
    for sig in run(trace_events, detectors=[name]).signals:
        assert sig.detector == name
        assert sig.kind in cls.kinds
        assert 0.0 <= sig.score <= 1.0
        assert sig.evidence, f"{name} emitted a signal without evidence"
        for item in sig.evidence:
            assert item.code.split(".")[0] == name, f"evidence code {item.code!r} should start with {name!r}"
            assert item.fr.strip() and item.en.strip() and item.fr != item.en
            assert isinstance(item.numbers, dict) and item.numbers
        assert sig.first_time <= sig.time


@pytest.mark.parametrize("name", NAMES)
def test_replay_is_deterministic(name: str, trace_events: list[AccessEvent]) -> None:
    first = run(trace_events, detectors=[name])
    second = run(trace_events, detectors=[name])
    assert msgspec.json.encode(first.signals) == msgspec.json.encode(second.signals)
    assert msgspec.json.encode(first.alerts) == msgspec.json.encode(second.alerts)


@pytest.mark.parametrize("name", NAMES)
def test_input_is_never_mutated(name: str, trace_events: list[AccessEvent]) -> None:
    before = msgspec.json.encode(trace_events)
    kept = copy.copy(trace_events)
    run(trace_events, detectors=[name])
    assert msgspec.json.encode(trace_events) == before
    assert all(a is b for a, b in zip(kept, trace_events, strict=True))


def _state_size(days: int, name: str) -> int:
    trace = Trace(seed=3)
    trace.history(range(days), {"dr1": CARDIO[:40], "nurse3": CARDIO[:40]}, n=15)
    engine = run(trace.sorted(), detectors=[name]).engine
    return sum(len(msgspec.msgpack.encode(a.det)) for a in engine.accounts.values())


@pytest.mark.parametrize("name", NAMES)
def test_state_is_bounded_by_accounts_and_patients_not_events(name: str) -> None:
    # the same two accounts on the same 40 patients, for 3 weeks then for 8 weeks
    small, large = _state_size(21, name), _state_size(56, name)
    assert large <= small * 1.3 + 256, f"{name} state grew from {small} to {large} bytes with 4x the events"


@pytest.mark.parametrize("name", NAMES)
def test_state_snapshots_and_restores(name: str, trace_events: list[AccessEvent]) -> None:
    engine = run(trace_events, detectors=[name]).engine
    detector: Detector = engine.detectors[0]
    typ = detector.state_type()
    for account in engine.accounts.values():
        state = account.det[0]
        if typ is None:
            assert state is None
            continue
        data = msgspec.msgpack.encode(state)
        assert msgspec.msgpack.decode(data, type=typ) == state


def test_engine_state_is_bounded_too() -> None:
    # history rows are capped by `history_days`, peer groups by `peer_reservoir`
    def size(days: int) -> int:
        trace = Trace(seed=3)
        trace.history(range(days), {"dr1": CARDIO[:40], "nurse3": CARDIO[:40]}, n=15)
        return len(run(trace.sorted(), settings(peer_reservoir=30, history_days=10)).engine.snapshot())

    small, large = size(3 * 7), size(8 * 7)  # (the test hospital's stays last 60 days)
    assert large <= small * 1.2, (small, large)
