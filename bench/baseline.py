"""The naive baseline Sentinelle must beat: distinct patients per account per hour.

Rule: an account alerts when the distinct patients it touches within one clock hour
exceed three times its own previous hourly maximum. This is the threshold rule most
SIEM content ships for "mass access to patient records". Like Sentinelle, it stays
silent during the learning period (the first days of the trail serve as history), and
an account with no history is given a previous maximum of 1, so it alerts above 3.

Usage:
    python bench/baseline.py DATA_DIR --out baseline-alerts.jsonl [--learn-days 10]
    sentinelle evaluate DATA_DIR baseline-alerts.jsonl
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import msgspec

from sentinelle.detect import Alert
from sentinelle.events import format_time
from sentinelle.sources import Quarantine, open_events

HOUR = 3_600_000
DAY = 24 * HOUR


def run(paths: list[str], out: Path, learn_days: float, factor: float = 3.0) -> int:
    """Scan the events with the naive rule; returns the number of alerts written."""
    previous_max: dict[str, int] = {}
    current_hour: dict[str, int] = {}
    current: dict[str, set[str]] = {}
    first_seen: dict[str, int] = {}
    alerted: set[tuple[str, int]] = set()
    start: int | None = None
    n_alerts = 0
    encoder = msgspec.json.Encoder()
    with out.open("wb") as sink, Quarantine() as quarantine:
        for event in open_events(paths, quarantine):
            if not event.patients:
                continue
            t = event.time
            if start is None:
                start = t
            account = event.account
            hour = t // HOUR
            if current_hour.get(account) != hour:
                seen = current.get(account)
                if seen is not None:
                    previous_max[account] = max(previous_max.get(account, 0), len(seen))
                current_hour[account] = hour
                current[account] = seen = set()
                first_seen.setdefault(account, t)
            else:
                seen = current[account]
            seen.update(event.patients)
            if t - start < learn_days * DAY or (account, hour) in alerted:
                continue
            limit = factor * max(previous_max.get(account, 0), 1)
            if len(seen) > limit:
                alerted.add((account, hour))
                n_alerts += 1
                iso = format_time(t)
                sink.write(
                    encoder.encode(
                        Alert(
                            id=f"baseline-{n_alerts}",
                            account=account,
                            time=iso,
                            severity="high",
                            kind="volume_hourly",
                            summary=f"{len(seen)} distinct patients within the hour",
                            evidence=[
                                f"{len(seen)} distinct patients in the hour; previous hourly maximum "
                                f"{previous_max.get(account, 0)}"
                            ],
                            patients=sorted(seen)[:50],
                            first_event=format_time(hour * HOUR),
                            last_event=iso,
                            score=1.0,
                        )
                    )
                    + b"\n"
                )
    return n_alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a directory written by `sentinelle simulate`, or event files")
    parser.add_argument("--out", type=Path, default=Path("baseline-alerts.jsonl"))
    parser.add_argument("--learn-days", type=float, default=10.0)
    args = parser.parse_args()
    events = args.data / "events" if (args.data / "events").is_dir() else args.data
    started = time.perf_counter()
    n = run([str(events)], args.out, args.learn_days)
    print(f"baseline: {n} alerts written to {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
