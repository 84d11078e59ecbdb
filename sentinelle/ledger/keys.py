"""Ledger keys: the keyring that protects records at rest and the checkpoint signing key.

Why two kinds: the keyring (an HMAC key for pseudonyms, AES-GCM keys for the vault) is
needed to write and to read clear patient data, and is rotated; the Ed25519 signing key
only signs checkpoints, and its public half is all a verifier needs. Keys come from a
file or an environment variable (for containers and secret managers) and, when neither
exists, are generated on first use into a key folder readable by the owner only (0600).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sentinelle.ledger.errors import LedgerKeyError

__all__ = [
    "KEYRING_ENV",
    "KEYRING_FILE",
    "SIGNING_ENV",
    "SIGNING_FILE",
    "EncryptionKey",
    "Keyring",
    "SigningKey",
    "load_keyring",
    "load_signing_key",
    "public_key_from_text",
    "public_key_id",
]

#: Environment variable holding the whole keyring as JSON (the file format below).
KEYRING_ENV = "SENTINELLE_LEDGER_KEYRING"
#: Environment variable holding the Ed25519 signing key: PEM text or base64 of the 32-byte seed.
SIGNING_ENV = "SENTINELLE_LEDGER_SIGNING_KEY"
#: File names inside the key folder.
KEYRING_FILE = "keyring.json"
SIGNING_FILE = "signing.key"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise LedgerKeyError(f"{where}: not valid base64") from exc


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file atomically with mode 0600, creating its folder with mode 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class EncryptionKey(msgspec.Struct, frozen=True):
    """One AES-256-GCM key of the vault, named by `id` (stored with every record it seals)."""

    id: str
    key: str  # base64 of 32 bytes
    created: int = 0  # ms since epoch

    def raw(self) -> bytes:
        """The 32 key bytes."""
        data = _unb64(self.key, f"keyring: encryption key {self.id!r}")
        if len(data) != 32:
            raise LedgerKeyError(f"keyring: encryption key {self.id!r} has {len(data)} bytes, not 32")
        return data


class _KeyringFile(msgspec.Struct):
    pseudonym_key: str
    encryption_keys: list[EncryptionKey]
    current: str
    version: int = 1


class Keyring:
    """The HMAC pseudonym key and the AES-GCM vault keys, with the id of the newest one.

    New records are sealed with `current`; every older key stays in the ring so old
    records stay readable. The pseudonym key is never rotated: a patient's pseudonym
    must stay the same for scope queries to group their accesses (docs/ledger.md).
    """

    def __init__(self, pseudonym_key: bytes, encryption_keys: Mapping[str, bytes], current: str,
                 created: Mapping[str, int] | None = None, path: Path | None = None) -> None:
        if len(pseudonym_key) < 32:
            raise LedgerKeyError("keyring: the pseudonym key must have at least 32 bytes")
        if current not in encryption_keys:
            raise LedgerKeyError(f"keyring: the current key {current!r} is not in the ring")
        self.pseudonym_key = pseudonym_key
        self.encryption_keys = dict(encryption_keys)
        self.current = current
        self.created = dict(created or {})
        self.path = path

    @classmethod
    def generate(cls) -> Keyring:
        """A fresh keyring with one encryption key."""
        return cls(secrets.token_bytes(32), {"k1": secrets.token_bytes(32)}, "k1",
                   {"k1": int(time.time() * 1000)})

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "keyring") -> Keyring:
        """Parse the keyring file format."""
        try:
            data = msgspec.json.decode(text, type=_KeyringFile)
        except msgspec.DecodeError as exc:
            raise LedgerKeyError(f"{where}: {exc}") from exc
        keys = {k.id: k.raw() for k in data.encryption_keys}
        return cls(_unb64(data.pseudonym_key, f"{where}: pseudonym_key"), keys, data.current,
                   {k.id: k.created for k in data.encryption_keys})

    def to_json(self) -> bytes:
        """The keyring file format (JSON), secrets included."""
        data = _KeyringFile(
            pseudonym_key=_b64(self.pseudonym_key),
            encryption_keys=[EncryptionKey(kid, _b64(raw), self.created.get(kid, 0))
                             for kid, raw in self.encryption_keys.items()],
            current=self.current,
        )
        return json.dumps(msgspec.to_builtins(data), indent=2).encode() + b"\n"

    def save(self, path: str | Path) -> None:
        """Write the keyring to `path` with mode 0600."""
        self.path = Path(path)
        _write_private(self.path, self.to_json())

    def rotate(self) -> str:
        """Add a new encryption key and make it current; returns its id. Call `save` after."""
        n = len(self.encryption_keys) + 1
        while f"k{n}" in self.encryption_keys:
            n += 1
        kid = f"k{n}"
        self.encryption_keys[kid] = secrets.token_bytes(32)
        self.created[kid] = int(time.time() * 1000)
        self.current = kid
        return kid


def load_keyring(path: str | Path | None = None, *, key_dir: str | Path | None = None,
                 env: Mapping[str, str] | None = None, create: bool = True) -> Keyring:
    """The keyring from `path`, else from $SENTINELLE_LEDGER_KEYRING, else `key_dir`/keyring.json.

    In the key folder a missing keyring is generated when `create` is true.
    """
    env = os.environ if env is None else env
    if path is not None:
        p = Path(path)
        if not p.exists():
            if not create:
                raise LedgerKeyError(f"{p}: keyring file not found")
            ring = Keyring.generate()
            ring.save(p)
            return ring
        ring = Keyring.from_json(p.read_bytes(), str(p))
        ring.path = p
        return ring
    if env.get(KEYRING_ENV):
        return Keyring.from_json(env[KEYRING_ENV], f"${KEYRING_ENV}")
    if key_dir is None:
        raise LedgerKeyError(f"no keyring: give a key file, set ${KEYRING_ENV} or name a key folder")
    return load_keyring(Path(key_dir) / KEYRING_FILE, create=create)


def public_key_id(public: Ed25519PublicKey) -> str:
    """Short stable name of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """Base64 of the raw 32-byte public key (the form stored in the ledger and the witness)."""
    return _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key from base64 raw bytes or PEM text."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise LedgerKeyError("public key: not an Ed25519 key")
            return key
        return Ed25519PublicKey.from_public_bytes(_unb64(text, "public key"))
    except ValueError as exc:
        raise LedgerKeyError(f"public key: {exc}") from exc


