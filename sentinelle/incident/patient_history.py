"""One patient's access history: who opened the record, when, what they saw, and why.

Why: patients may ask who read their record (CSP L1111-19 for the DMP; EU Court C-579/21:
dates and purposes of consultations; EHDS Art. 9), and after a breach they ask whether
*they* were read. The report lists every access from the audit trail with the reader's
role and department (names only when the establishment's policy says so: the Court held
that employees' names are not owed in principle), what the access returned, and whether
the care context explains it, in plain French or English. With the ledger, each access
carries its RFC 9162 inclusion proof against a signed checkpoint, so the patient, their
lawyer or a court can check that the list was not edited. Every report is itself audited:
the look-up is logged in the incident store (and appended to the ledger when a writer is
given), so the next report shows who looked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import msgspec
import numpy as np

from sentinelle.context import CareContext, Reason
from sentinelle.errors import ConfigError
from sentinelle.events import AccessEvent, category_names
from sentinelle.incident.directory import Directory
from sentinelle.incident.index import IndexView
from sentinelle.incident.model import Establishment, Selector
from sentinelle.incident.pdf import render_html
from sentinelle.incident.scope import compute_scope, scope_from_events
from sentinelle.incident.store import IncidentStore
from sentinelle.incident.texts import REASON_LABELS, check_lang
from sentinelle.ledger import Ledger, LedgerReader, merkle

__all__ = ["NAMES_POLICIES", "AccessLine", "HistoryReport", "Proof", "history_html", "patient_history",
           "verify_report"]

#: "hidden": role and department only (default); "shown": also the reader's name.
NAMES_POLICIES = ("hidden", "shown")
LOOKUP_SOURCE = "sentinelle-incident"


class Proof(msgspec.Struct, frozen=True):
    """An RFC 9162 inclusion proof of one access's ledger record."""

    seq: int
    size: int
    leaf: str
    path: list[str]
    root: str
    signed: bool  # the root is the one of a signed checkpoint


class AccessLine(msgspec.Struct, frozen=True):
    """One access to the patient's record, as the report shows it."""

    time: int
    account: str
    who: str  # the reader's name when the policy shows names, else ""
    role: str
    department: str
    kind: str
    action: str
    outcome: str
    categories: list[str]
    reasons: list[str]  # Reason names; empty = no care relationship explains the access
    event_id: str
    source: str
    proof: Proof | None = None


class HistoryReport(msgspec.Struct, kw_only=True):
    """The whole report, also written as JSON for machine verification."""

    patient: str
    requester: str
    purpose: str
    generated: int
    names: str
    accesses: list[AccessLine]
    checkpoints: list[dict[str, object]]
    lookup: int = 0
    ledger: bool = False


def _spellings(ref: str, directory: Directory | None) -> set[str]:
    out = {ref}
    entry = directory.patient(ref) if directory is not None else None
    if entry is not None:
        out.add(entry.ref)
        out.update(entry.identifiers)
        for ident in entry.identifiers:
            system, _, value = ident.rpartition("|")
            if system.startswith("urn:oid:"):
                out.add(f"{value}^^^&{system[8:]}&ISO")
    return out


#: The reason given to a namesake on a search page that found a patient the account treats
#: (the scope's rule, `scope._search_collateral`).
SEARCH_PAGE = "SEARCH_PAGE"


def _page_found_a_treated_patient(e: AccessEvent, canon: str, context: CareContext, view: IndexView | None) -> bool:
    """Whether the scope's search-page rule explains this patient's access (`scope._search_collateral`).

    The page is the account's accesses at that instant: in the ledger, every event of it
    (systems that log one event per result); without one, this event's patients.
    """
    page = [Selector(accounts=(e.account,), start=e.time, end=e.time + 1, unexplained_only=True)]
    unexplained = compute_scope(view, page, context) if view is not None else scope_from_events([e], page, context)
    return canon not in unexplained.refs


