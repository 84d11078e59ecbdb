"""Shared normalisation of FHIR AuditEvents (R4, R5, STU3, IHE BALP) into `AccessEvent`s.

The JSON and XML readers both decode into the typed shapes defined here and hand them to
one `Normaliser`, so the two formats cannot drift apart. The rules (who is the account,
which agent holds the client's address, which entities are patients, which data categories
a resource type reveals) follow HL7 FHIR AuditEvent and IHE BALP 1.1.4; the choices where
the standards leave room are written next to the code that makes them.

Speed matters here (millions of events per scan), so the JSON reader decodes the parts
of an event that repeat heavily from one event to the next (agents, source, event type)
as raw bytes and normalises each distinct value once (`Normaliser.from_lazy`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Final

import msgspec
from msgspec import Raw, Struct

from sentinelle.errors import RecordError
from sentinelle.events import AccessEvent, Action, ActorKind, Category, Outcome, parse_time

try:  # the compiled fast path (simdjson); optional, see setup.py and docs/reader.md
    from sentinelle.sources import _balp
except ImportError:  # pragma: no cover - exercised where libsimdjson is absent
    _balp = None  # type: ignore[assignment]

#: Whether NDJSON lines go through the compiled fast path (`_balp`): built, and not turned
#: off with SENTINELLE_FAST=0 (the tests compare both paths this way).
FAST_PATH = _balp is not None and os.environ.get("SENTINELLE_FAST", "1") != "0"

__all__ = [
    "AUDIT_ENTITY_TYPE",
    "OBJECT_ROLE",
    "RESOURCE_CATEGORIES",
    "Agent",
    "AuditEvent",
    "AuditEventLazy",
    "Coding",
    "Entity",
    "Normaliser",
    "Reference",
    "actors_of",
    "fast_time",
    "kind_of",
    "outcome_of",
    "query_categories",
    "stable_id",
    "touched_fast",
    "touched_of",
]

# --------------------------------------------------------------------------------------
# Typed shapes. Every field is optional and unknown fields are ignored, so one set of
# structs reads R4, R5 and STU3: where a version changed an element's type (R4 Coding vs R5
# CodeableConcept, R4 outcome code vs R5 outcome object) the struct accepts both.
# --------------------------------------------------------------------------------------


class Coding(Struct, gc=False):
    """A Coding, or a CodeableConcept (its `coding` list and `text`): R4 and R5 differ here."""

    system: str | None = None
    code: str | None = None
    display: str | None = None
    coding: list[Coding] | None = None
    text: str | None = None


class Identifier(Struct, gc=False):
    """A FHIR Identifier (only the parts Sentinelle reads)."""

    system: str | None = None
    value: str | None = None
    type: Coding | None = None


class Reference(Struct, gc=False):
    """A FHIR Reference: literal reference, logical identifier or display text."""

    reference: str | None = None
    type: str | None = None
    identifier: Identifier | None = None
    display: str | None = None


class Network(Struct, gc=False):
    """R4/STU3 `agent.network`."""

    address: str | None = None
    type: str | None = None


class Extension(Struct, gc=False):
    """A FHIR extension with the value types audit producers use for sessions and assurance."""

    url: str | None = None
    valueString: str | None = None
    valueCode: str | None = None
    valueUri: str | None = None
    valueId: str | None = None
    valueCoding: Coding | None = None
    valueCodeableConcept: Coding | None = None
    valueIdentifier: Identifier | None = None
    extension: list[Extension] | None = None


class Agent(Struct, gc=False):
    """`AuditEvent.agent` (R4/R5), with STU3's `userId` and `reference`."""

    type: Coding | None = None
    role: list[Coding] | None = None
    who: Reference | None = None
    altId: str | None = None
    name: str | None = None
    requestor: bool | None = None
    network: Network | None = None
    networkString: str | None = None
    networkUri: str | None = None
    networkReference: Reference | None = None
    policy: list[str] | None = None
    purposeOfUse: list[Coding] | None = None
    authorization: list[Coding] | None = None
    extension: list[Extension] | None = None
    userId: Identifier | None = None
    reference: Reference | None = None


class Detail(Struct, gc=False):
    """`AuditEvent.entity.detail`: R4 types it with a string, R5 with a CodeableConcept."""

    type: str | Coding | None = None
    valueString: str | None = None
    valueBase64Binary: str | None = None


class Entity(Struct, gc=False):
    """`AuditEvent.entity` (R4/R5), with STU3's `identifier` and `reference`."""

    what: Reference | None = None
    type: Coding | None = None
    role: Coding | None = None
    name: str | None = None
    description: str | None = None
    query: str | None = None
    detail: list[Detail] | None = None
    identifier: Identifier | None = None
    reference: Reference | None = None


class Source(Struct, gc=False):
    """`AuditEvent.source`: R4 `site` is a string, R5 a Reference; STU3 has `identifier`."""

    site: str | Reference | None = None
    observer: Reference | None = None
    identifier: Identifier | None = None
    type: list[Coding] | None = None


class Outcome5(Struct, gc=False):
    """R5 `AuditEvent.outcome` (R4 has a bare code and `outcomeDesc`)."""

    code: Coding | None = None
    detail: list[Coding] | None = None


class Period(Struct, gc=False):
    start: str | None = None
    end: str | None = None


class AuditEvent(Struct, gc=False):
    """The whole AuditEvent, fully typed: the reference shape, used by XML and slow paths."""

    resourceType: str | None = None
    id: str | None = None
    type: Coding | None = None
    subtype: list[Coding] | None = None
    category: list[Coding] | None = None
    code: Coding | None = None
    action: str | None = None
    period: Period | None = None
    occurredPeriod: Period | None = None
    occurredDateTime: str | None = None
    recorded: str | None = None
    outcome: str | Outcome5 | None = None
    outcomeDesc: str | None = None
    purposeOfEvent: list[Coding] | None = None
    authorization: list[Coding] | None = None
    patient: Reference | None = None
    agent: list[Agent] | None = None
    source: Source | None = None
    entity: list[Entity] | None = None


_EMPTY = Raw(b"")


class AuditEventLazy(Struct, gc=False):
    """AuditEvent with the heavily repeated parts left as raw JSON, for memoised decoding.

    Agents, source, type/subtype/category/code and purpose repeat across thousands of events
    (the same user on the same workstation through the same application), so they are kept
    as bytes and normalised once per distinct value. Entities differ per event and are typed.
    """

    resourceType: str | None = None
    id: str | None = None
    type: Raw = _EMPTY
    subtype: Raw = _EMPTY
    category: Raw = _EMPTY
    code: Raw = _EMPTY
    action: str | None = None
    period: Period | None = None
    occurredPeriod: Period | None = None
    occurredDateTime: str | None = None
    recorded: str | None = None
    outcome: Raw = _EMPTY  # R4 code or R5 object
    outcomeDesc: str | None = None
    purposeOfEvent: Raw = _EMPTY
    authorization: Raw = _EMPTY
    patient: Reference | None = None
    agent: Raw = _EMPTY
    source: Raw = _EMPTY
    entity: list[Entity] | None = None


