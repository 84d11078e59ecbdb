"""Reads CSV and JSON lines of any shape through a declared column mapping (TOML).

Many DPI editors and gateways write their own access logs, in no standard shape. Rather
than one parser per editor, a small TOML file says which column (or JSON path) holds each
`AccessEvent` field and how its values translate. Two examples ship in
`sentinelle/sources/mappings/` and can be named without a path (`dpi_csv_fr`,
`api_gateway_jsonl`); `docs/mapping.md` is the full reference.

The mapping format::

    name = "DPI X access export"      # optional, for messages
    format = "csv"                    # "csv" or "jsonl"

    [csv]                             # CSV only; every key optional
    delimiter = ";"                   # default ","
    quote = '"'                       # default '"'
    encoding = "cp1252"               # default "utf-8-sig" (UTF-8, BOM or not)
    header = true                     # false: columns are named "1", "2", ... (or integers)

    [fields]                          # a string is a column name (CSV) or a dotted JSON path
    id = "trace_id"                   # optional: default SHA-1 of the raw record
    time = { column = "Date", format = "%d/%m/%Y %H:%M:%S", timezone = "Europe/Paris" }
    account = "Login"
    action = { column = "Op", map = { CONSULT = "read", EXPORT = "export" } }
    outcome = { column = "Status", map = { OK = "success", KO = "denied" }, default = "success" }
    patients = [ { column = "IPP", system = "urn:sentinelle:ipp" },
                 { column = "INS", system = "urn:oid:1.2.250.1.213.1.4.8" } ]
    categories = { column = "Screen", map = { CHART = ["identity", "clinical"] }, fallback = [] }
    address = "IP"

    [constants]                       # same value for every record
    source = "dpi-x"

    [defaults]                        # value when a mapped column is empty or absent
    actor_kind = "human"

A field spec table takes: `column` (or `path`), `map` (case-insensitive value map; for
categories a value may be a list), `default` (when the value is empty or missing),
`fallback` (when a value is not in `map`; without it such a record is quarantined),
`separator` (patients, categories: several values in one cell), `prefix` (prepended),
`system` (patients: `system|value`), `format` and `timezone` (time). Time formats:
`iso` (default), `epoch_s`, `epoch_ms`, or a `strptime` pattern; naive times are read in
`timezone` (an IANA name; default UTC; an ambiguous autumn hour is taken as the first).
Required: `time`, `account` and `action` (from a field or a constant). A patient under
an INS authority adds the `national_id` category by itself.

Bad records go to the quarantine ("line N", reason) and reading goes on; a CSV header
that lacks a mapped column raises `InputFormatError`, because then every row would fail.
"""

from __future__ import annotations

import calendar
import codecs
import csv
import hashlib
import io
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from sentinelle.errors import ConfigError, InputFormatError, RecordError
from sentinelle.events import ACTIONS, ACTOR_KINDS, OUTCOMES, AccessEvent, Category, category_mask
from sentinelle.sources.atna import NATIONAL_ID_OIDS
from sentinelle.sources.quarantine import Quarantine

__all__ = ["FieldSpec", "Mapping", "builtin_mappings", "load_mapping", "loads_mapping", "read", "read_mapped"]

