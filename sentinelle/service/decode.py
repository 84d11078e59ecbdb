"""Decoding request bodies, in a worker process or a thread, never in the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
import operator
import queue
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import Literal

import msgspec

from sentinelle.errors import InputFormatError, SentinelleError
from sentinelle.events import AccessEvent
from sentinelle.ledger import Keyring
from sentinelle.ledger.records import Prepared, Sealer
from sentinelle.sources import atna, fhir_common, fhir_json, fhir_xml, mapped, syslog
from sentinelle.sources.children import receive, send, spawn
from sentinelle.sources.mapped import Mapping
from sentinelle.sources.quarantine import Quarantine

log = logging.getLogger("sentinelle.service")

# ======================================================================================
# Decoding request bodies (runs in a worker process or thread, never in the event loop)
# ======================================================================================

#: Issues of one request listed in its answer; the rest are counted and quarantined.
MAX_ISSUES = 100
Format = Literal["ndjson", "fhir-json", "fhir-xml", "atna", "syslog", "mapped"]


class _Collect(Quarantine):
    """A request's quarantine: keeps the first issues for the answer, forwards all to the service's."""

    def __init__(self, forward: Quarantine | None = None) -> None:
        super().__init__()
        self.forward = forward
        self.issues: list[tuple[str, str]] = []
        self.raws: list[tuple[str, str, bytes]] = []

    def reject(self, origin: str, location: str, reason: str, raw: bytes | str = b"") -> None:
        self.count += 1
        if len(self.issues) < MAX_ISSUES:
            self.issues.append((location, reason))
        if self.forward is not None:
            self.forward.reject(origin, location, reason, raw)
        else:
            data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw[:4096])
            self.raws.append((location, reason, data))


class _Decoded(msgspec.Struct, array_like=True):
    events: bytes  # msgpack list[AccessEvent] (from a worker) or b"" when `direct` is used
    rejects: list[tuple[str, str, bytes]]
    count: int
    error: str = ""
    prepared: bytes = b""  # msgpack list[Prepared], one per event, when the worker seals
    key_id: str = ""  # the key the prepared records are sealed with


_encode_events = msgspec.msgpack.Encoder().encode
_decode_events = msgspec.msgpack.Decoder(list[AccessEvent]).decode
_decode_prepared = msgspec.msgpack.Decoder(list[tuple[int, str, bytes]]).decode


def decoded_events(d: _Decoded) -> tuple[list[AccessEvent], list[Prepared] | None]:
    """The events of a worker's answer, and their prepared records when it made them."""
    if not d.count:
        return [], None
    events = _decode_events(d.events)
    prepared = _decode_prepared(d.prepared) if d.prepared else None
    return events, prepared if prepared is not None and len(prepared) == len(events) else None
_mapping_cache: dict[str, Mapping] = {}
#: `Appended.new` of a ledger result, as a C-level getter (summed over 10,000-event batches).
_is_new = operator.itemgetter(1)


def _bad_utf8_lines(lines: list[bytes]) -> set[int]:
    bad: set[int] = set()
    for i, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.add(i)
    return bad


def _stamp(events: Iterable[AccessEvent], source: str, q: Quarantine, origin: str) -> Iterator[AccessEvent]:
    """Events with the token's source name; those that cannot be ledger entries are refused."""
    replace = msgspec.structs.replace
    for e in events:
        if not e.id:
            q.reject(origin, f"record {e.time}", "the event has no id (needed for idempotency)", b"")
            continue
        yield e if not source or e.source == source else replace(e, source=source)


def decode_body(fmt: Format, body: bytes, origin: str, source: str, quarantine: Quarantine,
                mapping: Mapping | None = None, first_line: int = 1,
                normaliser: fhir_common.Normaliser | None = None) -> list[AccessEvent]:
    """Access events of a request body in one of the intake formats; bad records to `quarantine`.

    Raises `InputFormatError` when the body as a whole is not in the format. NDJSON goes
    through `normaliser` when given (one kept warm per source, stamping that source).
    """
    if fmt == "ndjson":
        lines = body.splitlines(keepends=True)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            bad = _bad_utf8_lines(lines)
            for i in sorted(bad):
                line = lines[i]
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as u:
                    quarantine.reject(origin, f"line {first_line + i}",
                                      f"invalid UTF-8: byte 0x{line[u.start]:02x} at offset {u.start}", line)
                lines[i] = b"\n"
        events: Iterable[AccessEvent] = fhir_json.read_lines(lines, origin, quarantine, first_line, normaliser)
    elif fmt == "fhir-json":
        events = fhir_json.read(io.BytesIO(body), origin, quarantine)
    elif fmt == "fhir-xml":
        events = fhir_xml.read(io.BytesIO(body), origin, quarantine)
    elif fmt == "atna":
        events = atna.read(io.BytesIO(body), origin, quarantine)
    elif fmt == "syslog":
        events = syslog.read(io.BytesIO(body), origin, quarantine)
    else:
        if mapping is None:
            raise InputFormatError(origin, "no mapping given")
        events = mapped.read_mapped(io.BytesIO(body), origin, quarantine, mapping)
    return list(_stamp(events, source, quarantine, origin))


