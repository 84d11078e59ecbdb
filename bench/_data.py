"""Shared by the benchmarks: a simulated hospital trail of N events, made once and cached.

The benchmarks measure on the simulator's output (IHE BALP FHIR AuditEvents) so the
figures are about realistic records, not toy lines.
"""

from __future__ import annotations

import os
import resource
from itertools import islice
from pathlib import Path

CACHE = Path(os.environ.get("SENTINELLE_BENCH_CACHE", "/tmp/sentinelle-bench"))


def hospital(size: str = "standard", seed: int = 3) -> Path:
    """Directory of a simulated hospital, simulated on first use."""
    from sentinelle.simulate import simulate

    out = CACHE / f"{size}-{seed}"
    if not (out / "manifest.json").exists():
        print(f"simulating a {size} hospital (seed {seed}) into {out} ...", flush=True)
        simulate(out, size=size, seed=seed)
    return out


def trail(events: int, size: str = "standard", seed: int = 3) -> tuple[Path, Path]:
    """(events file with the first `events` lines of the hospital's trail, its context dir)."""
    data = hospital(size, seed)
    target = CACHE / f"{size}-{seed}-{events}.ndjson"
    if not target.exists():
        source = data / "events" / "auditevents.ndjson"
        with source.open("rb") as src, target.open("wb") as dst:
            n = 0
            for line in islice(src, events):
                dst.write(line)
                n += 1
        if n < events:
            target.unlink()
            raise SystemExit(f"{source} has only {n} events; use a larger --size")
    return target, data / "context"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident memory of this process, in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reader_path() -> str:
    """Which path reads NDJSON lines here: the compiled one (docs/reader.md) or Python's."""
    from sentinelle.sources import fhir_common

    if fhir_common._balp is None:
        return "Python path (the compiled reader is not built: see setup.py)"
    if not fhir_common.FAST_PATH:
        return "Python path (SENTINELLE_FAST=0)"
    return f"compiled fast path (simdjson {fhir_common._balp.SIMDJSON_VERSION}), Python for what it declines"
