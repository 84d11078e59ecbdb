"""CEF over syslog, received by real UDP, TCP and TLS sockets opened by the test (a SIEM's side)."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from pathlib import Path

import msgspec
import pytest
from service_kit import make_alert, self_signed

from sentinelle.respond import CefChannel, DeliveryError, format_cef

_SYSLOG = re.compile(r"^<(\d+)>1 (\S+) (\S+) sentinelle - CEF - (CEF:.*)$", re.S)


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """Split a CEF record as a SIEM does: 7 header fields (\\| escapes), then key=value pairs (\\= escapes)."""
    fields: list[str] = []
    cur = ""
    i = 0
    while len(fields) < 7:
        c = text[i]
        if c == "\\" and text[i + 1] in "\\|":
            cur += text[i + 1]
            i += 2
            continue
        if c == "|":
            fields.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    ext_text = text[i:]
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9]+)=", ext_text))
    ext: dict[str, str] = {}
    for k, m in enumerate(keys):
        end = keys[k + 1].start() if k + 1 < len(keys) else len(ext_text)
        raw = ext_text[m.end():end]
        ext[m.group(1)] = raw.replace("\\=", "=").replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
    return fields, ext


def test_format_escapes_and_keys() -> None:
    alert = make_alert(1, severity="critical", account="dr|house=md")
    alert = msgspec.structs.replace(alert, summary="a|b=c\nd", evidence=["x=1", "back\\slash"])
    head, ext = parse_cef(format_cef(alert, received_ms=123))
    assert head == ["CEF:0", "Sentinelle", "Sentinelle", "0.1.0", "volume", "a|b=c d", "10"]
    assert ext["suser"] == "dr|house=md"
    assert ext["externalId"] == alert.id and ext["cat"] == "volume" and ext["rt"] == "123"
    assert ext["src"] == "10.1.2.3" and ext["cn1"] == "2" and ext["cs1"] == alert.episode
    assert ext["msg"] == "a|b=c\nd | x=1 ; back\\slash"
    assert "cs3" not in ext  # patient references stay out of the SIEM by default
    _, with_patients = parse_cef(format_cef(alert, include_patients=True))
    assert with_patients["cs3"] == "Patient/1,Patient/2"


def test_udp_datagram() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        channel = CefChannel("127.0.0.1", rx.getsockname()[1], protocol="udp")
        channel.deliver(make_alert(1, severity="medium"))
        data, _ = rx.recvfrom(65536)
    m = _SYSLOG.match(data.decode())
    assert m is not None
    assert int(m.group(1)) == 10 * 8 + 4  # authpriv.warning for a medium alert
    head, ext = parse_cef(m.group(4))
    assert head[6] == "6" and ext["suser"] == "j.martin"


def _tcp_receiver(server: socket.socket, out: list[bytes], tls: ssl.SSLContext | None = None) -> None:
    conn, _ = server.accept()
    if tls is not None:
        conn = tls.wrap_socket(conn, server_side=True)
    with conn:
        buf = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buf += chunk
    out.append(buf)


def test_tcp_newline_framing_keeps_one_connection() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    out: list[bytes] = []
    t = threading.Thread(target=_tcp_receiver, args=(server, out))
    t.start()
    channel = CefChannel("127.0.0.1", server.getsockname()[1], protocol="tcp")
    for i in range(3):
        channel.deliver(make_alert(i + 1))
    channel.close()
    t.join(5)
    server.close()
    lines = out[0].decode().splitlines()
    assert len(lines) == 3
    assert [parse_cef(_SYSLOG.match(line).group(4))[1]["externalId"] for line in lines] == [  # type: ignore[union-attr]
        make_alert(i + 1).id for i in range(3)]


def test_tls_octet_counting(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    out: list[bytes] = []
    t = threading.Thread(target=_tcp_receiver, args=(server, out, tls))
    t.start()
    channel = CefChannel("127.0.0.1", server.getsockname()[1], protocol="tls", tls_ca=str(cert))
    channel.deliver(make_alert(1))
    channel.close()
    t.join(5)
    server.close()
    length, _, frame = out[0].partition(b" ")
    assert int(length) == len(frame)  # RFC 5425 framing
    assert _SYSLOG.match(frame.decode())


def test_refused_connection_is_a_transient_failure() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    with pytest.raises(DeliveryError) as info:
        CefChannel("127.0.0.1", port, protocol="tcp", timeout_s=1).deliver(make_alert(1))
    assert not info.value.permanent
