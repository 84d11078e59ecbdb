"""Builds the care context's lookup tables from loader records, once, after loading.

`explain` is asked millions of times, so everything it needs is decided here: references
are resolved (Bundle aliases, PractitionerRole to Practitioner, logins to persons), each
patient gets one tuple of care windows sorted by their start with the margins already
applied, each account one tuple of (person, departments, end of employment, role periods),
and every spelling of a patient (`Patient/<id>`, `system|value`, a bare value when it is
unambiguous) points to one integer slot.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from sentinelle.context.model import (
    LOGIN_SYSTEM,
    AccountInfo,
    AliasRecord,
    DepartmentRecord,
    EpisodeRecord,
    PatientRecord,
    PersonRecord,
    Reason,
    Record,
    RoleRecord,
)
from sentinelle.context.normalise import NATIONAL_ID_SYSTEMS, key_text
from sentinelle.context.settings import ContextSettings
from sentinelle.events import ActorKind

__all__ = ["FAR_FUTURE", "FAR_PAST", "AccountEntry", "Care", "ContextBuilder", "ContextData"]

#: Stand-ins for "no bound": plain ints keep every comparison in the hot path int-to-int.
FAR_PAST = -(2**62)
FAR_FUTURE = 2**62

_ENCOUNTER = int(Reason.ENCOUNTER)
_APPOINTMENT = int(Reason.APPOINTMENT)
_CARE_TEAM = int(Reason.CARE_TEAM)
_DEPARTMENT = int(Reason.DEPARTMENT)
_PRIVILEGED_ROLES = frozenset({"it", "admin", "service"})
_EMPTY: frozenset[str] = frozenset()
_EMPTY_INT: frozenset[int] = frozenset()

#: The care of one patient: person ref (`Practitioner/…`, `Device/…`) or department id ->
#: windows. A person's window is (lo, hi, start, treated_until, reason bit): inside
#: [lo, hi] the person gets the bit (ENCOUNTER, APPOINTMENT, CARE_TEAM) and when
#: start < t <= treated_until, TREATED_BEFORE. A department's window is (lo, hi, reason
#: bit): DEPARTMENT, or CARE_TEAM for an Organization member of a care team. Keying by
#: person makes an access by someone unrelated cost one failed dict lookup, whatever the
#: number of episodes, and touches little memory (the lookup is memory-bound).
Care = dict[str, tuple[tuple[int, ...], ...]]
#: Per account, what `explain` reads: (person ref, departments, end of employment,
#: department -> role periods, or None when no role has a bound).
HotAccount = tuple[str, tuple[str, ...], int, dict[str, tuple[tuple[int, int], ...]] | None]


class AccountEntry:
    """An account with what the relation queries need (own records, households)."""

    __slots__ = ("departments", "households", "info", "own", "person")

    def __init__(
        self,
        info: AccountInfo,
        person: str,
        departments: frozenset[str],
        own: frozenset[int],
        households: frozenset[int],
    ) -> None:
        self.info = info
        self.person = person
        self.departments = departments
        self.own = own
        self.households = households


class ContextData:
    """The built tables a `CareContext` answers from."""

    __slots__ = (
        "account_entries",
        "accounts",
        "care",
        "care_by_alias",
        "counts",
        "decoys",
        "hot_accounts",
        "households",
        "known_systems",
        "patient_alias",
        "patient_ids",
        "restricted",
        "settings",
        "staff_departments",
    )

    def __init__(self, settings: ContextSettings) -> None:
        self.settings = settings
        self.hot_accounts: dict[str, HotAccount] = {}
        self.accounts: dict[str, AccountEntry] = {}
        self.account_entries: list[AccountEntry] = []
        self.patient_alias: dict[str, int] = {}
        self.patient_ids: list[str] = []
        self.care: list[Care] = []
        self.care_by_alias: dict[str, Care] = {}
        self.households: list[frozenset[int]] = []
        self.staff_departments: dict[int, frozenset[str]] = {}
        self.restricted: set[int] = set()
        self.decoys: set[int] = set()
        self.known_systems: frozenset[str] = frozenset()
        self.counts: dict[str, int] = {}


class _Unique:
    """A name -> value index that forgets names given to two different values."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}
        self.ambiguous: set[str] = set()

    def add(self, name: str, value: str) -> None:
        if name in self.ambiguous:
            return
        old = self.found.setdefault(name, value)
        if old != value:
            del self.found[name]
            self.ambiguous.add(name)


