"""`verify`: re-check a whole ledger and name the first event or checkpoint that was tampered with.

Why this order of checks: each stored record carries its own sequence number and is
hashed into its leaf, so a naive edit, deletion, insertion or reordering made with SQL is
pinned to the exact event by local checks (record vs leaf hash, record vs columns, the
claimed vs actual position). An attacker who also recomputes hashes is caught by the
signed checkpoints (the recomputed root differs, pinned to the checkpoint interval), and
one who rewrites everything, checkpoints included, by the witness copy. The decryption
keys are not needed; given the keyring, verify also authenticates every sealed field.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sentinelle.ledger import merkle
from sentinelle.ledger.checkpoint import Checkpoint, parse_body, read_witness
from sentinelle.ledger.errors import LedgerError
from sentinelle.ledger.keys import Keyring, SigningKey, public_key_from_text, public_key_id
from sentinelle.ledger.records import KIND_RETENTION, LEDGER_SOURCE, Protector, Record, decode_record, key_probe
from sentinelle.ledger.store import EventRow, LedgerStore, open_store

__all__ = ["Problem", "VerifyReport", "verify"]

_CHUNK = 20_000
_MAX_PROBLEMS = 200


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing verify found wrong.

    `kind`: modified, deleted, inserted, reordered, truncated, checkpoint_modified,
    checkpoint_deleted, rewritten (differs from the witness), nodes (proof data damaged).
    """

    kind: str
    where: str
    detail: str
    seq: int | None = None
    event_id: str | None = None
    checkpoint: int | None = None
    position: float = 0.0  # where in the tree it is, to order problems

    def line(self) -> str:
        """One human sentence."""
        return f"{self.kind}: {self.where}: {self.detail}"


class VerifyReport(msgspec.Struct, frozen=True):
    """What verify checked and found; `first` is the earliest problem in ledger order."""

    url: str
    ok: bool
    events: int  # leaves found
    checkpoints: int
    root: str  # recomputed root of all leaves
    unsigned_tail: int  # leaves after the last checkpoint (not yet covered by a signature)
    pruned: int  # leaves whose payload a retention run removed
    witness_checkpoints: int
    decrypted: int  # sealed records authenticated with the keyring
    problems: list[Problem]
    first: Problem | None

    def summary(self) -> str:
        """Text for the CLI: a verdict line, the first problem, then the others."""
        head = (f"{'OK' if self.ok else 'TAMPERED'}: {self.events} events, {self.checkpoints} checkpoints, "
                f"root {self.root[:16]}…, {self.unsigned_tail} events after the last checkpoint, "
                f"{self.pruned} payloads removed by retention")
        if self.witness_checkpoints:
            head += f", {self.witness_checkpoints} witness checkpoints compared"
        if self.decrypted:
            head += f", {self.decrypted} sealed records authenticated"
        lines = [head]
        if self.first is not None:
            lines.append("first: " + self.first.line())
            lines.extend("  " + p.line() for p in self.problems if p is not self.first)
        return "\n".join(lines)


def _ev(seq: int, eid: str | None) -> str:
    return f"event seq {seq}" + (f" (id {eid})" if eid else "")


