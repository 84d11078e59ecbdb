"""Ledger settings as data: one table of name, default and help, and the struct that holds them.

Why a table: the docs and the CLI list every setting from it, and a test keeps
docs/ledger.md in step with it.
"""

from __future__ import annotations

import msgspec

__all__ = ["SETTINGS", "LedgerSettings"]


class LedgerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of one ledger; every field is listed in `SETTINGS`."""

    url: str = "sqlite:///sentinelle-ledger.db"
    key_dir: str = "sentinelle-keys"
    keyring_file: str = ""
    signing_key_file: str = ""
    checkpoint_events: int = 10_000
    checkpoint_seconds: float = 60.0
    witness_file: str = ""
    witness_url: str = ""
    retention_days: int = 365
    merkle_nodes: bool = True


#: (name, default, help) of every ledger setting, in the order the docs list them.
SETTINGS: tuple[tuple[str, object, str], ...] = (
    ("url", LedgerSettings().url,
     "Where the ledger lives: sqlite:///relative.db, sqlite:////absolute.db or "
     "postgresql://user@host:port/db?schema=name."),
    ("key_dir", LedgerSettings().key_dir,
     "Folder of keyring.json and signing.key, generated there with mode 0600 on first use."),
    ("keyring_file", "", "Keyring file (pseudonym and vault keys); overrides key_dir and $SENTINELLE_LEDGER_KEYRING."),
    ("signing_key_file", "",
     "Ed25519 checkpoint signing key (PEM); overrides key_dir and $SENTINELLE_LEDGER_SIGNING_KEY."),
    ("checkpoint_events", LedgerSettings().checkpoint_events, "Sign a checkpoint after this many new events."),
    ("checkpoint_seconds", LedgerSettings().checkpoint_seconds,
     "Sign a checkpoint when this many seconds passed since the last one and events arrived."),
    ("witness_file", "", "Append every checkpoint to this file (ideally on another host or an append-only mount)."),
    ("witness_url", "", "POST every checkpoint as JSON to this webhook."),
    ("retention_days", LedgerSettings().retention_days,
     "A retention run removes the payloads of events older than this many days (leaf hashes stay)."),
    ("merkle_nodes", True, "Store hashes of complete subtrees of 256+ leaves so proofs read O(log n) rows."),
)
