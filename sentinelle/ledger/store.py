"""Where the ledger keeps its rows: one small interface, SQLite and PostgreSQL behind it.

Why a narrow protocol: the ledger's logic (protection, Merkle tree, checkpoints, verify)
is the same whatever the database; a backend only stores rows durably and reads them
back by range. A batch is written in ONE transaction (events, the batch's summary, new
Merkle nodes, a checkpoint when due, meta) and `append_batch` returns after the commit
is durable: that is the group commit the service acknowledges on.

Tables (same in both backends, `<schema>.` prefix in PostgreSQL):
  events(seq PK, key UNIQUE, source, event_id, time, account, patients, record, leaf)
  batches(first_seq PK, last_seq, min_time, max_time, committed)
  nodes(level, idx, hash) PK (level, idx)
  checkpoints(n PK, size, body, signature)
  meta(name PK, value)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from sentinelle.ledger.errors import LedgerError

__all__ = [
    "BatchRow",
    "CheckpointRow",
    "EventRow",
    "KeyConflict",
    "LedgerStore",
    "NodeRow",
    "Scan",
    "open_store",
]

#: (seq, key, source, event_id, time, account, patients, record, leaf); time, account,
#: patients and record are None once retention removed the payload.
EventRow = tuple[int, int, str, str, int | None, str | None, str | None, bytes | None, bytes]
#: (first_seq, last_seq, min_time, max_time, committed_ms)
BatchRow = tuple[int, int, int, int, int]
#: (level, index, hash) of a complete subtree.
NodeRow = tuple[int, int, bytes]
#: (n, size, body, signature)
CheckpointRow = tuple[int, int, bytes, bytes]


class KeyConflict(LedgerError):
    """A batch holds an event whose idempotency key is already stored (the caller dedups and retries)."""


class Scan:
    """Filters of a reader query; None means no filter."""

    __slots__ = ("account", "end", "pseudonym", "start")

    def __init__(self, start: int | None = None, end: int | None = None, account: str | None = None,
                 pseudonym: str | None = None) -> None:
        self.start = start
        self.end = end
        self.account = account
        self.pseudonym = pseudonym


class LedgerStore(Protocol):
    """What a ledger backend provides; every method is called under the ledger's lock."""

    url: str

    def create(self) -> None:
        """Create the tables when absent."""

    def lock_writer(self) -> None:
        """Become the single writer, or raise `LedgerLockedError`."""

    def read_meta(self) -> dict[str, str]:
        """All meta values."""

    def append_batch(self, events: Sequence[EventRow], batch: BatchRow | None, nodes: Sequence[NodeRow],
                     checkpoints: Sequence[CheckpointRow], meta: Mapping[str, str],
                     prune: Sequence[tuple[int, int]] = ()) -> None:
        """Write everything in one durable transaction; `prune` lists [lo, hi) seq ranges whose
        payload to remove. Raises `KeyConflict` when an event key is already stored."""

    def find_keys(self, keys: Sequence[int]) -> list[tuple[int, int, str, str]]:
        """(key, seq, source, event_id) of stored events among `keys`."""

    def find_id(self, event_id: str, source: str | None) -> list[int]:
        """Seqs of events with this id (and source when given)."""

    def tree_size(self) -> int:
        """Highest stored seq + 1 (0 when empty)."""

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        """Leaf hashes of seqs [lo, hi) in seq order."""

    def nodes(self, coords: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored subtree hashes among (level, index) coords."""

    def all_nodes(self, lo_level: int) -> list[NodeRow]:
        """Every stored node of level >= lo_level (verify compares them)."""

    def rows(self, lo: int, hi: int) -> list[EventRow]:
        """Stored event rows with lo <= seq < hi, in seq order (gaps possible after tampering)."""

    def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint row in n order."""

    def seq_ranges(self, start: int | None, end: int | None) -> list[tuple[int, int]]:
        """[lo, hi) seq ranges of the batches whose event times may fall in [start, end)."""

    def scan(self, lo: int, hi: int, scan: Scan) -> list[tuple[int, bytes]]:
        """(seq, record) of unpruned access events (not the ledger's own records) in [lo, hi)
        matching the filters, in seq order."""

    def expired(self, cutoff: int, reserved_source: str, limit: int) -> list[int]:
        """Seqs of unpruned events with time < cutoff (at most `limit`), excluding the ledger's own records."""

    def snapshot(self) -> AbstractContextManager[None]:
        """A read transaction: every read inside sees one committed state (verify runs in one)."""

    def close(self) -> None:
        """Release the connection and the writer lock."""


def open_store(url: str, create: bool = True) -> LedgerStore:
    """The backend named by a ledger URL; with `create` false, a missing SQLite file is an error.

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (SQLAlchemy's
    convention) or a bare file path; `postgresql://user@host:port/db?schema=name`.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from sentinelle.ledger.postgres_store import PostgresStore

        parts = urlsplit(url)
        query = parse_qs(parts.query)
        schema = query.pop("schema", ["public"])[0]
        rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
        conninfo = parts._replace(query=rest).geturl()
        return PostgresStore(url, conninfo, schema)
    from sentinelle.ledger.sqlite_store import SqliteStore

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    elif "://" in url:
        raise LedgerError(f"{url}: unknown ledger URL scheme (sqlite:/// or postgresql://)")
    else:
        path = url
    if not create and not Path(path).is_file():
        raise LedgerError(f"{path}: no ledger file there")
    return SqliteStore(url, path)
