"""Webhook delivery against a real local HTTP receiver: signature, retries with backoff, dead letters."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from service_kit import free_port, make_alert

from sentinelle.respond import SIGNATURE_HEADER, AlertStore, DeliveryError, Dispatcher, WebhookChannel, verify_signature

SECRET = b"shared-webhook-secret"


class Receiver:
    """An HTTP server that answers the statuses it is told to, in order, then 200."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append(({k: v for k, v in self.headers.items()}, body, time.monotonic()))
                status = owner.statuses.pop(0) if owner.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_signed_body_is_the_alert(receiver: Receiver) -> None:
    alert = make_alert(1)
    WebhookChannel(receiver.url, SECRET).deliver(alert)
    headers, body, _ = receiver.received[0]
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    assert not verify_signature(b"another secret", headers[SIGNATURE_HEADER], body)
    assert not verify_signature(SECRET, headers[SIGNATURE_HEADER], body.replace(b"j.martin", b"x.other"))
    assert json.loads(body)["id"] == alert.id and json.loads(body)["severity"] == "high"
    assert headers["Idempotency-Key"] == alert.id


def test_old_signature_is_refused() -> None:
    from sentinelle.respond import sign

    header = sign(SECRET, b"{}", int(time.time()) - 3600)
    assert not verify_signature(SECRET, header, b"{}")


def test_status_classes(receiver: Receiver) -> None:
    channel = WebhookChannel(receiver.url, SECRET)
    receiver.statuses = [503]
    with pytest.raises(DeliveryError) as transient:
        channel.deliver(make_alert(1))
    assert not transient.value.permanent
    receiver.statuses = [400]
    with pytest.raises(DeliveryError) as permanent:
        channel.deliver(make_alert(1))
    assert permanent.value.permanent
    with pytest.raises(DeliveryError) as unreachable:
        WebhookChannel(f"http://127.0.0.1:{free_port()}/", SECRET, timeout_s=1).deliver(make_alert(1))
    assert not unreachable.value.permanent


def test_retries_with_backoff_then_delivers(tmp_path: Path, receiver: Receiver) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    receiver.statuses = [500, 502, 503]
    d = Dispatcher([WebhookChannel(receiver.url, SECRET)], store, tmp_path / "dead.jsonl", retries=5, backoff_s=0.1)
    d.start()
    alert = make_alert(1)
    n = store.add(alert, d.channels_for(alert))
    assert n is not None
    d.submit(n, alert)
    deadline = time.monotonic() + 10
    while store.pending("webhook") and time.monotonic() < deadline:
        time.sleep(0.02)
    d.stop()
    times = [t for _, _, t in receiver.received]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.08 and gaps[2] > gaps[0] * 1.8  # 0.1 s, then 0.2 s, then 0.4 s (±20 % jitter)
    assert store.deliveries(n)["webhook"] == ("done", 4, "")
    assert not (tmp_path / "dead.jsonl").exists()


def test_permanent_failure_goes_to_the_dead_letter_log(tmp_path: Path, receiver: Receiver) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    receiver.statuses = [410]
    d = Dispatcher([WebhookChannel(receiver.url, SECRET)], store, tmp_path / "dead.jsonl", retries=5, backoff_s=0.05)
    d.start()
    alert = make_alert(2, severity="critical")
    n = store.add(alert, ["webhook"])
    assert n is not None
    d.submit(n, alert)
    assert d.wait_idle(10)
    d.stop()
    assert len(receiver.received) == 1  # not retried
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert dead[0]["channel"] == "webhook" and dead[0]["alert"]["id"] == alert.id and "410" in dead[0]["error"]
    assert store.deliveries(n)["webhook"][0] == "dead"
    assert d.stats()["webhook"]["dead"] == 1


def test_unreachable_receiver_exhausts_retries(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/", SECRET, timeout_s=1)
    d = Dispatcher([channel], store, tmp_path / "dead.jsonl", retries=2, backoff_s=0.01)
    d.start()
    alert = make_alert(3)
    n = store.add(alert, ["webhook"])
    assert n is not None
    d.submit(n, alert)
    assert d.wait_idle(10)
    d.stop()
    assert store.deliveries(n)["webhook"][:2] == ("dead", 3)
    assert json.loads((tmp_path / "dead.jsonl").read_text())["attempts"] == 3


def test_pending_deliveries_survive_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    alert = make_alert(4)
    store.add(alert, ["webhook"])  # raised, then the service stopped before delivering
    store.close()
    store = AlertStore(tmp_path / "alerts.db")
    d = Dispatcher([WebhookChannel(receiver.url, SECRET)], store, None)
    d.start()
    assert d.wait_idle(10)
    d.stop()
    assert [json.loads(b)["id"] for _, b, _ in receiver.received] == [alert.id]


def test_severity_floor(tmp_path: Path, receiver: Receiver) -> None:
    d = Dispatcher([WebhookChannel(receiver.url, SECRET, min_severity="high")], AlertStore(tmp_path / "a.db"))
    assert d.channels_for(make_alert(1, severity="medium")) == []
    assert d.channels_for(make_alert(1, severity="critical")) == ["webhook"]
