"""HTTP intake: tokens, every route and format, idempotency, OperationOutcome answers naming the records."""

from __future__ import annotations

import gzip
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_kit import (
    ANALYST_TOKEN,
    METRICS_TOKEN,
    OTHER_SOURCE_TOKEN,
    SOURCE_TOKEN,
    TESTDATA,
    audit_event,
    running,
)

from sentinelle.ledger import LedgerReader, load_keyring
from sentinelle.service import Service

SRC = {"Authorization": f"Bearer {SOURCE_TOKEN}"}
FHIR_JSON = {**SRC, "Content-Type": "application/fhir+json"}
NDJSON = {**SRC, "Content-Type": "application/fhir+ndjson"}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("intake")) as s:
        yield s


@pytest.fixture
def client(svc: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        yield c


def stored(svc: Service) -> dict[tuple[str, str], int]:
    """(source, id) -> how many times it is in the ledger."""
    ring = load_keyring(key_dir=svc.config.ledger.key_dir)
    out: dict[tuple[str, str], int] = {}
    with LedgerReader.open(svc.config.ledger.url, ring) as reader:
        for s in reader.events():
            key = (s.event.source, s.event.id)
            out[key] = out.get(key, 0) + 1
    return out


def ndjson(events: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_openapi_documents_every_route_and_the_bearer_scheme(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    for path in ("/fhir/AuditEvent", "/fhir", "/fhir/AuditEvent/$bulk", "/ingest/ndjson", "/ingest/atna",
                 "/ingest/syslog", "/ingest/{mapping}", "/alerts", "/alerts/{alert_id}", "/metrics",
                 "/ledger/proof", "/ledger/checkpoint"):
        assert path in doc["paths"], path
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    bulk = doc["paths"]["/fhir/AuditEvent/$bulk"]["post"]
    assert "application/fhir+ndjson" in bulk["requestBody"]["content"]
    assert "429" in bulk["responses"] and "413" in bulk["responses"]


def test_tokens_and_roles(client: httpx.Client) -> None:
    body = json.dumps(audit_event(1)).encode()
    r = client.post("/fhir/AuditEvent", content=body, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    r = client.post("/fhir/AuditEvent", content=body,
                    headers={"Content-Type": "application/fhir+json", "Authorization": "Bearer nope"})
    assert r.status_code == 401 and "unknown" in r.json()["issue"][0]["diagnostics"]
    r = client.post("/fhir/AuditEvent", content=body,
                    headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {ANALYST_TOKEN}"})
    assert r.status_code == 403
    assert client.get("/alerts", headers=SRC).status_code == 403
    assert client.get("/alerts").status_code == 401
    assert client.get("/alerts", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 403
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}


def test_single_event_is_created_once(svc: Service, client: httpx.Client) -> None:
    body = json.dumps(audit_event(10, event_id="single-1")).encode()
    first = client.post("/fhir/AuditEvent", content=body, headers=FHIR_JSON)
    assert first.status_code == 201, first.text
    assert first.headers["x-sentinelle-new"] == "1"
    again = client.post("/fhir/AuditEvent", content=body, headers=FHIR_JSON)
    assert again.status_code == 200 and again.headers["x-sentinelle-new"] == "0"
    assert "1 already stored" in again.json()["issue"][0]["diagnostics"]
    assert stored(svc)[("dpi-main", "single-1")] == 1


def test_the_token_names_the_source(svc: Service, client: httpx.Client) -> None:
    """A source cannot write (or pre-empt the ids of) another source's events by naming it in the payload."""
    body = json.dumps(audit_event(11, event_id="shared-id", source="lab")).encode()
    assert client.post("/fhir/AuditEvent", content=body, headers=FHIR_JSON).status_code == 201
    other = {"Authorization": f"Bearer {OTHER_SOURCE_TOKEN}", "Content-Type": "application/fhir+json"}
    assert client.post("/fhir/AuditEvent", content=body, headers=other).status_code == 201  # not a duplicate
    got = stored(svc)
    assert got[("dpi-main", "shared-id")] == 1 and got[("lab", "shared-id")] == 1


def test_bundle_entries_named_in_the_outcome(svc: Service, client: httpx.Client) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": audit_event(20, event_id="b-1")},
        {"resource": {"resourceType": "Patient", "id": "p"}},
        {"resource": audit_event(21, event_id="b-2")},
        {"resource": {"id": "no-type"}},
    ]}
    r = client.post("/fhir", content=json.dumps(bundle).encode(), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert r.headers["x-sentinelle-accepted"] == "2" and r.headers["x-sentinelle-rejected"] == "1"
    issues = r.json()["issue"]
    assert issues[1]["location"][0].endswith("entry 4") and "resourceType" in issues[1]["diagnostics"]
    got = stored(svc)
    assert ("dpi-main", "b-1") in got and ("dpi-main", "b-2") in got
    r = client.post("/fhir", content=json.dumps(audit_event(22)).encode(), headers=FHIR_JSON)
    assert r.status_code == 422 and "expected a Bundle" in r.json()["issue"][0]["diagnostics"]


def test_bulk_ndjson_keeps_good_lines_and_names_bad_ones(svc: Service, client: httpx.Client) -> None:
    lines = [json.dumps(audit_event(100 + i, event_id=f"bulk-{i}")).encode() for i in range(6)]
    lines[1] = lines[1][:40]  # truncated
    lines[3] = lines[3].replace(b"j.martin", b"j.mart\xffin")  # invalid UTF-8
    lines[4] = json.dumps({"resourceType": "Patient", "id": "x"}).encode()
    r = client.post("/fhir/AuditEvent/$bulk", content=b"\n".join(lines) + b"\n", headers=NDJSON)
    assert r.status_code == 200, r.text
    assert (r.headers["x-sentinelle-accepted"], r.headers["x-sentinelle-rejected"]) == ("3", "3")
    issues = {i["location"][0]: i["diagnostics"] for i in r.json()["issue"] if "location" in i}
    assert set(issues) == {"line 2", "line 4", "line 5"}
    assert "invalid JSON" in issues["line 2"]
    assert issues["line 4"].startswith("invalid UTF-8: byte 0xff")
    assert "not an AuditEvent" in issues["line 5"]
    got = stored(svc)
    assert all(("dpi-main", f"bulk-{i}") in got for i in (0, 2, 5))
    assert svc.quarantine.count >= 3


def test_bulk_alias_and_gzip(svc: Service, client: httpx.Client) -> None:
    body = gzip.compress(ndjson([audit_event(200 + i, event_id=f"gz-{i}") for i in range(50)]))
    r = client.post("/ingest/ndjson", content=body, headers={**NDJSON, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["x-sentinelle-new"] == "50"


def test_fhir_xml_audit_event(svc: Service, client: httpx.Client) -> None:
    xml = b"""<AuditEvent xmlns="http://hl7.org/fhir">
  <id value="xml-1"/>
  <type><system value="http://terminology.hl7.org/CodeSystem/audit-event-type"/><code value="rest"/></type>
  <subtype><system value="http://hl7.org/fhir/restful-interaction"/><code value="read"/></subtype>
  <action value="R"/>
  <recorded value="2025-01-15T10:00:00.000Z"/>
  <outcome value="0"/>
  <agent><who><identifier><value value="x.ml"/></identifier></who><requestor value="true"/></agent>
  <source><observer><display value="dpi-main"/></observer></source>
  <entity><what><reference value="Patient/123"/></what></entity>
</AuditEvent>"""
    r = client.post("/fhir/AuditEvent", content=xml, headers={**SRC, "Content-Type": "application/fhir+xml"})
    assert r.status_code == 201, r.text
    assert ("dpi-main", "xml-1") in stored(svc)


def test_dicom_audit_messages_and_captured_syslog(svc: Service, client: httpx.Client) -> None:
    dicom = TESTDATA / "dicom-audit"
    if not dicom.is_dir():
        pytest.skip(f"DICOM samples absent ({dicom})")
    xml = (dicom / "query-03.xml").read_bytes()
    r = client.post("/ingest/atna", content=xml, headers={**SRC, "Content-Type": "application/xml"})
    assert r.status_code == 200 and r.headers["x-sentinelle-new"] == "1", r.text
    frames = b"".join((TESTDATA / "syslog" / f"frame-{i}.txt").read_bytes().rstrip() + b"\n" for i in (1, 2, 3))
    r = client.post("/ingest/syslog", content=frames, headers={**SRC, "Content-Type": "text/plain"})
    assert r.status_code == 200 and r.headers["x-sentinelle-accepted"] == "3", r.text


def test_csv_through_a_named_mapping(svc: Service, client: httpx.Client) -> None:
    rows = ["Date/Heure;Identifiant;Profil;Poste;Adresse IP;Action;Écran;IPP;INS;Résultat;Session;Critères",
            "03/01/2025 14:05:09;jdupont;MEDECIN;PC-12;10.2.4.17;CONSULTATION;DOSSIER;IPP004211;;OK;S-1;",
            "31/02/2025 14:05:09;jdupont;MEDECIN;PC-12;10.2.4.17;CONSULTATION;DOSSIER;IPP4;;OK;S-1;"]
    body = ("\r\n".join(rows) + "\r\n").encode("cp1252")
    r = client.post("/ingest/dpi_csv_fr", content=body,
                    headers={**SRC, "Content-Type": "text/csv; charset=windows-1252"})
    assert r.status_code == 200, r.text
    assert r.headers["x-sentinelle-accepted"] == "1"
    assert r.json()["issue"][1]["location"] == ["line 3"]
    assert client.post("/ingest/no_such_mapping", content=body, headers={**SRC, "Content-Type": "text/csv"}
                       ).status_code == 404
    r = client.post("/ingest/dpi_csv_fr", content=body, headers={**SRC, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 415


def test_tls(tmp_path: Path) -> None:
    from service_kit import self_signed

    cert, key = self_signed(tmp_path / "tls")
    with running(tmp_path, http={"tls_cert": str(cert), "tls_key": str(key)}) as svc:
        assert svc.url.startswith("https://")
        with httpx.Client(base_url=svc.url, verify=ssl.create_default_context(cafile=str(cert))) as c:
            r = c.post("/fhir/AuditEvent", content=json.dumps(audit_event(1)).encode(), headers=FHIR_JSON)
            assert r.status_code == 201
        with pytest.raises(httpx.HTTPError), httpx.Client(base_url=svc.url.replace("https", "http")) as plain:
            plain.get("/healthz")


def test_concurrent_requests_share_one_group_commit(svc: Service) -> None:
    """Requests that arrive while a commit is under way are committed together, then all answered."""
    import threading

    def commits() -> float:
        return sum(s.value for s in svc.metrics.commit.collect()[0].samples if s.name.endswith("_count"))

    answers: list[int] = []
    svc.ledger._lock.acquire()  # a commit under way: the next requests queue up behind it
    try:
        before = commits()
        threads = [threading.Thread(target=lambda i=i: answers.append(httpx.post(
            f"{svc.url}/fhir/AuditEvent", headers=FHIR_JSON, timeout=30,
            content=json.dumps(audit_event(500 + i, event_id=f"group-{i}")).encode()).status_code))
            for i in range(12)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while svc.intake.depth < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answers == []  # nobody is answered before the commit
    finally:
        svc.ledger._lock.release()
    for t in threads:
        t.join(30)
    assert answers == [201] * 12
    assert commits() - before <= 3  # 12 requests, one or two transactions (plus an audit record)


def test_json_lines_through_the_gateway_mapping(svc: Service, client: httpx.Client) -> None:
    rows = [{"ts": 1741010709123 + i, "trace_id": f"gw-{i}", "client_id": "rdv-connect", "remote_addr": "203.0.113.9",
             "token_id": "tk-19", "request": {"interaction": "read", "resource": "Patient"},
             "response": {"status": 200}, "patients": [f"Patient/p{i}"]} for i in range(3)]
    body = b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b"not json\n"
    r = client.post("/ingest/api_gateway_jsonl", content=body, headers={**SRC, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert (r.headers["x-sentinelle-accepted"], r.headers["x-sentinelle-rejected"]) == ("3", "1")
    assert r.json()["issue"][1]["location"] == ["line 4"]
    got = stored(svc)
    assert all(("dpi-main", f"gw-{i}") in got for i in range(3))  # the token names the source


def test_large_bulk_goes_through_the_decoding_workers_which_seal_the_records(tmp_path: Path) -> None:
    """Bodies over 256 KB are cut into pieces decoded by worker processes that also make the
    ledger records (pseudonyms, sealing); the ledger verifies and reveals what was sent."""
    from sentinelle.ledger import verify

    n = 3_000
    lines = [json.dumps(audit_event(i, patient=f"Patient/w{i % 700}", account=f"user{i % 9}",
                                    event_id=f"w-{i}")).encode() for i in range(n)]
    lines[1_234] = b'{"resourceType": "AuditEvent", "id": "broken"'  # truncated: line 1235
    body = b"\n".join(lines) + b"\n"
    assert len(body) > 256 << 10
    with running(tmp_path, intake={"decode_workers": 1}) as svc, \
            httpx.Client(base_url=svc.url, timeout=60) as c:
        assert svc._pool is not None
        r = c.post("/fhir/AuditEvent/$bulk", content=body, headers=NDJSON)
        assert r.status_code == 200, r.text
        assert r.headers["x-sentinelle-accepted"] == str(n - 1) and r.headers["x-sentinelle-new"] == str(n - 1)
        issues = r.json()["issue"]
        assert any("line 1235" in json.dumps(i) for i in issues), issues
        again = c.post("/fhir/AuditEvent/$bulk", content=body, headers=NDJSON)
        assert again.headers["x-sentinelle-new"] == "0"
        url, key_dir = svc.config.ledger.url, svc.config.ledger.key_dir
    assert verify(url).ok
    with LedgerReader.open(url, load_keyring(key_dir=key_dir)) as reader:
        stored = {s.event.id: s for s in reader.events() if s.event.id.startswith("w-")}
        assert len(stored) == n - 1
        assert stored["w-42"].event.patients == ("Patient/w42",) and stored["w-42"].event.source == "dpi-main"
        assert stored["w-42"].pseudonyms == (reader.pseudonym("Patient/w42"),)
        records = [r for _, r in reader.records() if r is not None and r.id.startswith("w-")]
        assert records and all(r.nonce[0] & 0x80 for r in records)  # sealed in the workers