_dec_coding = msgspec.json.Decoder(Coding)
_dec_outcome = msgspec.json.Decoder(str | Outcome5 | None)
_dec_codings = msgspec.json.Decoder(list[Coding])
_dec_agent = msgspec.json.Decoder(Agent)
_dec_raws = msgspec.json.Decoder(list[Raw])
_dec_source = msgspec.json.Decoder(Source)

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL: Final = "http://hl7.org/fhir/restful-interaction"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
AUDIT_ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
CH_ATC_EVENT: Final = "urn:oid:2.16.756.5.30.1.127.3.10.7"

#: DICOM participant role codes of network nodes (not people).
APP = "110150"  # Application
LAUNCHER = "110151"  # Application Launcher
DESTINATION = "110152"  # Destination Role ID
SOURCE = "110153"  # Source Role ID
NODE_CODES: Final = frozenset({APP, LAUNCHER, DESTINATION, SOURCE, "110154", "110155"})

_RESTFUL_ACTIONS: Final = {
    "read": Action.READ,
    "vread": Action.READ,
    "history": Action.READ,
    "history-instance": Action.READ,
    "history-type": Action.READ,
    "history-system": Action.READ,
    "search": Action.SEARCH,
    "search-type": Action.SEARCH,
    "search-system": Action.SEARCH,
    "search-compartment": Action.SEARCH,
    "create": Action.CREATE,
    "update": Action.UPDATE,
    "patch": Action.UPDATE,
    "delete": Action.DELETE,
    "capabilities": Action.OTHER,
}

#: DICOM audit event (type) and subtype codes. None: decided by the `action` code.
_DICOM_ACTIONS: Final[dict[str, str | None]] = {
    "110100": Action.OTHER,  # Application Activity
    "110101": Action.READ,  # Audit Log Used
    "110102": Action.OTHER,  # Begin Transferring DICOM Instances
    "110103": None,  # DICOM Instances Accessed: read unless the action code says C/U/D
    "110104": None,  # DICOM Instances Transferred
    "110105": Action.DELETE,  # DICOM Study Deleted
    "110106": Action.EXPORT,  # Export
    "110107": Action.CREATE,  # Import
    "110108": Action.OTHER,  # Network Entry
    "110109": None,  # Order Record
    "110110": None,  # Patient Record
    "110111": None,  # Procedure Record
    "110112": Action.SEARCH,  # Query
    "110113": Action.OTHER,  # Security Alert
    "110114": Action.LOGIN,  # User Authentication
    "110122": Action.LOGIN,  # Login (subtype of 110114)
    "110123": Action.LOGOUT,  # Logout (subtype of 110114)
    "110127": Action.BREAK_GLASS,  # Emergency Override Started
    "110138": Action.OTHER,  # Emergency Override Stopped
}
#: Codes whose action follows the `action` element; read when it says nothing more.
_BY_ACTION_CODE_DEFAULT_READ: Final = frozenset({"110103", "110104"})

_ACTION_CODES: Final = {
    "C": Action.CREATE,
    "R": Action.READ,
    "U": Action.UPDATE,
    "D": Action.DELETE,
}

_READ_LIKE: Final = frozenset({Action.READ, Action.EXPORT, Action.PRINT, Action.BREAK_GLASS})
#: In BALP the client is the Source (110153) of searches, creates and updates (the request
#: flows from it) and the Destination (110152) of reads.
_WRITE_LIKE: Final = frozenset({Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE})

_BREAK_GLASS_PURPOSES: Final = frozenset({"BTG", "EMER"})

_I, _C, _N = int(Category.IDENTITY), int(Category.CONTACT), int(Category.NATIONAL_ID)
_CLIN, _RX, _LAB, _DOC, _IMG, _BILL = (
    int(Category.CLINICAL),
    int(Category.PRESCRIPTION),
    int(Category.LAB),
    int(Category.DOCUMENT),
    int(Category.IMAGING),
    int(Category.BILLING),
)

#: FHIR resource type -> data categories its content reveals.
RESOURCE_CATEGORIES: Final[dict[str, int]] = {
    "Patient": _I | _C,
    "RelatedPerson": _I | _C,
    "Person": _I | _C,
    "Appointment": int(Category.APPOINTMENT | Category.SPECIALTY),
    "AppointmentResponse": int(Category.APPOINTMENT),
    "Schedule": int(Category.APPOINTMENT),
    "Slot": int(Category.APPOINTMENT),
    "Encounter": _CLIN,
    "EpisodeOfCare": _CLIN,
    "Condition": _CLIN,
    "Observation": _CLIN,
    "ClinicalImpression": _CLIN,
    "Procedure": _CLIN,
    "CarePlan": _CLIN,
    "CareTeam": _CLIN,
    "Composition": _CLIN,
    "ServiceRequest": _CLIN,
    "Immunization": _CLIN,
    "FamilyMemberHistory": _CLIN,
    "QuestionnaireResponse": _CLIN,
    "Goal": _CLIN,
    "Flag": _CLIN,
    "RiskAssessment": _CLIN,
    "DetectedIssue": _CLIN,
    "AdverseEvent": _CLIN,
    "BodyStructure": _CLIN,
    "NutritionOrder": _CLIN,
    "DeviceRequest": _CLIN,
    "Communication": _CLIN,
    "MedicationRequest": _RX,
    "MedicationStatement": _RX,
    "MedicationDispense": _RX,
    "MedicationAdministration": _RX,
    "MedicationUsage": _RX,  # R5 name of MedicationStatement
    "AllergyIntolerance": int(Category.ALLERGY),
    "DiagnosticReport": _LAB,
    "Specimen": _LAB,
    "MolecularSequence": _LAB,
    "DocumentReference": _DOC,
    "DocumentManifest": _DOC,
    "Binary": _DOC,
    "Bundle": _DOC,
    "ImagingStudy": _IMG,
    "ImagingSelection": _IMG,
    "Media": _IMG,
    "Coverage": _BILL,
    "Claim": _BILL,
    "ClaimResponse": _BILL,
    "Account": _BILL,
    "Invoice": _BILL,
    "ChargeItem": _BILL,
    "ExplanationOfBenefit": _BILL,
    "PaymentNotice": _BILL,
}

