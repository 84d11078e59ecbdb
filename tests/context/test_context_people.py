"""Who is who: accounts, staff who are patients, VIPs, decoys, relatives and coworkers."""

from __future__ import annotations

from typing import Any

import pytest
from context_factory import device, organization, patient, practitioner, role, t

from sentinelle.context import AccountInfo, CareContext
from sentinelle.events import ActorKind

HOME = ("12, rue de l'Église", "76000")


def people() -> list[dict[str, Any]]:
    return [
        organization("cardio"),
        organization("pneumo"),
        # alice is a patient under her INS; her record spells her name differently
        practitioner(
            "d1", "alice", ins="2850976123456", family="Durand", given="Alice", birth="1985-09-12", address=HOME
        ),
        role("r1", "d1", "cardio", "doctor", "2020-01-01"),
        # bob has no INS on file: matched by family name, given name and birth date (accents, case)
        practitioner("n1", "bob", rpps="10001234567", family="Lefèvre", given="Bob", birth="1990-02-03"),
        role("r2", "n1", "cardio", "nurse", "2020-01-01"),
        role("r2b", "n1", "pneumo", "nurse", "2022-01-01"),
        practitioner(
            "d2", "carol", family="Martin", given="Carol", birth="1970-01-01", address=("3 avenue Foch", "76100")
        ),
        role("r3", "d2", "pneumo", "doctor", "2018-01-01"),
        practitioner("it1", "root"),
        role("r4", "it1", None, "it"),
        practitioner("dba", "dba"),
        role("r5", "dba", "cardio", "technician", privileged=True),
        device("batch", "dpi-batch", "application", owner="cardio", addresses=["10.0.0.5", "10.0.0.6"]),
        device("api", "doctolib-api", "api_client", owner="pneumo"),
        patient("pa", ins="2850976123456", family="DURAND EP. ROY", given="Alice", birth="1985-09-12", address=HOME),
        patient("pb", family="LEFEVRE", given="bob", birth="1990-02-03"),
        patient("pb2", family="Lefevre", given="Bob", birth="1990-02-04"),  # not him: another birth date
        patient("kid", family="Durand", given="Léa", birth="2015-05-05", address=("12 Rue de l Eglise", "76 000")),
        patient("kid2", family="DURAND", given="Hugo", birth="2017-07-07", address=HOME),
        patient("neighbour", family="Petit", given="Jean", birth="1950-01-01", address=HOME),
        patient("cousin", family="Durand", given="Paul", birth="1980-01-01", address=("5 rue Jeanne d'Arc", "76000")),
        patient("spouse", family="Martin", given="Anne", birth="1972-01-01", address=("3, Avenue FOCH", "76100")),
        patient("vip", family="Star", given="Rock", security="R"),
        patient("vip2", security="V"),
        patient("normal", security="N"),
        patient("decoy", decoy=True),
        patient("plain", ipp="555"),
    ]


@pytest.fixture(scope="module")
def ctx() -> CareContext:
    return CareContext.from_resources(people())


def test_account_info_of_a_practitioner(ctx: CareContext) -> None:
    info = ctx.account_info("bob")
    assert info == AccountInfo(
        account="bob",
        person="n1",
        kind=ActorKind.HUMAN,
        role="nurse",
        department="pneumo",  # the role that started last
        start=t("2020-01-01"),
        end=None,
        privileged=False,
        departments=frozenset({"cardio", "pneumo"}),
        roles=("nurse",),
    )
    # any identifier of the person reaches the account: RPPS bare or as system|value
    assert ctx.account_info("10001234567") == info
    assert ctx.account_info("urn:oid:1.2.250.1.71.4.2.1|10001234567") == info
    assert ctx.account_info("nobody") is None


def test_privileged_accounts(ctx: CareContext) -> None:
    assert ctx.account_info("root").privileged  # type: ignore[union-attr]
    assert ctx.account_info("dba").privileged  # type: ignore[union-attr]
    assert ctx.account_info("dpi-batch").privileged  # type: ignore[union-attr]
    assert not ctx.account_info("alice").privileged  # type: ignore[union-attr]
    assert not ctx.account_info("doctolib-api").privileged  # type: ignore[union-attr]


def test_devices_are_accounts(ctx: CareContext) -> None:
    batch = ctx.account_info("dpi-batch")
    api = ctx.account_info("doctolib-api")
    assert batch is not None and api is not None
    assert (batch.kind, batch.role, batch.department, batch.person) == (
        ActorKind.APPLICATION,
        "service",
        "cardio",
        "batch",
    )
    assert batch.addresses == ("10.0.0.5", "10.0.0.6")
    assert (api.kind, api.role, api.department) == (ActorKind.API_CLIENT, "api", "pneumo")


