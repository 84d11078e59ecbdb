"""FHIR AuditEvent JSON: real published samples, IHE BALP shapes, R5, and bad input.

Expected values were read off each sample by hand (who requested, which agent is the
client machine, which entity is the patient), not produced by the reader.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import msgspec
import pytest

from sentinelle.errors import InputFormatError
from sentinelle.events import AccessEvent, category_mask, parse_time
from sentinelle.sources import Quarantine, fhir_json, open_events
from sentinelle.sources.fhir_common import (
    AuditEvent,
    Entity,
    Normaliser,
    fast_time,
    query_categories,
    touched_fast,
    touched_of,
)

TESTDATA = Path(__file__).parents[2] / ".." / "shared" / "testdata"
BALP = Path(__file__).parents[1] / "fixtures" / "balp"


def _read(path: Path) -> tuple[list[AccessEvent], Quarantine]:
    q = Quarantine()
    return list(open_events([path], q)), q


def _one(path: Path) -> AccessEvent:
    events, q = _read(path)
    assert q.count == 0, q.kept
    assert len(events) == 1
    return events[0]


def _bytes(data: bytes, origin: str = "mem.ndjson") -> tuple[list[AccessEvent], Quarantine]:
    q = Quarantine()
    return list(fhir_json.read(io.BytesIO(data), origin, q)), q


def _sample(folder: str, name: str) -> Path:
    path = TESTDATA / folder / name
    if not path.exists():
        pytest.skip(f"shared test data {folder}/{name} absent")
    return path


# -- HL7 FHIR R4 examples -------------------------------------------------------------------


def test_r4_login_is_a_login_by_the_human_requestor_from_his_own_address() -> None:
    ev = _one(_sample("fhir-r4", "audit-event-example-login.json"))
    assert ev.id == "example-login"
    assert ev.time == parse_time("2013-06-20T23:41:23Z")
    assert (ev.account, ev.actor_kind, ev.action, ev.outcome) == ("95", "human", "login", "success")
    assert ev.address == "127.0.0.1"  # the requestor's own network address, not the 110153 node
    assert ev.source == "hl7connect.healthintersections.com.au (Cloud)"
    assert ev.client == "hl7connect.healthintersections.com.au"  # no Application agent: the observer
    assert ev.patients == () and ev.categories == 0


def test_r4_logout() -> None:
    ev = _one(_sample("fhir-r4", "audit-event-example-logout.json"))
    assert (ev.id, ev.action, ev.account) == ("example-logout", "logout", "95")
    assert ev.time == parse_time("2013-06-20T23:46:41Z")


def test_r4_vread_of_a_patient_reveals_identity_and_contact() -> None:
    ev = _one(_sample("fhir-r4", "audit-event-example-vread.json"))
    assert (ev.id, ev.action, ev.account) == ("example-rest", "read", "95")
    assert ev.patients == ("Patient/example",)  # version suffix dropped
    assert ev.categories == category_mask(["identity", "contact"])
    # No Destination agent: the client machine is the 110153 Source agent.
    assert ev.address == "Workstation1.ehr.familyclinic.com"
    assert ev.time == parse_time("2013-06-20T23:42:24Z")


def test_r4_search_takes_its_categories_and_text_from_the_base64_query() -> None:
    ev = _one(_sample("fhir-r4", "audit-event-example-search.json"))
    assert (ev.id, ev.action, ev.account) == ("example-search", "search", "95")
    assert ev.query == "http://fhir-dev.healthintersections.com.au/open/Encounter?participant=13"
    assert ev.categories == category_mask(["clinical"])
    assert ev.address == "Workstation1.ehr.familyclinic.com"
    assert ev.patients == ()


def test_r4_pix_query_is_a_search_for_one_patient_identifier() -> None:
    ev = _one(_sample("fhir-r4", "audit-event-example-pixQuery.json"))
    assert (ev.id, ev.action, ev.account) == ("example-pixQuery", "search", "95")
    assert ev.patients == ("e3cdfc81a0d24bd^^^&2.16.840.1.113883.4.2&ISO",)
    assert ev.categories == category_mask(["identity"])
    assert ev.query.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<PRPA_IN201309UV02')
    assert ev.time == parse_time("2015-08-26T23:42:24Z")


def test_r4_export_to_media_touches_documents_of_the_patient() -> None:
    ev = _one(_sample("fhir-r4", "audit-event-example-media.json"))
    assert (ev.id, ev.action, ev.account, ev.outcome) == ("example-media", "export", "95", "success")
    assert ev.patients == ("e3cdfc81a0d24bd^^^&2.16.840.1.113883.4.2&ISO",)
    assert ev.categories == category_mask(["document"])  # DocumentManifest + XDS submission set
    assert ev.address == ""  # no agent has a network address
    assert ev.source == "hl7connect.healthintersections.com.au"


def test_r4_failed_create_is_an_error() -> None:
    ev = _one(_sample("fhir-r4", "auditevent-example-error.json"))
    assert (ev.id, ev.action, ev.outcome) == ("example-error", "create", "error")
    assert ev.address == "Workstation1.ehr.familyclinic.com"
    assert ev.time == parse_time("2017-09-07T23:42:24Z")


def test_r4_complete_mocks_read_without_rejection() -> None:
    first = _one(_sample("fhir-r4-mock", "AuditEvent-1.json"))
    assert first.id.startswith("sha1:")  # no id in the mock: derived from the bytes
    assert (first.account, first.action, first.outcome) == ("OL5w768uxN", "update", "error")
    assert first.address == "kaWzSGMWQR"
    assert first.time == parse_time("2019-12-04T21:42:29.11-05:00")  # recorded before period.start
    assert first.purpose == "BrvmLYXkin"
    assert first.session == "rKNDVDJtM7"  # the requestor's policy (a token id in BALP)
    second = _one(_sample("fhir-r4-mock", "AuditEvent-2.json"))
    assert (second.account, second.action, second.outcome) == ("8ZDs3d8fUw", "other", "error")
    assert second.time == parse_time("2022-05-13T14:22:56.787968-04:00")
    assert second.patients == ()  # entity is a Basic resource
    # Re-reading gives the same derived id: ingestion stays idempotent.
    assert _one(_sample("fhir-r4-mock", "AuditEvent-1.json")).id == first.id


def test_stu3_example_is_read_from_user_id_and_source_identifier() -> None:
    ev = _one(_sample("stu3", "auditevent-example.json"))
    assert (ev.id, ev.account, ev.action, ev.outcome) == ("example", "Grahame", "other", "success")
    assert ev.source == "Grahame's Laptop (Development)"
    assert ev.address == "127.0.0.1"
    assert ev.time == parse_time("2012-10-25T22:04:27+11:00")


# -- IHE BALP shapes ------------------------------------------------------------------------

CLIENT_IP = "2001:0db8:85a3:0000:0000:8a2e:0370:7334"


@pytest.mark.parametrize(
    ("name", "account", "kind", "action", "categories", "address"),
    [
        ("patient-read.json", "jdoe", "human", "read", ["clinical"], CLIENT_IP),
        ("patient-read-no-user.json", "app-rdv-42", "api_client", "read", ["identity", "contact"], CLIENT_IP),
        ("patient-read-no-app.json", "jdoe", "human", "read", ["lab"], CLIENT_IP),
        ("patient-create.json", "jdoe", "human", "create", ["clinical"], CLIENT_IP),
        ("patient-create-no-user.json", "app-rdv-42", "api_client", "create", ["appointment", "specialty"], CLIENT_IP),
        ("patient-update.json", "jdoe", "human", "update", ["prescription"], CLIENT_IP),
        ("patient-update-no-user.json", "app-rdv-42", "api_client", "update", ["billing"], CLIENT_IP),
        ("patient-delete.json", "jdoe", "human", "delete", ["allergy"], "192.0.2.17"),
        ("patient-delete-no-user.json", "app-rdv-42", "api_client", "delete", ["imaging"], "192.0.2.17"),
    ],
)
def test_balp_rest_patterns(
    name: str, account: str, kind: str, action: str, categories: list[str], address: str
) -> None:
    ev = _one(BALP / name)
    assert (ev.account, ev.actor_kind, ev.action, ev.outcome) == (account, kind, action, "success")
    assert ev.patients == ("Patient/ex-patient",)
    assert ev.categories == category_mask(categories)
    # The client's address whatever role code BALP gives it (Destination for reads, Source
    # for writes, the Application agent for deletes); never the server's URL.
    assert ev.address == address
    assert ev.client == ("app-rdv-42" if "no-app" not in name else "Device/ex-device")
    assert ev.auth == ("oauth" if "no-app" not in name else "")
    assert ev.source == "Device/ex-device (server.example.com)"
    assert ev.time == parse_time("2020-04-29T09:49:00.000Z")


def test_balp_query_gives_one_event_per_patient_with_the_decoded_query() -> None:
    events, q = _read(BALP / "patient-query.ndjson")
    assert q.count == 0
    assert [e.patients for e in events] == [
        ("Patient/ex-patient-1",),
        ("Patient/ex-patient-2",),
        ("Patient/ex-patient-3",),
    ]
    for e in events:
        assert (e.account, e.action, e.address) == ("jdoe", "search", CLIENT_IP)
        assert e.query.startswith("GET https://server.example.com/fhir/MedicationRequest?status=active")
        assert e.categories == category_mask(["prescription"])
    assert [e.time for e in events] == [parse_time(f"2020-04-29T09:49:0{i}Z") for i in (1, 2, 3)]


def test_balp_query_by_ins_touches_the_national_identifier() -> None:
    ev = _one(BALP / "patient-query-ins-no-user.json")
    assert (ev.account, ev.actor_kind, ev.action) == ("app-rdv-42", "api_client", "search")
    assert ev.categories == category_mask(["identity", "contact", "national_id"])
    assert "1.2.250.1.213.1.4.8|1850178123456" in ev.query


def test_balp_oauth_token_gives_session_and_mfa() -> None:
    ev = _one(BALP / "oauth-token-read.json")
    assert (ev.account, ev.session, ev.auth, ev.purpose) == ("jdoe", "c2f7a8b1-token-id", "mfa", "TREAT")
    assert ev.categories == category_mask(["document"])


def test_failed_login_becomes_login_failed() -> None:
    ev = _one(BALP / "login-failed.json")
    assert (ev.account, ev.action, ev.outcome, ev.address) == ("jdoe", "login_failed", "error", "198.51.100.7")
    assert ev.time == parse_time("2020-04-29T07:48:55Z")


def test_searchset_bundle_skips_other_resources() -> None:
    events, q = _read(BALP / "bundle-searchset.json")
    assert q.count == 0
    assert [e.id for e in events] == ["ex-balp-read", "ex-balp-update"]


# -- R5 ---------------------------------------------------------------------------------------


def test_r5_read_with_break_the_glass_authorization() -> None:
    ev = _one(BALP / "r5-read-btg.json")
    assert (ev.account, ev.action, ev.purpose, ev.outcome) == ("mlefevre", "break_glass", "BTG", "success")
    assert ev.time == parse_time("2024-02-03T22:15:30.250+01:00")  # occurredDateTime, not recorded
    assert ev.address == "10.20.4.31"  # networkString of the Destination agent
    assert ev.patients == ("Patient/ex-patient",)
    assert ev.categories == category_mask(["document"])
    assert (ev.client, ev.source) == ("DPI", "DPI (CH Exemple)")


def test_r5_denied_search() -> None:
    ev = _one(BALP / "r5-search-denied.json")
    assert (ev.action, ev.outcome) == ("search", "denied")  # minor failure saying 403 Forbidden
    assert ev.time == parse_time("2024-02-03T22:16:00Z")  # occurredPeriod.start
    assert ev.categories == category_mask(["lab"])
    assert ev.address == "10.20.4.31"


# -- shapes of JSON input -----------------------------------------------------------------------


def _balp_line(name: str = "patient-read.json", **changes: object) -> bytes:
    obj = json.loads((BALP / name).read_text())
    obj.update(changes)
    return msgspec.json.encode(obj)


def test_array_ndjson_with_bundles_and_pretty_documents_give_the_same_events() -> None:
    read = _balp_line()
    update = _balp_line("patient-update.json")
    bundle = msgspec.json.encode(json.loads((BALP / "bundle-searchset.json").read_text()))
    expected = ["ex-balp-read", "ex-balp-update"]
    for data in (
        b"[" + read + b"," + update + b"]",
        read + b"\n" + update + b"\n",
        b"\n\n" + read + b"\r\n\r\n" + update,
        bundle + b"\n",
        json.dumps(json.loads(bundle), indent=2).encode(),
        json.dumps([json.loads(read), json.loads(update)], indent=1).encode(),
    ):
        events, q = _bytes(data)
        assert q.count == 0, q.kept
        assert [e.id for e in events] == expected


def test_bad_lines_are_quarantined_with_their_line_number_and_reading_goes_on() -> None:
    lines = [
        _balp_line(id="a"),
        b'{"resourceType": "AuditEvent", "id": ',  # 2: truncated
        _balp_line(id="c"),
        b"\xff\xfe not utf-8",  # 4
        b'{"resourceType": "Patient", "id": "p1"}',  # 5
        _balp_line(id="f", recorded=None),  # 6: no time
        b"",  # 7: blank lines are not records
        _balp_line(id="h", recorded="yesterday"),  # 8
        b'"just a string"',  # 9
        _balp_line(id="j", agent=[]),  # 10: nobody acted
        _balp_line(id="k", agent="not a list"),  # 11
        _balp_line(id="l"),
    ]
    events, q = _bytes(b"\n".join(lines) + b"\n")
    assert [e.id for e in events] == ["a", "c", "l"]
    reasons = {r.location: r.reason for r in q.kept}
    assert set(reasons) == {"line 2", "line 4", "line 5", "line 6", "line 8", "line 9", "line 10", "line 11"}
    assert reasons["line 2"].startswith("invalid JSON")
    assert reasons["line 4"].startswith("invalid UTF-8")
    assert reasons["line 5"] == "not an AuditEvent: resourceType 'Patient'"
    assert reasons["line 6"].startswith("missing time")
    assert reasons["line 8"].startswith("invalid time: 'yesterday'")
    assert reasons["line 9"].startswith("not a FHIR resource")
    assert reasons["line 10"].startswith("missing agent")
    assert reasons["line 11"].startswith("invalid AuditEvent") and "$.agent" in reasons["line 11"]
    assert all(r.origin == "mem.ndjson" for r in q.kept)


def test_a_bad_first_line_does_not_hide_the_ndjson_after_it() -> None:
    events, q = _bytes(b"garbage {\n" + _balp_line(id="b") + b"\n" + _balp_line(id="c") + b"\n")
    assert [e.id for e in events] == ["b", "c"]
    assert [r.location for r in q.kept] == ["line 1"]


def test_input_that_is_not_json_at_all_raises() -> None:
    with pytest.raises(InputFormatError, match="not JSON"):
        _bytes(b"{ this is\nnot json at all\n}\n")


def test_empty_input_gives_nothing() -> None:
    for data in (b"", b"\n \n"):
        events, q = _bytes(data)
        assert events == [] and q.count == 0


def test_bad_base64_query_is_kept_raw_without_rejecting_the_record() -> None:
    obj = json.loads((BALP / "patient-query-ins-no-user.json").read_text())
    obj["entity"][1]["query"] = "GET /fhir/Patient?name=*** not base64"
    events, q = _bytes(msgspec.json.encode(obj))
    assert q.count == 0
    assert events[0].query == "GET /fhir/Patient?name=*** not base64"
    assert events[0].categories & category_mask(["identity"])


def test_missing_id_gets_a_stable_id() -> None:
    line = _balp_line(id=None)
    first, _ = _bytes(line)
    again, _ = _bytes(line + b"\n")
    assert first[0].id == again[0].id and first[0].id.startswith("sha1:")
    other, _ = _bytes(_balp_line(id=None, recorded="2021-01-01T00:00:00Z"))
    assert other[0].id != first[0].id


# -- parallel reading of large files -------------------------------------------------------------


def test_parallel_reader_gives_the_sequential_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.ndjson"
    lines = []
    for i in range(3000):
        if i in (7, 1500, 2999):
            lines.append(b"{broken line")
        else:
            lines.append(_balp_line(id=f"e{i}", recorded=f"2020-04-29T09:{i // 60 % 60:02d}:{i % 60:02d}.000Z"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setenv("SENTINELLE_WORKERS", "1")
    sequential, q1 = _read(path)
    monkeypatch.setattr(fhir_json, "PARALLEL_MIN_BYTES", 1000)
    monkeypatch.setattr(fhir_json, "_CHUNK_BYTES", 200_000)  # ~50 tasks over 3 workers
    monkeypatch.setenv("SENTINELLE_WORKERS", "3")
    with path.open("rb") as f:
        assert fhir_json._parallel_plan(f) is not None
    parallel, q2 = _read(path)
    assert len(sequential) == 2997
    assert parallel == sequential
    assert [(r.location, r.reason) for r in q2.kept] == [(r.location, r.reason) for r in q1.kept]
    assert [r.location for r in q2.kept] == ["line 8", "line 1501", "line 3000"]


# -- the parts --------------------------------------------------------------------------------------


def test_fast_time_agrees_with_parse_time() -> None:
    for text in (
        "2025-01-20T05:40:36.636Z",
        "2019-12-04T21:42:29.11-05:00",
        "2022-05-13T14:22:56.787968-04:00",
        "2024-03-01",
        "2024-01-01T00:00:00z",
        "1960-05-01T10:00:00.5Z",
    ):
        assert fast_time(text) == parse_time(text)
    with pytest.raises(ValueError):
        fast_time("2024-13-01T00:00:00Z")


def test_query_categories() -> None:
    assert query_categories("POST /r4/Observation/_search HTTP/1.1\n\npatient=x&category=laboratory") == (
        category_mask(["lab"])
    )
    assert query_categories("MedicationRequest?patient=12") == category_mask(["prescription"])
    assert query_categories("GET /fhir?_type=Condition,AllergyIntolerance") == category_mask(["clinical", "allergy"])
    assert query_categories("GET /fhir/Patient?identifier=urn%3Aoid%3A1.2.250.1.213.1.4.8%7C1") == category_mask(
        ["identity", "contact", "national_id"]
    )
    assert query_categories("GET /fhir/Observation?patient=12") == category_mask(["clinical"])


def test_fast_entity_path_agrees_with_the_general_one() -> None:
    for name in ("patient-read.json", "patient-read-no-user.json", "patient-query-ins-no-user.json"):
        ev = msgspec.json.decode((BALP / name).read_bytes(), type=AuditEvent)
        entities: list[Entity] = ev.entity or []
        assert touched_fast(entities) == touched_of(entities, None)


def test_normaliser_memo_tables_stay_bounded() -> None:
    from sentinelle.sources import fhir_common

    norm = Normaliser()
    lines = [_balp_line(agent=[{"who": {"identifier": {"value": f"user{i}"}}, "requestor": True}]) for i in range(50)]
    old = fhir_common._MEMO_LIMIT
    fhir_common._MEMO_LIMIT = 10
    try:
        decoder = msgspec.json.Decoder(fhir_common.AuditEventLazy)
        accounts = [norm.from_lazy(decoder.decode(line), "x").account for line in lines]
    finally:
        fhir_common._MEMO_LIMIT = old
    assert accounts == [f"user{i}" for i in range(50)]
    assert len(norm._contexts) <= 10 and len(norm._agents) <= 10


def _big_file(tmp_path: Path, n: int = 1200) -> Path:
    path = tmp_path / "big.ndjson"
    path.write_bytes(b"".join(_balp_line(id=f"e{i}") + b"\n" for i in range(n)))
    return path


def test_parallel_reader_stops_its_workers_when_the_consumer_stops_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import time

    path = _big_file(tmp_path)
    monkeypatch.setattr(fhir_json, "PARALLEL_MIN_BYTES", 1000)
    monkeypatch.setattr(fhir_json, "_CHUNK_BYTES", 50_000)
    monkeypatch.setenv("SENTINELLE_WORKERS", "2")
    started: list[subprocess.Popen[bytes]] = []
    real_start = fhir_json._start_worker

    def start() -> subprocess.Popen[bytes]:
        proc = real_start()
        started.append(proc)
        return proc

    monkeypatch.setattr(fhir_json, "_start_worker", start)
    t0 = time.monotonic()
    events = open_events([path], Quarantine())
    first = [next(events) for _ in range(5)]
    events.close()  # type: ignore[attr-defined]
    assert [e.id for e in first] == ["e0", "e1", "e2", "e3", "e4"]
    assert len(started) == 2 and all(p.poll() is not None for p in started)
    assert time.monotonic() - t0 < 8


def test_parallel_reader_reads_the_ranges_itself_when_workers_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    path = _big_file(tmp_path)
    monkeypatch.setattr(fhir_json, "PARALLEL_MIN_BYTES", 1000)
    monkeypatch.setattr(fhir_json, "_CHUNK_BYTES", 50_000)
    monkeypatch.setenv("SENTINELLE_WORKERS", "2")

    def broken_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    monkeypatch.setattr(fhir_json, "_start_worker", broken_worker)
    events, q = _read(path)
    assert [e.id for e in events] == [f"e{i}" for i in range(1200)]
    assert q.count == 0


def test_ins_patient_identifier_and_session_entity() -> None:
    obj = json.loads((BALP / "patient-read-no-app.json").read_text())
    obj["entity"] = [
        {
            "what": {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "285017512345612"}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
        },
        {"what": {"identifier": {"value": "sess-77"}}, "type": {"system": "urn:example:entity", "code": "session"}},
    ]
    events, q = _bytes(msgspec.json.encode(obj))
    assert q.count == 0
    ev = events[0]
    assert ev.patients == ("urn:oid:1.2.250.1.213.1.4.8|285017512345612",)
    assert ev.categories == category_mask(["identity", "national_id"])  # the session entity is no data
    assert ev.session == "sess-77"


def test_default_workers_follow_the_idle_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SENTINELLE_WORKERS: one worker per CPU idle now, from /proc/stat where there is one."""
    monkeypatch.delenv("SENTINELLE_WORKERS", raising=False)
    idle = fhir_json._idle_cpus(4, interval=0.05)
    if idle is None:
        pytest.skip("no /proc/stat on this system")
    assert 0.0 <= idle <= 4.0
    monkeypatch.setattr(fhir_json, "_idle_cpus", lambda cpus, interval=0.1: cpus * 0.9)
    assert fhir_json._workers() == min(8, len(os.sched_getaffinity(0)))
    monkeypatch.setattr(fhir_json, "_idle_cpus", lambda cpus, interval=0.1: 0.2)
    assert fhir_json._workers() == 1
    monkeypatch.setenv("SENTINELLE_WORKERS", "3")
    assert fhir_json._workers() == 3


