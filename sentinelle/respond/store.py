"""The alert store behind `GET /alerts`: every alert version raised, with what was delivered where.

Why a store and not a log file: analysts filter (severity, kind, account, time) and page
through alerts; the service must also know, after a restart, which alerts it already
raised (an alert id is the episode id plus its version, so a replayed ledger tail gives
the same ids: `add` answers "already raised" and nothing is delivered twice) and which
deliveries were still pending (an outbox: each channel's row goes from `pending` to
`done` or `dead`, so a crash between raising and delivering loses nothing).

SQLite in WAL mode with `synchronous=FULL`: alerts are few (a handful an hour), and the
service writes its engine snapshot only after the alerts before it are durable here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from sentinelle.detect import SEVERITIES, Alert

__all__ = ["AlertPage", "AlertStore", "StoredAlert"]

_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Alert).decode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  n INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  episode TEXT NOT NULL,
  version INTEGER NOT NULL,
  account TEXT NOT NULL,
  severity TEXT NOT NULL,
  rank INTEGER NOT NULL,
  kind TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  raised_ms INTEGER NOT NULL,
  latest INTEGER NOT NULL,
  body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_latest ON alerts(latest, n);
CREATE INDEX IF NOT EXISTS alerts_account ON alerts(account, n);
CREATE INDEX IF NOT EXISTS alerts_episode ON alerts(episode, version);
CREATE TABLE IF NOT EXISTS deliveries (
  alert INTEGER NOT NULL,
  channel TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  updated_ms INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (alert, channel)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(channel, state);
"""


class StoredAlert(msgspec.Struct, frozen=True):
    """One stored alert version: its place in the store, the alert, and when the service raised it."""

    n: int
    alert: Alert
    raised_ms: int


class AlertPage(msgspec.Struct, frozen=True):
    """One page of a query; `next` is the cursor of the following page (None on the last)."""

    items: list[StoredAlert]
    next: int | None


class AlertStore:
    """Alerts and their deliveries in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    # ---- writing ---------------------------------------------------------------------
    def add(self, alert: Alert, channels: Iterable[str] = (), raised_ms: int | None = None) -> int | None:
        """Store one alert version with a pending delivery per channel; its number, or None if already stored."""
        now = int(time.time() * 1000) if raised_ms is None else raised_ms
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                if c.execute("SELECT 1 FROM alerts WHERE id = ?", (alert.id,)).fetchone() is not None:
                    c.execute("ROLLBACK")
                    return None
                newer = c.execute("SELECT 1 FROM alerts WHERE episode = ? AND version > ? LIMIT 1",
                                  (alert.episode, alert.version)).fetchone()
                if newer is None:
                    c.execute("UPDATE alerts SET latest = 0 WHERE episode = ? AND latest = 1", (alert.episode,))
                cur = c.execute(
                    "INSERT INTO alerts (id, episode, version, account, severity, rank, kind, time_ms, raised_ms, "
                    "latest, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (alert.id, alert.episode or alert.id, alert.version, alert.account, alert.severity,
                     _RANK.get(alert.severity, 0), alert.kind, alert.time_ms, now, 1 if newer is None else 0,
                     _encode(alert)),
                )
                n = cur.lastrowid
                assert n is not None
                c.executemany("INSERT INTO deliveries (alert, channel, state, updated_ms) VALUES (?, ?, 'pending', ?)",
                              [(n, ch, now) for ch in channels])
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return n

    def mark(self, n: int, channel: str, state: str, attempts: int, error: str = "") -> None:
        """Record the state of one delivery: `done`, `dead` or still `pending`."""
        with self._lock:
            self._conn.execute("UPDATE deliveries SET state = ?, attempts = ?, updated_ms = ?, error = ? "
                               "WHERE alert = ? AND channel = ?",
                               (state, attempts, int(time.time() * 1000), error[:500], n, channel))

    # ---- reading ---------------------------------------------------------------------
    def get(self, alert_id: str) -> StoredAlert | None:
        """One alert version by id."""
        with self._lock:
            row = self._conn.execute("SELECT n, body, raised_ms FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else StoredAlert(row[0], _decode(row[1]), row[2])

    def pending(self, channel: str) -> list[tuple[int, Alert, int]]:
        """Deliveries of one channel not yet done: (alert number, alert, attempts so far)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT a.n, a.body, d.attempts FROM deliveries d JOIN alerts a ON a.n = d.alert "
                "WHERE d.channel = ? AND d.state = 'pending' ORDER BY a.n", (channel,)).fetchall()
        return [(n, _decode(body), attempts) for n, body, attempts in rows]

    def deliveries(self, n: int) -> dict[str, tuple[str, int, str]]:
        """State, attempts and last error of each channel's delivery of one alert."""
        with self._lock:
            rows = self._conn.execute("SELECT channel, state, attempts, error FROM deliveries WHERE alert = ?",
                                      (n,)).fetchall()
        return {ch: (state, attempts, error) for ch, state, attempts, error in rows}

    def query(self, *, severity: Iterable[str] = (), min_severity: str = "", kind: Iterable[str] = (),
              account: str = "", episode: str = "", since_ms: int | None = None, until_ms: int | None = None,
              latest: bool = True, limit: int = 100, cursor: int | None = None) -> AlertPage:
        """Alerts newest first, filtered; `cursor` continues a previous page.

        `since_ms`/`until_ms` bound the alert's time (the event time at which it fired);
        `latest` keeps only the newest version of each episode.
        """
        where: list[str] = []
        args: list[object] = []
        if latest:
            where.append("latest = 1")
        sev = [s for s in severity if s]
        if sev:
            where.append(f"severity IN ({', '.join('?' * len(sev))})")
            args += sev
        if min_severity:
            where.append("rank >= ?")
            args.append(_RANK.get(min_severity, 0))
        kinds = [k for k in kind if k]
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args += kinds
        if account:
            where.append("account = ?")
            args.append(account)
        if episode:
            where.append("episode = ?")
            args.append(episode)
        if since_ms is not None:
            where.append("time_ms >= ?")
            args.append(since_ms)
        if until_ms is not None:
            where.append("time_ms < ?")
            args.append(until_ms)
        if cursor is not None:
            where.append("n < ?")
            args.append(cursor)
        sql = "SELECT n, body, raised_ms FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY n DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        items = [StoredAlert(n, _decode(body), raised) for n, body, raised in rows[:limit]]
        nxt = items[-1].n if len(rows) > limit and items else None
        return AlertPage(items, nxt)

    def count(self) -> dict[str, int]:
        """Alert versions stored, by severity."""
        with self._lock:
            rows = self._conn.execute("SELECT severity, COUNT(*) FROM alerts GROUP BY severity").fetchall()
        return {s: n for s, n in rows}

    def episodes(self) -> int:
        """Distinct episodes stored."""
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM alerts WHERE latest = 1").fetchone()
        return int(row[0])
