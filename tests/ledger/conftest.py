"""Shared fixtures of the ledger tests: both backends, keys, events, raw SQL for tampering.

PostgreSQL tests use the server on this machine (127.0.0.1:5432, trust auth, database
`test`; override with $SENTINELLE_TEST_PG); each test gets its own schema, dropped after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sentinelle.ledger import Keyring, SigningKey

PG = os.environ.get("SENTINELLE_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger URL in each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    problem = _pg_available()
    if problem is not None:
        message = f"PostgreSQL at {PG} is not reachable ({problem})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG}?schema={schema}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@pytest.fixture
def keyring() -> Keyring:
    """A fresh keyring."""
    return Keyring.generate()


@pytest.fixture
def signing_key() -> SigningKey:
    """A fresh signing key."""
    return SigningKey.generate()
