"""Scope on hand-made trails: per-person categories, failures apart, spellings merged, unexplained only."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinelle.context import CareContext
from sentinelle.errors import ConfigError
from sentinelle.events import AccessEvent, Category
from sentinelle.incident import Selector, scope_from_events

T0 = 1_735_689_600_000
INS = "urn:oid:1.2.250.1.213.1.4.8"

CTX = CareContext.from_resources([
    {"resourceType": "Practitioner", "id": "d1", "identifier": [{"system": "urn:sentinelle:login", "value": "doc"}]},
    {"resourceType": "Patient", "id": "p1", "identifier": [{"system": INS, "value": "185057800608436"}]},
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Patient", "id": "p3", "meta": {"tag": [{"system": "https://sentinelle.health/tags",
                                                             "code": "decoy"}]}},
    {"resourceType": "Encounter", "id": "e1", "status": "in-progress", "subject": {"reference": "Patient/p2"},
     "participant": [{"individual": {"reference": "Practitioner/d1"}}], "period": {"start": "2025-01-01T00:00:00Z"}},
])


def ev(i: int, account: str, patients: tuple[str, ...], cats: int, outcome: str = "success",
       action: str = "read", address: str = "10.0.0.1") -> AccessEvent:
    return AccessEvent(id=f"e{i}", time=T0 + i * 1000, account=account, action=action, outcome=outcome,
                       patients=patients, categories=cats, address=address, client="dpi-web", auth="password")


TRAIL = [
    ev(1, "x", ("Patient/p1",), int(Category.IDENTITY)),
    ev(2, "x", (f"{INS}|185057800608436",), int(Category.NATIONAL_ID)),  # p1 named by its INS
    ev(3, "x", ("Patient/p2",), int(Category.ALLERGY), outcome="denied"),
    ev(4, "x", ("Patient/p3",), int(Category.CLINICAL), action="update"),
    ev(5, "x", (), 0, action="login"),
    ev(6, "doc", ("Patient/p2",), int(Category.CLINICAL)),
    ev(7, "doc", ("Patient/p1",), int(Category.LAB)),
    ev(8, "x", ("Patient/p2",), int(Category.APPOINTMENT | Category.SPECIALTY), address="185.220.101.7"),
]


def test_per_person_categories_and_failures_apart(tmp_path: Path) -> None:
    s = scope_from_events(TRAIL, [Selector(accounts=("x",), end=T0 + 7_500)], CTX)
    assert {e.ref: e.categories for e in s.exposures()} == {
        "Patient/p1": ["identity", "national_id"], "Patient/p3": ["clinical"]}
    m = s.summary
    assert m.patients == 2 and m.records == 3 and m.attempted_only == 1 and m.failed_events == 1
    assert m.events == 5 and m.writes == 1 and m.decoys == 1 and m.nir_patients == 1 and m.health_patients == 1
    assert m.first == T0 + 1000 and m.last == T0 + 5000
    assert [(a.name, a.patients, a.failed) for a in m.accounts] == [("x", 2, 1)]
    assert m.auth == {"password": 5}
    cats = {c.category: (c.patients, c.records, c.health, c.nir) for c in m.categories}
    assert cats == {"identity": (1, 1, False, False), "national_id": (1, 1, False, True),
                    "clinical": (1, 1, True, False)}


def test_selectors_combine_and_specialty_counts_as_health() -> None:
    s = scope_from_events(TRAIL, [Selector(addresses=("185.220.101.0/24",)), Selector(accounts=("doc",))], CTX)
    assert {e.ref: e.categories for e in s.exposures()} == {
        "Patient/p1": ["lab"], "Patient/p2": ["appointment", "specialty", "clinical"]}
    assert s.summary.health_patients == 2
    assert {a.name for a in s.summary.addresses} == {"10.0.0.1", "185.220.101.7"}


def test_unexplained_only_leaves_out_care() -> None:
    s = scope_from_events(TRAIL, [Selector(accounts=("doc",), unexplained_only=True)], CTX)
    assert s.refs == ["Patient/p1"]  # the encounter explains p2
    with pytest.raises(ConfigError):
        scope_from_events(TRAIL, [Selector(accounts=("doc",), unexplained_only=True)])


def test_namesakes_on_a_page_that_found_a_treated_patient_are_explained() -> None:
    """A search page is explained as a whole when it returned a patient in the account's care."""
    page = T0 + 60_000
    ident = int(Category.IDENTITY)
    trail = [
        # One event per result, as some systems log a page: p2 (treated) and its namesake p1.
        AccessEvent(id="s1", time=page, account="doc", action="search", outcome="success",
                    patients=("Patient/p2",), categories=ident),
        AccessEvent(id="s2", time=page, account="doc", action="search", outcome="success",
                    patients=("Patient/p1",), categories=ident),
        # One event with both patients of the page.
        AccessEvent(id="s3", time=page + 5_000, account="doc", action="search", outcome="success",
                    patients=("Patient/p2", "Patient/p4"), categories=ident),
        # A page where nobody is in care stays unexplained, and so does a read of the namesake.
        AccessEvent(id="s4", time=page + 9_000, account="doc", action="search", outcome="success",
                    patients=("Patient/p5", "Patient/p6"), categories=ident),
        AccessEvent(id="r1", time=page + 12_000, account="doc", action="read", outcome="success",
                    patients=("Patient/p7",), categories=ident),
        # Another account's page at the same instant does not explain doc's.
        AccessEvent(id="s5", time=page + 15_000, account="x", action="search", outcome="success",
                    patients=("Patient/p2",), categories=ident),
        AccessEvent(id="s6", time=page + 15_000, account="doc", action="search", outcome="success",
                    patients=("Patient/p8",), categories=ident),
    ]
    s = scope_from_events(trail, [Selector(accounts=("doc",), start=page, unexplained_only=True)], CTX)
    assert sorted(s.refs) == ["Patient/p5", "Patient/p6", "Patient/p7", "Patient/p8"]


def test_empty_and_unknown() -> None:
    s = scope_from_events(TRAIL, [Selector(accounts=("nobody",))], CTX)
    assert s.summary.patients == 0 and s.summary.first is None and len(s) == 0
