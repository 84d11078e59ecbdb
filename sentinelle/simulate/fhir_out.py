"""Writing the hospital out as FHIR R4: BALP AuditEvents and the care-context resources.

AuditEvents follow IHE BALP 1.1.4 (Basic Audit Log Patterns): type `rest` with the
RESTful interaction as subtype; the user agent is the requestor; the client machine is
the Destination (DICOM 110152) in reads and writes and the Source (110153) in searches,
the server the other one; the client application is a DICOM 110150 agent whose
identifier is the client id (the requestor itself when no human is involved); a search
leaves one AuditEvent per patient in its result page, with the raw query base64 in a
role-24 entity. Logins use DICOM 110114 User Authentication.

Millions of lines are written, so an event is assembled from pre-encoded JSON fragments:
every identifier the simulator controls is plain ASCII, and the only free text, a
search's raw query, is base64 as BALP records it. Codings carry no display text, which
keeps a line near 1.5 KB (a real BALP server's lines are 1.5-3 KB).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import msgspec

from sentinelle.simulate.hospital import Dept, Device, Staff

__all__ = ["ContextWriter", "EventEncoder", "Op", "format_recorded"]


class Op:
    """Operations the simulator records (the RESTful interaction or the login event)."""

    READ = "read"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"


_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_REST_TYPE = '"type":{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest"}'
_AUTH_TYPE = f'"type":{{"system":"{_DCM}","code":"110114","display":"User Authentication"}}'


def _subtype(code: str) -> str:
    return f'"subtype":[{{"system":"http://hl7.org/fhir/restful-interaction","code":"{code}"}}]'


_HEAD: dict[str, str] = {
    Op.READ: f'{_REST_TYPE},{_subtype("read")},"action":"R"',
    Op.SEARCH: f'{_REST_TYPE},{_subtype("search-type")},"action":"E"',
    Op.CREATE: f'{_REST_TYPE},{_subtype("create")},"action":"C"',
    Op.UPDATE: f'{_REST_TYPE},{_subtype("update")},"action":"U"',
    Op.DELETE: f'{_REST_TYPE},{_subtype("delete")},"action":"D"',
    Op.LOGIN: f'{_AUTH_TYPE},"subtype":[{{"system":"{_DCM}","code":"110122","display":"Login"}}],"action":"E"',
    Op.LOGIN_FAILED: f'{_AUTH_TYPE},"subtype":[{{"system":"{_DCM}","code":"110122","display":"Login"}}],"action":"E"',
    Op.LOGOUT: f'{_AUTH_TYPE},"subtype":[{{"system":"{_DCM}","code":"110123","display":"Logout"}}],"action":"E"',
}

_SERVER_URI = "https://dpi.chs.fr/fhir"
_SERVER_WHO = '"who":{"reference":"Device/dpi"},"requestor":false,' \
    f'"network":{{"address":"{_SERVER_URI}","type":"5"}}}}'
_SRC = f'{{"type":{{"coding":[{{"system":"{_DCM}","code":"110153"}}]}},'
_DST = f'{{"type":{{"coding":[{{"system":"{_DCM}","code":"110152"}}]}},'
_SERVER_AS_SOURCE = _SRC + _SERVER_WHO
_SERVER_AS_DEST = _DST + _SERVER_WHO
_SOURCE = '"source":{"site":"CH Sentinelle","observer":{"reference":"Device/dpi","display":"DPI"}}'
_AUTH_EXT = "https://sentinelle.health/fhir/authn-method"
_SESSION_EXT = "https://sentinelle.health/fhir/session"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_PATIENT_TAIL = f'}},"type":{{"system":"{_ENTITY_TYPE}","code":"1"}},"role":{{"system":"{_ROLE}","code":"1"}}}}'
_DATA_TAIL = f'}},"type":{{"system":"{_ENTITY_TYPE}","code":"2"}},"role":{{"system":"{_ROLE}","code":"4"}}}}'
_QUERY_HEAD = f'{{"type":{{"system":"{_ENTITY_TYPE}","code":"2"}},"role":{{"system":"{_ROLE}","code":"24"}},'
_PURPOSE_BTG = (
    '"purposeOfEvent":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"BTG"},'
    '{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"ETREAT"}],"text":"break-the-glass"}]'
)
_OUTCOME_DESC = {"4": "Not found or not permitted", "8": "Server error"}

_DAY_PREFIX: dict[int, str] = {}


def format_recorded(ms: int) -> str:
    """FHIR instant with milliseconds and 'Z' of a UTC millisecond time (fast path)."""
    day, rest = divmod(ms, 86_400_000)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        from datetime import UTC, datetime

        prefix = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%dT")
        _DAY_PREFIX[day] = prefix
    s, milli = divmod(rest, 1000)
    m, s = divmod(s, 60)
    hh, m = divmod(m, 60)
    return f"{prefix}{hh:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


class EventEncoder:
    """Turns one simulated event into one AuditEvent JSON line.

    Agents are cached per (account, client, address, session, operation family), which a
    chart-opening burst reuses tens of times.
    """

    def __init__(self) -> None:
        self._agents: dict[tuple[Any, ...], str] = {}
        self._queries: dict[str, str] = {}

    def clear(self) -> None:
        """Drop the per-day caches (sessions do not outlive a day or a night)."""
        self._agents.clear()
        if len(self._queries) > 50_000:
            self._queries.clear()

    def _agent_block(self, actor: Staff | Device, client: str, addr: str, session: str, op: str) -> str:
        family = "s" if op == Op.SEARCH else ("l" if op in (Op.LOGIN, Op.LOGIN_FAILED, Op.LOGOUT) else op)
        key = (actor.login, client, addr, session, family)
        block = self._agents.get(key)
        if block is not None:
            return block
        network = f'"network":{{"address":"{addr}","type":"2"}}'
        session_ext = f',{{"url":"{_SESSION_EXT}","valueString":"{session}"}}' if session else ""
        app_type = f'{{"type":{{"coding":[{{"system":"{_DCM}","code":"110150"}}]}},'
        if isinstance(actor, Staff):
            auth = actor.home_auth if _is_remote(addr) else actor.auth
            user = (
                '{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/extra-security-role-type",'
                '"code":"humanuser"}]},'
                f'"who":{{"identifier":{{"system":"urn:sentinelle:login","value":"{actor.login}"}}}},'
                f'"requestor":true,{network},'
                f'"extension":[{{"url":"{_AUTH_EXT}","valueCode":"{auth}"}}{session_ext}]}}'
            )
            app = (
                f'{app_type}"who":{{"identifier":{{"system":"urn:sentinelle:client","value":"{client}"}}}},'
                '"requestor":false}'
            )
            agents = [user, app]
        else:
            # No human: the client application is the requestor (BALP "no user" pattern).
            app = (
                f'{app_type}"who":{{"identifier":{{"system":"urn:sentinelle:client","value":"{actor.login}"}}}},'
                f'"requestor":true,{network},'
                f'"extension":[{{"url":"{_AUTH_EXT}","valueCode":"{actor.auth}"}}{session_ext}]}}'
            )
            agents = [app]
        machine = f'"requestor":false,{network}}}'
        if family == "l":
            agents.append(_SRC + machine)
        elif op == Op.SEARCH:
            agents.append(_SERVER_AS_DEST)
            agents.append(_SRC + machine)
        else:
            agents.append(_SERVER_AS_SOURCE)
            agents.append(_DST + machine)
        block = '"agent":[' + ",".join(agents) + "]"
        self._agents[key] = block
        return block

    def _query_entity(self, query: str) -> str:
        q = self._queries.get(query)
        if q is None:
            raw = base64.b64encode(query.encode()).decode()
            q = f'{_QUERY_HEAD}"query":"{raw}"}}'
            self._queries[query] = q
        return q

    def encode(
        self,
        event_id: str,
        t: int,
        actor: Staff | Device,
        client: str,
        addr: str,
        session: str,
        op: str,
        patient: str,
        rtype: str,
        rid: str,
        outcome: str,
        query: str,
        purpose: str,
    ) -> str:
        """One AuditEvent as a JSON line (with the trailing newline)."""
        parts = [
            f'{{"resourceType":"AuditEvent","id":"{event_id}",{_HEAD[op]},'
            f'"recorded":"{format_recorded(t)}","outcome":"{outcome}"'
        ]
        if outcome != "0":
            parts.append(f',"outcomeDesc":"{_OUTCOME_DESC.get(outcome, "Failure")}"')
        if purpose:
            parts.append("," + _PURPOSE_BTG)
        parts.append(",")
        parts.append(self._agent_block(actor, client, addr, session, op))
        parts.append(",")
        parts.append(_SOURCE)
        entities: list[str] = []
        if patient:
            entities.append(f'{{"what":{{"reference":"{patient}"{_PATIENT_TAIL}')
        if op == Op.SEARCH:
            entities.append(self._query_entity(query))
        elif rtype:
            entities.append(f'{{"what":{{"reference":"{rtype}/{rid}"{_DATA_TAIL}')
        if entities:
            parts.append(',"entity":[' + ",".join(entities) + "]")
        parts.append("}\n")
        return "".join(parts)


def _is_remote(addr: str) -> bool:
    return not addr.startswith("10.") or addr.startswith("10.250.")


# -- context resources ------------------------------------------------------------------------

_LOGIN = "urn:sentinelle:login"
_INS = "urn:oid:1.2.250.1.213.1.4.8"
_IPP = "urn:sentinelle:ipp"
_ROLE_SYSTEM = "urn:sentinelle:role"
_PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_DEPARTMENT_EXT = "https://sentinelle.health/fhir/StructureDefinition/department"
_PRIVILEGED_EXT = "https://sentinelle.health/fhir/StructureDefinition/privileged"


def organization(dept: Dept) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": dept.id,
        "identifier": [{"system": "urn:sentinelle:department", "value": dept.code}],
        "active": True,
        "type": [{"text": dept.kind}],
        "name": dept.name,
        "alias": [dept.alias],
        "partOf": {"reference": "Organization/ch-sentinelle"},
    }


def hospital_organization() -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": "ch-sentinelle",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "760000000"}],
        "active": True,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
        "name": "Centre hospitalier Sentinelle",
    }


def practitioner(s: Staff, address: tuple[str, str, str]) -> dict[str, Any]:
    ids = [{"system": _LOGIN, "value": s.login}]
    if s.ins:
        ids.append({"system": _INS, "value": s.ins})
    if s.role in ("doctor", "pharmacist") or (s.role == "nurse" and s.idx % 3 == 0):
        ids.append({"system": "urn:oid:1.2.250.1.71.4.2.1", "value": f"10{100000000 + s.idx * 7919 % 899999999:09d}"})
    line, city, postal = address
    return {
        "resourceType": "Practitioner",
        "id": s.practitioner_id,
        "identifier": ids,
        "active": True,
        "name": [{"family": s.family, "given": [s.given]}],
        "gender": s.gender,
        "birthDate": s.birth,
        "address": [{"line": [line], "city": city, "postalCode": postal, "country": "FR"}],
    }


def practitioner_role(s: Staff, start_ms: int | None, end_ms: int | None) -> dict[str, Any]:
    period: dict[str, str] = {}
    if start_ms is not None:
        period["start"] = format_recorded(start_ms)[:10]
    if end_ms is not None:
        period["end"] = format_recorded(end_ms)[:10]
    codes = [{"system": _ROLE_SYSTEM, "code": s.role}]
    res: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": s.role_id,
        "active": True,
        "period": period,
        "practitioner": {"reference": f"Practitioner/{s.practitioner_id}"},
        "organization": {"reference": f"Organization/{s.dept.id}"},
        "code": [{"coding": codes, "text": ("interne" if s.intern else s.role)}],
    }
    if s.specialty and s.role == "doctor":
        res["specialty"] = [{"text": s.specialty}]
    if s.privileged:
        res["extension"] = [{"url": _PRIVILEGED_EXT, "valueBoolean": True}]
    return res


def device(d: Device) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Device",
        "id": d.id,
        "identifier": [{"system": _LOGIN, "value": d.login}, {"system": "urn:sentinelle:client", "value": d.login}],
        "status": "active",
        "deviceName": [{"name": d.name, "type": "user-friendly-name"}],
        "type": {"text": d.kind},
        "owner": {"reference": f"Organization/{d.owner.id}"},
        "note": [{"text": d.description}],
        "property": [{"type": {"text": "addresses"}, "valueCode": [{"text": a} for a in d.addresses]}],
    }
    if d.login == "editeur-integration":
        res["extension"] = [{"url": _PRIVILEGED_EXT, "valueBoolean": True}]
    return res


def patient(
    pid: int,
    family: str,
    given: str,
    gender: str,
    birth: str,
    address: tuple[str, str, str],
    ins: str,
    phone: str,
    gp: str,
    flags: int,
) -> dict[str, Any]:
    line, city, postal = address
    email_user = "".join(c for c in (given + "." + family).lower() if c.isascii() and (c.isalnum() or c == "."))
    res: dict[str, Any] = {"resourceType": "Patient", "id": str(pid)}
    meta: dict[str, Any] = {}
    if flags & 19:
        code = "V" if flags & 2 else "R"
        meta["security"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": code}]
    if flags & 4:
        meta["tag"] = [{"system": "https://sentinelle.health/tags", "code": "decoy"}]
    if meta:
        res["meta"] = meta
    res.update(
        {
            "identifier": [
                {"system": _INS, "value": ins, "type": {"text": "INS-NIR"}},
                {"system": _IPP, "value": f"IPP{pid}"},
            ],
            "name": [{"family": family, "given": [given]}],
            "telecom": [
                {"system": "phone", "value": phone},
                {"system": "email", "value": f"{email_user}@example.fr"},
            ],
            "gender": gender,
            "birthDate": birth,
            "address": [{"line": [line], "city": city, "postalCode": postal, "country": "FR"}],
            "generalPractitioner": [{"display": gp}],
        }
    )
    return res


def encounter(
    eid: str,
    patient_ref: str,
    cls: str,
    dept: Dept,
    start: int,
    end: int | None,
    participants: Iterable[tuple[str, Staff]],
    part_of: str = "",
) -> dict[str, Any]:
    period = {"start": format_recorded(start)}
    if end is not None:
        period["end"] = format_recorded(end)
    parts = []
    seen: set[tuple[str, int]] = set()
    for code, s in participants:
        if (code, s.idx) in seen:
            continue
        seen.add((code, s.idx))
        ptype: dict[str, Any] = {"coding": [{"system": _PARTICIPATION_SYSTEM, "code": code}]}
        if code == "PART":
            ptype["text"] = s.role
        parts.append({"type": [ptype], "individual": {"reference": f"Practitioner/{s.practitioner_id}"}})
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished" if end is not None else "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls},
        "subject": {"reference": patient_ref},
        "participant": parts,
        "period": period,
        "serviceProvider": {"reference": f"Organization/{dept.id}"},
    }
    if part_of:
        res["partOf"] = {"reference": f"Encounter/{part_of}"}
    return res


def appointment(
    aid: str,
    patient_ref: str,
    doctor: Staff,
    start: int,
    end: int,
    status: str,
    created: int,
    booked_by: Device | None,
    service: str,
) -> dict[str, Any]:
    participants: list[dict[str, Any]] = [
        {"actor": {"reference": patient_ref}, "status": "accepted"},
        {"actor": {"reference": f"Practitioner/{doctor.practitioner_id}"}, "status": "accepted"},
        {"actor": {"reference": f"PractitionerRole/{doctor.role_id}"}, "status": "accepted"},
    ]
    if booked_by is not None:
        participants.append({"actor": {"reference": f"Device/{booked_by.id}"}, "status": "accepted"})
    return {
        "resourceType": "Appointment",
        "id": aid,
        "extension": [{"url": _DEPARTMENT_EXT, "valueReference": {"reference": f"Organization/{doctor.dept.id}"}}],
        "status": status,
        "serviceType": [{"text": service}],
        "specialty": [{"text": doctor.specialty or doctor.dept.specialty}],
        "start": format_recorded(start),
        "end": format_recorded(end),
        "created": format_recorded(created)[:10],
        "participant": participants,
    }


def care_team(
    cid: str, patient_ref: str, dept: Dept, members: list[Staff], start: int, end: int, name: str
) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": cid,
        "status": "active",
        "name": name,
        "subject": {"reference": patient_ref},
        "period": {"start": format_recorded(start), "end": format_recorded(end)},
        "participant": [
            {"role": [{"text": m.role}], "member": {"reference": f"Practitioner/{m.practitioner_id}"}} for m in members
        ],
        "managingOrganization": [{"reference": f"Organization/{dept.id}"}],
    }


class ContextWriter:
    """Streams care-context resources to `<dir>/<ResourceType>.ndjson` as they become final.

    Encounters and appointments are written when the simulator knows their last state
    (discharge, the appointment's day), so memory stays bounded on long runs.
    """

    def __init__(self, directory: Any) -> None:
        from pathlib import Path

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Any] = {}
        self._enc = msgspec.json.Encoder()
        self.counts: dict[str, int] = {}

    def write(self, resource: dict[str, Any]) -> None:
        rtype = resource["resourceType"]
        f = self._files.get(rtype)
        if f is None:
            f = (self.dir / f"{rtype}.ndjson").open("wb", buffering=1 << 20)
            self._files[rtype] = f
        f.write(self._enc.encode(resource) + b"\n")
        self.counts[rtype] = self.counts.get(rtype, 0) + 1

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
