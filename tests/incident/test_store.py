"""The incident store and the 72-hour clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinelle.errors import ConfigError
from sentinelle.incident import DocumentRecord, IncidentNotFoundError, IncidentStore, Note, clock, open_incident

H = 3_600_000


def test_store_round_trip(tmp_path: Path) -> None:
    inc = open_incident("test", accounts=["x"], start=0, end=10, now=1_738_000_000_000, aware=1_738_000_000_000)
    assert inc.id == "INC-20250127-001"
    with IncidentStore(tmp_path / "s.db") as store:
        store.save(inc)
        store.add_note(inc.id, Note(time=5, text="Compte désactivé"))
        store.log_document(DocumentRecord(inc.id, "letters", "fr", "out/", 30, 7))
        got = store.get(inc.id)
        assert got.notes[0].text == "Compte désactivé" and got.selectors == inc.selectors
        assert [d.count for d in store.documents(inc.id)] == [30]
        assert store.scope(inc.id) is None
        with pytest.raises(IncidentNotFoundError):
            store.get("nope")
        assert store.record_lookup("a", "p.1", "why", when=3) == 1
        assert [x.patient for x in store.lookups("p.1")] == ["p.1"]
    with pytest.raises(ConfigError):
        open_incident("empty")


def test_the_clock_runs_from_awareness() -> None:
    inc = open_incident("t", accounts=["x"], aware=1_738_000_000_000, now=1_738_000_000_000)
    c = clock(inc, inc.aware + 30 * H + 15 * 60_000)
    assert c.remaining == 41 * H + 45 * 60_000 and not c.overdue
    assert c.text("fr").startswith("Délai CNIL (72 h) : 41 h 45 min restant")
    late = clock(inc, inc.aware + 75 * H)
    assert late.overdue and "DÉPASSÉ de 3 h 00 min" in late.text("fr") and "OVERDUE" in late.text("en")
    inc.cnil_notified = inc.aware + H
    assert not clock(inc, inc.aware + 75 * H).overdue
