"""FHIR AuditEvent XML: the Swiss CH:ATC samples (ITI-81 Bundle included), BALP, safety."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sentinelle.errors import InputFormatError
from sentinelle.events import AccessEvent, category_mask, parse_time
from sentinelle.sources import Quarantine, fhir_xml, open_events

TESTDATA = Path(__file__).parents[2] / ".." / "shared" / "testdata"
BALP = Path(__file__).parents[1] / "fixtures" / "balp"
EPR_PATIENT = "urn:oid:2.16.756.5.30.1.127.3.10.3|761337610469261945"
OBSERVER = "urn:oid:7.8.9.10.11"


def _atc(name: str) -> Path:
    path = TESTDATA / "ch-atc" / name
    if not path.exists():
        pytest.skip(f"shared test data ch-atc/{name} absent")
    return path


def _read(path: Path) -> tuple[list[AccessEvent], Quarantine]:
    q = Quarantine()
    return list(open_events([path], q)), q


def _one(path: Path) -> AccessEvent:
    events, q = _read(path)
    assert q.count == 0, q.kept
    assert len(events) == 1
    return events[0]


def _bytes(data: bytes) -> tuple[list[AccessEvent], Quarantine]:
    q = Quarantine()
    return list(fhir_xml.read(io.BytesIO(data), "mem.xml", q)), q


def test_document_upload_by_a_representative() -> None:
    ev = _one(_atc("atc-doc-create-rep-pat.xml"))
    assert ev.id == "atc-doc-create-rep-pat"
    # The representative is the requestor; the patient agent is not.
    assert (ev.account, ev.actor_kind, ev.action, ev.outcome) == ("761322222222222222", "human", "create", "success")
    assert ev.patients == (EPR_PATIENT,)
    assert ev.categories == category_mask(["document"])  # XDS document uniqueId
    assert (ev.source, ev.client, ev.purpose) == (OBSERVER, OBSERVER, "NORM")
    assert ev.time == parse_time("2020-10-10T16:29:00Z")


def test_emergency_document_read_is_break_the_glass() -> None:
    ev = _one(_atc("atc-doc-read-ass-hpc.xml"))
    # CH:ATC records every access as DICOM "Export"; the subtype says it was a read.
    assert (ev.account, ev.action, ev.purpose) == ("Regula Fischer", "break_glass", "EMER")
    assert ev.patients == (EPR_PATIENT,)
    assert ev.categories == category_mask(["document"])
    assert ev.time == parse_time("2020-10-20T12:29:00Z")


@pytest.mark.parametrize("name", ["atc-doc-search.xml", "atc-doc-meta-query.xml"])
def test_emergency_searches_stay_searches(name: str) -> None:
    ev = _one(_atc(name))
    assert (ev.account, ev.action, ev.purpose) == ("Dr. med. Sabine Musterfrau", "search", "EMER")
    assert ev.patients == (EPR_PATIENT,)
    assert ev.categories == category_mask(["identity"])
    assert ev.time == parse_time("2022-10-10T18:49:00Z")


def test_patient_reading_their_own_audit_trail() -> None:
    ev = _one(_atc("atc-log-read.xml"))
    assert (ev.account, ev.actor_kind, ev.action) == ("Jakob Wieder-Gesund", "patient", "read")
    assert ev.patients == (EPR_PATIENT,)
    assert ev.time == parse_time("2020-09-22T08:47:00Z")


@pytest.mark.parametrize(
    ("name", "observer", "recorded"),
    [
        ("atc-pol-create-acc-right.xml", "urn:oid:7.8.9.10.12", "2020-10-09T07:47:00Z"),
        ("atc-pol-create-rep.xml", "urn:oid:7.8.9.10.12", "2020-10-09T07:48:00Z"),
    ],
)
def test_policy_changes_by_the_patient(name: str, observer: str, recorded: str) -> None:
    ev = _one(_atc(name))
    assert (ev.account, ev.actor_kind, ev.action) == ("Jakob Wieder-Gesund", "patient", "create")
    assert ev.patients == (EPR_PATIENT,)
    assert ev.categories == 0  # a professional or a representative, no health data
    assert (ev.source, ev.time) == (observer, parse_time(recorded))


def test_group_notification_without_requestor() -> None:
    ev = _one(_atc("atc-hpd-group-entry-notify.xml"))
    assert (ev.account, ev.action) == ("Notifikations-Dienst", "other")
    assert ev.patients == (EPR_PATIENT,)  # the HCP (Person, role HCP) is not a patient
    assert ev.time == parse_time("2022-10-10T10:05:00Z")


def test_iti81_bundle_gives_its_three_audit_events_and_skips_the_operation_outcome() -> None:
    events, q = _read(_atc("ch-atc-iti-81-response-sample.xml"))
    assert q.count == 0
    assert [(e.id, e.action, e.account) for e in events] == [
        ("1", "create", "761322222222222222"),
        ("2", "read", "Jakob Wieder-Gesund"),
        ("3", "create", "Jakob Wieder-Gesund"),
    ]
    assert [e.time for e in events] == [
        parse_time("2020-10-10T16:29:00Z"),
        parse_time("2020-09-22T08:47:00Z"),
        parse_time("2020-10-09T07:47:00Z"),
    ]
    assert all(e.patients == (EPR_PATIENT,) for e in events)


@pytest.mark.parametrize("name", ["patient-read", "r5-read-btg", "bundle-searchset"])
def test_xml_and_json_of_the_same_resource_give_the_same_events(name: str) -> None:
    from_xml, q1 = _read(BALP / f"{name}.xml")
    from_json, q2 = _read(BALP / f"{name}.json")
    assert q1.count == q2.count == 0
    assert from_xml == from_json and from_xml


# -- safety and damage ----------------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<AuditEvent xmlns="http://hl7.org/fhir"><id value="&lol3;"/></AuditEvent>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Bundle xmlns="http://hl7.org/fhir"><entry><resource><AuditEvent><id value="&x;"/></AuditEvent>
</resource></entry></Bundle>
"""


