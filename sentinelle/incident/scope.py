"""The exact scope of an incident, computed from the audit trail.

Why exact and fast: after a breach the establishment must tell the CNIL within 72 hours
how many persons and which data, and then write to each person about *their* data. The
press shows what happens otherwise (MédecinDirect: "about 300,000", then 285,000; Aléo
Santé: scope unknown). The scope is computed from every stored access that matches the
incident's selectors, through the columnar scope index (see `index.py`): vectorised
selection over memory-mapped columns, grouping of the selected rows by patient, then
revealing and resolving only the patients in scope.

What counts: a patient is *exposed* when a successful access returned their data; the
categories are those the accesses returned (the event's category mask), per patient.
Denied or failed requests are counted apart (`attempted_only`). Patients named in two
spellings by two sources are merged into one person through the care context.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from sentinelle.context import CareContext
from sentinelle.errors import ConfigError
from sentinelle.events import AccessEvent, Category, category_names
from sentinelle.incident.index import DICT_COLUMNS, IndexView, ScopeIndex
from sentinelle.incident.model import (
    HEALTH_CATEGORIES,
    NIR_CATEGORIES,
    ActorCount,
    CategoryCount,
    PatientExposure,
    ScopeSummary,
    Selector,
)
from sentinelle.ledger import Keyring

__all__ = ["Scope", "compute_scope", "scope_from_events", "select_rows"]

_WRITE_ACTIONS = ("create", "update", "delete")
_EXPORT_ACTIONS = ("export", "print")
_CATEGORY_BITS = [(c.name.lower(), int(c.value)) for c in Category if c.name]

Arr = np.ndarray[Any, Any]


class Scope:
    """An incident's scope: the summary, one row per exposed person, and the selected accesses.

    Per-person data are columns (numpy arrays) so a 750,000-person scope stays a few
    arrays, not 750,000 objects: `refs[i]` (canonical `Patient/<id>` when revealed and
    resolved), `masks[i]` (category bit mask), `events[i]`, `first[i]`, `last[i]`.
    `rows` holds the selected accesses (all outcomes) with dictionary columns decoded on
    demand through `decode`.
    """

    def __init__(self, summary: ScopeSummary, refs: list[str], masks: Arr, events: Arr, first: Arr, last: Arr,
                 rows: dict[str, Arr], dicts: dict[str, list[str]]) -> None:
        self.summary = summary
        self.refs = refs
        self.masks = masks
        self.events = events
        self.first = first
        self.last = last
        self.rows = rows
        self.dicts = dicts
        self._pos: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.refs)

    def exposures(self) -> Iterator[PatientExposure]:
        """Every exposed person, in reference order."""
        masks, events, first, last = (a.tolist() for a in (self.masks, self.events, self.first, self.last))
        for i, ref in enumerate(self.refs):
            yield PatientExposure(ref, masks[i], events[i], first[i], last[i])

    def exposure(self, ref: str) -> PatientExposure | None:
        """The exposure of one person (canonical reference), or None when out of scope."""
        if self._pos is None:
            self._pos = {r: i for i, r in enumerate(self.refs)}
        i = self._pos.get(ref)
        if i is None:
            return None
        return PatientExposure(ref, int(self.masks[i]), int(self.events[i]), int(self.first[i]), int(self.last[i]))

    def decode(self, column: str, codes: Arr | None = None) -> list[str]:
        """Strings of a dictionary column for the selected rows (or for the given codes)."""
        values = self.dicts[column]
        src = self.rows[column] if codes is None else codes
        return [values[c] for c in src.tolist()]


def _select_part(view: IndexView, part_i: int, sel: Selector) -> Arr:
    part = view.parts[part_i]
    cols = part.cols
    conds: list[tuple[str, Arr]] = []
    for column, values in (("account", sel.accounts), ("client", sel.clients), ("address", sel.addresses)):
        if values:
            codes = view.codes(column, values)
            if len(codes) == 0:
                return np.zeros(0, dtype=np.int64)
            conds.append((column, codes))
    out: list[Arr] = []
    for a, b in part.ranges(sel.start, sel.end):
        m: Arr | None = None
        for column, codes in conds:
            c = cols[column][a:b]
            mm = c == codes[0] if len(codes) == 1 else np.isin(c, codes)
            m = mm if m is None else (m & mm)
        if sel.start is not None or sel.end is not None:
            t = cols["time"][a:b]
            if sel.start is not None:
                mm = t >= sel.start
                m = mm if m is None else (m & mm)
            if sel.end is not None:
                mm = t < sel.end
                m = mm if m is None else (m & mm)
        if m is None:
            out.append(np.arange(a, b, dtype=np.int64))
        else:
            out.append(np.flatnonzero(m) + a)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def select_rows(view: IndexView, selectors: Sequence[Selector]) -> list[Arr]:
    """Row numbers per index part matching any selector (unexplained filters not applied)."""
    out = []
    for i in range(len(view.parts)):
        found = [_select_part(view, i, s) for s in selectors]
        if not found:
            rows = np.zeros(0, dtype=np.int64)
        elif len(found) == 1:
            rows = found[0]  # one selector: already sorted and distinct
        else:
            rows = _sorted_unique(np.concatenate(found))
        out.append(rows)
    return out


def _gather(view: IndexView, per_part: list[Arr]) -> dict[str, Arr]:
    names = ("seq", "time", "pk", *DICT_COLUMNS, "categories")
    return {name: np.concatenate([view.parts[i].cols[name][rows] for i, rows in enumerate(per_part)])
            for name in names}


def _unexplained(view: IndexView, rows: dict[str, Arr], context: CareContext, explaining: int = 0) -> Arr:
    """Boolean mask of the rows whose access the care context does not explain."""
    pks = rows["pk"]
    uniq, inv = np.unique(pks, return_inverse=True)
    refs = view.reveal(uniq)
    canon = [context.resolve_patient(r) if r else "" for r in refs]
    accounts = view.dicts["account"].values
    explain = context.explain
    keep = np.zeros(len(pks), dtype=bool)
    acc = rows["account"].tolist()
    tms = rows["time"].tolist()
    wanted = explaining or -1
    for i, j in enumerate(inv.tolist()):
        ref = canon[j]
        keep[i] = bool(ref) and explain(accounts[acc[i]], ref, tms[i]) & wanted == 0
    return keep & ~_search_collateral(view, rows, keep)


def _search_collateral(view: IndexView, rows: dict[str, Arr], unexplained: Arr) -> Arr:
    """Rows of a search result page that also returned a patient the account's care explains.

    Why: a search by name returns the patient being looked for *and* their namesakes, and
    the audit trail names every patient on the page (one event with several patients, or,
    as some systems log it, one event per result at the same instant). Searching for a
    patient one treats is explained, and so is seeing their namesakes on the same page;
    keeping those namesakes would put an unrelated person in the scope, and a letter in
    their mailbox, for a page the insider had every reason to open. A page where no
    patient is explained stays unexplained as a whole.
    """
    out = np.zeros(len(unexplained), dtype=bool)
    code = view.dicts["action"].find("search")
    if code < 0 or not unexplained.any():
        return out
    search = rows["action"] == code
    if not search.any():
        return out
    idx = np.flatnonzero(search)
    page = np.stack([rows["account"][idx].astype(np.int64), rows["time"][idx]], axis=1)
    _, group = np.unique(page, axis=0, return_inverse=True)
    group = group.reshape(-1)
    explained_pages = np.bincount(group, weights=(~unexplained[idx]).astype(np.float64)) > 0
    out[idx] = explained_pages[group]
    return out


def compute_scope(view: IndexView, selectors: Sequence[Selector], context: CareContext | None = None, *,
                  reveal: bool = True, source: str = "ledger") -> Scope:
    """The scope of the accesses matching any of `selectors` (each selector: all its fields).

    With `reveal` (needs the keyring the index was opened with) patients come back as
    clear references, resolved to one person each through `context` when given;
    without, as `pk:<hex>` keys. A selector with `unexplained_only` needs `context`.
    """
    plain = [s for s in selectors if not s.unexplained_only]
    special = [s for s in selectors if s.unexplained_only]
    if special and context is None:
        raise ConfigError("a selector keeps only unexplained accesses: the care context is needed")
    parts_rows = select_rows(view, plain)
    rows = _gather(view, parts_rows)
    for sel in special:
        extra_rows = _gather(view, select_rows(view, [sel]))
        assert context is not None
        keep = _unexplained(view, extra_rows, context, sel.explaining)
        extra = {k: v[keep] for k, v in extra_rows.items()}
        # Union by (seq, pk): a row may match a plain selector and an unexplained one.
        both = {k: np.concatenate([rows[k], extra[k]]) for k in rows}
        key = np.stack([both["seq"], both["pk"]], axis=1)
        _, first_idx = np.unique(key, axis=0, return_index=True)
        rows = {k: v[np.sort(first_idx)] for k, v in both.items()}
    dicts = {name: list(view.dicts[name].values) for name in DICT_COLUMNS}
    return _summarise(view, rows, dicts, context, reveal, source, len(selectors))


def _sorted_unique(a: Arr) -> Arr:
    """Distinct values, sorted (sort-based: numpy's hash-based `unique` is slower on millions)."""
    if len(a) == 0:
        return a
    s = np.sort(a)
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _group(keys: Arr, cats: Arr, times: Arr) -> tuple[Arr, Arr, Arr, Arr, Arr, Arr]:
    """Group rows by key: (keys, inverse, masks, counts, first, last)."""
    if len(keys) == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e.astype(np.int32), e, e, e
    order = np.argsort(keys)
    ks = keys[order]
    starts = np.concatenate([[0], np.flatnonzero(ks[1:] != ks[:-1]) + 1])
    uniq = ks[starts]
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(ks)]])))
    cs = cats[order].astype(np.int32)
    ts = times[order]
    masks = np.bitwise_or.reduceat(cs, starts)
    counts = np.diff(np.concatenate([starts, [len(ks)]]))
    first = np.minimum.reduceat(ts, starts)
    last = np.maximum.reduceat(ts, starts)
    return uniq, inverse, masks, counts, first, last