#: DICOM entity (participant object) type codes for studies and instances.
_DICOM_IMAGING: Final = frozenset({"110180", "110181"})
_XDS_UNIQUE_ID: Final = "urn:ihe:iti:xds:2013:uniqueId"

#: French INS OIDs: NIR, NIA and their test counterparts. Their presence means the
#: national health identifier (based on the social-security number) was touched.
_INS_RE: Final = re.compile(r"1\.2\.250\.1\.213\.1\.4\.(?:8|9|10|11)(?!\d)")

#: The resource type a RESTful search names: `GET /fhir/Observation?...`, `Encounter?...`,
#: `POST /r4/Observation/_search` (the last path segment before the parameters).
_SEARCH_TYPE_RE: Final = re.compile(r"(?:^|[/\s])([A-Z][A-Za-z]{2,40})(?:/_search)?(?=[?#\s]|$)")
#: Types a system-level search asks for: `_type=Observation,Condition`.
_TYPE_PARAM_RE: Final = re.compile(r"(?:^|[?&\s])_type=([A-Za-z,]+|[A-Za-z%2C]+)")

_DENIAL_RE: Final = re.compile(
    r"den(?:y|ied|ial)|forbidden|unauthori[sz]ed|not authori[sz]ed|permission|refus|interdit|"
    r"non autoris|\b40[13]\b",
    re.IGNORECASE,
)

_OUTCOME_CODES: Final = {
    "0": Outcome.SUCCESS,
    "success": Outcome.SUCCESS,
    "4": Outcome.ERROR,
    "minor": Outcome.ERROR,
    "8": Outcome.ERROR,
    "serious": Outcome.ERROR,
    "12": Outcome.ERROR,
    "major": Outcome.ERROR,
}

_HIGH_ASSURANCE: Final = re.compile(
    r"mfa|2fa|multi[-_ ]?factor|otp|totp|aal[23]|loaap[34]|loa[34]|substantial|high|e-?cps|"
    r"prosanteconnect|pro sant[eé] connect",
    re.IGNORECASE,
)
_CARD_ASSURANCE: Final = re.compile(r"x\.?509|smart ?card|\bcps\b|carte|card", re.IGNORECASE)

# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def codes_of(c: Coding | None) -> Iterator[tuple[str, str]]:
    """(system, code) pairs of a Coding or of a CodeableConcept's codings."""
    if c is None:
        return
    if c.code is not None:
        yield (c.system or "", c.code)
    if c.coding:
        for d in c.coding:
            if d.code is not None:
                yield (d.system or "", d.code)


def _texts_of(c: Coding | None) -> Iterator[str]:
    """Codes, displays and text of a Coding/CodeableConcept, for keyword matching."""
    if c is None:
        return
    for s in (c.code, c.display, c.text):
        if s:
            yield s
    if c.coding:
        for d in c.coding:
            for s in (d.code, d.display):
                if s:
                    yield s


def stable_id(raw: bytes) -> str:
    """Id derived from a record's bytes, so re-reading the same record gives the same id."""
    return "sha1:" + hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def ref_type(ref: str) -> tuple[str, str]:
    """(resource type, relative reference) of a literal reference; type "" when unknown.

    Handles `Type/id`, `Type/id/_history/n`, absolute URLs `.../Type/id` and contained
    references `#id` (type unknown).
    """
    if not ref or ref[0] == "#" or ref.startswith(("urn:uuid:", "urn:oid:")):
        return "", ref
    cut = ref.find("/_history")
    if cut >= 0:
        ref = ref[:cut]
    parts = ref.split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        rtype = parts[-2]
        return rtype, f"{rtype}/{parts[-1]}" if len(parts) > 2 else ref
    return "", ref


_fromisoformat = datetime.fromisoformat


def fast_time(text: str) -> int:
    """Milliseconds since the epoch of a FHIR instant: `parse_time` without its extra steps.

    Measured on this project's machines: `datetime.fromisoformat` (C, and it takes "Z"
    since Python 3.11) with `timestamp()` costs ~0.3 µs, less than a hand-written parser
    with a cache of minute prefixes (~0.8 µs). Same rounding as `parse_time`; naive times
    are UTC. Raises ValueError when the text is not a date-time.
    """
    try:
        dt = _fromisoformat(text)
    except ValueError:
        return parse_time(text)  # lower-case "z", surrounding spaces; raises otherwise
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts = dt.timestamp()
    return int(ts * 1000 + (0.5 if ts >= 0 else -0.5))


def _decode_query(q: str) -> str:
    """Text of a base64 `entity.query`; the raw value when it is not valid base64."""
    try:
        data = base64.b64decode(q, validate=True)
    except (binascii.Error, ValueError):
        return q
    return data.decode("utf-8", "replace")


_query_cache: dict[str, tuple[str, int]] = {}


def query_categories(text: str) -> int:
    """Data categories a search reveals: the searched type, `_type` values, lab, INS.

    An Observation search with `category=laboratory` is a lab search rather than a
    clinical one; a search whose text names an INS OID (an identifier search on the
    national health identifier) adds `national_id`. The part before `?` repeats across
    events and is cached.
    """
    head = text.partition("?")[0]
    found = _query_cache.get(head)
    if found is None:
        # The first path segment that names a resource type Sentinelle knows (the HTTP
        # method and host come first and are passed over).
        rtype = next(
            (
                m.group(1)
                for m in _SEARCH_TYPE_RE.finditer(head if "?" in text else text)
                if m.group(1) in RESOURCE_CATEGORIES
            ),
            "",
        )
        found = (rtype, RESOURCE_CATEGORIES.get(rtype, 0))
        if len(_query_cache) > 4096:
            _query_cache.clear()
        _query_cache[head] = found
    rtype, mask = found
    if "_type=" in text:
        for m in _TYPE_PARAM_RE.finditer(text):
            for name in m.group(1).replace("%2C", ",").split(","):
                mask |= RESOURCE_CATEGORIES.get(name, 0)
    if "laboratory" in text and "Observation" in text:
        mask |= _LAB
        if rtype == "Observation":
            mask &= ~_CLIN
    if "1.2.250.1.213.1.4." in text and _INS_RE.search(text):
        mask |= _N
    return mask


# --------------------------------------------------------------------------------------
# Agent-level facts, computed once per distinct (agents, source) pair
# --------------------------------------------------------------------------------------


