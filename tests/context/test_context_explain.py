"""`CareContext.explain`: each reason fires inside its window and not outside it."""

from __future__ import annotations

from typing import Any

import pytest
from context_factory import (
    DAY,
    LOGIN,
    appointment,
    care_team,
    device,
    encounter,
    organization,
    patient,
    practitioner,
    role,
    t,
)

from sentinelle.context import CareContext, ContextSettings, Reason
from sentinelle.sources import Quarantine

E, A, CT, D, TB = (
    Reason.ENCOUNTER,
    Reason.APPOINTMENT,
    Reason.CARE_TEAM,
    Reason.DEPARTMENT,
    Reason.TREATED_BEFORE,
)
HOUR = 3_600_000

E1_START, E1_END = "2024-03-01T08:00:00Z", "2024-03-05T12:00:00Z"
A1_START, A1_END = "2024-06-10T09:00:00Z", "2024-06-10T09:30:00Z"


def hospital() -> list[dict[str, Any]]:
    return [
        organization("cardio"),
        organization("pneumo"),
        organization("urgences"),
        practitioner("d1", "alice"),
        role("r-alice", "d1", "cardio", "doctor", "2020-01-01"),
        practitioner("n1", "bob"),
        role("r-bob", "n1", "cardio", "nurse", "2019-05-01"),
        practitioner("d2", "carol"),
        role("r-carol", "d2", "pneumo", "doctor", "2018-01-01"),
        practitioner("s1", "dave"),
        role("r-dave", "s1", "cardio", "secretary", "2021-01-01", "2024-02-01"),
        practitioner("m1", "erin"),
        role("r-erin-1", "m1", "cardio", "nurse", "2020-01-01", "2024-01-31"),
        role("r-erin-2", "m1", "pneumo", "nurse", "2024-02-01"),
        practitioner("x1", "frank"),
        role("r-frank", "x1", "urgences", "doctor", "2020-01-01"),
        device("batch", "dpi-batch", "application", owner="cardio"),
        device("doctolib", "doctolib-api", "api_client", owner="urgences"),
        *(patient(f"p{i}") for i in range(1, 8)),
        encounter("e1", "p1", ["Practitioner/d1"], E1_START, E1_END, org="cardio"),
        encounter("e0", "p5", ["Practitioner/d1"], "2024-01-10T08:00:00Z", "2024-01-12T08:00:00Z", org="cardio"),
        appointment("a1", "p2", ["Practitioner/d2"], A1_START, A1_END, source="Device/doctolib"),
        care_team("ct1", "p3", ["Practitioner/n1"], "2024-01-01", "2024-12-31"),
        care_team("ct-old", "p3", ["Practitioner/x1"], "2024-01-01", status="inactive"),
        encounter("e2", "p4", ["Practitioner/d2"], "2024-05-01T10:00:00Z", org="pneumo"),
        # named through the PractitionerRole, no serviceProvider: the role's department counts
        encounter("e3", "p6", ["PractitionerRole/r-frank"], "2024-04-01T10:00:00Z", "2024-04-01T18:00:00Z"),
        # a participant named by a logical reference to its login
        {
            **encounter("e4", "p7", [], "2024-04-01T10:00:00Z", "2024-04-02T10:00:00Z", org="urgences"),
            "participant": [{"individual": {"identifier": {"system": LOGIN, "value": "carol"}}}],
        },
    ]


@pytest.fixture(scope="module")
def ctx() -> CareContext:
    return CareContext.from_resources(hospital())


def test_encounter_participant_inside_the_stay(ctx: CareContext) -> None:
    assert ctx.explain("alice", "Patient/p1", t("2024-03-03T10:00:00Z")) == E | D | TB


def test_encounter_margin_before_start(ctx: CareContext) -> None:
    start = t(E1_START)
    assert ctx.explain("alice", "Patient/p1", start - DAY + HOUR) == E | D
    assert ctx.explain("alice", "Patient/p1", start - DAY - HOUR) == 0


