"""Fixtures of the incident tests: one simulated hospital with planted attacks, read once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from incident_factory import Hospital

from sentinelle.simulate import simulate


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    """The tiny simulated hospital of seed 2 (every attack and trap, in about a second)."""
    root = tmp_path_factory.mktemp("hospital")
    simulate(root, size="tiny", seed=2)
    yield Hospital(root)
