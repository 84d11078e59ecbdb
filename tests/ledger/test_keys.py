"""Ledger keys: generated on first use with owner-only permissions, loaded from files or the environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sentinelle.ledger import Keyring, LedgerKeyError, SigningKey, load_keyring, load_signing_key
from sentinelle.ledger.keys import KEYRING_ENV, SIGNING_ENV, public_key_from_text


def test_keys_are_generated_once_with_mode_0600(tmp_path: Path) -> None:
    kdir = tmp_path / "keys"
    ring = load_keyring(key_dir=kdir, env={})
    key = load_signing_key(key_dir=kdir, env={})
    assert stat.S_IMODE((kdir / "keyring.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((kdir / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(kdir.stat().st_mode) == 0o700
    # Loaded again, the same keys come back.
    again = load_keyring(key_dir=kdir, env={})
    assert again.pseudonym_key == ring.pseudonym_key and again.encryption_keys == ring.encryption_keys
    assert load_signing_key(key_dir=kdir, env={}).public_text == key.public_text
    assert (kdir / "signing.pub").read_text().strip() == key.public_text


def test_environment_variables_take_precedence_over_the_key_folder(tmp_path: Path) -> None:
    ring, key = Keyring.generate(), SigningKey.generate()
    env = {KEYRING_ENV: ring.to_json().decode(), SIGNING_ENV: key.pem().decode()}
    assert load_keyring(key_dir=tmp_path, env=env).pseudonym_key == ring.pseudonym_key
    assert load_signing_key(key_dir=tmp_path, env=env).id == key.id
    assert not (tmp_path / "keyring.json").exists()


def test_missing_or_broken_keys_say_where_and_why(tmp_path: Path) -> None:
    with pytest.raises(LedgerKeyError, match="keyring file not found"):
        load_keyring(tmp_path / "none.json", create=False)
    with pytest.raises(LedgerKeyError, match="no keyring"):
        load_keyring(env={})
    bad = tmp_path / "bad.json"
    bad.write_text('{"pseudonym_key": "!!", "encryption_keys": [], "current": "k1"}')
    with pytest.raises(LedgerKeyError, match=r"bad\.json"):
        load_keyring(bad)
    with pytest.raises(LedgerKeyError, match=SIGNING_ENV):
        load_signing_key(env={SIGNING_ENV: "not a key"})


def test_rotation_adds_a_current_key_and_keeps_the_old(tmp_path: Path) -> None:
    ring = Keyring.generate()
    old = dict(ring.encryption_keys)
    assert ring.rotate() == "k2"
    assert ring.current == "k2" and ring.encryption_keys["k1"] == old["k1"]
    ring.save(tmp_path / "ring.json")
    assert load_keyring(tmp_path / "ring.json").current == "k2"


def test_public_keys_parse_from_base64_and_pem() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"checkpoint")
    public_key_from_text(key.public_text).verify(sig, b"checkpoint")
    with pytest.raises(LedgerKeyError):
        public_key_from_text("AAAA")
