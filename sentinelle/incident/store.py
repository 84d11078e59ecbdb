"""Where incidents live: one SQLite file (the embedded default), also the log of look-ups.

Why SQLite: incidents are a few hundred small records written by the DPO's team and read
by the CLI and the console; a file next to the ledger, with WAL so readers never block
the writer, is enough and needs nothing installed. Incidents are stored as JSON (the
`Incident` record), with their last scope summary and the documents generated for
them (kind, language, file, count, time), which the timeline reads back.

The `lookups` table is the audit of the audit: every patient access-history report
records who asked, about which patient (the ledger pseudonym when the keyring is at
hand, never a name), when, why and for which incident.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.errors import SentinelleError
from sentinelle.incident.model import Incident, Note, ScopeSummary

__all__ = ["DocumentRecord", "IncidentNotFoundError", "IncidentStore", "IncidentStoreError", "Lookup"]


class IncidentStoreError(SentinelleError):
    """The incident store cannot be opened or written."""


class IncidentNotFoundError(IncidentStoreError):
    """No incident has this id."""


class DocumentRecord(msgspec.Struct, frozen=True):
    """A document generated or sent for an incident."""

    incident: str
    kind: str  # cnil | hipaa | letters | emails | timeline | history
    lang: str
    path: str
    count: int
    time: int
    note: str = ""


class Lookup(msgspec.Struct, frozen=True):
    """One consultation of a patient's access history."""

    id: int
    time: int
    requester: str
    patient: str
    purpose: str
    incident: str


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, body BLOB NOT NULL, opened INTEGER NOT NULL, "
    "updated INTEGER NOT NULL, scope BLOB)",
    "CREATE TABLE IF NOT EXISTS documents (incident TEXT NOT NULL, kind TEXT NOT NULL, lang TEXT NOT NULL, "
    "path TEXT NOT NULL, count INTEGER NOT NULL, time INTEGER NOT NULL, note TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS lookups (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, "
    "requester TEXT NOT NULL, patient TEXT NOT NULL, purpose TEXT NOT NULL, incident TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS lookups_patient ON lookups (patient)",
]


class IncidentStore:
    """Incidents, their documents, and the log of patient access-history look-ups."""

    def __init__(self, path: str | Path = "sentinelle-incidents.db") -> None:
        self.path = Path(path)
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            for sql in _SCHEMA:
                self.conn.execute(sql)
        except (sqlite3.Error, OSError) as exc:
            raise IncidentStoreError(f"{self.path}: cannot open the incident store ({exc})") from exc

    def close(self) -> None:
        """Close the database."""
        self.conn.close()

    def __enter__(self) -> IncidentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise IncidentStoreError(f"{self.path}: {exc}") from exc

    # ---- incidents -------------------------------------------------------------------
    def save(self, incident: Incident) -> None:
        """Insert or replace an incident."""
        now = int(time.time() * 1000)
        self._run("INSERT INTO incidents (id, body, opened, updated) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
                  "SET body = excluded.body, updated = excluded.updated",
                  (incident.id, msgspec.json.encode(incident), incident.opened, now))

    def get(self, incident_id: str) -> Incident:
        """The incident with this id, or `IncidentNotFoundError`."""
        rows = self._run("SELECT body FROM incidents WHERE id = ?", (incident_id,))
        if not rows:
            raise IncidentNotFoundError(f"{self.path}: no incident {incident_id!r}")
        return msgspec.json.decode(rows[0][0], type=Incident)

    def all(self) -> list[Incident]:
        """Every incident, oldest first."""
        return [msgspec.json.decode(b, type=Incident)
                for (b,) in self._run("SELECT body FROM incidents ORDER BY opened, id")]

    def ids(self) -> list[str]:
        """Every incident id."""
        return [str(i) for (i,) in self._run("SELECT id FROM incidents")]

    def add_note(self, incident_id: str, note: Note) -> Incident:
        """Append a dated fact to an incident (for the timeline) and save it."""
        inc = self.get(incident_id)
        inc.notes.append(note)
        self.save(inc)
        return inc

    def save_scope(self, incident_id: str, summary: ScopeSummary) -> None:
        """Keep the last computed scope summary of an incident."""
        self.get(incident_id)
        self._run("UPDATE incidents SET scope = ? WHERE id = ?", (msgspec.json.encode(summary), incident_id))

    def scope(self, incident_id: str) -> ScopeSummary | None:
        """The last scope summary saved for an incident."""
        rows = self._run("SELECT scope FROM incidents WHERE id = ?", (incident_id,))
        if not rows:
            raise IncidentNotFoundError(f"{self.path}: no incident {incident_id!r}")
        blob = rows[0][0]
        return None if blob is None else msgspec.json.decode(blob, type=ScopeSummary)

    # ---- documents -------------------------------------------------------------------
    def log_document(self, doc: DocumentRecord) -> None:
        """Record a document generated or sent for an incident."""
        self._run("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (doc.incident, doc.kind, doc.lang, doc.path, doc.count, doc.time, doc.note))

    def documents(self, incident_id: str) -> list[DocumentRecord]:
        """Documents of an incident in time order."""
        return [DocumentRecord(str(a), str(b), str(c), str(d), int(e), int(f), str(g))
                for a, b, c, d, e, f, g in self._run(
                    "SELECT incident, kind, lang, path, count, time, note FROM documents WHERE incident = ? "
                    "ORDER BY time", (incident_id,))]

    # ---- look-ups ------------------------------------------------------------------------
    def record_lookup(self, requester: str, patient: str, purpose: str, incident: str = "",
                      when: int | None = None) -> int:
        """Log a consultation of a patient's access history; returns its number."""
        t = int(time.time() * 1000) if when is None else when
        cur = self.conn.execute("INSERT INTO lookups (time, requester, patient, purpose, incident) "
                                "VALUES (?, ?, ?, ?, ?)", (t, requester, patient, purpose, incident))
        return int(cur.lastrowid or 0)

    def lookups(self, patient: str | None = None) -> list[Lookup]:
        """Consultations, all or of one patient, in time order."""
        if patient is None:
            rows = self._run("SELECT id, time, requester, patient, purpose, incident FROM lookups ORDER BY id")
        else:
            rows = self._run("SELECT id, time, requester, patient, purpose, incident FROM lookups WHERE patient = ? "
                             "ORDER BY id", (patient,))
        return [Lookup(int(a), int(b), str(c), str(d), str(e), str(f))
                for a, b, c, d, e, f in rows]
