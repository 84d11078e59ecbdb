"""Reads the care context from CSV exports described by a TOML mapping.

Many hospitals cannot hand over FHIR resources but can export a few spreadsheets from
their identity directory, their admission system and their scheduler. A small mapping
says which file is which and which column holds what; each row becomes the same loader
records the FHIR reader yields, so the index does not care where the context came from.
The format is documented in docs/context.md.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from sentinelle.context.model import (
    LOGIN_SYSTEM,
    DepartmentRecord,
    EpisodeRecord,
    PatientRecord,
    PersonRecord,
    Reason,
    Record,
    RoleRecord,
)
from sentinelle.errors import ConfigError, RecordError
from sentinelle.events import ActorKind
from sentinelle.sources.quarantine import Quarantine

__all__ = ["INS_SYSTEM", "ContextMapping", "TableMapping", "load_context_mapping", "read_mapping"]

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"

#: Keys allowed at the top of the mapping and in every table (table values win).
_FORMAT_KEYS = ("delimiter", "encoding", "timezone", "time_format", "date_format", "list_separator")
#: Column keys of each table; the first ones listed in _REQUIRED must be present.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": (
        "login",
        "person",
        "role",
        "department",
        "start",
        "end",
        "kind",
        "privileged",
        "ins",
        "family",
        "given",
        "birth_date",
        "address",
        "postal_code",
    ),
    "patients": (
        "id",
        "ins",
        "family",
        "given",
        "birth_date",
        "address",
        "postal_code",
        "restricted",
        "decoy",
    ),
    "stays": ("id", "patient", "department", "start", "end", "participants"),
    "appointments": ("id", "patient", "department", "start", "end", "participants", "booked"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "accounts": ("login",),
    "patients": ("id",),
    "stays": ("patient", "start"),
    "appointments": ("patient", "start"),
}
#: Keys of a table that are values, not column names.
_VALUE_KEYS: dict[str, tuple[str, ...]] = {
    "accounts": ("roles", "kinds"),
    "patients": ("id_system", "ins_system"),
    "stays": ("patient_system",),
    "appointments": ("patient_system",),
}
_TRUE = frozenset({"1", "true", "yes", "y", "oui", "o", "x", "vrai", "t"})
_KINDS = {
    "": ActorKind.HUMAN,
    "human": ActorKind.HUMAN,
    "user": ActorKind.HUMAN,
    "application": ActorKind.APPLICATION,
    "app": ActorKind.APPLICATION,
    "service": ActorKind.APPLICATION,
    "api_client": ActorKind.API_CLIENT,
    "api": ActorKind.API_CLIENT,
    "client": ActorKind.API_CLIENT,
}
_TIME_DIRECTIVES = re.compile(r"%[HIMSXcTRfp]")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class TableMapping(msgspec.Struct, frozen=True):
    """One CSV file of the mapping: where it is, how it is written, which column is what."""

    name: str
    file: Path
    columns: dict[str, str]
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    timezone: str = "UTC"
    time_format: str = ""
    date_format: str = ""
    list_separator: str = "|"
    values: dict[str, Any] = {}


class ContextMapping(msgspec.Struct, frozen=True):
    """A whole mapping: its file and its tables, in the order they are read."""

    path: Path
    tables: tuple[TableMapping, ...]


def load_context_mapping(path: str | Path) -> ContextMapping:
    """Read and check a TOML context mapping; `ConfigError` names the file and the key at fault."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the mapping: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    defaults = {k: doc[k] for k in _FORMAT_KEYS if k in doc}
    unknown = set(doc) - set(_FORMAT_KEYS) - set(_COLUMNS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; tables are "
            f"{', '.join(_COLUMNS)} and settings {', '.join(_FORMAT_KEYS)}"
        )
    tables: list[TableMapping] = []
    for name in _COLUMNS:
        if name not in doc:
            continue
        table = doc[name]
        where = f"{path} [{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        allowed = {"file", *_FORMAT_KEYS, *_COLUMNS[name], *_VALUE_KEYS[name]}
        extra = set(table) - allowed
        if extra:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}"
            )
        if not isinstance(table.get("file"), str) or not table["file"]:
            raise ConfigError(f"{where}: 'file' (the CSV file, relative to the mapping) is required")
        missing = [k for k in _REQUIRED[name] if k not in table]
        if missing:
            raise ConfigError(f"{where}: column key(s) {', '.join(missing)} required")
        columns = {k: table[k] for k in _COLUMNS[name] if k in table}
        for key, column in columns.items():
            if not isinstance(column, str) or not column:
                raise ConfigError(f"{where}: {key} must be a column name (a non-empty string)")
        settings = {**defaults, **{k: table[k] for k in _FORMAT_KEYS if k in table}}
        for key, value in settings.items():
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be a string")
        if len(settings.get("delimiter", ",")) != 1:
            raise ConfigError(f"{where}: delimiter must be one character")
        values = {k: table[k] for k in _VALUE_KEYS[name] if k in table}
        for key in ("roles", "kinds"):
            if key in values and not (
                isinstance(values[key], dict) and all(isinstance(v, str) for v in values[key].values())
            ):
                raise ConfigError(f"{where}: {key} must be a table of text values")
        _zone(settings.get("timezone", "UTC"), where)
        tables.append(
            TableMapping(
                name=name,
                file=(path.parent / table["file"]),
                columns=columns,
                values=values,
                **settings,
            )
        )
    if not tables:
        raise ConfigError(f"{path}: no table; give at least one of {', '.join(_COLUMNS)}")
    return ContextMapping(path=path, tables=tuple(tables))


