"""The scope index: appends through the ledger hook, the ledger's tail, crash recovery, keys."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sentinelle.events import AccessEvent
from sentinelle.incident import ScopeIndex, ScopeIndexError, Selector, compute_scope
from sentinelle.incident.index import pk_of_pseudonym
from sentinelle.ledger import Keyring, Ledger, LedgerReader, SigningKey

T0 = 1_735_689_600_000


def events(n: int, start: int = 0) -> list[AccessEvent]:
    out = []
    for i in range(start, start + n):
        pats = () if i % 11 == 0 else (f"Patient/{i % 7}",) if i % 5 else (f"Patient/{i % 7}", "Patient/99")
        out.append(AccessEvent(id=f"e{i}", time=T0 + i * 60_000, account=f"u{i % 3}", action="read",
                               outcome="denied" if i % 13 == 0 else "success", patients=pats, categories=1 << (i % 5),
                               client="dpi-web", address=f"10.0.{i % 2}.{i % 4}", source="dpi"))
    return out


def test_hook_and_tail_and_build_agree(tmp_path: Path) -> None:
    ring = Keyring.generate()
    evs = events(500)
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", ring, signing_key=SigningKey.generate())
    idx = ScopeIndex.open(tmp_path / "idx", ring, write=True, flush_rows=64)
    led.append_batch(evs[:100])  # before the index exists: caught up on attach
    idx.attach(led)
    led.append_batch(evs[100:400])
    idx.close()
    led.append_batch(evs[400:])  # after the index stopped: read from the ledger's tail
    led.close()
    reader = LedgerReader.open(f"sqlite:///{tmp_path / 'l.db'}", ring)
    ro = ScopeIndex.open(tmp_path / "idx", ring)
    view = ro.view(reader)
    assert len(view.parts) == 2 and view.hw == reader.stored_size()
    assert view.pk("Patient/3") == pk_of_pseudonym(reader.pseudonym("Patient/3"))
    built = ScopeIndex.build(evs, tmp_path / "built", Keyring.generate())
    sel = [Selector(accounts=("u1",), addresses=("10.0.1.0/24",), start=T0 + 60_000 * 50, end=T0 + 60_000 * 450)]
    a, b = compute_scope(view, sel), compute_scope(built.view(), sel)
    assert a.summary.patients == b.summary.patients > 0
    assert sorted(a.refs) == sorted(b.refs)
    assert {(e.ref, e.mask, e.events) for e in a.exposures()} == {(e.ref, e.mask, e.events) for e in b.exposures()}
    # Hand check: u1 from 10.0.1.x are the odd i with i % 3 == 1, in the window, successful.
    want: dict[str, int] = {}
    for e in evs[50:450]:
        if e.account == "u1" and e.address.startswith("10.0.1.") and e.outcome == "success":
            for p in e.patients:
                want[p] = want.get(p, 0) | e.categories
    assert {x.ref: x.mask for x in a.exposures()} == want
    w = ScopeIndex.open(tmp_path / "idx", ring, write=True)
    assert w.catch_up(reader) > 0 and w.hw == reader.stored_size()
    w.close()
    reader.close()


def test_a_crash_after_the_data_before_the_commit_is_cut(tmp_path: Path) -> None:
    ring = Keyring.generate()
    idx = ScopeIndex.build(events(100), tmp_path / "i", ring)
    idx.close()
    with open(tmp_path / "i" / "seq.bin", "ab") as f:
        f.write(b"\x01" * 24)  # half-written rows of a flush that never committed
    (tmp_path / "i" / "vault-9.bin").write_bytes(b"junk")
    again = ScopeIndex.open(tmp_path / "i", ring, write=True)
    assert (tmp_path / "i" / "seq.bin").stat().st_size == again.meta.rows * 8
    assert not (tmp_path / "i" / "vault-9.bin").exists()
    again.add([(again.hw, events(1, 100)[0])])
    again.close()
    view = ScopeIndex.open(tmp_path / "i", ring).view()
    assert int(np.asarray(view.parts[0].cols["seq"])[-1]) == 100


def test_keys_and_writers_are_checked(tmp_path: Path) -> None:
    ring = Keyring.generate()
    ScopeIndex.build(events(10), tmp_path / "i", ring).close()
    with pytest.raises(ScopeIndexError, match="another keyring"):
        ScopeIndex.open(tmp_path / "i", Keyring.generate())
    w = ScopeIndex.open(tmp_path / "i", ring, write=True)
    with pytest.raises(ScopeIndexError, match="another process"):
        ScopeIndex.open(tmp_path / "i", ring, write=True)
    w.close()
    with pytest.raises(ScopeIndexError, match="no scope index"):
        ScopeIndex.open(tmp_path / "nothing")
    without_key = ScopeIndex.open(tmp_path / "i").view()
    with pytest.raises(ScopeIndexError, match="keyring"):
        without_key.reveal(np.array([1]))
    # The vault holds no clear reference: only the sealed segment.
    blob = b"".join(p.read_bytes() for p in (tmp_path / "i").glob("vault-*.bin"))
    assert b"Patient/" not in blob
    assert os.stat(tmp_path / "i").st_mode & 0o077 == 0
