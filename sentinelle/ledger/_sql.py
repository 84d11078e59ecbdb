"""SQL shared by the SQLite and PostgreSQL backends; each subclass supplies the dialect.

Why one base: the two backends differ in four places only (placeholder, types, the bulk
insert primitive, the writer lock), and keeping the queries in one file keeps the two
stores provably alike, which the tamper tests rely on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sentinelle.ledger.records import LEDGER_SOURCE
from sentinelle.ledger.store import BatchRow, CheckpointRow, EventRow, NodeRow, Scan

__all__ = ["SqlStore"]

#: Variables per IN (...) query: below SQLite's default limit and cheap for PostgreSQL.
_CHUNK = 900


class SqlStore:
    """Queries common to the backends; subclasses set the dialect fields and primitives."""

    url: str
    ph = "?"  # placeholder
    prefix = ""  # table prefix (a quoted schema and a dot in PostgreSQL)
    blob = "BLOB"
    bigint = "INTEGER"

    # ---- primitives each backend implements -------------------------------------------
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _script(self, statements: Iterable[str]) -> None:
        raise NotImplementedError

    def _write(self, events: Sequence[EventRow], batch: BatchRow | None, nodes: Sequence[NodeRow],
               checkpoints: Sequence[CheckpointRow], meta: Mapping[str, str],
               prune: Sequence[tuple[int, int]]) -> None:
        raise NotImplementedError

    # ---- schema ------------------------------------------------------------------------
    def t(self, name: str) -> str:
        """A table's qualified name."""
        return f"{self.prefix}{name}"

    def schema_sql(self) -> list[str]:
        """CREATE statements (idempotent)."""
        t, b, i = self.t, self.blob, self.bigint
        return [
            f"CREATE TABLE IF NOT EXISTS {t('events')} (seq {i} PRIMARY KEY, key {i} NOT NULL, "
            f"source TEXT NOT NULL, event_id TEXT NOT NULL, time {i}, account TEXT, patients TEXT, "
            f"record {b}, leaf {b} NOT NULL)",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {self._index_name('events_key')} ON {t('events')} (key)",
            f"CREATE TABLE IF NOT EXISTS {t('batches')} (first_seq {i} PRIMARY KEY, last_seq {i} NOT NULL, "
            f"min_time {i} NOT NULL, max_time {i} NOT NULL, committed {i} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t('nodes')} (level INTEGER NOT NULL, idx {i} NOT NULL, "
            f"hash {b} NOT NULL, PRIMARY KEY (level, idx))",
            f"CREATE TABLE IF NOT EXISTS {t('checkpoints')} (n {i} PRIMARY KEY, size {i} NOT NULL, "
            f"body {b} NOT NULL, signature {b} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t('meta')} (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ]

    def _index_name(self, name: str) -> str:
        # PostgreSQL puts an index in its table's schema and wants a bare name.
        return name

    def create(self) -> None:
        """Create the tables when absent."""
        self._script(self.schema_sql())

    # ---- writes ------------------------------------------------------------------------
    def append_batch(self, events: Sequence[EventRow], batch: BatchRow | None, nodes: Sequence[NodeRow],
                     checkpoints: Sequence[CheckpointRow], meta: Mapping[str, str],
                     prune: Sequence[tuple[int, int]] = ()) -> None:
        """Write everything in one durable transaction."""
        self._write(events, batch, nodes, checkpoints, meta, prune)

    def _prune_sql(self) -> str:
        p = self.ph
        return (f"UPDATE {self.t('events')} SET time = NULL, account = NULL, patients = NULL, record = NULL "
                f"WHERE seq >= {p} AND seq < {p}")

    def _meta_sql(self) -> str:
        p = self.ph
        return (f"INSERT INTO {self.t('meta')} (name, value) VALUES ({p}, {p}) "
                f"ON CONFLICT (name) DO UPDATE SET value = excluded.value")

    def _insert_sql(self, table: str, ncols: int) -> str:
        return f"INSERT INTO {self.t(table)} VALUES ({', '.join([self.ph] * ncols)})"

    # ---- reads -------------------------------------------------------------------------
    def read_meta(self) -> dict[str, str]:
        """All meta values."""
        return {str(k): str(v) for k, v in self._query(f"SELECT name, value FROM {self.t('meta')}")}

    def find_keys(self, keys: Sequence[int]) -> list[tuple[int, int, str, str]]:
        """(key, seq, source, event_id) of stored events among `keys`."""
        out: list[tuple[int, int, str, str]] = []
        for i in range(0, len(keys), _CHUNK):
            part = list(keys[i:i + _CHUNK])
            marks = ", ".join([self.ph] * len(part))
            out.extend((int(k), int(s), str(src), str(eid)) for k, s, src, eid in self._query(
                f"SELECT key, seq, source, event_id FROM {self.t('events')} WHERE key IN ({marks})", part))
        return out

    def find_id(self, event_id: str, source: str | None) -> list[int]:
        """Seqs of events with this id (and source when given)."""
        if source is None:
            rows = self._query(f"SELECT seq FROM {self.t('events')} WHERE event_id = {self.ph} ORDER BY seq",
                               [event_id])
        else:
            rows = self._query(f"SELECT seq FROM {self.t('events')} WHERE event_id = {self.ph} AND source = {self.ph} "
                               "ORDER BY seq", [event_id, source])
        return [int(r[0]) for r in rows]

    def tree_size(self) -> int:
        """Highest stored seq + 1 (0 when empty)."""
        rows = self._query(f"SELECT MAX(seq) FROM {self.t('events')}")
        return 0 if not rows or rows[0][0] is None else int(rows[0][0]) + 1

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        """Leaf hashes of seqs [lo, hi) in seq order."""
        p = self.ph
        return [bytes(r[0]) for r in self._query(
            f"SELECT leaf FROM {self.t('events')} WHERE seq >= {p} AND seq < {p} ORDER BY seq", [lo, hi])]

    def nodes(self, coords: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored subtree hashes among (level, index) coords, in one query per 100 coords."""
        out: dict[tuple[int, int], bytes] = {}
        p = self.ph
        for i in range(0, len(coords), 100):
            part = coords[i:i + 100]
            where = " OR ".join([f"(level = {p} AND idx = {p})"] * len(part))
            params = [x for c in part for x in c]
            for lv, ix, h in self._query(f"SELECT level, idx, hash FROM {self.t('nodes')} WHERE {where}", params):
                out[(int(lv), int(ix))] = bytes(h)
        return out

    def all_nodes(self, lo_level: int) -> list[NodeRow]:
        """Every stored node of level >= lo_level."""
        return [(int(a), int(b), bytes(c)) for a, b, c in self._query(
            f"SELECT level, idx, hash FROM {self.t('nodes')} WHERE level >= {self.ph} ORDER BY level, idx",
            [lo_level])]

    def rows(self, lo: int, hi: int) -> list[EventRow]:
        """Stored event rows with lo <= seq < hi, in seq order."""
        p = self.ph
        return [
            (int(s), int(k), str(src), str(eid), t, a, pt, None if rec is None else bytes(rec), bytes(leaf))
            for s, k, src, eid, t, a, pt, rec, leaf in self._query(
                f"SELECT seq, key, source, event_id, time, account, patients, record, leaf FROM {self.t('events')} "
                f"WHERE seq >= {p} AND seq < {p} ORDER BY seq", [lo, hi])
        ]

    def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint row in n order."""
        return [(int(n), int(s), bytes(b), bytes(sig)) for n, s, b, sig in self._query(
            f"SELECT n, size, body, signature FROM {self.t('checkpoints')} ORDER BY n")]

    def seq_ranges(self, start: int | None, end: int | None) -> list[tuple[int, int]]:
        """[lo, hi) seq ranges of the batches whose event times may fall in [start, end)."""
        p = self.ph
        conds, params = [], []
        if start is not None:
            conds.append(f"max_time >= {p}")
            params.append(start)
        if end is not None:
            conds.append(f"min_time < {p}")
            params.append(end)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._query(f"SELECT first_seq, last_seq FROM {self.t('batches')}{where} ORDER BY first_seq", params)
        # Merge adjacent batches so a long time range becomes one scan.
        out: list[tuple[int, int]] = []
        for first, last in rows:
            lo, hi = int(first), int(last) + 1
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out

    def scan(self, lo: int, hi: int, scan: Scan) -> list[tuple[int, bytes]]:
        """(seq, record) of unpruned access events in [lo, hi) matching the filters (no ledger records)."""
        p = self.ph
        conds = [f"seq >= {p}", f"seq < {p}", "record IS NOT NULL", f"source <> {p}"]
        params: list[Any] = [lo, hi, LEDGER_SOURCE]
        if scan.start is not None:
            conds.append(f"time >= {p}")
            params.append(scan.start)
        if scan.end is not None:
            conds.append(f"time < {p}")
            params.append(scan.end)
        if scan.account is not None:
            conds.append(f"account = {p}")
            params.append(scan.account)
        if scan.pseudonym is not None:
            conds.append(f"patients LIKE {p}")
            params.append(f"%{scan.pseudonym}%")
        return [(int(s), bytes(r)) for s, r in self._query(
            f"SELECT seq, record FROM {self.t('events')} WHERE {' AND '.join(conds)} ORDER BY seq", params)]

    def expired(self, cutoff: int, reserved_source: str, limit: int) -> list[int]:
        """Seqs of unpruned events with time < cutoff (at most `limit`), excluding the ledger's own records."""
        p = self.ph
        return [int(r[0]) for r in self._query(
            f"SELECT seq FROM {self.t('events')} WHERE time < {p} AND record IS NOT NULL AND source <> {p} "
            f"ORDER BY seq LIMIT {int(limit)}", [cutoff, reserved_source])]
