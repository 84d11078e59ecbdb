"""The incident's records: what was selected, what happened, and what the scope holds.

Why typed records: an `Incident` crosses the store, the documents and the CLI, and a
`ScopeSummary` is copied into the CNIL notification and the timeline; one definition
of each (msgspec Structs, JSON in the store) keeps them from drifting. Times are
integer milliseconds since the epoch, UTC, like `AccessEvent.time`.
"""

from __future__ import annotations

import msgspec

from sentinelle.events import Category

__all__ = [
    "AWARENESS_HOURS",
    "HEALTH_CATEGORIES",
    "NIR_CATEGORIES",
    "ActorCount",
    "AlertRef",
    "CategoryCount",
    "Clock",
    "Establishment",
    "Incident",
    "Note",
    "PatientExposure",
    "ScopeSummary",
    "Selector",
    "clock",
]

#: GDPR Art. 33: the supervisory authority is told within 72 hours of awareness.
AWARENESS_HOURS = 72
HOUR_MS = 3_600_000

#: Categories that are health data under GDPR Art. 9. An appointment at a health
#: establishment reveals that the person receives care there, and the specialist's name
#: reveals what kind (the Doctolib 2020 comment in the seeds): both count.
HEALTH_CATEGORIES = int(
    Category.APPOINTMENT | Category.SPECIALTY | Category.CLINICAL | Category.PRESCRIPTION | Category.ALLERGY
    | Category.LAB | Category.DOCUMENT | Category.IMAGING
)
#: The national identifier (NIR/INS), whose use French law restricts.
NIR_CATEGORIES = int(Category.NATIONAL_ID)


