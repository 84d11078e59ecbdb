"""The care context: who is who, who treats whom, and whether care explains an access.

Detectors ask `explain(account, patient, time)` for every access (millions a day), so the
answer is a few dict lookups and a look at one or two care windows, all prepared by
`index.py`. The other questions (own record, coworker, relative, restricted, decoy)
are set lookups. Patients are named as each source names them; `resolve_patient` maps
every spelling to one `Patient/<id>`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.context import fhir
from sentinelle.context.index import ContextBuilder, ContextData
from sentinelle.context.load_fhir import read_fhir_paths, records_of
from sentinelle.context.model import AccountInfo, AliasRecord, Reason, Record
from sentinelle.context.normalise import reference_forms
from sentinelle.context.settings import ContextSettings
from sentinelle.errors import RecordError
from sentinelle.sources.quarantine import Quarantine

__all__ = ["CareContext"]

_TREATED_BEFORE = int(Reason.TREATED_BEFORE)
_DEPARTMENT = int(Reason.DEPARTMENT)
_MISS_CACHE = 65_536


class CareContext:
    """Answers, for one access, whether a care relationship explains it.

    Build one with `load` (FHIR files, CSV through a mapping), `from_resources` (FHIR
    resources as dicts) or `from_records` (loader records); `CareContext()` is empty and
    explains nothing.

    >>> ctx = CareContext.from_resources([
    ...     {"resourceType": "Practitioner", "id": "d1",
    ...      "identifier": [{"system": "urn:sentinelle:login", "value": "jdoe"}]},
    ...     {"resourceType": "Patient", "id": "p1"},
    ...     {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
    ...      "subject": {"reference": "Patient/p1"},
    ...      "participant": [{"individual": {"reference": "Practitioner/d1"}}],
    ...      "period": {"start": "2024-03-01T08:00:00Z"}},
    ... ])
    >>> Reason(ctx.explain("jdoe", "Patient/p1", 1709300000000)) == Reason.ENCOUNTER | Reason.TREATED_BEFORE
    True
    """

    def __init__(self, data: ContextData | None = None) -> None:
        if data is None:
            data = ContextBuilder().build()
        self._data = data
        self._hot = data.hot_accounts
        self._accounts = data.accounts
        self._alias = data.patient_alias
        self._care = data.care
        self._care_by_alias = data.care_by_alias
        self._known_systems = data.known_systems
        self._miss: dict[str, int] = {}
        self._restricted_refs: set[str] = set()
        self._decoy_refs: set[str] = set()

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_records(cls, records: Iterable[Record], settings: ContextSettings | None = None) -> CareContext:
        """A context of loader records (what every loader yields)."""
        builder = ContextBuilder(settings)
        # Loading creates hundreds of thousands of small acyclic objects: the cyclic
        # garbage collector would rescan them all again and again for nothing.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            builder.add_all(records)
            data = builder.build()
        finally:
            if was_enabled:
                gc.enable()
        return cls(data)

    @classmethod
    def load(
        cls,
        paths: Iterable[str | Path],
        quarantine: Quarantine | None = None,
        mapping: str | Path | None = None,
        settings: ContextSettings | None = None,
    ) -> CareContext:
        """A context of FHIR files and directories (NDJSON, JSON, Bundles, gzip), and of the
        CSV files a TOML `mapping` names. Bad records go to `quarantine`; the rest loads."""
        from sentinelle.context.load_csv import read_mapping

        quarantine = quarantine if quarantine is not None else Quarantine()
        rejected_before = quarantine.count
        skipped: dict[str, int] = {}

        def records() -> Iterator[Record]:
            yield from read_fhir_paths(paths, quarantine, skipped)
            if mapping is not None:
                yield from read_mapping(mapping, quarantine)

        ctx = cls.from_records(records(), settings)
        ctx._data.counts["skipped"] = sum(skipped.values())
        ctx._data.counts["rejected"] = quarantine.count - rejected_before
        return ctx

    @classmethod
    def from_resources(
        cls,
        resources: Iterable[Mapping[str, Any]],
        quarantine: Quarantine | None = None,
        settings: ContextSettings | None = None,
    ) -> CareContext:
        """A context of FHIR resources given as dicts (Bundles included)."""
        quarantine = quarantine if quarantine is not None else Quarantine()
        rejected_before = quarantine.count
        skipped: dict[str, int] = {}

        def records() -> Iterator[Record]:
            for n, resource in enumerate(resources, 1):
                yield from _records_of_dict(resource, f"entry {n}", quarantine, skipped)

        ctx = cls.from_records(records(), settings)
        ctx._data.counts["skipped"] = sum(skipped.values())
        ctx._data.counts["rejected"] = quarantine.count - rejected_before
        return ctx

    # --- patients -------------------------------------------------------------------------

    def _slot(self, ref: str) -> int:
        """The patient slot of a reference in any spelling, or -1 when unknown."""
        slot = self._alias.get(ref)
        if slot is not None:
            return slot
        slot = self._miss.get(ref)
        if slot is not None:
            return slot
        slot = -1
        for form in reference_forms(ref, self._known_systems):
            found = self._alias.get(form)
            if found is not None:
                slot = found
                break
        if len(self._miss) >= _MISS_CACHE:
            self._miss.clear()
        self._miss[ref] = slot
        return slot

    def resolve_patient(self, ref: str) -> str:
        """The canonical `Patient/<id>` of a reference in any spelling; unknown refs unchanged.

        Accepted: `Patient/<id>` (also absolute or versioned), `system|value` of any
        Patient.identifier, the bare value when only one patient has it, an HL7 v2 CX
        value (`value^^^&OID&ISO`), `Patient?identifier=system|value`.
        """
        slot = self._slot(ref)
        return self._data.patient_ids[slot] if slot >= 0 else ref

    @property
    def patients_count(self) -> int:
        """Number of patients known (loaded, or only referenced by care episodes)."""
        return len(self._data.patient_ids)

    def is_restricted(self, patient_ref: str) -> bool:
        """Whether the patient is restricted or a VIP (confidentiality R/V, or listed)."""
        slot = self._slot(patient_ref)
        if slot >= 0:
            return slot in self._data.restricted
        return patient_ref in self._restricted_refs

    def is_decoy(self, patient_ref: str) -> bool:
        """Whether the record is a decoy (tagged `decoy`, or listed): nobody has a reason to open it."""
        slot = self._slot(patient_ref)
        if slot >= 0:
            return slot in self._data.decoys
        return patient_ref in self._decoy_refs

    def add_restricted(self, refs: Iterable[str]) -> None:
        """Mark patients as restricted (a VIP list kept outside the FHIR server)."""
        for ref in refs:
            slot = self._slot(ref)
            if slot >= 0:
                self._data.restricted.add(slot)
            else:
                self._restricted_refs.add(ref)
        self._data.counts["restricted"] = len(self._data.restricted) + len(self._restricted_refs)

    def add_decoys(self, refs: Iterable[str]) -> None:
        """Mark patients as decoys (records planted to catch browsing)."""
        for ref in refs:
            slot = self._slot(ref)
            if slot >= 0:
                self._data.decoys.add(slot)
            else:
                self._decoy_refs.add(ref)
        self._data.counts["decoys"] = len(self._data.decoys) + len(self._decoy_refs)

    # --- accounts -------------------------------------------------------------------------

    def account_info(self, account: str) -> AccountInfo | None:
        """Who is behind an account (login, or any identifier of the person), or None."""
        entry = self._accounts.get(account)
        return entry.info if entry is not None else None

    def accounts(self) -> Iterator[AccountInfo]:
        """Every account, once each."""
        for entry in self._data.account_entries:
            yield entry.info

    # --- explanations ---------------------------------------------------------------------

    def explain(self, account: str, patient_ref: str, time_ms: int) -> int:
        """`Reason` bit mask of the care relationships that explain an access; 0 when none.

        Nothing explains an access by an unknown account, to an unknown patient, or after
        the account holder's employment ended. DEPARTMENT needs the role in that
        department to cover the access time.
        """
        hot = self._hot.get(account)
        if hot is None:
            return 0
        care = self._care_by_alias.get(patient_ref)
        if care is None:
            slot = self._slot(patient_ref)
            if slot < 0:
                return 0
            care = self._care[slot]
        person, departments, until, periods = hot
        if time_ms > until:
            return 0
        mask = 0
        windows = care.get(person)
        if windows is not None:
            for lo, hi, start, treated_until, bit in windows:
                if lo <= time_ms <= hi:
                    mask |= bit
                if start < time_ms <= treated_until:
                    mask |= _TREATED_BEFORE
        for dept in departments:
            windows = care.get(dept)
            if windows is None:
                continue
            for lo, hi, bit in windows:
                if lo <= time_ms <= hi:
                    if periods is None:
                        mask |= bit
                        continue
                    for role_start, role_end in periods[dept]:
                        if role_start <= time_ms <= role_end:
                            mask |= bit
                            break
        return mask

    def departments_of(self, patient_ref: str, time_ms: int) -> frozenset[str]:
        """Departments treating the patient at that time (encounters, appointments, with margins)."""
        slot = self._slot(patient_ref)
        if slot < 0:
            return frozenset()
        found = {
            key
            for key, windows in self._care[slot].items()
            if "/" not in key and any(w[0] <= time_ms <= w[1] and w[2] == _DEPARTMENT for w in windows)
        }
        return frozenset(found)

    def is_own_record(self, account: str, patient_ref: str) -> bool:
        """Whether the account holder is this patient (national id, else name and birth date)."""
        entry = self._accounts.get(account)
        if entry is None or not entry.own:
            return False
        return self._slot(patient_ref) in entry.own

    def is_coworker(self, account: str, patient_ref: str) -> bool:
        """Whether the patient is a staff member working in one of the account's departments."""
        entry = self._accounts.get(account)
        if entry is None or not entry.departments:
            return False
        slot = self._slot(patient_ref)
        staff = self._data.staff_departments.get(slot)
        if staff is None or slot in entry.own:
            return False
        return not staff.isdisjoint(entry.departments)

    def is_relative(self, account: str, patient_ref: str) -> bool:
        """Whether the patient shares a family name and an address with the account holder."""
        entry = self._accounts.get(account)
        if entry is None or not entry.households:
            return False
        slot = self._slot(patient_ref)
        if slot < 0 or slot in entry.own:
            return False
        return not self._data.households[slot].isdisjoint(entry.households)

    # --- summary --------------------------------------------------------------------------

    @property
    def settings(self) -> ContextSettings:
        """The margins this context was built with."""
        return self._data.settings

    def stats(self) -> dict[str, int]:
        """Counts: resources of each kind, accounts, staff who are patients, restricted,
        decoys, households of two or more patients, skipped and rejected resources."""
        counts = dict(self._data.counts)
        counts.setdefault("skipped", 0)
        counts.setdefault("rejected", 0)
        counts["patients_known"] = len(self._data.patient_ids)
        return counts

    def __repr__(self) -> str:
        c = self._data.counts
        return (
            f"CareContext(patients={len(self._data.patient_ids)}, accounts={c.get('accounts', 0)}, "
            f"encounters={c.get('encounters', 0)}, appointments={c.get('appointments', 0)})"
        )


