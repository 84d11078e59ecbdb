"""The production backend: PostgreSQL through psycopg 3, events loaded with binary COPY.

Why COPY: a batch of 10,000 rows goes in one round trip and PostgreSQL parses no SQL per
row, which is what lets durable appends reach the bulk-load speed (docs/ledger.md).
Durability comes from PostgreSQL's commit (`synchronous_commit = on`, forced here). A
second writer is refused with a session advisory lock named after the schema.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from sentinelle.ledger._sql import SqlStore
from sentinelle.ledger.errors import LedgerError, LedgerLockedError
from sentinelle.ledger.store import BatchRow, CheckpointRow, EventRow, KeyConflict, NodeRow

__all__ = ["PostgresStore"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_EVENT_TYPES = ["int8", "int8", "text", "text", "int8", "text", "text", "bytea", "bytea"]
#: First half of the advisory lock key: "SnLd", so the lock is recognisable in pg_locks.
_LOCK_CLASS = 0x536E4C64


class PostgresStore(SqlStore):
    """A ledger in one PostgreSQL schema."""

    ph = "%s"
    blob = "BYTEA"
    bigint = "BIGINT"

    def __init__(self, url: str, conninfo: str, schema: str) -> None:
        if not _IDENT.match(schema):
            raise LedgerError(f"{url}: schema {schema!r} is not a plain SQL identifier")
        self.url = url
        self.schema = schema
        self.prefix = f'"{schema}".'
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True)
            self.conn.execute("SET synchronous_commit = on")
        except psycopg.Error as exc:
            raise LedgerError(f"{_safe(url)}: cannot connect to PostgreSQL ({exc})") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql.encode(), params)  # bytes: psycopg's LiteralString check is for typing only
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise LedgerError(f"{_safe(self.url)}: {exc}") from exc

    def _script(self, statements: Iterable[str]) -> None:
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'.encode())
                for sql in statements:
                    cur.execute(sql.encode())
        except psycopg.Error as exc:
            raise LedgerError(f"{_safe(self.url)}: {exc}") from exc

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """A REPEATABLE READ transaction: one snapshot for every read inside."""
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            with self.conn.transaction():
                yield
        finally:
            self.conn.isolation_level = None

    def lock_writer(self) -> None:
        """Take a session advisory lock keyed by the schema name."""
        rows = self._query("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [_LOCK_CLASS, self.schema])
        if not rows or not rows[0][0]:
            raise LedgerLockedError(f"{_safe(self.url)}: another process writes this ledger")

    def _write(self, events: Sequence[EventRow], batch: BatchRow | None, nodes: Sequence[NodeRow],
               checkpoints: Sequence[CheckpointRow], meta: Mapping[str, str],
               prune: Sequence[tuple[int, int]]) -> None:
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                if events:
                    copy_sql = f"COPY {self.t('events')} FROM STDIN (FORMAT BINARY)".encode()
                    with cur.copy(copy_sql) as copy:
                        copy.set_types(_EVENT_TYPES)
                        write = copy.write_row
                        for row in events:
                            write(row)
                if batch is not None:
                    cur.execute(self._insert_sql("batches", 5).encode(), batch)
                if nodes:
                    cur.executemany(self._insert_sql("nodes", 3).encode(), nodes)
                if checkpoints:
                    cur.executemany(self._insert_sql("checkpoints", 4).encode(), checkpoints)
                if prune:
                    cur.executemany(self._prune_sql().encode(), prune)
                if meta:
                    cur.executemany(self._meta_sql().encode(), list(meta.items()))
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "events_key":
                raise KeyConflict(f"{_safe(self.url)}: an event of the batch is already stored") from exc
            raise LedgerError(f"{_safe(self.url)}: {exc} (is another process writing this ledger?)") from exc
        except psycopg.Error as exc:
            raise LedgerError(f"{_safe(self.url)}: cannot commit a batch ({exc})") from exc

    def drop(self) -> None:
        """Drop the schema and everything in it (tests and benchmarks clean up with it)."""
        self._query(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        """Close the connection, which also releases the advisory lock."""
        self.conn.close()


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
