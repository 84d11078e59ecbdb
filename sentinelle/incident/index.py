"""The scope index: a columnar side index of the ledger, kept at append time.

Why a side index: the ledger stores each event as one sealed msgpack record in a SQLite
row; answering "which patients did this account read, with which categories, between
these dates" from it means decoding every record (about 2 µs each: 40 s for 20 million
events). The scope index keeps, per (event, patient) pair, the few fields a scope needs
as fixed-width columns in plain files (`<name>.bin`, little-endian), so a scope is a
handful of vectorised comparisons over memory-mapped arrays (numpy), about 20 ms per
column per 20 million rows, and an aggregation over the selected rows only.

- Strings (accounts, clients, addresses, actions...) are dictionary-encoded: small
  integers in the columns, the values in `dict-<name>.jsonl`. Address selectors with a
  CIDR block are resolved against the dictionary, never against the rows.
- Patients are the ledger's pseudonyms (HMAC-SHA256 of the reference, same key), as a
  64-bit integer `pk` (the first 16 hex digits). The clear references are sealed in
  `vault-<n>.bin` (AES-256-GCM with the ledger's current vault key), one sealed blob per
  flush, so revealing the patients of a scope costs one decryption per segment rather
  than one per patient.
- `blocks.bin` holds (first row, rows, min time, max time) per block of 65,536 rows, so a
  time-bounded selector reads only the blocks of its window.
- Writes are append-only; `meta.json`, replaced atomically after the data files are
  written, holds the committed row count and the ledger sequence number up to which
  the index is complete (`hw`). Readers map only committed rows, from any process, while
  the writer appends. Rows written after the last commit (a crash) are cut on the next
  open. The index is derived data: `catch_up` rebuilds it from the ledger.
- The index lags the ledger by at most one unflushed buffer; `view(reader)` reads the
  ledger's events after `hw` into memory, so a scope always covers the whole ledger.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sentinelle.errors import ConfigError, SentinelleError
from sentinelle.events import AccessEvent
from sentinelle.ledger import Keyring, Ledger, LedgerReader
from sentinelle.ledger.records import Protector

__all__ = [
    "BLOCK_ROWS",
    "COLUMNS",
    "Dictionary",
    "IndexPart",
    "IndexView",
    "ScopeIndex",
    "ScopeIndexError",
    "pk_of_pseudonym",
]

log = logging.getLogger("sentinelle.incident")

FORMAT = 1
BLOCK_ROWS = 65_536

#: (name, numpy dtype) of every column, in file order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "<i8"),
    ("time", "<i8"),
    ("pk", "<i8"),
    ("account", "<i4"),
    ("client", "<i4"),
    ("address", "<i4"),
    ("action", "<i2"),
    ("outcome", "<i2"),
    ("actor_kind", "<i2"),
    ("auth", "<i2"),
    ("categories", "<i2"),
)
#: Columns whose values are dictionary codes.
DICT_COLUMNS = ("account", "client", "address", "action", "outcome", "actor_kind", "auth")
_DTYPES = dict(COLUMNS)
_VAULT_AD = b"sentinelle-scope-index-vault:"


class ScopeIndexError(SentinelleError):
    """The scope index cannot be opened, written or read."""


def pk_of_pseudonym(pseudonym: str) -> int:
    """The 64-bit key of a ledger pseudonym (`p.` + 32 hex digits): its first 16 hex digits, signed.

    0 is reserved for "no patient" (an event without patients, such as a login).

    >>> pk_of_pseudonym("p.0000000000000001" + "0" * 16)
    1
    """
    v = int(pseudonym[2:18], 16)
    if v >= 1 << 63:
        v -= 1 << 64
    return v or 1


class Dictionary:
    """The values of one dictionary-encoded column: code <-> string."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: list[str] = list(values)
        self.codes: dict[str, int] = {v: i for i, v in enumerate(self.values)}

    def code(self, value: str) -> int:
        """The code of `value`, adding it when new."""
        c = self.codes.get(value)
        if c is None:
            c = len(self.values)
            self.values.append(value)
            self.codes[value] = c
        return c

    def find(self, value: str) -> int:
        """The code of `value`, or -1 when the column never held it."""
        return self.codes.get(value, -1)

    def copy(self) -> Dictionary:
        """An independent copy (a reader extends it with the ledger's tail)."""
        return Dictionary(self.values)


