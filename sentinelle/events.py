"""The access event: one normalised record per access to patient data.

Every source turns its records into `AccessEvent`s and every later stage (context,
detection, ledger, incidents) reads only these. Millions flow through the system, so
the record is a compact msgspec Struct that the garbage collector does not track
(`gc=False`), times are integer milliseconds and data categories are a bit mask.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime

import msgspec

__all__ = [
    "ACTIONS",
    "ACTOR_KINDS",
    "OUTCOMES",
    "AccessEvent",
    "Action",
    "ActorKind",
    "Category",
    "Outcome",
    "category_mask",
    "category_names",
    "format_time",
    "parse_time",
]


class ActorKind:
    """Who made the request: a person, an application acting alone, a connected client, a patient."""

    HUMAN = "human"
    APPLICATION = "application"
    API_CLIENT = "api_client"
    PATIENT = "patient"


ACTOR_KINDS = (ActorKind.HUMAN, ActorKind.APPLICATION, ActorKind.API_CLIENT, ActorKind.PATIENT)


class Action:
    """What the request did to patient data."""

    READ = "read"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXPORT = "export"
    PRINT = "print"
    LOGIN = "login"
    LOGOUT = "logout"
    LOGIN_FAILED = "login_failed"
    BREAK_GLASS = "break_glass"
    OTHER = "other"


ACTIONS = (
    Action.READ,
    Action.SEARCH,
    Action.CREATE,
    Action.UPDATE,
    Action.DELETE,
    Action.EXPORT,
    Action.PRINT,
    Action.LOGIN,
    Action.LOGOUT,
    Action.LOGIN_FAILED,
    Action.BREAK_GLASS,
    Action.OTHER,
)


class Outcome:
    """Whether the request succeeded."""

    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


OUTCOMES = (Outcome.SUCCESS, Outcome.DENIED, Outcome.ERROR)


class Category(enum.IntFlag):
    """Data categories an access touches; several at once form a bit mask."""

    IDENTITY = 1
    CONTACT = 2
    NATIONAL_ID = 4
    APPOINTMENT = 8
    SPECIALTY = 16
    CLINICAL = 32
    PRESCRIPTION = 64
    ALLERGY = 128
    LAB = 256
    DOCUMENT = 512
    IMAGING = 1024
    BILLING = 2048


_CATEGORY_BY_NAME = {c.name.lower(): c.value for c in Category if c.name}
_NAMES_BY_BIT = [(c.value, c.name.lower()) for c in Category if c.name]

#: Categories that are special-category (health) data or a national identifier under GDPR.
SENSITIVE_CATEGORIES = int(
    Category.NATIONAL_ID
    | Category.SPECIALTY
    | Category.CLINICAL
    | Category.PRESCRIPTION
    | Category.ALLERGY
    | Category.LAB
    | Category.DOCUMENT
    | Category.IMAGING
)


def category_mask(names: Iterable[str]) -> int:
    """Bit mask of category names; unknown names raise `KeyError`.

    >>> category_mask(["identity", "contact"])
    3
    """
    mask = 0
    for name in names:
        mask |= _CATEGORY_BY_NAME[name]
    return mask


def category_names(mask: int) -> list[str]:
    """Category names of a bit mask, in declaration order.

    >>> category_names(5)
    ['identity', 'national_id']
    """
    return [name for bit, name in _NAMES_BY_BIT if mask & bit]


class AccessEvent(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One access to patient data, as every stage after the sources sees it.

    `time` is milliseconds since the Unix epoch, UTC. `patients` holds the patient
    references as the source named them (`Patient/123`, `system|value`); the care
    context resolves them to one person. `categories` is a `Category` bit mask.
    `auth` records what is known of the authentication ("password", "mfa", "card",
    "oauth", "" when unknown).
    """

    id: str
    time: int
    account: str
    action: str
    actor_kind: str = ActorKind.HUMAN
    outcome: str = Outcome.SUCCESS
    patients: tuple[str, ...] = ()
    categories: int = 0
    client: str = ""
    address: str = ""
    session: str = ""
    source: str = ""
    query: str = ""
    auth: str = ""
    purpose: str = ""


def parse_time(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 / FHIR instant; naive times are UTC.

    >>> parse_time("2024-01-02T03:04:05.678Z")
    1704164645678
    """
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000 + (0.5 if dt.timestamp() >= 0 else -0.5))


def format_time(ms: int) -> str:
    """ISO 8601 UTC text of a millisecond time.

    >>> format_time(1704164645678)
    '2024-01-02T03:04:05.678Z'
    """
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