#: AccessEvent fields a mapping may fill, besides `patients` and `categories`.
SCALAR_FIELDS = (
    "id",
    "time",
    "account",
    "action",
    "actor_kind",
    "outcome",
    "client",
    "address",
    "session",
    "source",
    "query",
    "auth",
    "purpose",
)
_LIST_FIELDS = ("patients", "categories")
_REQUIRED = ("time", "account", "action")
_AUTH_VALUES = ("password", "mfa", "card", "oauth", "")
#: Fields whose values must come from a closed set.
_CLOSED: dict[str, tuple[str, ...]] = {
    "action": ACTIONS,
    "outcome": OUTCOMES,
    "actor_kind": ACTOR_KINDS,
    "auth": _AUTH_VALUES,
}
_NATIONAL_ID = int(Category.NATIONAL_ID)
_CATEGORY_NAMES = tuple(c.name.lower() for c in Category if c.name)
_SPEC_KEYS = {
    "column",
    "path",
    "map",
    "default",
    "fallback",
    "separator",
    "prefix",
    "system",
    "format",
    "timezone",
    "value",
}
_TOP_KEYS = {"name", "description", "format", "csv", "fields", "constants", "defaults"}
_CSV_KEYS = {"delimiter", "quote", "encoding", "header"}
_TIME_FORMATS = ("iso", "epoch_s", "epoch_ms")
_BUILTIN_PACKAGE = "sentinelle.sources"
_BUILTIN_DIR = "mappings"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one AccessEvent field is filled: from a column/path, through a map, or a constant."""

    field: str
    column: str = ""
    constant: Any = None
    map: dict[str, Any] | None = None
    default: Any = None
    fallback: Any = None
    separator: str = ""
    prefix: str = ""
    system: str = ""
    time_format: str = "iso"
    timezone: str = ""

    def where(self) -> str:
        return f"column {self.column!r}" if self.column else f"the {self.field} constant"


@dataclass(frozen=True, slots=True)
class Mapping:
    """A validated mapping file: the input's shape and how each field is filled."""

    path: str
    name: str
    format: str
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8-sig"
    header: bool = True
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    patients: tuple[FieldSpec, ...] = ()
    categories: tuple[FieldSpec, ...] = ()

    def columns(self) -> list[str]:
        """Every column (or JSON path) the mapping reads, in declaration order."""
        specs = [*self.fields.values(), *self.patients, *self.categories]
        return list(dict.fromkeys(s.column for s in specs if s.column))


# --- loading and validation ---------------------------------------------------------------


def builtin_mappings() -> list[str]:
    """Names of the example mappings shipped with Sentinelle."""
    folder = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_DIR)
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_mapping(path: str | Path) -> Mapping:
    """A mapping read from a TOML file, or a shipped one by name; raises `ConfigError`.

    >>> load_mapping("dpi_csv_fr").format
    'csv'
    """
    where = str(path)
    p = Path(path)
    if p.is_file():
        data = p.read_bytes()
    else:
        name = str(path).removesuffix(".toml").replace("-", "_")
        builtin = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_DIR, f"{name}.toml")
        if "/" in name or not builtin.is_file():
            known = ", ".join(builtin_mappings())
            raise ConfigError(f"{where}: no such mapping file (shipped mappings: {known})")
        data = builtin.read_bytes()
        where = f"{name} (shipped mapping)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text: {exc}") from None
    return loads_mapping(text, where)


