"""Hands alerts to every channel, one worker thread each, with retries, backoff and a dead-letter log.

Why here and not in each channel: retrying, spacing retries out, giving up and keeping
what could not be delivered are the same for a webhook, a SIEM and a mail relay. Each
channel has its own thread and queue, so a webhook that times out never delays the
e-mail to the security officer. A delivery is retried on temporary failures with
exponential backoff (`backoff_s`, doubled each time, capped at `max_backoff_s`, with
±20 % jitter so that many services do not retry in step) up to `retries` times; a
permanent failure (a 4xx answer, a refused recipient) or the last retry sends the alert
to the dead-letter log (JSON lines: time, channel, attempts, error, the alert) from
which an operator can replay it. The store's outbox records every state, so alerts
still pending when the service stops are delivered after it restarts.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from sentinelle.detect import Alert
from sentinelle.respond.channel import Channel, DeliveryError, severity_at_least
from sentinelle.respond.store import AlertStore

__all__ = ["DeadLetter", "Dispatcher"]

log = logging.getLogger("sentinelle.respond")


class DeadLetter(msgspec.Struct, frozen=True):
    """One alert a channel gave up on, as written to the dead-letter log."""

    time: int
    channel: str
    attempts: int
    error: str
    alert: Alert


_encode = msgspec.json.Encoder().encode


class _Worker:
    """The queue and thread of one channel."""

    def __init__(self, channel: Channel, owner: Dispatcher) -> None:
        self.channel = channel
        self.owner = owner
        self.heap: list[tuple[float, int, int, Alert, int]] = []
        self.cond = threading.Condition()
        self.seq = 0
        self.busy = False
        self.stopping = False
        self.delivered = 0
        self.failed = 0
        self.dead = 0
        self.thread = threading.Thread(target=self.run, name=f"sentinelle-deliver-{channel.name}", daemon=True)

    def push(self, n: int, alert: Alert, attempts: int = 0, due: float = 0.0) -> None:
        with self.cond:
            self.seq += 1
            heapq.heappush(self.heap, (due, self.seq, n, alert, attempts))
            self.cond.notify()

    def idle(self, include_scheduled: bool = True) -> bool:
        with self.cond:
            if self.busy:
                return False
            if include_scheduled:
                return not self.heap
            return not self.heap or self.heap[0][0] > time.monotonic()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and (not self.heap or self.heap[0][0] > time.monotonic()):
                    wait = None if not self.heap else max(0.0, self.heap[0][0] - time.monotonic())
                    self.cond.wait(wait)
                if self.stopping:
                    return
                _, _, n, alert, attempts = heapq.heappop(self.heap)
                self.busy = True
            try:
                self.attempt(n, alert, attempts + 1)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()

    def attempt(self, n: int, alert: Alert, attempts: int) -> None:
        owner = self.owner
        name = self.channel.name
        try:
            self.channel.deliver(alert)
        except Exception as exc:
            permanent = isinstance(exc, DeliveryError) and exc.permanent
            reason = str(exc) if isinstance(exc, DeliveryError) else f"{name}: {type(exc).__name__}"
            self.failed += 1
            owner._report(name, "failed")
            if permanent or attempts > owner.retries:
                self.dead += 1
                owner._dead_letter(name, alert, attempts, reason)
                owner.store.mark(n, name, "dead", attempts, reason)
                owner._report(name, "dead")
                log.warning("Alert %s was not delivered to %s after %d attempt(s): %s.", alert.id, name,
                            attempts, reason)
                return
            delay = min(owner.max_backoff_s, owner.backoff_s * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
            owner.store.mark(n, name, "pending", attempts, reason)
            log.info("Delivery of alert %s to %s failed (%s); retry %d in %.1f s.", alert.id, name, reason,
                     attempts, delay)
            self.push(n, alert, attempts, time.monotonic() + delay)
            return
        self.delivered += 1
        owner.store.mark(n, name, "done", attempts)
        owner._report(name, "delivered")


class Dispatcher:
    """Delivers stored alerts to channels; call `start`, then `submit` each new alert."""

    def __init__(self, channels: Iterable[Channel], store: AlertStore, dead_letter: str | Path | None = None,
                 *, retries: int = 6, backoff_s: float = 1.0, max_backoff_s: float = 300.0,
                 on_result: Callable[[str, str], None] | None = None) -> None:
        self.channels = list(channels)
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        self.store = store
        self.dead_letter = Path(dead_letter) if dead_letter is not None else None
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_result = on_result
        self._workers = {c.name: _Worker(c, self) for c in self.channels}
        self._dl_lock = threading.Lock()
        self._started = False

    def channels_for(self, alert: Alert) -> list[str]:
        """Names of the channels whose severity floor this alert passes."""
        return [c.name for c in self.channels if severity_at_least(alert.severity, c.min_severity)]

    def start(self) -> None:
        """Start one thread per channel and queue the deliveries left pending by a previous run."""
        for name, worker in self._workers.items():
            for n, alert, attempts in self.store.pending(name):
                worker.push(n, alert, attempts)
            worker.thread.start()
        self._started = True

    def submit(self, n: int, alert: Alert, channels: Iterable[str] | None = None) -> None:
        """Queue one stored alert (store number `n`) for its channels."""
        for name in channels if channels is not None else self.channels_for(alert):
            worker = self._workers.get(name)
            if worker is not None:
                worker.push(n, alert)

    def wait_idle(self, timeout: float = 10.0, include_scheduled: bool = True) -> bool:
        """Wait until no delivery is queued or running; retries scheduled later count as queued
        unless `include_scheduled` is false."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(w.idle(include_scheduled) for w in self._workers.values()):
                return True
            time.sleep(0.01)
        return False

    def stats(self) -> dict[str, dict[str, int]]:
        """Per channel: delivered, failed attempts, dead letters, queued."""
        out = {}
        for name, w in self._workers.items():
            with w.cond:
                queued = len(w.heap)
            out[name] = {"delivered": w.delivered, "failed": w.failed, "dead": w.dead, "queued": queued}
        return out

    def stop(self, timeout: float = 5.0) -> None:
        """Let running deliveries finish (up to `timeout`), then stop; queued ones stay pending in the store."""
        if self._started:
            # Deliveries due now finish; retries scheduled later stay pending in the store.
            self.wait_idle(timeout, include_scheduled=False)
        for w in self._workers.values():
            with w.cond:
                w.stopping = True
                w.cond.notify_all()
        for w in self._workers.values():
            if w.thread.is_alive():
                w.thread.join(timeout)
        for c in self.channels:
            try:
                c.close()
            except Exception as exc:  # closing must not hide the stop
                log.warning("Closing channel %s failed with %s.", c.name, type(exc).__name__)

    def _report(self, channel: str, outcome: str) -> None:
        if self.on_result is not None:
            self.on_result(channel, outcome)

    def _dead_letter(self, channel: str, alert: Alert, attempts: int, error: str) -> None:
        if self.dead_letter is None:
            return
        line = _encode(DeadLetter(int(time.time() * 1000), channel, attempts, error, alert)) + b"\n"
        with self._dl_lock:
            self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dead_letter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
