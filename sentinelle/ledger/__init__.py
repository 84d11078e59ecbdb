"""The tamper-evident ledger: every accepted access event, hash-chained, signed and protected.

Public API: `Ledger` (the single writer: `append_batch`, checkpoints, retention, proofs,
reads, `on_append`), `LedgerReader` (reads only), `verify` and its `VerifyReport`, the
key helpers and the RFC 9162 proof verifiers. docs/ledger.md explains the format.

>>> from sentinelle.ledger import merkle
>>> merkle.root_of([]) == merkle.EMPTY_ROOT
True
"""

from __future__ import annotations

from sentinelle.ledger import merkle
from sentinelle.ledger.checkpoint import Checkpoint, Witness, read_witness
from sentinelle.ledger.errors import LedgerError, LedgerKeyError, LedgerLockedError
from sentinelle.ledger.keys import Keyring, SigningKey, load_keyring, load_signing_key
from sentinelle.ledger.ledger import (
    LEDGER_SOURCE,
    Appended,
    ConsistencyProof,
    InclusionProof,
    Ledger,
    LedgerReader,
    RetentionResult,
    StoredEvent,
)
from sentinelle.ledger.merkle import verify_consistency, verify_inclusion
from sentinelle.ledger.settings import SETTINGS, LedgerSettings
from sentinelle.ledger.store import LedgerStore, open_store
from sentinelle.ledger.verify import Problem, VerifyReport, verify

__all__ = [
    "LEDGER_SOURCE",
    "SETTINGS",
    "Appended",
    "Checkpoint",
    "ConsistencyProof",
    "InclusionProof",
    "Keyring",
    "Ledger",
    "LedgerError",
    "LedgerKeyError",
    "LedgerLockedError",
    "LedgerReader",
    "LedgerSettings",
    "LedgerStore",
    "Problem",
    "RetentionResult",
    "SigningKey",
    "StoredEvent",
    "VerifyReport",
    "Witness",
    "load_keyring",
    "load_signing_key",
    "merkle",
    "open_store",
    "read_witness",
    "verify",
    "verify_consistency",
    "verify_inclusion",
]