class Selector(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Which accesses belong to an incident: every field given must match (empty = any).

    `addresses` holds exact addresses or CIDR blocks (`185.220.101.0/24`). `start` is
    inclusive, `end` exclusive. `unexplained_only` keeps the accesses the care context
    does not explain: an insider snooping from their usual workstation is separated from
    their own legitimate work that way. `explaining` is the `sentinelle.context.Reason` mask
    that counts as an explanation then (0: any reason); a platform account whose owner
    department treats half the hospital is better judged on encounters, appointments and
    care teams only. `label` says where the selector came from.
    """

    accounts: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    start: int | None = None
    end: int | None = None
    unexplained_only: bool = False
    explaining: int = 0
    label: str = ""


class AlertRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What an incident keeps of an alert it groups (for the timeline and the documents)."""

    id: str
    account: str
    time: int
    severity: str
    kind: str
    summary: str
    first_event: int
    last_event: int
    patient_count: int = 0
    client: str = ""
    address: str = ""
    summary_en: str = ""


class Note(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A dated fact of the response (account disabled, complaint filed...), for the timeline."""

    time: int
    text: str
    author: str = ""
    kind: str = "action"  # action | finding | communication | decision


class Incident(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A personal data breach being handled: its selectors, its clock and what was done.

    `aware` is when the establishment became aware of the breach: the 72-hour clock of
    GDPR Art. 33 starts there. `origin` follows the CNIL form (internal or external,
    malicious or accidental). `leaked` is set when the data was found outside (a forum
    sample): the ENISA circumstances then count an unknown number of recipients.
    """

    id: str
    title: str
    opened: int
    aware: int
    selectors: list[Selector]
    status: str = "open"  # open | contained | notified | closed
    alerts: list[AlertRef] = msgspec.field(default_factory=list)
    origin: str = "external_malicious"  # internal|external _ malicious|accidental, or unknown
    malicious: bool = True
    leaked: bool = False
    integrity_loss: float | None = None  # ENISA CB override: 0, 0.25, 0.5
    availability_loss: float = 0.0
    description: str = ""
    discovery: str = ""
    measures_taken: list[str] = msgspec.field(default_factory=list)
    measures_planned: list[str] = msgspec.field(default_factory=list)
    notes: list[Note] = msgspec.field(default_factory=list)
    cnil_notified: int | None = None
    persons_informed: int | None = None
    dpc_adjustment: int = 0  # ENISA DPC adjustment decided by the DPO (-2..+2), with `dpc_reason`
    dpc_reason: str = ""


class Clock(msgspec.Struct, frozen=True):
    """The 72-hour clock of an incident at one moment."""

    aware: int
    deadline: int
    now: int
    remaining: int  # ms; negative when overdue
    notified: bool

    @property
    def overdue(self) -> bool:
        """Whether the deadline passed without the CNIL being notified."""
        return self.remaining < 0 and not self.notified

    def text(self, lang: str = "fr") -> str:
        """One line for every view of the incident, e.g. `CNIL : 41 h 12 min restant (échéance …)`."""
        from sentinelle.incident.texts import fmt_datetime, fmt_duration

        due = fmt_datetime(self.deadline, lang)
        if self.notified:
            return (f"CNIL notifiée (échéance {due})" if lang == "fr" else f"CNIL notified (deadline {due})")
        if self.remaining >= 0:
            left = fmt_duration(self.remaining, lang)
            return (f"Délai CNIL (72 h) : {left} restant, échéance {due}" if lang == "fr"
                    else f"CNIL deadline (72 h): {left} left, due {due}")
        late = fmt_duration(-self.remaining, lang)
        if lang == "fr":
            return f"Délai CNIL (72 h) DÉPASSÉ de {late} (échéance {due}) : joindre les motifs du retard"
        return f"CNIL deadline (72 h) OVERDUE by {late} (due {due}): give the reasons for the delay"


def clock(incident: Incident, now: int) -> Clock:
    """The 72-hour clock of `incident` at `now` (ms)."""
    deadline = incident.aware + AWARENESS_HOURS * HOUR_MS
    return Clock(incident.aware, deadline, now, deadline - now, incident.cnil_notified is not None)


class Establishment(msgspec.Struct, frozen=True, kw_only=True):
    """The controller as the documents name it: identity, DPO, official channels.

    `official_phone` and `website` are what letters tell patients to use to check a
    message that claims to come from the establishment (the anti-phishing advice).
    """

    name: str = "Centre hospitalier"
    legal_id: str = ""  # SIREN / FINESS
    address: str = ""
    sector: str = "Santé (établissement de santé)"
    phone: str = ""
    official_phone: str = ""
    website: str = ""
    dpo_name: str = ""
    dpo_email: str = ""
    dpo_phone: str = ""
    dpo_cnil_number: str = ""
    contact_name: str = ""
    contact_role: str = ""
    mail_from: str = ""
    timezone: str = "Europe/Paris"
    country: str = "FR"


class CategoryCount(msgspec.Struct, frozen=True):
    """Patients and records of one data category in a scope."""

    category: str
    patients: int
    records: int
    health: bool
    nir: bool


class ActorCount(msgspec.Struct, frozen=True):
    """One account, client application or network address of a scope with its figures."""

    name: str
    events: int
    patients: int
    first: int
    last: int
    failed: int = 0
    role: str = ""
    department: str = ""
    kind: str = ""


class ScopeSummary(msgspec.Struct, kw_only=True):
    """The figures of a scope: what the CNIL form and the timeline need.

    `patients` counts the persons whose data an access returned (successful accesses);
    `attempted_only` those touched only by denied or failed requests. `records` is the
    number of (access, patient) pairs returned, the "approximate number of records".
    """

    patients: int
    records: int
    events: int
    failed_events: int
    attempted_only: int
    categories: list[CategoryCount]
    accounts: list[ActorCount]
    clients: list[ActorCount]
    addresses: list[ActorCount]
    first: int | None
    last: int | None
    health_patients: int
    nir_patients: int
    decoys: int = 0
    restricted: int = 0
    writes: int = 0  # create/update/delete by the selected accesses: integrity
    exports: int = 0  # export/print: data taken out
    actions: dict[str, int] = msgspec.field(default_factory=dict)
    auth: dict[str, int] = msgspec.field(default_factory=dict)
    resolved: bool = False  # patients resolved to persons through the care context
    computed: int = 0
    source: str = ""


class PatientExposure(msgspec.Struct, frozen=True, gc=False):
    """One person in a scope: which of their data was returned, how often, when."""

    ref: str
    mask: int
    events: int
    first: int
    last: int

    @property
    def categories(self) -> list[str]:
        """Category names of the exposed data."""
        from sentinelle.events import category_names

        return category_names(self.mask)
