"""Bearer tokens of the service: each names a source or a user and a role; stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import tomllib
from collections.abc import Iterable
from pathlib import Path

import msgspec

from sentinelle.errors import ConfigError

log = logging.getLogger("sentinelle.service")

from sentinelle.service.config import Token  # noqa: E402

ROLES = ("source", "analyst", "metrics", "admin")

# ======================================================================================
# Tokens
# ======================================================================================


class Principal(msgspec.Struct, frozen=True):
    """Who made an API call: the token's name, its role, and the source name its events get."""

    name: str
    role: str
    source: str


def new_token() -> str:
    """A fresh random API token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a token, what a tokens file should hold instead of the token.

    >>> hash_token("abc")[:12]
    'ba7816bf8f01'
    """
    return hashlib.sha256(token.encode()).hexdigest()


class _Tokens(msgspec.Struct):
    tokens: list[Token] = msgspec.field(default_factory=list)


class TokenRegistry:
    """Bearer tokens mapped to principals; lookups compare every digest in constant time.

    Tokens are kept as SHA-256 digests: the file or memory leaking does not give them away.
    Each lookup hashes the presented token and compares it with every known digest with
    `hmac.compare_digest`, whatever matches, so the time taken tells nothing about them.
    """

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        names: set[str] = set()
        for t in tokens:
            if t.role not in ROLES:
                raise ConfigError(f"token {t.name!r}: role must be one of {', '.join(ROLES)}, got {t.role!r}")
            digest = t.sha256.lower().removeprefix("sha256:") if t.sha256 else (
                hash_token(t.token) if t.token else "")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"token {t.name!r}: needs sha256 (64 hex digits) or token")
            if t.name in names:
                raise ConfigError(f"token {t.name!r} is defined twice")
            names.add(t.name)
            self._entries.append((bytes.fromhex(digest), Principal(t.name, t.role, t.source or t.name)))

    @classmethod
    def load(cls, path: str | Path | None, extra: Iterable[Token] = ()) -> TokenRegistry:
        """Tokens of a TOML file (`[[tokens]]` tables) plus `extra` ones."""
        tokens = list(extra)
        if path:
            p = Path(path)
            try:
                doc = tomllib.loads(p.read_text(encoding="utf-8"))
                tokens += msgspec.convert(doc, _Tokens).tokens
            except OSError as exc:
                raise ConfigError(f"{p}: cannot read the tokens file: {exc.strerror}") from None
            except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
                raise ConfigError(f"{p}: {exc}") from None
        return cls(tokens)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of a presented token, or None."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for known, principal in self._entries:
            if hmac.compare_digest(known, digest):
                found = principal
        return found


