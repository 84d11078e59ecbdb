"""The engine: one pass, one code path for batch and stream, episodes, learning, snapshots."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from detect_traces import ARCHIVE, CARDIO, DAY, DECOY, HOUR, T0, Trace, context, everything, run, settings, ward_history

from sentinelle.detect import Engine, write_alerts
from sentinelle.events import AccessEvent, parse_time
from sentinelle.simulate.evaluate import read_alerts as read_contract_alerts


def _bulk_trace(day: int = 12, n: int = 400, account: str = "dr2") -> Trace:
    trace = Trace()
    ward_history(trace, days=day)
    t = T0 + day * DAY + 9 * HOUR
    for p in ARCHIVE[:n]:
        trace.add(t, account, p, categories=3)
        t += 3000
    return trace


def test_stream_and_batch_are_the_same_code_path() -> None:
    events = everything().sorted()
    batch = run(events)
    engine = Engine(context(), settings())
    streamed = []
    for e in events:
        streamed.extend(engine.process(e))
    streamed.extend(engine.flush())
    assert msgspec.json.encode(streamed) == msgspec.json.encode(batch.alerts)
    assert engine.stats == batch.engine.stats


def test_snapshot_and_restore_continue_exactly() -> None:
    events = everything().sorted()
    whole = run(events).alerts
    half = len(events) // 2
    first = Engine(context(), settings())
    alerts = first.process_batch(events[:half])
    data = first.snapshot()
    second = Engine.restore(context(), data)
    alerts += second.process_batch(events[half:])
    alerts += second.flush()
    assert msgspec.json.encode(alerts) == msgspec.json.encode(whole)


def test_one_alert_per_account_and_episode_updated_while_it_goes_on() -> None:
    result = run(_bulk_trace().sorted())
    versions = result.alerted("dr2")
    assert len(versions) >= 2, "a long theft updates its alert"
    assert len({a.episode for a in versions}) == 1
    assert [a.version for a in versions] == list(range(1, len(versions) + 1))
    assert len({a.id for a in versions}) == len(versions)
    last = versions[-1]
    assert last.patient_count >= 300
    assert len(last.patients) == settings().max_alert_patients
    assert versions[0].patient_count < last.patient_count
    assert parse_time(versions[0].time) <= parse_time(last.time)
    assert all(a.first_event == versions[0].first_event for a in versions)


def test_separate_episodes_after_a_quiet_gap() -> None:
    trace = _bulk_trace(day=12, n=150)
    t = T0 + 16 * DAY + 9 * HOUR
    for p in ARCHIVE[500:650]:
        trace.add(t, "dr2", p, categories=3)
        t += 3000
    versions = run(trace.sorted()).alerted("dr2")
    assert len({a.episode for a in versions}) == 2


def test_no_alert_flood_while_learning_but_decoys_still_alert() -> None:
    trace = Trace()
    ward_history(trace, days=2)
    t = T0 + 1 * DAY + 9 * HOUR
    for p in ARCHIVE[:300]:
        trace.add(t, "dr2", p, categories=3)
        t += 3000
    trace.chart(T0 + 2 * DAY + 10 * HOUR, "nurse3", DECOY)
    result = run(trace.sorted(), settings(learning_days=3))
    assert not result.alerted("dr2")
    assert [a.kind for a in result.alerted("nurse3")] == ["decoy"]


def test_a_weak_hint_alone_never_alerts() -> None:
    # a person working from home at night: a new network and an odd hour, nothing else
    trace = Trace()
    ward_history(trace, days=28)
    trace.day_of_work(28, "dr3", CARDIO, start_hour=23, address="88.12.40.2")
    result = run(trace.sorted())
    assert {"new_address", "off_hours"} <= result.kinds("dr3")
    assert not result.alerted("dr3")


def test_late_events_are_counted_without_going_back_in_time() -> None:
    events = _bulk_trace(n=200).sorted()
    shuffled = list(events)
    # swap neighbours in the bulk part: up to a few seconds late
    for k in range(len(shuffled) - 200, len(shuffled) - 1, 2):
        shuffled[k], shuffled[k + 1] = shuffled[k + 1], shuffled[k]
    ordered = run(events).alerted("dr2")
    late = run(shuffled).alerted("dr2")
    assert late and ordered
    assert late[-1].patient_count == ordered[-1].patient_count


def test_bursts_on_one_chart_are_one_visit() -> None:
    trace = Trace()
    for k in range(30):
        trace.add(T0 + 9 * HOUR + k * 1000, "dr1", CARDIO[0])
    engine = run(trace.sorted()).engine
    assert engine.stats.events == 30
    assert engine.stats.visits == 1
    assert engine.stats.openings == 1


def test_alerts_follow_the_alert_contract(tmp_path: Path) -> None:
    result = run(_bulk_trace().sorted())
    path = tmp_path / "alerts.jsonl"
    assert write_alerts(path, result.alerts) == len(result.alerts)
    checked = list(read_contract_alerts(path))  # the benchmark's own contract checker
    assert len(checked) == len(result.alerts)
    raw = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    for alert in raw:
        assert alert["time"].endswith("Z") and alert["first_event"] <= alert["time"]
        assert alert["severity"] in ("low", "medium", "high", "critical")
        assert set(alert["lang"]) == {"fr", "en"}
        assert alert["summary"] == alert["lang"]["fr"]["summary"]  # French by default
        assert alert["evidence"] == alert["lang"]["fr"]["evidence"]
        assert alert["summary"].startswith("Compte dr2")
        assert alert["lang"]["en"]["summary"].startswith("Account dr2")
        assert alert["episode"] and alert["patients"] and alert["codes"]


def test_english_alerts_on_request() -> None:
    result = run(_bulk_trace().sorted(), settings(language="en"))
    assert result.alerts[0].summary.startswith("Account dr2")


@pytest.mark.parametrize("name", ["nope"])
def test_unknown_detector_is_refused(name: str) -> None:
    with pytest.raises(KeyError):
        Engine(context(), settings(), [name])


def test_memory_stays_with_accounts_and_patients() -> None:
    # many events on the same patients: the per-account remembered patients do not grow
    trace = Trace()
    trace.history(range(40), {"dr1": CARDIO[:30]}, n=20)
    engine = run(trace.sorted()).engine
    a = engine.accounts["dr1"]
    assert len(a.seen) <= 30
    assert len(a.day_t) + len(a.prev_t) <= 2 * 30
    assert len(a.hist) <= settings().history_days
    assert isinstance(trace.events[0], AccessEvent)