_COUNT_KEYS = (
    "patients",
    "practitioners",
    "practitioner_roles",
    "organizations",
    "devices",
    "encounters",
    "appointments",
    "care_teams",
)


class ContextBuilder:
    """Collects loader records, then `build()` makes the lookup tables.

    Records may come in any order (a role before its practitioner, an encounter before
    its patient): everything is resolved in `build()`.
    """

    def __init__(self, settings: ContextSettings | None = None) -> None:
        self.settings = settings or ContextSettings()
        self.patients: dict[str, PatientRecord] = {}
        self.persons: dict[str, PersonRecord] = {}
        self.roles: list[RoleRecord] = []
        self.episodes: list[EpisodeRecord] = []
        self.departments: dict[str, DepartmentRecord] = {}
        self.aliases: dict[str, str] = {}
        self.counts: dict[str, int] = dict.fromkeys(_COUNT_KEYS, 0)

    def add(self, record: Record) -> None:
        """Keep one loader record."""
        counts = self.counts
        if isinstance(record, EpisodeRecord):
            self.episodes.append(record)
            key = (
                "encounters"
                if record.kind == _ENCOUNTER
                else ("appointments" if record.kind == _APPOINTMENT else "care_teams")
            )
            counts[key] += 1
        elif isinstance(record, PatientRecord):
            if record.id not in self.patients:
                counts["patients"] += 1
            self.patients[record.id] = record
        elif isinstance(record, RoleRecord):
            self.roles.append(record)
            if not record.person.startswith("Device/"):
                counts["practitioner_roles"] += 1
        elif isinstance(record, PersonRecord):
            if record.ref not in self.persons:
                counts["devices" if record.ref.startswith("Device/") else "practitioners"] += 1
            self.persons[record.ref] = record
        elif isinstance(record, DepartmentRecord):
            if record.id not in self.departments:
                counts["organizations"] += 1
            self.departments[record.id] = record
        elif isinstance(record, AliasRecord):
            self.aliases[record.alias] = record.ref

    def add_all(self, records: Iterable[Record]) -> None:
        """Keep every record of an iterable."""
        add = self.add
        for record in records:
            add(record)

    # --- build ---------------------------------------------------------------------------

    def _department(self, dept: str) -> str:
        target = self.aliases.get(dept)
        if target is not None and target.startswith("Organization/"):
            return target[13:]
        return dept

    def build(self) -> ContextData:
        """The lookup tables of everything added so far."""
        data = ContextData(self.settings)
        person_by = self._person_index()
        roles_of, role_person = self._roles(person_by)
        self._patients(data)
        self._episodes(data, person_by, roles_of, role_person)
        own_of = self._staff_patients(data, roles_of)
        person_households = self._households(data, own_of)
        self._accounts(data, roles_of, own_of, person_households)
        data.counts = {
            **self.counts,
            "accounts": len(data.account_entries),
            "staff_patients": len(data.staff_departments),
            "restricted": len(data.restricted),
            "decoys": len(data.decoys),
        }
        return data

    def _person_index(self) -> dict[str, str]:
        """Every name of a person (ref, identifier token, unambiguous bare value) -> its ref."""
        tokens = _Unique()
        bare = _Unique()
        for ref, person in self.persons.items():
            for token in person.identifiers:
                tokens.add(token, ref)
                bare.add(token.rpartition("|")[2], ref)
        index = {**bare.found, **tokens.found}
        for alias, target in self.aliases.items():
            if target in self.persons:
                index[alias] = target
        for ref in self.persons:
            index[ref] = ref
        return index

    def _roles(self, person_by: dict[str, str]) -> tuple[dict[str, list[RoleRecord]], dict[str, RoleRecord]]:
        """Roles grouped by person ref, and PractitionerRole ref -> role (person resolved)."""
        roles_of: dict[str, list[RoleRecord]] = {}
        by_ref: dict[str, RoleRecord] = {}
        dangling = 0
        for role in self.roles:
            person = self.aliases.get(role.person, role.person)
            person = person_by.get(person, person)
            if person not in self.persons:
                dangling += 1
                continue
            resolved = RoleRecord(
                person=person,
                department=self._department(role.department),
                role=role.role,
                start=role.start,
                end=role.end,
                privileged=role.privileged,
                ref=role.ref,
            )
            roles_of.setdefault(person, []).append(resolved)
            if role.ref:
                by_ref[role.ref] = resolved
        for alias, target in self.aliases.items():
            if target in by_ref:
                by_ref[alias] = by_ref[target]
        self.counts["roles_without_person"] = dangling
        return roles_of, by_ref

    def _patients(self, data: ContextData) -> None:
        alias = data.patient_alias
        ids = data.patient_ids
        tokens: dict[str, int] = {}
        bare_count: dict[str, int] = {}  # only ambiguous values are counted
        bare_slot: dict[str, int] = {}
        systems: set[str] = set()
        duplicates = 0

        def bare(name: str, slot: int) -> None:
            if bare_slot.setdefault(name, slot) != slot:
                bare_count[name] = 2  # two patients share this value: never resolve it bare

        for slot, (pid, p) in enumerate(self.patients.items()):
            ref = f"Patient/{pid}"
            ids.append(ref)
            alias[ref] = slot
            bare(pid, slot)
            for token in p.identifiers:
                system, sep, value = token.rpartition("|")
                if sep:
                    systems.add(system)
                    if tokens.setdefault(token, slot) != slot:
                        duplicates += 1  # two records of one person: the first one wins
                bare(value, slot)
            if p.restricted:
                data.restricted.add(slot)
            if p.decoy:
                data.decoys.add(slot)
        for token, slot in tokens.items():
            alias.setdefault(token, slot)
        for name, slot in bare_slot.items():
            if name not in bare_count:
                alias.setdefault(name, slot)
        for name, target in self.aliases.items():
            if target in alias:
                alias[name] = alias[target]
        data.known_systems = frozenset(systems)
        self.counts["shared_identifiers"] = duplicates

    def _slot(self, data: ContextData, ref: str) -> int:
        """The patient slot of a reference, adding a patient known only by references."""
        ref = self.aliases.get(ref, ref)
        slot = data.patient_alias.get(ref)
        if slot is None:
            slot = len(data.patient_ids)
            data.patient_ids.append(ref)
            data.patient_alias[ref] = slot
            self.counts["referenced_patients"] = self.counts.get("referenced_patients", 0) + 1
        return slot

    def _episodes(
        self,
        data: ContextData,
        person_by: dict[str, str],
        roles_of: dict[str, list[RoleRecord]],
        role_by_ref: dict[str, RoleRecord],
    ) -> None:
        s = self.settings
        before = {_ENCOUNTER: s.ms("encounter_before_days"), _APPOINTMENT: s.ms("appointment_before_days")}
        after = {
            _ENCOUNTER: s.ms("encounter_after_days"),
            _APPOINTMENT: s.ms("appointment_after_days"),
            _CARE_TEAM: s.ms("care_team_after_days"),
        }
        treated = s.ms("treated_before_days")
        grace = s.ms("appointment_booking_grace_days")
        self.counts.setdefault("referenced_patients", 0)
        per_patient: dict[int, Care] = {}
        aliases = self.aliases
        patient_alias = data.patient_alias
        resolved: dict[str, tuple[str, str]] = {}
        departments_seen: dict[str, str] = {}

        def resolve(m: str) -> tuple[str, str]:
            """(person ref or the member as given, department of the PractitionerRole named)."""
            m = aliases.get(m, m)
            role = role_by_ref.get(m)
            if role is not None:
                return role.person, role.department
            person = person_by.get(m) or person_by.get(f"{LOGIN_SYSTEM}|{m}")
            return sys.intern(person or m), ""

        for ep in self.episodes:
            slot = patient_alias.get(ep.patient)
            if slot is None:
                slot = self._slot(data, ep.patient)
            members: list[str] = []
            inferred: list[str] = []
            for m in ep.members:
                found = resolved.get(m)
                if found is None:
                    found = resolved[m] = resolve(m)
                # Account persons are always `Type/id`: a member that is not one names nobody.
                if "/" in found[0] and found[0] not in members:
                    members.append(found[0])
                if found[1]:
                    inferred.append(found[1])
            departments: list[str] = []
            for d in ep.departments:
                dept = departments_seen.get(d)
                if dept is None:
                    dept = departments_seen[d] = sys.intern(self._department(d))
                departments.append(dept)
            if not departments and ep.infer_departments:
                departments = inferred or self._member_departments(members, roles_of, ep.start)
            kind = ep.kind
            end = ep.end
            start = ep.start if ep.start is not None else FAR_PAST
            hi = end + after[kind] if end is not None else FAR_FUTURE
            if kind == _CARE_TEAM:
                lo = start
                treated_until = FAR_PAST
                dept_bit = _CARE_TEAM
            else:
                lo = start - before[kind]
                if ep.booked is not None:
                    # Not before the booking (less the few minutes of looking the patient up
                    # to book), yet from the start at the latest for one recorded afterwards.
                    lo = min(start, max(lo, ep.booked - grace))
                treated_until = end + treated if end is not None else FAR_FUTURE
                dept_bit = _DEPARTMENT
            care = per_patient.get(slot)
            if care is None:
                care = per_patient[slot] = {}
            # Windows are tuples of tuples: a key has one or two windows as a rule, so growing
            # the tuple costs less than converting lists afterwards, and reads are one hop.
            window: tuple[int, ...] = (lo, hi, start, treated_until, kind)
            for member in members:
                care[member] = (*care.get(member, ()), window)
            window = (lo, hi, dept_bit)
            for dept in departments:
                if dept:
                    old = care.get(dept, ())
                    if window not in old:
                        care[dept] = (*old, window)
        empty: Care = {}  # shared by every patient without care episodes; never mutated
        data.care = [per_patient.get(slot, empty) for slot in range(len(data.patient_ids))]
        all_care = data.care
        data.care_by_alias = {name: all_care[slot] for name, slot in patient_alias.items()}

    @staticmethod
    def _member_departments(members: list[str], roles_of: dict[str, list[RoleRecord]], at: int | None) -> list[str]:
        """Departments where the human members worked at `at` (an appointment names no ward)."""
        found: list[str] = []
        for m in members:
            if not m.startswith("Practitioner/"):
                continue
            for role in roles_of.get(m, ()):
                if not role.department:
                    continue
                if at is None or ((role.start is None or role.start <= at) and (role.end is None or at <= role.end)):
                    found.append(role.department)
        return found

    def _staff_patients(self, data: ContextData, roles_of: dict[str, list[RoleRecord]]) -> dict[str, frozenset[int]]:
        """Person ref -> patient slots of their own records (national id, else name + birth date)."""
        by_name: dict[str, list[int]] = {}
        for slot, p in enumerate(self.patients.values()):
            if p.birth_date:
                for family, given in p.names:
                    key = f"{key_text(family)}|{key_text(given)}|{p.birth_date[:10]}"
                    by_name.setdefault(key, []).append(slot)
        own_of: dict[str, frozenset[int]] = {}
        staff_departments: dict[int, set[str]] = {}
        alias = data.patient_alias
        for ref, person in self.persons.items():
            if person.kind != ActorKind.HUMAN:
                continue
            slots: set[int] = set()
            for token in person.identifiers:
                if token.rpartition("|")[0] in NATIONAL_ID_SYSTEMS and token in alias:
                    slots.add(alias[token])
            if not slots and person.birth_date:
                for family, given in person.names:
                    key = f"{key_text(family)}|{key_text(given)}|{person.birth_date[:10]}"
                    slots.update(by_name.get(key, ()))
            if not slots:
                continue
            own_of[ref] = frozenset(slots)
            departments = {r.department for r in roles_of.get(ref, ()) if r.department}
            for slot in slots:
                staff_departments.setdefault(slot, set()).update(departments)
        data.staff_departments = {slot: frozenset(d) for slot, d in staff_departments.items()}
        return own_of

    def _households(self, data: ContextData, own_of: dict[str, frozenset[int]]) -> dict[str, frozenset[int]]:
        """Household ids per patient slot; per person ref, the households they belong to."""

        def keys(names: Iterable[tuple[str, str]], addresses: Iterable[tuple[str, str]]) -> set[str]:
            families = {key_text(f) for f, _ in names} - {""}
            places = {(key_text(line), postal.replace(" ", "")) for line, postal in addresses}
            return {f"{f}|{line}|{postal}" for f in families for line, postal in places if line}

        ids: dict[str, int] = {}
        sizes: dict[int, int] = {}
        households = [_EMPTY_INT] * len(data.patient_ids)
        for slot, p in enumerate(self.patients.values()):
            found = keys(p.names, p.addresses)
            if not found:
                continue
            hh = frozenset(ids.setdefault(k, len(ids)) for k in found)
            households[slot] = hh
            for h in hh:
                sizes[h] = sizes.get(h, 0) + 1
        data.households = households
        self.counts["households"] = sum(1 for n in sizes.values() if n >= 2)
        person_households: dict[str, frozenset[int]] = {}
        for ref, person in self.persons.items():
            mine = {ids[k] for k in keys(person.names, person.addresses) if k in ids}
            for slot in own_of.get(ref, ()):
                mine.update(households[slot])
            if mine:
                person_households[ref] = frozenset(mine)
        return person_households

    def _accounts(
        self,
        data: ContextData,
        roles_of: dict[str, list[RoleRecord]],
        own_of: dict[str, frozenset[int]],
        households: dict[str, frozenset[int]],
    ) -> None:
        strong: dict[str, AccountEntry] = {}
        weak = _Unique()
        entries_by_name: dict[str, AccountEntry] = {}
        for ref, person in self.persons.items():
            roles = sorted(roles_of.get(ref, ()), key=lambda r: FAR_PAST if r.start is None else r.start)
            departments = frozenset(r.department for r in roles if r.department)
            main = roles[-1] if roles else None
            start = None if not roles or any(r.start is None for r in roles) else roles[0].start
            end = (
                None
                if not roles or any(r.end is None for r in roles)
                else max(r.end for r in roles if r.end is not None)
            )
            codes = tuple(dict.fromkeys(r.role for r in roles if r.role))
            privileged = any(r.privileged or r.role in _PRIVILEGED_ROLES for r in roles)
            periods: dict[str, list[tuple[int, int]]] = {}
            bounded = False
            for r in roles:
                if not r.department:
                    continue
                lo = FAR_PAST if r.start is None else r.start
                hi = FAR_FUTURE if r.end is None else r.end
                bounded = bounded or r.start is not None or r.end is not None
                periods.setdefault(r.department, []).append((lo, hi))
            hot: HotAccount = (
                sys.intern(ref),
                tuple(sorted(sys.intern(d) for d in departments)),
                FAR_FUTURE if end is None else end,
                {d: tuple(p) for d, p in periods.items()} if bounded else None,
            )
            logins = [t.partition("|")[2] for t in person.identifiers if t.startswith(LOGIN_SYSTEM + "|")]
            person_id = ref.partition("/")[2]
            for login in logins or [person_id]:
                info = AccountInfo(
                    account=login,
                    person=person_id,
                    kind=person.kind,
                    role=main.role if main else "",
                    department=main.department if main else "",
                    start=start,
                    end=end,
                    privileged=privileged,
                    departments=departments,
                    roles=codes,
                    addresses=person.network_addresses,
                )
                entry = AccountEntry(
                    info, ref, departments, own_of.get(ref, _EMPTY_INT), households.get(ref, _EMPTY_INT)
                )
                data.account_entries.append(entry)
                strong[login] = entry
                entries_by_name[login] = entry
                data.hot_accounts[login] = hot
            # Other names of the person (RPPS, system|value, the FHIR reference) reach the
            # account too, unless they belong to someone else.
            first = logins[0] if logins else person_id
            for token in person.identifiers:
                weak.add(token, first)
                weak.add(token.rpartition("|")[2], first)
            weak.add(ref, first)
            weak.add(person_id, first)
        for name, login in weak.found.items():
            if name not in strong:
                data.hot_accounts[name] = data.hot_accounts[login]
                strong[name] = entries_by_name[login]
        data.accounts = strong
