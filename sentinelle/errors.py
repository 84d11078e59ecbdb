"""The exceptions Sentinelle raises: one root, one subclass per kind of failure.

Each error says where (file, line, record id) and why, so an operator can act on it
without reading a stack trace.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContextError",
    "InputFormatError",
    "RecordError",
    "SentinelleError",
]


class SentinelleError(Exception):
    """Root of every error Sentinelle raises on purpose."""


class InputFormatError(SentinelleError):
    """A whole input is not in the declared or detected format."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class RecordError(SentinelleError):
    """One record cannot be turned into an access event; it goes to quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContextError(SentinelleError):
    """The care context cannot be loaded."""


class ConfigError(SentinelleError):
    """A mapping file or setting is invalid."""
