"""Alerts raised online and read through the API (filters, pages), delivered to real receivers
(webhook, CEF over UDP, SMTP), metrics, proofs, and the audit trail of the analysts themselves."""

from __future__ import annotations

import email
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import msgspec
import pytest
from aiosmtpd.controller import Controller
from service_kit import ANALYST_TOKEN, DECOYS, METRICS_TOKEN, SOURCE_TOKEN, T0, audit_event, free_port, running

from sentinelle.events import format_time
from sentinelle.ledger import InclusionProof, LedgerReader
from sentinelle.respond import SIGNATURE_HEADER, verify_signature
from sentinelle.service import API_SOURCE, Service

SRC = {"Authorization": f"Bearer {SOURCE_TOKEN}", "Content-Type": "application/fhir+json"}
ANALYST = {"Authorization": f"Bearer {ANALYST_TOKEN}"}
ACCOUNTS = [f"snoop.{i}" for i in range(5)]


def decoy_read(i: int, account: str, decoy: str) -> bytes:
    return json.dumps(audit_event(i, account=account, patient=decoy, event_id=f"decoy-{i}")).encode()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("alerts")) as s:
        with httpx.Client(base_url=s.url) as c:
            for i, account in enumerate(ACCOUNTS):
                warm = audit_event(i * 60 - 10, account=account, event_id=f"warm-{i}")
                c.post("/fhir/AuditEvent", content=json.dumps(warm).encode(), headers=SRC)
                r = c.post("/fhir/AuditEvent", content=decoy_read(i * 60, account, DECOYS[i]), headers=SRC)
                assert r.status_code == 201, r.text
        assert s.wait_detected(30)
        yield s


def test_alerts_list_filters_and_pages(svc: Service) -> None:
    with httpx.Client(base_url=svc.url, headers=ANALYST) as c:
        body = c.get("/alerts").json()
        assert body["count"] == 5
        alerts = body["alerts"]
        assert {a["account"] for a in alerts} == set(ACCOUNTS)
        assert all(a["kind"] == "decoy" and a["severity"] == "critical" for a in alerts)
        assert all(DECOYS[ACCOUNTS.index(a["account"])] in a["patients"] for a in alerts)
        assert alerts[0]["raised"].endswith("Z") or "+" in alerts[0]["raised"]
        assert [a["account"] for a in c.get("/alerts", params={"account": "snoop.3"}).json()["alerts"]] == ["snoop.3"]
        assert c.get("/alerts", params={"severity": "low,medium"}).json()["count"] == 0
        assert c.get("/alerts", params={"min_severity": "high", "kind": "decoy"}).json()["count"] == 5
        since = format_time(T0 + 120 * 1000)
        assert {a["account"] for a in c.get("/alerts", params={"since": since}).json()["alerts"]} == {
            "snoop.2", "snoop.3", "snoop.4"}
        assert c.get("/alerts", params={"until": str(T0 + 60_000)}).json()["count"] == 1
        seen: list[str] = []
        page = c.get("/alerts", params={"limit": 2}).json()
        while True:
            seen += [a["id"] for a in page["alerts"]]
            if page["next"] is None:
                break
            page = c.get(page["next"]).json()
        assert len(seen) == 5 and len(set(seen)) == 5
        assert c.get("/alerts", params={"limit": 0}).status_code == 400
        assert c.get("/alerts", params={"since": "yesterday"}).status_code == 400
        one = c.get(f"/alerts/{alerts[0]['id']}").json()
        assert one["id"] == alerts[0]["id"] and one["deliveries"] == {}
        assert c.get("/alerts/ep-nope-1").status_code == 404


def test_alert_is_raised_within_a_second(svc: Service) -> None:
    with httpx.Client(base_url=svc.url) as c:
        t0 = time.time()
        r = c.post("/fhir/AuditEvent", content=decoy_read(2000, "late.snoop", DECOYS[20]), headers=SRC)
        assert r.status_code == 201
        deadline = time.time() + 5
        found: list[Any] = []
        while not found and time.time() < deadline:
            found = c.get("/alerts", params={"account": "late.snoop"}, headers=ANALYST).json()["alerts"]
        assert found
        raised = svc.store.get(found[0]["id"])
        assert raised is not None and raised.raised_ms / 1000 - t0 < 1.0


