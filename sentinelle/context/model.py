"""The care context's records: the public `Reason` and `AccountInfo`, and loader records.

Every loader (FHIR, CSV) turns its input into the same few loader records (a patient, a
person behind accounts, a role, a care episode, a department); the index is built from
these only, so a new input format is one new loader and nothing else changes.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "LOGIN_SYSTEM",
    "AccountInfo",
    "AliasRecord",
    "DepartmentRecord",
    "EpisodeRecord",
    "PatientRecord",
    "PersonRecord",
    "Reason",
    "Record",
    "RoleRecord",
]

#: System of the identifier that holds an account's login.
LOGIN_SYSTEM = "urn:sentinelle:login"


class Reason(enum.IntFlag):
    """Why the care context explains an access; several at once form a bit mask (0 = none)."""

    ENCOUNTER = 1  #: the account's person takes part in an encounter of the patient (with margins)
    APPOINTMENT = 2  #: ... in an appointment of the patient (prepared before, followed up after)
    CARE_TEAM = 4  #: ... is a member of an active care team of the patient
    DEPARTMENT = 8  #: the account works in a department treating the patient at that time
    TREATED_BEFORE = 16  #: the account's person took part in earlier care of the patient


class AccountInfo(msgspec.Struct, frozen=True):
    """Who is behind an account: the person, what they do and where.

    `person` is the Practitioner id (humans) or Device id (applications, API clients).
    `role`, `department`, `start`, `end` come from the person's main role (the one that
    started last); `departments` and `roles` hold every role's, `start` is the earliest
    role start and `end` the latest role end (None when a role has none). `addresses`
    are the network addresses declared for a service account or API client.
    """

    account: str
    person: str
    kind: str
    role: str = ""
    department: str = ""
    start: int | None = None
    end: int | None = None
    privileged: bool = False
    departments: frozenset[str] = frozenset()
    roles: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()


class PatientRecord(msgspec.Struct, frozen=True, gc=False):
    """A patient as a loader read it.

    `identifiers` are `system|value` tokens (a bare value when the system is unknown);
    `names` are (family, given) pairs; `addresses` are (line, postal code) pairs.
    """

    id: str
    identifiers: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()
    birth_date: str = ""
    addresses: tuple[tuple[str, str], ...] = ()
    restricted: bool = False
    decoy: bool = False


class PersonRecord(msgspec.Struct, frozen=True, gc=False):
    """A person or application behind accounts: a Practitioner or a Device.

    `ref` is `Practitioner/<id>` or `Device/<id>`. `identifiers` are `system|value`
    tokens; those of system `urn:sentinelle:login` are the accounts.
    """

    ref: str
    kind: str
    identifiers: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()
    birth_date: str = ""
    addresses: tuple[tuple[str, str], ...] = ()
    network_addresses: tuple[str, ...] = ()


class RoleRecord(msgspec.Struct, frozen=True, gc=False):
    """One role of a person in a department over a period (a PractitionerRole, a Device owner)."""

    person: str
    department: str = ""
    role: str = ""
    start: int | None = None
    end: int | None = None
    privileged: bool = False
    ref: str = ""  # `PractitionerRole/<id>` when there is one, so participants may name it


class EpisodeRecord(msgspec.Struct, frozen=True, gc=False):
    """A care episode: an encounter, an appointment or a care team, as a time span.

    `kind` is `Reason.ENCOUNTER`, `Reason.APPOINTMENT` or `Reason.CARE_TEAM` (as an int).
    `end` None means ongoing. `members` are references (`Practitioner/…`,
    `PractitionerRole/…`, `Device/…`, `Organization/…`) or `system|value` identifiers
    such as a login; `departments` are Organization ids. `infer_departments` asks the
    index to take the departments of the members' roles when `departments` is empty.
    `booked` is when an appointment was made, when known: it cannot explain what came
    before.
    """

    kind: int
    id: str
    patient: str
    start: int | None
    end: int | None
    departments: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    infer_departments: bool = False
    booked: int | None = None


class AliasRecord(msgspec.Struct, frozen=True, gc=False):
    """Another reference naming a resource, e.g. a Bundle entry's `urn:uuid:` fullUrl."""

    alias: str
    ref: str


class DepartmentRecord(msgspec.Struct, frozen=True, gc=False):
    """A department (an Organization)."""

    id: str
    name: str = ""
    part_of: str = ""


Record = PatientRecord | PersonRecord | RoleRecord | EpisodeRecord | DepartmentRecord | AliasRecord