def loads_mapping(text: str, where: str = "<mapping>") -> Mapping:
    """A mapping from TOML text; `where` names it in errors. Raises `ConfigError`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    return _build(doc, where)


def _fail(where: str, key: str, reason: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {reason}")


def _build(doc: dict[str, Any], where: str) -> Mapping:
    for key in doc:
        if key not in _TOP_KEYS:
            raise _fail(where, key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    fmt = doc.get("format")
    if fmt not in ("csv", "jsonl"):
        raise _fail(where, "format", f'must be "csv" or "jsonl", not {fmt!r}')
    name = str(doc.get("name") or Path(where).stem)
    csv_opts = doc.get("csv", {})
    if not isinstance(csv_opts, dict):
        raise _fail(where, "csv", "must be a table")
    if csv_opts and fmt != "csv":
        raise _fail(where, "csv", 'only for format = "csv"')
    for key in csv_opts:
        if key not in _CSV_KEYS:
            raise _fail(where, f"csv.{key}", f"unknown key (known: {', '.join(sorted(_CSV_KEYS))})")
    delimiter = csv_opts.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise _fail(where, "csv.delimiter", 'must be one character (use "\\t" for tabs)')
    quote = csv_opts.get("quote", '"')
    if not isinstance(quote, str) or len(quote) != 1:
        raise _fail(where, "csv.quote", "must be one character")
    encoding = csv_opts.get("encoding", "utf-8-sig")
    try:
        if not isinstance(encoding, str):
            raise LookupError(encoding)
        codecs.lookup(encoding)
    except LookupError:
        raise _fail(where, "csv.encoding", f"unknown encoding {encoding!r}") from None
    header = csv_opts.get("header", True)
    if not isinstance(header, bool):
        raise _fail(where, "csv.header", "must be true or false")

    fields_doc = _table(doc, "fields", where)
    constants = _table(doc, "constants", where)
    defaults = _table(doc, "defaults", where)
    known = (*SCALAR_FIELDS, *_LIST_FIELDS)
    for section, table in (("fields", fields_doc), ("constants", constants), ("defaults", defaults)):
        for key in table:
            if key not in known:
                raise _fail(where, f"{section}.{key}", f"not an event field (known: {', '.join(known)})")
    for key in constants:
        if key in fields_doc and key != "categories":
            raise _fail(where, f"constants.{key}", f"also mapped in fields.{key}: choose one")
    for key in defaults:
        if key not in fields_doc:
            raise _fail(where, f"defaults.{key}", f"no fields.{key} to give a default to")
    for key in ("time", "id"):
        if key in constants:
            raise _fail(where, f"constants.{key}", f"the {key} must come from the records")

    scalars: dict[str, FieldSpec] = {}
    for key in SCALAR_FIELDS:
        if key in fields_doc:
            spec = _spec(key, fields_doc[key], f"fields.{key}", where)
            if key in defaults:
                if spec.default is not None:
                    raise _fail(where, f"defaults.{key}", f"fields.{key} already has a default")
                spec = _with_default(spec, defaults[key], f"defaults.{key}", where)
            scalars[key] = spec
        elif key in constants:
            value = constants[key]
            if not isinstance(value, str):
                raise _fail(where, f"constants.{key}", "must be a string")
            _check_value(key, value, f"constants.{key}", where)
            scalars[key] = FieldSpec(field=key, constant=value)
    for key in _REQUIRED:
        if key not in scalars:
            raise _fail(where, f"fields.{key}", "required (map a column, or a constant for action)")
    if fmt == "csv" and not header:
        for spec in scalars.values():
            if spec.column and not spec.column.isdigit():
                raise _fail(where, f"fields.{spec.field}", "csv.header = false: columns are numbers from 1")

    patients = _list_specs("patients", fields_doc.get("patients"), where)
    categories = _list_specs("categories", fields_doc.get("categories"), where)
    if "patients" in constants:
        raise _fail(where, "constants.patients", "patients must come from the records")
    if "categories" in constants:
        value = constants["categories"]
        names = [value] if isinstance(value, str) else value
        mask = _category_mask(names, "constants.categories", where)
        categories = (*categories, FieldSpec(field="categories", constant=mask))
    for key in ("patients", "categories"):
        if key in defaults:
            raise _fail(where, f"defaults.{key}", f"put `default` inside fields.{key}")
    return Mapping(
        path=where,
        name=name,
        format=fmt,
        delimiter=delimiter,
        quote=quote,
        encoding=encoding,
        header=header,
        fields=scalars,
        patients=patients,
        categories=categories,
    )


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise _fail(where, key, "must be a table")
    return value


def _column(value: Any, key: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail(where, key, "a column is a name, a dotted JSON path or a column number")
    text = str(value).strip()
    if not text:
        raise _fail(where, key, "empty column name")
    return text


def _spec(name: str, raw: Any, key: str, where: str) -> FieldSpec:
    if isinstance(raw, str | int) and not isinstance(raw, bool):
        return FieldSpec(field=name, column=_column(raw, key, where))
    if not isinstance(raw, dict):
        raise _fail(where, key, 'must be a column name or a table such as { column = "..." }')
    for k in raw:
        if k not in _SPEC_KEYS:
            raise _fail(where, f"{key}.{k}", f"unknown key (known: {', '.join(sorted(_SPEC_KEYS))})")
    if "column" in raw and "path" in raw:
        raise _fail(where, key, "give `column` or `path`, not both")
    col_raw = raw.get("column", raw.get("path"))
    if "value" in raw:
        raise _fail(where, f"{key}.value", "put constants in the [constants] table")
    if col_raw is None:
        raise _fail(where, key, "needs `column` (or `path`)")
    column = _column(col_raw, key, where)
    mapping: dict[str, Any] | None = None
    if "map" in raw:
        table = raw["map"]
        if not isinstance(table, dict) or not table:
            raise _fail(where, f"{key}.map", "must be a non-empty table of value = result")
        mapping = {}
        for src, dst in table.items():
            mapping[str(src).strip().casefold()] = _mapped_value(name, dst, f"{key}.map.{src}", where)
    fallback = None
    if "fallback" in raw:
        if mapping is None:
            raise _fail(where, f"{key}.fallback", "only with `map`")
        fallback = _mapped_value(name, raw["fallback"], f"{key}.fallback", where)
    separator = raw.get("separator", "")
    if not isinstance(separator, str):
        raise _fail(where, f"{key}.separator", "must be a string")
    if separator and name not in _LIST_FIELDS:
        raise _fail(where, f"{key}.separator", "only for patients and categories")
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str):
        raise _fail(where, f"{key}.prefix", "must be a string")
    system = raw.get("system", "")
    if not isinstance(system, str) or (system and name != "patients"):
        raise _fail(where, f"{key}.system", "only for patients, as a string")
    time_format = "iso"
    zone = ""
    if "format" in raw or "timezone" in raw:
        if name != "time":
            raise _fail(where, key, "`format` and `timezone` are for the time field")
        time_format = raw.get("format", "iso")
        if not isinstance(time_format, str) or (time_format not in _TIME_FORMATS and "%" not in time_format):
            raise _fail(
                where, f"{key}.format", "must be iso, epoch_s, epoch_ms or a strptime pattern such as %d/%m/%Y %H:%M:%S"
            )
        zone = raw.get("timezone", "")
        if not isinstance(zone, str):
            raise _fail(where, f"{key}.timezone", "must be an IANA zone name such as Europe/Paris")
        if zone:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise _fail(where, f"{key}.timezone", f"unknown time zone {zone!r}") from None
        if time_format.startswith("epoch") and zone:
            raise _fail(where, f"{key}.timezone", "epoch times are UTC by definition")
    spec = FieldSpec(
        field=name,
        column=column,
        map=mapping,
        fallback=fallback,
        separator=separator,
        prefix=prefix,
        system=system,
        time_format=time_format,
        timezone=zone,
    )
    if "default" in raw:
        spec = _with_default(spec, raw["default"], f"{key}.default", where)
    return spec


def _with_default(spec: FieldSpec, value: Any, key: str, where: str) -> FieldSpec:
    if spec.field == "time":
        raise _fail(where, key, "the time has no default")
    return FieldSpec(
        field=spec.field,
        column=spec.column,
        map=spec.map,
        default=_mapped_value(spec.field, value, key, where),
        fallback=spec.fallback,
        separator=spec.separator,
        prefix=spec.prefix,
        system=spec.system,
        time_format=spec.time_format,
        timezone=spec.timezone,
    )


def _mapped_value(name: str, value: Any, key: str, where: str) -> Any:
    """A map target, default or fallback, checked and converted for field `name`."""
    if name == "categories":
        names = [value] if isinstance(value, str) else value
        return _category_mask(names, key, where)
    if not isinstance(value, str):
        raise _fail(where, key, "must be a string")
    _check_value(name, value, key, where)
    return value


def _check_value(name: str, value: str, key: str, where: str) -> None:
    allowed = _CLOSED.get(name)
    if allowed is not None and value not in allowed:
        known = ", ".join(repr(a) for a in allowed)
        raise _fail(where, key, f"{value!r} is not a valid {name} (known: {known})")


def _category_mask(names: Any, key: str, where: str) -> int:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail(where, key, "must be a category name or a list of them")
    try:
        return category_mask(n.strip().lower() for n in names)
    except KeyError as exc:
        raise _fail(where, key, f"unknown category {exc.args[0]!r} (known: {', '.join(_CATEGORY_NAMES)})") from None


def _list_specs(name: str, raw: Any, where: str) -> tuple[FieldSpec, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise _fail(where, f"fields.{name}", "empty list")
    return tuple(
        _spec(name, item, f"fields.{name}[{i}]" if isinstance(raw, list) else f"fields.{name}", where)
        for i, item in enumerate(items)
    )


# --- reading ------------------------------------------------------------------------------


def read(stream: BinaryIO, origin: str, quarantine: Quarantine) -> Iterator[AccessEvent]:
    """Always raises: CSV and JSON lines of a custom shape need a mapping file."""
    raise InputFormatError(origin, "the mapped format needs a mapping file (--mapping FILE.toml); see docs/mapping.md")
    yield  # pragma: no cover - makes this a generator like the other readers


def read_mapped(
    stream: BinaryIO, origin: str, quarantine: Quarantine, mapping: Mapping | str | Path
) -> Iterator[AccessEvent]:
    """Access events of a CSV or JSON-lines stream read through `mapping` (a Mapping or its file)."""
    m = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    if m.format == "csv":
        yield from _read_csv(stream, origin, quarantine, m)
    else:
        yield from _read_jsonl(stream, origin, quarantine, m)


def _read_csv(stream: BinaryIO, origin: str, quarantine: Quarantine, m: Mapping) -> Iterator[AccessEvent]:
    # errors="replace" keeps one bad byte from ending the file; rows holding one are refused.
    text = io.TextIOWrapper(stream, encoding=m.encoding, errors="replace", newline="")
    try:
        yield from _csv_rows(text, origin, quarantine, m)
    finally:
        # The wrapper would close the caller's stream (stdin, say) when collected.
        text.detach()


def _csv_rows(text: io.TextIOWrapper, origin: str, quarantine: Quarantine, m: Mapping) -> Iterator[AccessEvent]:
    reader = csv.reader(text, delimiter=m.delimiter, quotechar=m.quote)
    index: dict[str, int] = {}
    if m.header:
        header: list[str] | None = None
        for row in reader:
            if row and any(c.strip() for c in row):
                header = row
                break
        if header is None:
            return
        names = [h.strip().lstrip("\ufeff") for h in header]
        folded = {n.casefold(): i for i, n in reversed(list(enumerate(names)))}
        missing = []
        for col in m.columns():
            if col in names:
                index[col] = names.index(col)
            elif col.casefold() in folded:
                index[col] = folded[col.casefold()]
            else:
                missing.append(col)
        if missing:
            raise InputFormatError(
                origin,
                f"column(s) {', '.join(repr(c) for c in missing)} named by mapping {m.name!r} are not in "
                f"the header (found: {', '.join(repr(n) for n in names[:30])})",
            )
    else:
        index = {col: int(col) - 1 for col in m.columns()}
    build = _Builder(m, index)
    sep = m.delimiter
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over the size limit: that row only
            quarantine.reject(origin, f"line {reader.line_num}", f"unreadable CSV row: {exc}")
            continue
        if not row or not any(c.strip() for c in row):
            continue
        raw = sep.join(row)
        try:
            if "\ufffd" in raw:
                raise RecordError(f"bytes not valid in {m.encoding} (check csv.encoding)")
            yield build.event(row, raw.encode("utf-8"))
        except RecordError as exc:
            quarantine.reject(origin, f"line {reader.line_num}", exc.reason, raw)


def _read_jsonl(stream: BinaryIO, origin: str, quarantine: Quarantine, m: Mapping) -> Iterator[AccessEvent]:
    paths = {col: tuple(int(p) if p.isdigit() else p for p in col.split(".")) for col in m.columns()}
    build = _Builder(m, paths, json=True)
    decode = msgspec.json.Decoder().decode
    lineno = 0
    for line in stream:
        lineno += 1
        if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        stripped = line.strip()
        if not stripped:
            continue
        try:
            try:
                obj = decode(stripped)
            except msgspec.DecodeError as exc:
                raise RecordError(f"invalid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise RecordError("line is not a JSON object")
            yield build.event(obj, stripped)
        except RecordError as exc:
            quarantine.reject(origin, f"line {lineno}", exc.reason, stripped)


def _json_get(obj: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(obj, dict):
            obj = obj.get(part if isinstance(part, str) else str(part))
        elif isinstance(obj, list) and isinstance(part, int) and part < len(obj):
            obj = obj[part]
        else:
            return None
        if obj is None:
            return None
    return obj


class _Builder:
    """Builds events from records (CSV rows or JSON objects) for one mapping and one input.

    Everything that does not depend on the record (constants, where each field is, which
    values are closed sets) is worked out once here, so the per-record loop stays short.
    """

    def __init__(self, m: Mapping, keys: dict[str, Any], json: bool = False) -> None:
        self.json = json
        time_spec = m.fields["time"]
        self.time_spec = time_spec
        self.times = _TimeParser(time_spec)
        self.time_key = keys.get(time_spec.column)
        self.constants = {name: spec.constant for name, spec in m.fields.items() if spec.constant is not None}
        # (field, spec, key, closed values when checked here, required)
        self.scalars = [
            (name, spec, keys.get(spec.column), _CLOSED.get(name) if spec.map is None else None, name in _REQUIRED)
            for name, spec in m.fields.items()
            if name != "time" and spec.constant is None
        ]
        self.patients = [(spec, keys.get(spec.column)) for spec in m.patients]
        self.categories = [(spec, keys.get(spec.column)) for spec in m.categories]
        self.derive_id = "id" not in m.fields

    def _get(self, record: Any, key: Any) -> Any:
        if key is None:
            return None
        if self.json:
            return _json_get(record, key)
        return record[key] if key < len(record) else None

    def event(self, record: Any, raw: bytes) -> AccessEvent:
        get = self._get
        time_raw = get(record, self.time_key)
        if time_raw is None or (type(time_raw) is str and not time_raw.strip()):
            raise RecordError(f"missing time: {self.time_spec.where()} is empty")
        values = dict(self.constants)
        values["time"] = self.times(time_raw)
        for name, spec, key, closed, required in self.scalars:
            value = _scalar(spec, get(record, key))
            if value is None:
                if required:
                    raise RecordError(f"missing {name}: {spec.where()} is empty")
                continue  # the AccessEvent default applies (outcome success, actor human)
            if closed is not None and value not in closed:
                lowered = value.lower()
                if lowered not in closed:
                    raise RecordError(f"unknown {name} value {value[:40]!r} in {spec.where()}")
                value = lowered
            values[name] = value
        patients: list[str] = []
        for spec, key in self.patients:
            for item in _items(spec, get(record, key)):
                ref = f"{spec.prefix}{spec.system}|{item}" if spec.system else f"{spec.prefix}{item}"
                if ref not in patients:
                    patients.append(ref)
        categories = 0
        for spec, key in self.categories:
            categories |= _categories(spec, get(record, key))
        for ref in patients:
            if ref.startswith("urn:oid:") and ref[8:].partition("|")[0] in NATIONAL_ID_OIDS:
                categories |= _NATIONAL_ID
        if self.derive_id:
            values["id"] = "sha1:" + hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        return AccessEvent(patients=tuple(patients), categories=categories, **values)


def _text(value: Any) -> str | None:
    """A record value as stripped text, or None when empty/absent."""
    if type(value) is str:
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise RecordError(f"expected a single value, found {type(value).__name__}")


def _scalar(spec: FieldSpec, value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return spec.default if spec.default is None else str(spec.default)
    if spec.map is not None:
        found = spec.map.get(text.casefold())
        if found is None:
            if spec.fallback is None:
                raise RecordError(f"unknown {spec.field} value {text[:40]!r} in {spec.where()}")
            found = spec.fallback
        return str(found)
    return spec.prefix + text if spec.prefix else text


def _items(spec: FieldSpec, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        out: list[str] = []
        for v in value:
            t = _text(v)
            if t is not None:
                out.append(t)
        return out
    text = _text(value)
    if text is None:
        return []
    if spec.separator:
        return [t for t in (p.strip() for p in text.split(spec.separator)) if t]
    return [text]


def _categories(spec: FieldSpec, value: Any) -> int:
    if spec.constant is not None:
        return int(spec.constant)
    items = _items(spec, value)
    if not items:
        return int(spec.default or 0)
    mask = 0
    for item in items:
        key = item.casefold()
        if spec.map is not None:
            found = spec.map.get(key)
            if found is None:
                if spec.fallback is None:
                    raise RecordError(f"unknown categories value {item[:40]!r} in {spec.where()}")
                found = spec.fallback
            mask |= int(found)
        else:
            try:
                mask |= category_mask([key])
            except KeyError:
                raise RecordError(f"unknown category {item[:40]!r} in {spec.where()}") from None
    return mask


# --- times --------------------------------------------------------------------------------

_DIRECTIVES = {
    "Y": r"(?P<Y>\d{4})",
    "m": r"(?P<m>\d{1,2})",
    "d": r"(?P<d>\d{1,2})",
    "H": r"(?P<H>\d{1,2})",
    "M": r"(?P<M>\d{1,2})",
    "S": r"(?P<S>\d{1,2})",
    "f": r"(?P<f>\d{1,6})",
    "y": r"(?P<y>\d{2})",
    "z": r"(?P<z>Z|[+-]\d{2}:?\d{2})",
}


def _compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """A regex for a strptime pattern made only of common numeric directives, else None.

    `datetime.strptime` costs ~10 µs a call; the regex path a fraction of that, and DPI
    exports hold millions of rows.
    """
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%":
            if i + 1 >= len(pattern):
                return None
            d = pattern[i + 1]
            if d == "%":
                out.append("%")
            elif d in _DIRECTIVES and d not in seen:
                out.append(_DIRECTIVES[d])
                seen.add(d)
            else:
                return None
            i += 2
            continue
        out.append(re.escape(c))
        i += 1
    if not {"Y", "y"} & seen or "m" not in seen or "d" not in seen:
        return None
    return re.compile("".join(out) + r"\Z")


class _TimeParser:
    """Turns one record's time value into ms since the epoch, per the mapping's time spec."""

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec
        self.format = spec.time_format
        self.zone: tzinfo = ZoneInfo(spec.timezone) if spec.timezone else UTC
        self.regex = _compile_pattern(self.format) if "%" in self.format else None
        self._offsets: dict[tuple[int, int, int, int], int] = {}
        self.parse: Callable[[Any], int] = {
            "iso": self._iso,
            "epoch_s": self._epoch_s,
            "epoch_ms": self._epoch_ms,
        }.get(self.format, self._pattern)

    def __call__(self, value: Any) -> int:
        try:
            return self.parse(value)
        except (ValueError, OverflowError, TypeError):
            text = str(value)[:40]
            raise RecordError(f"bad time {text!r} in {self.spec.where()} (format {self.format})") from None

    def _ms(self, dt: datetime) -> int:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.zone)
        offset = dt.utcoffset() or timedelta(0)
        seconds = calendar.timegm(dt.timetuple()) - int(offset.total_seconds())
        return seconds * 1000 + dt.microsecond // 1000

    def _iso(self, value: Any) -> int:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        return self._ms(datetime.fromisoformat(text))

    @staticmethod
    def _number(value: Any) -> float:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float):
            return value
        text = str(value).strip()
        return int(text) if text.isdigit() else float(text)

    def _epoch_s(self, value: Any) -> int:
        return round(self._number(value) * 1000)

    def _epoch_ms(self, value: Any) -> int:
        return round(self._number(value))

    def _pattern(self, value: Any) -> int:
        text = str(value).strip()
        if self.regex is None:
            return self._ms(datetime.strptime(text, self.format))
        m = self.regex.match(text)
        if m is None:
            raise ValueError(text)
        g = m.groupdict()
        year = int(g["Y"]) if g.get("Y") else 2000 + int(g["y"])
        frac = g.get("f") or ""
        dt = datetime(
            year,
            int(g["m"]),
            int(g["d"]),
            int(g.get("H") or 0),
            int(g.get("M") or 0),
            int(g.get("S") or 0),
            int(frac.ljust(6, "0")) if frac else 0,
        )
        z = g.get("z")
        if z:
            if z == "Z":
                dt = dt.replace(tzinfo=UTC)
            else:
                sign = -1 if z[0] == "-" else 1
                digits = z[1:].replace(":", "")
                dt = dt.replace(tzinfo=timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))))
            return self._ms(dt)
        # Local time: the zone's offset is looked up once per local hour (DST changes on
        # the hour in the zones hospitals use), not once per row.
        hour_key = (dt.year, dt.month, dt.day, dt.hour)
        offset = self._offsets.get(hour_key)
        if offset is None:
            delta = dt.replace(tzinfo=self.zone).utcoffset() or timedelta(0)
            offset = int(delta.total_seconds())
            if len(self._offsets) >= 4096:
                self._offsets.clear()
            self._offsets[hour_key] = offset
        return (calendar.timegm(dt.timetuple()) - offset) * 1000 + dt.microsecond // 1000
