"""Reads IHE ATNA / DICOM PS3.15 Annex A.5 audit messages (`<AuditMessage>` XML).

PACS, HL7 engines and IHE actors (dcm4chee, OpenHIM, XDS registries, the French ANS
profile over syslog) audit with this XML rather than FHIR. Both dialects are read: the
DICOM one (`csd-code`, `originalText`, `UserTypeCode`) and the older RFC 3881 one
(`code`, `displayName`). A file may hold one message, several concatenated (each with
its own XML declaration, as `cat *.xml` leaves them) or several inside any wrapping root.

Messages are cut out of the byte stream one at a time and parsed one at a time, rather
than with a single `iterparse` over the file: a concatenation of documents is not one
XML document, and one malformed message must cost only itself, not every message after
it. Memory is bounded by the largest message. Parsing is safe by construction: no DTD is
loaded, no entity is expanded, nothing is fetched; a document type declaration is
refused outright (XML bomb, external entity) and never handed to the parser.

`parse_message` turns one message into an `AccessEvent`; the syslog reader and a live
syslog listener use it too. An ATNA message has no identifier, so the event id is the
SHA-1 of the message's canonical XML (exclusive C14N, blank text dropped; `sha1:<hex>`
like the FHIR readers' derived ids): a re-sent message gets the same id and the ledger
stores it once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from lxml import etree

from sentinelle.errors import InputFormatError, RecordError
from sentinelle.events import AccessEvent, Action, ActorKind, Category, Outcome, parse_time
from sentinelle.sources.quarantine import Quarantine

__all__ = [
    "DTD_REFUSED",
    "MAX_MESSAGE_BYTES",
    "NATIONAL_ID_OIDS",
    "normalise_patient_id",
    "parse_message",
    "read",
    "split_messages",
]

#: Largest message accepted. A study transfer listing every instance UID stays far below.
MAX_MESSAGE_BYTES = 16 << 20

#: Reason given for any input holding a document type declaration.
DTD_REFUSED = (
    "document type declaration refused: DTDs and entities are never expanded (XML bomb or external entity risk)"
)

#: Assigning authorities of the French national health identifier (INS-NIR, INS-NIA and
#: their test authorities, INS-C): a patient named under one of them means the national
#: identifier itself was processed.
NATIONAL_ID_OIDS = frozenset(
    {
        "1.2.250.1.213.1.4.8",
        "1.2.250.1.213.1.4.9",
        "1.2.250.1.213.1.4.10",
        "1.2.250.1.213.1.4.11",
        "1.2.250.1.213.1.4.2",
    }
)

_BLOCK = 1 << 16
_START = re.compile(rb"<AuditMessage[\s>/]")
_END = re.compile(rb"</AuditMessage\s*>")
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)")
_XML_ENCODING = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_MARKUP = re.compile(rb"<\?.*?\?>|<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[^<>]*>", re.S)
_UNDECLARED_PREFIX = re.compile(r"Namespace prefix (\S+) (?:for \S+ )?on \S+ is not defined")
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

_local = threading.local()


def _parser() -> Any:
    # lxml parsers must not be shared between threads; one per thread, built once.
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            remove_blank_text=True,
        )
        _local.parser = parser
    return parser


# Category bits as plain ints: IntFlag arithmetic costs microseconds per operation.
_IDENTITY = int(Category.IDENTITY)
_NATIONAL_ID = int(Category.NATIONAL_ID)
_CLINICAL = int(Category.CLINICAL)
_DOCUMENT = int(Category.DOCUMENT)
_IMAGING = int(Category.IMAGING)
_BILLING = int(Category.BILLING)
_APPOINTMENT = int(Category.APPOINTMENT)
_PRESCRIPTION = int(Category.PRESCRIPTION)
_ALLERGY = int(Category.ALLERGY)
_LAB = int(Category.LAB)

# --- DICOM / RFC 3881 codes -------------------------------------------------------------

_PATIENT_RECORD = "110110"
_PROCEDURE_RECORD = "110111"
_ORDER_RECORD = "110109"
_QUERY = "110112"
_EXPORT = "110106"
_IMPORT = "110107"
_INSTANCES_ACCESSED = "110103"
_INSTANCES_TRANSFERRED = "110104"
_BEGIN_TRANSFERRING = "110102"
_STUDY_DELETED = "110105"
_USER_AUTHENTICATION = "110114"
_LOGIN = "110122"
_LOGOUT = "110123"
_EMERGENCY_OVERRIDE = "110127"
_AUDIT_LOG_USED = "110101"

_DESTINATION = "110152"
_SOURCE = "110153"
_APPLICATION_ROLES = frozenset({"110150", "110151", "110152", "110153", "110154", "110155"})
_CLIENT_ROLES = frozenset({"110150", "110151"})
_PERSON_ID_TYPE = "113871"
#: UserIDTypeCode values that name a machine or process: AE title, device name, node,
#: URI, device serial number, HL7 application|facility (dcm4chee).
_PROCESS_ID_TYPES = frozenset({"110119", "113877", "110182", "113872", "12", "HL7APP"})
_URI_ID_TYPE = "12"

_CRUD = {
    "C": Action.CREATE,
    "R": Action.READ,
    "U": Action.UPDATE,
    "D": Action.DELETE,
    "E": Action.READ,
}
_RECORD_EVENTS = frozenset({_PATIENT_RECORD, _PROCEDURE_RECORD, _ORDER_RECORD})
_TRANSFER_EVENTS = frozenset({_INSTANCES_ACCESSED, _INSTANCES_TRANSFERRED, _BEGIN_TRANSFERRING})
_FIXED_ACTIONS = {
    _QUERY: Action.SEARCH,
    _EXPORT: Action.EXPORT,
    _IMPORT: Action.CREATE,
    _STUDY_DELETED: Action.DELETE,
    _AUDIT_LOG_USED: Action.READ,
    _EMERGENCY_OVERRIDE: Action.BREAK_GLASS,
    "110113": Action.OTHER,  # Security Alert
    "110100": Action.OTHER,  # Application Activity
    "110108": Action.OTHER,  # Network Entry
}
_EVENT_CATEGORIES = {
    _INSTANCES_ACCESSED: _IMAGING,
    _INSTANCES_TRANSFERRED: _IMAGING,
    _BEGIN_TRANSFERRING: _IMAGING,
    _STUDY_DELETED: _IMAGING,
    _PROCEDURE_RECORD: _CLINICAL,
    _ORDER_RECORD: _CLINICAL,
    _PATIENT_RECORD: _IDENTITY,
}
#: IHE transactions (EventTypeCode / ParticipantObjectIDTypeCode) and what they touch.
_TRANSACTION_CATEGORIES = {
    **dict.fromkeys(
        (
            "ITI-8",
            "ITI-9",
            "ITI-21",
            "ITI-22",
            "ITI-30",
            "ITI-44",
            "ITI-45",
            "ITI-47",
            "ITI-55",
            "ITI-78",
            "ITI-83",
            "ITI-93",
            "ITI-104",
            "ITI-119",
        ),
        _IDENTITY,
    ),
    **dict.fromkeys(
        (
            "ITI-18",
            "ITI-38",
            "ITI-39",
            "ITI-41",
            "ITI-42",
            "ITI-43",
            "ITI-57",
            "ITI-61",
            "ITI-62",
            "ITI-63",
            "ITI-65",
            "ITI-66",
            "ITI-67",
            "ITI-68",
            "ITI-86",
            "ITI-92",
            "ITI-105",
            "ITI-106",
        ),
        _DOCUMENT,
    ),
    **dict.fromkeys(("RAD-16", "RAD-55", "RAD-68", "RAD-69", "RAD-75", "RAD-107"), _IMAGING),
}
#: ParticipantObjectIDTypeCode values (RFC 3881 table, DICOM CID 404) and their category.
_ID_TYPE_CATEGORIES = {
    "1": _IDENTITY,  # medical record number
    "2": _IDENTITY,  # patient number
    "5": _NATIONAL_ID,  # social security number
    "6": _BILLING,  # account number
    "7": _BILLING,  # guarantor number
    "8": _DOCUMENT,  # report name
    "9": _DOCUMENT,  # report number
    "110180": _IMAGING,  # Study Instance UID
    "110181": _IMAGING,  # SOP Class UID
    "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd": _DOCUMENT,  # XDS submission set
    "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1": _DOCUMENT,  # XDS document entry
}
#: ParticipantObjectTypeCodeRole values and their category (report, guarantor, schedule).
_ROLE_CATEGORIES = {"3": _DOCUMENT, "10": _BILLING, "18": _APPOINTMENT}
_QUERY_ROLE = "24"
_DICOM_OBJECT_DETAILS = frozenset({"SOPClass", "Accession", "MPPS", "ParticipantObjectContainsStudy"})

#: What a decoded query asks for, judged from words it contains (FHIR, QIDO, HL7 v2 QPD,
#: DICOM C-FIND query levels).
_QUERY_HINTS = (
    (
        re.compile(r"Patient|patients|PATIENT|PID\b|@PID|QPD\|IHE P|family=|given=|birthdate=|name="),
        _IDENTITY,
    ),
    (re.compile(r"studies|series|instances|Study|ModalitiesInStudy|STUDY|SERIES|IMAGE"), _IMAGING),
    (re.compile(r"DocumentReference|DocumentEntry|Binary|Composition|\$ihe"), _DOCUMENT),
    (re.compile(r"MedicationRequest|MedicationStatement|Prescription"), _PRESCRIPTION),
    (re.compile(r"AllergyIntolerance"), _ALLERGY),
    (re.compile(r"Observation|DiagnosticReport|Specimen"), _LAB),
    (re.compile(r"Appointment|Schedule|Slot"), _APPOINTMENT),
    (re.compile(r"1\.2\.250\.1\.213\.1\.4\.(?:8|9|10|11|2)\b"), _NATIONAL_ID),
)

#: EventOutcomeDescription wording that marks a refusal rather than a fault. "Connection
#: refused" is a fault, hence no bare "refused".
_DENIAL = re.compile(
    r"denied|\bdeny\b|forbidden|not authori[sz]ed|unauthori[sz]ed|permission|not permitted|"
    r"access control|privilege|not[- ]recognized|rejected|\b40[13]\b",
    re.IGNORECASE,
)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_IPV4_WITH_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d+$")


# --- public helpers ---------------------------------------------------------------------


def normalise_patient_id(value: str) -> str:
    """A patient reference from a `ParticipantObjectID`: HL7 v2 CX becomes `system|value`.

    The assigning authority's universal id names the system (`urn:oid:` for an ISO OID);
    a namespace that is itself a URI is used as the system; anything else (a bare id, a
    local authority name) is kept as written, which the care context knows how to read.

    >>> normalise_patient_id("1666093441321^^^&1.2.250.1.213.1.4.8&ISO")
    'urn:oid:1.2.250.1.213.1.4.8|1666093441321'
    >>> normalise_patient_id("4785133^^^UKL")
    '4785133^^^UKL'
    """
    raw = value.strip()
    if "^" not in raw:
        return raw
    fields = raw.split("^")
    ident = fields[0].strip()
    if not ident or len(fields) < 4 or not fields[3]:
        return raw
    authority = fields[3].split("&")
    namespace = authority[0].strip()
    universal = authority[1].strip() if len(authority) > 1 else ""
    kind = authority[2].strip().upper() if len(authority) > 2 else ""
    if universal:
        if kind in ("ISO", "") and re.fullmatch(r"[0-2](?:\.\d+)+", universal):
            return f"urn:oid:{universal}|{ident}"
        if kind == "UUID" and not universal.startswith("urn:"):
            return f"urn:uuid:{universal}|{ident}"
        return f"{universal}|{ident}"
    if "://" in namespace or namespace.startswith("urn:"):
        return f"{namespace}|{ident}"
    return raw


def parse_message(
    xml: bytes,
    origin: str = "",
    location: str = "",
    *,
    fallback_time: int | None = None,
    fallback_source: str = "",
) -> AccessEvent:
    """The access event of one `<AuditMessage>` document; raises `RecordError` when it cannot be one.

    `xml` may carry an XML declaration and a UTF-8 BOM. `fallback_time` (ms) and
    `fallback_source` stand in when the message has no EventDateTime or AuditSourceID,
    e.g. the syslog header's timestamp and host. `origin` and `location` are attached
    to a raised error as a note, for tracebacks; the reason itself stays short.
    """
    try:
        root = _parse(xml)
        return _normalise(root, fallback_time, fallback_source)
    except RecordError as exc:
        if origin or location:
            exc.add_note(f"in {origin} at {location}".strip())
        raise


def split_messages(stream: BinaryIO, origin: str, quarantine: Quarantine) -> Iterator[tuple[int, bytes]]:
    """Each `<AuditMessage>…</AuditMessage>` of a stream with its byte offset, in order.

    What lies between messages (XML declarations, a wrapping root's tags, comments) is
    skipped; text there, a message cut short, an oversized one or a DTD goes to the
    quarantine. When the input holds no message at all, raises `InputFormatError`. A
    message declared in a non-UTF-8 encoding comes back with that declaration prepended.
    """
    buf = b""
    base = 0  # stream offset of buf[0]
    pos = 0
    eof = False
    found = False
    encoding = ""
    leading: tuple[int, bytes] | None = None  # junk before the first message, reported once one is found
    saw_content = False

    def gap(chunk: bytes, offset: int) -> None:
        nonlocal encoding, leading, saw_content
        if not chunk:
            return
        if b"<?xml" in chunk:
            m = _XML_ENCODING.search(chunk)
            if m is not None:
                encoding = m.group(1).decode("ascii").lower()
        if _DTD.search(chunk):
            quarantine.reject(origin, f"offset {offset}", DTD_REFUSED, chunk)
            saw_content = True
            return
        text = _MARKUP.sub(b"", chunk).replace(b"\xef\xbb\xbf", b"").strip()
        if not text:
            return
        saw_content = True
        if found:
            quarantine.reject(origin, f"offset {offset}", "text outside any AuditMessage element", chunk)
        elif leading is None:
            leading = (offset, chunk)

    def more() -> bool:
        nonlocal buf, base, pos, eof
        if pos:
            buf = buf[pos:]
            base += pos
            pos = 0
        data = stream.read(_BLOCK)
        if not data:
            eof = True
            return False
        buf += data
        return True

    while True:
        m = _START.search(buf, pos)
        if m is None:
            if eof:
                gap(buf[pos:], base + pos)
                break
            # Keep what may be a partial start tag; end the gap after a whole tag so a
            # tag split across two reads is not taken for text.
            keep_from = max(pos, len(buf) - len(b"<AuditMessage "))
            cut = buf.rfind(b">", pos, keep_from) + 1
            if cut <= pos:
                # No whole tag: keep an open one (an XML declaration cut by the read) for
                # the next round, unless it is absurdly long; text before it is a gap.
                lt = buf.find(b"<", pos, keep_from)
                cut = keep_from if lt < 0 or keep_from - pos > _BLOCK * 16 else lt
            gap(buf[pos:cut], base + pos)
            pos = cut
            more()
            continue
        start = m.start()
        gap(buf[pos:start], base + pos)
        pos = start
        e = _END.search(buf, m.end())
        if e is None:
            if eof:
                quarantine.reject(
                    origin, f"offset {base + start}", "truncated AuditMessage: no closing tag", buf[start:]
                )
                found = True
                break
            if len(buf) - start > MAX_MESSAGE_BYTES:
                quarantine.reject(
                    origin,
                    f"offset {base + start}",
                    f"AuditMessage larger than {MAX_MESSAGE_BYTES} bytes",
                    buf[start : start + 4096],
                )
                found = True
                # Read on to its closing tag without keeping it.
                pos = m.end()
                while (e := _END.search(buf, pos)) is None:
                    pos = max(pos, len(buf) - 32)
                    if not more():
                        break
                if e is None:
                    break
                pos = e.end()
                continue
            more()
            continue
        nxt = _START.search(buf, m.end(), e.start())
        if nxt is not None:
            # A message opened and never closed before the next one began.
            quarantine.reject(
                origin,
                f"offset {base + start}",
                "truncated AuditMessage: the next message starts before it closes",
                buf[start : nxt.start()],
            )
            found = True
            pos = nxt.start()
            continue
        if not found:
            found = True
            if leading is not None:
                quarantine.reject(origin, f"offset {leading[0]}", "text outside any AuditMessage element", leading[1])
        message = buf[start : e.end()]
        if encoding and encoding not in _UTF8_NAMES:
            message = b'<?xml version="1.0" encoding="' + encoding.encode("ascii") + b'"?>' + message
        yield base + start, message
        pos = e.end()
    if not found and saw_content:
        raise InputFormatError(origin, "no <AuditMessage> element found: not a DICOM/ATNA audit file")


def read(stream: BinaryIO, origin: str, quarantine: Quarantine) -> Iterator[AccessEvent]:
    """Access events of a DICOM/ATNA audit XML stream; bad messages go to the quarantine."""
    for offset, message in split_messages(stream, origin, quarantine):
        try:
            yield parse_message(message)
        except RecordError as exc:
            quarantine.reject(origin, f"offset {offset}", exc.reason, message)


# --- parsing ----------------------------------------------------------------------------


def _parse(xml: bytes) -> Any:
    if b"<!" in xml and _DTD.search(xml):
        raise RecordError(DTD_REFUSED)
    parser = _parser()
    data = xml
    for _ in range(8):
        try:
            root = etree.fromstring(data, parser)
            break
        except etree.XMLSyntaxError as exc:
            msg = str(exc)
            m = _UNDECLARED_PREFIX.search(msg)
            if m is None or b"<AuditMessage" not in data:
                raise RecordError(f"malformed XML: {msg}") from None
            # Written inside a wrapper that declared the prefix (xsi:, typically), or
            # by a sender that forgot to: declare it on the message and parse again.
            prefix = m.group(1).encode()
            data = data.replace(b"<AuditMessage", b"<AuditMessage xmlns:" + prefix + b'="urn:sentinelle:undeclared"', 1)
        except ValueError as exc:  # e.g. an unsupported declared encoding
            raise RecordError(f"malformed XML: {exc}") from None
    else:
        raise RecordError("malformed XML: too many undeclared namespace prefixes")
    if not isinstance(root.tag, str):
        raise RecordError("malformed XML: no root element")
    if root.tag.startswith("{"):
        for el in root.iter():
            if isinstance(el.tag, str) and el.tag.startswith("{"):
                el.tag = el.tag.rpartition("}")[2]
    if root.tag != "AuditMessage":
        raise RecordError(f"root element is <{root.tag}>, not <AuditMessage>")
    return root


def _code(el: Any) -> str:
    return (el.get("csd-code") or el.get("code") or "").strip()


class _Participant:
    """One ActiveParticipant, reduced to what the normalisation reads."""

    __slots__ = (
        "address",
        "alt_id",
        "id_type",
        "person",
        "requestor",
        "roles",
        "user_id",
        "user_name",
        "user_type",
    )

    def __init__(self, el: Any) -> None:
        self.user_id: str = (el.get("UserID") or "").strip()
        self.alt_id: str = (el.get("AlternativeUserID") or "").strip()
        self.user_name: str = (el.get("UserName") or "").strip()
        flag = (el.get("UserIsRequestor") or "").strip().lower()
        self.requestor: bool | None = None if not flag else flag in ("true", "1")
        self.address: str = _address(el.get("NetworkAccessPointID") or "")
        self.user_type: str = (el.get("UserTypeCode") or "").strip()
        roles: list[str] = []
        id_type = ""
        for child in el:
            tag = child.tag
            if tag == "RoleIDCode":
                roles.append(_code(child))
            elif tag == "UserIDTypeCode":
                id_type = _code(child)
        self.roles: tuple[str, ...] = tuple(roles)
        self.id_type: str = id_type
        self.person: bool = self._person()

    @property
    def name(self) -> str:
        return self.user_id or self.alt_id or self.user_name

    def _person(self) -> bool:
        """Whether this participant is a human, from the most explicit evidence there is."""
        if self.user_type == "1":  # DICOM UserTypeCode: 1 person, 2 process
            return True
        if self.user_type == "2":
            return False
        if self.id_type == _PERSON_ID_TYPE:
            return True
        if self.id_type in _PROCESS_ID_TYPES:
            return False
        if self.user_name:
            return True
        if any(role in _APPLICATION_ROLES for role in self.roles):
            return False
        uid = self.user_id
        if "@" in uid:
            return True
        if "|" in uid or "://" in uid or uid.startswith("/") or _looks_like_address(uid):
            return False
        # A bare process id as alternative id marks a process (DICOM puts the PID there).
        return not self.alt_id.isdigit()


def _looks_like_address(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:]+(?:%\w+)?", text)) and (
        text.count(".") == 3 or text.count(":") >= 2
    )


def _address(raw: str) -> str:
    # Java writes socket addresses as "/127.0.0.1:54404": keep the host, not the port.
    text = raw.strip().lstrip("/")
    m = _IPV4_WITH_PORT.match(text)
    return m.group(1) if m else text


def _decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode("".join(text.split()), validate=False)
    except (binascii.Error, ValueError):
        return None


def _query_text(raw: bytes, encoding: str) -> str | None:
    try:
        text = raw.decode(encoding or "utf-8")
    except (UnicodeDecodeError, LookupError):
        return None
    # A binary DICOM C-FIND dataset is not text: keep the base64 form instead.
    if len(_CONTROL.findall(text)) > len(text) // 10:
        return None
    return text


def _normalise(root: Any, fallback_time: int | None, fallback_source: str) -> AccessEvent:
    event_el = None
    participants: list[_Participant] = []
    source = ""
    objects: list[Any] = []
    for child in root:
        tag = child.tag
        if tag == "EventIdentification":
            event_el = child
        elif tag == "ActiveParticipant":
            participants.append(_Participant(child))
        elif tag == "AuditSourceIdentification":
            if not source:
                source = (child.get("AuditSourceID") or child.get("AuditEnterpriseSiteID") or "").strip()
        elif tag == "ParticipantObjectIdentification":
            objects.append(child)
    if event_el is None:
        raise RecordError("no EventIdentification element")

    # Event: code, types, outcome, time.
    event_code = ""
    type_codes: list[str] = []
    description = ""
    purpose = ""
    for child in event_el:
        tag = child.tag
        if tag == "EventID":
            event_code = _code(child)
        elif tag == "EventTypeCode":
            type_codes.append(_code(child))
        elif tag == "EventOutcomeDescription":
            description = (child.text or "").strip()
        elif tag == "PurposeOfUse" and not purpose:
            purpose = _code(child) or (child.get("originalText") or child.get("displayName") or "")
    if not event_code:
        raise RecordError("EventIdentification has no EventID code")
    when = event_el.get("EventDateTime")
    if when:
        try:
            time = parse_time(when)
        except ValueError:
            raise RecordError(f"bad EventDateTime {when[:40]!r}") from None
    elif fallback_time is not None:
        time = fallback_time
    else:
        raise RecordError("no EventDateTime")
    indicator = (event_el.get("EventOutcomeIndicator") or "0").strip()
    action_code = (event_el.get("EventActionCode") or "").strip().upper()

    # Who: the requesting participant, preferring a person when several request.
    if not participants:
        raise RecordError("no ActiveParticipant")
    requestors = [p for p in participants if p.requestor is True] or [p for p in participants if p.requestor is None]
    if not requestors:
        raise RecordError('no requesting participant (UserIsRequestor="true")')
    user = next((p for p in requestors if p.person), requestors[0])
    account = user.name
    if account.startswith("/") and _IPV4_WITH_PORT.match(account[1:]):
        account = _address(account)  # a socket address: the port changes with each connection
    if not account:
        raise RecordError("the requesting participant has no UserID")
    human = user.person

    action = _action(event_code, type_codes, action_code, user, participants)
    outcome = _outcome(indicator, description)
    if action == Action.LOGIN and outcome != Outcome.SUCCESS:
        action = Action.LOGIN_FAILED
        if outcome == Outcome.ERROR and indicator == "4":
            outcome = Outcome.DENIED

    client = _client(user, human, participants, action, account, source)
    address = _requestor_address(user, requestors, participants, action)

    patients: list[str] = []
    categories = _EVENT_CATEGORIES.get(event_code, 0)
    for code in type_codes:
        categories |= _TRANSACTION_CATEGORIES.get(code, 0)
    query = ""
    query_from_role = False  # the role-24 (Query) object's query wins over any other
    for obj in objects:
        obj_categories, obj_query = _object(obj, patients)
        categories |= obj_categories
        if obj_query is not None and not query_from_role:
            is_query_role = obj.get("ParticipantObjectTypeCodeRole") == _QUERY_ROLE
            if not query or is_query_role:
                query = obj_query
                query_from_role = is_query_role

    canonical = etree.tostring(root, method="c14n", exclusive=True)
    return AccessEvent(
        id="sha1:" + hashlib.sha1(canonical, usedforsecurity=False).hexdigest(),
        time=time,
        account=account,
        action=action,
        actor_kind=ActorKind.HUMAN if human else ActorKind.APPLICATION,
        outcome=outcome,
        patients=tuple(patients),
        categories=categories,
        client=client,
        address=address,
        source=source or fallback_source,
        query=query,
        purpose=purpose,
    )


def _action(
    event_code: str,
    type_codes: list[str],
    action_code: str,
    user: _Participant,
    participants: list[_Participant],
) -> str:
    if _EMERGENCY_OVERRIDE in type_codes:
        return Action.BREAK_GLASS
    if event_code == _USER_AUTHENTICATION or event_code in (_LOGIN, _LOGOUT):
        if event_code == _LOGOUT or (_LOGOUT in type_codes and _LOGIN not in type_codes):
            return Action.LOGOUT
        return Action.LOGIN
    fixed = _FIXED_ACTIONS.get(event_code)
    if fixed is not None:
        return fixed
    if event_code in _TRANSFER_EVENTS:
        if _DESTINATION in user.roles:
            return Action.READ  # the requestor receives the instances (C-GET, WADO)
        if _SOURCE in user.roles:
            return _CRUD.get(action_code, Action.READ)  # the requestor stores into the system
        # Requested by one party, sent to another (C-MOVE, REST export): data leaves.
        for p in participants:
            if p is not user and _DESTINATION in p.roles and p.name != user.name:
                return Action.EXPORT
        return Action.READ if event_code != _INSTANCES_ACCESSED else _CRUD.get(action_code, Action.READ)
    if event_code in _RECORD_EVENTS:
        return _CRUD.get(action_code, Action.READ)
    if action_code == "E":
        return Action.OTHER
    return _CRUD.get(action_code, Action.OTHER)


def _client(
    user: _Participant, human: bool, participants: list[_Participant], action: str, account: str, source: str
) -> str:
    """The software the request came through, when the message names one apart from the user.

    In order: another requesting application (a person beside their application); an
    Application or Application Launcher role; for a person, the participant on the
    requestor's side as BALP reads it (Source in searches and writes, Destination in
    reads and exports); for a person, a device or AE-titled process that is not the
    audited system itself. A request URI (dcm4chee's REST endpoint) is never a client.
    """
    candidates = [
        p
        for p in participants
        if p is not user and p.name and p.name != account and not p.person and p.id_type != _URI_ID_TYPE
    ]
    for p in candidates:
        if p.requestor is True:
            return p.name
    for p in candidates:
        if set(p.roles) & _CLIENT_ROLES:
            return p.name
    if not human:
        return ""
    side = _DESTINATION if action in (Action.READ, Action.EXPORT) else _SOURCE
    for p in candidates:
        if side in p.roles:
            return p.name
    for p in candidates:
        if not p.roles and p.name != source and p.id_type in _PROCESS_ID_TYPES:
            return p.name
    return ""


def _outcome(indicator: str, description: str) -> str:
    if indicator in ("", "0"):
        return Outcome.SUCCESS
    if indicator == "4" and _DENIAL.search(description):
        return Outcome.DENIED
    return Outcome.ERROR


def _requestor_address(
    user: _Participant, requestors: list[_Participant], participants: list[_Participant], action: str
) -> str:
    """Network address of the requester.

    The requestor's own network access point is the best evidence (the user's workstation
    or the calling node in every dcm4chee sample); a person beside their application has
    none, so then another requestor's, then the participant on the requestor's side as
    BALP reads it: the requestor's own role when it has one, else the Destination in reads
    and exports (data flows to the client) and the Source in searches and writes.
    """
    if user.address:
        return user.address
    for p in requestors:
        if p.address:
            return p.address
    if _DESTINATION in user.roles:
        side = _DESTINATION
    elif _SOURCE in user.roles:
        side = _SOURCE
    else:
        side = _DESTINATION if action in (Action.READ, Action.EXPORT) else _SOURCE
    for p in participants:
        if side in p.roles and p.address:
            return p.address
    return ""


def _object(obj: Any, patients: list[str]) -> tuple[int, str | None]:
    """Categories of one ParticipantObjectIdentification and its decoded query, if any.

    Adds the object's patient, if it is one, to `patients`.
    """
    type_code = obj.get("ParticipantObjectTypeCode")
    role = obj.get("ParticipantObjectTypeCodeRole")
    id_type = ""
    imaging = False
    query_el = None
    encoding = ""
    for child in obj:
        tag = child.tag
        if tag == "ParticipantObjectIDTypeCode":
            id_type = _code(child)
        elif tag == "ParticipantObjectQuery":
            query_el = child
        elif tag == "ParticipantObjectDetail":
            if child.get("type") == "QueryEncoding":
                raw_enc = _decode_b64(child.get("value") or "")
                encoding = raw_enc.decode("ascii", "ignore").strip() if raw_enc else ""
        elif tag == "ParticipantObjectDescription" or tag in _DICOM_OBJECT_DETAILS:
            imaging = True
    categories = 0
    if (type_code == "1" and role == "1") or id_type == "2":
        categories = _IDENTITY
        raw = (obj.get("ParticipantObjectID") or "").strip()
        if raw:
            ref = normalise_patient_id(raw)
            if ref not in patients:
                patients.append(ref)
            if ref.startswith("urn:oid:") and ref[8:].partition("|")[0] in NATIONAL_ID_OIDS:
                categories |= _NATIONAL_ID
    else:
        categories = _ID_TYPE_CATEGORIES.get(id_type, 0) | _TRANSACTION_CATEGORIES.get(id_type, 0)
        if role in _ROLE_CATEGORIES and id_type not in ("110180", "110181"):
            categories |= _ROLE_CATEGORIES[role]
        if imaging:
            categories |= _IMAGING
    if query_el is None:
        return categories, None
    b64 = "".join((query_el.text or "").split())
    if not b64:
        return categories, None
    raw_query = _decode_b64(b64)
    text = _query_text(raw_query, encoding) if raw_query is not None else None
    # Not text (a binary DICOM dataset): keep base64, judge from its printable parts.
    judged = text if text is not None else (raw_query or b"").decode("latin-1")
    for pattern, category in _QUERY_HINTS:
        if pattern.search(judged):
            categories |= category
    return categories, text if text is not None else b64
