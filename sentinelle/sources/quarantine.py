"""Where rejected input records go: a JSON-lines file, one rejected record a line.

Bad input never stops a run and never passes silently. Each rejected record is kept
with its origin (file), its location (line or byte offset, record id) and the reason,
so it can be fixed and replayed; the count appears in every summary.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO

import msgspec

__all__ = ["Quarantine", "Rejected"]

#: Raw text kept per rejected record: enough to find and fix it, bounded so a 50 MB
#: garbage line does not become a 50 MB quarantine line.
RAW_LIMIT = 4096


class Rejected(msgspec.Struct, frozen=True):
    """One rejected record."""

    origin: str
    location: str
    reason: str
    raw: str = ""


_encoder = msgspec.json.Encoder()


class Quarantine:
    """Collects rejected records; writes them to `path` when one is given.

    The file is opened lazily, so a clean run leaves no empty quarantine file.
    Thread-safe: readers running in worker threads may share one quarantine.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.by_reason: dict[str, int] = {}
        self.kept: list[Rejected] = []  # only when there is no file, bounded
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def reject(self, origin: str, location: str, reason: str, raw: bytes | str = b"") -> None:
        """Set one record aside with where it was and why it was refused."""
        raw = raw[:RAW_LIMIT].decode("utf-8", "replace") if isinstance(raw, bytes) else raw[:RAW_LIMIT]
        item = Rejected(origin=origin, location=location, reason=reason, raw=raw)
        key = reason.split(":", 1)[0][:80]
        with self._lock:
            self.count += 1
            self.by_reason[key] = self.by_reason.get(key, 0) + 1
            if self.path is None:
                if len(self.kept) < 10_000:
                    self.kept.append(item)
                return
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(_encoder.encode(item) + b"\n")

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> Quarantine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def where(self) -> str:
        """Human text of where rejected records went."""
        if self.path is None:
            return "kept in memory"
        return str(self.path)
