"""The care context reads the simulator's context and explains its benign trail, not its attacks.

The simulator and the context follow the same FHIR conventions (logins, roles, departments,
devices, decoys, VIPs); this test keeps them in agreement on the smallest hospital.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinelle.context import CareContext
from sentinelle.sources import Quarantine, open_events


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        from sentinelle.simulate import simulate
    except ImportError as exc:  # pragma: no cover - the simulator is another stage
        pytest.skip(f"simulator unavailable: {exc}")
    out = tmp_path_factory.mktemp("sim")
    simulate(out, size="tiny", seed=3)
    return out


def test_simulated_context_loads_cleanly(simulated: Path) -> None:
    quarantine = Quarantine()
    ctx = CareContext.load([simulated / "context"], quarantine)
    stats = ctx.stats()
    assert quarantine.count == 0, quarantine.by_reason
    assert stats["skipped"] == 0
    assert stats["accounts"] >= stats["practitioners"] + stats["devices"]
    assert stats["encounters"] > 0 and stats["appointments"] > 0
    assert stats["staff_patients"] > 0 and stats["households"] > 0
    assert stats["restricted"] > 0 and stats["decoys"] > 0
    kinds = {a.kind for a in ctx.accounts()}
    assert {"human", "application", "api_client"} <= kinds


def test_context_explains_benign_accesses_not_attacks(simulated: Path) -> None:
    ctx = CareContext.load([simulated / "context"], Quarantine())
    attack_ids: set[str] = set()
    labels = simulated / "labels" / "attack_events.ndjson"
    if labels.exists():
        import msgspec

        for line in labels.read_bytes().splitlines():
            if line.strip():
                attack_ids.add(msgspec.json.decode(line)["id"])
    totals, explained = [0, 0], [0, 0]
    for ev in open_events([simulated / "events"], Quarantine()):
        if ev.outcome != "success":
            continue
        k = 1 if ev.id in attack_ids else 0
        for p in ev.patients:
            totals[k] += 1
            explained[k] += bool(ctx.explain(ev.account, p, ev.time))
    assert totals[0] > 1000
    # the literature reports > 94 % of accesses explained by care relationships
    assert explained[0] / totals[0] > 0.9
    if totals[1]:
        assert explained[1] / totals[1] < 0.1
