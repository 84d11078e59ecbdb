"""Checkpoints (signed tree heads) and their export to an outside witness.

Why: the Merkle root proves the events only if someone outside the database remembers
it. A checkpoint states "this ledger had `size` events with root `root` at `time`",
names the previous checkpoint by its hash (so checkpoints form a chain: none can be
dropped or edited unnoticed) and is signed with Ed25519, whose private key the database
never sees. Copies sent to a witness (an append-only file on another host, a webhook)
make even a full, consistent rewrite of the ledger and its checkpoints detectable.

The signed body is a few lines of text, like a Certificate Transparency signed note, so
a human can read a witness file and any Ed25519 tool can check it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sentinelle.ledger.errors import LedgerError
from sentinelle.ledger.keys import SigningKey

__all__ = ["HEADER", "Checkpoint", "Witness", "make_checkpoint", "parse_body", "read_witness"]

log = logging.getLogger("sentinelle.ledger")

HEADER = "sentinelle-ledger-checkpoint/1"
ZERO = "0" * 64


class Checkpoint(msgspec.Struct, frozen=True):
    """One signed tree head, as stored in the ledger and written to the witness."""

    ledger: str  # the ledger's id (a UUID made at creation)
    n: int  # 0, 1, 2 … in order
    size: int  # tree size covered
    root: str  # hex Merkle root of the first `size` leaves
    time: int  # ms since epoch, wall clock when signed
    prev: str  # hex SHA-256 of the previous checkpoint's body; 64 zeros for the first
    key: str  # id of the signing key
    note: str  # e.g. "retention" or "close"
    signature: str  # hex Ed25519 signature of `body()`
    public_key: str = ""  # base64 raw public key (filled in witness copies)

    def body(self) -> bytes:
        """The exact bytes that are signed and hashed."""
        return (
            f"{HEADER}\nledger {self.ledger}\nn {self.n}\nsize {self.size}\nroot {self.root}\n"
            f"time {self.time}\nprev {self.prev}\nkey {self.key}\nnote {json.dumps(self.note)}\n"
        ).encode()

    def hash(self) -> str:
        """Hex SHA-256 of the body: what the next checkpoint's `prev` names."""
        return hashlib.sha256(self.body()).hexdigest()

    def signature_ok(self, public: Ed25519PublicKey) -> bool:
        """Whether `signature` is this body's Ed25519 signature under `public`."""
        try:
            public.verify(bytes.fromhex(self.signature), self.body())
        except (InvalidSignature, ValueError):
            return False
        return True


def make_checkpoint(key: SigningKey, ledger: str, n: int, size: int, root: bytes, time_ms: int,
                    prev: Checkpoint | None, note: str = "") -> Checkpoint:
    """Build and sign the next checkpoint."""
    unsigned = Checkpoint(ledger, n, size, root.hex(), time_ms, prev.hash() if prev else ZERO, key.id,
                          note.replace("\n", " "), "")
    return msgspec.structs.replace(unsigned, signature=key.sign(unsigned.body()).hex())


def parse_body(body: bytes, signature: bytes, where: str) -> Checkpoint:
    """A checkpoint from its stored body and signature; raises `LedgerError` when malformed."""
    try:
        lines = body.decode().split("\n")
        if lines[0] != HEADER or len(lines) != 10 or lines[9] != "":
            raise ValueError("not a checkpoint body")
        fields = dict(line.split(" ", 1) for line in lines[1:9])
        cp = Checkpoint(
            ledger=fields["ledger"], n=int(fields["n"]), size=int(fields["size"]), root=fields["root"],
            time=int(fields["time"]), prev=fields["prev"], key=fields["key"], note=json.loads(fields["note"]),
            signature=signature.hex(),
        )
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{where}: malformed checkpoint ({exc})") from exc
    if cp.body() != body:
        raise LedgerError(f"{where}: checkpoint body is not in canonical form")
    return cp


