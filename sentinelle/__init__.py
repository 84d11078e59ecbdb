"""Sentinelle: watch what legitimate accounts do with patient records.

The public API is small on purpose: the access event, the readers, the care context,
and the errors. Everything else is reached through its stage package
(`sentinelle.sources`, `sentinelle.context`, `sentinelle.detect`, `sentinelle.simulate`).
"""

from __future__ import annotations

from sentinelle.errors import (
    ConfigError,
    ContextError,
    InputFormatError,
    RecordError,
    SentinelleError,
)
from sentinelle.events import AccessEvent, Action, ActorKind, Category, Outcome

__version__ = "0.1.0"

__all__ = [
    "AccessEvent",
    "Action",
    "ActorKind",
    "Category",
    "ConfigError",
    "ContextError",
    "InputFormatError",
    "Outcome",
    "RecordError",
    "SentinelleError",
    "__version__",
]
