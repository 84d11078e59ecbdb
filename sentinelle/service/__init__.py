"""The service behind `sentinelle serve`: live intake, durable ledger, online detection, alert delivery.

One process, four kinds of work, each where it is cheapest:

- the **event loop** (uvicorn's HTTP API and the syslog listener) reads requests and
  frames, decodes small inputs in place and large NDJSON bodies in a worker process,
  and waits; it never touches the database;
- the **writer thread** takes everything queued since its last commit and appends it
  to the ledger in one transaction (group commit: concurrent requests share one fsync),
  then wakes the requests: an HTTP request is answered 2xx only after its events are
  durable;
- the **detection thread** runs the same `Engine` as `sentinelle scan` on the events the
  ledger just stored, in ledger order, raises alerts into the alert store and writes
  snapshots of the engine state;
- the **dispatcher** threads deliver alerts (webhook, CEF syslog, e-mail).

Backpressure instead of loss: the intake queue is bounded (in events). An HTTP request
that arrives when it is nearly full gets 429 with Retry-After before its body is read;
a request already admitted waits for room; the syslog listener stops reading its
socket (TCP flow control). A full detection queue holds the writer, which fills the
intake queue: every stage slows the one before it, none drops what it accepted.

Restart: the engine state is snapshotted every `snapshot_seconds` (after the alerts it
raised are durable in the store) with the ledger position it reflects; on start the
snapshot is restored and the ledger tail after that position is replayed through the
engine. Alert ids are stable (episode id and version), so the replayed alerts already
in the store are recognised and not raised again, while an episode running at the
crash continues. See docs/service.md.

The package: `config` (the TOML configuration and its settings table), `tokens`
(bearer tokens and roles), `decode` (request bodies, in worker processes), `intake`
(the bounded queue, its group-committing writer, metrics); this module holds the
`Service` that wires them to the ledger, the engine and the delivery channels, and the
entry points (`serve`, `run_demo`, `python -m sentinelle.service`).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import io
import itertools
import json
import logging
import os
import queue
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.context import CareContext
from sentinelle.detect import Alert, Engine, Settings, load_settings
from sentinelle.errors import ConfigError, InputFormatError, SentinelleError
from sentinelle.events import AccessEvent
from sentinelle.ledger import Appended, Ledger
from sentinelle.ledger.records import KIND_EVENT, Prepared
from sentinelle.respond import (
    AlertStore,
    CefChannel,
    Channel,
    Dispatcher,
    EmailChannel,
    WebhookChannel,
)
from sentinelle.service.config import (
    SETTINGS,
    CefConfig,
    DeliveryConfig,
    EmailConfig,
    HttpConfig,
    IntakeConfig,
    ServiceConfig,
    SyslogConfig,
    Token,
    WebhookConfig,
    load_config,
)
from sentinelle.service.decode import (
    Format,
    _Collect,
    _decode_worker_main,
    _DecodeWorkers,
    _is_new,
    decode_body,
    decoded_events,
)
from sentinelle.service.detection import DetectionProcess, detect_batch, detect_worker_main, restore_engine
from sentinelle.service.intake import (
    BusyError,
    ClosingError,
    IngestResult,
    IntakeQueue,
    _Item,
    _Metrics,
    _settle,
    _Snapshot,
    prepared_of,
)
from sentinelle.service.tokens import Principal, TokenRegistry, hash_token, new_token
from sentinelle.sources.listener import SyslogListener
from sentinelle.sources.mapped import Mapping, load_mapping
from sentinelle.sources.quarantine import Quarantine

__all__ = [
    "API_SOURCE",
    "SETTINGS",
    "BusyError",
    "CefConfig",
    "ClosingError",
    "DeliveryConfig",
    "EmailConfig",
    "Format",
    "HttpConfig",
    "IngestResult",
    "IntakeConfig",
    "Principal",
    "Service",
    "ServiceConfig",
    "SyslogConfig",
    "Token",
    "TokenRegistry",
    "WebhookConfig",
    "hash_token",
    "load_config",
    "new_token",
    "serve",
]

log = logging.getLogger("sentinelle.service")

#: Source name of the service's own audit records (who called the API): they go to the
#: ledger, tamper-evident like everything else, but not through detection.
API_SOURCE = "sentinelle-api"
#: Ledger events replayed into detection at a time after a restart.
_REPLAY_BATCH = 2_000


# ======================================================================================
# The service
# ======================================================================================


class Service:
    """One running Sentinelle: `start()`, then `await serve()` (or `start_background()`), then `close()`."""

    def __init__(self, config: ServiceConfig, *, context: Any = None) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.metrics = _Metrics()
        self.tokens = TokenRegistry.load(config.tokens_file or None, config.tokens)
        self.detection_settings: Settings = load_settings(config.detection)
        self._context = context
        self.intake = IntakeQueue(config.intake.queue_events)
        self.ports: dict[str, int] = {}
        self.engine: Engine | None = None  # detection in this process (else `_remote`)
        self._remote: DetectionProcess | None = None  # detection in a process of its own
        self.engine_seq = -1
        self.replayed = 0
        self.stored = 0
        self._hooked_seq = -1
        self._commits: deque[tuple[float, int]] = deque(maxlen=64)
        self._close_lock = threading.Lock()
        self._alert_callbacks: list[Callable[[Alert, int], None]] = []
        self._det_q: queue.Queue[tuple[float, list[tuple[int, AccessEvent]]] | None] = queue.Queue(
            max(1, config.intake.detection_queue_batches))
        self._writer: threading.Thread | None = None
        self._detector: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bg_thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._serve_error: BaseException | None = None
        self._active_requests = 0
        self._pool: _DecodeWorkers | None = None
        self._threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sentinelle-decode")
        self._closed = False
        self._started = False
        self._snap_due = 0.0
        self._snap_events = 0
        self._audit_file: io.BufferedWriter | None = None
        self._audit_lock = threading.Lock()
        self._mappings: dict[str, Mapping] = {}
        self.ledger: Ledger
        self.store: AlertStore
        self.dispatcher: Dispatcher
        self.quarantine: Quarantine
        self.listener: SyslogListener | None = None
        self.failed: BaseException | None = None

    # ---- start -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the ledger and stores, restore detection (snapshot + ledger tail), start the threads."""
        cfg = self.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.quarantine = Quarantine(self.state_dir / "quarantine.jsonl")
        for name, path in cfg.mappings.items():
            self._mappings[name] = load_mapping(path)
        context = self._context
        if context is None and not self._detection_apart():
            context = (CareContext.load(cfg.context, quarantine=self.quarantine,
                                        mapping=cfg.context_mapping or None)
                       if cfg.context else CareContext.from_resources([]))
        self.context = context  # None when detection runs in its own process, which loads it
        self.ledger = Ledger.open(settings=cfg.ledger)
        try:
            self.store = AlertStore(self.state_dir / "alerts.db")
            self.dispatcher = Dispatcher(
                self._channels(), self.store, self.state_dir / "dead-letters.jsonl",
                retries=cfg.delivery.retries, backoff_s=cfg.delivery.backoff_s,
                max_backoff_s=cfg.delivery.max_backoff_s,
                on_result=lambda ch, outcome: self.metrics.deliveries.labels(ch, outcome).inc())
            self.dispatcher.start()
            self._restore()
            self.metrics.ledger_size.set_function(lambda: float(self.ledger.size))
            self.metrics.queue.set_function(lambda: float(self.intake.depth))
            self.metrics.det_queue.set_function(lambda: float(self._det_q.qsize()))
            self.ledger.on_append(self._on_stored)
            self._audit_file = open(self.state_dir / "audit.jsonl", "ab")  # noqa: SIM115 - kept open
            self._writer = threading.Thread(target=self._write_loop, name="sentinelle-writer", daemon=True)
            self._detector = threading.Thread(target=self._detect_loop, name="sentinelle-detect", daemon=True)
            self._writer.start()
            self._detector.start()
            self._start_pool()
            self.ledger.append_note(json.dumps({"service": "start", "pid": os.getpid()}))
        except BaseException:
            self.ledger.close(checkpoint=False)
            raise
        self._started = True
        log.info("Service started: ledger %s with %d leaves, %d events replayed into detection.",
                 self.ledger.ledger_id, self.ledger.size, self.replayed)

    def _channels(self) -> list[Channel]:
        out: list[Channel] = []
        for w in self.config.webhook:
            secret = w.secret or (os.environ.get(w.secret_env, "") if w.secret_env else "")
            if not secret:
                raise ConfigError(f"webhook {w.name!r}: needs secret or secret_env (an environment variable)")
            out.append(WebhookChannel(w.url, secret, name=w.name, min_severity=w.min_severity,
                                      timeout_s=w.timeout_s))
        for c in self.config.cef:
            out.append(CefChannel(c.host, c.port, protocol=c.protocol, framing=c.framing, name=c.name,
                                  min_severity=c.min_severity, include_patients=c.include_patients,
                                  tls_ca=c.tls_ca))
        for m in self.config.email:
            out.append(EmailChannel(m.host, m.port, m.sender, m.recipients, name=m.name,
                                    min_severity=m.min_severity, security=m.security, username=m.username,
                                    password=os.environ.get(m.password_env, "") if m.password_env else "",
                                    lang=m.lang, include_patients=m.include_patients,
                                    console_url=m.console_url))
        return out

    def _detection_apart(self) -> bool:
        """Whether detection runs in a process of its own (`intake.detection_process`).

        Only when the care context comes from files (the process loads them): a context
        object handed to `Service` keeps detection in this process.
        """
        if self._context is not None:
            return False
        setting = self.config.intake.detection_process
        return setting > 0 or (setting < 0 and (os.cpu_count() or 1) >= 2)

    def _start_pool(self) -> None:
        workers = self.config.intake.decode_workers
        if workers < 0:
            workers = 1 if (os.cpu_count() or 1) >= 2 else 0
        if workers > 0:
            try:
                self._pool = _DecodeWorkers(workers, self.ledger.keyring)
            except OSError as exc:
                log.warning("Decoding workers did not start (%s); decoding in threads.", type(exc).__name__)
                self._pool = None

    # ---- restart: snapshot + ledger tail --------------------------------------------------
    @property
    def snapshot_path(self) -> Path:
        """Where the engine snapshot lives."""
        return self.state_dir / "engine.snapshot"

    def _read_snapshot(self) -> tuple[_Snapshot, bytes] | None:
        try:
            data = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return None
        head, _, body = data.partition(b"\n")
        try:
            meta = msgspec.json.decode(head, type=_Snapshot)
        except msgspec.MsgspecError:
            log.warning("The engine snapshot %s is unreadable; detection restarts from the whole ledger.",
                        self.snapshot_path)
            return None
        return meta, body

    def _restore(self) -> None:
        """Engine from the snapshot, then the ledger events after it, through the same `_detect`."""
        ledger = self.ledger
        after = -1
        body = b""
        snap = self._read_snapshot()
        if snap is not None:
            meta, body = snap
            if meta.ledger != ledger.ledger_id or meta.seq >= ledger.size:
                log.warning("The engine snapshot belongs to another ledger (or is ahead of it); ignored.")
                body = b""
        if self.context is None:
            cfg = self.config
            self._remote = DetectionProcess(cfg.context, cfg.context_mapping,
                                            str(self.state_dir / "quarantine.jsonl"), dict(cfg.detection), body)
            restored, note = self._remote.restored, self._remote.note
        else:
            self.engine, restored, note = restore_engine(self.context, self.detection_settings, body)
        if restored and snap is not None:
            after = snap[0].seq
        elif note:
            log.warning("The engine snapshot was not used (%s); replaying the whole ledger.", note)
        self.engine_seq = after
        n = 0
        protector = ledger.protector
        assert protector is not None
        batch: list[AccessEvent] = []
        last = after
        for seq, rec in ledger.records(after + 1):
            if rec is None or rec.kind != KIND_EVENT or rec.source == API_SOURCE:
                continue
            batch.append(protector.reveal(rec))
            last = seq
            if len(batch) >= _REPLAY_BATCH:
                self._replay(batch, last)
                n += len(batch)
                batch = []
        if batch:
            self._replay(batch, last)
            n += len(batch)
        self.engine_seq = ledger.size - 1
        self.replayed = n
        if n:
            self._write_snapshot()

    def _replay(self, events: list[AccessEvent], last_seq: int) -> None:
        alerts = self._detect(events)
        if alerts:
            self._raise(alerts)
        self.engine_seq = last_seq

    def _detect(self, events: list[AccessEvent]) -> list[Alert]:
        """The alerts of events in ledger order: in the detection process, or in this one."""
        if self._remote is not None:
            return self._remote.process(events)
        assert self.engine is not None
        return detect_batch(self.engine, events)

    def _write_snapshot(self) -> None:
        meta = _Snapshot(1, self.ledger.ledger_id, self.engine_seq, int(time.time() * 1000))
        if self._remote is not None:
            state = self._remote.snapshot()
        else:
            assert self.engine is not None
            state = self.engine.snapshot()
        data = msgspec.json.encode(meta) + b"\n" + state
        tmp = self.snapshot_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)
        dfd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._snap_due = time.monotonic() + self.config.snapshot_seconds
        self._snap_events = 0

    # ---- the writer thread -------------------------------------------------------------
    def _write_loop(self) -> None:
        intake = self.intake
        ledger = self.ledger
        max_events = self.config.intake.batch_events
        m = self.metrics
        while True:
            items = intake.take(max_events, 0.5)
            if not items:
                if intake.closed and not intake.depth:
                    return
                try:
                    ledger.maybe_checkpoint()
                except Exception as exc:
                    log.error("A timed checkpoint failed with %s.", type(exc).__name__)
                continue
            c0 = time.thread_time()
            events = list(itertools.chain.from_iterable(it.events for it in items))
            prepared, key_id = prepared_of(items)
            t0 = time.perf_counter()
            results: list[Appended] | None = None
            error: BaseException | None = None
            for attempt in range(3):
                try:
                    results = ledger.append_batch(events, prepared, key_id)
                    break
                except Exception as exc:  # a database failure: retried, then reported to the senders
                    error = exc
                    log.error("A ledger commit of %d events failed with %s (attempt %d).", len(events),
                              type(exc).__name__, attempt + 1)
                    time.sleep(0.2 * (attempt + 1))
            m.commit.observe(time.perf_counter() - t0)
            m.batch.observe(len(events))
            if results is not None:
                new = sum(map(_is_new, results))  # C-level count: a generator costs ~0.3 µs per event
                m.stored.inc(new)
                m.duplicates.inc(len(results) - new)
                self.stored += new
                self._commits.append((time.monotonic(), len(events)))
            self._complete(items, results, error)
            intake.release(len(events))
            m.cpu.labels("writer").inc(time.thread_time() - c0)

    def _complete(self, items: list[_Item], results: list[Appended] | None, error: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        pos = 0
        exc = None if results is not None else ClosingError(
            f"the ledger could not commit: {type(error).__name__ if error else 'unknown error'}")
        for it in items:
            n = len(it.events)
            value = results[pos:pos + n] if results is not None else None
            pos += n
            if it.future is None:
                if exc is not None:
                    # Nobody waits for these (syslog): keep them where an operator finds them.
                    for e in it.events:
                        self.quarantine.reject(it.origin, f"event {e.id}", f"not stored: {exc}",
                                               msgspec.json.encode(e))
                continue
            if it.loop is None:
                if exc is not None:
                    it.future.set_exception(exc)
                else:
                    it.future.set_result(value)
            else:
                by_loop.setdefault(it.loop, []).append((it.future, value, exc))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, batch)

    def _on_stored(self, stored: Sequence[tuple[int, AccessEvent]]) -> None:
        # Runs in the writer thread after the commit; blocking here when detection is behind
        # is the backpressure that keeps its queue bounded.
        self._det_q.put((time.time(), list(stored)))
        self._hooked_seq = stored[-1][0]

    # ---- the detection thread ----------------------------------------------------------
    def _detect_loop(self) -> None:
        m = self.metrics
        interval = self.config.snapshot_seconds
        self._snap_due = time.monotonic() + interval
        while True:
            try:
                item = self._det_q.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() >= self._snap_due and self._snap_events:
                    self._safe_snapshot()
                continue
            if item is None:
                break
            c0 = time.thread_time()
            remote_cpu = self._remote.cpu_s if self._remote is not None else 0.0
            committed, stored = item
            events = [e for _, e in stored if e.source != API_SOURCE]
            try:
                alerts = self._detect(events) if events else []
            except Exception as exc:
                self.failed = exc
                log.exception("Detection failed with %s; events stay in the ledger and are replayed at restart.",
                              type(exc).__name__)
                continue
            if alerts:
                self._raise(alerts)
            self.engine_seq = stored[-1][0]
            self._snap_events += len(stored)
            spent = time.thread_time() - c0
            if self._remote is not None:
                spent += self._remote.cpu_s - remote_cpu
            m.cpu.labels("detection").inc(spent)
            now = time.time()
            m.lag.set(now - committed)
            if events:
                m.event_age.set(now - events[-1].time / 1000)
            if time.monotonic() >= self._snap_due or self._snap_events >= self.config.snapshot_events:
                self._safe_snapshot()
        self._safe_snapshot()

    def _safe_snapshot(self) -> None:
        try:
            self._write_snapshot()
        except Exception as exc:
            log.error("Writing the engine snapshot failed with %s.", type(exc).__name__)

    def _raise(self, alerts: list[Alert]) -> None:
        """Store new alert versions (already stored ones come from a replay: skipped) and deliver them."""
        for alert in alerts:
            channels = self.dispatcher.channels_for(alert)
            now = int(time.time() * 1000)
            n = self.store.add(alert, channels, now)
            if n is None:
                continue
            self.metrics.alerts.labels(alert.severity).inc()
            self.dispatcher.submit(n, alert, channels)
            for cb in list(self._alert_callbacks):
                try:
                    cb(alert, now)
                except Exception as exc:
                    log.warning("An alert callback failed with %s.", type(exc).__name__)

    def on_alert(self, callback: Callable[[Alert, int], None]) -> Callable[[], None]:
        """Call `callback(alert, raised_ms)` for every new alert version (in the detection thread)."""
        self._alert_callbacks.append(callback)
        return lambda: self._alert_callbacks.remove(callback)

    # ---- intake API (used by the web layer and the listener) ------------------------------
    def admit(self) -> None:
        """Refuse a new request when the queue is nearly full (BusyError) or the service stops (ClosingError)."""
        if self.intake.closed or self._closed:
            raise ClosingError("the service is stopping")
        cfg = self.config.intake
        if self.intake.depth >= cfg.high_water * self.intake.capacity:
            raise BusyError(self._retry_after(), "the intake queue is nearly full")
        if self._active_requests >= self.config.http.max_requests:
            raise BusyError(1, "too many ingest requests at once")

    def _retry_after(self) -> int:
        # Seconds for the queue to drain at the recent commit rate, at least one.
        rate = max(1000.0, self.commit_rate())
        return max(1, min(60, int(self.intake.depth / rate) + 1))

    def commit_rate(self) -> float:
        """Events committed per second over the last few seconds."""
        commits = list(self._commits)
        if len(commits) < 2:
            return 0.0
        span = time.monotonic() - commits[0][0]
        return sum(n for _, n in commits[1:]) / span if span > 0 else 0.0

    def wait_detected(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued is committed and detected (for the demo and tests)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.intake.depth and self.engine_seq >= self._hooked_seq and self._det_q.empty():
                return True
            time.sleep(0.01)
        return False

    async def ingest(self, fmt: Format, body: bytes, principal: Principal, origin: str,
                     mapping: str | None = None) -> IngestResult:
        """Decode a request body, queue its events, and return once they are durable in the ledger."""
        self._active_requests += 1
        try:
            return await self._ingest(fmt, body, principal, origin, mapping)
        finally:
            self._active_requests -= 1

    def mapping(self, name: str) -> Mapping:
        """A named mapping: configured ones first, then the shipped ones; raises ConfigError."""
        found = self._mappings.get(name)
        if found is None:
            if "/" in name or name.startswith("."):
                raise ConfigError(f"no mapping named {name!r}")
            found = self._mappings[name] = load_mapping(name)
        return found

    async def _ingest(self, fmt: Format, body: bytes, principal: Principal, origin: str,
                      mapping: str | None) -> IngestResult:
        loop = asyncio.get_running_loop()
        collect = _Collect(self.quarantine)
        result = IngestResult()
        if fmt == "ndjson" and self._pool is not None and len(body) > (256 << 10):
            pieces = _split_lines(body, 2 << 20)
            futures = [asyncio.ensure_future(self._pool.decode(piece, origin, principal.source, first))
                       for piece, first in pieces]
            pending: list[asyncio.Future[list[Appended]]] = []
            for fut in futures:
                decoded = await fut
                for location, reason, raw in decoded.rejects:
                    collect.reject(origin, location, reason, raw)
                if decoded.error:
                    result.error = decoded.error
                    continue
                events, prepared = decoded_events(decoded)
                pending += await self._queue(events, origin, "http", prepared, decoded.key_id)
            return await self._finish(pending, collect, result)
        the_mapping = self.mapping(mapping) if fmt == "mapped" and mapping is not None else None
        try:
            if len(body) > (64 << 10):
                # Off the event loop: a large body takes long enough to delay other senders.
                events = await loop.run_in_executor(self._threads, decode_body, fmt, body, origin, principal.source,
                                                    collect, the_mapping)
            else:
                events = decode_body(fmt, body, origin, principal.source, collect, the_mapping)
        except InputFormatError as exc:
            result.error = exc.reason
            events = []
        pending = await self._queue(events, origin, "http")
        return await self._finish(pending, collect, result)

    async def _queue(self, events: list[AccessEvent], origin: str, channel: str,
                     prepared: list[Prepared] | None = None, key_id: str = ""
                     ) -> list[asyncio.Future[list[Appended]]]:
        out: list[asyncio.Future[list[Appended]]] = []
        step = self.config.intake.chunk_events
        for i in range(0, len(events), step):
            part = events[i:i + step]
            fut = await self.intake.put(part, origin, wait=True,
                                        prepared=prepared[i:i + step] if prepared is not None else None,
                                        key_id=key_id)
            assert fut is not None
            out.append(fut)
        if events:
            self.metrics.received.labels(channel).inc(len(events))
        return out

    async def _finish(self, pending: list[asyncio.Future[list[Appended]]], collect: _Collect,
                      result: IngestResult) -> IngestResult:
        for fut in pending:
            appended = await fut
            result.accepted += len(appended)
            result.new += sum(map(_is_new, appended))
        result.duplicates = result.accepted - result.new
        result.rejected = collect.count
        result.issues = collect.issues
        if collect.count:
            self.metrics.quarantined.labels("http").inc(collect.count)
        return result

    async def _syslog_sink(self, events: list[AccessEvent], origin: str) -> None:
        good = [e for e in events if e.id and e.source != "@ledger"]
        await self.intake.put(good, origin, wait=True, track=False)
        self.metrics.received.labels("syslog").inc(len(good))

    def submit_blocking(self, events: Sequence[AccessEvent], origin: str = "library",
                        timeout: float | None = None) -> list[Appended]:
        """Queue events from a thread and wait until they are durable (for embedding and tests)."""
        return self.intake.put_blocking(list(events), origin, timeout).result()

    # ---- the service's own audit trail -----------------------------------------------------
    def audit_call(self, *, who: str, role: str, method: str, path: str, query: str, status: int,
                   address: str, seconds: float, detail: dict[str, Any] | None = None) -> None:
        """Record one API call (who, when, what, answer) in the audit log; analysts' reads also in the ledger.

        Why both: the JSON-lines log is for operations (every call, ingest included); the
        ledger entry makes who looked at which alerts as tamper-evident as the hospital's
        own trail. Ingest calls are not put in the ledger: their events are, with the token's source.
        """
        now = int(time.time() * 1000)
        line: dict[str, Any] = {"time": now, "who": who, "role": role, "method": method, "path": path,
                                "query": query, "status": status, "address": address,
                                "ms": round(seconds * 1000, 2)}
        if detail:
            line.update(detail)
        data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        with self._audit_lock:
            if self._audit_file is not None:
                self._audit_file.write(data)
                self._audit_file.flush()
        if role in ("analyst", "admin", "metrics") and not self.intake.closed:
            action = "read" if method == "GET" and path.count("/") >= 2 else ("search" if method == "GET" else "other")
            event = AccessEvent(
                id=uuid.uuid4().hex, time=now, account=who, action=action, actor_kind="human",
                outcome="success" if status < 400 else "denied", client="sentinelle-api", address=address,
                source=API_SOURCE, query=f"{method} {path}" + (f"?{query}" if query else ""),
            )
            with contextlib.suppress(SentinelleError):
                self.intake.put_blocking([event], "api-audit", force=True)

    # ---- serving -----------------------------------------------------------------------
    def _ssl_context(self, cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def serve(self, *, install_signals: bool = True) -> None:
        """Listen (HTTP, syslog) until `request_stop()` or SIGTERM/SIGINT, then drain and close everything."""
        if not self._started:
            self.start()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_requested = asyncio.Event()
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop_requested.set)
        server: _QuietServer | None = None
        task: asyncio.Task[None] | None = None
        sock: socket.socket | None = None
        try:
            await self._start_listener()
            sock = self._http_socket()
            server = _QuietServer(self._uvicorn_config())
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if task.done():
                task.result()  # it failed to start: raise why
            self._write_ready()
            self._ready.set()
            log.info("Listening: %s.", ", ".join(f"{k} {v}" for k, v in sorted(self.ports.items())))
            stop_wait = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
        finally:
            # Stop taking (requests in progress finish: uvicorn waits for them), then drain.
            if server is not None:
                server.should_exit = True
            if self.listener is not None:
                await self.listener.stop()
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
            if sock is not None:
                sock.close()
            await loop.run_in_executor(None, self.close)

    async def _start_listener(self) -> None:
        sl = self.config.syslog
        if sl.tcp_port is None and sl.tls_port is None and sl.udp_port is None:
            return
        tls_ctx = self._ssl_context(sl.tls_cert, sl.tls_key, sl.tls_client_ca) if sl.tls_port is not None else None
        listener = SyslogListener(self._syslog_sink, self.quarantine, host=sl.host, tcp_port=sl.tcp_port,
                                  tls_port=sl.tls_port, udp_port=sl.udp_port, ssl_context=tls_ctx,
                                  max_frame=sl.max_frame_bytes, udp_buffer=sl.udp_buffer)
        self.listener = listener
        await listener.start()
        self.metrics.udp_dropped.set_function(lambda: float(listener.stats.udp_dropped))
        self.ports.update({f"syslog_{k}": v for k, v in listener.ports.items()})

    def _http_socket(self) -> socket.socket:
        host, port = self.config.http.host, self.config.http.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every answer waits for the client's delayed ACK (~40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"http: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.ports["http"] = sock.getsockname()[1]
        return sock

    def _uvicorn_config(self) -> Any:
        import uvicorn

        from sentinelle.web import create_app

        http = self.config.http
        return uvicorn.Config(
            create_app(self), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=30,
            ssl_certfile=http.tls_cert or None, ssl_keyfile=http.tls_key or None,
            http="httptools" if _has("httptools") else "h11", server_header=False, proxy_headers=False,
            h11_max_incomplete_event_size=64 << 10,
        )

    def _write_ready(self) -> None:
        if not self.config.ready_file:
            return
        p = Path(self.config.ready_file)
        tmp = p.with_suffix(".tmp")
        scheme = "https" if self.config.http.tls_cert else "http"
        host = self.config.http.host
        tmp.write_text(json.dumps({"pid": os.getpid(), "ports": self.ports,
                                   "url": f"{scheme}://{host}:{self.ports['http']}"}))
        os.replace(tmp, p)

    def request_stop(self) -> None:
        """Ask a serving service to stop (from any thread)."""
        loop, ev = self._loop, self._stop_requested
        if loop is not None and ev is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    def close(self) -> None:
        """Drain the queue into the ledger, let detection finish and snapshot, close everything."""
        with self._close_lock:
            if self._closed or not self._started:
                return
            self._close()

    def _close(self) -> None:
        self.intake.close()
        if self._writer is not None:
            self._writer.join()
        self._closed = True
        if self._detector is not None:
            self._det_q.put(None)
            self._detector.join()
        if self._remote is not None:
            self._remote.close()
        with contextlib.suppress(Exception):
            self.ledger.append_note(json.dumps({"service": "stop", "pid": os.getpid()}))
        self.ledger.close()
        self.dispatcher.stop()
        self.store.close()
        self.quarantine.close()
        if self._pool is not None:
            self._pool.close()
        self._threads.shutdown(wait=False)
        with self._audit_lock:
            if self._audit_file is not None:
                self._audit_file.close()
                self._audit_file = None
        log.info("Service stopped: ledger closed at %d leaves.", self.ledger.size)

    # ---- in a background thread (demo, tests, embedding) ----------------------------------
    def start_background(self, timeout: float = 120.0) -> Service:
        """Start and serve in a background thread; returns once listening (`ports` is filled)."""
        self.start()

        def run() -> None:
            loop = _new_loop()
            try:
                loop.run_until_complete(self.serve(install_signals=False))
            except BaseException as exc:  # reported to the starter
                self._serve_error = exc
                self._ready.set()
            finally:
                loop.close()

        self._bg_thread = threading.Thread(target=run, name="sentinelle-service", daemon=True)
        self._bg_thread.start()
        if not self._ready.wait(timeout):
            raise ClosingError("the service did not start listening in time")
        if self._serve_error is not None:
            raise self._serve_error
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop a service started with `start_background` and wait for it to close."""
        self.request_stop()
        if self._bg_thread is not None:
            self._bg_thread.join(timeout)
        self.close()

    @property
    def url(self) -> str:
        """Base URL of the HTTP API once listening."""
        scheme = "https" if self.config.http.tls_cert else "http"
        host = self.config.http.host
        return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{self.ports.get('http', 0)}"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _split_lines(body: bytes, size: int) -> list[tuple[memoryview, int]]:
    """Pieces of about `size` bytes cut at line ends, each with the number of its first line.

    Views into `body`, not copies: a bulk body is megabytes and is copied once more anyway,
    into the message to the decoding worker.
    """
    out: list[tuple[memoryview, int]] = []
    view = memoryview(body)
    start = 0
    line = 1
    n = len(body)
    while start < n:
        end = body.find(b"\n", min(n, start + size) - 1)
        end = n if end < 0 else end + 1
        out.append((view[start:end], line))
        line += body.count(b"\n", start, end)
        start = end
    return out


class _QuietServer:
    """A uvicorn server that leaves signals to the service (it must drain before exiting)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def capture_signals(self) -> Any:  # the service handles SIGTERM/SIGINT itself
                return contextlib.nullcontext()

        self._server = Server(config)

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def should_exit(self) -> bool:
        return bool(self._server.should_exit)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._server.should_exit = value

    async def serve(self, sockets: list[socket.socket]) -> None:
        await self._server.serve(sockets=sockets)


# ======================================================================================
# Entry points: `sentinelle serve`, `python -m sentinelle.service`, `sentinelle demo`
# ======================================================================================


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()


def serve(config: str | Path | ServiceConfig | None = None, *, ready_file: str | None = None) -> None:
    """Run the service in the foreground until SIGTERM or SIGINT (what `sentinelle serve` calls)."""
    cfg = config if isinstance(config, ServiceConfig) else load_config(config)
    if ready_file:
        cfg = msgspec.structs.replace(cfg, ready_file=str(Path(ready_file).resolve()))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = Service(cfg)
    service.start()
    # The care context and the restored detection state are large and live for the whole
    # run: freezing them keeps every later full garbage collection from walking them again
    # (only done here, where the process is the service's own, never for an embedding app).
    gc.collect()
    gc.freeze()
    loop = _new_loop()
    try:
        loop.run_until_complete(service.serve())
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m sentinelle.service --config FILE [--ready-file FILE]`."""
    ap = argparse.ArgumentParser(prog="python -m sentinelle.service", description="Run the Sentinelle service.")
    ap.add_argument("--config", "-c", help="TOML configuration (docs/service.md)")
    ap.add_argument("--ready-file", help="write the bound ports here once listening")
    ap.add_argument("--decode-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--detect-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.decode_worker:
        _decode_worker_main()
        return
    if args.detect_worker:
        detect_worker_main()
        return
    try:
        serve(args.config, ready_file=args.ready_file)
    except SentinelleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
