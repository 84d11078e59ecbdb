"""The care context: who is who, who treats whom, and whether care explains an access.

Load it from FHIR resources (Organization, Practitioner, PractitionerRole, Device,
Patient, Encounter, Appointment, CareTeam) or from CSV exports through a TOML mapping,
then ask `explain(account, patient, time)` for each access. See docs/context.md.
"""

from __future__ import annotations

from sentinelle.context.care import CareContext
from sentinelle.context.model import AccountInfo, Reason
from sentinelle.context.settings import SETTINGS, ContextSettings, Setting

__all__ = ["SETTINGS", "AccountInfo", "CareContext", "ContextSettings", "Reason", "Setting"]