class Actors(Struct, gc=False):
    """What the agents and source of an event say: who acted, through what, from where."""

    account: str
    actor_kind: str
    client: str
    source: str
    auth: str
    session: str
    purpose: str
    addr_read: str  # client address when the event is a read (client = Destination)
    addr_write: str  # ... a search/create/update/delete (client = Source)
    addr_other: str  # ... anything else (login, export, ...): the requestor's own first


class AgentFacts(Struct, frozen=True, gc=False):
    """What one agent says, computed once per distinct agent."""

    ident: str
    codes: frozenset[str]
    addr: str
    requestor: bool
    is_app: bool
    is_patient: bool
    is_device: bool
    has_identifier: bool  # who.identifier.value present: an OAuth client id for an app
    who_keys: frozenset[str]
    auth: str
    session: str
    purpose: str
    token: str  # the OAuth/SAML token id BALP puts in `policy`


class SourceFacts(Struct, frozen=True, gc=False):
    """What `AuditEvent.source` says: the recording system and the keys naming it."""

    name: str
    client: str
    observer_keys: frozenset[str]


def _agent_id(a: Agent) -> str:
    """The agent's identifier: who.identifier.value, who.reference, altId, name, display."""
    who = a.who
    if who is not None:
        if who.identifier is not None and who.identifier.value:
            return who.identifier.value
        if who.reference:
            return who.reference
    if a.userId is not None and a.userId.value:  # STU3
        return a.userId.value
    if a.reference is not None and a.reference.reference:  # STU3
        return a.reference.reference
    if a.altId:
        return a.altId
    if a.name:
        return a.name
    if who is not None and who.display:
        return who.display
    return ""


def _agent_address(a: Agent) -> str:
    if a.network is not None and a.network.address:
        return a.network.address
    if a.networkString:
        return a.networkString
    if a.networkUri:
        return a.networkUri
    nr = a.networkReference
    if nr is not None:
        return nr.display or nr.reference or (nr.identifier.value if nr.identifier else None) or ""
    return ""


def _reference_keys(ref: Reference | None) -> frozenset[str]:
    keys: set[str] = set()
    if ref is not None:
        if ref.reference:
            keys.add(ref.reference)
        if ref.identifier is not None and ref.identifier.value:
            keys.add(ref.identifier.value)
        if ref.display:
            keys.add(ref.display)
    return frozenset(keys)


#: Values of an authentication-method extension that map to `AccessEvent.auth` as they are.
_AUTH_WORDS: Final = {
    "password": "password",
    "pwd": "password",
    "mfa": "mfa",
    "otp": "mfa",
    "2fa": "mfa",
    "card": "card",
    "smartcard": "card",
    "cps": "card",
    "e-cps": "mfa",
    # "card" stands for certificate-based authentication: a CPS card holds an X.509
    # certificate, and a machine certificate (mTLS) is the same kind of evidence.
    "certificate": "card",
    "x509": "card",
    "mtls": "card",
    "oauth": "oauth",
}


def _auth_of(a: Agent) -> str:
    """What the agent's assurance or auth-method extension (or policy) says of its login."""
    texts: list[str] = []
    for ext in a.extension or ():
        url = (ext.url or "").lower()
        if "auth" in url or "amr" in url or "assurance" in url or "mfa" in url:
            for value in (ext.valueCode, ext.valueString, ext.valueUri):
                if value:
                    word = _AUTH_WORDS.get(value.lower())
                    if word is not None:
                        return word
                    texts.append(value)
            texts.extend(_texts_of(ext.valueCoding))
            texts.extend(_texts_of(ext.valueCodeableConcept))
    for p in a.policy or ():
        if "mfa" in p.lower() or "assurance" in p.lower():
            texts.append(p)
    if not texts:
        return ""
    joined = " ".join(texts)
    if _HIGH_ASSURANCE.search(joined):
        return "mfa"
    if _CARD_ASSURANCE.search(joined):
        return "card"
    return ""


def _session_of(a: Agent) -> str:
    for ext in a.extension or ():
        if "session" in (ext.url or "").lower():
            value = ext.valueString or ext.valueId or ext.valueCode or ext.valueUri
            if value:
                return value
            if ext.valueIdentifier is not None and ext.valueIdentifier.value:
                return ext.valueIdentifier.value
    return ""


def _purpose_of(concepts: Iterable[Coding] | None) -> str:
    """First purpose-of-use code, preferring a break-the-glass one (BTG, EMER)."""
    first = ""
    if concepts:
        for c in concepts:
            for _, code in codes_of(c):
                if code in _BREAK_GLASS_PURPOSES:
                    return code
                if not first:
                    first = code
    return first


def agent_facts(a: Agent) -> AgentFacts:
    """Facts of one agent (type and role codes, identifier, address, auth, session)."""
    codes = {code for _, code in codes_of(a.type)}
    for r in a.role or ():
        codes.update(code for _, code in codes_of(r))
    who = a.who if a.who is not None else a.reference
    patient = "PAT" in codes or "patient" in codes
    device = bool(codes) and codes <= NODE_CODES
    if who is not None:
        ref = who.reference or ""
        if who.type == "Patient" or ref.startswith("Patient/") or "/Patient/" in ref:
            patient = True
        if who.type == "Device" or ref.startswith("Device/") or "/Device/" in ref:
            device = True
    # BALP puts the OAuth/SAML token id in a user agent's `policy`; a URI there is a
    # policy in the FHIR sense, not a token.
    token = ""
    for p in a.policy or ():
        if "://" not in p and not p.startswith("urn:"):
            token = p
            break
    return AgentFacts(
        ident=_agent_id(a),
        codes=frozenset(codes),
        addr=_agent_address(a),
        requestor=bool(a.requestor),
        is_app=APP in codes,
        is_patient=patient,
        is_device=device,
        has_identifier=a.who is not None and a.who.identifier is not None and bool(a.who.identifier.value),
        who_keys=_reference_keys(a.who),
        auth=_auth_of(a),
        session=_session_of(a),
        purpose=_purpose_of(a.purposeOfUse) or _purpose_of(a.authorization),
        token=token,
    )


def source_facts(source: Source | None) -> SourceFacts:
    """Text naming the system that recorded the event, and the keys naming its observer."""
    if source is None:
        return SourceFacts("", "", frozenset())
    name = ""
    obs = source.observer
    if obs is not None:
        if obs.identifier is not None and obs.identifier.value:
            name = obs.identifier.value
        else:
            name = obs.display or obs.reference or ""
    if not name and source.identifier is not None and source.identifier.value:  # STU3
        name = source.identifier.value
    client = name
    site = source.site
    site_text = site if isinstance(site, str) else (site.display or site.reference or "") if site else ""
    if site_text and site_text != name:
        name = f"{name} ({site_text})" if name else site_text
    keys = set(_reference_keys(obs))
    if source.identifier is not None and source.identifier.value:
        keys.add(source.identifier.value)
    return SourceFacts(name, client or site_text, frozenset(keys))