def test_small_inputs_never_measure_idle_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Measuring idle CPUs sleeps a tenth of a second: a request body or a small file must
    not pay it (it once did, and made every POST to the service take 100 ms)."""
    monkeypatch.delenv("SENTINELLE_WORKERS", raising=False)

    def forbidden(cpus: int, interval: float = 0.1) -> float:
        raise AssertionError("idle CPUs measured for a small input")

    monkeypatch.setattr(fhir_json, "_idle_cpus", forbidden)
    line = (BALP / "patient-read.json").read_bytes()
    assert list(fhir_json.read(io.BytesIO(line), "body", Quarantine()))
    small = tmp_path / "small.ndjson"
    small.write_bytes(b"".join(json.dumps(json.loads(line)).encode() + b"\n" for _ in range(3)))
    with small.open("rb") as f:
        assert len(list(fhir_json.read(f, str(small), Quarantine()))) == 3


def test_a_busy_consumer_gets_one_reading_worker_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `consumer_cpus(1)` (scan's detection), a 2-CPU machine reads with one worker
    process, even when the idle-CPU sample is low; SENTINELLE_WORKERS=1 still means none."""
    monkeypatch.setattr(fhir_json, "PARALLEL_MIN_BYTES", 1000)
    monkeypatch.setattr(fhir_json.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("SENTINELLE_WORKERS", raising=False)
    path = _big_file(tmp_path)
    for idle, alone, beside in ((2.0, 2, 1), (1.3, None, 1), (0.2, None, 1)):
        monkeypatch.setattr(fhir_json, "_idle_cpus", lambda cpus, interval=0.1, idle=idle: idle)
        with path.open("rb") as f:
            plan = fhir_json._parallel_plan(f)
            assert (plan[3] if plan else None) == alone
            with fhir_json.consumer_cpus(1):
                plan = fhir_json._parallel_plan(f)
            assert (plan[3] if plan else None) == beside
    monkeypatch.setenv("SENTINELLE_WORKERS", "1")
    with path.open("rb") as f, fhir_json.consumer_cpus(1):
        assert fhir_json._parallel_plan(f) is None
    with fhir_json.consumer_cpus(1):
        events = list(open_events([path], Quarantine()))
    monkeypatch.delenv("SENTINELLE_WORKERS")
    with fhir_json.consumer_cpus(1):
        assert list(open_events([path], Quarantine())) == events