class _Verifier:
    def __init__(self, store: LedgerStore, keyring: Keyring | None, witness: list[Checkpoint] | None,
                 public_keys: dict[str, Ed25519PublicKey] | None) -> None:
        self.store = store
        self.protector = Protector(keyring) if keyring is not None else None
        self.witness = witness
        self.trusted = public_keys
        self.problems: list[Problem] = []
        self.decrypted = 0

    def add(self, p: Problem) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(p)

    # ---- checkpoints -------------------------------------------------------------------
    def keys(self, meta: dict[str, str]) -> dict[str, Ed25519PublicKey]:
        keys: dict[str, Ed25519PublicKey] = {}
        if self.trusted is not None:
            keys.update(self.trusted)
        else:
            for kid, text in json.loads(meta.get("signing_keys", "{}")).items():
                try:
                    keys[kid] = public_key_from_text(text)
                except LedgerError:
                    self.add(Problem("checkpoint_modified", "meta", f"signing key {kid} is malformed"))
        for cp in self.witness or []:
            if cp.public_key and cp.key not in keys:
                pk = public_key_from_text(cp.public_key)
                if public_key_id(pk) == cp.key:
                    keys[cp.key] = pk
        return keys

    def checkpoints(self, ledger_id: str, keys: dict[str, Ed25519PublicKey]) -> list[Checkpoint]:
        good: list[Checkpoint] = []
        prev: Checkpoint | None = None  # the last checkpoint that passed
        last_n = -1  # the last checkpoint row seen, good or not
        prev_bad = False
        for n, size, body, sig in self.store.checkpoints():
            where = f"checkpoint {n} (size {size})"
            reason = ""
            try:
                cp = parse_body(body, sig, where)
            except LedgerError as exc:
                reason = f"unreadable ({exc})"
            else:
                key = keys.get(cp.key)
                if (cp.n, cp.size) != (n, size):
                    reason = f"its columns differ from its signed body (n {cp.n}, size {cp.size})"
                elif key is None:
                    reason = f"signed by unknown key {cp.key}"
                elif not cp.signature_ok(key):
                    reason = "its signature does not verify"
                elif cp.ledger != ledger_id:
                    reason = f"belongs to ledger {cp.ledger}, not {ledger_id}"
            if reason:
                self.add(Problem("checkpoint_modified", where, reason, checkpoint=n, position=size))
                last_n, prev_bad = n, True
                continue
            if n != last_n + 1:
                missing = f"checkpoint {last_n + 1}" + ("" if n - last_n == 2 else f" to {n - 1}")
                self.add(Problem("checkpoint_deleted", missing, f"missing before checkpoint {n}",
                                 checkpoint=last_n + 1, position=prev.size if prev else 0))
            elif not prev_bad and cp.prev != (prev.hash() if prev else "0" * 64):
                # After a rejected checkpoint the chain break is its consequence, not news.
                self.add(Problem("checkpoint_modified", where, "does not chain to the checkpoint before it",
                                 checkpoint=n, position=size))
            if prev is not None and cp.size < prev.size:
                self.add(Problem("checkpoint_modified", where, f"covers fewer events than checkpoint {prev.n}",
                                 checkpoint=n, position=size))
            good.append(cp)
            prev, last_n, prev_bad = cp, n, False
        return good

    def compare_witness(self, ledger_id: str, stored: list[Checkpoint], leaves: int) -> None:
        assert self.witness is not None
        by_n = {cp.n: cp for cp in stored}
        ids = {cp.ledger for cp in self.witness}
        if ids and ledger_id not in ids:
            self.add(Problem("rewritten", "the whole ledger",
                             f"its id {ledger_id} is not the witness's ({', '.join(sorted(ids))}): it was replaced",
                             position=0))
        for w in self.witness:
            mine = by_n.get(w.n)
            where = f"checkpoint {w.n} (size {w.size})"
            if mine is None:
                kind = "truncated" if w.size > leaves or w.n > max(by_n, default=-1) else "checkpoint_deleted"
                self.add(Problem(kind, where, "is in the witness but not in the ledger",
                                 seq=leaves if w.size > leaves else None, checkpoint=w.n,
                                 position=min(w.size, leaves)))
            elif mine.body() != w.body() or mine.signature != w.signature:
                self.add(Problem("rewritten", where, f"differs from the witness copy (witness root {w.root[:16]}…, "
                                 f"ledger root {mine.root[:16]}…)", checkpoint=w.n, position=w.size))
            if w.size > leaves:
                self.add(Problem("truncated", f"event seq {leaves}",
                                 f"the witness saw {w.size} events in checkpoint {w.n}; the ledger holds {leaves}",
                                 seq=leaves, position=leaves))

    # ---- events ------------------------------------------------------------------------
    def claim(self, seq: int) -> int | None:
        rows = self.store.rows(seq, seq + 1)
        if not rows or rows[0][7] is None:
            return None
        try:
            return decode_record(rows[0][7]).seq
        except msgspec.DecodeError:
            return None

    def check_row(self, row: EventRow, shift: int, explained: set[int]) -> tuple[bytes, int, Record | None]:
        """Leaf hash to fold into the tree, the (maybe new) shift, and the decoded record."""
        seq, key, src, eid, t, account, patients, data, leaf = row
        if data is None:
            return leaf, shift, None
        recomputed = merkle.leaf_hash(data)
        try:
            rec = decode_record(data)
        except msgspec.DecodeError:
            self.add(Problem("modified", _ev(seq, eid), "its record bytes are not a ledger record", seq, eid,
                             position=seq))
            return recomputed, shift, None
        claimed = rec.seq
        if claimed != seq - shift and seq not in explained:
            shift = self.classify(seq, rec, shift, explained)
        if recomputed != leaf:
            self.add(Problem("modified", _ev(seq, rec.id), "its record does not match its stored leaf hash",
                             seq, rec.id, position=seq))
        cols = (src, eid, t, account, patients)
        expect = (rec.source, rec.id, rec.time, rec.account, " ".join(rec.patients))
        if cols != expect:
            names = [n for n, a, b in zip(("source", "event_id", "time", "account", "patients"), cols, expect,
                                          strict=True) if a != b]
            self.add(Problem("modified", _ev(seq, rec.id), f"column {', '.join(names)} differs from the signed record",
                             seq, rec.id, position=seq))
        elif key != key_probe(rec.source, rec.id, rec.time, 0) and key not in {
                key_probe(rec.source, rec.id, rec.time, p) for p in range(1, 4)}:
            self.add(Problem("modified", _ev(seq, rec.id), "its idempotency key does not match its id", seq,
                             rec.id, position=seq))
        if self.protector is not None and rec.key_id:
            try:
                refs, _ = self.protector.open(rec)
                self.decrypted += 1
                if self.protector.pseudonyms(refs) != rec.patients:
                    self.add(Problem("modified", _ev(seq, rec.id), "its pseudonyms do not match its sealed patients",
                                     seq, rec.id, position=seq))
            except LedgerError as exc:
                self.add(Problem("modified", _ev(seq, rec.id), str(exc), seq, rec.id, position=seq))
        return recomputed, shift, rec

    def classify(self, seq: int, rec: Record, shift: int, explained: set[int]) -> int:
        claimed = rec.seq
        if claimed > seq:
            if self.claim(claimed) == seq:
                explained.add(claimed)
                self.add(Problem("reordered", _ev(seq, rec.id), f"holds the event of seq {claimed}, and seq "
                                 f"{claimed} holds this one: the two were swapped", seq, rec.id, position=seq))
                return shift
            if self.claim(seq + 1) == seq:
                self.add(Problem("inserted", _ev(seq, rec.id), "was inserted: the next row is the event stored here "
                                 "before", seq, rec.id, position=seq))
                return shift + 1
            self.add(Problem("deleted", f"event seq {seq - shift}" + ("" if claimed - seq == 1 else
                             f" to {claimed - shift - 1}"),
                             f"deleted and the following events renumbered (seq {seq} holds the event of seq "
                             f"{claimed})", seq - shift, position=seq))
            return seq - claimed
        if self.claim(claimed) == seq:
            explained.add(claimed)
            self.add(Problem("reordered", _ev(seq, rec.id), f"swapped with seq {claimed}", seq, rec.id, position=seq))
            return shift
        first = claimed + shift
        intruder = self.store.rows(first, first + 1)
        intruder_id = intruder[0][3] if intruder else None
        self.add(Problem("inserted", _ev(first, intruder_id),
                         f"{seq - claimed - shift} event(s) inserted from here: seq {seq} holds the event of seq "
                         f"{claimed}", first, intruder_id, position=first))
        return seq - claimed


