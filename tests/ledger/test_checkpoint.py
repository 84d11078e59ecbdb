"""Checkpoints are signed, chained and exported to a witness file and a webhook that may be down."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest
from ledger_factory import make_events

from sentinelle.ledger import (
    Checkpoint,
    Keyring,
    Ledger,
    LedgerError,
    LedgerReader,
    LedgerSettings,
    SigningKey,
    Witness,
)
from sentinelle.ledger.checkpoint import make_checkpoint, parse_body, read_witness


class _Sink(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    """A real HTTP server on loopback that records the POST bodies."""
    received: list[bytes] = []
    handler = type("Sink", (_Sink,), {"received": received})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/checkpoints", received
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_checkpoint_bodies_are_signed_chained_and_canonical() -> None:
    key = SigningKey.generate()
    a = make_checkpoint(key, "L", 0, 10, bytes(32), 1000, None, "first")
    b = make_checkpoint(key, "L", 1, 20, bytes(range(32)), 2000, a, "multi\nline")
    assert b.prev == a.hash() and b.note == "multi line"
    assert a.signature_ok(key.public) and b.signature_ok(key.public)
    assert not msgspec.structs.replace(b, size=21).signature_ok(key.public)
    assert not b.signature_ok(SigningKey.generate().public)
    assert parse_body(b.body(), bytes.fromhex(b.signature), "x") == b
    with pytest.raises(LedgerError, match="x: malformed"):
        parse_body(b.body().replace(b"size 20", b"size twenty"), b"", "x")


def test_the_witness_file_and_webhook_get_every_checkpoint(tmp_path: Path, webhook: tuple[str, list[bytes]],
                                                           url: str) -> None:
    hook_url, received = webhook
    witness_file = tmp_path / "w" / "witness.jsonl"
    settings = LedgerSettings(checkpoint_events=50, witness_file=str(witness_file), witness_url=hook_url)
    key = SigningKey.generate()
    with Ledger.open(url, Keyring.generate(), signing_key=key, settings=settings) as ledger:
        ledger.append_batch(make_events(120))
        ledger.append_batch(make_events(10, start=120))
    # One checkpoint after 120 events (>= 50 since the last), one at close over 130.
    with LedgerReader.open(url) as reader:
        stored = reader.checkpoints()
    copies = read_witness(witness_file)
    assert [(c.n, c.size, c.note) for c in stored] == [(0, 120, ""), (1, 130, "close")]
    assert [c.n for c in copies] == [0, 1]
    assert [c.body() for c in copies] == [c.body() for c in stored]
    assert all(c.public_key == key.public_text for c in copies)
    posted = [msgspec.json.decode(b, type=Checkpoint) for b in received]
    assert [c.signature for c in posted] == [c.signature for c in stored]


def test_a_webhook_that_is_down_gets_the_checkpoints_later(tmp_path: Path, webhook: tuple[str, list[bytes]],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    key = SigningKey.generate()
    cps = [make_checkpoint(key, "L", 0, 1, bytes(32), 1, None)]
    cps.append(make_checkpoint(key, "L", 1, 2, bytes(32), 2, cps[0]))
    down = Witness(file=tmp_path / "w.jsonl", url=f"http://127.0.0.1:{_free_port()}/", timeout=1, retry=60)
    down.export(cps[:1], key.public_text)  # returns at once: the webhook is called in the background
    assert not down.flush(timeout=1.0)
    assert down.pending == 1 and "could not be reached" in caplog.text
    # The file got its copy once; the webhook comes back and receives both, in order,
    # woken by the next checkpoint rather than the 60 s retry.
    hook_url, received = webhook
    down.url = hook_url
    down.export(cps[1:], key.public_text)
    assert down.flush(timeout=5.0) and down.pending == 0
    down.close()
    assert [msgspec.json.decode(b, type=Checkpoint).n for b in received] == [0, 1]
    assert [c.n for c in read_witness(tmp_path / "w.jsonl")] == [0, 1]


def test_reopening_catches_the_witness_file_up(tmp_path: Path, url: str) -> None:
    key, ring = SigningKey.generate(), Keyring.generate()
    settings = LedgerSettings(checkpoint_events=50)
    with Ledger.open(url, ring, signing_key=key, settings=settings) as ledger:
        ledger.append_batch(make_events(60))
        ledger.append_batch(make_events(60, start=60))
    late = tmp_path / "late.jsonl"
    with Ledger.open(url, ring, signing_key=key,
                     settings=LedgerSettings(checkpoint_events=50, witness_file=str(late))) as ledger:
        assert [c.n for c in read_witness(late)] == [c.n for c in ledger.checkpoints()] == [0, 1]
