"""The bounded intake queue, its group-committing writer, the metrics and ingest results."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

import msgspec

from sentinelle.errors import SentinelleError
from sentinelle.events import AccessEvent
from sentinelle.ledger import Appended
from sentinelle.ledger.records import Prepared

log = logging.getLogger("sentinelle.service")

# ======================================================================================
# The intake queue (bounded, in events) and its group-committing writer
# ======================================================================================


#: Submissions of at most this many events jump ahead of bulk chunks in the intake queue.
SMALL_ITEM = 64


class BusyError(SentinelleError):
    """The intake queue is full: the caller should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int, reason: str = "the intake queue is full") -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ClosingError(SentinelleError):
    """The service is stopping (or its ledger failed) and takes no more events."""


class _Item:
    __slots__ = ("events", "future", "key_id", "loop", "origin", "prepared", "t0")

    def __init__(self, events: list[AccessEvent], future: Any, loop: asyncio.AbstractEventLoop | None,
                 origin: str, prepared: list[Prepared] | None = None, key_id: str = "") -> None:
        self.events = events
        self.future = future  # asyncio.Future (loop set), concurrent.futures.Future, or None
        self.loop = loop
        self.origin = origin
        self.prepared = prepared  # the events' records made by a decoding worker's Sealer
        self.key_id = key_id
        self.t0 = time.monotonic()


