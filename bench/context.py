"""Benchmark of the care context: load time of a typical hospital and `explain` speed.

Run: .venv/bin/python bench/context.py [patients] [episodes] [staff]
(defaults 75,000 patients, 250,000 encounters and appointments, 4,000 staff). Writes the
hospital as NDJSON in a temporary folder, loads it with `CareContext.load`, then times
one million `explain` calls on a mix: half of the accesses by someone who took part in
the patient's care near its time, half by a random account at a random time (the worst
case for memory caches), then the same accesses in bursts of ten per chart.

Or: .venv/bin/python bench/context.py --sim OUT, where OUT is the output of
`sentinelle simulate`: loads OUT/context and replays every access of OUT/events through
`explain`, in trail order.

Times are CPU time of this process (`time.process_time`), so that other jobs on a shared
machine inflate them less than wall-clock time would.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "context"))

from context_factory import DAY, synthetic_hospital, t, write_hospital

from sentinelle.context import CareContext


def replay(out: Path) -> None:
    """Time `explain` over the accesses of a simulated trail, in the order they happened."""
    from sentinelle.sources import Quarantine, open_events

    began = time.process_time()
    ctx = CareContext.load([out / "context"], Quarantine())
    print(f"load: {time.process_time() - began:.2f} s  {ctx}")
    accesses = [
        (ev.account, p, ev.time)
        for ev in open_events([out / "events"], Quarantine())
        if ev.outcome == "success"
        for p in ev.patients
    ]
    explain = ctx.explain
    explained = sum(1 for a in accesses if explain(*a))
    began = time.process_time()
    for _ in range(5):
        for account, ref, at in accesses:
            explain(account, ref, at)
    per_call = (time.process_time() - began) / (5 * len(accesses))
    print(
        f"explain, simulated trail: {per_call * 1e6:.2f} µs per call over {5 * len(accesses):,} calls "
        f"({explained / len(accesses):.1%} explained)"
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--sim":
        replay(Path(sys.argv[2]))
        return
    patients = int(sys.argv[1]) if len(sys.argv) > 1 else 75_000
    episodes = int(sys.argv[2]) if len(sys.argv) > 2 else 250_000
    staff = int(sys.argv[3]) if len(sys.argv) > 3 else 4_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "context"
        began = time.process_time()
        write_hospital(folder, synthetic_hospital(patients, staff, episodes))
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"wrote {size / 1e6:.0f} MB of NDJSON in {time.process_time() - began:.1f} s")
        began = time.process_time()
        ctx = CareContext.load([folder])
        print(f"load: {time.process_time() - began:.2f} s  {ctx.stats()}")

    rng = random.Random(1)
    t0 = t("2024-01-01T00:00:00Z")
    # Accesses: for half, a participant of one of the patient's windows at a time near it.
    queries: list[tuple[str, str, int]] = []
    data = ctx._data
    accounts = [a.account for a in ctx.accounts()]
    while len(queries) < 100_000:
        slot = rng.randrange(len(data.patient_ids))
        ref = data.patient_ids[slot]
        persons = sorted(k for k in data.care[slot] if "/" in k)
        if persons and rng.random() < 0.5:
            person = rng.choice(persons)
            window = rng.choice(data.care[slot][person])
            login = ctx.account_info(person)
            if login is not None:
                queries.append((login.account, ref, window[2] + rng.randrange(DAY)))
                continue
        queries.append((rng.choice(accounts), ref, t0 + rng.randrange(365 * DAY)))
    explain = ctx.explain
    explained = sum(1 for q in queries if explain(*q))
    rounds = 10
    began = time.process_time()
    for _ in range(rounds):
        for account, ref, at in queries:
            explain(account, ref, at)
    per_call = (time.process_time() - began) / (rounds * len(queries))
    print(
        f"explain, random accesses: {per_call * 1e6:.2f} µs per call over {rounds * len(queries):,} calls "
        f"({explained / len(queries):.0%} explained)"
    )
    # Opening a chart issues a burst of reads: 10 accesses to one patient within seconds.
    bursts = [(a, r, at + i * 1000) for a, r, at in queries for i in range(10)]
    began = time.process_time()
    for account, ref, at in bursts:
        explain(account, ref, at)
    per_call = (time.process_time() - began) / len(bursts)
    print(f"explain, bursts of 10 accesses per chart: {per_call * 1e6:.2f} µs per call")
    # Patients named by INS token instead of Patient/<id>.
    ins_queries = [(a, f"urn:oid:1.2.250.1.213.1.4.8|{1_000_000_000_000 + int(r[9:])}", at) for a, r, at in queries]
    began = time.process_time()
    for account, ref, at in ins_queries:
        explain(account, ref, at)
    print(f"explain, patient named by INS: {(time.process_time() - began) / len(ins_queries) * 1e6:.2f} µs per call")


if __name__ == "__main__":
    main()
