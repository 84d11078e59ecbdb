"""docs/ledger.md keeps up with the code: every setting, problem kind and public name is described."""

from __future__ import annotations

from pathlib import Path

import sentinelle.ledger as ledger
from sentinelle.ledger import SETTINGS

DOC = Path(__file__).parents[2] / "docs" / "ledger.md"
KINDS = ["modified", "deleted", "inserted", "reordered", "truncated", "checkpoint_modified", "checkpoint_deleted",
         "rewritten", "nodes"]


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [name for name, _, _ in SETTINGS if f"`{name}`" not in text]
    assert not missing, f"settings missing from docs/ledger.md: {missing}"


def test_every_problem_kind_is_documented() -> None:
    text = DOC.read_text()
    assert [k for k in KINDS if f"`{k}`" not in text] == []


def test_the_public_api_is_explicit() -> None:
    for name in ledger.__all__:
        assert hasattr(ledger, name), name
    text = DOC.read_text()
    for name in ("append_batch", "on_append", "inclusion_proof", "consistency_proof", "apply_retention", "verify"):
        assert f"{name}" in text, name