def verify(url: str, keyring: Keyring | None = None, witness: str | Path | None = None,
           public_keys: Iterable[str | SigningKey] | None = None) -> VerifyReport:
    """Re-check the ledger at `url`: every leaf, the tree, every checkpoint and its chain.

    `keyring` (optional) also authenticates every sealed field; `witness` names a witness
    file to compare the checkpoints with; `public_keys` (base64 or PEM public keys, or
    signing keys) replaces the keys recorded in the ledger, which an attacker who
    rewrote the database could have replaced too.
    """
    store = open_store(url, create=False)
    try:
        # One snapshot: a writer appending meanwhile must not look like a truncation.
        with store.snapshot():
            return _verify(store, url, keyring, witness, public_keys)
    finally:
        store.close()


def _verify(store: LedgerStore, url: str, keyring: Keyring | None, witness: str | Path | None,
            public_keys: Iterable[str | SigningKey] | None) -> VerifyReport:
    wit = read_witness(witness) if witness is not None else None
    trusted = None
    if public_keys is not None:
        trusted = {}
        for k in public_keys:
            pk = k.public if isinstance(k, SigningKey) else public_key_from_text(k)
            trusted[public_key_id(pk)] = pk
    v = _Verifier(store, keyring, wit, trusted)
    meta = store.read_meta()
    ledger_id = meta.get("ledger", "")
    if not ledger_id:
        raise LedgerError(f"{url}: not a Sentinelle ledger (no ledger id in its meta table)")
    cps = v.checkpoints(ledger_id, v.keys(meta))
    by_size: dict[int, list[Checkpoint]] = {}
    for cp in cps:
        by_size.setdefault(cp.size, []).append(cp)
    stored_nodes = {(lv, ix): h for lv, ix, h in store.all_nodes(merkle.NODE_LEVEL)}

    frontier = merkle.Frontier(0, (), merkle.NODE_LEVEL)
    end = store.tree_size()
    expected, shift = 0, 0
    explained: set[int] = set()
    pruned: list[list[int]] = []  # [lo, hi) ranges of leaves without payload
    justified: list[tuple[int, int, int]] = []  # (lo, hi, seq of the retention record)
    last_cp_size = 0
    for cp in by_size.get(0, ()):
        if cp.root != merkle.EMPTY_ROOT.hex():
            v.add(Problem("checkpoint_modified", f"checkpoint {cp.n} (size 0)", "its root is not the empty root",
                          checkpoint=cp.n, position=0))
    for lo in range(0, end, _CHUNK):
        for row in store.rows(lo, min(end, lo + _CHUNK)):
            seq = row[0]
            if seq != expected:
                v.add(Problem("deleted", f"event seq {expected}" + ("" if seq - expected == 1 else f" to {seq - 1}"),
                              f"missing (the next stored event is seq {seq}, id {row[3]})", expected,
                              position=expected))
                expected = seq
            expected += 1
            leaf, shift, rec = v.check_row(row, shift, explained)
            if row[7] is None:
                if pruned and pruned[-1][1] == seq:
                    pruned[-1][1] = seq + 1
                else:
                    pruned.append([seq, seq + 1])
            elif rec is not None and rec.kind == KIND_RETENTION and rec.source == LEDGER_SOURCE:
                try:
                    for a, b in json.loads(rec.note)["ranges"]:
                        justified.append((int(a), int(b), seq))
                except (ValueError, KeyError, TypeError):
                    v.add(Problem("modified", _ev(seq, rec.id), "its retention note is unreadable", seq, rec.id,
                                  position=seq))
            frontier.append(leaf)
            for level, idx, h in frontier.take_completed():
                got = stored_nodes.get((level, idx))
                if got is not None and got != h:
                    v.add(Problem("nodes", f"tree node level {level} index {idx}",
                                  "stored hash differs from the recomputed one (proofs would fail)",
                                  position=(idx + 1) << level))
            for cp in by_size.get(frontier.size, ()):
                last_cp_size = cp.size
                if frontier.root().hex() != cp.root:
                    lo_size = max((c.size for c in cps if c.size < cp.size), default=0)
                    v.add(Problem("modified", f"checkpoint {cp.n} (size {cp.size})",
                                  f"its signed root does not match the stored events: an event in seq {lo_size} "
                                  f"to {cp.size - 1} was changed, inserted or removed", checkpoint=cp.n,
                                  position=cp.size - 0.5))
    leaves = frontier.size
    # Payloads removed without a retention run that names them are deletions. A run can
    # only justify leaves before its own record.
    spans = sorted((a, min(b, rseq)) for a, b, rseq in justified if a < min(b, rseq))
    starts = [a for a, _ in spans]
    reach = list(itertools.accumulate((b for _, b in spans), max))
    for lo, hi in pruned:
        seq = lo
        while seq < hi:
            i = bisect.bisect_right(starts, seq) - 1
            if i < 0 or reach[i] <= seq:
                v.add(Problem("deleted", f"event seq {seq}", "its payload was removed but no retention run lists it",
                              seq, position=seq))
                break
            seq = reach[i]  # covered up to there; look again from the end of the cover
    for cp in cps:
        if cp.size > leaves:
            v.add(Problem("truncated", f"event seq {leaves}", f"the ledger holds {leaves} events but checkpoint "
                          f"{cp.n} was signed for {cp.size}: events from seq {leaves} on were removed",
                          leaves, checkpoint=cp.n, position=leaves))
            break
    recorded = int(meta.get("size", "0"))
    if recorded > leaves:
        v.add(Problem("truncated", f"event seq {leaves}", f"the last commit recorded {recorded} events, the ledger "
                      f"holds {leaves}", leaves, position=leaves))
    elif recorded < leaves:
        v.add(Problem("inserted", f"event seq {recorded}", f"{leaves - recorded} events were added outside "
                      f"Sentinelle after its last commit (it recorded {recorded})", recorded, position=recorded))
    if wit is not None:
        v.compare_witness(ledger_id, cps, leaves)
    order = {id(p): i for i, p in enumerate(v.problems)}
    first = min(v.problems, key=lambda p: (p.position, order[id(p)])) if v.problems else None
    return VerifyReport(
        url=url, ok=not v.problems, events=leaves, checkpoints=len(cps), root=frontier.root().hex(),
        unsigned_tail=leaves - last_cp_size if cps else leaves, pruned=sum(b - a for a, b in pruned),
        witness_checkpoints=len(wit or []), decrypted=v.decrypted, problems=v.problems, first=first,
    )
