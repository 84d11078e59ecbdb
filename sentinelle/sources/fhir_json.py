"""Reads FHIR AuditEvent JSON (R4, R5, STU3): NDJSON, single resources, Bundles, arrays.

Audit exports come in every JSON shape: one resource per line (bulk export, log
shippers), a search or ITI-81 response Bundle, a JSON array, a pretty-printed resource.
This reader takes them all and normalises through `fhir_common.Normaliser`.

Memory: NDJSON is read line by line in constant memory (a Bundle on one line is one
line). A pretty-printed document (a resource, array or Bundle spread over many lines)
is read whole before decoding: JSON cannot be decoded from the middle, and such
documents are search pages or examples, not bulk exports.

Speed: lines are decoded with msgspec into `AuditEventLazy`, whose repeated parts
(agents, source, event codes) stay raw and are normalised once per distinct value; a
line that does not fit goes to a slower path that says exactly what is wrong with it.
Regular NDJSON files of `PARALLEL_MIN_BYTES` or more are shared between worker
processes (`SENTINELLE_WORKERS`; by default one per idle CPU, 1 turns them off); events
still come out in file order, with the same quarantine entries.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import queue
import re
import resource
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, BinaryIO

import msgspec
from msgspec import Raw, Struct

from sentinelle.errors import InputFormatError, RecordError
from sentinelle.events import AccessEvent
from sentinelle.sources.children import receive, send, spawn
from sentinelle.sources.fhir_common import AuditEvent, AuditEventLazy, Normaliser, stable_id
from sentinelle.sources.quarantine import Quarantine

__all__ = ["PARALLEL_MIN_BYTES", "consumer_cpus", "read", "read_lines"]

#: Regular NDJSON files at least this large are read by worker processes when cores are
#: free. Smaller inputs are not worth the ~0.3 s it takes to start the workers.
PARALLEL_MIN_BYTES = 64 << 20
#: Bytes of the file per task given to a worker; results come back per task, in order.
_CHUNK_BYTES = 8 << 20
#: Tasks queued per worker: enough that a worker never waits for the parent to read an
#: earlier answer from a slower one; each answer is ~1 MB, so memory stays small.
_IN_FLIGHT = 4

#: Lines looked at, after a first line that is not JSON, to tell NDJSON with a bad first
#: line from a pretty-printed document.
_SNIFF_LINES = 64


class _Entry(Struct, gc=False):
    fullUrl: str | None = None
    resource: Raw = Raw(b"")


class _Bundle(Struct, gc=False):
    resourceType: str | None = None
    entry: list[_Entry] | None = None


_lazy = msgspec.json.Decoder(AuditEventLazy)
_bundle = msgspec.json.Decoder(_Bundle)
_generic = msgspec.json.Decoder()


class _Units:
    """Turns JSON units (a line, a document, a Bundle entry) into events or rejects."""

    def __init__(self, origin: str, quarantine: Quarantine, norm: Normaliser | None = None) -> None:
        self.origin = origin
        self.quarantine = quarantine
        self.norm = norm if norm is not None else Normaliser()

    def reject(self, location: str, reason: str, raw: bytes) -> None:
        self.quarantine.reject(self.origin, location, reason, raw)

    def unit(self, raw: bytes, location: str) -> Iterator[AccessEvent]:
        """Events of one JSON value: AuditEvent, Bundle or array of them."""
        try:
            ev = _lazy.decode(raw)
        except msgspec.MsgspecError:
            yield from self.slow(raw, location)
            return
        if ev.resourceType == "AuditEvent":
            try:
                yield self.norm.from_lazy(ev, ev.id or stable_id(raw.strip()))
            except RecordError as e:
                self.reject(location, e.reason, raw)
            except msgspec.MsgspecError:  # a raw part is misshapen: say exactly where
                yield from self.slow(raw, location)
            return
        if ev.resourceType == "Bundle":
            yield from self.bundle(raw, location)
            return
        yield from self.slow(raw, location)

    def bundle(self, raw: bytes, location: str) -> Iterator[AccessEvent]:
        """AuditEvents of a Bundle (searchset, collection, transaction...); others skipped."""
        try:
            bundle = _bundle.decode(raw)
        except msgspec.MsgspecError as e:
            self.reject(location, f"invalid Bundle: {e}", raw)
            return
        prefix = f"{location} " if location != "document" else ""
        for k, entry in enumerate(bundle.entry or (), 1):
            data = bytes(entry.resource)
            if not data:
                continue
            where = f"{prefix}entry {k}"
            try:
                ev = _lazy.decode(data)
            except msgspec.MsgspecError:
                ev = None
            if ev is not None and ev.resourceType != "AuditEvent":
                if ev.resourceType is None:
                    self.reject(where, "not a FHIR resource: entry.resource has no resourceType", data)
                continue  # other resources (OperationOutcome, Patient...) are not audit records
            if ev is None:
                yield from self.slow(data, where, in_bundle=True)
                continue
            try:
                yield self.norm.from_lazy(ev, ev.id or entry.fullUrl or stable_id(data))
            except RecordError as e:
                self.reject(where, e.reason, data)
            except msgspec.MsgspecError:
                yield from self.slow(data, where, in_bundle=True)

    def slow(self, raw: bytes, location: str, in_bundle: bool = False) -> Iterator[AccessEvent]:
        """Diagnoses a unit the fast decoder refused, and reads it if it is readable."""
        if not raw.strip():
            return
        try:
            value = _generic.decode(raw)
        except msgspec.DecodeError as e:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as u:
                self.reject(location, f"invalid UTF-8: byte 0x{raw[u.start]:02x} at offset {u.start}", raw)
                return
            self.reject(location, f"invalid JSON: {e}", raw)
            return
        yield from self.value(value, raw, location, in_bundle)

    def value(self, value: Any, raw: bytes, location: str, in_bundle: bool = False) -> Iterator[AccessEvent]:
        """Events of an already decoded JSON value (arrays, odd shapes, diagnostics)."""
        if isinstance(value, list):
            for k, item in enumerate(value, 1):
                where = f"{location} item {k}" if location != "document" else f"item {k}"
                yield from self.value(item, msgspec.json.encode(item), where)
            return
        if not isinstance(value, dict):
            self.reject(location, f"not a FHIR resource: a JSON {type(value).__name__}, not an object", raw)
            return
        rtype = value.get("resourceType")
        if rtype == "Bundle" and not in_bundle:
            yield from self.bundle(raw, location)
            return
        if rtype != "AuditEvent":
            if in_bundle and isinstance(rtype, str):
                return
            what = f"resourceType {rtype!r}" if rtype is not None else "no resourceType"
            self.reject(location, f"not an AuditEvent: {what}", raw)
            return
        try:
            ev = msgspec.convert(value, AuditEvent)
        except msgspec.ValidationError as e:
            self.reject(location, f"invalid AuditEvent: {e}", raw)
            return
        try:
            yield self.norm.from_full(ev, ev.id or stable_id(raw.strip()))
        except RecordError as e:
            self.reject(location, e.reason, raw)


def read_lines(
    lines: Iterable[bytes],
    origin: str,
    quarantine: Quarantine,
    first_line: int = 1,
    normaliser: Normaliser | None = None,
) -> Iterator[AccessEvent]:
    """Events of NDJSON lines, numbered from `first_line`; bad lines go to the quarantine.

    A `normaliser` may be shared between calls (a worker's successive ranges of one
    file) so that its memo tables stay warm.
    """
    units = _Units(origin, quarantine, normaliser)
    decode = _lazy.decode
    from_lazy = units.norm.from_lazy
    fast = units.norm.fast_line
    lineno = first_line - 1
    for line in lines:
        lineno += 1
        if fast is not None:
            # The compiled path reads the common BALP shape; it declines (None) the rest.
            event = fast(line)
            if event is not None:
                yield event
                continue
        # The hot path: one typed decode and a memoised normalisation. Anything unusual
        # (Bundle, array, bad JSON, not an AuditEvent) leaves through `units.unit`.
        try:
            ev = decode(line)
        except msgspec.MsgspecError:
            yield from units.slow(line, f"line {lineno}")
            continue
        if ev.resourceType != "AuditEvent":
            yield from units.unit(line, f"line {lineno}")
            continue
        try:
            yield from_lazy(ev, ev.id or stable_id(line.strip()))
        except RecordError as e:
            units.reject(f"line {lineno}", e.reason, line)
        except msgspec.MsgspecError:  # a raw part (agent, source...) is misshapen
            yield from units.slow(line, f"line {lineno}")


class _Head(Struct):
    resourceType: str | None = None


_syntax = msgspec.json.Decoder(Raw)  # checks JSON syntax without building objects
_head = msgspec.json.Decoder(_Head)


def _is_json_line(line: bytes, need_resource: bool) -> bool:
    try:
        if need_resource:
            return _head.decode(line).resourceType is not None
        _syntax.decode(line)
    except msgspec.MsgspecError:
        return False
    return True


def read(stream: BinaryIO, origin: str, quarantine: Quarantine) -> Iterator[AccessEvent]:
    """Events of a FHIR JSON input; InputFormatError when it holds no JSON at all.

    NDJSON when the first non-blank line is a JSON value on its own (or, if it is not,
    when a later line among the next few is a whole FHIR resource); otherwise a single
    JSON document read whole. A document that does not parse but whose lines do is read
    as NDJSON with the bad lines quarantined; an input none of whose lines is JSON raises.
    """
    plan = _parallel_plan(stream)
    if plan is not None:
        yield from _read_parallel(*plan, origin=origin, quarantine=quarantine)
        return

    pending: list[bytes] = []
    first: bytes | None = None
    for line in stream:
        pending.append(line)
        if line.strip():
            first = line
            break
    if first is None:
        return
    ndjson = _is_json_line(first, need_resource=False)
    if not ndjson:
        for line in stream:
            pending.append(line)
            if _is_json_line(line, need_resource=True):
                ndjson = True
                break
            if len(pending) >= _SNIFF_LINES:
                break
    if ndjson:
        # The lines read while sniffing, then the stream itself (not a generator chaining
        # both: one more Python frame per line costs ~1 % of the whole read).
        norm = Normaliser()
        yield from read_lines(pending, origin, quarantine, normaliser=norm)
        yield from read_lines(stream, origin, quarantine, first_line=len(pending) + 1, normaliser=norm)
        return

    document = b"".join(pending) + stream.read()
    units = _Units(origin, quarantine)
    try:
        _syntax.decode(document)
    except msgspec.DecodeError as e:
        lines = document.splitlines(keepends=True)
        if not any(_is_json_line(line, need_resource=False) for line in lines if line.strip()):
            raise InputFormatError(origin, f"not JSON: {e}") from None
        yield from read_lines(lines, origin, quarantine)
        return
    yield from units.unit(document, "document")


# -- parallel reading of large NDJSON files ---------------------------------------------
#
# Decoding and normalising is CPU-bound Python around msgspec, so threads do not help;
# processes do. Workers are plain `python -m sentinelle.sources.fhir_json` processes that
# read tasks (byte ranges of the file) on stdin and answer on stdout: unlike
# multiprocessing, this never forks a parent that may run threads (the service) and never
# re-imports the parent's main module. Each worker reads its ranges from the file itself,
# so only the range crosses the process boundary on the way in; it sends back its events
# msgpack-encoded with its rejected lines. The parent hands out ranges round-robin, reads
# the answers in file order and keeps a few tasks per worker in flight: memory stays flat.
# If a worker fails, the parent reads the remaining ranges itself.


#: CPUs the consumer of the events keeps busy itself (scan's detection runs in the reading
#: process): the reader starts that many fewer worker processes, and then even a single
#: worker is worth it, since the consumer works while it reads. Set with `consumer_cpus`.
_consumer_cpus: ContextVar[int] = ContextVar("consumer_cpus", default=0)


@contextlib.contextmanager
def consumer_cpus(n: int) -> Iterator[None]:
    """Within this block, readers leave `n` CPUs to the code that consumes their events.

    Measured with bench/scan.py on 2 CPUs: one reading worker beside the detecting parent
    scanned ~27 % faster, relative to a bare decode, than two workers competing with it.
    An explicit SENTINELLE_WORKERS still wins.
    """
    token = _consumer_cpus.set(n)
    try:
        yield
    finally:
        _consumer_cpus.reset(token)


def _workers() -> int:
    """Worker processes to use: `SENTINELLE_WORKERS`, else the CPUs idle right now.

    Workers only pay when cores are idle: on a machine already busy with other work,
    measured here, two workers read more slowly than one process (they cost ~10-25 %
    more CPU in all: start-up, encoding, the parent's decoding). Idle CPUs are read from
    /proc/stat over a tenth of a second (the 1-minute load average, used where there is
    no /proc, still counts a job that ended a minute ago and halved the default).
    """
    setting = os.environ.get("SENTINELLE_WORKERS", "")
    if setting.isdigit():
        return int(setting)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    free = _idle_cpus(cpus)
    if free is None:
        try:
            free = cpus - os.getloadavg()[0] + 1
        except OSError:  # pragma: no cover - no load average on this system
            free = cpus
    return max(1, min(cpus, 8, int(free + 0.5)))


def _idle_cpus(cpus: int, interval: float = 0.1) -> float | None:
    """How many of `cpus` were idle over the last `interval` seconds (Linux /proc/stat), or None."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", "rb") as f:
            values = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return values[3] + values[4], sum(values)

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return cpus * (idle1 - idle0) / (total1 - total0)