class IntakeQueue:
    """Events waiting for the ledger, bounded by `capacity` events; thread-safe, asyncio-friendly.

    An item counts against the capacity until the writer committed it, so the bound
    covers everything accepted and not yet durable.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.depth = 0
        self.closed = False
        self._items: deque[_Item] = deque()
        # Small submissions (single events, a syslog read) go first: a one-event request
        # must not wait behind the commit of a 10,000-event bulk chunk queued before it.
        self._small: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._space: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.depth == 0 or self.depth + n <= self.capacity

    async def put(self, events: list[AccessEvent], origin: str, *, wait: bool = True,
                  track: bool = True, prepared: list[Prepared] | None = None,
                  key_id: str = "") -> asyncio.Future[list[Appended]] | None:
        """Queue events (waiting for room when `wait`); returns a future of their ledger results.

        `prepared`: their records made in advance by a `Sealer` with key `key_id`.
        """
        loop = asyncio.get_running_loop()
        n = len(events)
        while True:
            with self._cond:
                if self.closed:
                    raise ClosingError("the service is stopping")
                if self._fits(n):
                    fut: asyncio.Future[list[Appended]] | None = loop.create_future() if track else None
                    self._push(_Item(events, fut, loop, origin, prepared, key_id))
                    self.depth += n
                    self._cond.notify_all()
                    return fut
                if not wait:
                    raise BusyError(1)
                waiter: asyncio.Future[None] = loop.create_future()
                self._space.append((loop, waiter))
            await waiter

    def put_blocking(self, events: list[AccessEvent], origin: str, timeout: float | None = None,
                     force: bool = False) -> concurrent.futures.Future[list[Appended]]:
        """Queue events from a thread (waiting for room unless `force`); returns a future of their results."""
        fut: concurrent.futures.Future[list[Appended]] = concurrent.futures.Future()
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not force and not self._fits(len(events)) and not self.closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise BusyError(1)
                self._cond.wait(left)
            if self.closed:
                raise ClosingError("the service is stopping")
            self._push(_Item(events, fut, None, origin))
            self.depth += len(events)
            self._cond.notify_all()
        return fut

    def _push(self, item: _Item) -> None:
        (self._small if len(item.events) <= SMALL_ITEM else self._items).append(item)

    def take(self, max_events: int, timeout: float) -> list[_Item]:
        """Items queued so far, small ones first, up to `max_events` events (at least one item);
        waits up to `timeout` when nothing is queued."""
        with self._cond:
            if not self._items and not self._small:
                self._cond.wait(timeout)
            out: list[_Item] = []
            n = 0
            for items in (self._small, self._items):
                while items and (not out or n + len(items[0].events) <= max_events):
                    item = items.popleft()
                    out.append(item)
                    n += len(item.events)
            return out

    def release(self, n: int) -> None:
        """Events left the queue (committed or failed): make room and wake the waiters."""
        with self._cond:
            self.depth -= n
            waiters = list(self._space)
            self._space.clear()
            self._cond.notify_all()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(_wake, fut)

    def close(self) -> None:
        """Take no more events; the writer drains what is queued."""
        with self._cond:
            self.closed = True
            waiters = list(self._space)
            self._space.clear()
            self._cond.notify_all()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)


def prepared_of(items: list[_Item]) -> tuple[list[Prepared | None] | None, str]:
    """The prepared records of a batch of items, per event (None where an item has none), and their key."""
    keyed = [it for it in items if it.prepared is not None]
    if not keyed or len({it.key_id for it in keyed}) != 1:
        return None, ""
    out: list[Prepared | None] = []
    for it in items:
        if it.prepared is not None:
            out.extend(it.prepared)
        else:
            out.extend([None] * len(it.events))
    return out, keyed[0].key_id


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


# ======================================================================================
# Metrics
# ======================================================================================


class _Metrics:
    """The Prometheus metrics of one service (own registry: several services may share a process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter("sentinelle_events_received", "Events decoded and queued, by channel.",
                                ["channel"], registry=r)
        self.stored = Counter("sentinelle_events_stored", "Events appended to the ledger (new).", registry=r)
        self.duplicates = Counter("sentinelle_events_duplicate",
                                  "Events re-sent and found already in the ledger (not stored again).", registry=r)
        self.quarantined = Counter("sentinelle_events_quarantined", "Records refused and set aside, by channel.",
                                   ["channel"], registry=r)
        self.refused = Counter("sentinelle_requests_refused", "HTTP requests refused, by reason.", ["reason"],
                               registry=r)
        self.alerts = Counter("sentinelle_alerts", "Alert versions raised, by severity.", ["severity"], registry=r)
        self.deliveries = Counter("sentinelle_deliveries", "Delivery attempts, by channel and outcome.",
                                  ["channel", "outcome"], registry=r)
        self.queue = Gauge("sentinelle_intake_queue_events", "Events accepted and not yet durable.", registry=r)
        self.det_queue = Gauge("sentinelle_detection_queue_batches", "Committed batches waiting for detection.",
                               registry=r)
        self.lag = Gauge("sentinelle_detection_lag_seconds",
                         "Seconds between a batch's ledger commit and its detection (last batch).", registry=r)
        self.event_age = Gauge("sentinelle_event_age_seconds",
                               "Wall clock minus event time of the last event detected (how late sources report).",
                               registry=r)
        self.ledger_size = Gauge("sentinelle_ledger_events", "Leaves in the ledger (events and ledger records).",
                                 registry=r)
        self.udp_dropped = Gauge("sentinelle_syslog_udp_dropped", "UDP datagrams dropped because the queue was full.",
                                 registry=r)
        self.cpu = Counter("sentinelle_thread_cpu_seconds",
                           "CPU time of the service's own threads (detection: with its process, when apart).",
                           ["thread"], registry=r)
        self.commit = Histogram("sentinelle_ledger_commit_seconds", "Duration of one group commit.", registry=r,
                                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.batch = Histogram("sentinelle_ledger_batch_events", "Events per group commit.", registry=r,
                               buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000, 20000, 50000))

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ======================================================================================
# Results of an ingest
# ======================================================================================


class IngestResult(msgspec.Struct, kw_only=True):
    """What one request's events became: accepted (durable), new, already stored, rejected with why."""

    accepted: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    issues: list[tuple[str, str]] = msgspec.field(default_factory=list)
    error: str = ""  # the whole input was not in the format


class _Snapshot(msgspec.Struct):
    version: int
    ledger: str
    seq: int
    time: int


