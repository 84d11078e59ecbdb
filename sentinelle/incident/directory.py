"""Who the patients and staff are, for the letters, leak attribution and access reports.

Why an adapter here: the care context keeps what explaining an access needs (who treats
whom) but not what writing to a person needs (postal address, e-mail, phone, language)
nor the names of practitioners and departments. The directory reads those from the
same FHIR resources (Patient, Practitioner, Organization; NDJSON, JSON, Bundles, gzip),
keeping only these fields in compact structs. `only` loads a subset of patients (the
persons of a scope), so a letter run over 750,000 persons does not hold the whole
hospital. Names never go to logs: errors name the file and line only.
"""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.errors import InputFormatError
from sentinelle.sources.quarantine import Quarantine

__all__ = ["Directory", "PatientEntry", "PersonEntry", "norm_name", "norm_phone"]

_LOGIN = "urn:sentinelle:login"
_DECOY = ("https://sentinelle.health/tags", "decoy")
_CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_INS_SYSTEMS = ("urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9", "urn:oid:1.2.250.1.213.1.4.10",
                "urn:oid:1.2.250.1.213.1.4.11")


def norm_name(text: str) -> str:
    """A name compared without accents, case, spaces or punctuation (`Lefèvre` = `LEFEVRE`).

    >>> norm_name("  Lefèvre-Dupont ")
    'lefevredupont'
    """
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c)).lower()


def norm_phone(text: str) -> str:
    """The national significant number of a phone (French: last 9 digits), for matching.

    >>> norm_phone("+33 6 12 34 56 78"), norm_phone("06.12.34.56.78")
    ('612345678', '612345678')
    """
    digits = "".join(c for c in text if c.isdigit())
    return digits[-9:] if len(digits) >= 9 else digits


class PatientEntry(msgspec.Struct, frozen=True, gc=False):
    """What the letters and the attribution need about one patient."""

    id: str
    family: str = ""
    given: str = ""
    gender: str = ""
    birth_date: str = ""
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    line: str = ""
    postal_code: str = ""
    city: str = ""
    state: str = ""
    country: str = ""
    identifiers: tuple[str, ...] = ()  # system|value
    decoy: bool = False
    restricted: bool = False
    language: str = ""

    @property
    def ref(self) -> str:
        """`Patient/<id>`."""
        return f"Patient/{self.id}"

    @property
    def ins(self) -> str:
        """The national health identifier (INS/NIR) value, or ""."""
        for ident in self.identifiers:
            system, _, value = ident.rpartition("|")
            if system in _INS_SYSTEMS:
                return value
        return ""


class PersonEntry(msgspec.Struct, frozen=True, gc=False):
    """A practitioner (or device): names and logins, for access reports."""

    id: str
    family: str = ""
    given: str = ""
    logins: tuple[str, ...] = ()
    specialty: str = ""


# ---- typed decoding of the few fields used ------------------------------------------------
class _Coding(msgspec.Struct):
    system: str = ""
    code: str = ""


class _Ident(msgspec.Struct):
    system: str = ""
    value: str = ""


class _Name(msgspec.Struct):
    family: str = ""
    given: list[str] = []
    use: str = ""
    text: str = ""


class _Telecom(msgspec.Struct):
    system: str = ""
    value: str = ""


class _Address(msgspec.Struct):
    line: list[str] = []
    city: str = ""
    postalCode: str = ""
    state: str = ""
    country: str = ""
    use: str = ""


class _Meta(msgspec.Struct):
    security: list[_Coding] = []
    tag: list[_Coding] = []


class _Language(msgspec.Struct):
    coding: list[_Coding] = []


class _Communication(msgspec.Struct):
    language: _Language = msgspec.field(default_factory=_Language)


class _Resource(msgspec.Struct):
    resourceType: str = ""
    id: str = ""
    meta: _Meta | None = None
    identifier: list[_Ident] = []
    name: list[_Name] | str = []
    telecom: list[_Telecom] = []
    gender: str = ""
    birthDate: str = ""
    address: list[_Address] = []
    communication: list[_Communication] = []
    entry: list[dict[str, Any]] = []


_decoder = msgspec.json.Decoder(_Resource)


def _patient(r: _Resource) -> PatientEntry:
    names = r.name if isinstance(r.name, list) else []
    official = next((n for n in names if n.use in ("official", "usual", "")), names[0] if names else None)
    family = official.family if official else ""
    given = official.given[0] if official and official.given else ""
    phones = tuple(t.value for t in r.telecom if t.system in ("phone", "sms") and t.value)
    emails = tuple(t.value.lower() for t in r.telecom if t.system == "email" and t.value)
    home = next((a for a in r.address if a.use not in ("old", "billing")), None)
    meta = r.meta or _Meta()
    restricted = any(c.system == _CONF and c.code in ("R", "V") for c in meta.security)
    decoy = any((c.system, c.code) == _DECOY for c in meta.tag)
    lang = ""
    for comm in r.communication:
        for c in comm.language.coding:
            if c.code:
                lang = c.code.split("-")[0].lower()
                break
        if lang:
            break
    return PatientEntry(
        id=r.id, family=family, given=given, gender=r.gender, birth_date=r.birthDate, phones=phones, emails=emails,
        line=", ".join(home.line) if home else "", postal_code=home.postalCode if home else "",
        city=home.city if home else "", state=home.state if home else "", country=home.country if home else "",
        identifiers=tuple(f"{i.system}|{i.value}" if i.system else i.value for i in r.identifier if i.value),
        decoy=decoy, restricted=restricted, language=lang,
    )


