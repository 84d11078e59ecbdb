"""How fast `sentinelle scan` is: reading + care context + detection, against a bare decode.

Reference run, in the same process and on the same file: a bare typed msgspec decode of
every line into the reader's own FHIR AuditEvent structs (no normalisation, no detection).
Target of the detection issue: >= 150,000 events/s on a 2-core machine and at most 2 x
the bare decode time, with memory bounded by accounts and patients, not events.

    python bench/scan.py [--events 1000000] [--size standard] [--seed 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).parent))

from _data import current_rss_mb, peak_rss_mb, reader_path, trail

from sentinelle.context import CareContext
from sentinelle.detect import scan
from sentinelle.events import AccessEvent
from sentinelle.sources import Quarantine, open_events
from sentinelle.sources.fhir_common import AuditEvent


def bare_decode(path: Path) -> tuple[int, float]:
    """Decode every line into typed structs and drop them: the floor of any reader."""
    decoder = msgspec.json.Decoder(AuditEvent)
    decode = decoder.decode
    n = 0
    started = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            decode(line)
            n += 1
    return n, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--size", default="standard")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    path, context_dir = trail(args.events, args.size, args.seed)
    size_mb = path.stat().st_size / 2**20
    print(f"file: {path} ({args.events:,} events, {size_mb:,.0f} MiB)")
    print(f"reader: {reader_path()}")

    gc.collect()
    n_ref, t_ref = bare_decode(path)
    print(f"reference  bare typed msgspec decode: {n_ref / t_ref:>10,.0f} events/s ({t_ref:.2f} s)")

    started = time.perf_counter()
    context = CareContext.load([context_dir])
    t_ctx = time.perf_counter() - started
    rss_ctx = current_rss_mb()
    print(f"context loaded in {t_ctx:.2f} s: {context.stats()}; rss {rss_ctx:,.0f} MiB")

    marks: dict[int, float] = {}
    half = args.events // 2

    def watched(events: Iterator[AccessEvent]) -> Iterator[AccessEvent]:
        for i, e in enumerate(events, 1):
            if i == half or i == args.events:
                marks[i] = current_rss_mb()
            yield e

    gc.collect()
    quarantine = Quarantine()
    started = time.perf_counter()
    result = scan(watched(open_events([path], quarantine)), context)
    t_scan = time.perf_counter() - started
    n = result.events
    print(f"sentinelle scan (read + context + detect): {n / t_scan:>10,.0f} events/s ({t_scan:.2f} s)")
    print(f"ratio scan / bare decode: {t_scan / t_ref:.2f} x   (target <= 2.00 x, >= 150,000 events/s)")
    print(f"alerts: {len(result.alerts)} episodes; quarantined: {quarantine.count}")
    rss_half, rss_full = marks.get(half, 0.0), marks.get(args.events, 0.0)
    print(
        f"memory: rss after context {rss_ctx:,.0f} MiB, at {half:,} events {rss_half:,.0f} MiB, "
        f"at {args.events:,} events {rss_full:,.0f} MiB; peak {peak_rss_mb():,.0f} MiB; "
        f"{result.accounts:,} accounts, {result.patients:,} patients"
    )


if __name__ == "__main__":
    main()
