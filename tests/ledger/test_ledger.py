"""The ledger writer and reader, in both backends: idempotent appends, proofs, reads, hooks, retention."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import msgspec
import pytest
from ledger_factory import T0, Raw, make_events

from sentinelle.errors import RecordError
from sentinelle.events import AccessEvent
from sentinelle.ledger import (
    Appended,
    Keyring,
    Ledger,
    LedgerError,
    LedgerLockedError,
    LedgerReader,
    LedgerSettings,
    SigningKey,
    verify,
)
from sentinelle.ledger.records import (
    FORMAT_VERSION,
    Prepared,
    Sealer,
    decode_record,
    event_key,
    key_probe,
    record_bytes,
)

DAY = 86_400_000


def open_ledger(url: str, keyring: Keyring, key: SigningKey, **settings: object) -> Ledger:
    s = LedgerSettings(**{"checkpoint_events": 100, "checkpoint_seconds": 3600.0, **settings})  # type: ignore[arg-type]
    return Ledger.open(url, keyring, signing_key=key, settings=s)


def test_appends_are_idempotent_by_source_and_id(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    events = make_events(250)
    with open_ledger(url, keyring, signing_key) as ledger:
        first = ledger.append_batch(events[:200])
        assert first == [Appended(i, True) for i in range(200)]
        # A re-send after a timeout overlaps the stored events: only the new ones are stored.
        again = ledger.append_batch(events[150:250])
        assert again == [Appended(i, False) for i in range(150, 200)] + [Appended(i, True) for i in range(200, 250)]
        # Duplicates inside one batch, and the same id from another source (a different event).
        other = msgspec.structs.replace(events[0], source="lab")
        mixed = ledger.append_batch([events[3], other, other, events[249]])
        assert mixed == [Appended(3, False), Appended(250, True), Appended(250, False), Appended(249, False)]
        assert ledger.size == 251
    assert verify(url).ok


def test_resends_of_recent_and_of_old_events_in_one_batch(url: str, keyring: Keyring,
                                                           signing_key: SigningKey) -> None:
    # Recent keys are found in memory, older ones only by the unique index (after a reopen
    # the memory is empty): both kinds, mixed with new events, come back as duplicates.
    events = make_events(20)
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append_batch(events[:10])
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append_batch(events[10:15])
        assert ledger.append_batch([events[13], events[15]]) == [Appended(13, False), Appended(15, True)]
        mixed = ledger.append_batch([events[12], events[3], events[16], events[16], events[17]])
        assert mixed == [Appended(12, False), Appended(3, False), Appended(16, True), Appended(16, False),
                         Appended(17, True)]
        assert ledger.size == 18
    assert verify(url).ok


def test_batches_of_any_size_are_stored_whole_and_in_order(url: str, keyring: Keyring,
                                                          signing_key: SigningKey) -> None:
    # SQLite writes a batch as multi-row statements of 256, 128, ... rows: sizes around
    # those cuts, and stored events re-sent in the middle of a large batch (found only by
    # the unique index after a reopen), must all come out as if written row by row.
    events = make_events(1700)
    sizes = [1, 255, 256, 257, 511, 120]
    with open_ledger(url, keyring, signing_key) as ledger:
        start = 0
        for n in sizes:
            assert ledger.append_batch(events[start:start + n]) == [Appended(i, True) for i in range(start, start + n)]
            start += n
    with open_ledger(url, keyring, signing_key) as ledger:
        batch = events[1400:1550] + events[1000:1100] + events[1550:1700]
        expected = ([Appended(i, True) for i in range(1400, 1550)] + [Appended(i, False) for i in range(1000, 1100)]
                    + [Appended(i, True) for i in range(1550, 1700)])
        assert ledger.append_batch(batch) == expected
        assert ledger.size == 1700
    with LedgerReader.open(url, keyring) as reader:
        assert [(s.seq, s.event.id) for s in reader.events()] == [(i, f"e{i}") for i in range(1700)]
    assert verify(url).ok


def test_single_writer_and_concurrent_threads(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    events = make_events(400)
    with open_ledger(url, keyring, signing_key) as ledger:
        with pytest.raises(LedgerLockedError):
            open_ledger(url, keyring, signing_key)
        results: list[list[Appended]] = []

        def feed(offset: int) -> None:
            # Four threads send overlapping slices, as retrying senders would.
            for i in range(0, 250, 25):
                results.append(ledger.append_batch(events[offset + i:offset + i + 50]))

        threads = [threading.Thread(target=feed, args=(k * 50,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        new = [a.seq for batch in results for a in batch if a.new]
        assert sorted(new) == list(range(400)), "each event stored exactly once, seqs contiguous"
        ids = [e.event.id for e in ledger.events(reveal=False)]
        assert len(ids) == len(set(ids)) == 400
    assert verify(url).ok


def test_reopen_continues_the_same_tree(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    events = make_events(700)
    with open_ledger(url, keyring, signing_key, checkpoint_events=1000) as ledger:
        ledger.append_batch(events[:333])
        root = ledger.frontier.root()
    with open_ledger(url, keyring, signing_key, checkpoint_events=1000) as ledger:
        assert ledger.size == 333 and ledger.frontier.root() == root == ledger.root()
        assert ledger.append_batch(events[300:700])[33] == Appended(333, True)
        assert ledger.root() == ledger.frontier.root()
    rep = verify(url)
    assert rep.ok and rep.events == 700


def test_bad_events_are_refused_before_anything_is_written(url: str, keyring: Keyring,
                                                            signing_key: SigningKey) -> None:
    with open_ledger(url, keyring, signing_key) as ledger:
        with pytest.raises(RecordError, match="batch item 1: the event has no id"):
            ledger.append_batch([make_events(1)[0], AccessEvent(id="", time=T0, account="a", action="read")])
        with pytest.raises(RecordError, match="reserved"):
            ledger.append(AccessEvent(id="x", time=T0, account="a", action="read", source="@ledger"))
        assert ledger.size == 0 and ledger.stored_size() == 0


def test_inclusion_and_consistency_proofs_check_against_signed_checkpoints(
        url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    events = make_events(1300)
    with open_ledger(url, keyring, signing_key, checkpoint_events=400) as ledger:
        for i in range(0, 1300, 100):
            ledger.append_batch(events[i:i + 100])
        cps = ledger.checkpoints()
        assert [c.size for c in cps] == [400, 800, 1200]
        for seq in (0, 255, 256, 399, 777, 1199):
            proof = ledger.inclusion_proof(seq)
            assert proof.size == 1200 and proof.root == cps[-1].root and proof.verify()
            assert not proof.verify(cps[0].root)
        by_id = ledger.inclusion_proof(event_id="e1250", source="dpi")
        assert by_id.seq == 1250 and by_id.size == 1300 and by_id.verify(ledger.root().hex())
        for a in cps:
            for b in cps:
                if a.size <= b.size:
                    cproof = ledger.consistency_proof(a.size, b.size)
                    assert (cproof.first_root, cproof.second_root) == (a.root, b.root) and cproof.verify()
        with pytest.raises(LedgerError, match="not in the ledger"):
            ledger.inclusion_proof(event_id="nope")


def test_proofs_without_stored_nodes_give_the_same_answers(url: str, keyring: Keyring,
                                                            signing_key: SigningKey) -> None:
    events = make_events(600)
    with open_ledger(url, keyring, signing_key, merkle_nodes=False) as ledger:
        ledger.append_batch(events)
        proof = ledger.inclusion_proof(300)
        assert proof.verify(ledger.checkpoints()[-1].root)
        assert ledger.consistency_proof(257, 600).verify()
    raw = Raw(url)
    assert raw.run("SELECT COUNT(*) FROM {nodes}")[0][0] == 0
    raw.close()


def test_reader_filters_and_reveals_with_the_keyring(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    events = make_events(300)
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append_batch(events)
    expected = [e for e in events if e.account == "user3" and T0 + 50_000 <= e.time < T0 + 250_000]
    with LedgerReader.open(url, keyring) as reader:
        got = list(reader.events(start=T0 + 50_000, end=T0 + 250_000, account="user3"))
        assert [s.event for s in got] == expected
        assert reader.count(account="user3") == sum(1 for e in events if e.account == "user3")
        touching = [s.event.id for s in reader.events(patient="Patient/7")]
        assert touching == [e.id for e in events if e.patients == ("Patient/7",)]
        pseudonym = reader.pseudonym("Patient/7")
    with LedgerReader.open(url) as blind:
        # Without the keyring: pseudonyms instead of patients, no query text.
        got = list(blind.events(patient=pseudonym))
        assert [s.event.id for s in got] == touching
        assert all(s.event.patients == (pseudonym,) and not s.revealed for s in got)
        assert all(s.event.query == "" for s in blind.events())
        with pytest.raises(LedgerError, match="keyring"):
            list(blind.events(patient="Patient/7"))


def test_on_append_feeds_only_new_events_after_commit(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    events = make_events(120)
    seen: list[tuple[int, str]] = []
    with open_ledger(url, keyring, signing_key) as ledger:

        def hook(batch: object) -> None:
            # The events are durable when the hook runs: a reader on the side sees them.
            seen.extend((seq, e.id) for seq, e in batch)  # type: ignore[attr-defined]
            assert ledger.stored_size() >= seen[-1][0] + 1

        remove = ledger.on_append(hook)
        ledger.append_batch(events[:100])
        ledger.append_batch(events[90:120])

        def broken(batch: object) -> None:
            raise ValueError("Patient/1 is not welcome here")

        ledger.on_append(broken)
        ledger.append_batch(make_events(5, start=500))
        assert ledger.hook_errors == 1 and ledger.size == 125
        remove()
        ledger.append_batch(make_events(5, start=600))
    assert seen == [(i, f"e{i}") for i in range(120)] + [(120 + i, f"e{500 + i}") for i in range(5)]


def test_retention_removes_payloads_and_the_ledger_still_verifies(
        url: str, keyring: Keyring, signing_key: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sentinelle")
    now = [(T0 + 400 * DAY) / 1000]
    old = make_events(150)  # times T0 .. T0 + 150 s
    recent = [msgspec.structs.replace(e, time=e.time + 399 * DAY) for e in make_events(50, start=150)]
    s = LedgerSettings(checkpoint_events=100, checkpoint_seconds=3600, retention_days=365)
    with Ledger.open(url, keyring, signing_key=signing_key, settings=s, clock=lambda: now[0]) as ledger:
        ledger.append_batch(old)
        ledger.append_batch(recent)
        before = ledger.inclusion_proof(42)
        first = ledger.apply_retention(max_events=100)
        result = ledger.apply_retention()
        assert (first.removed, first.ranges, first.seq) == (100, [(0, 100)], 200)
        assert (result.removed, result.ranges, result.seq) == (50, [(100, 150)], 201)
        assert ledger.apply_retention().removed == 0
        # Each retention run is a leaf and is followed by a signed checkpoint.
        assert ledger.checkpoints()[-1].note == "retention" and ledger.checkpoints()[-1].size == 203
        assert [s.event.id for s in ledger.events()] == [e.id for e in recent]
        # Old proofs still hold, new ones are made from the kept leaf hashes.
        assert before.verify() and ledger.inclusion_proof(42).verify()
        records = dict(ledger.records(0, 203))
        assert records[0] is None and records[200] is not None and records[200].kind == 1
        # An event re-sent after retention is still recognised.
        assert ledger.append(old[0]) == Appended(0, False)
    rep = verify(url, keyring=keyring)
    assert rep.ok and rep.pruned == 150, rep.summary()
    assert "Patient/" not in caplog.text


def test_patient_data_is_not_stored_in_clear(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    events = make_events(100)
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append_batch(events)
    raw = Raw(url)
    dump = repr(raw.run("SELECT * FROM {events}")) + repr(raw.run("SELECT * FROM {meta}"))
    raw.close()
    assert "Patient/" not in dump and "DUPONTEL" not in dump
    assert "user3" in dump  # accounts stay clear for investigators


def test_key_rotation_keeps_old_records_readable(url: str, keyring: Keyring, signing_key: SigningKey,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    keyring.save(path)
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append_batch(make_events(50))
    keyring.rotate()
    keyring.save(path)
    new_signer = SigningKey.generate()  # the signing key may rotate too
    from sentinelle.ledger import load_keyring

    ring = load_keyring(path)
    assert ring.current == "k2"
    with open_ledger(url, ring, new_signer) as ledger:
        ledger.append_batch(make_events(50, start=50))
        kids = {rec.key_id for _, rec in ledger.records() if rec is not None and rec.key_id}
        assert kids == {"k1", "k2"}
        assert [s.event.id for s in ledger.events()] == [f"e{i}" for i in range(100)]
    assert verify(url, keyring=ring).ok
    # A keyring that lost k1 cannot read the old records.
    lost = Keyring(ring.pseudonym_key, {"k2": ring.encryption_keys["k2"]}, "k2")
    assert not verify(url, keyring=lost).ok
    with LedgerReader.open(url, lost) as reader, pytest.raises(LedgerError, match="k1"):
        list(reader.events())


def test_hash_collisions_take_the_next_probe(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    a, b = make_events(2)
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append(a)
    # Make event a own the key that b hashes to, as a 64-bit collision would.
    raw = Raw(url)
    raw.run("UPDATE {events} SET key = ? WHERE seq = 0", event_key(b.source, b.id, b.time))
    raw.close()
    with open_ledger(url, keyring, signing_key) as ledger:
        assert ledger.append(b) == Appended(1, True)
        assert ledger.append(b) == Appended(1, False)
    raw = Raw(url)
    keys = dict(raw.run("SELECT seq, key FROM {events} WHERE seq <= 1"))
    raw.close()
    assert keys[1] == key_probe(b.source, b.id, b.time, 1)


def test_checkpoints_follow_time_as_well_as_counts(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    now = [1_000_000.0]
    s = LedgerSettings(checkpoint_events=1000, checkpoint_seconds=60)
    with Ledger.open(url, keyring, signing_key=signing_key, settings=s, clock=lambda: now[0]) as ledger:
        ledger.append_batch(make_events(10))
        assert ledger.maybe_checkpoint() is None and ledger.checkpoints() == []
        now[0] += 61
        cp = ledger.maybe_checkpoint()
        assert cp is not None and cp.size == 10 and cp.time == 1_000_061_000
        assert ledger.maybe_checkpoint() is None  # nothing new since
        now[0] += 61
        ledger.append_batch(make_events(5, start=10))  # due by time: signed with the batch
        assert [c.size for c in ledger.checkpoints()] == [10, 15]


def test_a_ledger_that_lost_rows_is_not_written_to(url: str, keyring: Keyring, signing_key: SigningKey) -> None:
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append_batch(make_events(30))
    raw = Raw(url)
    raw.run("DELETE FROM {events} WHERE seq >= 20")
    raw.close()
    with pytest.raises(LedgerError, match="holds 20 events but its last commit recorded 30"):
        open_ledger(url, keyring, signing_key)


def test_readers_do_not_create_a_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    with pytest.raises(LedgerError, match="no ledger file"):
        verify(url)
    with pytest.raises(LedgerError, match="no ledger file"):
        LedgerReader.open(url)
    assert not (tmp_path / "absent.db").exists()


def test_records_prepared_by_a_sealer_are_those_the_writer_makes(url: str, keyring: Keyring,
                                                                  signing_key: SigningKey) -> None:
    """A Sealer (the decoding workers') prepares records the writer only numbers and hashes."""
    events = make_events(300)
    sealer = Sealer(keyring)
    with open_ledger(url, keyring, signing_key) as ledger:
        ledger.append_batch(events[:100])  # the writer's own path
        prepared: list[Prepared | None] = list(sealer.prepare(events[100:250]))
        prepared[7] = None  # an event without a prepared record, in the same batch
        assert all(a.new for a in ledger.append_batch(events[100:250], prepared, sealer.key_id))
        # Re-sends through the prepared path are found, recent or not, and new ones stored.
        again = ledger.append_batch(events[240:260], sealer.prepare(events[240:260]), sealer.key_id)
        assert again == [Appended(i, False) for i in range(240, 250)] + [Appended(i, True) for i in range(250, 260)]
        old = ledger.append_batch([events[5], events[260]], sealer.prepare([events[5], events[260]]),
                                  sealer.key_id)
        assert old == [Appended(5, False), Appended(260, True)]
        # Prepared under another key (rotated since): ignored, the writer seals itself.
        stale = ledger.append_batch(events[261:300], sealer.prepare(events[261:300]), "an-old-key")
        assert all(a.new for a in stale) and ledger.size == 300
    assert verify(url).ok
    with LedgerReader.open(url, keyring) as reader:
        stored = list(reader.events())
        assert [s.event for s in stored] == events
        # Same pseudonyms either way; sealer nonces never look like the writer's (seq first).
        by_patient = {e.patients: s.pseudonyms for e, s in zip(events[:100], stored[:100], strict=True)}
        assert all(by_patient.get(e.patients, s.pseudonyms) == s.pseudonyms
                   for e, s in zip(events[100:250], stored[100:250], strict=True))
        records = dict(reader.records(0, 300))
        assert records[150] is not None and records[150].nonce[0] & 0x80
        assert records[50] is not None and not records[50].nonce[0] & 0x80
        assert records[107] is not None and not records[107].nonce[0] & 0x80  # the one left to the writer


def test_record_bytes_of_a_prepared_tail_equal_the_encoded_record(keyring: Keyring) -> None:
    event = make_events(1)[0]
    ((key, patients, tail),) = Sealer(keyring).prepare([event])
    record = decode_record(record_bytes(123_456_789, tail))
    assert record.seq == 123_456_789 and record.v == FORMAT_VERSION and record.id == event.id
    assert msgspec.msgpack.encode(record) == record_bytes(123_456_789, tail)
    assert key == event_key(event.source, event.id, event.time) and patients == " ".join(record.patients)