def _parallel_plan(stream: BinaryIO) -> tuple[str, int, int, int] | None:
    """(path, start, size, workers) when the stream is a large regular NDJSON file.

    The number of workers is asked last: measuring idle CPUs takes a tenth of a second,
    which a request body or a small file must never pay.
    """
    if not isinstance(stream, io.BufferedReader):
        return None
    raw = stream.raw
    name = getattr(raw, "name", None)
    if not isinstance(raw, io.FileIO) or not isinstance(name, str):
        return None
    try:
        st = os.fstat(raw.fileno())
        same = os.stat(name)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or (st.st_ino, st.st_dev) != (same.st_ino, same.st_dev):
        return None
    start = stream.tell()
    if st.st_size - start < PARALLEL_MIN_BYTES:
        return None
    head = stream.peek(1 << 16)
    cut = head.find(b"\n")
    if cut < 0 or not _is_json_line(head[:cut], need_resource=True):
        return None  # not NDJSON with a resource on its first line: the sequential reader decides
    consumer = _consumer_cpus.get()
    workers = _workers()
    least = 2  # one worker alone only moves the work to another process
    if consumer and not os.environ.get("SENTINELLE_WORKERS", "").isdigit():
        # One CPU for each worker, beside the consumer's; at least one worker when the
        # machine has a CPU beyond the consumer's (a tenth of a second of /proc/stat is a
        # noisy sample, and reading in the consumer's process was measured 35 % slower).
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
        workers = max(min(workers, cpus - consumer), 1 if cpus > consumer else 0)
        least = 1
    if workers < least:
        return None
    return os.path.abspath(name), start, st.st_size, workers