def test_encounter_margin_after_end_then_treated_before(ctx: CareContext) -> None:
    end = t(E1_END)
    assert ctx.explain("alice", "Patient/p1", end + 29 * DAY) == E | D | TB
    assert ctx.explain("alice", "Patient/p1", end + 31 * DAY) == TB
    assert ctx.explain("alice", "Patient/p1", end + 729 * DAY) == TB
    assert ctx.explain("alice", "Patient/p1", end + 731 * DAY) == 0


def test_department_without_participation(ctx: CareContext) -> None:
    assert ctx.explain("bob", "Patient/p1", t("2024-03-03T10:00:00Z")) == D
    assert ctx.explain("bob", "Patient/p1", t(E1_END) + 31 * DAY) == 0


def test_another_department_explains_nothing(ctx: CareContext) -> None:
    assert ctx.explain("carol", "Patient/p1", t("2024-03-03T10:00:00Z")) == 0
    assert ctx.explain("frank", "Patient/p1", t("2024-03-03T10:00:00Z")) == 0


def test_departed_employee(ctx: CareContext) -> None:
    # dave worked in cardio until 2024-02-01: explained before, not after
    assert ctx.explain("dave", "Patient/p5", t("2024-01-11T10:00:00Z")) == D
    assert ctx.explain("dave", "Patient/p1", t("2024-03-03T10:00:00Z")) == 0
    info = ctx.account_info("dave")
    assert info is not None and info.end == t("2024-02-01") + DAY - 1


def test_departed_participant_is_not_explained_after_leaving() -> None:
    resources = [
        practitioner("d9", "gone"),
        role("r9", "d9", "cardio", "doctor", "2020-01-01", "2024-03-10"),
        patient("p1"),
        encounter("e1", "p1", ["Practitioner/d9"], E1_START, E1_END, org="cardio"),
    ]
    ctx = CareContext.from_resources(resources)
    assert ctx.explain("gone", "Patient/p1", t("2024-03-09T10:00:00Z")) == E | D | TB
    assert ctx.explain("gone", "Patient/p1", t("2024-03-12T10:00:00Z")) == 0


def test_moved_department_follows_role_periods(ctx: CareContext) -> None:
    # erin left cardio for pneumo on 2024-02-01
    assert ctx.explain("erin", "Patient/p5", t("2024-01-11T10:00:00Z")) == D
    assert ctx.explain("erin", "Patient/p1", t("2024-03-03T10:00:00Z")) == 0
    assert ctx.explain("erin", "Patient/p4", t("2024-06-01T10:00:00Z")) == D


def test_ongoing_encounter_stays_open(ctx: CareContext) -> None:
    assert ctx.explain("carol", "Patient/p4", t("2025-06-01T10:00:00Z")) == E | D | TB
    assert ctx.explain("carol", "Patient/p4", t("2024-04-29T10:00:00Z")) == 0


def test_appointment_window_is_thirty_days_each_side(ctx: CareContext) -> None:
    start, end = t(A1_START), t(A1_END)
    assert ctx.explain("carol", "Patient/p2", start - 29 * DAY) == A | D
    assert ctx.explain("carol", "Patient/p2", start - 31 * DAY) == 0
    assert ctx.explain("carol", "Patient/p2", end + 29 * DAY) == A | D | TB
    assert ctx.explain("carol", "Patient/p2", end + 31 * DAY) == TB


def test_appointment_department_comes_from_the_practitioner_role(ctx: CareContext) -> None:
    # the appointment names no department: carol's (pneumo) at its start is used
    assert ctx.departments_of("Patient/p2", t(A1_START)) == frozenset({"pneumo"})
    assert ctx.explain("erin", "Patient/p2", t(A1_START)) == D


def test_care_team_member_while_active(ctx: CareContext) -> None:
    assert ctx.explain("bob", "Patient/p3", t("2024-06-01T10:00:00Z")) == CT
    assert ctx.explain("bob", "Patient/p3", t("2025-01-02T10:00:00Z")) == 0
    # a member of an inactive care team is not explained
    assert ctx.explain("frank", "Patient/p3", t("2024-06-01T10:00:00Z")) == 0


