"""API clients: a connected software reading outside what it has ever served.

An application or API client serves a fixed scope: the practices (departments) it books
for, the resource types it exchanges. The Doctolib 2020 leak was a connected booking
software's access reading appointments far beyond its practices. The detector learns
each client account's served departments (those treating the patients it reads, from
the care context) and data categories, and signals a run of accesses outside them:
`api_out_of_scope_run` out-of-scope patients among the last 20.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from sentinelle.detect.detectors.base import Detector, Observation, ev
from sentinelle.detect.signal import Signal, fmt_int
from sentinelle.detect.state import AccountState
from sentinelle.events import category_names

__all__ = ["ApiClientDetector", "ApiClientState"]

_SERVICE_KINDS = frozenset({"application", "api_client"})
_RING = 20
_MAX_DEPTS = 512


class ApiClientState(msgspec.Struct):
    """Served scope, and the out-of-scope flags of the last 20 opened patients."""

    depts: dict[str, int] = msgspec.field(default_factory=dict)
    cats: int = 0
    served: int = 0
    ring: list[int] = msgspec.field(default_factory=lambda: [0] * _RING)
    pos: int = 0
    out: int = 0
    emitted: int = 0
    first_out: int = 0
    out_depts: dict[str, int] = msgspec.field(default_factory=dict)
    out_cats: int = 0
    patients: list[str] = msgspec.field(default_factory=list)


class ApiClientDetector(Detector):
    """Departments and data categories a client account never served before."""

    name: ClassVar[str] = "api_client"
    opens: ClassVar[str] = "all"
    hooks: ClassVar[frozenset[str]] = frozenset({"open"})
    kinds: ClassVar[dict[str, tuple[str, str]]] = {
        "api_scope": ("logiciel connecté lisant hors de son périmètre habituel",
                      "connected software reading outside its usual scope"),
    }

    def applies(self, kind: str) -> bool:
        return kind in _SERVICE_KINDS

    def new_state(self, acc: AccountState) -> ApiClientState:
        return ApiClientState()

    def state_type(self) -> type[ApiClientState]:
        return ApiClientState

    def on_open(self, state: ApiClientState, obs: Observation) -> Signal | None:
        s = self.settings
        depts = obs.departments()
        cats = obs.event.categories
        judged = state.served >= s.api_min_served and not obs.learning
        out_dept = judged and bool(depts) and bool(state.depts) and not any(d in state.depts for d in depts)
        out_cat = judged and bool(cats & ~state.cats)
        out = 1 if (out_dept or out_cat) else 0
        old = state.ring[state.pos]
        state.ring[state.pos] = out
        state.pos = (state.pos + 1) % _RING
        state.out += out - old
        if not out:
            state.served += 1
            state.cats |= cats
            for d in depts:
                if d in state.depts:
                    state.depts[d] += 1
                elif len(state.depts) < _MAX_DEPTS:
                    state.depts[d] = 1
            if state.out == 0:
                state.emitted = 0
                state.out_depts = {}
                state.out_cats = 0
                state.patients = []
            return None
        if state.out == 1 or not state.first_out:
            state.first_out = obs.time
        for d in depts:
            if len(state.out_depts) < 16:
                state.out_depts[d] = state.out_depts.get(d, 0) + 1
        state.out_cats |= cats & ~state.cats
        if len(state.patients) < 50:
            state.patients.append(obs.patient)
        if state.out < s.api_out_of_scope_run or state.out <= state.emitted:
            return None
        state.emitted = _RING if state.out >= _RING else state.out + 4
        names = ", ".join(sorted(state.out_depts)[:5])
        new_cats = ", ".join(category_names(state.out_cats))
        fr = [f"{fmt_int(state.out, 'fr')} des {_RING} derniers patients lus sont hors du périmètre servi "
              f"jusqu'ici par ce client"]
        en = [f"{fmt_int(state.out, 'en')} of the last {_RING} patients read are outside the scope this "
              "client has served"]
        if names:
            fr.append(f"services jamais servis : {names}")
            en.append(f"departments never served: {names}")
        if new_cats:
            fr.append(f"types de données jamais lus : {new_cats}")
            en.append(f"data types never read: {new_cats}")
        fr.append(f"périmètre habituel : {fmt_int(len(state.depts), 'fr')} service(s)")
        en.append(f"usual scope: {fmt_int(len(state.depts), 'en')} department(s)")
        score = 0.7 + 0.2 * min(1.0, (state.out - s.api_out_of_scope_run) / max(1, _RING - s.api_out_of_scope_run))
        return self.signal(obs, score, "api_scope", [ev(
            "api_client.out_of_scope",
            " ; ".join(fr),
            "; ".join(en),
            out_of_scope=state.out,
            of=_RING,
            departments=names,
            categories=new_cats,
            served_departments=len(state.depts),
        )], patients=tuple(state.patients), first_time=state.first_out)