def test_metrics(svc: Service) -> None:
    assert httpx.get(f"{svc.url}/alerts").status_code == 401
    text = httpx.get(f"{svc.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['sentinelle_alerts_total{severity="critical"}'] >= 5
    assert values['sentinelle_events_received_total{channel="http"}'] >= 10
    assert values["sentinelle_ledger_events"] >= 10
    assert "sentinelle_intake_queue_events" in values and "sentinelle_detection_lag_seconds" in values
    assert values['sentinelle_requests_refused_total{reason="unauthorized"}'] >= 1


def test_inclusion_proof_and_checkpoint(svc: Service) -> None:
    svc.ledger.checkpoint()
    with httpx.Client(base_url=svc.url, headers=ANALYST) as c:
        proof = msgspec.convert(c.get("/ledger/proof", params={"source": "dpi-main", "id": "decoy-60"}).json(),
                                InclusionProof)
        assert proof.verify()
        cp = c.get("/ledger/checkpoint").json()
        assert cp["root"] == proof.root and cp["size"] == proof.size
        assert c.get("/ledger/proof", params={"source": "dpi-main", "id": "never-sent"}).status_code == 404


def test_the_analysts_are_audited_too(svc: Service) -> None:
    httpx.get(f"{svc.url}/alerts", params={"account": "snoop.1"}, headers=ANALYST)
    httpx.get(f"{svc.url}/alerts", headers={"Authorization": "Bearer wrong"})
    assert svc.wait_detected(10)
    lines = [json.loads(x) for x in (Path(svc.config.state_dir) / "audit.jsonl").read_text().splitlines()]
    mine = [x for x in lines if x["who"] == "alice" and x["path"] == "/alerts" and x["query"] == "account=snoop.1"]
    assert mine and mine[-1]["status"] == 200 and mine[-1]["returned"] == 1
    assert any(x["who"] == "anonymous" and x["status"] == 401 for x in lines)
    assert any(x["who"] == "dpi-main" and x["path"] == "/fhir/AuditEvent" and x["accepted"] == 1 for x in lines)
    with LedgerReader.open(svc.config.ledger.url) as reader:
        api = [s.event for s in reader.events(reveal=False) if s.event.source == API_SOURCE]
    assert any(e.account == "alice" and e.action == "search" and e.client == "sentinelle-api" for e in api)
    assert not [a for a in svc.store.query().items if a.alert.account == "alice"]  # not fed to detection


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def test_alerts_reach_every_channel(tmp_path: Path) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    siem = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    siem.bind(("127.0.0.1", 0))
    siem.settimeout(10)
    inbox = _Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    _Hook.received.clear()
    try:
        with running(tmp_path,
                     webhook=[{"url": f"http://127.0.0.1:{hook.server_address[1]}/", "secret": "s3",
                               "min_severity": "high"}],
                     cef=[{"host": "127.0.0.1", "port": siem.getsockname()[1], "protocol": "udp"}],
                     email=[{"host": "127.0.0.1", "port": smtp_port, "sender": "sentinelle@h.example",
                             "recipients": ["rssi@h.example"], "min_severity": "critical"}]) as svc:
            r = httpx.post(f"{svc.url}/fhir/AuditEvent", content=decoy_read(1, "intruder", DECOYS[0]), headers=SRC)
            assert r.status_code == 201
            data, _ = siem.recvfrom(65536)
            assert b"CEF:0|Sentinelle|Sentinelle|" in data and b"suser=intruder" in data
            assert svc.dispatcher.wait_idle(15)
            alert_id = svc.store.query().items[0].alert.id
            states = httpx.get(f"{svc.url}/alerts/{alert_id}", headers=ANALYST).json()["deliveries"]
            assert {ch: s["state"] for ch, s in states.items()} == {"webhook": "done", "cef": "done", "email": "done"}
        headers, body = _Hook.received[0]
        assert verify_signature(b"s3", headers[SIGNATURE_HEADER], body) and json.loads(body)["account"] == "intruder"
        assert inbox.messages and inbox.messages[0]["X-Sentinelle-Alert"] == alert_id
    finally:
        smtp.stop()
        siem.close()
        hook.shutdown()
        hook.server_close()