def read_witness(path: str | Path) -> list[Checkpoint]:
    """The checkpoints of a witness file (JSON lines), in file order."""
    p = Path(path)
    out: list[Checkpoint] = []
    with p.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(msgspec.json.decode(line, type=Checkpoint))
            except msgspec.DecodeError as exc:
                raise LedgerError(f"{p}, line {lineno}: not a checkpoint ({exc})") from exc
    return out


class Witness:
    """Sends checkpoints outside: appends to a file and/or POSTs to a webhook.

    The file is written at once (an fsync'd append, a few ms per checkpoint). The webhook
    is called from a background thread, so a slow or absent receiver never holds the
    ledger's lock: failures are logged, the checkpoints stay pending and are retried
    (every `retry` seconds and at each new checkpoint) in order. A witness that is down
    must not stop the hospital's audit intake; the gap it leaves is visible (`pending`).
    """

    def __init__(self, file: str | Path | None = None, url: str | None = None, timeout: float = 5.0,
                 retry: float = 30.0) -> None:
        self.file = Path(file) if file else None
        self.url = url or None
        self.timeout = timeout
        self.retry = retry
        # One queue per destination: a webhook that is down must not make the file repeat lines.
        self._pending_file: list[Checkpoint] = []
        self._pending_url: list[Checkpoint] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self.exported = 0
        self.last_error = ""

    @property
    def enabled(self) -> bool:
        """Whether any destination is configured."""
        return self.file is not None or self.url is not None

    @property
    def pending(self) -> int:
        """Checkpoints not yet delivered to some destination."""
        with self._cond:
            return max(len(self._pending_file), len(self._pending_url) + (1 if self._busy else 0))

    def last_n(self) -> int:
        """Number of the last checkpoint in the witness file, -1 when none (used to catch up on open)."""
        if self.file is None or not self.file.exists():
            return -1
        last = -1
        for cp in _tail_lines(self.file):
            last = max(last, cp.n)
        return last

    def export(self, checkpoints: list[Checkpoint], public_key: str) -> None:
        """Send `checkpoints` (plus any still pending) to every destination."""
        fresh = [msgspec.structs.replace(cp, public_key=public_key) for cp in checkpoints]
        if self.file is not None:
            todo = self._pending_file + fresh
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                data = b"".join(msgspec.json.encode(cp) + b"\n" for cp in todo)
                fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._pending_file = []
                self.exported += len(fresh)
            except OSError as exc:
                self._pending_file = todo
                self._failed("file", len(todo), exc)
        if self.url is not None and fresh:
            with self._cond:
                self._pending_url.extend(fresh)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._post_loop, name="ledger-witness", daemon=True)
                    self._thread.start()
                self._cond.notify_all()

    def _post_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending_url and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending_url:
                    return
                cp = self._pending_url[0]
                url = self.url
                self._busy = True
            try:
                if url is None:
                    raise OSError("no webhook URL")
                req = urllib.request.Request(url, data=msgspec.json.encode(cp), method="POST",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
            except OSError as exc:
                # urllib's URLError and HTTPError are OSErrors too.
                with self._cond:
                    self._busy = False
                    self._failed("webhook", len(self._pending_url), exc)
                    if self._closed:
                        return
                    self._cond.wait(self.retry)  # a new checkpoint wakes us up earlier
                continue
            with self._cond:
                self._pending_url.pop(0)
                self._busy = False
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the webhook has every checkpoint; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._pending_url or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Try to deliver what is pending within `timeout`, then stop the sender thread."""
        if self._thread is None:
            return
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)

    def _failed(self, where: str, count: int, exc: OSError) -> None:
        self.last_error = f"{where}: {exc}"
        log.warning("The ledger witness %s could not be reached; %d checkpoints are pending (%s).",
                    where, count, exc)


def _tail_lines(path: Path) -> Iterator[Checkpoint]:
    """The checkpoints in the last 64 KiB of a witness file (enough to find the last one)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        chunk = f.read()
    for line in chunk.split(b"\n")[1 if size > 65536 else 0:]:
        if line.strip():
            try:
                yield msgspec.json.decode(line, type=Checkpoint)
            except msgspec.DecodeError:
                continue