class _Collect(Quarantine):
    """A worker's quarantine: keeps rejects to send back to the parent."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, str, bytes]] = []

    def reject(self, origin: str, location: str, reason: str, raw: bytes | str = b"") -> None:
        data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw[:8192])
        self.items.append((location, reason, data))


class _Task(Struct, array_like=True):
    path: str
    start: int
    end: int
    origin: str


class _Answer(Struct, array_like=True):
    events: bytes
    lines: int
    rejects: list[tuple[str, str, bytes]]
    error: str = ""
    peak_kb: int = 0  # the worker's peak RSS, for benchmarks


#: Largest peak RSS (KiB) a worker reported during the last parallel read.
worker_peak_kb = 0


_encoder = msgspec.msgpack.Encoder()
_events = msgspec.msgpack.Decoder(list[AccessEvent])
_answers = msgspec.msgpack.Decoder(_Answer)
_tasks = msgspec.msgpack.Decoder(_Task)
_LINE_RE = re.compile(r"^line (\d+)")


#: One per process, so a worker's memo tables stay warm from one range to the next.
_worker_normaliser = Normaliser()


def _task(task: _Task) -> _Answer:
    """Events of the lines starting in [start, end) of the file, and its rejects."""
    collect = _Collect()
    # Lines are read one at a time and each event is encoded at once into a msgpack
    # array: holding a range's lines or events in lists first was measured ~30 % slower
    # (the fresh objects fall out of the CPU caches).
    out = bytearray(b"\xdd\x00\x00\x00\x00")  # array32 header, count filled in below
    count = 0
    n_lines = 0
    encode_into = _encoder.encode_into
    with open(task.path, "rb", buffering=1 << 20) as f:
        if task.start > 0:
            f.seek(task.start - 1)
            f.readline()  # the line under way at `start` belongs to the previous range
        pos = f.tell()

        def lines() -> Iterator[bytes]:
            nonlocal pos, n_lines
            for line in f:
                if pos >= task.end:
                    return
                pos += len(line)
                n_lines += 1
                yield line

        for event in read_lines(lines(), task.origin, collect, normaliser=_worker_normaliser):
            encode_into(event, out, -1)
            count += 1
    out[1:5] = count.to_bytes(4, "big")
    return _Answer(bytes(out), n_lines, collect.items, peak_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _shift(location: str, offset: int) -> str:
    """A worker's "line N..." location made absolute in the file."""
    return _LINE_RE.sub(lambda m: f"line {int(m.group(1)) + offset}", location)


