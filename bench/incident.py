"""How fast incident response is: the scope of a 750,000-patient breach, and letters per second.

The store: a scope index (the columnar side index the ledger keeps at append time, see
docs/incident.md) of 20 million access events of a year of a large hospital (2.5 million
patients, 6,000 accounts), generated in bulk with numpy through the index's bulk path,
with one planted breach: a privileged application account that reads the identity and
contact details of 750,000 patients over two nights, and allergies and prescriptions of
a fifth of them (the Mediboard case). Patients are keyed with the real HMAC pseudonyms
and sealed in the vault, so revealing them costs what it costs in production.

Measured: `compute_scope` (selection, grouping, revealing the 750,000 references, the
summary) against the generated truth, then Art. 34 letters (PDF) per second.

    python bench/incident.py [--events 20000000] [--breach 750000] [--letters 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sentinelle.events import Category
from sentinelle.incident.index import ScopeIndex, pk_of_pseudonym
from sentinelle.incident.model import Selector
from sentinelle.incident.scope import compute_scope
from sentinelle.ledger import Keyring
from sentinelle.ledger.records import Protector

DAY = 86_400_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
ACCOUNTS = 6_000
POPULATION = 2_500_000
BREACH_ACCOUNT = "editeur-integration"


def build(path: Path, events: int, breach: int, ring: Keyring, rng: np.random.Generator) -> tuple[int, int, int]:
    """Write the index; returns (breach start, breach end, rows)."""
    protector = Protector(ring)
    t = time.perf_counter()
    refs = [f"Patient/{i}" for i in range(POPULATION)]
    pks = np.array([pk_of_pseudonym(protector.pseudonym(r)) for r in refs], dtype="<i8")
    print(f"  pseudonyms of {POPULATION:,} patients: {time.perf_counter() - t:.1f} s", flush=True)

    n_clin = breach // 5
    n_breach = breach + 2 * n_clin
    n_benign = events - n_breach
    b_start = T0 + 300 * DAY + 22 * 3_600_000
    b_end = b_start + DAY + 8 * 3_600_000
    victims = rng.choice(POPULATION, size=breach, replace=False)
    clin = victims[:n_clin]
    b_pat = np.concatenate([victims, clin, clin])
    ident = int(Category.IDENTITY | Category.CONTACT)
    b_cat = np.concatenate([np.full(breach, ident), np.full(n_clin, int(Category.ALLERGY)),
                            np.full(n_clin, int(Category.PRESCRIPTION))])
    b_time = rng.integers(b_start, b_end, size=n_breach)

    t = time.perf_counter()
    times = np.concatenate([rng.integers(T0, T0 + 365 * DAY, size=n_benign), b_time])
    order = np.argsort(times, kind="stable")
    times = times[order]
    is_breach = order >= n_benign
    cat_bits = np.array([int(c.value) for c in Category], dtype=np.int64)
    benign_cat = cat_bits[rng.integers(0, 10, size=n_benign)] | np.where(rng.random(n_benign) < 0.3, ident, 0)
    patients = np.concatenate([rng.integers(0, POPULATION, size=n_benign), b_pat])[order]
    cats = np.concatenate([benign_cat, b_cat])[order]
    account = np.concatenate([rng.integers(1, ACCOUNTS, size=n_benign), np.zeros(n_breach, dtype=np.int64)])[order]
    address = np.concatenate([rng.integers(1, 3_000, size=n_benign), np.zeros(n_breach, dtype=np.int64)])[order]
    client = np.concatenate([rng.integers(1, 4, size=n_benign), np.zeros(n_breach, dtype=np.int64)])[order]
    action = np.where(is_breach, 1, rng.integers(0, 2, size=events))
    outcome = np.where(rng.random(events) < 0.002, 1, 0) * ~is_breach
    print(f"  generated {events:,} events ({n_breach:,} of the breach): {time.perf_counter() - t:.1f} s",
          flush=True)

    values = {
        "account": [BREACH_ACCOUNT] + [f"user{i:05d}" for i in range(1, ACCOUNTS)],
        "address": ["185.220.101.135"] + [f"10.{i // 250}.{i % 250}.10" for i in range(1, 3_000)],
        "client": ["editeur-integration", "dpi-web", "dpi-mobile", "rdv-connect"],
        "action": ["read", "search"],
        "outcome": ["success", "error"],
        "actor_kind": ["human"],
        "auth": ["password"],
    }
    t = time.perf_counter()
    idx = ScopeIndex.open(path, ring, write=True, flush_rows=1 << 22)
    first = True
    chunk = 2_000_000
    for a in range(0, events, chunk):
        b = min(events, a + chunk)
        cols = {
            "seq": np.arange(a, b, dtype=np.int64), "time": times[a:b], "pk": pks[patients[a:b]],
            "account": account[a:b], "client": client[a:b], "address": address[a:b], "action": action[a:b],
            "outcome": outcome[a:b], "actor_kind": np.zeros(b - a, dtype=np.int64),
            "auth": np.zeros(b - a, dtype=np.int64), "categories": cats[a:b],
        }
        idx.add_columns(cols, values, (pks, refs) if first else None)
        first = False
    idx.close()
    print(f"  index written: {time.perf_counter() - t:.1f} s, "
          f"{sum(f.stat().st_size for f in path.iterdir()) / 1e6:,.0f} MB", flush=True)
    return b_start, b_end, events


def bench_append(ring: Keyring, n: int = 300_000) -> float:
    """Events per second `ScopeIndex.add` indexes (what `attach` adds to each ledger append)."""
    from sentinelle.events import AccessEvent

    evs = [(i, AccessEvent(id=f"e{i}", time=T0 + i * 1000, account=f"user{i % 4000}", action="read",
                           patients=(f"Patient/{(i * 7919) % 400_000}",), categories=3, client="dpi-web",
                           address=f"10.0.{i % 200}.{i % 250}", source="dpi")) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        idx = ScopeIndex.open(Path(tmp) / "i", ring, write=True)
        t = time.perf_counter()
        for a in range(0, n, 1000):
            idx.add(evs[a:a + 1000])
        idx.flush()
        took = time.perf_counter() - t
        idx.close()
    return n / took


def bench_letters(n: int, workers: int = 1) -> float:
    """Letters (PDF, one per person) generated per second by `workers` processes."""
    from sentinelle.incident.letters import benchmark_letters

    return benchmark_letters(n, workers=workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--breach", type=int, default=750_000)
    ap.add_argument("--letters", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None, help="build the index here and keep it (reused when present)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ring = Keyring.generate()
    tmp = None
    if args.keep is not None:
        path = args.keep
        ring_file = path.parent / (path.name + ".keyring.json")
        if (path / "meta.json").exists() and ring_file.exists():
            ring = Keyring.from_json(ring_file.read_bytes())
            b_start = T0 + 300 * DAY + 22 * 3_600_000
            b_end = b_start + DAY + 8 * 3_600_000
            print(f"reusing the index in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            print(f"building a scope index of {args.events:,} events in {path} ...", flush=True)
            b_start, b_end, _ = build(path, args.events, args.breach, ring, rng)
            ring_file.write_bytes(ring.to_json())
    else:
        tmp = tempfile.mkdtemp(prefix="sentinelle-bench-incident-")
        path = Path(tmp) / "index"
        print(f"building a scope index of {args.events:,} events in {path} ...", flush=True)
        b_start, b_end, _ = build(path, args.events, args.breach, ring, rng)
    try:
        idx = ScopeIndex.open(path, ring)
        sel = Selector(accounts=(BREACH_ACCOUNT,), start=b_start - DAY, end=b_end + DAY)
        for run in range(3):
            t = time.perf_counter()
            view = idx.view()
            scope = compute_scope(view, [sel])
            took = time.perf_counter() - t
            s = scope.summary
            cats = {c.category: c.patients for c in s.categories}
            print(f"scope run {run + 1}: {s.patients:,} patients, {s.records:,} records over {view.rows:,} stored "
                  f"events in {took:.2f} s (categories {cats})", flush=True)
        assert scope.summary.patients == args.breach, "the scope does not match the planted breach"
        assert all(r.startswith("Patient/") for r in scope.refs[:1000])
        t = time.perf_counter()
        whole = compute_scope(idx.view(), [Selector(accounts=(BREACH_ACCOUNT,))])
        print(f"scope without a time window (every block read): {whole.summary.patients:,} patients in "
              f"{time.perf_counter() - t:.2f} s", flush=True)
        print(f"index append (the ledger hook's cost): {bench_append(ring):,.0f} events/s", flush=True)
        rate = bench_letters(args.letters)
        print(f"letters: {rate:,.1f} PDF letters per second (one process, the reference)")
        cpus = os.cpu_count() or 1
        if cpus > 1:
            par = bench_letters(args.letters, cpus)
            print(f"letters: {par:,.1f} PDF letters per second ({cpus} processes, as write_letters does): "
                  f"{par / rate:.2f} x the one-process rate")
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