def _records_of_dict(
    resource: Mapping[str, Any],
    location: str,
    quarantine: Quarantine,
    skipped: dict[str, int],
    full_url: str = "",
) -> Iterator[Record]:
    """Loader records of one FHIR resource given as a dict (a Bundle's entries included)."""
    origin = "<resources>"
    kind = resource.get("resourceType") if isinstance(resource, Mapping) else None
    if not isinstance(kind, str) or not kind:
        quarantine.reject(origin, location, "no resourceType", repr(resource)[:200])
        return
    if kind not in fhir.RESOURCE_TYPES:
        skipped[kind] = skipped.get(kind, 0) + 1
        return
    if kind == "Bundle":
        for n, entry in enumerate(resource.get("entry") or (), 1):
            inner = entry.get("resource") if isinstance(entry, Mapping) else None
            if isinstance(inner, Mapping):
                url = str(entry.get("fullUrl") or "")
                yield from _records_of_dict(inner, f"{location} entry {n}", quarantine, skipped, url)
        return
    if not resource.get("id") and full_url.startswith("urn:uuid:"):
        resource = {**resource, "id": full_url[9:]}
    try:
        typed = msgspec.convert(resource, type=fhir.Resource, strict=False)
        records = records_of(typed)
    except (msgspec.ValidationError, RecordError) as exc:
        reason = exc.reason if isinstance(exc, RecordError) else f"{kind}: {exc}"
        quarantine.reject(origin, location, reason, repr(resource)[:200])
        return
    yield from records
    if full_url and records:
        yield AliasRecord(alias=full_url, ref=f"{kind}/{typed.id}")