def patient_history(patient: str, *, requester: str, purpose: str, context: CareContext,
                    directory: Directory | None = None, view: IndexView | None = None,
                    reader: LedgerReader | None = None, events: Iterable[AccessEvent] | None = None,
                    store: IncidentStore | None = None, incident: str = "", names: str = "hidden",
                    writer: Ledger | None = None, now: int | None = None, proofs: bool = True) -> HistoryReport:
    """The access history of one patient (any spelling of the reference).

    Sources: the ledger (`view` of the scope index to find the accesses, `reader` for the
    records and proofs) or, without a ledger, `events` read from files. The look-up is
    recorded in `store` (who, which patient by pseudonym when possible, when, why) and,
    with a ledger `writer`, appended to the ledger as a read by `requester`.
    """
    if names not in NAMES_POLICIES:
        raise ConfigError(f"names policy {names!r}: choose one of {', '.join(NAMES_POLICIES)}")
    if not requester:
        raise ConfigError("a patient's access history is given only to a named requester (it is audited)")
    t_now = int(time.time() * 1000) if now is None else now
    canon = context.resolve_patient(patient)
    spellings = _spellings(canon, directory) | {patient}
    found: list[tuple[int | None, AccessEvent]] = []
    if reader is not None and view is not None:
        keys = np.array(sorted({view.pk(s) for s in spellings}), dtype=np.int64)
        seqs: set[int] = set()
        for part in view.parts:
            m = np.isin(part.cols["pk"], keys)
            seqs.update(np.asarray(part.cols["seq"][m]).tolist())
        protector = reader.protector
        if protector is None:
            raise ConfigError("the patient's history from the ledger needs its keyring")
        from sentinelle.ledger.records import to_event

        for wanted in sorted(seqs):
            for s, rec in reader.records(wanted, wanted + 1):
                if rec is None:
                    continue
                pats, query = protector.open(rec)
                found.append((s, to_event(rec, pats, query)))
    elif events is not None:
        for e in events:
            if any(p in spellings or context.resolve_patient(p) == canon for p in e.patients):
                found.append((None, e))
    else:
        raise ConfigError("give the ledger (index view and reader) or the events")
    found.sort(key=lambda x: (x[1].time, x[1].id))

    cps: dict[int, dict[str, object]] = {}
    signed_sizes: dict[int, int] = {}
    public_keys: dict[str, str] = {}
    if reader is not None and proofs:
        for cp in reader.checkpoints():
            signed_sizes[cp.size] = cp.n
        # The public keys the ledger signed with, so the report carries what checks the signatures.
        import json

        public_keys = json.loads(reader.store.read_meta().get("signing_keys", "{}"))
    lines = []
    for seq, e in found:
        info = context.account_info(e.account)
        role = info.role if info else ""
        dept_id = info.department if info else ""
        dept = directory.organization_name(dept_id) if directory is not None and dept_id else dept_id
        who = ""
        if names == "shown" and info is not None and directory is not None:
            who = directory.person_name(info.person)
        mask = context.explain(e.account, canon, e.time)
        reasons = [r.name for r in Reason if r.name and mask & r.value]
        if not reasons and e.action == "search" and _page_found_a_treated_patient(e, canon, context, view):
            reasons = [SEARCH_PAGE]
        proof = None
        if seq is not None and reader is not None and proofs:
            p = reader.inclusion_proof(seq)
            signed = p.size in signed_sizes
            proof = Proof(p.seq, p.size, p.leaf, list(p.path), p.root, signed)
            if signed and p.size not in cps:
                cp = next(c for c in reader.checkpoints() if c.size == p.size)
                item = msgspec.to_builtins(cp)
                if not item.get("public_key"):
                    item["public_key"] = public_keys.get(cp.key, "")
                cps[p.size] = item
        lines.append(AccessLine(e.time, e.account, who, role, dept, info.kind if info else "", e.action, e.outcome,
                                category_names(e.categories), reasons, e.id, e.source, proof))

    # The look-up is audited: by pseudonym when the keyring is at hand, never by name.
    key = canon
    if view is not None:
        try:
            key = view.pseudonym(canon)
        except Exception:
            key = canon
    lookup = 0
    if store is not None:
        lookup = store.record_lookup(requester, key, purpose, incident, t_now)
    if writer is not None:
        writer.append_batch([AccessEvent(id=f"lookup-{uuid.uuid4()}", time=t_now, account=requester, action="read",
                                         patients=(canon,), source=LOOKUP_SOURCE, purpose="access-history")])
    return HistoryReport(patient=canon, requester=requester, purpose=purpose, generated=t_now, names=names,
                         accesses=lines, checkpoints=list(cps.values()), lookup=lookup, ledger=reader is not None)


def verify_report(report: HistoryReport) -> list[str]:
    """Recheck every inclusion proof of a report (RFC 9162); returns the problems (empty = all good).

    Anyone can run this on the JSON file; checking the checkpoint signatures against the
    establishment's published public key is `sentinelle verify`'s job.
    """
    problems = []
    roots = {int(str(c.get("size"))): str(c.get("root")) for c in report.checkpoints}
    for a in report.accesses:
        p = a.proof
        if p is None:
            continue
        ok = merkle.verify_inclusion(bytes.fromhex(p.leaf), p.seq, p.size, [bytes.fromhex(h) for h in p.path],
                                     bytes.fromhex(p.root))
        if not ok:
            problems.append(f"event {a.event_id} (seq {p.seq}): the inclusion proof does not verify")
        if p.signed and roots.get(p.size) not in (None, p.root):
            problems.append(f"event {a.event_id} (seq {p.seq}): the root differs from the signed checkpoint's")
    return problems


def history_html(report: HistoryReport, establishment: Establishment, *, lang: str = "fr",
                 directory: Directory | None = None, templates: str | Path | None = None) -> str:
    """The report as plain-language HTML (French by default)."""
    check_lang(lang)
    entry = directory.patient(report.patient) if directory is not None else None
    explained = sum(1 for a in report.accesses if a.reasons)
    ctx = {
        "r": report, "est": establishment, "person": entry, "reason_labels": REASON_LABELS,
        "explained": explained, "unexplained": len(report.accesses) - explained,
        "readers": len({a.account for a in report.accesses}),
    }
    return render_html("patient_history", lang, ctx, templates, establishment.timezone)
