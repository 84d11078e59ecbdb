"""Errors of the ledger: one subclass of `SentinelleError` per kind of failure."""

from __future__ import annotations

from sentinelle.errors import SentinelleError

__all__ = ["LedgerError", "LedgerKeyError", "LedgerLockedError"]


class LedgerError(SentinelleError):
    """The ledger cannot be opened, written or read as asked."""


class LedgerKeyError(LedgerError):
    """A ledger key file or key variable is missing, unreadable or malformed."""


class LedgerLockedError(LedgerError):
    """Another process already writes this ledger (the design has a single writer)."""
