"""The open benchmark hospital: a simulated audit trail with planted attacks and benign traps.

No public benchmark of access-log misuse in health care exists. `simulate` writes one,
deterministically per seed: the audit trail of a French hospital as FHIR R4 AuditEvent
NDJSON in IHE BALP shapes (`events/`), the care context that explains it (`context/`),
the answer key (`labels/`) and a manifest. `evaluate` scores an alert file against it.

    >>> from sentinelle.simulate import SIZES
    >>> sorted(SIZES)
    ['large', 'small', 'standard', 'tiny']
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.errors import ConfigError
from sentinelle.simulate import fhir_out
from sentinelle.simulate.activity import Activity
from sentinelle.simulate.attacks import plan_attacks, run_attacks
from sentinelle.simulate.fhir_out import ContextWriter
from sentinelle.simulate.hospital import MINUTE_MS, SIZES, Hospital, SizeConfig, build_hospital
from sentinelle.simulate.trail import Trail
from sentinelle.simulate.traps import Traps

__all__ = ["SIZES", "SizeConfig", "simulate"]

GENERATOR = "sentinelle.simulate 1"


def simulate(
    out: Path,
    size: str = "small",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the benchmark hospital of one size and seed into `out`; return its summary.

    The same (size, seed) always gives byte-identical files. Generation streams day by
    day (bounded memory); `progress(done, total)` is called after each simulated day.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown simulation size {size!r}; choose one of {', '.join(SIZES)}")
    cfg = SIZES[size]
    out = Path(out)
    began = time.perf_counter()
    for sub in ("events", "context", "labels"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)

    def stream(name: str) -> random.Random:
        # Independent streams: changing one behaviour does not reshuffle all the others.
        return random.Random(f"sentinelle:{size}:{seed}:{name}")

    h = build_hospital(cfg, stream("hospital"))
    ctx = ContextWriter(out / "context")
    trail = Trail(out / "events" / "auditevents.ndjson", out / "labels" / "attack_events.ndjson", stream("ids"))
    trail.end_ms = h.end_ms
    act = Activity(h, stream("activity"), ctx, trail)
    attack_rng = stream("attacks")
    attacks = plan_attacks(h, act, attack_rng)
    trail.set_attacks([a.id for a in attacks])
    traps = Traps(h, stream("traps"), set(act.reserved_staff))
    traps.plan_staff(act)
    act.build_roster()
    act.bootstrap()
    traps.plan_patients(act, act.used_patients)

    for d in range(cfg.days):
        act.run_day(d)
        run_attacks(attacks, act, d, attack_rng)
        act.close_sessions()
        # Keep the last minutes buffered: tomorrow's first logins come a little before midnight.
        trail.flush(h.local_ms(d + 1, 0) - 10 * MINUTE_MS)
        if progress is not None:
            progress(d + 1, cfg.days)
    act.finish()
    trail.close()
    _write_static_context(h, ctx)
    ctx.close()

    labels = []
    for a, st in zip(attacks, trail.stats, strict=True):
        labels.append(a.label(st.n_events, len(st.patients), st.first, st.last, st.addresses))
    (out / "labels" / "attacks.json").write_bytes(msgspec.json.format(msgspec.json.encode(labels), indent=2))
    # A trap names the accounts whose alerts would be false there: never an attacker's.
    attackers = {a.account for a in attacks}
    for item in traps.items:
        item["accounts"] = [x for x in item["accounts"] if x not in attackers]
    (out / "labels" / "traps.json").write_bytes(msgspec.json.format(msgspec.json.encode(traps.items), indent=2))

    elapsed = time.perf_counter() - began
    manifest = {
        "generator": GENERATOR,
        "size": size,
        "seed": seed,
        "period": {
            "start": fhir_out.format_recorded(h.start_ms),
            "end": fhir_out.format_recorded(h.end_ms),
            "days": cfg.days,
            "timezone": "Europe/Paris",
        },
        "counts": {
            "events": trail.count,
            "events_by_operation": dict(sorted(trail.by_op.items())),
            "events_by_actor_kind": dict(sorted(trail.by_kind.items())),
            "event_bytes": trail.bytes,
            "context": dict(sorted(ctx.counts.items())),
            "staff": len(h.staff),
            "departments": len(h.depts),
            "devices": len(h.devices),
            "patients": sum(h.registered),
            "attacks": len(attacks),
            "attack_events": sum(st.n_events for st in trail.stats),
            "traps": len(traps.items),
            "staff_hired": sum(1 for x in h.staff if 0 < x.start_day < cfg.days),
            "staff_left": sum(1 for x in h.staff if x.last_day < cfg.days),
            "interns": len(traps.lifecycle["interns"]),
        },
        "files": {
            "events": "events/auditevents.ndjson",
            "context": sorted(f"context/{name}.ndjson" for name in ctx.counts),
            "labels": ["labels/attacks.json", "labels/attack_events.ndjson", "labels/traps.json"],
        },
    }
    (out / "manifest.json").write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2))
    summary = dict(manifest)
    summary["seconds"] = round(elapsed, 2)
    return summary


def _write_static_context(h: Hospital, ctx: ContextWriter) -> None:
    """Organizations, staff, devices and patients: written once, after the period."""
    ctx.write(fhir_out.hospital_organization())
    for dept in h.depts.values():
        ctx.write(fhir_out.organization(dept))
    for s in h.staff:
        ctx.write(fhir_out.practitioner(s, h.addresses[s.address]))
    for s in h.staff:
        start = h.local_ms(s.start_day, 0)
        end = h.local_ms(s.end_day, 0) if s.end_day is not None else None
        ctx.write(fhir_out.practitioner_role(s, start, end))
    for dev in h.devices.values():
        ctx.write(fhir_out.device(dev))
    for p in sorted((p for p in range(len(h.pid)) if h.registered[p]), key=lambda p: h.pid[p]):
        ctx.write(fhir_out.patient(h.pid[p], h.p_family[p], h.p_given[p], h.p_gender[p], h.p_birth[p],
                                   h.addresses[h.p_addr[p]], h.p_ins[p], h.p_phone[p], h.gps[h.p_gp[p]],
                                   h.p_flags[p]))
