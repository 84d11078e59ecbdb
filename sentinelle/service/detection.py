"""Detection in a process of its own, so that the service's interpreter only takes and stores events.

Why: the service process runs HTTP, the ledger writer and detection on one interpreter;
detection's ~3 µs of Python per event competed with the writer for the GIL, and the
writer, which gives the GIL up at every database round trip, waited to get it back.
Measured on a 2-CPU machine: the same durable PostgreSQL ingest ran at 55k events/s with
detection in a thread and 68k/s with detection switched off (docs/service.md).

The child is a plain `python -m sentinelle.service --detect-worker` on pipes (like the
decoding workers: the service runs threads, so no fork). It loads the care context from
the same files, builds or restores the engine, then takes batches of committed events in
ledger order and answers with the alerts they raised. The service keeps everything else:
the order, the snapshot file, the alert store and delivery, the replay at restart. The
child exits when its stdin closes, so it never outlives the service, even after a
`kill -9`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.detect import Alert, Engine, Settings, load_settings
from sentinelle.detect.detectors import ContextLike
from sentinelle.errors import SentinelleError
from sentinelle.events import AccessEvent
from sentinelle.sources.children import receive, send, spawn

log = logging.getLogger("sentinelle.service")

__all__ = ["DetectionProcess", "DetectionProcessError", "detect_batch", "detect_worker_main", "restore_engine"]


class DetectionProcessError(SentinelleError):
    """The detection process could not start, or stopped answering."""


class _Init(msgspec.Struct, array_like=True):
    context: list[str]
    context_mapping: str
    quarantine: str
    detection: dict[str, Any]
    snapshot: bytes  # the engine part of the snapshot file, b"" for none


class _Ready(msgspec.Struct, array_like=True):
    restored: bool  # the snapshot was used
    note: str  # why it was not, when one was given
    error: str  # the child could not start at all


class _Done(msgspec.Struct, array_like=True):
    alerts: list[Alert]
    cpu_s: float  # CPU time the child spent on the batch
    error: str = ""


_BATCH, _SNAPSHOT = b"B", b"S"
_encode = msgspec.msgpack.Encoder().encode
_decode_events = msgspec.msgpack.Decoder(list[AccessEvent]).decode
_decode_done = msgspec.msgpack.Decoder(_Done).decode


def detect_worker_main() -> None:
    """The detection process: the init message first, then batches and snapshot requests."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    head = receive(stdin)
    if head is None:
        return
    init = msgspec.msgpack.decode(head, type=_Init)
    try:
        engine, restored, note = _engine(init)
    except Exception as exc:  # the reason goes to the service, which refuses to start
        send(stdout, _encode(_Ready(False, "", f"{type(exc).__name__}: {exc}")))
        return
    send(stdout, _encode(_Ready(restored, note, "")))
    # The care context and the restored state live for the whole run: frozen, later full
    # collections do not walk them again (a pause of ~0.2 s each, seen as alert latency).
    gc.collect()
    gc.freeze()
    while (msg := receive(stdin)) is not None:
        kind, body = msg[:1], msg[1:]
        if kind == _SNAPSHOT:
            send(stdout, engine.snapshot())
            continue
        c0 = time.process_time()
        try:
            alerts = detect_batch(engine, _decode_events(body))
        except Exception as exc:
            # Type only: a message could carry a patient reference.
            send(stdout, _encode(_Done([], time.process_time() - c0, type(exc).__name__)))
            continue
        send(stdout, _encode(_Done(alerts, time.process_time() - c0)))


def _engine(init: _Init) -> tuple[Engine, bool, str]:
    from sentinelle.context import CareContext
    from sentinelle.sources import Quarantine

    quarantine = Quarantine(Path(init.quarantine)) if init.quarantine else Quarantine()
    context = (CareContext.load(init.context, quarantine=quarantine, mapping=init.context_mapping or None)
               if init.context else CareContext.from_resources([]))
    return restore_engine(context, load_settings(init.detection), init.snapshot)


def restore_engine(context: ContextLike, settings: Settings, snapshot: bytes) -> tuple[Engine, bool, str]:
    """(engine, whether `snapshot` was used, why not): a fresh engine unless the snapshot fits.

    A snapshot that does not restore, or was made with other settings, is set aside and
    the caller replays the whole ledger. The same rule whichever process runs detection.
    """
    if not snapshot:
        return Engine(context, settings), False, ""
    try:
        restored = Engine.restore(context, snapshot)
    except Exception as exc:
        return Engine(context, settings), False, f"it could not be restored: {type(exc).__name__}"
    if restored.settings != settings:
        return Engine(context, settings), False, "detection settings changed since it was made"
    return restored, True, ""


def detect_batch(engine: Engine, events: Iterable[AccessEvent]) -> list[Alert]:
    """The alerts raised by events processed in order (`Engine.process` one by one)."""
    process = engine.process
    alerts: list[Alert] = []
    for e in events:
        found = process(e)
        if found:
            alerts += found
    return alerts


class DetectionProcess:
    """The service's handle on its detection process: `process(events)` gives their alerts."""

    def __init__(self, context: list[str], context_mapping: str, quarantine: str, detection: dict[str, Any],
                 snapshot: bytes = b"", start_timeout_s: float = 600.0) -> None:
        self._proc = spawn("sentinelle.service", "--detect-worker", pipe_bytes=1 << 20)
        self._lock = threading.Lock()
        self.cpu_s = 0.0
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        try:
            send(self._in, _encode(_Init(context, context_mapping, quarantine, detection, snapshot)))
            answer = receive(self._out)
        except OSError:
            answer = None
        if answer is None:
            self.close()
            raise DetectionProcessError("the detection process exited while starting")
        ready = msgspec.msgpack.decode(answer, type=_Ready)
        if ready.error:
            self.close()
            raise DetectionProcessError(f"the detection process could not start: {ready.error}")
        self.restored = ready.restored
        self.note = ready.note

    def _call(self, kind: bytes, body: bytes) -> bytes:
        with self._lock:
            try:
                send(self._in, kind + body)
                answer = receive(self._out)
            except OSError:
                answer = None
        if answer is None:
            raise DetectionProcessError("the detection process stopped answering")
        return answer

    def process(self, events: list[AccessEvent]) -> list[Alert]:
        """The alerts these events raise, processed in order, as `Engine.process` would one by one."""
        done = _decode_done(self._call(_BATCH, _encode(events)))
        self.cpu_s += done.cpu_s
        if done.error:
            raise DetectionProcessError(f"detection failed in its process with {done.error}")
        return done.alerts

    def snapshot(self) -> bytes:
        """The engine's state (`Engine.snapshot()` in the child)."""
        return self._call(_SNAPSHOT, b"")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self._out.close()
