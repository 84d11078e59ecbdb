"""Typed msgspec shapes of the FHIR resources the care context reads (R4, with R5 variants).

A hospital's context is hundreds of thousands of resources; decoding straight into typed
Structs that keep only the fields used (unknown fields are skipped by the decoder) is
several times faster than building dicts, and a wrong type is reported with its JSON path.
Where R4 and R5 differ in shape (Device.type, Encounter.period and participant), both are read.
"""

from __future__ import annotations

from typing import Union

import msgspec

__all__ = [
    "RESOURCE_TYPES",
    "Appointment",
    "Bundle",
    "CareTeam",
    "Device",
    "Encounter",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Resource",
    "resource_decoder",
]


class Coding(msgspec.Struct, frozen=True):
    system: str = ""
    code: str = ""
    display: str = ""


class CodeableConcept(msgspec.Struct, frozen=True):
    coding: list[Coding] = []
    text: str = ""


class Identifier(msgspec.Struct, frozen=True):
    system: str = ""
    value: str = ""


class Reference(msgspec.Struct, frozen=True):
    reference: str = ""
    identifier: Identifier | None = None
    display: str = ""


class Period(msgspec.Struct, frozen=True):
    start: str = ""
    end: str = ""


class Meta(msgspec.Struct, frozen=True):
    security: list[Coding] = []
    tag: list[Coding] = []
    source: str = ""


class Extension(msgspec.Struct, frozen=True):
    url: str = ""
    valueBoolean: bool | None = None
    valueString: str | None = None
    valueCode: str | None = None
    valueUri: str | None = None
    valueReference: Reference | None = None
    valueIdentifier: Identifier | None = None
    valueCodeableConcept: CodeableConcept | None = None


class HumanName(msgspec.Struct, frozen=True):
    family: str = ""
    given: list[str] = []
    use: str = ""
    text: str = ""


class Address(msgspec.Struct, frozen=True):
    line: list[str] = []
    postalCode: str = ""
    city: str = ""
    use: str = ""
    text: str = ""


class Annotation(msgspec.Struct, frozen=True):
    text: str = ""


class _Base(msgspec.Struct, frozen=True, tag_field="resourceType"):
    id: str = ""
    meta: Meta | None = None


class Patient(_Base, tag="Patient", frozen=True):
    identifier: list[Identifier] = []
    name: list[HumanName] = []
    birthDate: str = ""
    address: list[Address] = []


class Practitioner(_Base, tag="Practitioner", frozen=True):
    identifier: list[Identifier] = []
    name: list[HumanName] = []
    birthDate: str = ""
    address: list[Address] = []


class PractitionerRole(_Base, tag="PractitionerRole", frozen=True):
    extension: list[Extension] = []
    identifier: list[Identifier] = []
    active: bool | None = None
    practitioner: Reference | None = None
    organization: Reference | None = None
    code: list[CodeableConcept] = []
    period: Period | None = None


class Organization(_Base, tag="Organization", frozen=True):
    identifier: list[Identifier] = []
    name: str = ""
    partOf: Reference | None = None


class DeviceProperty(msgspec.Struct, frozen=True):
    type: CodeableConcept | None = None
    valueCode: list[CodeableConcept] = []  # R4
    valueString: str = ""  # R5
    valueCodeableConcept: CodeableConcept | None = None  # R5


class DeviceName(msgspec.Struct, frozen=True):
    name: str = ""
    value: str = ""  # R5


class Device(_Base, tag="Device", frozen=True):
    extension: list[Extension] = []
    identifier: list[Identifier] = []
    status: str = ""
    # R4: one CodeableConcept; R5: a list of them.
    type: CodeableConcept | list[CodeableConcept] | None = None
    deviceName: list[DeviceName] = []
    owner: Reference | None = None
    note: list[Annotation] = []
    property: list[DeviceProperty] = []


class EncounterParticipant(msgspec.Struct, frozen=True):
    individual: Reference | None = None  # R4
    actor: Reference | None = None  # R5


class Encounter(_Base, tag="Encounter", frozen=True):
    extension: list[Extension] = []
    status: str = ""
    subject: Reference | None = None
    participant: list[EncounterParticipant] = []
    serviceProvider: Reference | None = None
    period: Period | None = None  # R4
    actualPeriod: Period | None = None  # R5


class AppointmentParticipant(msgspec.Struct, frozen=True):
    actor: Reference | None = None
    status: str = ""


class Appointment(_Base, tag="Appointment", frozen=True):
    extension: list[Extension] = []
    status: str = ""
    start: str = ""
    end: str = ""
    minutesDuration: int | None = None
    created: str = ""
    participant: list[AppointmentParticipant] = []
    subject: Reference | None = None  # R5


class CareTeamParticipant(msgspec.Struct, frozen=True):
    member: Reference | None = None
    onBehalfOf: Reference | None = None
    period: Period | None = None


class CareTeam(_Base, tag="CareTeam", frozen=True):
    status: str = ""
    subject: Reference | None = None
    participant: list[CareTeamParticipant] = []
    period: Period | None = None
    managingOrganization: list[Reference] = []


class BundleEntry(msgspec.Struct, frozen=True):
    fullUrl: str = ""
    resource: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent


class Bundle(_Base, tag="Bundle", frozen=True):
    entry: list[BundleEntry] = []


Resource = Union[  # noqa: UP007 - a runtime union object msgspec can decode into
    Patient,
    Practitioner,
    PractitionerRole,
    Organization,
    Device,
    Encounter,
    Appointment,
    CareTeam,
    Bundle,
]

#: resourceType values the context reads; others are skipped and counted.
RESOURCE_TYPES = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Device",
        "Encounter",
        "Appointment",
        "CareTeam",
        "Bundle",
    }
)


class _Kind(msgspec.Struct):
    resourceType: str = ""


_kind_decoder = msgspec.json.Decoder(_Kind)


def resource_decoder() -> msgspec.json.Decoder[Resource]:
    """A decoder from JSON bytes to one of the context's resource types."""
    return msgspec.json.Decoder(Resource)


def resource_type_of(data: bytes) -> str | None:
    """The resourceType of a JSON object, or None when it is not a JSON object."""
    try:
        return _kind_decoder.decode(data).resourceType
    except msgspec.DecodeError:
        return None