def _zone(name: str, where: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown timezone {name!r}") from None


class _Row:
    """Typed access to the mapped cells of one CSV row."""

    __slots__ = ("cells", "index", "table", "zone")

    def __init__(self, table: TableMapping, index: dict[str, int], zone: tzinfo) -> None:
        self.table = table
        self.index = index
        self.zone = zone
        self.cells: list[str] = []

    def get(self, key: str) -> str:
        i = self.index.get(key)
        if i is None or i >= len(self.cells):
            return ""
        return self.cells[i].strip()

    def flag(self, key: str) -> bool:
        return self.get(key).lower() in _TRUE

    def time(self, key: str, end: bool = False) -> int | None:
        text = self.get(key)
        if not text:
            return None
        fmt = self.table.time_format
        try:
            if fmt:
                dt = datetime.strptime(text, fmt)
                date_only = not _TIME_DIRECTIVES.search(fmt)
            else:
                if text.endswith(("Z", "z")):
                    text = text[:-1] + "+00:00"
                dt = datetime.fromisoformat(text)
                date_only = bool(_DATE_ONLY.match(text))
        except ValueError:
            raise RecordError(
                f"{key} {text!r} does not match {fmt!r}" if fmt else f"{key} {text!r} is not an ISO 8601 time"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.zone)
        if date_only and end:
            dt = dt + timedelta(days=1)
            return int(dt.timestamp() * 1000) - 1
        return int(dt.timestamp() * 1000)

    def date(self, key: str) -> str:
        text = self.get(key)
        if not text or not self.table.date_format:
            return text
        try:
            return datetime.strptime(text, self.table.date_format).date().isoformat()
        except ValueError:
            raise RecordError(f"{key} {text!r} does not match {self.table.date_format!r}") from None

    def items(self, key: str) -> list[str]:
        return [v.strip() for v in self.get(key).split(self.table.list_separator) if v.strip()]


def _rows(table: TableMapping, quarantine: Quarantine) -> Iterator[tuple[int, _Row]]:
    """(line, row) of a table's CSV file; checks the header names every mapped column."""
    path = table.file
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the [{table.name}] file: {exc.strerror}") from None
    with raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        binary: Any = gzip.GzipFile(fileobj=raw) if gzipped else raw
        text = io.TextIOWrapper(binary, encoding=table.encoding, newline="")
        reader = csv.reader(text, delimiter=table.delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"{path}: cannot read the header: {exc}") from None
        positions = {h: i for i, h in enumerate(header)}
        missing = [c for c in table.columns.values() if c not in positions]
        if missing:
            raise ConfigError(
                f"{path}: column(s) {', '.join(missing)} named in the [{table.name}] mapping are "
                f"not in the header ({', '.join(header)})"
            )
        row = _Row(table, {k: positions[c] for k, c in table.columns.items()}, _zone(table.timezone, str(path)))
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as exc:
                quarantine.reject(str(path), f"line {reader.line_num}", f"unreadable row: {exc}")
                continue
            if not any(c.strip() for c in cells):
                continue
            row.cells = cells
            yield reader.line_num, row


def _accounts(table: TableMapping, quarantine: Quarantine, departments: set[str]) -> Iterator[Record]:
    roles_map: dict[str, str] = table.values.get("roles", {})
    kinds_map: dict[str, str] = table.values.get("kinds", {})
    persons: dict[str, tuple[str, list[str], list[tuple[str, str]], list[tuple[str, str]]]] = {}
    births: dict[str, str] = {}
    for line, row in _rows(table, quarantine):
        try:
            login = row.get("login")
            if not login:
                raise RecordError("login is empty")
            kind_text = row.get("kind")
            kind = _KINDS.get(kinds_map.get(kind_text, kind_text).lower())
            if kind is None:
                raise RecordError(f"kind {kind_text!r} is not human, application or api_client")
            person_id = row.get("person") or login
            ref = ("Practitioner/" if kind == ActorKind.HUMAN else "Device/") + person_id
            role = row.get("role")
            role = roles_map.get(role, role)
            department = row.get("department")
            role_record = RoleRecord(
                person=ref,
                department=department,
                role=role or ("" if kind == ActorKind.HUMAN else "service" if kind == ActorKind.APPLICATION else "api"),
                start=row.time("start"),
                end=row.time("end", end=True),
                privileged=row.flag("privileged"),
            )
            birth = row.date("birth_date")
        except RecordError as exc:
            quarantine.reject(
                str(table.file), f"line {line}", f"account: {exc.reason}", table.delimiter.join(row.cells)
            )
            continue
        if department:
            departments.add(department)
        yield role_record
        _, identifiers, names, addresses = persons.setdefault(ref, (kind, [], [], []))
        if birth:
            births.setdefault(ref, birth)
        identifiers.append(f"{LOGIN_SYSTEM}|{login}")
        if row.get("ins"):
            identifiers.append(f"{INS_SYSTEM}|{row.get('ins')}")
        if row.get("family"):
            names.append((row.get("family"), row.get("given")))
        if row.get("address"):
            addresses.append((row.get("address"), row.get("postal_code")))
    for ref, (kind, identifiers, names, addresses) in persons.items():
        yield PersonRecord(
            ref=ref,
            kind=kind,
            identifiers=tuple(dict.fromkeys(identifiers)),
            names=tuple(dict.fromkeys(names)),
            birth_date=births.get(ref, ""),
            addresses=tuple(dict.fromkeys(addresses)),
        )


def _patients(table: TableMapping, quarantine: Quarantine) -> Iterator[Record]:
    id_system = str(table.values.get("id_system", ""))
    ins_system = str(table.values.get("ins_system", INS_SYSTEM))
    for line, row in _rows(table, quarantine):
        try:
            pid = row.get("id")
            if not pid:
                raise RecordError("id is empty")
            if "/" in pid:
                raise RecordError(f"id {pid!r} contains '/'")
            identifiers = [f"{id_system}|{pid}"] if id_system else []
            if row.get("ins"):
                identifiers.append(f"{ins_system}|{row.get('ins')}")
            family, given = row.get("family"), row.get("given")
            address = row.get("address")
            yield PatientRecord(
                id=pid,
                identifiers=tuple(identifiers),
                names=((family, given),) if family or given else (),
                birth_date=row.date("birth_date"),
                addresses=((address, row.get("postal_code")),) if address else (),
                restricted=row.flag("restricted"),
                decoy=row.flag("decoy"),
            )
        except RecordError as exc:
            quarantine.reject(
                str(table.file), f"line {line}", f"patient: {exc.reason}", table.delimiter.join(row.cells)
            )


def _episodes(table: TableMapping, quarantine: Quarantine, departments: set[str]) -> Iterator[Record]:
    kind = int(Reason.ENCOUNTER if table.name == "stays" else Reason.APPOINTMENT)
    prefix = "Encounter/" if table.name == "stays" else "Appointment/"
    patient_system = str(table.values.get("patient_system", ""))
    stem = table.file.name
    for line, row in _rows(table, quarantine):
        try:
            patient = row.get("patient")
            if not patient:
                raise RecordError("patient is empty")
            start = row.time("start")
            if start is None:
                raise RecordError("start is empty")
            end = row.time("end", end=True)
            if end is None and kind == int(Reason.APPOINTMENT):
                end = start
            if end is not None and end < start:
                raise RecordError("end is before start")
            department = row.get("department")
            yield EpisodeRecord(
                kind=kind,
                id=prefix + (row.get("id") or f"{stem}:{line}"),
                patient=f"{patient_system}|{patient}" if patient_system else f"Patient/{patient}",
                start=start,
                end=end,
                departments=(department,) if department else (),
                members=tuple(f"{LOGIN_SYSTEM}|{login}" for login in row.items("participants")),
                booked=row.time("booked") if kind == int(Reason.APPOINTMENT) else None,
                infer_departments=not department,
            )
        except RecordError as exc:
            quarantine.reject(
                str(table.file), f"line {line}", f"{table.name[:-1]}: {exc.reason}", table.delimiter.join(row.cells)
            )
            continue
        if department:
            departments.add(department)


def read_mapping(mapping: str | Path | ContextMapping, quarantine: Quarantine) -> Iterator[Record]:
    """Loader records of every CSV file a mapping names; bad rows go to the quarantine."""
    if not isinstance(mapping, ContextMapping):
        mapping = load_context_mapping(mapping)
    departments: set[str] = set()
    for table in mapping.tables:
        if table.name == "accounts":
            yield from _accounts(table, quarantine, departments)
        elif table.name == "patients":
            yield from _patients(table, quarantine)
        else:
            yield from _episodes(table, quarantine, departments)
    for dept in sorted(departments):
        yield DepartmentRecord(id=dept)
