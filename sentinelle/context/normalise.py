"""Small pure helpers: FHIR times, names and addresses for matching, reference forms.

Matching a staff member to their own patient record, or two patients to one household,
works on text typed by different people in different systems ("Le Gall" and "LE-GALL",
"12, rue de l'Église" and "12 RUE DE L EGLISE"); these helpers reduce such text to one
comparable form. Patient references arrive in many shapes (FHIR references, absolute
URLs, `system|value` tokens, HL7 v2 CX values from DICOM audit messages); `reference_forms`
lists the shapes a reference may be looked up under.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from sentinelle.errors import RecordError

__all__ = [
    "NATIONAL_ID_SYSTEMS",
    "fhir_time",
    "key_text",
    "local_reference",
    "reference_forms",
]

#: INS (NIR, NIA) identifier systems, and their test systems: an identifier in one of
#: these names the same person wherever it appears (Practitioner or Patient).
NATIONAL_ID_SYSTEMS = frozenset(
    {
        "urn:oid:1.2.250.1.213.1.4.8",  # INS-NIR
        "urn:oid:1.2.250.1.213.1.4.9",  # INS-NIA
        "urn:oid:1.2.250.1.213.1.4.10",  # INS-NIR test
        "urn:oid:1.2.250.1.213.1.4.11",  # INS-NIA test
    }
)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def key_text(text: str) -> str:
    """Text reduced for matching: no accents, case folded, only letters and digits.

    >>> key_text("  Le Gall-Hervé ")
    'legallherve'
    """
    if text.isascii():
        return _NON_ALNUM.sub("", text.lower())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub("", stripped.casefold().replace("ß", "ss"))


_DATE_ONLY = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def fhir_time(text: str, end: bool = False) -> int:
    """Milliseconds since the epoch of a FHIR date, dateTime or instant.

    Partial dates ("2024", "2024-03", "2024-03-05") stand for a whole period: as a start
    they mean its first millisecond, as an `end` its last, so that a period ending
    "2024-03-05" still covers that afternoon. Times without an offset are taken as UTC.

    >>> fhir_time("2024-03-05") == fhir_time("2024-03-05T00:00:00Z")
    True
    >>> fhir_time("2024-03-05", end=True) - fhir_time("2024-03-05")
    86399999
    >>> fhir_time("2024-03-05T10:00:00.5+01:00") - fhir_time("2024-03-05T09:00:00Z")
    500
    """
    if len(text) > 10:
        # The common case, a full dateTime: Python 3.11 reads every FHIR form of it.
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise RecordError(f"{text!r} is not a FHIR date or dateTime") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - _EPOCH) // _MS
    m = _DATE_ONLY.match(text.strip())
    if m is None:
        raise RecordError(f"{text!r} is not a FHIR date or dateTime")
    year = int(m.group(1))
    month = int(m.group(2) or 1)
    day = int(m.group(3) or 1)
    try:
        start = datetime(year, month, day, tzinfo=UTC)
    except ValueError as exc:
        raise RecordError(f"{text!r} is not a valid date: {exc}") from None
    ms = (start - _EPOCH) // _MS
    if not end:
        return ms
    if m.group(3):
        return ms + 86_400_000 - 1
    if m.group(2):
        return ms + calendar.monthrange(year, month)[1] * 86_400_000 - 1
    return (datetime(year + 1, 1, 1, tzinfo=UTC) - _EPOCH) // _MS - 1


def local_reference(ref: str) -> str:
    """A FHIR reference reduced to `Type/id`: no server base, no `_history` version.

    >>> local_reference("https://fhir.example.org/r4/Patient/42/_history/3")
    'Patient/42'
    >>> local_reference("urn:uuid:1234")
    'urn:uuid:1234'
    """
    slashes = ref.count("/")
    if slashes == 1 or slashes == 0 or ref.startswith(("urn:", "#")):
        return ref
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return ref


def _system_forms(system: str) -> list[str]:
    # An OID is written bare in HL7 v2 and DICOM, as `urn:oid:` in FHIR: try both.
    if re.fullmatch(r"[0-9]+(\.[0-9]+)+", system):
        return [f"urn:oid:{system}", system]
    if system.startswith("urn:oid:"):
        return [system, system[8:]]
    return [system]


def _token_forms(systems: list[str], value: str, known_systems: frozenset[str]) -> list[str]:
    forms: list[str] = []
    for system in systems:
        forms.extend(f"{s}|{value}" for s in _system_forms(system))
    # A value under a system the index knows but not with this value is an unknown
    # patient; under a system it has never seen (a local authority name), the bare
    # value is the best remaining guess and is indexed only when it is unambiguous.
    if not any(s in known_systems for system in systems for s in _system_forms(system)):
        forms.append(value)
    return forms


def _cx_forms(ref: str, known_systems: frozenset[str]) -> list[str]:
    # HL7 v2 CX: ID^check digit^scheme^assigning authority (namespace&universal id&type)^...
    fields = ref.split("^")
    value = fields[0].strip()
    if not value:
        return []
    systems: list[str] = []
    if len(fields) > 3 and fields[3]:
        authority = fields[3].split("&")
        universal = authority[1].strip() if len(authority) > 1 else ""
        if universal:
            systems.append(universal)
        if authority[0].strip():
            systems.append(authority[0].strip())
    return _token_forms(systems, value, known_systems)


def reference_forms(ref: str, known_systems: frozenset[str] = frozenset()) -> list[str]:
    """Other spellings under which a patient reference may be indexed, most precise first.

    Used only when the reference as given is not found: absolute URLs and versioned
    references become `Patient/<id>`, a search `Patient?identifier=s|v` becomes `s|v`,
    an HL7 v2 CX value `v^^^&OID&ISO` becomes `urn:oid:OID|v` then `OID|v`, and an OID
    system is tried with and without `urn:oid:`. The bare value comes last, and only when
    none of the systems is in `known_systems` (the systems the patient index holds).

    >>> reference_forms("1666093441321^^^&1.2.250.1.213.1.4.8&ISO")
    ['urn:oid:1.2.250.1.213.1.4.8|1666093441321', '1.2.250.1.213.1.4.8|1666093441321', '1666093441321']
    >>> reference_forms("12345^^^HOSP", frozenset({"urn:oid:1.2.250.1.999"}))
    ['HOSP|12345', '12345']
    """
    s = ref.strip()
    forms: list[str] = []
    if s != ref:
        forms.append(s)
    if "^" in s:
        return forms + _cx_forms(s, known_systems)
    if "?" in s:
        _, _, query = s.partition("?")
        for param in query.split("&"):
            name, _, val = param.partition("=")
            if name in ("identifier", "_id") and val:
                val = unquote(val)
                forms.append(val if name == "identifier" else f"Patient/{val}")
        return forms
    if "|" in s:
        system, _, value = s.partition("|")
        if value:
            forms.extend(_token_forms([system] if system else [], value, known_systems))
        return forms
    if "/" in s and not s.startswith("urn:"):
        local = local_reference(s)
        if local != s:
            forms.append(local)
    return forms