@pytest.mark.parametrize("data", [BOMB, XXE])
def test_a_dtd_is_refused_before_anything_is_expanded(data: bytes) -> None:
    with pytest.raises(InputFormatError, match="DOCTYPE"):
        _bytes(data)


def test_undeclared_entities_inside_an_entry_only_cost_that_entry() -> None:
    good = (BALP / "patient-read.xml").read_text().split("?>", 1)[1]
    data = (
        '<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/>'
        f"<entry><resource>{good}</resource></entry>"
        '<entry><resource><AuditEvent><id value="&lol9;"/></AuditEvent></resource></entry>'
        f"<entry><resource>{good}</resource></entry></Bundle>"
    ).encode()
    events, q = _bytes(data)
    assert [e.id for e in events] == ["ex-balp-read", "ex-balp-read"]
    assert [(r.location, r.reason.split(":")[0]) for r in q.kept] == [("entry 2", "invalid XML")]


def test_a_garbled_entry_does_not_lose_the_entries_after_it() -> None:
    good = (BALP / "patient-read.xml").read_text().split("?>", 1)[1]
    data = (
        '<Bundle xmlns="http://hl7.org/fhir">'
        f"<entry><resource>{good}</resource></entry>"
        "<entry><resource><AuditEvent><id value='x'/><<<>>& </entry>"
        f"<entry><resource>{good}</resource></entry>"
        "<entry><resource><AuditEvent><id value='open'/>"  # never closed
        f"<entry><resource>{good}</resource></entry>"
        "</Bundle>"
    ).encode()
    events, q = _bytes(data)
    assert len(events) == 3
    assert [r.location for r in q.kept] == ["entry 2", "entry 4"]


@pytest.mark.parametrize(
    "data",
    [
        b"<AuditMessage><EventIdentification/></AuditMessage>",
        b'<AuditEvent xmlns="urn:other"/>',
        b"plain text, not XML",
    ],
)
def test_input_that_is_not_fhir_xml_raises(data: bytes) -> None:
    with pytest.raises(InputFormatError):
        _bytes(data)


def test_a_single_resource_of_another_type_is_quarantined() -> None:
    events, q = _bytes(b'<Patient xmlns="http://hl7.org/fhir"><id value="p"/></Patient>')
    assert events == []
    assert [(r.location, r.reason) for r in q.kept] == [("document", "not an AuditEvent: the resource is a Patient")]


def test_a_truncated_bundle_rejects_only_the_last_entry() -> None:
    good = (BALP / "patient-read.xml").read_text().split("?>", 1)[1]
    data = f'<Bundle xmlns="http://hl7.org/fhir"><entry><resource>{good}</resource></entry><entry><resource>'
    events, q = _bytes(data.encode())
    assert len(events) == 1
    assert [r.location for r in q.kept] == ["entry 2"]