def test_service_account_owner_department_counts(ctx: CareContext) -> None:
    assert ctx.explain("dpi-batch", "Patient/p1", t("2024-03-03T10:00:00Z")) == D
    assert ctx.explain("dpi-batch", "Patient/p4", t("2024-06-01T10:00:00Z")) == 0


def test_api_client_explained_by_the_appointments_it_booked(ctx: CareContext) -> None:
    assert ctx.explain("doctolib-api", "Patient/p2", t("2024-06-01T10:00:00Z")) == A
    assert ctx.explain("doctolib-api", "Patient/p1", t("2024-03-03T10:00:00Z")) == 0


def test_participant_named_by_practitioner_role(ctx: CareContext) -> None:
    assert ctx.explain("frank", "Patient/p6", t("2024-04-01T12:00:00Z")) == E | D | TB
    assert ctx.departments_of("Patient/p6", t("2024-04-01T12:00:00Z")) == frozenset({"urgences"})


def test_participant_named_by_login_identifier(ctx: CareContext) -> None:
    assert ctx.explain("carol", "Patient/p7", t("2024-04-01T12:00:00Z")) == E | TB


def test_unknown_account_or_patient_is_unexplained(ctx: CareContext) -> None:
    assert ctx.explain("mallory", "Patient/p1", t("2024-03-03T10:00:00Z")) == 0
    assert ctx.explain("alice", "Patient/nobody", t("2024-03-03T10:00:00Z")) == 0
    assert ctx.explain("alice", "Patient/p2", t("2024-06-10T09:00:00Z")) == 0


def test_account_reached_by_another_identifier(ctx: CareContext) -> None:
    # the FHIR reference of the person reaches the same account
    assert ctx.explain("Practitioner/d1", "Patient/p1", t("2024-03-03T10:00:00Z")) == E | D | TB


def test_margins_are_settings() -> None:
    ctx = CareContext.from_resources(hospital(), settings=ContextSettings(encounter_after_days=10))
    end = t(E1_END)
    assert ctx.explain("alice", "Patient/p1", end + 9 * DAY) & E
    assert not ctx.explain("alice", "Patient/p1", end + 11 * DAY) & E
    assert ctx.settings.encounter_after_days == 10


def test_departments_of_uses_the_margins(ctx: CareContext) -> None:
    assert ctx.departments_of("Patient/p1", t("2024-03-03T10:00:00Z")) == frozenset({"cardio"})
    assert ctx.departments_of("Patient/p1", t(E1_END) + 31 * DAY) == frozenset()
    assert ctx.departments_of("Patient/unknown", t(E1_END)) == frozenset()


def test_cancelled_and_erroneous_episodes_are_ignored() -> None:
    resources = [
        practitioner("d1", "alice"),
        patient("p1"),
        encounter("e1", "p1", ["Practitioner/d1"], E1_START, E1_END, status="cancelled"),
        appointment("a1", "p1", ["Practitioner/d1"], A1_START, status="entered-in-error"),
    ]
    ctx = CareContext.from_resources(resources)
    assert ctx.explain("alice", "Patient/p1", t("2024-03-03T10:00:00Z")) == 0
    assert ctx.explain("alice", "Patient/p1", t(A1_START)) == 0


def test_explain_is_fast_enough(ctx: CareContext) -> None:
    """A loose guard against a slow path creeping into explain (the benchmark has the figure)."""
    import time

    calls = [("alice", "Patient/p1", t("2024-03-03T10:00:00Z")), ("carol", "Patient/p1", t("2024-03-03"))] * 5000
    explain = ctx.explain
    began = time.perf_counter()
    for account, ref, at in calls:
        explain(account, ref, at)
    per_call = (time.perf_counter() - began) / len(calls)
    assert per_call < 20e-6