class IndexPart:
    """A run of rows: memory-mapped committed rows, or the ledger's tail in memory."""

    def __init__(self, cols: dict[str, np.ndarray[Any, Any]], blocks: np.ndarray[Any, Any]) -> None:
        self.cols = cols
        self.blocks = blocks  # (n, 4): first row, rows, min time, max time
        self.rows = len(cols["seq"])

    def ranges(self, start: int | None, end: int | None) -> list[tuple[int, int]]:
        """Row ranges whose blocks may hold times in [start, end)."""
        if self.rows == 0:
            return []
        if (start is None and end is None) or len(self.blocks) == 0:
            return [(0, self.rows)]
        b = self.blocks
        keep = np.ones(len(b), dtype=bool)
        if start is not None:
            keep &= b[:, 3] >= start
        if end is not None:
            keep &= b[:, 2] < end
        out: list[tuple[int, int]] = []
        for first, n in b[keep][:, :2].tolist():
            if out and out[-1][1] == first:
                out[-1] = (out[-1][0], first + n)
            else:
                out.append((first, first + n))
        covered = int(b[-1, 0] + b[-1, 1])
        if covered < self.rows:  # rows not yet in a block (never for committed parts)
            out.append((covered, self.rows))
        return out


def _blocks_of(times: np.ndarray[Any, Any], first_row: int) -> np.ndarray[Any, Any]:
    out = []
    for a in range(0, len(times), BLOCK_ROWS):
        t = times[a:a + BLOCK_ROWS]
        out.append((first_row + a, len(t), int(t.min()), int(t.max())))
    return np.array(out, dtype="<i8").reshape(-1, 4)


class IndexView:
    """A consistent read of the index (plus the ledger's tail): parts, dictionaries, vault."""

    def __init__(self, parts: list[IndexPart], dicts: dict[str, Dictionary], vault: Callable[[], list[tuple[
            np.ndarray[Any, Any], list[str]]]], protector: Protector | None, hw: int) -> None:
        self.parts = parts
        self.dicts = dicts
        self._vault = vault
        self._protector = protector
        self.hw = hw
        self.rows = sum(p.rows for p in parts)

    def pk(self, ref: str) -> int:
        """The key of a clear patient reference (needs the keyring)."""
        if self._protector is None:
            raise ScopeIndexError("a patient reference can be looked up only with the ledger's keyring")
        return pk_of_pseudonym(self._protector.pseudonym(ref))

    def pseudonym(self, ref: str) -> str:
        """The ledger pseudonym of a clear patient reference (needs the keyring)."""
        if self._protector is None:
            raise ScopeIndexError("a patient reference can be looked up only with the ledger's keyring")
        return self._protector.pseudonym(ref)

    def codes(self, column: str, values: Iterable[str]) -> np.ndarray[Any, Any]:
        """Codes of the given values in a dictionary column (CIDR blocks allowed for addresses)."""
        d = self.dicts[column]
        out: set[int] = set()
        for v in values:
            c = d.find(v)
            if c >= 0:
                out.add(c)
            elif column == "address" and "/" in v:
                out.update(_cidr_codes(d, v))
        return np.array(sorted(out), dtype="<i4")

    def reveal(self, pks: np.ndarray[Any, Any]) -> list[str | None]:
        """Clear references of the given keys (None when the vault lacks one); needs the keyring."""
        if self._protector is None:
            raise ScopeIndexError("revealing patients needs the ledger's keyring")
        want = np.asarray(pks, dtype="<i8")
        if len(want) == 0:
            return []
        found = np.full(len(want), None, dtype=object)
        for seg_pks, refs in self._vault():
            if len(seg_pks) == 0:
                continue
            # Segments are written sorted by key (the ledger tail's may not be).
            if len(seg_pks) > 1 and bool(np.any(seg_pks[1:] < seg_pks[:-1])):
                order = np.argsort(seg_pks)
                seg_pks = seg_pks[order]
                refs = [refs[i] for i in order.tolist()]
            pos = np.minimum(np.searchsorted(seg_pks, want), len(seg_pks) - 1)
            hit = seg_pks[pos] == want
            if hit.any():
                found[hit] = np.asarray(refs, dtype=object)[pos[hit]]
        out: list[str | None] = found.tolist()
        return out


