"""Malformed and hostile inputs get clear errors, and a good sender beside them loses nothing.

Also: backpressure (429 with Retry-After when the queue is nearly full, never a drop).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_kit import SOURCE_TOKEN, audit_event, running

from sentinelle.ledger import LedgerReader
from sentinelle.service import Service

SRC = {"Authorization": f"Bearer {SOURCE_TOKEN}"}
FHIR_JSON = {**SRC, "Content-Type": "application/fhir+json"}
FHIR_XML = {**SRC, "Content-Type": "application/fhir+xml"}
NDJSON = {**SRC, "Content-Type": "application/x-ndjson"}
MB = 1 << 20

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
"""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("hostile")) as s:
        yield s


@pytest.fixture
def client(svc: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        yield c


def diagnostics(r: httpx.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return " | ".join(i["diagnostics"] for i in body["issue"])


def test_truncated_json(client: httpx.Client) -> None:
    body = json.dumps(audit_event(1)).encode()[:-30]
    r = client.post("/fhir/AuditEvent", content=body, headers=FHIR_JSON)
    assert r.status_code == 400 and "invalid JSON: truncated" in diagnostics(r)
    r = client.post("/fhir/AuditEvent/$bulk", content=body, headers=NDJSON)
    assert r.status_code == 400 and r.json()["issue"][0]["location"] == ["line 1"]


def test_invalid_utf8(client: httpx.Client) -> None:
    body = json.dumps(audit_event(1)).encode().replace(b"j.martin", b"j.m\xe9rtin")
    r = client.post("/fhir/AuditEvent", content=body, headers=FHIR_JSON)
    assert r.status_code == 400
    offset = body.index(b"\xe9")
    assert diagnostics(r) == f"invalid UTF-8: byte 0xe9 at offset {offset}"


def test_fifty_megabytes_is_too_large(client: httpx.Client) -> None:
    big = b"x" * (50 * MB)
    r = client.post("/fhir/AuditEvent/$bulk", content=big, headers=NDJSON)
    assert r.status_code == 413 and "over the limit" in diagnostics(r)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(50):
            yield b"y" * MB

    r = client.post("/fhir/AuditEvent/$bulk", content=chunks(), headers=NDJSON)
    assert r.status_code == 413
    r = client.post("/fhir/AuditEvent", content=b" " * (2 * MB), headers=FHIR_JSON)
    assert r.status_code == 413  # single resources have a smaller limit


def test_gzip_bomb(client: httpx.Client) -> None:
    bomb = gzip.compress(b"\n" * (200 * MB), compresslevel=9)
    assert len(bomb) < MB
    r = client.post("/fhir/AuditEvent/$bulk", content=bomb, headers={**NDJSON, "Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in diagnostics(r)
    r = client.post("/fhir/AuditEvent/$bulk", content=bomb[:1000], headers={**NDJSON, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "truncated" in diagnostics(r)


def test_xml_bombs_and_external_entities(client: httpx.Client) -> None:
    fhir = BILLION_LAUGHS + b'<AuditEvent xmlns="http://hl7.org/fhir"><id value="&lol9;"/></AuditEvent>'
    t0 = time.monotonic()
    r = client.post("/fhir/AuditEvent", content=fhir, headers=FHIR_XML)
    assert r.status_code == 400 and "DOCTYPE" in diagnostics(r)
    atna = BILLION_LAUGHS + b"<AuditMessage><EventIdentification EventID='&lol9;'/></AuditMessage>"
    r = client.post("/ingest/atna", content=atna, headers={**SRC, "Content-Type": "application/xml"})
    assert r.status_code in (400, 422) and ("DTD" in diagnostics(r) or "DOCTYPE" in diagnostics(r))
    xxe = EXTERNAL_ENTITY + b'<AuditEvent xmlns="http://hl7.org/fhir"><id value="&xxe;"/></AuditEvent>'
    r = client.post("/fhir/AuditEvent", content=xxe, headers=FHIR_XML)
    assert r.status_code == 400 and "root:" not in r.text
    assert time.monotonic() - t0 < 5  # refused, not expanded


def test_wrong_content_types(client: httpx.Client) -> None:
    body = json.dumps(audit_event(1)).encode()
    cases = [
        ("/fhir/AuditEvent", {**SRC, "Content-Type": "text/plain"}),
        ("/fhir/AuditEvent", SRC),  # none at all
        ("/fhir/AuditEvent/$bulk", {**SRC, "Content-Type": "application/fhir+json"}),
        ("/fhir/AuditEvent", {**SRC, "Content-Type": "application/fhir+json; charset=iso-8859-1"}),
        ("/fhir/AuditEvent", {**FHIR_JSON, "Content-Encoding": "br"}),
        ("/ingest/atna", {**SRC, "Content-Type": "application/json"}),
    ]
    for path, headers in cases:
        r = client.post(path, content=body, headers=headers)
        assert r.status_code == 415, (path, headers, r.text)
        assert "send" in diagnostics(r)


def test_readable_but_not_an_audit_event(client: httpx.Client) -> None:
    r = client.post("/fhir/AuditEvent", content=b'{"resourceType": "Patient", "id": "1"}', headers=FHIR_JSON)
    assert r.status_code == 422 and "expected a AuditEvent, got Patient" in diagnostics(r)
    r = client.post("/fhir/AuditEvent", content=b"[1, 2]", headers=FHIR_JSON)
    assert r.status_code == 422
    r = client.post("/fhir/AuditEvent", content=b"", headers=FHIR_JSON)
    assert r.status_code == 400 and "empty" in diagnostics(r)


def _ledger_ids(svc: Service) -> set[str]:
    with LedgerReader.open(svc.config.ledger.url) as reader:
        return {s.event.id for s in reader.events(reveal=False)}


def test_hostile_senders_do_not_disturb_a_good_one(svc: Service) -> None:
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def good() -> None:
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            for i in range(100):
                eid = f"good-{i}"
                r = c.post("/fhir/AuditEvent", content=json.dumps(audit_event(i, event_id=eid)).encode(),
                           headers=FHIR_JSON)
                if r.status_code == 201:
                    acked.append(eid)
                else:
                    failures.append(f"{eid}: {r.status_code} {r.text[:200]}")
        stop.set()

    def hostile(kind: int) -> None:
        with httpx.Client(base_url=svc.url, timeout=60) as c:
            while not stop.is_set():
                if kind == 0:
                    c.post("/fhir/AuditEvent/$bulk", content=b"z" * (40 * MB), headers=NDJSON)
                elif kind == 1:
                    c.post("/fhir/AuditEvent", content=BILLION_LAUGHS + b"<AuditEvent/>", headers=FHIR_XML)
                    c.post("/fhir/AuditEvent", content=b'{"resourceType": "AuditEv', headers=FHIR_JSON)
                else:
                    junk = b"\n".join(b'{"resourceType":"AuditEvent","id":"\xff' + bytes([i % 250]) + b'"'
                                      for i in range(2000))
                    c.post("/fhir/AuditEvent/$bulk", content=junk, headers=NDJSON)

    threads = [threading.Thread(target=hostile, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    good()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
    assert len(acked) == 100
    assert {f"good-{i}" for i in range(100)} <= _ledger_ids(svc)


def test_backpressure_answers_429_and_loses_nothing(tmp_path: Path) -> None:
    with running(tmp_path, intake={"queue_events": 100, "high_water": 0.5}) as svc:
        body = b"".join(json.dumps(audit_event(i, event_id=f"bp-{i}")).encode() + b"\n" for i in range(80))
        results: list[httpx.Response] = []
        # A disk that stalls: the writer cannot commit while the test holds the ledger.
        svc.ledger._lock.acquire()
        try:
            first = threading.Thread(target=lambda: results.append(
                httpx.post(f"{svc.url}/fhir/AuditEvent/$bulk", content=body, headers=NDJSON, timeout=60)))
            first.start()
            end = time.monotonic() + 10
            while svc.intake.depth < 80 and time.monotonic() < end:
                time.sleep(0.01)
            assert not results  # not acknowledged: not durable yet
            busy = httpx.post(f"{svc.url}/fhir/AuditEvent", content=json.dumps(audit_event(999)).encode(),
                              headers=FHIR_JSON)
            assert busy.status_code == 429
            assert int(busy.headers["retry-after"]) >= 1
            assert "retry after" in diagnostics(busy)
        finally:
            svc.ledger._lock.release()
        first.join(30)
        assert results[0].status_code == 200 and results[0].headers["x-sentinelle-new"] == "80"
        retry = httpx.post(f"{svc.url}/fhir/AuditEvent", content=json.dumps(audit_event(999)).encode(),
                           headers=FHIR_JSON)
        assert retry.status_code == 201
        assert {f"bp-{i}" for i in range(80)} <= _ledger_ids(svc)