class SigningKey:
    """The Ed25519 key that signs checkpoints."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        self.id = public_key_id(self.public)
        self.public_text = public_key_text(self.public)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_text(cls, text: str, where: str) -> SigningKey:
        """Parse PEM (PKCS#8) text or base64 of the 32-byte seed."""
        text = text.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_private_key(text.encode(), password=None)
                if not isinstance(key, Ed25519PrivateKey):
                    raise LedgerKeyError(f"{where}: not an Ed25519 private key")
                return cls(key)
            return cls(Ed25519PrivateKey.from_private_bytes(_unb64(text, where)))
        except (ValueError, TypeError) as exc:
            raise LedgerKeyError(f"{where}: {exc}") from exc

    def pem(self) -> bytes:
        """PKCS#8 PEM of the private key."""
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature of `data`."""
        return self.private.sign(data)

    def save(self, path: str | Path) -> None:
        """Write the private key (0600) and, beside it, the public key (`.pub`, base64 raw)."""
        p = Path(path)
        _write_private(p, self.pem())
        p.with_suffix(".pub").write_text(self.public_text + "\n")


def load_signing_key(path: str | Path | None = None, *, key_dir: str | Path | None = None,
                     env: Mapping[str, str] | None = None, create: bool = True) -> SigningKey:
    """The signing key from `path`, else $SENTINELLE_LEDGER_SIGNING_KEY, else `key_dir`/signing.key."""
    env = os.environ if env is None else env
    if path is not None:
        p = Path(path)
        if not p.exists():
            if not create:
                raise LedgerKeyError(f"{p}: signing key file not found")
            key = SigningKey.generate()
            key.save(p)
            return key
        return SigningKey.from_text(p.read_text(), str(p))
    if env.get(SIGNING_ENV):
        return SigningKey.from_text(env[SIGNING_ENV], f"${SIGNING_ENV}")
    if key_dir is None:
        raise LedgerKeyError(f"no signing key: give a key file, set ${SIGNING_ENV} or name a key folder")
    return load_signing_key(Path(key_dir) / SIGNING_FILE, create=create)