def _person(r: _Resource) -> PersonEntry:
    names = r.name if isinstance(r.name, list) else []
    n = names[0] if names else None
    return PersonEntry(id=r.id, family=n.family if n else "", given=n.given[0] if n and n.given else "",
                       logins=tuple(i.value for i in r.identifier if i.system == _LOGIN and i.value))


class Directory:
    """Patients, practitioners and departments by id, with the indexes attribution needs."""

    def __init__(self) -> None:
        self.patients: dict[str, PatientEntry] = {}
        self.people: dict[str, PersonEntry] = {}
        self.organizations: dict[str, str] = {}
        self.by_login: dict[str, str] = {}
        self._by_ident: dict[str, str] | None = None

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, paths: Iterable[str | Path], only: set[str] | None = None,
             quarantine: Quarantine | None = None) -> Directory:
        """Read Patient, Practitioner and Organization resources from files and directories.

        `only` keeps the patients whose id (or `Patient/<id>`) it holds.
        """
        d = cls()
        ids = None if only is None else {r.removeprefix("Patient/") for r in only}
        for path in _files(paths):
            d._read_file(path, ids, quarantine)
        return d

    @classmethod
    def from_resources(cls, resources: Iterable[Mapping[str, Any]]) -> Directory:
        """A directory of FHIR resources given as dicts."""
        d = cls()
        for res in resources:
            d._add(msgspec.convert(res, _Resource), None)
        return d

    def _read_file(self, path: Path, ids: set[str] | None, quarantine: Quarantine | None) -> None:
        with path.open("rb") as raw:
            head = raw.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
        lines = data.splitlines()
        first = next((ln for ln in lines if ln.strip()), b"")
        try:
            one_per_line = bool(first) and _complete(first)
        except ValueError:
            one_per_line = False
        docs: Iterable[tuple[int, bytes]] = (
            enumerate(lines, 1) if one_per_line else [(0, data)])
        for n, line in docs:
            if not line.strip():
                continue
            # Only patient, practitioner and organization lines are decoded in full.
            if one_per_line and not any(t in line[:80] for t in (b'"Patient"', b'"Practitioner"',
                                                                 b'"Organization"', b'"Bundle"')):
                continue
            try:
                res = _decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                where = f"line {n}" if n else "document"
                if quarantine is not None:
                    quarantine.reject(str(path), where, f"not a FHIR resource: {exc}", line[:2000])
                    continue
                raise InputFormatError(f"{path}:{n}", f"not a FHIR resource: {exc}") from exc
            self._add(res, ids)

    def _add(self, res: _Resource, ids: set[str] | None) -> None:
        rt = res.resourceType
        if rt == "Patient":
            if res.id and (ids is None or res.id in ids):
                self.patients[res.id] = _patient(res)
                self._by_ident = None
        elif rt == "Practitioner" and res.id:
            p = _person(res)
            self.people[res.id] = p
            for login in p.logins:
                self.by_login[login] = res.id
        elif rt == "Organization" and res.id:
            self.organizations[res.id] = res.name if isinstance(res.name, str) else ""
        elif rt == "Bundle":
            for entry in res.entry:
                inner = entry.get("resource")
                if isinstance(inner, dict):
                    self._add(msgspec.convert(inner, _Resource), ids)

    # ---- lookups ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.patients)

    def patient(self, ref: str) -> PatientEntry | None:
        """A patient by `Patient/<id>`, id, or `system|value` identifier."""
        pid = ref.removeprefix("Patient/")
        got = self.patients.get(pid)
        if got is not None:
            return got
        if "|" in ref:
            if self._by_ident is None:
                self._by_ident = {i: p.id for p in self.patients.values() for i in p.identifiers}
            found = self._by_ident.get(ref)
            return self.patients.get(found) if found else None
        return None

    def iter_patients(self) -> Iterator[PatientEntry]:
        """Every patient loaded."""
        return iter(self.patients.values())

    def person_name(self, person: str) -> str:
        """`Given FAMILY` of a Practitioner id (or reference), or ""."""
        p = self.people.get(person.removeprefix("Practitioner/"))
        if p is None:
            return ""
        return f"{p.given} {p.family.upper()}".strip()

    def organization_name(self, org: str) -> str:
        """The name of a department (Organization id or reference), or the id itself."""
        oid = org.removeprefix("Organization/")
        return self.organizations.get(oid) or oid


def _complete(line: bytes) -> bool:
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError:
        return False
    return True


def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                name = f.name.removesuffix(".gz")
                if f.is_file() and name.endswith((".ndjson", ".json", ".jsonl")):
                    yield f
        elif path.exists():
            yield path
        else:
            raise InputFormatError(str(path), "file or directory not found")
