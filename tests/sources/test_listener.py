"""The live syslog listener, fed by util-linux `logger` (TCP, octet-counted and newline-framed, UDP),
by a TLS client, by hostile senders, and held back by a slow sink (TCP flow control)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sentinelle.events import AccessEvent
from sentinelle.sources import atna
from sentinelle.sources.listener import SyslogListener
from sentinelle.sources.quarantine import Quarantine

DICOM = Path(__file__).parents[2] / ".." / "shared" / "testdata" / "dicom-audit"
SAMPLES = ["query-03.xml", "patient-record-01.xml", "dicom-instances-accessed-12.xml", "data-export-01.xml",
           "security-alert-05.xml", "user-authentication-01.xml"]


def _samples() -> list[Path]:
    if not DICOM.is_dir():
        pytest.skip(f"DICOM audit samples absent ({DICOM})")
    return [DICOM / name for name in SAMPLES]


class Harness:
    """A listener on free ports in its own event loop thread; its sink collects events behind a gate."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.events: list[AccessEvent] = []
        self.origins: list[str] = []
        self.quarantine = Quarantine()
        self.gate = self._call(self._make_gate())
        self.listener = SyslogListener(self._sink, self.quarantine, **kwargs)
        self._call(self.listener.start())

    async def _make_gate(self) -> asyncio.Event:
        gate = asyncio.Event()
        gate.set()
        return gate

    async def _sink(self, events: list[AccessEvent], origin: str) -> None:
        await self.gate.wait()
        self.events.extend(events)
        self.origins.append(origin)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close_gate(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.clear)

    def open_gate(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def wait_for(self, n: int, timeout: float = 15.0) -> list[AccessEvent]:
        end = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < end:
            time.sleep(0.02)
        return list(self.events)

    def stop(self) -> None:
        self._call(self.listener.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    kwargs = getattr(request, "param", {"tcp_port": 0, "udp_port": 0})
    h = Harness(**kwargs)
    yield h
    h.stop()


def _logger(port: int, xml: str, *mode: str) -> None:
    if shutil.which("logger") is None:
        pytest.skip("util-linux logger is not installed")
    subprocess.run(["logger", "--server", "127.0.0.1", "--port", str(port), *mode, "--rfc5424",
                    "--msgid", "IHE+RFC-3881", "--size", "65536", "-t", "atna", xml], check=True, timeout=10)


def _key(e: AccessEvent) -> tuple[Any, ...]:
    return (e.id, e.account, e.action, e.patients, e.time)


def test_logger_over_tcp_both_framings(harness: Harness) -> None:
    files = _samples()
    port = harness.listener.ports["tcp"]
    for i, path in enumerate(files):
        mode = ("--tcp", "--octet-count") if i % 2 == 0 else ("--tcp",)
        _logger(port, path.read_text(), *mode)
    got = harness.wait_for(len(files))
    # The same message read from a file and received live is the same event.
    expected = [atna.parse_message(p.read_bytes()) for p in files]
    assert sorted(map(_key, got)) == sorted(map(_key, expected))
    assert harness.quarantine.count == 0
    assert all(o.startswith("syslog-tcp 127.0.0.1:") for o in harness.origins)


def test_logger_over_udp(harness: Harness) -> None:
    files = _samples()[:3]
    for path in files:
        _logger(harness.listener.ports["udp"], path.read_text(), "--udp")
    got = harness.wait_for(len(files))
    assert sorted(map(_key, got)) == sorted(_key(atna.parse_message(p.read_bytes())) for p in files)
    assert harness.listener.stats.datagrams == 3


def _cert(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    c, k = folder / "cert.pem", folder / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def _frame(xml: bytes, host: str = "pacs-01") -> bytes:
    msg = f"<85>1 2024-05-01T10:00:00.000+02:00 {host} dcm4chee 1 IHE+RFC-3881 - ".encode() + xml.strip()
    return str(len(msg)).encode() + b" " + msg


def test_tls_octet_counted_with_junk_quarantined(tmp_path: Path) -> None:
    files = _samples()
    cert, key = _cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    h = Harness(tls_port=0, ssl_context=server_ctx)
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        junk = b"17 <85>1 - - - - - hello\n"  # a frame whose message is no audit record
        data = _frame(files[0].read_bytes()) + junk + b"".join(_frame(p.read_bytes()) for p in files[1:])
        with socket.create_connection(("127.0.0.1", h.listener.ports["tls"])) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(data)
        got = h.wait_for(len(files))
        assert len(got) == len(files)
        assert h.origins[0].startswith("syslog-tls ")
        end = time.monotonic() + 5
        while h.quarantine.count < 1 and time.monotonic() < end:
            time.sleep(0.02)
        rejected = h.quarantine.kept[0]
        assert rejected.location == f"offset {len(_frame(files[0].read_bytes()))}"
        assert "no audit record" in rejected.reason or "no message" in rejected.reason
    finally:
        h.stop()


def test_plain_tcp_client_is_refused_by_the_tls_port(tmp_path: Path) -> None:
    cert, key = _cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    h = Harness(tls_port=0, ssl_context=server_ctx)
    try:
        with socket.create_connection(("127.0.0.1", h.listener.ports["tls"])) as s:
            s.sendall(_frame(_samples()[0].read_bytes()))
            s.settimeout(5)
            with pytest.raises((ConnectionError, socket.timeout, OSError)):
                while s.recv(1024):
                    pass
                raise ConnectionError("closed")
        assert h.events == []
    finally:
        h.stop()


def test_slow_sink_stops_reading_the_socket_and_loses_nothing(harness: Harness) -> None:
    """TCP flow control: while the sink waits, the listener reads no more, the sender blocks; then all arrive."""
    xml = _samples()[0].read_bytes()
    frames = [_frame(xml.replace(b"<AuditMessage", f"<AuditMessage seq=\"{i}\"".encode(), 1)) for i in range(6000)]
    payload = b"".join(frames)
    harness.close_gate()
    done = threading.Event()

    def send() -> None:
        with socket.create_connection(("127.0.0.1", harness.listener.ports["tcp"])) as s:
            s.sendall(payload)
        done.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(1.5)
    read_while_blocked = harness.listener.stats.bytes
    assert not done.is_set(), "the sender should be blocked by TCP flow control"
    assert read_while_blocked < len(payload) // 4
    time.sleep(0.5)
    assert harness.listener.stats.bytes == read_while_blocked  # nothing more read while the sink waits
    harness.open_gate()
    assert done.wait(30)
    got = harness.wait_for(len(frames), timeout=60)
    assert len(got) == len(frames) and len({e.id for e in got}) == len(frames)
    assert harness.quarantine.count == 0


@pytest.mark.parametrize("harness", [{"udp_port": 0, "udp_buffer": 5}], indirect=True)
def test_udp_overflow_is_counted_not_hidden(harness: Harness) -> None:
    xml = _samples()[0].read_bytes()
    harness.close_gate()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(60):
            msg = _frame(xml.replace(b"<AuditMessage", f"<AuditMessage seq=\"{i}\"".encode(), 1)).partition(b" ")[2]
            s.sendto(msg, ("127.0.0.1", harness.listener.ports["udp"]))
            time.sleep(0.002)
    end = time.monotonic() + 5
    st = harness.listener.stats
    while st.datagrams < 60 and time.monotonic() < end:
        time.sleep(0.02)
    harness.open_gate()
    got = harness.wait_for(60 - st.udp_dropped)
    assert st.udp_dropped > 0
    assert len(got) + st.udp_dropped == 60


def test_oversized_frame_is_quarantined_and_the_next_one_read() -> None:
    h = Harness(tcp_port=0, max_frame=8192)
    try:
        xml = _samples()[0].read_bytes()
        big = b"<85>1 - host app - IHE+RFC-3881 - " + b"<AuditMessage>" + b"x" * 20_000 + b"</AuditMessage>"
        with socket.create_connection(("127.0.0.1", h.listener.ports["tcp"])) as s:
            s.sendall(str(len(big)).encode() + b" " + big + b"\n" + _frame(xml))
        got = h.wait_for(1)
        assert [e.id for e in got] == [atna.parse_message(xml).id]
        assert h.quarantine.count >= 1
    finally:
        h.stop()


def test_logger_with_fhir_json_payload(harness: Harness) -> None:
    import io
    import json

    from sentinelle.sources import fhir_json

    sample = DICOM.parent / "fhir-r4" / "audit-event-example-vread.json"
    if not sample.is_file():
        pytest.skip(f"FHIR samples absent ({sample.parent})")
    text = json.dumps(json.loads(sample.read_text()))
    _logger(harness.listener.ports["tcp"], text, "--tcp", "--octet-count")
    got = harness.wait_for(1)
    expected = list(fhir_json.read(io.BytesIO(text.encode()), "file", Quarantine()))
    assert [_key(e) for e in got] == [_key(e) for e in expected]
