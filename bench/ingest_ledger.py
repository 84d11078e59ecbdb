"""Sustained bulk ingest with durable ledger appends, against a bare bulk insert of the same rows.

What is timed for the ledger: pseudonymisation (HMAC), sealing (AES-GCM), record encoding,
leaf hashing, the Merkle frontier, checkpoint signing and the group-committed insert
(SQLite executemany in one WAL transaction with synchronous=FULL; PostgreSQL binary COPY),
one transaction per batch, acknowledged after commit. The reference is the plain rows of
the same events (15 columns) inserted into the same database with executemany / COPY in
one transaction, no hashing, no protection. Also prints proof and verify speeds.

Usage:
    python bench/ingest_ledger.py [--events 300000] [--batch 10000] [--backends sqlite,postgresql]
        [--pg postgresql://root@127.0.0.1:5432/test] [--no-proofs] [--resend]
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from sentinelle.events import AccessEvent, Action, Category
from sentinelle.ledger import Keyring, Ledger, LedgerSettings, SigningKey, open_store, verify

PLAIN_COLUMNS = ("id", "time", "account", "action", "actor_kind", "outcome", "patients", "categories", "client",
                 "address", "session", "source", "query", "auth", "purpose")


def make_events(n: int, seed: int = 7) -> list[AccessEvent]:
    """Realistic events: UUID ids, ~2,000 accounts, 60,000 patients read with heavy repetition."""
    rng = random.Random(seed)
    accounts = [f"{rng.choice('abcdefghijklmnop')}.{rng.choice(['martin', 'bernard', 'dubois', 'thomas'])}{i}"
                for i in range(2000)]
    patients = [f"Patient/{100000 + i}" for i in range(60000)]
    clients = ["dpi-web", "dpi-mobile", "lab-portal", "pacs-viewer", "rdv-connect"]
    t = 1_717_200_000_000
    out = []
    for _ in range(n):
        t += rng.randint(0, 40)
        acct = accounts[min(int(rng.paretovariate(1.2)) - 1, 1999)] if rng.random() < 0.5 else rng.choice(accounts)
        # A ward's patients are read again and again: a few thousand patients carry most reads.
        pat = patients[int(rng.betavariate(0.6, 8) * 59999)]
        r = rng.random()
        pats: tuple[str, ...]
        if r < 0.7:
            action, pats, query = Action.READ, (pat,), ""
        elif r < 0.85:
            action, pats, query = Action.SEARCH, (pat,), f"Patient?family={rng.choice(['DUPONT', 'MARTIN', 'NGUYEN'])}"
        elif r < 0.95:
            action, pats, query = Action.UPDATE, (pat,), ""
        else:
            action, pats, query = Action.LOGIN, (), ""
        out.append(AccessEvent(
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), time=t, account=acct, action=action,
            patients=pats, categories=int(Category.CLINICAL | Category.IDENTITY) if pats else 0,
            client=rng.choice(clients), address=f"10.{rng.randint(0, 20)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            session=f"s{rng.getrandbits(40):x}", source="dpi-main", query=query,
            auth="card" if rng.random() < 0.6 else "password", purpose="TREAT",
        ))
    return out


def plain_rows(events: list[AccessEvent]) -> list[tuple[object, ...]]:
    """The events as plain rows (patients joined), what a bare audit table would store."""
    return [(e.id, e.time, e.account, e.action, e.actor_kind, e.outcome, "|".join(e.patients), e.categories,
             e.client, e.address, e.session, e.source, e.query, e.auth, e.purpose) for e in events]


def bare_sqlite(path: Path, rows: list[tuple[object, ...]], batch: int | None) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE plain (id TEXT, time INTEGER, account TEXT, action TEXT, actor_kind TEXT, "
                 "outcome TEXT, patients TEXT, categories INTEGER, client TEXT, address TEXT, session TEXT, "
                 "source TEXT, query TEXT, auth TEXT, purpose TEXT)")
    sql = f"INSERT INTO plain VALUES ({', '.join('?' * 15)})"
    step = batch or len(rows)
    t0 = time.perf_counter()
    for i in range(0, len(rows), step):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[i:i + step])
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def bare_postgres(conninfo: str, schema: str, rows: list[tuple[object, ...]], batch: int | None) -> float:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
        conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
        conn.execute(f'CREATE TABLE "{schema}".plain (id TEXT, time BIGINT, account TEXT, action TEXT, '
                     'actor_kind TEXT, outcome TEXT, patients TEXT, categories BIGINT, client TEXT, address TEXT, '
                     'session TEXT, source TEXT, query TEXT, auth TEXT, purpose TEXT)'.encode())
        types = ["text", "int8", "text", "text", "text", "text", "text", "int8"] + ["text"] * 7
        step = batch or len(rows)
        t0 = time.perf_counter()
        for i in range(0, len(rows), step):
            with conn.transaction(), conn.cursor() as cur, \
                    cur.copy(f'COPY "{schema}".plain FROM STDIN (FORMAT BINARY)'.encode()) as copy:
                copy.set_types(types)
                for row in rows[i:i + step]:
                    copy.write_row(row)
        dt = time.perf_counter() - t0
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())
    return dt


def ledger_ingest(url: str, events: list[AccessEvent], batch: int, ring: Keyring, key: SigningKey,
                  resend: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds (of this process) to append every event, batch by batch.

    With `resend`, every batch after the first also carries one event of the previous
    batch again, as a sender retrying after a timeout does (the duplicate path).
    """
    settings = LedgerSettings(url=url, checkpoint_events=10_000)
    t0, c0 = time.perf_counter(), time.process_time()
    with Ledger.open(url, ring, signing_key=key, settings=settings) as ledger:
        for i in range(0, len(events), batch):
            part = events[i:i + batch]
            ledger.append_batch([events[i - 7], *part] if resend and i else part)
    return time.perf_counter() - t0, time.process_time() - c0


