"""Simulated hospitals shared by the simulator's tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from sentinelle.simulate import simulate


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny hospital, seed 0: every attack and trap, in about two seconds."""
    out = tmp_path_factory.mktemp("tiny0")
    simulate(out, size="tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small hospital, seed 0 (the CI size): enough weeks for the realism figures."""
    out = tmp_path_factory.mktemp("small0")
    simulate(out, size="small", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_events(tiny: Path) -> list[dict[str, Any]]:
    """The tiny trail's AuditEvents as dicts (decoded once)."""
    decoder = msgspec.json.Decoder(dict[str, Any])
    with (tiny / "events" / "auditevents.ndjson").open("rb") as f:
        return [decoder.decode(line) for line in f]
