"""`sentinelle demo`: start the service, replay a simulated hospital into it, show the alerts live.

Why its own module: the demo is a client of the service (HTTP, tokens, the alert
callback), not part of it; it shows in a minute what a deployment does all day.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from sentinelle.detect import Alert
from sentinelle.service import Service
from sentinelle.service.config import load_config
from sentinelle.service.intake import ClosingError
from sentinelle.service.tokens import hash_token, new_token

__all__ = ["DemoResult", "run_demo"]


class DemoResult(msgspec.Struct, kw_only=True):
    """What `run_demo` did."""

    events_sent: int
    events_stored: int
    seconds: float
    alerts: int
    episodes: int
    by_severity: dict[str, int]
    verify: str
    url: str
    state_dir: str


def run_demo(out: str | Path = "demo-out", *, size: str = "tiny", seed: int = 1, speed: float = 0.0,
             chunk_events: int = 2000, keep_running: bool = False,
             echo: Callable[[str], None] | None = None,
             on_alert: Callable[[Alert, float], None] | None = None) -> DemoResult:
    """Start the service, replay a simulated hospital into it over HTTP, and show alerts as they arrive.

    The hospital is simulated into `out` (kept when already there); the service's state
    (ledger, alert store) is recreated in `out/service` at every run so the replay starts
    clean. Events are POSTed as bulk NDJSON in time order, as fast as possible (`speed`
    0) or at `speed` simulated seconds per wall second. Each new alert is passed to
    `on_alert(alert, latency_s)` (latency from the POST of the batch that triggered it)
    or, by default, printed through `echo`. With `keep_running` the service stays up
    (Ctrl-C to stop) so the API can be explored: the tokens are printed.
    """
    import http.client
    import shutil
    import urllib.parse

    from sentinelle.ledger import verify
    from sentinelle.simulate import simulate

    say = echo or print
    out = Path(out)
    if not (out / "manifest.json").exists():
        say(f"Simulating a {size} hospital (seed {seed}) into {out} ...")
        simulate(out, size=size, seed=seed)
    state = out / "service"
    if state.exists():
        shutil.rmtree(state)
    source_token, analyst_token = new_token(), new_token()
    cfg = load_config(None, {
        "state_dir": str(state),
        "context": [str(out / "context")],
        "ledger": {"url": f"sqlite:///{(state / 'ledger.db').resolve()}", "key_dir": str(state / "keys"),
                   "checkpoint_events": 10_000},
        "http": {"host": "127.0.0.1", "port": 0},
        "tokens": [{"name": "simulated-dpi", "role": "source", "sha256": hash_token(source_token)},
                   {"name": "analyst", "role": "analyst", "sha256": hash_token(analyst_token)}],
    })
    service = Service(cfg)
    sent_at: dict[int, float] = {}
    raised: list[tuple[Alert, float]] = []
    lock = threading.Lock()

    def alerted(alert: Alert, raised_ms: int) -> None:
        # the POST that carried the last event seen by the alert (events are sent in time order)
        with lock:
            keys = [k for k in sent_at if k <= alert.time_ms]
            t_sent = sent_at[max(keys)] if keys else time.time()
        latency = max(0.0, raised_ms / 1000 - t_sent)
        raised.append((alert, latency))
        if on_alert is not None:
            on_alert(alert, latency)
        elif alert.version == 1:
            say(f"  NEW ALERT {alert.severity.upper():8} {alert.time[:16]}  {alert.account:<22} {alert.summary[:100]}"
                f"  [{latency * 1000:.0f} ms after its event arrived]")
        else:
            say(f"    update {alert.severity.upper():8} {alert.time[:16]}  {alert.account:<22} v{alert.version}: "
                f"{alert.patient_count} patients, score {alert.score:.2f}  [{latency * 1000:.0f} ms]")

    service.on_alert(alerted)
    service.start_background()
    say(f"Service listening on {service.url}; replaying {out / 'events'} ...")
    parsed = urllib.parse.urlsplit(service.url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=120)
    headers = {"Authorization": f"Bearer {source_token}", "Content-Type": "application/fhir+ndjson"}
    sent = 0
    t_start = time.time()
    first_event_ms: int | None = None
    decode_time = msgspec.json.Decoder(_TimeOnly)
    try:
        with open(out / "events" / "auditevents.ndjson", "rb") as f:
            while True:
                lines = list(itertools.islice(f, chunk_events))
                if not lines:
                    break
                body = b"".join(lines)
                last_ms = _event_ms(decode_time, lines[-1])
                if speed > 0 and last_ms:
                    if first_event_ms is None:
                        first_event_ms = _event_ms(decode_time, lines[0]) or last_ms
                    due = t_start + (last_ms - first_event_ms) / 1000 / speed
                    if due > time.time():
                        time.sleep(due - time.time())
                with lock:
                    sent_at[last_ms] = time.time()
                for _ in range(20):
                    conn.request("POST", "/fhir/AuditEvent/$bulk", body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 429:
                        break
                    time.sleep(float(resp.getheader("Retry-After", "1")))
                if resp.status >= 300:
                    raise ClosingError(f"the service refused a batch: HTTP {resp.status}")
                sent += len(lines)
        elapsed = time.time() - t_start
        service.wait_detected(60)
        counts = service.store.count()
        episodes = service.store.episodes()
        stored = service.stored
        say(f"Replayed {sent:,} events in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):,.0f} events/s); "
            f"{sum(counts.values())} alert versions in {episodes} episodes.")
        if keep_running:
            say(f"API: {service.url}/docs — analyst token: {analyst_token} — source token: {source_token}")
            say("Press Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
    finally:
        conn.close()
        service.stop()
    report = verify(cfg.ledger.url)
    say(f"Ledger: {report.summary().splitlines()[0]}")
    return DemoResult(events_sent=sent, events_stored=int(stored), seconds=round(elapsed, 3),
                      alerts=sum(counts.values()), episodes=episodes, by_severity=counts,
                      verify=report.summary().splitlines()[0], url=service.url, state_dir=str(state))


class _TimeOnly(msgspec.Struct):
    recorded: str = ""


def _event_ms(decoder: msgspec.json.Decoder[_TimeOnly], line: bytes) -> int:
    from sentinelle.events import parse_time

    try:
        rec = decoder.decode(line).recorded
        return parse_time(rec) if rec else 0
    except (msgspec.MsgspecError, ValueError):
        return 0