def _cidr_codes(d: Dictionary, cidr: str) -> list[int]:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ConfigError(f"address selector {cidr!r}: not an address or CIDR block ({exc})") from exc
    out = []
    for i, v in enumerate(d.values):
        try:
            if ipaddress.ip_address(v) in net:
                out.append(i)
        except ValueError:
            continue
    return out


class _Meta(msgspec.Struct):
    format: int
    rows: int
    hw: int
    dicts: dict[str, int]
    vault: int
    blocks: int
    ledger: str = ""
    key_check: str = ""


class ScopeIndex:
    """Writer and reader of one scope index folder; see the module docstring.

    One writer per folder (an exclusive `flock`); readers anywhere. The writer buffers
    rows and commits every `flush_rows` rows, at `flush()` and at `close()`.
    """

    def __init__(self, path: str | Path, keyring: Keyring | None = None, *, write: bool = False,
                 flush_rows: int = 262_144) -> None:
        self.path = Path(path)
        self.keyring = keyring
        self.write = write
        self.flush_rows = flush_rows
        self.protector = Protector(keyring) if keyring is not None else None
        self._lock: IO[bytes] | None = None
        if write:
            if keyring is None:
                raise ScopeIndexError(f"{self.path}: writing a scope index needs the ledger's keyring")
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = open(self.path / "lock", "ab")  # noqa: SIM115 - held for the writer's life
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                lock.close()
                raise ScopeIndexError(f"{self.path}: another process writes this scope index") from exc
            self._lock = lock
        elif not (self.path / "meta.json").exists():
            raise ScopeIndexError(f"{self.path}: no scope index here (meta.json missing)")
        self.meta = self._read_meta()
        if keyring is not None:
            check = hmac.new(keyring.pseudonym_key, b"sentinelle-scope-index", hashlib.sha256).hexdigest()[:16]
            if self.meta.key_check and self.meta.key_check != check:
                raise ScopeIndexError(f"{self.path}: this scope index was written under another keyring")
            self._key_check = check
        else:
            self._key_check = self.meta.key_check
        self.dicts = {name: Dictionary(self._read_dict(name, self.meta.dicts.get(name, 0))) for name in DICT_COLUMNS}
        self._rows: list[tuple[int, ...]] = []
        self._pending_arrays: list[dict[str, np.ndarray[Any, Any]]] = []
        self._pending_rows = 0
        self._vault_pks: list[int] = []
        self._vault_refs: list[str] = []
        self._pk_cache: dict[str, int] = {}
        self._known: set[int] = set()
        self._next_seq = self.meta.hw
        self._detach: list[Callable[[], None]] = []
        if write:
            self._recover()
            for seg_pks, _ in self._segments(decrypt=False):
                self._known.update(seg_pks.tolist())

    # ---- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, keyring: Keyring | None = None, *, write: bool = False,
             flush_rows: int = 262_144) -> ScopeIndex:
        """Open (for writing: create when absent) the index in folder `path`."""
        return cls(path, keyring, write=write, flush_rows=flush_rows)

    def _read_meta(self) -> _Meta:
        p = self.path / "meta.json"
        if not p.exists():
            return _Meta(FORMAT, 0, 0, {}, 0, 0, "", getattr(self, "_key_check", ""))
        try:
            meta = msgspec.json.decode(p.read_bytes(), type=_Meta)
        except msgspec.DecodeError as exc:
            raise ScopeIndexError(f"{p}: unreadable scope index metadata ({exc})") from exc
        if meta.format != FORMAT:
            raise ScopeIndexError(f"{p}: scope index format {meta.format} is not {FORMAT}: rebuild it")
        return meta

    def _read_dict(self, name: str, count: int) -> list[str]:
        p = self.path / f"dict-{name}.jsonl"
        if count == 0 or not p.exists():
            return []
        lines = p.read_bytes().splitlines()
        if len(lines) < count:
            raise ScopeIndexError(f"{p}: holds {len(lines)} values, the index committed {count}")
        return [msgspec.json.decode(line, type=str) for line in lines[:count]]

    def _recover(self) -> None:
        """Cut what a crash left after the last commit."""
        m = self.meta
        for name, dt in COLUMNS:
            f = self.path / f"{name}.bin"
            size = m.rows * np.dtype(dt).itemsize
            if f.exists() and f.stat().st_size > size:
                os.truncate(f, size)
            elif not f.exists():
                f.touch()
        b = self.path / "blocks.bin"
        if b.exists() and b.stat().st_size > m.blocks * 32:
            os.truncate(b, m.blocks * 32)
        for name in DICT_COLUMNS:
            p = self.path / f"dict-{name}.jsonl"
            n = m.dicts.get(name, 0)
            if p.exists():
                lines = p.read_bytes().splitlines(keepends=True)
                if len(lines) > n:
                    p.write_bytes(b"".join(lines[:n]))
        for seg in self.path.glob("vault-*.bin"):
            with contextlib.suppress(ValueError):
                if int(seg.stem.split("-")[1]) >= m.vault:
                    seg.unlink()
        if not (self.path / "meta.json").exists():
            self._write_meta(msgspec.structs.replace(m, key_check=self._key_check))

    def _write_meta(self, meta: _Meta) -> None:
        tmp = self.path / "meta.json.tmp"
        tmp.write_bytes(msgspec.json.encode(meta))
        os.replace(tmp, self.path / "meta.json")
        self.meta = meta

    # ---- appends ---------------------------------------------------------------------
    @property
    def hw(self) -> int:
        """Ledger sequence number up to which the index holds every event (committed or buffered)."""
        return self._next_seq

    def _pk(self, ref: str) -> int:
        pk = self._pk_cache.get(ref)
        if pk is None:
            assert self.protector is not None
            pk = pk_of_pseudonym(self.protector.pseudonym(ref))
            if len(self._pk_cache) >= 1_000_000:
                self._pk_cache.clear()
            self._pk_cache[ref] = pk
            if pk not in self._known:
                self._known.add(pk)
                self._vault_pks.append(pk)
                self._vault_refs.append(ref)
        return pk

    def add(self, items: Iterable[tuple[int, AccessEvent]]) -> int:
        """Index events with their ledger sequence numbers; returns the rows added.

        An event adds one row per patient (one row with key 0 when it names none).
        Events must come in increasing seq order, as the ledger's `on_append` gives them.
        """
        if not self.write:
            raise ScopeIndexError(f"{self.path}: the index is open read-only")
        # One tuple per row, turned into columns at flush: one list append per row is the
        # cheapest Python can do (measured: 2x faster than one append per column).
        put = self._rows.append
        d = self.dicts
        acc_c, cli_c, adr_c = d["account"].code, d["client"].code, d["address"].code
        act_c, out_c, kind_c, auth_c = d["action"].code, d["outcome"].code, d["actor_kind"].code, d["auth"].code
        pk_get = self._pk_cache.get
        pk_new = self._pk
        rows = 0
        nxt = self._next_seq
        for seq, e in items:
            if seq < nxt:
                continue  # already indexed (a replay after catch-up)
            a, c, ad = acc_c(e.account), cli_c(e.client), adr_c(e.address)
            act, out, kind, auth = act_c(e.action), out_c(e.outcome), kind_c(e.actor_kind), auth_c(e.auth)
            t, cats = e.time, e.categories
            pats = e.patients
            if not pats:
                put((seq, t, 0, a, c, ad, act, out, kind, auth, cats))
                rows += 1
            else:
                for ref in pats:
                    put((seq, t, pk_get(ref) or pk_new(ref), a, c, ad, act, out, kind, auth, cats))
                rows += len(pats)
            nxt = seq + 1
        self._next_seq = nxt
        self._pending_rows += rows
        if self._pending_rows >= self.flush_rows:
            self.flush()
        return rows

    def add_columns(self, cols: Mapping[str, np.ndarray[Any, Any]], values: Mapping[str, Sequence[str]],
                    patients: tuple[np.ndarray[Any, Any], Sequence[str]] | None = None) -> int:
        """Bulk path: rows given as arrays (codes into `values` for dictionary columns).

        For generated or converted trails (the benchmark writes 20 million rows this way):
        `cols` holds every column of `COLUMNS`, dictionary columns as indexes into
        `values[column]`; `patients` gives (keys, clear references) of new patients for
        the vault. Rows must come in seq order after `hw`.
        """
        if not self.write:
            raise ScopeIndexError(f"{self.path}: the index is open read-only")
        n = len(cols["seq"])
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name, dt in COLUMNS:
            a = np.asarray(cols[name])
            if len(a) != n:
                raise ScopeIndexError(f"add_columns: column {name} has {len(a)} rows, seq has {n}")
            if name in DICT_COLUMNS:
                lut = np.array([self.dicts[name].code(v) for v in values.get(name, [""])], dtype=dt)
                a = lut[a]
            out[name] = a.astype(dt, copy=False)
        if n and int(out["seq"][0]) < self._next_seq:
            raise ScopeIndexError(f"add_columns: seq {int(out['seq'][0])} is below the index's {self._next_seq}")
        if patients is not None:
            for pk, ref in zip(np.asarray(patients[0]).tolist(), patients[1], strict=True):
                if pk not in self._known:
                    self._known.add(pk)
                    self._vault_pks.append(pk)
                    self._vault_refs.append(ref)
        self._flush_lists()
        self._pending_arrays.append(out)
        self._pending_rows += n
        if n:
            self._next_seq = int(out["seq"].max()) + 1
        if self._pending_rows >= self.flush_rows:
            self.flush()
        return n

    def _flush_lists(self) -> None:
        if not self._rows:
            return
        table = np.array(self._rows, dtype=np.int64)
        self._pending_arrays.append({name: table[:, i].astype(dt) for i, (name, dt) in enumerate(COLUMNS)})
        self._rows = []

    def flush(self) -> None:
        """Commit the buffered rows: append the columns, dictionaries and vault, then meta."""
        if not self.write:
            return
        self._flush_lists()
        m = self.meta
        rows = m.rows
        if self._pending_arrays:
            merged = {name: np.concatenate([p[name] for p in self._pending_arrays]) for name, _ in COLUMNS}
            for name, _ in COLUMNS:
                with open(self.path / f"{name}.bin", "ab") as f:
                    f.write(merged[name].tobytes())
            blocks = _blocks_of(merged["time"], rows)
            with open(self.path / "blocks.bin", "ab") as f:
                f.write(blocks.tobytes())
            rows += len(merged["seq"])
            nblocks = m.blocks + len(blocks)
        else:
            nblocks = m.blocks
        dict_counts = dict(m.dicts)
        for name in DICT_COLUMNS:
            vals = self.dicts[name].values
            have = m.dicts.get(name, 0)
            if len(vals) > have:
                with open(self.path / f"dict-{name}.jsonl", "ab") as f:
                    f.write(b"".join(msgspec.json.encode(v) + b"\n" for v in vals[have:]))
            dict_counts[name] = len(vals)
        vault = m.vault
        if self._vault_pks:
            pks = np.array(self._vault_pks, dtype="<i8")
            # Sorted by key, so revealing needs no sort of the segment.
            order = np.argsort(pks)
            self._write_vault(vault, pks[order], [self._vault_refs[i] for i in order.tolist()])
            vault += 1
            self._vault_pks = []
            self._vault_refs = []
        self._write_meta(_Meta(FORMAT, rows, self._next_seq, dict_counts, vault, nblocks, m.ledger, self._key_check))
        self._pending_arrays = []
        self._pending_rows = 0

    def _write_vault(self, n: int, pks: np.ndarray[Any, Any], refs: list[str]) -> None:
        assert self.keyring is not None
        kid = self.keyring.current
        nonce = os.urandom(12)
        ad = _VAULT_AD + str(n).encode()
        sealed = AESGCM(self.keyring.encryption_keys[kid]).encrypt(nonce, msgspec.msgpack.encode(refs), ad)
        blob = msgspec.msgpack.encode({"v": 1, "kid": kid, "nonce": nonce, "pks": pks.tobytes(), "sealed": sealed})
        tmp = self.path / f"vault-{n}.bin.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, self.path / f"vault-{n}.bin")

    def _segments(self, decrypt: bool = True, limit: int | None = None) -> list[tuple[np.ndarray[Any, Any],
                                                                                     list[str]]]:
        out = []
        n = self.meta.vault if limit is None else limit
        for i in range(n):
            p = self.path / f"vault-{i}.bin"
            try:
                data = msgspec.msgpack.decode(p.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                raise ScopeIndexError(f"{p}: unreadable vault segment ({exc})") from exc
            pks = np.frombuffer(data["pks"], dtype="<i8")
            refs: list[str] = []
            if decrypt:
                if self.keyring is None:
                    raise ScopeIndexError("revealing patients needs the ledger's keyring")
                key = self.keyring.encryption_keys.get(data["kid"])
                if key is None:
                    raise ScopeIndexError(f"{p}: sealed with key {data['kid']!r}, absent from the keyring")
                try:
                    plain = AESGCM(key).decrypt(data["nonce"], data["sealed"], _VAULT_AD + str(i).encode())
                except Exception as exc:
                    raise ScopeIndexError(f"{p}: the vault segment fails authentication") from exc
                refs = msgspec.msgpack.decode(plain, type=list[str])
            out.append((pks, refs))
        return out

    # ---- the ledger ----------------------------------------------------------------------
    def catch_up(self, reader: LedgerReader, chunk: int = 50_000) -> int:
        """Index the ledger's events after `hw` (a new index, or one that missed appends)."""
        added = 0
        size = reader.stored_size()
        pending: list[tuple[int, AccessEvent]] = []
        for stored in _events_after(reader, self._next_seq, size, chunk):
            pending.append(stored)
            if len(pending) >= chunk:
                added += self.add(pending)
                pending = []
        added += self.add(pending)
        # Ledger records of its own (notes, retention) are not events: step over them.
        self._next_seq = max(self._next_seq, size)
        self.flush()
        return added

    def attach(self, ledger: Ledger) -> Callable[[], None]:
        """Keep the index up to date with `ledger`: catch up, then index every append.

        Returns the function that detaches it. The hook runs in the ledger's writer thread
        after each durable commit; a failure there is logged by the ledger and the index
        catches up from the ledger at the next open.
        """
        self.catch_up(ledger)

        def hook(stored: Sequence[tuple[int, AccessEvent]]) -> None:
            if self.write:
                self.add(stored)

        detach = ledger.on_append(hook)
        self._detach.append(detach)
        return detach

    # ---- reading -------------------------------------------------------------------------
    def view(self, reader: LedgerReader | None = None) -> IndexView:
        """A consistent read: committed rows (memory-mapped), the writer's buffer when this is
        the writer, and, with a ledger reader, the ledger's events after `hw` in memory."""
        if self.write:
            self.flush()
        else:
            self.meta = self._read_meta()
            for name in DICT_COLUMNS:
                have = len(self.dicts[name].values)
                want = self.meta.dicts.get(name, 0)
                if want > have:
                    self.dicts[name] = Dictionary(self._read_dict(name, want))
        m = self.meta
        cols: dict[str, np.ndarray[Any, Any]] = {}
        for name, dt in COLUMNS:
            f = self.path / f"{name}.bin"
            if m.rows == 0:
                cols[name] = np.zeros(0, dtype=dt)
            else:
                cols[name] = np.memmap(f, dtype=dt, mode="r", shape=(m.rows,))
        blocks = (np.fromfile(self.path / "blocks.bin", dtype="<i8", count=m.blocks * 4).reshape(-1, 4)
                  if m.blocks else np.zeros((0, 4), dtype="<i8"))
        parts = [IndexPart(cols, blocks)]
        dicts = {name: d.copy() for name, d in self.dicts.items()}
        vault_limit = m.vault
        tail_vault: list[tuple[np.ndarray[Any, Any], list[str]]] = []
        hw = m.hw
        if reader is not None and reader.stored_size() > hw:
            tail, tail_vault = _tail_part(reader, hw, dicts, self.protector)
            parts.append(tail)
            hw = reader.stored_size()

        def vault() -> list[tuple[np.ndarray[Any, Any], list[str]]]:
            return self._segments(True, vault_limit) + tail_vault

        return IndexView(parts, dicts, vault, self.protector, hw)

    def close(self) -> None:
        """Commit what is buffered, detach from the ledger and release the writer lock."""
        for detach in self._detach:
            with contextlib.suppress(ValueError):
                detach()
        self._detach = []
        if self.write:
            self.flush()
            self.write = False
        if self._lock is not None:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> ScopeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def build(cls, events: Iterable[AccessEvent], path: str | Path, keyring: Keyring,
              flush_rows: int = 262_144) -> ScopeIndex:
        """An index of events read from files (the alternative input when there is no ledger).

        Events are numbered in the order given; there are no inclusion proofs for them.
        """
        idx = cls(path, keyring, write=True, flush_rows=flush_rows)
        batch: list[tuple[int, AccessEvent]] = []
        seq = idx.hw
        for e in events:
            batch.append((seq, e))
            seq += 1
            if len(batch) >= 10_000:
                idx.add(batch)
                batch = []
        idx.add(batch)
        idx.flush()
        return idx

    def stats(self) -> dict[str, int]:
        """Rows, ledger high-water mark, dictionary sizes and vault segments, for the CLI."""
        m = self.meta
        out = {"rows": m.rows, "hw": m.hw, "blocks": m.blocks, "vault_segments": m.vault}
        out.update({f"{k}_values": v for k, v in m.dicts.items()})
        return out


def _events_after(reader: LedgerReader, lo: int, hi: int, chunk: int) -> Iterable[tuple[int, AccessEvent]]:
    """(seq, event with clear patients) of the ledger's events in [lo, hi)."""
    from sentinelle.ledger.records import KIND_EVENT, to_event

    protector = reader.protector
    if protector is None:
        raise ScopeIndexError("indexing the ledger needs its keyring (the clear references go to the vault)")
    for a in range(lo, hi, chunk):
        for seq, rec in reader.records(a, min(hi, a + chunk)):
            if rec is None or rec.kind != KIND_EVENT:
                continue
            pats, query = protector.open(rec)
            yield seq, to_event(rec, pats, query)


def _tail_part(reader: LedgerReader, lo: int, dicts: dict[str, Dictionary], protector: Protector | None
               ) -> tuple[IndexPart, list[tuple[np.ndarray[Any, Any], list[str]]]]:
    """The ledger's events from `lo` on as an in-memory part (and their clear refs when possible)."""
    from sentinelle.ledger.records import KIND_EVENT

    rows: dict[str, list[int]] = {name: [] for name, _ in COLUMNS}
    vault_pks: list[int] = []
    vault_refs: list[str] = []
    seen: set[int] = set()
    opener = reader.protector
    for seq, rec in reader.records(lo):
        if rec is None or rec.kind != KIND_EVENT:
            continue
        codes = [dicts[c].code(v) for c, v in (("account", rec.account), ("client", rec.client),
                                              ("address", rec.address), ("action", rec.action),
                                              ("outcome", rec.outcome), ("actor_kind", rec.actor_kind),
                                              ("auth", rec.auth))]
        clear: tuple[str, ...] = ()
        if opener is not None and rec.patients:
            clear = opener.open(rec)[0]
        pseud = rec.patients or ("",)
        for i, ps in enumerate(pseud):
            pk = pk_of_pseudonym(ps) if ps else 0
            if pk and clear and pk not in seen:
                seen.add(pk)
                vault_pks.append(pk)
                vault_refs.append(clear[i])
            for name, v in zip(("seq", "time", "pk"), (seq, rec.time, pk), strict=True):
                rows[name].append(v)
            for name, c in zip(DICT_COLUMNS, codes, strict=True):
                rows[name].append(c)
            rows["categories"].append(rec.categories)
    cols = {name: np.array(rows[name], dtype=dt) for name, dt in COLUMNS}
    part = IndexPart(cols, np.zeros((0, 4), dtype="<i8"))
    _ = protector  # the tail uses the reader's own keyring
    return part, [(np.array(vault_pks, dtype="<i8"), vault_refs)] if vault_pks else []


def describe(path: str | Path) -> dict[str, Any]:
    """The committed metadata of an index folder, for diagnostics."""
    p = Path(path) / "meta.json"
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ScopeIndexError(f"{p}: {exc}") from exc
    return data