def test_accounts_lists_each_once(ctx: CareContext) -> None:
    names = sorted(a.account for a in ctx.accounts())
    assert names == ["alice", "bob", "carol", "dba", "doctolib-api", "dpi-batch", "root"]


def test_staff_as_patient_by_national_identifier(ctx: CareContext) -> None:
    assert ctx.is_own_record("alice", "Patient/pa")
    assert not ctx.is_own_record("alice", "Patient/pb")
    assert not ctx.is_own_record("carol", "Patient/pa")


def test_staff_as_patient_by_name_and_birth_date(ctx: CareContext) -> None:
    assert ctx.is_own_record("bob", "Patient/pb")
    assert not ctx.is_own_record("bob", "Patient/pb2")


def test_coworker_is_a_staff_patient_of_the_same_department(ctx: CareContext) -> None:
    # alice (cardio) is patient pa: bob works in cardio too, carol does not
    assert ctx.is_coworker("bob", "Patient/pa")
    assert not ctx.is_coworker("carol", "Patient/pa")
    # bob (cardio, pneumo) is patient pb: carol (pneumo) and alice (cardio) are coworkers
    assert ctx.is_coworker("carol", "Patient/pb")
    assert ctx.is_coworker("alice", "Patient/pb")
    # nobody is their own coworker, and a non-staff patient is nobody's coworker
    assert not ctx.is_coworker("alice", "Patient/pa")
    assert not ctx.is_coworker("bob", "Patient/kid")


def test_relatives_share_family_name_and_address(ctx: CareContext) -> None:
    # alice's own record and her Practitioner address both give the household Durand, 12 rue de l'Église
    assert ctx.is_relative("alice", "Patient/kid")
    assert ctx.is_relative("alice", "Patient/kid2")
    assert not ctx.is_relative("alice", "Patient/neighbour")  # same address, another family
    assert not ctx.is_relative("alice", "Patient/cousin")  # same family, another address
    assert not ctx.is_relative("alice", "Patient/pa")  # herself
    # carol has no patient record: her Practitioner name and address are used
    assert ctx.is_relative("carol", "Patient/spouse")
    assert not ctx.is_relative("bob", "Patient/kid")


def test_restricted_by_confidentiality_label(ctx: CareContext) -> None:
    assert ctx.is_restricted("Patient/vip")
    assert ctx.is_restricted("Patient/vip2")
    assert not ctx.is_restricted("Patient/normal")
    assert not ctx.is_restricted("Patient/unknown")


def test_restricted_and_decoy_lists() -> None:
    ctx = CareContext.from_resources(people())
    ctx.add_restricted(["urn:oid:1.2.250.1.999|555", "Patient/not-loaded"])
    assert ctx.is_restricted("Patient/plain")
    assert ctx.is_restricted("Patient/not-loaded")
    ctx.add_decoys(["Patient/plain"])
    assert ctx.is_decoy("Patient/plain")
    assert ctx.stats()["restricted"] == 4


def test_decoy_tag(ctx: CareContext) -> None:
    assert ctx.is_decoy("Patient/decoy")
    assert not ctx.is_decoy("Patient/vip")


def test_stats_count_every_kind(ctx: CareContext) -> None:
    stats = ctx.stats()
    assert stats["patients"] == 13
    assert stats["practitioners"] == 5
    assert stats["practitioner_roles"] == 6
    assert stats["devices"] == 2
    assert stats["organizations"] == 2
    assert stats["accounts"] == 7
    assert stats["staff_patients"] == 2
    assert stats["restricted"] == 2
    assert stats["decoys"] == 1
    # households of two or more patients: only the Durand children at 12 rue de l'Église
    # (their mother's record is under the name "Durand ep. Roy")
    assert stats["households"] == 1
    assert ctx.patients_count == 13


def test_unknown_account_has_no_relations(ctx: CareContext) -> None:
    assert not ctx.is_own_record("mallory", "Patient/pa")
    assert not ctx.is_coworker("mallory", "Patient/pa")
    assert not ctx.is_relative("mallory", "Patient/kid")


def test_accounts_without_login_use_the_practitioner_id() -> None:
    ctx = CareContext.from_resources([practitioner("p-77"), role("r", "p-77", "cardio", "doctor")])
    info = ctx.account_info("p-77")
    assert info is not None and info.role == "doctor"


def test_several_logins_of_one_person() -> None:
    res = practitioner("d1", "alice")
    res["identifier"].append({"system": "urn:sentinelle:login", "value": "adurand"})
    ctx = CareContext.from_resources([res, role("r", "d1", "cardio", "doctor")])
    assert sorted(a.account for a in ctx.accounts()) == ["adurand", "alice"]
    assert ctx.account_info("adurand").person == "d1"  # type: ignore[union-attr]
