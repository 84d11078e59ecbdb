"""The context's public face: a curated API, settings kept in step with the docs, docstrings that run."""

from __future__ import annotations

import doctest
from pathlib import Path

import msgspec
import pytest

import sentinelle.context as context
from sentinelle.context import SETTINGS, CareContext, ContextSettings, Reason, care, normalise, settings

DOCS = Path(__file__).parents[2] / "docs" / "context.md"


def test_public_api_is_explicit() -> None:
    for name in context.__all__:
        assert hasattr(context, name), name
    assert set(context.__all__) == {"SETTINGS", "AccountInfo", "CareContext", "ContextSettings", "Reason", "Setting"}


def test_reason_bits_are_distinct_and_stable() -> None:
    # detectors and stored alerts keep these numbers: they must not move
    assert [int(r) for r in Reason] == [1, 2, 4, 8, 16]
    assert [r.name for r in Reason] == ["ENCOUNTER", "APPOINTMENT", "CARE_TEAM", "DEPARTMENT", "TREATED_BEFORE"]


def test_settings_table_matches_the_settings_struct() -> None:
    fields = {f.name: f.default for f in msgspec.structs.fields(ContextSettings)}
    assert fields == {s.name: s.default for s in SETTINGS}


def test_every_setting_and_reason_is_documented() -> None:
    if not DOCS.exists():
        pytest.fail(f"{DOCS} is missing")
    text = DOCS.read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in text]
    missing += [r.name for r in Reason if r.name and f"`{r.name}`" not in text]
    assert not missing, f"not in docs/context.md: {missing}"


def test_empty_context_explains_nothing() -> None:
    ctx = CareContext()
    assert ctx.explain("alice", "Patient/1", 0) == 0
    assert ctx.resolve_patient("Patient/1") == "Patient/1"
    assert ctx.account_info("alice") is None
    assert ctx.patients_count == 0 and list(ctx.accounts()) == []
    assert ctx.stats()["patients"] == 0


@pytest.mark.parametrize("module", [care, normalise, settings])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