def combine(agents: list[AgentFacts], source: SourceFacts) -> Actors:
    """Account, actor kind, client, auth, session and candidate addresses of an event.

    IHE BALP: the user is the agent with `requestor = true`; an OAuth client is an
    Application agent (DICOM 110150) whose identifier is the `client_id`, and the
    account when no human is involved; the client node is the Destination (110152) of a
    read and the Source (110153) of a search or write. The server's own agent (the one
    that is also `source.observer`) gives an address only when nothing else does.
    """
    app = next((f for f in agents if f.is_app), None)
    chosen = next((f for f in agents if f.requestor and not f.is_app), None)
    if chosen is None and app is None and not any(f.requestor for f in agents):
        # No requestor at all (older or minimal producers, the STU3 example): the first
        # agent that is not a network node, else the first agent.
        chosen = next((f for f in agents if not f.codes & NODE_CODES), agents[0] if agents else None)
    client = app.ident if app is not None else ""
    if chosen is not None:
        account = chosen.ident
        if chosen.is_patient:
            kind = ActorKind.PATIENT
        elif chosen.is_device:
            kind = ActorKind.APPLICATION
        else:
            kind = ActorKind.HUMAN
    elif app is not None:
        account = app.ident
        kind = ActorKind.API_CLIENT if app.has_identifier else ActorKind.APPLICATION
        chosen = app
    else:
        account, kind = "", ActorKind.HUMAN
    if not client:
        client = source.client

    auth = chosen.auth if chosen is not None else ""
    if not auth and app is not None:
        auth = app.auth
    if not auth and ((app is not None and app.has_identifier) or any("UserOauthAgent" in f.codes for f in agents)):
        auth = "oauth"
    session = next((f.session for f in agents if f.session), "")
    if not session and chosen is not None:
        session = chosen.token
    purpose = chosen.purpose if chosen is not None else ""

    by_role: dict[str, str] = {}
    any_addr = ""
    server_addr = ""
    observer = source.observer_keys
    for f in agents:
        addr = f.addr
        if not addr:
            continue
        if observer and f.who_keys and not f.who_keys.isdisjoint(observer):
            server_addr = server_addr or addr
            continue
        any_addr = any_addr or addr
        if DESTINATION in f.codes:
            by_role.setdefault(DESTINATION, addr)
        if SOURCE in f.codes:
            by_role.setdefault(SOURCE, addr)
        if f.is_app:
            by_role.setdefault(APP, addr)
        if f is chosen:
            by_role.setdefault("req", addr)
    fallback = any_addr or server_addr

    def pick(*order: str) -> str:
        for key in order:
            addr = by_role.get(key)
            if addr:
                return addr
        return fallback

    return Actors(
        account=account,
        actor_kind=kind,
        client=client,
        source=source.name,
        auth=auth,
        session=session,
        purpose=purpose,
        addr_read=pick(DESTINATION, APP, "req", SOURCE),
        addr_write=pick(SOURCE, APP, "req", DESTINATION),
        addr_other=pick("req", SOURCE, APP, DESTINATION),
    )


def actors_of(agents: list[Agent] | None, source: Source | None) -> Actors:
    """`combine` of fully decoded agents and source."""
    return combine([agent_facts(a) for a in agents or ()], source_facts(source))


# --------------------------------------------------------------------------------------
# Event kind
# --------------------------------------------------------------------------------------


class Kind(Struct, gc=False):
    """What an event's type/subtype/action codes say it did."""

    action: str | None  # None: search when a query entity is present, else other
    login: bool  # an authentication event: a failure becomes login_failed


def _subtype_action(system: str, code: str) -> str | None:
    if system == CH_ATC_EVENT or code.startswith("ATC_"):
        # CH:ATC records every EPR access as DICOM 110106 "Export" and says what really
        # happened in the subtype (ATC_DOC_READ, ATC_DOC_CREATE, ATC_LOG_READ, ...).
        for word, action in (
            ("_READ", Action.READ),
            ("_SEARCH", Action.SEARCH),
            ("_QUERY", Action.SEARCH),
            ("_CREATE", Action.CREATE),
            ("_UPDATE", Action.UPDATE),
            ("_DELETE", Action.DELETE),
            ("_REMOVE", Action.DELETE),
        ):
            if word in code:
                return action
        return Action.OTHER
    return None


def kind_of(
    type_: Coding | None,
    subtypes: list[Coding] | None,
    categories: list[Coding] | None,
    code: Coding | None,
    action_code: str | None,
) -> Kind:
    """Action from the event codes: RESTful interaction, then DICOM subtype, then type.

    The subtype is more specific than the type (R5 renamed them `code` and `category`).
    DICOM codes that leave the operation open (Patient Record, Order Record...) take it
    from the `action` code; "E" (execute) or nothing is left to the entities (None).
    """
    specific: list[tuple[str, str]] = []
    for sub in subtypes or ():
        specific.extend(codes_of(sub))
    specific.extend(codes_of(code))
    general: list[tuple[str, str]] = list(codes_of(type_))
    for cat in categories or ():
        general.extend(codes_of(cat))

    login = any(value in ("110114", "110122", "110123") for _, value in specific + general)
    by_code = _ACTION_CODES.get(action_code or "")

    for system, value in specific:
        if (system == RESTFUL or not system) and value in _RESTFUL_ACTIONS:
            return Kind(_RESTFUL_ACTIONS[value], login)
    for group in (specific, general):
        for system, value in group:
            if (system == DCM or not system) and value in _DICOM_ACTIONS:
                action = _DICOM_ACTIONS[value]
                if action is None:
                    action = by_code
                    if action is None and value in _BY_ACTION_CODE_DEFAULT_READ:
                        action = Action.READ
                return Kind(action, login)
            found = _subtype_action(system, value)
            if found is not None:
                return Kind(found, login)
    for system, value in general:
        if system == RESTFUL and value in _RESTFUL_ACTIONS:
            return Kind(_RESTFUL_ACTIONS[value], login)
    return Kind(by_code, login)


def outcome_of(outcome: str | Outcome5 | None, desc: str | None) -> str:
    """success, denied or error from R4 `outcome`/`outcomeDesc` or R5 `outcome`."""
    texts: list[str] = [desc] if desc else []
    if isinstance(outcome, Outcome5):
        code = ""
        for _, c in codes_of(outcome.code):
            code = c
            break
        if outcome.code is not None and outcome.code.display:
            texts.append(outcome.code.display)
        for d in outcome.detail or ():
            texts.extend(_texts_of(d))
    else:
        code = outcome or "0"
    result = _OUTCOME_CODES.get(code.lower(), Outcome.ERROR)
    if result != Outcome.SUCCESS and texts and _DENIAL_RE.search(" ".join(texts)):
        return Outcome.DENIED
    return result


