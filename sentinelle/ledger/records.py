"""The stored record: what one ledger leaf holds, and how patient data is protected in it.

Why this shape: the leaf hash covers the *stored* bytes, so `verify` proves the ledger
intact without any decryption key. Patient references never appear in clear: each is
replaced by a keyed HMAC-SHA256 pseudonym (stable, so scope queries group a patient's
accesses) and the clear references plus the query text (which may name people) are
sealed with AES-256-GCM under a key id, so the keys can rotate. Accounts, clients and
addresses stay clear: investigators need them and they are the staff's, not patients'.

The record is a msgpack array (msgspec `array_like`), version first, so the encoding is
canonical and compact (~200 bytes for a typical read).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sentinelle.events import AccessEvent
from sentinelle.ledger.errors import LedgerError, LedgerKeyError
from sentinelle.ledger.keys import Keyring

__all__ = [
    "FORMAT_VERSION",
    "HOUR_MS",
    "KIND_EVENT",
    "KIND_NOTE",
    "KIND_RETENTION",
    "LEDGER_SOURCE",
    "Prepared",
    "Protector",
    "Record",
    "Sealer",
    "decode_record",
    "event_key",
    "event_key_of",
    "key_probe",
    "record_bytes",
    "record_tail",
    "seal_fields",
]

FORMAT_VERSION = 1
#: Source name of the ledger's own records (retention runs, notes); refused from outside.
LEDGER_SOURCE = "@ledger"
#: Record kinds: an access event, a retention run, a free note written by the ledger itself.
KIND_EVENT = 0
KIND_RETENTION = 1
KIND_NOTE = 2


class Record(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One stored leaf: an access event with patient data protected, or a ledger note.

    `seq` is the leaf index: a record that claims another position than the one it is
    stored at was moved, which lets `verify` tell a reorder or a deletion from an edit.
    """

    v: int
    seq: int
    kind: int
    source: str
    id: str
    time: int
    account: str
    action: str
    actor_kind: str
    outcome: str
    patients: tuple[str, ...]  # pseudonyms
    categories: int
    client: str
    address: str
    session: str
    auth: str
    purpose: str
    key_id: str  # "" when nothing is sealed
    nonce: bytes
    sealed: bytes
    note: str


_decoder = msgspec.msgpack.Decoder(Record)
_sealed_decoder = msgspec.msgpack.Decoder(tuple[tuple[str, ...], str])


def decode_record(data: bytes) -> Record:
    """Parse stored record bytes; raises `msgspec.DecodeError` when they are not a record."""
    return _decoder.decode(data)


HOUR_MS = 3_600_000


def event_key(source: str, event_id: str, time_ms: int) -> int:
    """The idempotency key of an event (probe 0 of `key_probe`)."""
    return key_probe(source, event_id, time_ms, 0)


def key_probe(source: str, event_id: str, time_ms: int, probe: int) -> int:
    """63-bit key: the hour of the event's time (23 bits) then 40 bits of BLAKE2b(source, id, probe).

    Why a hash and not the strings: the unique index on an 8-byte integer costs half as
    much per insert as one on the id strings (measured, docs/ledger.md). Why the hour in
    front: keys then grow with time, so the index is written at its right end and stays
    in cache however large the ledger gets, instead of one random page per insert. A
    re-sent event carries its original time, so it finds its key. Two different events
    whose keys collide take the next probe, as in open addressing.
    """
    data = f"{source}\x00{event_id}\x00{probe}".encode() if probe else f"{source}\x00{event_id}".encode()
    return event_key_of(data, time_ms)


class Protector:
    """Pseudonymises patient references and seals identity fields with the keyring."""

    def __init__(self, keyring: Keyring, cache_size: int = 1_000_000) -> None:
        self.keyring = keyring
        self._hmac_key = keyring.pseudonym_key
        self._aead = {kid: AESGCM(raw) for kid, raw in keyring.encryption_keys.items()}
        self.current = keyring.current
        self._current_aead = self._aead[self.current]
        # Patients repeat heavily in an audit trail (a ward's patients are read all day):
        # a per-process cache makes the HMAC almost free. Bounded by clearing, not LRU,
        # because a clear costs one miss per patient and keeps the hot path a dict lookup.
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def pseudonym(self, ref: str) -> str:
        """The stable pseudonym of a patient reference: "p." + 32 hex digits of HMAC-SHA256."""
        p = self._cache.get(ref)
        if p is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            p = "p." + hmac.new(self._hmac_key, ref.encode(), hashlib.sha256).hexdigest()[:32]
            self._cache[ref] = p
        return p

    def pseudonyms(self, refs: tuple[str, ...]) -> tuple[str, ...]:
        """Pseudonyms of several references, in order."""
        get = self._cache.get
        out = tuple(get(r) or self.pseudonym(r) for r in refs)
        return out

    def seal(self, seq: int, source: str, event_id: str, patients: tuple[str, ...],
             query: str) -> tuple[str, bytes, bytes]:
        """(key id, nonce, ciphertext) of the clear patient references and query text.

        The nonce is the sequence number (unique in the ledger) and 4 random bytes (so a
        sequence number reused after a crash before commit still gets a fresh nonce).
        The associated data binds the ciphertext to its (source, id).
        """
        nonce = seq.to_bytes(8, "big") + os.urandom(4)
        plain = msgspec.msgpack.encode((patients, query))
        return self.current, nonce, self._current_aead.encrypt(nonce, plain, f"{source}\x00{event_id}".encode())

    def open(self, record: Record) -> tuple[tuple[str, ...], str]:
        """The clear (patient references, query text) of a record; raises when a key is missing or wrong."""
        if not record.key_id:
            return (), ""
        aead = self._aead.get(record.key_id)
        if aead is None:
            raise LedgerKeyError(f"ledger seq {record.seq}: sealed with key {record.key_id!r}, absent from the keyring")
        try:
            plain = aead.decrypt(record.nonce, record.sealed, f"{record.source}\x00{record.id}".encode())
        except InvalidTag as exc:
            raise LedgerError(f"ledger seq {record.seq} (event {record.id}): "
                              "the sealed fields fail authentication") from exc
        return _sealed_decoder.decode(plain)

    def reveal(self, record: Record) -> AccessEvent:
        """The access event of a record, with clear patient references and query."""
        patients, query = self.open(record)
        return to_event(record, patients, query)


