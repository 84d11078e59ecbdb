"""Measure the detection engine alone: microseconds per event on an already-decoded trail.

Not a test (pytest does not collect it). Usage:

    python bench/engine.py DATA_DIR [--repeat 5] [--alerts OUT.jsonl]

DATA_DIR is a simulated hospital (`sentinelle simulate`). The events are read once with
`open_events` and cached next to the data as msgpack, so later runs time only detection.
Reports the best of `--repeat` runs (the machine is shared: the best run is the least
disturbed), the share of events that start a visit and that open a patient, and, with
`--alerts`, writes every alert version (what `sentinelle evaluate` scores).
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import msgspec

from sentinelle.context import CareContext
from sentinelle.detect import Alert, Engine, write_alerts
from sentinelle.events import AccessEvent
from sentinelle.sources import Quarantine, open_events


def load_events(data: Path) -> list[AccessEvent]:
    """The trail's events, decoded once and cached as msgpack beside it."""
    cache = data / "events.msgpack"
    if cache.exists():
        return msgspec.msgpack.decode(cache.read_bytes(), type=list[AccessEvent])
    with Quarantine() as quarantine:
        events = list(open_events([str(data / "events")], quarantine))
    cache.write_bytes(msgspec.msgpack.encode(events))
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--alerts", type=Path)
    args = parser.parse_args()
    context = CareContext.load([args.data / "context"])
    events = load_events(args.data)
    gc.freeze()  # the context and the decoded events are long-lived: keep the collector off them
    best = float("inf")
    alerts: list[Alert] = []
    engine = Engine(context)
    for _ in range(max(1, args.repeat)):
        engine = Engine(context)
        started = time.process_time()
        alerts = engine.process_batch(events)
        alerts += engine.flush()
        best = min(best, time.process_time() - started)
    st = engine.stats
    n = len(events)
    print(f"events {n:,}  visits {st.visits / n:.1%}  openings {st.openings / n:.1%}  "
          f"alert versions {len(alerts)}  episodes {len({a.episode for a in alerts})}")
    print(f"engine: {best / n * 1e6:.2f} us/event ({n / best:,.0f} events/s), best of {args.repeat}")
    if args.alerts:
        write_alerts(args.alerts, alerts)
        print(f"alerts written to {args.alerts}")


if __name__ == "__main__":
    main()
