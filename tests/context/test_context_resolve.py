"""Patient identity: every spelling a source may use reaches one `Patient/<id>`."""

from __future__ import annotations

import pytest
from context_factory import INS, IPP, encounter, patient, practitioner, t

from sentinelle.context import CareContext, Reason

OTHER = "urn:oid:1.2.250.1.888"


@pytest.fixture(scope="module")
def ctx() -> CareContext:
    p2 = patient("p2")
    p2["identifier"] = [{"system": OTHER, "value": "12345"}, {"system": OTHER, "value": "999"}]
    return CareContext.from_resources(
        [
            patient("p1", ins="1666093441321", ipp="12345"),
            p2,
            patient("p3", ipp="777"),
            practitioner("d1", "alice"),
            encounter("e1", "p1", ["Practitioner/d1"], "2024-03-01T08:00:00Z", "2024-03-02T08:00:00Z"),
        ]
    )


@pytest.mark.parametrize(
    "ref",
    [
        "Patient/p1",
        " Patient/p1 ",
        f"{INS}|1666093441321",
        f"{IPP}|12345",
        "1666093441321",  # bare value held by one patient only
        "1.2.250.1.213.1.4.8|1666093441321",  # OID without urn:oid:
        "1666093441321^^^&1.2.250.1.213.1.4.8&ISO",  # HL7 v2 CX from a DICOM audit message
        "1666093441321^^^INS-NIR&1.2.250.1.213.1.4.8&ISO",
        "https://fhir.chu.example/r4/Patient/p1/_history/2",
        "Patient/p1/_history/2",
        f"Patient?identifier={IPP}|12345",
        "Patient?identifier=urn%3Aoid%3A1.2.250.1.999%7C12345",
    ],
)
def test_spellings_of_one_patient(ctx: CareContext, ref: str) -> None:
    assert ctx.resolve_patient(ref) == "Patient/p1"


def test_cx_with_a_local_authority_falls_back_to_an_unambiguous_value(ctx: CareContext) -> None:
    assert ctx.resolve_patient("777^^^CHU_ROUEN") == "Patient/p3"
    assert ctx.resolve_patient("CHU_ROUEN|777") == "Patient/p3"


def test_ambiguous_bare_value_is_not_resolved(ctx: CareContext) -> None:
    # "12345" is p1's IPP and also an identifier of p2 in another system
    assert ctx.resolve_patient("12345") == "12345"
    assert ctx.resolve_patient("12345^^^CHU_ROUEN") == "12345^^^CHU_ROUEN"
    assert ctx.resolve_patient(f"{OTHER}|12345") == "Patient/p2"


def test_known_system_with_unknown_value_does_not_fall_back(ctx: CareContext) -> None:
    # "999" is p2's value in OTHER; under the INS system it names nobody known
    assert ctx.resolve_patient(f"{INS}|999") == f"{INS}|999"
    assert ctx.resolve_patient("999") == "Patient/p2"


def test_unknown_references_come_back_unchanged(ctx: CareContext) -> None:
    for ref in ("Patient/zz", "urn:oid:1.2.3|4", "nobody", "", "^^^"):
        assert ctx.resolve_patient(ref) == ref


def test_explain_accepts_every_spelling(ctx: CareContext) -> None:
    at = t("2024-03-01T12:00:00Z")
    for ref in ("Patient/p1", f"{INS}|1666093441321", "1666093441321^^^&1.2.250.1.213.1.4.8&ISO"):
        assert ctx.explain("alice", ref, at) == Reason.ENCOUNTER | Reason.TREATED_BEFORE


def test_episode_subject_named_by_identifier() -> None:
    enc = encounter("e1", "x", ["Practitioner/d1"], "2024-03-01T08:00:00Z", "2024-03-02T08:00:00Z")
    enc["subject"] = {"identifier": {"system": INS, "value": "1666093441321"}}
    ctx = CareContext.from_resources([patient("p1", ins="1666093441321"), practitioner("d1", "alice"), enc])
    assert ctx.explain("alice", "Patient/p1", t("2024-03-01T12:00:00Z")) & Reason.ENCOUNTER


def test_patient_known_only_from_an_encounter() -> None:
    ctx = CareContext.from_resources(
        [
            practitioner("d1", "alice"),
            encounter("e1", "ghost", ["Practitioner/d1"], "2024-03-01T08:00:00Z", "2024-03-02T08:00:00Z"),
        ]
    )
    assert ctx.explain("alice", "Patient/ghost", t("2024-03-01T12:00:00Z")) & Reason.ENCOUNTER
    assert ctx.resolve_patient("Patient/ghost") == "Patient/ghost"
    assert ctx.stats()["referenced_patients"] == 1
    assert ctx.stats()["patients"] == 0


def test_bundle_references_by_urn_uuid() -> None:
    uuid_patient = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
    uuid_doctor = "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": uuid_patient, "resource": {"resourceType": "Patient", "name": [{"family": "Roy"}]}},
            {
                "fullUrl": uuid_doctor,
                "resource": {
                    "resourceType": "Practitioner",
                    "identifier": [{"system": "urn:sentinelle:login", "value": "alice"}],
                },
            },
            {
                "fullUrl": "urn:uuid:0b4ee1a4-9d3e-4c4b-9a6e-1b1d1b1d1b1d",
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "subject": {"reference": uuid_patient},
                    "participant": [{"individual": {"reference": uuid_doctor}}],
                    "period": {"start": "2024-03-01T08:00:00Z", "end": "2024-03-02T08:00:00Z"},
                },
            },
        ],
    }
    ctx = CareContext.from_resources([bundle])
    canonical = "Patient/61ebe359-bfdc-4613-8bf2-c5e300945f0a"
    assert ctx.resolve_patient(uuid_patient) == canonical
    assert ctx.explain("alice", canonical, t("2024-03-01T12:00:00Z")) & Reason.ENCOUNTER


def test_two_records_sharing_an_identifier_resolve_to_the_first() -> None:
    ctx = CareContext.from_resources([patient("p1", ins="1"), patient("p1-dup", ins="1")])
    assert ctx.resolve_patient(f"{INS}|1") == "Patient/p1"
    assert ctx.stats()["shared_identifiers"] == 1