# --------------------------------------------------------------------------------------
# Entities
# --------------------------------------------------------------------------------------


#: What an event's entities say: (patients, categories, query text, session, has a query).
#: A plain tuple: built once per event on the hot path.
Touched = tuple[tuple[str, ...], int, str, str, bool]


def _is_patient_role(e: Entity) -> bool:
    role = e.role
    if role is not None:
        for system, code in codes_of(role):
            if code == "1" and (system == OBJECT_ROLE or not system or system.endswith("/object-role")):
                return True
            if code in ("PAT", "patient", "Patient"):
                return True
        return False
    for system, code in codes_of(e.type):
        if code == "Patient" or (code == "1" and "audit-entity-type" in system) or (code == "1" and not system):
            return True
    return False


def _is_query(e: Entity) -> bool:
    """Role 24 (Query); an entity without a role that carries a `query` counts too."""
    if e.role is None:
        return e.query is not None
    for system, code in codes_of(e.role):
        if code == "24" and (system == OBJECT_ROLE or not system or system.endswith("/object-role")):
            return True
        if code == "query":
            return True
    return False


def _identifier_text(ident: Identifier) -> str:
    value = ident.value or ""
    return f"{ident.system}|{value}" if ident.system else value


def touched_of(entities: list[Entity] | None, patient: Reference | None) -> Touched:
    """Patients, data categories, query and session from the entities (and R5 `patient`)."""
    patients: list[str] = []
    mask = 0
    query = ""
    session = ""
    has_query = False
    others = 0
    for e in entities or ():
        what = e.what or e.reference  # STU3 uses `reference`
        ident = what.identifier if what is not None else None
        if ident is None and e.identifier is not None:  # STU3 `identifier`
            ident = e.identifier
        ref = what.reference if what is not None else None
        rtype, rel = ref_type(ref) if ref else ("", "")
        if not rtype and what is not None and what.type:
            rtype = what.type
        if _is_query(e):
            has_query = True
            text = _decode_query(e.query) if e.query else (e.description or "")
            if text and not query:
                query = text
            if text:
                mask |= query_categories(text)
            continue
        role_patient = _is_patient_role(e)
        if rtype == "Patient" or role_patient:
            if ref and (rtype == "Patient" or not ident):
                key = rel if rtype == "Patient" else ref
            elif ident is not None and ident.value:
                key = _identifier_text(ident)
            else:
                key = ref or ""
            if key and key not in patients:
                patients.append(key)
            if ident is not None and (
                (ident.system and _INS_RE.search(ident.system)) or (ident.value and _INS_RE.search(ident.value))
            ):
                mask |= _N
            if rtype == "Patient" and not role_patient:
                # The Patient resource itself was the data touched: identity and contact.
                mask |= _I | _C
                others += 1
            continue
        codes = list(codes_of(e.type)) + list(codes_of(e.role))
        if any("session" in code.lower() for _, code in codes):
            # A session (or token) entity: where the access came from, not data touched.
            value = (ident.value if ident is not None else None) or ref or e.name or ""
            if value and not session:
                session = value
            continue
        others += 1
        typed = False
        for system, code in codes:
            if code in _DICOM_IMAGING and (system == DCM or not system):
                mask |= _IMG
                typed = True
            elif not rtype and code in RESOURCE_CATEGORIES:
                rtype = code
        bits = RESOURCE_CATEGORIES.get(rtype)
        if bits is not None:
            mask |= bits
        elif not typed and ident is not None:
            xds_type = ident.type is not None and any("XDS" in t for t in _texts_of(ident.type))
            if ident.system == _XDS_UNIQUE_ID or xds_type:
                mask |= _DOC
    if patient is not None:
        ref = patient.reference
        if ref:
            rtype, rel = ref_type(ref)
            key = rel if rtype == "Patient" else ref
        elif patient.identifier is not None and patient.identifier.value:
            key = _identifier_text(patient.identifier)
            if _INS_RE.search(key):
                mask |= _N
        else:
            key = ""
        if key and key not in patients:
            patients.append(key)
    if patients and not others and not mask & ~_N:
        mask |= _I  # the patient is the only thing touched: who they are
    return (tuple(patients), mask, query, session, has_query)


#: object-role codes of the data a RESTful interaction touches (Domain Resource, Report,
#: Job, Master file, ...); "1" is Patient and "24" Query.
_DATA_ROLES: Final = frozenset({"3", "4", "5", "6", "7", "9", "11", "13", "20"})


def touched_fast(entities: list[Entity]) -> Touched | None:
    """`touched_of` for the common BALP entity shapes; None when anything else shows up.

    Handles R4 entities with an object-role role, an audit-entity-type type and a plain
    `Type/id` reference (and query entities); the general `touched_of` handles the rest.
    Both give the same answer wherever this one answers (a property test checks it).
    """
    patients: tuple[str, ...] = ()
    mask = 0
    query = ""
    has_query = False
    others = 0
    for e in entities:
        role = e.role
        if role is None or role.system != OBJECT_ROLE:
            return None
        code = role.code
        t = e.type
        if t is not None and (t.coding is not None or t.system != AUDIT_ENTITY_TYPE):
            return None
        if code == "24":
            has_query = True
            q = e.query
            if q:
                text = _decode_query(q)
                if not query:
                    query = text
                mask |= query_categories(text)
            elif e.description:
                return None
            continue
        what = e.what
        if what is None or what.identifier is not None or e.identifier is not None:
            return None
        ref = what.reference
        if not ref:
            return None
        rtype, _, rid = ref.partition("/")
        if not rtype or not rid or "/" in rid or ":" in ref:
            return None
        if code == "1":
            if rtype != "Patient":
                return None
            if ref not in patients:
                patients += (ref,)
            continue
        if code not in _DATA_ROLES:
            return None
        others += 1
        if rtype == "Patient":
            if ref not in patients:
                patients += (ref,)
            mask |= _I | _C
            continue
        mask |= RESOURCE_CATEGORIES.get(rtype, 0)
    if patients and not others and not mask & ~_N:
        mask |= _I
    return (patients, mask, query, "", has_query)


# --------------------------------------------------------------------------------------
# The normaliser
# --------------------------------------------------------------------------------------