def _worker_main() -> None:
    """Worker loop: tasks on stdin, answers on stdout, until stdin closes.

    Answers are written by a second thread: the parent reads them in file order, so a
    worker that is ahead would otherwise sit blocked on a full pipe instead of working
    on its next task (measured: that alone made two workers slower than one process).
    At most `_IN_FLIGHT` answers wait in memory, since the parent sends no more tasks.
    """
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    answers: queue.Queue[bytes | None] = queue.Queue()

    def write() -> None:
        while (payload := answers.get()) is not None:
            send(stdout, payload)

    writer = threading.Thread(target=write, name="answers", daemon=True)
    writer.start()
    while (payload := receive(stdin)) is not None:
        try:
            answer = _task(_tasks.decode(payload))
        except Exception as e:  # reported to the parent, which then reads the range itself
            answer = _Answer(b"", 0, [], f"{type(e).__name__}: {e}")
        answers.put(_encoder.encode(answer))
    answers.put(None)
    writer.join()


def _start_worker() -> subprocess.Popen[bytes]:
    return spawn("sentinelle.sources.fhir_json", "--worker")


def _read_parallel(
    path: str, start: int, size: int, workers: int, *, origin: str, quarantine: Quarantine
) -> Iterator[AccessEvent]:
    bounds = [*range(start, size, _CHUNK_BYTES), size]
    tasks = [_Task(path, a, b, origin) for a, b in itertools.pairwise(bounds)]
    global worker_peak_kb
    worker_peak_kb = 0
    procs = [_start_worker() for _ in range(min(workers, len(tasks)))]
    broken = False
    finished = False
    try:
        sent = 0

        def submit() -> None:
            nonlocal sent, broken
            if sent < len(tasks) and not broken:
                proc = procs[sent % len(procs)]
                try:
                    send(proc.stdin, _encoder.encode(tasks[sent]))  # type: ignore[arg-type]
                except OSError:
                    broken = True
                    return
                sent += 1

        for _ in range(_IN_FLIGHT * len(procs)):
            submit()
        line_offset = 0
        for k, task in enumerate(tasks):
            answer: _Answer | None = None
            if k < sent and not broken:
                payload = receive(procs[k % len(procs)].stdout)  # type: ignore[arg-type]
                answer = _answers.decode(payload) if payload is not None else None
                if answer is None or answer.error:
                    broken = True
            if answer is None or answer.error:
                answer = _task(task)  # a worker failed: read the range here
            submit()
            worker_peak_kb = max(worker_peak_kb, answer.peak_kb)
            for location, reason, raw in answer.rejects:
                quarantine.reject(origin, _shift(location, line_offset), reason, raw)
            line_offset += answer.lines
            yield from _events.decode(answer.events)
        finished = True
    finally:
        for proc in procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if not finished or broken:
                # Stopped early (or a worker failed): workers may be blocked writing
                # answers nobody will read. They are ours; end them now.
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
