"""Reads FHIR context resources (NDJSON, JSON, Bundles, gzip, directories) into loader records.

The context of a hospital is read once at start-up and must take seconds: lines are
decoded straight into typed msgspec Structs (see `fhir.py`) and turned at once into the
small loader records of `model.py`, so no FHIR object outlives its line. A resource that
cannot be read goes to the quarantine with its line (or Bundle entry) and the reason; the
rest of the file goes on. Resource types the context does not use are skipped and counted.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import msgspec

from sentinelle.context import fhir
from sentinelle.context.model import (
    LOGIN_SYSTEM,
    AliasRecord,
    DepartmentRecord,
    EpisodeRecord,
    PatientRecord,
    PersonRecord,
    Reason,
    Record,
    RoleRecord,
)
from sentinelle.context.normalise import fhir_time, local_reference
from sentinelle.errors import InputFormatError, RecordError
from sentinelle.events import ActorKind
from sentinelle.sources.quarantine import Quarantine

__all__ = [
    "CONFIDENTIALITY_SYSTEM",
    "PRIVILEGED_ROLES",
    "TAG_SYSTEM",
    "expand_paths",
    "open_binary",
    "read_fhir",
    "read_fhir_paths",
    "records_of",
]

CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
TAG_SYSTEM = "https://sentinelle.health/tags"
ROLE_SYSTEM = "urn:sentinelle:role"
#: Role codes that make an account privileged (it can read any record by design).
PRIVILEGED_ROLES = frozenset({"it", "admin", "service"})
#: File name endings a directory walk reads; other files (READMEs, CSV) are left alone.
FHIR_SUFFIXES = (".ndjson", ".json", ".jsonl", ".ndjson.gz", ".json.gz", ".jsonl.gz")

_ENCOUNTER = int(Reason.ENCOUNTER)
_APPOINTMENT = int(Reason.APPOINTMENT)
_CARE_TEAM = int(Reason.CARE_TEAM)
_SKIPPED_STATUS = frozenset({"entered-in-error"})
_SKIPPED_ENCOUNTER_STATUS = frozenset({"entered-in-error", "cancelled"})
_ACTIVE_CARE_TEAM = frozenset({"active", ""})

Skipped = dict[str, int]


# --- resource -> records ------------------------------------------------------------


def _ref(ref: fhir.Reference | None) -> str:
    """A reference as one string: `Type/id`, an alias such as `urn:uuid:…`, or `system|value`."""
    if ref is None:
        return ""
    text = ref.reference
    if text:
        return text if text.count("/") == 1 else local_reference(text)
    if ref.identifier is not None and ref.identifier.value:
        ident = ref.identifier
        return f"{ident.system}|{ident.value}" if ident.system else ident.value
    return ""


def _org_id(ref: fhir.Reference | None) -> str:
    """An Organization reference as its id (aliases such as urn:uuid are kept for the index)."""
    text = _ref(ref)
    if text.startswith("Organization/"):
        return text[13:]
    return text


def _identifiers(idents: Iterable[fhir.Identifier]) -> tuple[str, ...]:
    return tuple(f"{i.system}|{i.value}" if i.system else i.value for i in idents if i.value)


def _names(names: Iterable[fhir.HumanName]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for n in names:
        if n.use in ("old", "anonymous"):
            continue
        if n.family or n.given:
            out.append((n.family, n.given[0] if n.given else ""))
    return tuple(out)


def _addresses(addresses: Iterable[fhir.Address]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for a in addresses:
        if a.use in ("old", "billing"):
            continue
        line = " ".join(a.line) if a.line else a.text
        if line:
            out.append((line, a.postalCode))
    return tuple(out)


def _period(period: fhir.Period | None, what: str) -> tuple[int | None, int | None]:
    if period is None:
        return None, None
    try:
        start = fhir_time(period.start) if period.start else None
        end = fhir_time(period.end, end=True) if period.end else None
    except RecordError as exc:
        raise RecordError(f"{what}: {exc.reason}") from None
    return start, end


def _flag_extension(extensions: Iterable[fhir.Extension], name: str) -> bool:
    return any(e.url.rstrip("/").endswith(name) and e.valueBoolean for e in extensions)


def _extension_departments(extensions: Iterable[fhir.Extension]) -> list[str]:
    """Departments named by a `…/department` extension (valueReference to an Organization)."""
    return [
        _org_id(e.valueReference)
        for e in extensions
        if e.valueReference is not None and e.url.rstrip("/").rpartition("/")[2] == "department"
    ]


def _patient(p: fhir.Patient) -> list[Record]:
    security = p.meta.security if p.meta else []
    tags = p.meta.tag if p.meta else []
    return [
        PatientRecord(
            id=p.id,
            identifiers=_identifiers(p.identifier),
            names=_names(p.name),
            birth_date=p.birthDate,
            addresses=_addresses(p.address),
            restricted=any(c.code in ("R", "V") and c.system in (CONFIDENTIALITY_SYSTEM, "") for c in security),
            decoy=any(c.system == TAG_SYSTEM and c.code == "decoy" for c in tags),
        )
    ]


def _practitioner(p: fhir.Practitioner) -> list[Record]:
    return [
        PersonRecord(
            ref=f"Practitioner/{p.id}",
            kind=ActorKind.HUMAN,
            identifiers=_identifiers(p.identifier),
            names=_names(p.name),
            birth_date=p.birthDate,
            addresses=_addresses(p.address),
        )
    ]


def _role_code(codes: Iterable[fhir.CodeableConcept]) -> tuple[str, bool]:
    """The Sentinelle role code of a PractitionerRole, and whether a code says "privileged"."""
    best = ""
    privileged = False
    for concept in codes:
        for c in concept.coding:
            if c.code == "privileged":
                privileged = True
            elif c.code and (c.system == ROLE_SYSTEM or not best):
                best = c.code
        if concept.text == "privileged":
            privileged = True
        elif not best and concept.text:
            best = concept.text
    return best, privileged


def _practitioner_role(r: fhir.PractitionerRole) -> list[Record]:
    person = _ref(r.practitioner)
    if not person:
        raise RecordError("has no practitioner")
    role, privileged = _role_code(r.code)
    start, end = _period(r.period, "period")
    privileged = privileged or role in PRIVILEGED_ROLES or _flag_extension(r.extension, "privileged")
    return [
        RoleRecord(
            person=person,
            department=_org_id(r.organization),
            role=role,
            start=start,
            end=end,
            privileged=privileged,
            ref=f"PractitionerRole/{r.id}",
        )
    ]


_DEVICE_KINDS = {
    "application": ActorKind.APPLICATION,
    "service": ActorKind.APPLICATION,
    "api_client": ActorKind.API_CLIENT,
    "apiclient": ActorKind.API_CLIENT,
    "api-client": ActorKind.API_CLIENT,
    "api client": ActorKind.API_CLIENT,
}
_SPLIT = re.compile(r"[\s,;]+")


def _device_kind(d: fhir.Device) -> str:
    concepts = d.type if isinstance(d.type, list) else [d.type] if d.type is not None else []
    for concept in concepts:
        for word in [concept.text, *(c.code for c in concept.coding), *(c.display for c in concept.coding)]:
            kind = _DEVICE_KINDS.get(word.strip().lower())
            if kind:
                return kind
    return ActorKind.APPLICATION


def _concept_words(concept: fhir.CodeableConcept | None) -> list[str]:
    if concept is None:
        return []
    return [w for w in [concept.text, *(c.code for c in concept.coding)] if w]


def _device_addresses(d: fhir.Device) -> tuple[str, ...]:
    found: list[str] = []
    for prop in d.property:
        if not any(w.lower() in ("addresses", "address") for w in _concept_words(prop.type)):
            continue
        for concept in [*prop.valueCode, prop.valueCodeableConcept]:
            found.extend(_concept_words(concept))
        if prop.valueString:
            found.extend(_SPLIT.split(prop.valueString))
    for note in d.note:
        head, sep, rest = note.text.partition(":")
        if sep and head.strip().lower() in ("addresses", "address"):
            found.extend(_SPLIT.split(rest))
    return tuple(dict.fromkeys(a for a in found if a))


def _device(d: fhir.Device) -> list[Record]:
    if d.status == "entered-in-error":
        return []
    ref = f"Device/{d.id}"
    kind = _device_kind(d)
    identifiers = _identifiers(d.identifier)
    if not any(i.startswith(LOGIN_SYSTEM + "|") for i in identifiers):
        # An application known only by its name: the name is its account.
        names = [n.name or n.value for n in d.deviceName if n.name or n.value]
        identifiers += tuple(f"{LOGIN_SYSTEM}|{n}" for n in names[:1])
    person = PersonRecord(ref=ref, kind=kind, identifiers=identifiers, network_addresses=_device_addresses(d))
    role = "service" if kind == ActorKind.APPLICATION else "api"
    privileged = role in PRIVILEGED_ROLES or _flag_extension(d.extension, "privileged")
    return [person, RoleRecord(person=ref, department=_org_id(d.owner), role=role, privileged=privileged)]


def _organization(o: fhir.Organization) -> list[Record]:
    return [DepartmentRecord(id=o.id, name=o.name, part_of=_org_id(o.partOf))]


def _encounter(e: fhir.Encounter) -> list[Record]:
    if e.status in _SKIPPED_ENCOUNTER_STATUS:
        return []
    patient = _ref(e.subject)
    if not patient:
        raise RecordError("has no subject")
    start, end = _period(e.period or e.actualPeriod, "period")
    if start is None:
        raise RecordError("has no period.start")
    if end is None and e.status in ("finished", "completed", "discharged"):
        end = start  # closed without an end date: do not treat it as ongoing for ever
    members = [_ref(p.individual or p.actor) for p in e.participant]
    provider = _org_id(e.serviceProvider) or next(iter(_extension_departments(e.extension)), "")
    return [
        EpisodeRecord(
            kind=_ENCOUNTER,
            id=f"Encounter/{e.id}",
            patient=patient,
            start=start,
            end=end,
            departments=(provider,) if provider else (),
            members=tuple(m for m in members if m and m != patient),
            infer_departments=not provider,
        )
    ]


def _booking_client(a: fhir.Appointment) -> list[str]:
    clients: list[str] = []
    if a.meta is not None and a.meta.source:
        # meta.source names the system that wrote the resource: a Device reference
        # (absolute or not) or the client's login; anything else resolves to nobody.
        clients.append(local_reference(a.meta.source))
    for ext in a.extension:
        if not ext.url.rstrip("/").endswith("booking-client"):
            continue
        if ext.valueReference is not None:
            clients.append(_ref(ext.valueReference))
        for text in (ext.valueString, ext.valueUri, ext.valueCode):
            if text:
                clients.append(text)
        if ext.valueIdentifier is not None and ext.valueIdentifier.value:
            i = ext.valueIdentifier
            clients.append(f"{i.system}|{i.value}" if i.system else i.value)
    return [c for c in clients if c]


def _appointment(a: fhir.Appointment) -> list[Record]:
    if a.status in _SKIPPED_STATUS:
        return []
    if not a.start:
        raise RecordError("has no start")
    try:
        start = fhir_time(a.start)
        if a.end:
            end = fhir_time(a.end, end=True)
        elif a.minutesDuration:
            end = start + a.minutesDuration * 60_000
        else:
            end = start
    except RecordError as exc:
        raise RecordError(f"start/end: {exc.reason}") from None
    try:
        booked = fhir_time(a.created) if a.created else None
    except RecordError as exc:
        raise RecordError(f"created: {exc.reason}") from None
    patient = _ref(a.subject)
    members: list[str] = []
    departments = _extension_departments(a.extension) if a.extension else []
    for p in a.participant:
        actor = _ref(p.actor)
        if not actor or p.status == "declined":
            continue
        if actor.startswith("Patient/"):
            patient = patient or actor
        elif actor.startswith("Organization/"):
            departments.append(actor[13:])
        else:
            members.append(actor)
    if not patient:
        raise RecordError("has no Patient participant")
    members.extend(_booking_client(a))
    return [
        EpisodeRecord(
            kind=_APPOINTMENT,
            id=f"Appointment/{a.id}",
            patient=patient,
            start=start,
            end=end,
            departments=tuple(departments),
            members=tuple(members),
            infer_departments=not departments,
            booked=booked,
        )
    ]


def _care_team(c: fhir.CareTeam) -> list[Record]:
    if c.status not in _ACTIVE_CARE_TEAM:
        return []
    patient = _ref(c.subject)
    if not patient:
        raise RecordError("has no subject")
    start, end = _period(c.period, "period")
    members: list[str] = []
    departments: list[str] = []
    for p in c.participant:
        member = _ref(p.member)
        if member.startswith("Organization/"):
            departments.append(member[13:])
        elif member:
            members.append(member)
    return [
        EpisodeRecord(
            kind=_CARE_TEAM,
            id=f"CareTeam/{c.id}",
            patient=patient,
            start=start,
            end=end,
            departments=tuple(departments),
            members=tuple(members),
        )
    ]


_CONVERTERS: dict[type, Callable[[Any], list[Record]]] = {
    fhir.Patient: _patient,
    fhir.Practitioner: _practitioner,
    fhir.PractitionerRole: _practitioner_role,
    fhir.Organization: _organization,
    fhir.Device: _device,
    fhir.Encounter: _encounter,
    fhir.Appointment: _appointment,
    fhir.CareTeam: _care_team,
}


def records_of(resource: fhir.Resource) -> list[Record]:
    """Loader records of one decoded resource (not a Bundle); `RecordError` when unusable."""
    if not resource.id:
        raise RecordError(f"{type(resource).__name__} has no id")
    try:
        return _CONVERTERS[type(resource)](resource)
    except RecordError as exc:
        raise RecordError(f"{type(resource).__name__}/{resource.id} {exc.reason}") from None


# --- bytes -> resources -> records ------------------------------------------------------


def _where(location: str | int) -> str:
    return f"line {location}" if isinstance(location, int) else location


class _Reader:
    """Decodes JSON bytes of one input into records, quarantining what it cannot read."""

    def __init__(self, origin: str, quarantine: Quarantine, skipped: Skipped) -> None:
        self.origin = origin
        self.quarantine = quarantine
        self.skipped = skipped
        self.decoder = fhir.resource_decoder()

    def one(self, data: bytes, location: str | int, full_url: str = "") -> list[Record]:
        """Records of one JSON resource (a Bundle's entries included).

        `location` is a line number (formatted `line N` only when needed: this runs for
        every line of a file) or a text such as `entry 3`.
        """
        try:
            resource = self.decoder.decode(data)
        except msgspec.DecodeError as exc:
            self.refuse(data, _where(location), exc)
            return []
        if type(resource) is fhir.Bundle:
            return self.bundle(resource, _where(location))
        if not resource.id and full_url.startswith("urn:uuid:"):
            # Transaction bundles name new resources by fullUrl only: use the uuid as id.
            resource = msgspec.structs.replace(resource, id=full_url[9:])
        try:
            records = records_of(resource)
        except RecordError as exc:
            self.quarantine.reject(self.origin, _where(location), exc.reason, data)
            return []
        if full_url and records:
            records.append(AliasRecord(alias=full_url, ref=f"{type(resource).__name__}/{resource.id}"))
        return records

    def refuse(self, data: bytes, location: str, exc: msgspec.DecodeError) -> None:
        """Quarantine what could not be decoded, or count it when it is a resource type not used."""
        kind = fhir.resource_type_of(data)
        if kind is None:
            self.quarantine.reject(self.origin, location, f"not a JSON object: {exc}", data)
        elif not kind:
            self.quarantine.reject(self.origin, location, "no resourceType", data)
        elif kind not in fhir.RESOURCE_TYPES:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
        else:
            self.quarantine.reject(self.origin, location, f"{kind}: {exc}", data)

    def bundle(self, bundle: fhir.Bundle, location: str) -> list[Record]:
        prefix = "" if location == "document" else f"{location} "
        records: list[Record] = []
        for n, entry in enumerate(bundle.entry, 1):
            if entry.resource:
                records.extend(self.one(bytes(entry.resource), f"{prefix}entry {n}", entry.fullUrl))
        return records


def read_fhir(
    stream: BinaryIO, origin: str, quarantine: Quarantine, skipped: Skipped | None = None
) -> Iterator[Record]:
    """Loader records of one FHIR JSON input: NDJSON, one resource, a Bundle or a JSON array.

    NDJSON is read line by line (constant memory); a document spanning several lines is
    read whole. The first line decides: a complete JSON object on it means NDJSON.
    """
    reader = _Reader(origin, quarantine, skipped if skipped is not None else {})
    buffered = (
        stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(cast(io.RawIOBase, stream), 1 << 20)
    )
    first = buffered.readline()
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:]
    n = 1
    while first and not first.strip():
        first = buffered.readline()
        n += 1
    head = first.strip()
    if not head:
        return
    if head[:1] not in (b"{", b"["):
        raise InputFormatError(origin, "not FHIR JSON or NDJSON (it does not start with '{' or '[')")
    one_line_object = head[:1] == b"{" and head.endswith(b"}")
    # A broken first line of NDJSON is still NDJSON when the next line opens an object.
    if one_line_object and (_is_json(head) or buffered.peek(1)[:1] == b"{"):
        yield from reader.one(head, n)
        one = reader.one
        for line in buffered:
            n += 1
            line = line.strip()
            if line:
                yield from one(line, n)
        return
    data = first + buffered.read()
    try:
        if head[:1] == b"[":
            items = msgspec.json.decode(data, type=list[msgspec.Raw])
        else:
            items = [msgspec.json.decode(data, type=msgspec.Raw)]
    except msgspec.DecodeError as exc:
        quarantine.reject(origin, "document", f"not valid JSON: {exc}", data)
        return
    if head[:1] == b"[":
        for i, item in enumerate(items, 1):
            yield from reader.one(bytes(item), f"entry {i}")
    else:
        yield from reader.one(bytes(items[0]), "document")


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data, type=msgspec.Raw)
    except msgspec.DecodeError:
        return False
    return True


def open_binary(path: Path) -> BinaryIO:
    """A buffered binary stream of a file, gunzipped when it starts with the gzip magic."""
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        unzipped = cast(io.RawIOBase, gzip.GzipFile(fileobj=raw, mode="rb"))
        return cast(BinaryIO, io.BufferedReader(unzipped, 1 << 20))
    raw.seek(0)
    return cast(BinaryIO, raw)


def expand_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named directly, then the FHIR JSON files under each directory, in name order."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from sorted(
                f
                for f in path.rglob("*")
                if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(FHIR_SUFFIXES)
            )
        elif path.exists():
            yield path
        else:
            raise InputFormatError(str(path), "no such file or directory")


def read_fhir_paths(
    paths: Iterable[str | Path], quarantine: Quarantine, skipped: Skipped | None = None
) -> Iterator[Record]:
    """Loader records of every FHIR file named or found under the directories named."""
    for path in expand_paths(paths):
        with open_binary(path) as stream:
            yield from read_fhir(stream, str(path), quarantine, skipped)