def to_event(record: Record, patients: tuple[str, ...] | None = None, query: str = "") -> AccessEvent:
    """An `AccessEvent` from a record; without `patients`, the pseudonyms stand in for them."""
    return AccessEvent(
        id=record.id,
        time=record.time,
        account=record.account,
        action=record.action,
        actor_kind=record.actor_kind,
        outcome=record.outcome,
        patients=record.patients if patients is None else patients,
        categories=record.categories,
        client=record.client,
        address=record.address,
        session=record.session,
        source=record.source,
        query=query,
        auth=record.auth,
        purpose=record.purpose,
    )


#: What a `Sealer` prepares for one event: its idempotency key (probe 0), its pseudonyms
#: as stored in the `patients` column, and the msgpack encoding of the record's fields
#: after `seq` (everything but the array header, the version and the seq).
Prepared = tuple[int, str, bytes]

#: msgpack array16 header of a `Record` (21 fields), then the format version (a fixint).
_RECORD_HEAD = b"\xdc\x00\x15" + msgspec.msgpack.encode(FORMAT_VERSION)
_encode = msgspec.msgpack.encode


def record_bytes(seq: int, tail: bytes) -> bytes:
    """The stored bytes of a record from its seq and a prepared tail (same as encoding a `Record`)."""
    return _RECORD_HEAD + _encode(seq) + tail


def event_key_of(ident: bytes, time_ms: int) -> int:
    """The key of `key_probe` from its hashed bytes (`source NUL id` for probe 0, which the hot paths have)."""
    return ((time_ms // HOUR_MS) & 0x7FFFFF if time_ms > 0 else 0) << 40 | int.from_bytes(
        hashlib.blake2b(ident, digest_size=5).digest(), "big")


def seal_fields(protector: Protector, e: AccessEvent, ident: bytes, nonce: bytes
                ) -> tuple[tuple[str, ...], str, bytes, bytes]:
    """(pseudonyms, key id, nonce, ciphertext) of an event's patients and query; all empty without any.

    The associated data `ident` (`source NUL id`) binds the ciphertext to its record.
    """
    pats = e.patients
    query = e.query
    if not pats and not query:
        return (), "", b"", b""
    get = protector._cache.get
    pseud = tuple([get(r) or protector.pseudonym(r) for r in pats])
    return pseud, protector.current, nonce, protector._current_aead.encrypt(nonce, _encode((pats, query)), ident)


def record_tail(e: AccessEvent, sealed: tuple[tuple[str, ...], str, bytes, bytes]) -> bytes:
    """The encoded fields of an event's record after `seq` (see `record_bytes`)."""
    pseud, key_id, nonce, box = sealed
    # The 19 fields after seq, as an array16 (3-byte header) whose header is cut.
    return _encode((KIND_EVENT, e.source, e.id, e.time, e.account, e.action, e.actor_kind, e.outcome, pseud,
                    e.categories, e.client, e.address, e.session, e.auth, e.purpose, key_id, nonce, box, ""))[3:]


class Sealer:
    """Prepares events' records outside the ledger writer: pseudonyms, sealing, encoding.

    Why: the writer is one thread holding the sequence; whatever does not depend on the
    seq (HMAC pseudonyms, AES-GCM sealing, the idempotency key, the record's encoding)
    can run in the service's decoding workers, in parallel, and the writer only adds the
    seq and hashes the leaf. The records are byte for byte what the writer would build,
    except the nonce: the writer's is seq + 4 random bytes; a sealer's is 6 random bytes
    drawn when it starts (high bit set, so it never equals a writer nonce, whose first
    byte is 0 below 2^56 events) then a 6-byte counter. Nonces stay unique under a key
    as long as two sealers do not draw the same 47 bits (about one chance in 2^47 / n^2
    for n sealers started under one key).
    """

    def __init__(self, keyring: Keyring) -> None:
        self.protector = Protector(keyring)
        self.key_id = keyring.current
        prefix = bytearray(os.urandom(6))
        prefix[0] |= 0x80
        self._prefix = bytes(prefix)
        self._counter = 0

    def prepare(self, events: list[AccessEvent]) -> list[Prepared]:
        """One `Prepared` per event, in order (events must have an id)."""
        protect = self.protector
        prefix = self._prefix
        counter = self._counter
        out: list[Prepared] = []
        for e in events:
            ident = (e.source + "\x00" + e.id).encode()
            counter += 1
            sealed = seal_fields(protect, e, ident, prefix + counter.to_bytes(6, "big"))
            out.append((event_key_of(ident, e.time), " ".join(sealed[0]), record_tail(e, sealed)))
        self._counter = counter
        return out