def proofs_and_verify(url: str, n: int, ring: Keyring) -> None:
    rng = random.Random(1)
    with Ledger.open(url, ring, signing_key=SigningKey.generate()) as ledger:
        t0 = time.perf_counter()
        count = 300
        for _ in range(count):
            assert ledger.inclusion_proof(rng.randrange(n)).verify()
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(100):
            a = rng.randrange(1, n)
            assert ledger.consistency_proof(a, n).verify()
        dt2 = time.perf_counter() - t1
    print(f"    inclusion proofs: {count / dt:,.0f}/s; consistency proofs: {100 / dt2:,.0f}/s")
    t0 = time.perf_counter()
    rep = verify(url)
    dt = time.perf_counter() - t0
    print(f"    verify (no keys): {rep.events / dt:,.0f} events/s, ok={rep.ok}")
    t0 = time.perf_counter()
    rep = verify(url, keyring=ring)
    dt = time.perf_counter() - t0
    print(f"    verify (with keyring, decrypting): {rep.events / dt:,.0f} events/s, ok={rep.ok}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    ap.add_argument("--no-proofs", action="store_true", help="skip the proof and verify timings")
    ap.add_argument("--resend", action="store_true", help="one re-sent event in every batch (duplicate path)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    events = make_events(args.events)
    rows = plain_rows(events)
    print(f"built {len(events):,} events in {time.perf_counter() - t0:.1f} s; batch {args.batch:,}")
    # The service streams events and drops them; this script keeps them all for the bare
    # reference. Freezing them keeps the garbage collector from rescanning them at every
    # collection, which would charge the benchmark's own lists to the ledger.
    gc.collect()
    gc.freeze()
    ring, key = Keyring.generate(), SigningKey.generate()
    tmp = Path(tempfile.mkdtemp(prefix="sentinelle-bench-"))
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                bare = bare_sqlite(tmp / "bare.db", rows, None)
                bare_b = bare_sqlite(tmp / "bare-batched.db", rows, args.batch)
                url = f"sqlite:///{tmp / 'ledger.db'}"
                led, cpu = ledger_ingest(url, events, args.batch, ring, key, args.resend)
            else:
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                bare = bare_postgres(args.pg, schema, rows, None)
                bare_b = bare_postgres(args.pg, schema, rows, args.batch)
                url = f"{args.pg}?schema={schema}"
                led, cpu = ledger_ingest(url, events, args.batch, ring, key, args.resend)
            n = len(events)
            print(f"{backend}:")
            print(f"  bare bulk insert, one transaction:        {n / bare:>10,.0f} rows/s")
            print(f"  bare bulk insert, {args.batch:,}-row transactions: {n / bare_b:>10,.0f} rows/s")
            print(f"  ledger durable appends:                  {n / led:>10,.0f} events/s "
                  f"= {(n / led) / (n / bare):.0%} of the one-transaction bare rate "
                  f"({(n / led) / (n / bare_b):.0%} of the batched one)")
            print(f"    CPU of this process: {cpu / n * 1e6:.1f} µs/event, {n / cpu:,.0f} events per CPU-second "
                  f"(wall/CPU {led / cpu:.1f}: above 1 means waiting for the database or for a busy machine)")
            if not args.no_proofs:
                proofs_and_verify(url, n, ring)
            if backend != "sqlite":
                store = open_store(url)
                store.drop()  # type: ignore[attr-defined]
                store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
