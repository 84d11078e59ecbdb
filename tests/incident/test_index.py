"""The scope index: appends through the ledger hook, the ledger's tail, crash recovery, keys."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
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


def test_the_bulk_column_path_gives_the_scope_the_ledger_hook_gives(tmp_path: Path) -> None:
    """`add_columns` (how bench/incident.py writes 20 million rows) stores what `add` stores."""
    from sentinelle.ledger.records import Protector

    ring = Keyring.generate()
    evs = events(600)
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", ring, signing_key=SigningKey.generate())
    hooked = ScopeIndex.open(tmp_path / "hooked", ring, write=True, flush_rows=100)
    hooked.attach(led)
    led.append_batch(evs)
    hooked.close()
    led.close()
    protector = Protector(ring)
    refs = sorted({p for e in evs for p in e.patients})
    pks = np.array([pk_of_pseudonym(protector.pseudonym(r)) for r in refs], dtype=np.int64)
    values: dict[str, list[str]] = {"account": [], "client": [], "address": [], "action": [], "outcome": [],
                                    "actor_kind": [], "auth": []}
    codes: dict[str, dict[str, int]] = {k: {} for k in values}

    def code(col: str, v: str) -> int:
        if v not in codes[col]:
            codes[col][v] = len(values[col])
            values[col].append(v)
        return codes[col][v]

    rows = [(seq, e, p) for seq, e in enumerate(evs) for p in (e.patients or ("",))]
    cols = {
        "seq": np.array([s for s, _, _ in rows]), "time": np.array([e.time for _, e, _ in rows]),
        "pk": np.array([pks[refs.index(p)] if p else 0 for _, _, p in rows]),
        "categories": np.array([e.categories for _, e, _ in rows]),
        **{c: np.array([code(c, getattr(e, c)) for _, e, _ in rows])
           for c in ("account", "client", "address", "action", "outcome", "actor_kind", "auth")},
    }
    bulk = ScopeIndex.open(tmp_path / "bulk", ring, write=True)
    bulk.add_columns(cols, values, (pks, refs))
    bulk.close()
    with LedgerReader.open(f"sqlite:///{tmp_path / 'l.db'}", ring) as reader:
        a_view = ScopeIndex.open(tmp_path / "hooked", ring).view(reader)
        b_view = ScopeIndex.open(tmp_path / "bulk", ring).view()
        for sel in ([Selector(accounts=("u1",))], [Selector(addresses=("10.0.1.0/24",), start=T0 + 60_000 * 100)],
                    [Selector(accounts=("u2",), end=T0 + 60_000 * 300)]):
            a, b = compute_scope(a_view, sel), compute_scope(b_view, sel)
            same_time = msgspec.structs.replace(b.summary, computed=a.summary.computed)
            assert a.summary.patients > 0 and a.summary == same_time
            assert {(e.ref, e.mask, e.events, e.first, e.last) for e in a.exposures()} == {
                (e.ref, e.mask, e.events, e.first, e.last) for e in b.exposures()}