def _summarise(view: IndexView, rows: dict[str, Arr], dicts: dict[str, list[str]], context: CareContext | None,
               reveal: bool, source: str, n_selectors: int) -> Scope:
    d = view.dicts
    success = d["outcome"].find("success")
    ok = rows["outcome"] == success
    has_patient = rows["pk"] != 0
    expo = ok & has_patient
    pk_e = rows["pk"][expo]
    cat_e = rows["categories"][expo]
    time_e = rows["time"][expo]
    uniq, inverse, masks, counts, first, last = _group(pk_e, cat_e, time_e)

    resolved = False
    if reveal and len(uniq):
        revealed = view.reveal(uniq)
        if None in revealed:
            refs = [r if r is not None else f"pk:{int(k) & (2**64 - 1):016x}"
                    for r, k in zip(revealed, uniq.tolist(), strict=True)]
        else:
            refs = revealed  # type: ignore[assignment]
        if context is not None:
            resolve = context.resolve_patient
            refs = [resolve(r) for r in refs]
            resolved = True
            if len(set(refs)) != len(refs):
                # Two spellings of one person: merge their rows.
                names = sorted(set(refs))
                pos = {r: i for i, r in enumerate(names)}
                person = np.array([pos[r] for r in refs], dtype=np.int64)
                row_person = person[inverse]
                _, inverse, masks, counts, first, last = _group(row_person, cat_e, time_e)
                refs = names
    else:
        refs = [f"pk:{int(k) & (2**64 - 1):016x}" for k in uniq.tolist()]
    n_pat = len(refs)

    # Persons touched only by denied or failed requests.
    failed = ~ok & has_patient
    attempted = (np.setdiff1d(_sorted_unique(rows["pk"][failed]), uniq, assume_unique=True) if failed.any()
                 else np.zeros(0))

    cats: list[CategoryCount] = []
    for name, bit in _CATEGORY_BITS:
        p = int(np.count_nonzero(masks & bit)) if n_pat else 0
        r = int(np.count_nonzero(cat_e & bit)) if len(cat_e) else 0
        if p or r:
            cats.append(CategoryCount(name, p, r, bool(bit & HEALTH_CATEGORIES), bool(bit & NIR_CATEGORIES)))

    def actors(column: str) -> list[ActorCount]:
        codes = rows[column]
        if len(codes) == 0:
            return []
        values = dicts[column]
        out: list[ActorCount] = []
        # Dictionary codes are small integers: count with bincount, not a sort of the rows.
        codes64 = codes.astype(np.int64)
        ev_all = np.bincount(codes64, minlength=len(values))
        ucodes = np.flatnonzero(ev_all)
        ev = ev_all[ucodes]
        fails = np.bincount(codes64[~ok], minlength=len(values))[ucodes]
        tmin_all = np.full(len(values), np.iinfo(np.int64).max)
        tmax_all = np.full(len(values), np.iinfo(np.int64).min)
        np.minimum.at(tmin_all, codes64, rows["time"])
        np.maximum.at(tmax_all, codes64, rows["time"])
        tmin, tmax = tmin_all[ucodes], tmax_all[ucodes]
        # Distinct exposed persons per actor: distinct (actor, person) pairs.
        pats = np.zeros(len(ucodes), dtype=np.int64)
        if n_pat:
            a_e = np.searchsorted(ucodes, codes64[expo])
            pair = _sorted_unique(a_e * (n_pat + 1) + inverse)
            pats = np.bincount(pair // (n_pat + 1), minlength=len(ucodes))
        for i, c in enumerate(ucodes.tolist()):
            name = values[c]
            role = dept = kind = ""
            if column == "account" and context is not None:
                info = context.account_info(name)
                if info is not None:
                    role, dept, kind = info.role, info.department, info.kind
            out.append(ActorCount(name, int(ev[i]), int(pats[i]), int(tmin[i]), int(tmax[i]), int(fails[i]),
                                  role, dept, kind))
        out.sort(key=lambda a: (-a.patients, -a.events, a.name))
        return out

    def count_by(column: str) -> dict[str, int]:
        if len(rows[column]) == 0:
            return {}
        n = np.bincount(rows[column].astype(np.int64), minlength=len(dicts[column]))
        return {dicts[column][c]: int(n[c]) for c in np.flatnonzero(n).tolist()}

    actions = count_by("action")
    act_codes = rows["action"]
    writes = sum(int(np.count_nonzero(ok & (act_codes == d["action"].find(a)))) for a in _WRITE_ACTIONS
                 if d["action"].find(a) >= 0)
    exports = sum(int(np.count_nonzero(ok & (act_codes == d["action"].find(a)))) for a in _EXPORT_ACTIONS
                  if d["action"].find(a) >= 0)
    decoys = restricted = 0
    if context is not None and resolved:
        decoys = sum(1 for r in refs if context.is_decoy(r))
        restricted = sum(1 for r in refs if context.is_restricted(r))
    summary = ScopeSummary(
        patients=n_pat,
        records=len(pk_e),
        events=len(_sorted_unique(rows["seq"])),
        failed_events=len(_sorted_unique(rows["seq"][~ok])),
        attempted_only=len(attempted),
        categories=cats,
        accounts=actors("account"),
        clients=actors("client"),
        addresses=actors("address"),
        first=int(rows["time"].min()) if len(rows["time"]) else None,
        last=int(rows["time"].max()) if len(rows["time"]) else None,
        health_patients=int(np.count_nonzero(masks & HEALTH_CATEGORIES)) if n_pat else 0,
        nir_patients=int(np.count_nonzero(masks & NIR_CATEGORIES)) if n_pat else 0,
        decoys=decoys,
        restricted=restricted,
        writes=writes,
        exports=exports,
        actions=actions,
        auth=count_by("auth"),
        resolved=resolved,
        computed=int(time.time() * 1000),
        source=source,
    )
    _ = n_selectors
    return Scope(summary, refs, masks.astype(np.int32), counts.astype(np.int64), first.astype(np.int64),
                 last.astype(np.int64), rows, dicts)


def scope_from_events(events: Iterable[AccessEvent], selectors: Sequence[Selector],
                      context: CareContext | None = None) -> Scope:
    """The scope computed from events read from files (no ledger): a temporary index, then the query.

    The index lives in a temporary folder under an ephemeral keyring and is deleted after
    the query; the returned scope holds its own arrays.
    """
    with tempfile.TemporaryDirectory(prefix="sentinelle-scope-") as tmp:
        idx = ScopeIndex.build(events, tmp, Keyring.generate())
        try:
            return compute_scope(idx.view(), selectors, context, source="files")
        finally:
            idx.close()


def category_text(mask: int) -> list[str]:
    """Category names of a mask (re-exported for templates)."""
    return category_names(mask)