def test_appointment_in_the_simulator_shape() -> None:
    """Department extension, Practitioner + PractitionerRole + booking Device participants."""
    appt = {
        "resourceType": "Appointment",
        "id": "a1",
        "extension": [
            {
                "url": "https://sentinelle.health/fhir/StructureDefinition/department",
                "valueReference": {"reference": "Organization/cardio"},
            }
        ],
        "status": "booked",
        "serviceType": [{"text": "Consultation"}],
        "start": A1_START,
        "end": A1_END,
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/d2"}, "status": "accepted"},
            {"actor": {"reference": "PractitionerRole/r-carol"}, "status": "accepted"},
            {"actor": {"reference": "Device/portal"}, "status": "accepted"},
        ],
    }
    ctx = CareContext.from_resources(
        [
            practitioner("d2", "carol"),
            role("r-carol", "d2", "pneumo", "doctor", "2018-01-01"),
            practitioner("n1", "bob"),
            role("r-bob", "n1", "cardio", "nurse", "2019-05-01"),
            device("portal", "portal-api", "api_client", owner="urgences"),
            patient("p1"),
            appt,
        ]
    )
    at = t(A1_START) - 2 * DAY
    assert ctx.departments_of("Patient/p1", at) == frozenset({"cardio"})  # the extension wins
    assert ctx.explain("carol", "Patient/p1", at) == A
    assert ctx.explain("bob", "Patient/p1", at) == D
    assert ctx.explain("portal-api", "Patient/p1", at) == A


def test_booking_client_named_by_extension_or_login() -> None:
    by_extension = appointment("a1", "p1", ["Practitioner/d1"], A1_START, A1_END)
    by_extension["extension"] = [
        {"url": "https://sentinelle.health/fhir/StructureDefinition/booking-client", "valueString": "portal-api"}
    ]
    by_source = appointment("a2", "p2", ["Practitioner/d1"], A1_START, A1_END, source="portal-api")
    unrelated = appointment("a3", "p3", ["Practitioner/d1"], A1_START, A1_END, source="https://other.example/app")
    ctx = CareContext.from_resources(
        [
            practitioner("d1", "alice"),
            device("portal", "portal-api", "api_client", owner="urgences"),
            *(patient(f"p{i}") for i in (1, 2, 3)),
            by_extension,
            by_source,
            unrelated,
        ]
    )
    at = t(A1_START)
    assert ctx.explain("portal-api", "Patient/p1", at) == A
    assert ctx.explain("portal-api", "Patient/p2", at) == A
    assert ctx.explain("portal-api", "Patient/p3", at) == 0


def test_an_appointment_explains_nothing_before_it_was_booked() -> None:
    """Booked (created) on 2024-06-01: a read on 2024-05-31 is not explained, one that morning is."""
    booked = appointment("a1", "p1", ["Practitioner/d1"], A1_START, A1_END)
    booked["created"] = "2024-06-01"
    late = appointment("a2", "p2", ["Practitioner/d1"], A1_START, A1_END)
    late["created"] = "2024-06-12T10:00:00Z"  # recorded after the visit: explains from the start
    bad = appointment("a3", "p3", ["Practitioner/d1"], A1_START, A1_END)
    bad["created"] = "yesterday"
    q = Quarantine()
    ctx = CareContext.from_resources(
        [practitioner("d1", "alice"), *(patient(f"p{i}") for i in (1, 2, 3)), booked, late, bad], q
    )
    assert ctx.explain("alice", "Patient/p1", t("2024-05-31T20:00:00Z")) & A == 0
    assert ctx.explain("alice", "Patient/p1", t("2024-05-31T23:30:00Z")) & A  # looked up to book
    assert ctx.explain("alice", "Patient/p1", t("2024-06-01T09:00:00Z")) & A
    assert ctx.explain("alice", "Patient/p2", t("2024-06-09T09:00:00Z")) & A == 0
    assert ctx.explain("alice", "Patient/p2", t(A1_START)) & A
    assert ctx.explain("alice", "Patient/p3", t(A1_START)) == 0  # set aside, with its reason
    assert [r.location for r in q.kept] == ["entry 7"] and "created" in q.kept[0].reason