#: A worker's normalisers, one per source: their memo tables stay warm from one request
#: to the next (a sender's agents and sessions repeat), and they stamp the source.
_normalisers: dict[str, fhir_common.Normaliser] = {}


def _normaliser(source: str) -> fhir_common.Normaliser:
    found = _normalisers.get(source)
    if found is None:
        if len(_normalisers) >= 64:
            _normalisers.clear()
        found = _normalisers[source] = fhir_common.Normaliser(source)
    return found


def _decode_in_worker(body: bytes, origin: str, source: str, first_line: int, warm: bool = True,
                      sealer: Sealer | None = None) -> _Decoded:
    """NDJSON decoding in a worker process: events come back msgpack-encoded (2 µs each to decode).

    `warm` uses the process's shared normalisers: only in a worker's single thread (a
    normaliser is not for concurrent use), not when the service decodes a piece itself.
    With a `sealer`, the events' ledger records come back made, for the writer to number.
    """
    q = _Collect()
    try:
        events = decode_body("ndjson", body, origin, source, q, first_line=first_line,
                             normaliser=_normaliser(source) if warm else None)
    except SentinelleError as exc:
        return _Decoded(b"", q.raws, 0, str(exc))
    if sealer is None or not events:
        return _Decoded(_encode_events(events), q.raws, len(events))
    return _Decoded(_encode_events(events), q.raws, len(events), "", _encode_events(sealer.prepare(events)),
                    sealer.key_id)


class _Task(msgspec.Struct, array_like=True):
    body: bytes
    origin: str
    source: str
    first_line: int


class _TaskOut(msgspec.Struct, array_like=True):
    """A `_Task` as the service sends it: the body is a view into the request's (no copy of its own)."""

    body: memoryview
    origin: str
    source: str
    first_line: int


_encode_msg = msgspec.msgpack.Encoder().encode
_decode_task = msgspec.msgpack.Decoder(_Task).decode
_decode_answer = msgspec.msgpack.Decoder(_Decoded).decode


def _decode_worker_main() -> None:
    """A decoding worker: the keyring (or nothing) first, then tasks on stdin, answers on stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    keys = receive(stdin)
    if keys is None:
        return
    sealer = Sealer(Keyring.from_json(keys, "the service's keyring")) if keys else None
    while (payload := receive(stdin)) is not None:
        task = _decode_task(payload)
        send(stdout, _encode_msg(_decode_in_worker(task.body, task.origin, task.source, task.first_line,
                                                    sealer=sealer)))


class _DecodeWorkers:
    """Processes that decode large NDJSON bodies, so the service's own process only stores and detects.

    Plain `python -m sentinelle.service --decode-worker` children on pipes, not
    multiprocessing: the service runs threads (fork is unsafe) and must not re-import
    whatever script embeds it (spawn does). A worker that dies is replaced and its piece
    decoded in the service itself: a broken worker costs speed, never events.
    """

    def __init__(self, n: int, keyring: Keyring | None = None) -> None:
        # The workers seal records with the ledger's keys: given through their stdin, never
        # their environment or command line (which other local users could read).
        self._keys = keyring.to_json() if keyring is not None else b""
        self._idle: queue.Queue[subprocess.Popen[bytes]] = queue.Queue()
        self._all: list[subprocess.Popen[bytes]] = []
        for _ in range(n):
            proc = self._spawn()
            self._all.append(proc)
            self._idle.put(proc)
        self._threads = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="sentinelle-decode-io")

    def _spawn(self) -> subprocess.Popen[bytes]:
        # 1 MiB pipes instead of 64 KiB: a 2 MiB piece crosses in two writes, not thirty-two.
        proc = spawn("sentinelle.service", "--decode-worker", pipe_bytes=1 << 20)
        assert proc.stdin is not None
        send(proc.stdin, self._keys)
        return proc

    def _call(self, task: _TaskOut) -> _Decoded:
        proc = self._idle.get()
        answer: bytes | None = None
        assert proc.stdin is not None and proc.stdout is not None
        try:
            send(proc.stdin, _encode_msg(task))
            answer = receive(proc.stdout)
        except OSError:
            answer = None
        if answer is None:
            log.warning("A decoding worker died; starting another and decoding its piece here.")
            with contextlib.suppress(OSError):
                proc.kill()
            self._all.remove(proc)
            proc = self._spawn()
            self._all.append(proc)
            self._idle.put(proc)
            return _decode_in_worker(bytes(task.body), task.origin, task.source, task.first_line, warm=False)
        self._idle.put(proc)
        return _decode_answer(answer)

    async def decode(self, body: bytes | memoryview, origin: str, source: str, first_line: int) -> _Decoded:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._call,
                                          _TaskOut(memoryview(body), origin, source, first_line))

    def close(self) -> None:
        for proc in self._all:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
        for proc in self._all:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
        self._threads.shutdown(wait=False)


