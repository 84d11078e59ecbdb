"""The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.

Why these settings: WAL lets readers (verify, the console) run while the writer appends;
`synchronous=FULL` fsyncs the WAL at every commit, so an acknowledged batch survives a
power cut; one transaction per batch amortises that fsync (~250 µs) over thousands of
events. A second writer is refused through an exclusive `flock` on `<file>.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from sentinelle.ledger._sql import SqlStore
from sentinelle.ledger.errors import LedgerError, LedgerLockedError
from sentinelle.ledger.store import BatchRow, CheckpointRow, EventRow, KeyConflict, NodeRow

__all__ = ["SqliteStore"]

#: Rows per INSERT statement: 9 x 256 = 2,304 parameters (SQLite allows 32,766 since 3.32, 999 before).
_ROWS = 256 if sqlite3.sqlite_version_info >= (3, 32) else 64


class SqliteStore(SqlStore):
    """A ledger in one SQLite file."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = Path(path)
        self._lock_file: IO[bytes] | None = None
        self._multi_sql: dict[int, str] = {}
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            # 64 MiB of page cache (default 2 MiB): the hot right end of every index stays in memory.
            self.conn.execute("PRAGMA cache_size=-65536")
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"{self.path}: cannot open the SQLite ledger ({exc})") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: {exc}") from exc

    def _script(self, statements: Iterable[str]) -> None:
        try:
            self.conn.execute("BEGIN")
            for sql in statements:
                self.conn.execute(sql)
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.conn.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: {exc}") from exc

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A deferred read transaction: in WAL mode it sees one commit while the writer goes on."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def lock_writer(self) -> None:
        """Take an exclusive, non-blocking lock on `<file>.lock`."""
        f = open(f"{self.path}.lock", "ab")  # noqa: SIM115 - held open for the store's life
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.close()
            raise LedgerLockedError(f"{self.path}: another process writes this ledger") from exc
        self._lock_file = f

    def _write(self, events: Sequence[EventRow], batch: BatchRow | None, nodes: Sequence[NodeRow],
               checkpoints: Sequence[CheckpointRow], meta: Mapping[str, str],
               prune: Sequence[tuple[int, int]]) -> None:
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            if events:
                self._insert_events(events)
            if batch is not None:
                c.execute(self._insert_sql("batches", 5), batch)
            if nodes:
                c.executemany(self._insert_sql("nodes", 3), nodes)
            if checkpoints:
                c.executemany(self._insert_sql("checkpoints", 4), checkpoints)
            if prune:
                c.executemany(self._prune_sql(), prune)
            if meta:
                c.executemany(self._meta_sql(), list(meta.items()))
            c.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            c.execute("ROLLBACK")
            if "events.key" in str(exc):
                raise KeyConflict(f"{self.path}: an event of the batch is already stored") from exc
            raise LedgerError(f"{self.path}: {exc} (is another process writing this ledger?)") from exc
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: cannot commit a batch ({exc})") from exc

    def _insert_events(self, events: Sequence[EventRow]) -> None:
        """Insert rows with multi-row statements of at most `_ROWS` rows.

        Why not `executemany`: Python's sqlite3 releases the GIL around every row's step,
        and while another thread of the service runs Python (detection, HTTP) the writer
        then waits up to the interpreter's switch interval (5 ms) to get it back, row
        after row. A few statements per batch release it a few times. Statement sizes are
        powers of two, so at most nine are ever prepared (the connection caches them).
        """
        c = self.conn
        chain = itertools.chain.from_iterable
        i, n, size = 0, len(events), _ROWS
        while i < n:
            while size > n - i:
                size //= 2
            sql = self._multi_sql.get(size)
            if sql is None:
                sql = self._multi_sql[size] = f"INSERT INTO {self.t('events')} VALUES " + ", ".join(
                    [f"({', '.join(['?'] * 9)})"] * size)
            c.execute(sql, list(chain(events[i:i + size])))
            i += size

    def close(self) -> None:
        """Close the connection and release the writer lock."""
        self.conn.close()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
            # The lock file stays: unlinking it would let two later writers lock two inodes.
