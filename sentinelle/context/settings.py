"""The care context's settings: the margins around care episodes, as one table.

A care relationship does not start at the first minute of a stay nor end at discharge:
records are prepared before admission, results and letters follow it. The margins say how
far around an episode an access is still explained. They are data (name, default, help)
so the documentation and the command line can list them, and a test keeps them in step.
"""

from __future__ import annotations

import msgspec

__all__ = ["SETTINGS", "ContextSettings", "Setting"]

DAY_MS = 86_400_000


class Setting(msgspec.Struct, frozen=True):
    """One setting: its name, default value and a one-sentence help."""

    name: str
    default: float
    help: str


#: Every care-context setting. Values are days (fractions allowed).
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "encounter_before_days",
        1.0,
        "An encounter explains accesses from this many days before its start (admission paperwork).",
    ),
    Setting(
        "encounter_after_days",
        30.0,
        "An encounter explains accesses until this many days after its end (results, letters, coding).",
    ),
    Setting(
        "appointment_before_days",
        30.0,
        "An appointment explains accesses from this many days before its start (preparation).",
    ),
    Setting(
        "appointment_after_days",
        30.0,
        "An appointment explains accesses until this many days after its end (follow-up).",
    ),
    Setting(
        "appointment_booking_grace_days",
        1 / 24,
        "An appointment explains nothing earlier than this before it was booked (its `created`), "
        "the time of looking the patient up to book it.",
    ),
    Setting(
        "care_team_after_days",
        0.0,
        "A care team explains accesses until this many days after its period ends.",
    ),
    Setting(
        "treated_before_days",
        730.0,
        "TREATED_BEFORE holds when the account's person took part in an encounter or appointment "
        "of the patient that started earlier and ended at most this many days before the access.",
    ),
)


class ContextSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Margins in days; build one with keywords to change a default.

    >>> ContextSettings(encounter_after_days=10).encounter_after_days
    10
    """

    encounter_before_days: float = 1.0
    encounter_after_days: float = 30.0
    appointment_before_days: float = 30.0
    appointment_after_days: float = 30.0
    appointment_booking_grace_days: float = 1 / 24
    care_team_after_days: float = 0.0
    treated_before_days: float = 730.0

    def ms(self, name: str) -> int:
        """A setting converted to milliseconds."""
        return int(float(getattr(self, name)) * DAY_MS)