#: Entries per memo table. Keys are raw JSON (about 1 KB for an agent list): ~20 MB at most.
_MEMO_LIMIT = 16384

#: `_finish` builds AccessEvents positionally (for speed); this guard turns a change of the
#: field order in `sentinelle.events` into an import error instead of scrambled events.
_ACCESS_EVENT_FIELDS: Final = (
    "id", "time", "account", "action", "actor_kind", "outcome", "patients", "categories",
    "client", "address", "session", "source", "query", "auth", "purpose",
)  # fmt: skip
if AccessEvent.__struct_fields__ != _ACCESS_EVENT_FIELDS:  # pragma: no cover
    raise ImportError("sentinelle.events.AccessEvent fields changed: update fhir_common._finish")


class _Context(Struct, gc=False):
    """Everything an event's repeated parts say, memoised together and ready to use."""

    account: str
    actor_kind: str
    client: str
    source: str
    auth: str
    session: str
    purpose: str
    outcome: str
    action: str | None  # None: search when a query entity is present, else other
    address: str  # the client's address for `action` (when it is not None)
    addr_search: str  # ... when the action turns out to be a search
    addr_other: str  # ... when it turns out to be something else
    error: str  # why events with these parts cannot be used ("" when they can)


_NO_CONTEXT = _Context("", "", "", "", "", "", "", "", None, "", "", "", "no context")


def _context(actors: Actors, kind: Kind, purpose: str, outcome: str, source: str = "") -> _Context:
    """Resolve what does not depend on the entities: final action, address, purpose."""
    action = kind.action
    if action is not None and kind.login and outcome != Outcome.SUCCESS and action == Action.LOGIN:
        action = Action.LOGIN_FAILED
    if not purpose:
        purpose = actors.purpose
    if purpose in _BREAK_GLASS_PURPOSES and action == Action.READ:
        action = Action.BREAK_GLASS
    return _Context(
        actors.account,
        actors.actor_kind,
        actors.client,
        source or actors.source,
        actors.auth,
        actors.session,
        purpose,
        outcome,
        action,
        _address(actors, action) if action is not None else "",
        actors.addr_write,
        actors.addr_other,
        "" if actors.account else "missing agent: no requestor, user or application identifies who acted",
    )


def _address(actors: Actors, action: str) -> str:
    if action in _WRITE_LIKE:
        return actors.addr_write
    if action in _READ_LIKE:
        return actors.addr_read
    return actors.addr_other


