"""Every kind of tampering with the stored ledger is caught by `verify`, in both backends.

Each test builds a 600-event ledger (a checkpoint every 100 events, a witness file), then
tampers with it through raw SQL as an intruder with database access would, and checks
that verify names the first modified, deleted, inserted or reordered event or checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from ledger_factory import T0, Raw, make_events

from sentinelle.ledger import Keyring, Ledger, LedgerSettings, SigningKey, verify
from sentinelle.ledger.merkle import leaf_hash
from sentinelle.ledger.records import Record, decode_record, event_key

N = 600


@pytest.fixture
def built(url: str, tmp_path: Path, keyring: Keyring, signing_key: SigningKey) -> tuple[str, Path]:
    """A ledger of 600 events with 6 checkpoints, and its witness file."""
    witness = tmp_path / "witness.jsonl"
    settings = LedgerSettings(checkpoint_events=100, checkpoint_seconds=3600, witness_file=str(witness))
    with Ledger.open(url, keyring, signing_key=signing_key, settings=settings) as ledger:
        events = make_events(N)
        for i in range(0, N, 100):
            ledger.append_batch(events[i:i + 100])
    return url, witness


def tampered(url: str, **kw: object) -> tuple[str, int | None, int | None]:
    rep = verify(url, **kw)  # type: ignore[arg-type]
    assert not rep.ok, rep.summary()
    assert rep.first is not None
    return rep.first.kind, rep.first.seq, rep.first.checkpoint


def forged_row(seq: int, account: str = "mallory") -> tuple[object, ...]:
    """A well-formed row an intruder who knows the format could write (valid record and leaf)."""
    rec = Record(1, seq, 0, "dpi", f"forged-{seq}", T0, account, "read", "human", "success", (), 33, "", "", "",
                 "", "", "", b"", b"", "")
    blob = msgspec.msgpack.encode(rec)
    return (seq, event_key("dpi", rec.id, T0), "dpi", rec.id, T0, account, "", blob, leaf_hash(blob))


def shift(raw: Raw, start: int, by: int) -> None:
    """Renumber seq >= start by `by`, in two steps so no unique check trips midway."""
    raw.run("UPDATE {events} SET seq = seq + 1000000 WHERE seq >= ?", start)
    raw.run("UPDATE {events} SET seq = seq - 1000000 + ? WHERE seq >= 1000000", by)


def test_an_untouched_ledger_verifies(built: tuple[str, Path], keyring: Keyring, signing_key: SigningKey) -> None:
    url, witness = built
    rep = verify(url, keyring=keyring, witness=witness, public_keys=[signing_key.public_text])
    assert rep.ok, rep.summary()
    assert (rep.events, rep.checkpoints, rep.witness_checkpoints, rep.unsigned_tail) == (N, 6, 6, 0)
    assert rep.decrypted == sum(1 for e in make_events(N) if e.patients or e.query)
    assert rep.summary().startswith("OK: 600 events")


def test_an_edited_column_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("UPDATE {events} SET account = 'someone.else' WHERE seq = 137")
    raw.close()
    assert tampered(url) == ("modified", 137, None)


def test_edited_record_bytes_are_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    (blob,) = raw.run("SELECT record FROM {events} WHERE seq = 137")[0]
    rec = decode_record(bytes(blob))
    edited = msgspec.msgpack.encode(msgspec.structs.replace(rec, action="delete"))
    raw.run("UPDATE {events} SET record = ? WHERE seq = 137", edited)
    raw.close()
    assert tampered(url) == ("modified", 137, None)


def test_an_edit_with_recomputed_hashes_is_caught_by_the_signed_checkpoint(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    (blob,) = raw.run("SELECT record FROM {events} WHERE seq = 137")[0]
    rec = decode_record(bytes(blob))
    edited = msgspec.msgpack.encode(msgspec.structs.replace(rec, account="user9"))
    raw.run("UPDATE {events} SET record = ?, leaf = ?, account = 'user9' WHERE seq = 137", edited, leaf_hash(edited))
    raw.close()
    rep = verify(url)
    assert not rep.ok and rep.first is not None
    # The first checkpoint over seq 137 (size 200) no longer matches: pinned to seq 100..199.
    assert (rep.first.kind, rep.first.checkpoint) == ("modified", 1)
    assert "seq 100 to 199" in rep.first.detail


def test_a_deleted_row_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("DELETE FROM {events} WHERE seq = 250")
    raw.close()
    assert tampered(url) == ("deleted", 250, None)


def test_a_deletion_hidden_by_renumbering_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("DELETE FROM {events} WHERE seq = 250")
    shift(raw, 251, -1)
    raw.close()
    assert tampered(url) == ("deleted", 250, None)


def test_an_inserted_row_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    shift(raw, 300, 1)
    raw.run("INSERT INTO {events} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", *forged_row(300))
    raw.close()
    assert tampered(url) == ("inserted", 300, None)
    rep = verify(url)
    assert rep.first is not None and rep.first.event_id == "forged-300"


def test_swapped_rows_are_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("UPDATE {events} SET seq = -1 WHERE seq = 410")
    raw.run("UPDATE {events} SET seq = 410 WHERE seq = 420")
    raw.run("UPDATE {events} SET seq = 420 WHERE seq = -1")
    raw.close()
    kind, seq, _ = tampered(url)
    assert (kind, seq) == ("reordered", 410)


def test_a_truncated_tail_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("DELETE FROM {events} WHERE seq >= 550")
    raw.close()
    assert tampered(url)[:2] == ("truncated", 550)


def test_a_truncation_that_also_drops_checkpoints_needs_the_witness(built: tuple[str, Path]) -> None:
    url, witness = built
    raw = Raw(url)
    raw.run("DELETE FROM {events} WHERE seq >= 550")
    raw.run("DELETE FROM {checkpoints} WHERE size > 550")
    raw.run("UPDATE {meta} SET value = '550' WHERE name = 'size'")
    raw.close()
    # Without an outside copy, a clean cut after a checkpoint looks like a shorter ledger …
    rep = verify(url)
    assert rep.ok and rep.unsigned_tail == 50
    # … the witness remembers checkpoint 5 over 600 events.
    kind, seq, _ = tampered(url, witness=witness)
    assert (kind, seq) == ("truncated", 550)


def test_an_edited_checkpoint_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    (body,) = raw.run("SELECT body FROM {checkpoints} WHERE n = 2")[0]
    text = bytes(body).decode()
    root = text.split("\nroot ")[1].split("\n")[0]
    forged = text.replace(root, "0" * 64).encode()
    raw.run("UPDATE {checkpoints} SET body = ? WHERE n = 2", forged)
    raw.close()
    assert tampered(url) == ("checkpoint_modified", None, 2)


def test_an_edited_checkpoint_size_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("UPDATE {checkpoints} SET size = 250 WHERE n = 2")
    raw.close()
    assert tampered(url) == ("checkpoint_modified", None, 2)


def test_a_deleted_checkpoint_is_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("DELETE FROM {checkpoints} WHERE n = 3")
    raw.close()
    assert tampered(url) == ("checkpoint_deleted", None, 3)


def test_a_payload_removed_outside_retention_is_a_deletion(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("UPDATE {events} SET record = NULL, time = NULL, account = NULL, patients = NULL WHERE seq = 42")
    raw.close()
    assert tampered(url) == ("deleted", 42, None)


def test_a_consistent_rewrite_of_the_whole_ledger_is_caught_by_the_witness(
        built: tuple[str, Path], signing_key: SigningKey) -> None:
    url, witness = built
    raw = Raw(url)
    for table in ("events", "checkpoints", "meta", "nodes", "batches"):
        raw.run(f"DROP TABLE {{{table}}}")
    raw.close()
    # The intruder rebuilds the ledger with the same events but one account changed, with
    # new keys of their own: every hash and signature is consistent.
    events = make_events(N)
    events[137] = msgspec.structs.replace(events[137], account="user9")
    settings = LedgerSettings(checkpoint_events=100, checkpoint_seconds=3600)
    with Ledger.open(url, Keyring.generate(), signing_key=SigningKey.generate(), settings=settings) as ledger:
        for i in range(0, N, 100):
            ledger.append_batch(events[i:i + 100])
    assert verify(url).ok
    kind, _, _ = tampered(url, witness=witness)
    assert kind == "rewritten"
    # A trusted public key alone also refuses the intruder's signatures.
    assert tampered(url, public_keys=[signing_key.public_text])[0] == "checkpoint_modified"


def test_rows_added_at_the_tail_outside_sentinelle_are_named(built: tuple[str, Path]) -> None:
    url, _ = built
    raw = Raw(url)
    raw.run("INSERT INTO {events} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", *forged_row(N))
    raw.close()
    assert tampered(url)[:2] == ("inserted", N)


def test_verify_while_the_writer_appends(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    import threading

    settings = LedgerSettings(checkpoint_events=150, checkpoint_seconds=3600)
    events = make_events(2000)
    with Ledger.open(url, keyring, signing_key=signing_key, settings=settings) as ledger:
        ledger.append_batch(events[:100])
        done = threading.Event()

        def write() -> None:
            for i in range(100, 2000, 50):
                ledger.append_batch(events[i:i + 50])
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        reports = []
        while not done.is_set():
            reports.append(verify(url))
        writer.join()
    # Each verify saw one committed state: never a false truncation or insertion.
    assert reports and all(r.ok for r in reports), [r.summary() for r in reports if not r.ok][:1]


def test_the_keyring_pins_a_resealed_edit_to_its_event(built: tuple[str, Path], keyring: Keyring) -> None:
    url, _ = built
    raw = Raw(url)
    (blob,) = raw.run("SELECT record FROM {events} WHERE seq = 137")[0]
    rec = decode_record(bytes(blob))
    sealed = bytes([rec.sealed[0] ^ 1]) + rec.sealed[1:]
    edited = msgspec.msgpack.encode(msgspec.structs.replace(rec, sealed=sealed))
    raw.run("UPDATE {events} SET record = ?, leaf = ? WHERE seq = 137", edited, leaf_hash(edited))
    raw.close()
    assert tampered(url)[::2] == ("modified", 1)  # without keys: the checkpoint interval
    kind, seq, _ = tampered(url, keyring=keyring)  # with them: the event itself
    assert (kind, seq) == ("modified", 137)