class Normaliser:
    """Turns decoded AuditEvents into `AccessEvent`s, memoising repeated parts.

    One instance per input stream; the memo tables are bounded and simply cleared when
    full, so memory stays flat whatever the size of the input. `source`, when given,
    names the source system of every event instead of what the events say (the service
    stamps the name bound to the sender's token), at no cost per event. `fast` chooses
    whether NDJSON lines try the compiled path first (default: `FAST_PATH`).
    """

    def __init__(self, source: str = "", fast: bool | None = None) -> None:
        self.source = source
        self._contexts: dict[tuple[bytes, str | None, str | None], _Context] = {}
        self._agents: dict[bytes, AgentFacts] = {}
        self._sources: dict[bytes, SourceFacts] = {}
        self._kinds: dict[tuple[bytes, str | None], Kind] = {}
        # combine() of memoised facts, keyed by the facts' identities. Safe because a
        # facts object stays alive (in its memo) as long as this table is not cleared,
        # and both are cleared together.
        self._combined: dict[tuple[int, ...], Actors] = {}
        # Actors by the fast path's agent serial and the raw source (see _context_of_parts).
        self._actors_by_serial: dict[tuple[int, bytes], Actors] = {}
        # The previous event's joined parts and context; b"" never matches (a join has separators).
        self._last: tuple[bytes, str | None, str | None, _Context] = (b"", None, None, _NO_CONTEXT)
        #: `line(raw) -> AccessEvent | None`: the compiled reader of the common BALP line
        #: shape (None when it is not built), which declines anything else to `from_lazy`.
        self.fast_line: Callable[[bytes], AccessEvent | None] | None = None
        if FAST_PATH if fast is None else (fast and _balp is not None):
            self._fast = _balp.Fast(
                self._context_of_parts,
                query_categories,
                AccessEvent,
                RESOURCE_CATEGORIES,
                _DATA_ROLES,
                (_I, _C, _N),
                (Action.SEARCH, Action.OTHER),
                (msgspec.MsgspecError, RecordError, ValueError),
            )
            self.fast_line = self._fast.line

    # -- fully typed path (XML, JSON slow paths) --------------------------------------

    def from_full(self, ev: AuditEvent, fallback_id: str) -> AccessEvent:
        """Access event of a fully decoded AuditEvent; raises RecordError when unusable."""
        ctx = _context(
            actors_of(ev.agent, ev.source),
            kind_of(ev.type, ev.subtype, ev.category, ev.code, ev.action),
            _purpose_of(ev.purposeOfEvent) or _purpose_of(ev.authorization),
            outcome_of(ev.outcome, ev.outcomeDesc),
            self.source,
        )
        return _finish(ev.id or fallback_id, _time_text(ev), ctx, ev.entity, ev.patient)

    # -- lazy JSON path ------------------------------------------------------------------

    def from_lazy(self, ev: AuditEventLazy, fallback_id: str) -> AccessEvent:
        """Access event of a lazily decoded AuditEvent (JSON fast path)."""
        # One memo key for all the repeated parts: their raw bytes joined (each part is a
        # complete JSON value or empty, so with a separator the join is unambiguous) and
        # the action and outcome codes.
        joined = b"\x00".join(
            (
                ev.agent,
                ev.source,
                ev.type,
                ev.subtype,
                ev.outcome,
                ev.category,
                ev.code,
                ev.purposeOfEvent,
                ev.authorization,
            )
        )
        last = self._last
        if joined == last[0] and ev.action == last[1] and ev.outcomeDesc == last[2]:
            # Audit trails come in bursts (one user opening one chart): comparing with the
            # previous event's parts costs a memcmp, less than hashing ~1 KB of key.
            ctx = last[3]
        else:
            key = (joined, ev.action, ev.outcomeDesc)
            found = self._contexts.get(key)
            if found is None:
                found = self._context(ev)
                if len(self._contexts) >= _MEMO_LIMIT:
                    self._contexts.clear()
                self._contexts[key] = found
            ctx = found
            self._last = (joined, ev.action, ev.outcomeDesc, ctx)
        text = ev.recorded
        if text is None or ev.occurredDateTime is not None or ev.occurredPeriod is not None:
            text = _time_text(ev)
        if ev.patient is None and ev.entity and not ctx.error and text is not None:
            # The hot path, inlined: plain BALP entities, a usable context.
            touched = touched_fast(ev.entity)
            if touched is not None:
                try:
                    time = fast_time(text)
                except (ValueError, OverflowError):
                    raise RecordError(f"invalid time: {text[:64]!r} is not an ISO 8601 date-time") from None
                action = ctx.action
                address = ctx.address
                if action is None:
                    if touched[4]:
                        action, address = Action.SEARCH, ctx.addr_search
                    else:
                        action, address = Action.OTHER, ctx.addr_other
                # Positional construction: several times faster than keywords.
                return AccessEvent(
                    ev.id or fallback_id,
                    time,
                    ctx.account,
                    action,
                    ctx.actor_kind,
                    ctx.outcome,
                    touched[0],
                    touched[1],
                    ctx.client,
                    address,
                    ctx.session,
                    ctx.source,
                    touched[2],
                    ctx.auth,
                    ctx.purpose,
                )
        return _finish(ev.id or fallback_id, text, ctx, ev.entity, ev.patient)

    def _context_of_parts(
        self,
        serial: int,
        agent: bytes,
        source: bytes,
        type_: bytes,
        subtype: bytes,
        category: bytes,
        code: bytes,
        outcome: bytes,
        purpose: bytes,
        authorization: bytes,
        action: str | None,
        outcome_desc: str | None,
    ) -> _Context:
        """`_context` of raw parts: what the compiled fast path asks on a memo miss.

        `serial` names the agent array (sessions blanked) for as long as the fast path
        keeps it, so the actors are looked up by a small key instead of ~1 KB of JSON.
        """
        akey = (serial, source)
        actors = self._actors_by_serial.get(akey)
        if actors is None:
            actors = self._actors(agent, source)
            if len(self._actors_by_serial) >= _MEMO_LIMIT:
                self._actors_by_serial.clear()
            self._actors_by_serial[akey] = actors
        return self._finish_context(
            actors, type_, subtype, category, code, outcome, purpose, authorization, action, outcome_desc
        )

    def _context(self, ev: AuditEventLazy) -> _Context:
        """The memoised parts of an event, from per-agent and per-source memos."""
        return self._finish_context(
            self._actors(ev.agent, ev.source),
            ev.type,
            ev.subtype,
            ev.category,
            ev.code,
            ev.outcome,
            ev.purposeOfEvent,
            ev.authorization,
            ev.action,
            ev.outcomeDesc,
        )

    def _actors(self, agent: bytes | Raw, source: bytes | Raw) -> Actors:
        """`combine` of the agents and source, from per-agent and per-source memos."""
        facts: list[AgentFacts] = []
        if agent:
            for raw in _dec_raws.decode(agent):
                data = bytes(raw)
                f = self._agents.get(data)
                if f is None:
                    f = agent_facts(_dec_agent.decode(data))
                    if len(self._agents) >= _MEMO_LIMIT:
                        self._agents.clear()
                        self._combined.clear()
                    self._agents[data] = f
                facts.append(f)
        sdata = bytes(source)
        sf = self._sources.get(sdata)
        if sf is None:
            sf = source_facts(_dec_source.decode(sdata) if sdata else None)
            if len(self._sources) >= 4096:
                self._sources.clear()
                self._combined.clear()
            self._sources[sdata] = sf
        ckey = (id(sf), *map(id, facts))
        actors = self._combined.get(ckey)
        if actors is None:
            actors = combine(facts, sf)
            if len(self._combined) >= _MEMO_LIMIT:
                self._combined.clear()
            self._combined[ckey] = actors
        return actors

    def _finish_context(
        self,
        actors: Actors,
        type_: bytes | Raw,
        subtype: bytes | Raw,
        category: bytes | Raw,
        code: bytes | Raw,
        outcome_raw: bytes | Raw,
        purpose_raw: bytes | Raw,
        authorization: bytes | Raw,
        action: str | None,
        outcome_desc: str | None,
    ) -> _Context:
        """The context of the actors and the event's codes, outcome and purpose."""
        kkey = (b"\x00".join((type_, subtype, category, code)), action)
        kind = self._kinds.get(kkey)
        if kind is None:
            kind = kind_of(
                _dec_coding.decode(type_) if type_ else None,
                _dec_codings.decode(subtype) if subtype else None,
                _dec_codings.decode(category) if category else None,
                _dec_coding.decode(code) if code else None,
                action,
            )
            if len(self._kinds) >= 4096:
                self._kinds.clear()
            self._kinds[kkey] = kind
        purpose = ""
        if purpose_raw or authorization:
            purpose = _purpose_of(_dec_codings.decode(purpose_raw) if purpose_raw else None) or (
                _purpose_of(_dec_codings.decode(authorization) if authorization else None)
            )
        outcome = _dec_outcome.decode(outcome_raw) if outcome_raw else None
        return _context(actors, kind, purpose, outcome_of(outcome, outcome_desc), self.source)


def _finish(
    id_: str,
    time_text: str | None,
    ctx: _Context,
    entities: list[Entity] | None,
    patient: Reference | None,
) -> AccessEvent:
    """The general tail: checks, entities, final action and address."""
    if time_text is None:
        raise RecordError("missing time: no recorded, period.start, occurredDateTime or occurredPeriod.start")
    try:
        time = fast_time(time_text)
    except (ValueError, OverflowError):
        raise RecordError(f"invalid time: {time_text[:64]!r} is not an ISO 8601 date-time") from None
    if ctx.error:
        raise RecordError(ctx.error)
    touched = touched_fast(entities) if entities and patient is None else None
    if touched is None:
        touched = touched_of(entities, patient)
    patients, categories, query, session, has_query = touched
    action = ctx.action
    address = ctx.address
    if action is None:
        if has_query:
            action, address = Action.SEARCH, ctx.addr_search
        else:
            action, address = Action.OTHER, ctx.addr_other
    return AccessEvent(
        id_,
        time,
        ctx.account,
        action,
        ctx.actor_kind,
        ctx.outcome,
        patients,
        categories,
        ctx.client,
        address,
        ctx.session or session,
        ctx.source,
        query,
        ctx.auth,
        ctx.purpose,
    )


def _time_text(ev: AuditEvent | AuditEventLazy) -> str | None:
    """When the access happened: R5 occurred[x], else recorded, else R4 period.start."""
    if ev.occurredDateTime:
        return ev.occurredDateTime
    if ev.occurredPeriod is not None and ev.occurredPeriod.start:
        return ev.occurredPeriod.start
    if ev.recorded:
        return ev.recorded
    if ev.period is not None and ev.period.start:
        return ev.period.start
    return None
