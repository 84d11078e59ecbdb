"""Alerts as ArcSight CEF over syslog, the format every SIEM reads (Splunk, QRadar, Wazuh, Sentinel).

Why CEF: a hospital's security team watches a SIEM, not Sentinelle's console; CEF is the
one event format all of them parse without a custom connector. Each alert becomes one
RFC 5424 syslog message whose MSG is a CEF record:

    <PRI>1 TIMESTAMP HOST sentinelle - CEF - CEF:0|Sentinelle|Sentinelle|VERSION|kind|summary|sev|ext

CEF severity (0-10) follows the alert severity (low 3, medium 6, high 8, critical 10) and
so does the syslog severity (notice, warning, error, critical). Extension keys are the
standard ones a SIEM maps without configuration (`suser` the account, `src` the address,
`start`/`end` the episode's first and last event, `externalId` the alert id, `cat` the
detector, `msg` the summary and evidence) plus labelled custom fields (episode, patient
count, score). Patient references are left out by default: a SIEM is read by many people
who have no need to know which patients were involved (`include_patients`).

Transports: UDP (RFC 5426, one datagram per alert), TCP (one connection kept open,
newline or octet-counting framing) and TCP over TLS (RFC 5425, octet-counting).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from typing import ClassVar

from sentinelle import __version__
from sentinelle.detect import Alert
from sentinelle.events import parse_time
from sentinelle.respond.channel import DeliveryError

__all__ = ["CEF_SEVERITY", "CefChannel", "format_cef", "format_syslog"]

#: CEF severity (0-10) of each alert severity.
CEF_SEVERITY = {"low": 3, "medium": 6, "high": 8, "critical": 10}
#: Syslog severity (RFC 5424 numeric) of each alert severity: notice, warning, error, critical.
_SYSLOG_SEVERITY = {"low": 5, "medium": 4, "high": 3, "critical": 2}
#: Largest UDP datagram sent; the `msg` field is shortened to fit (RFC 5426 advises staying small).
_UDP_MAX = 8192


def _header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _ext(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n"))


def _ms(iso: str) -> str:
    try:
        return str(parse_time(iso))
    except ValueError:
        return ""


def format_cef(alert: Alert, *, include_patients: bool = False, max_msg: int = 4000,
               received_ms: int | None = None) -> str:
    """The CEF record of an alert (without the syslog header).

    >>> from sentinelle.detect import Alert
    >>> a = Alert(id="ep-1-1", account="j|doe", time="2025-01-01T10:00:00+00:00", severity="high",
    ...           kind="volume", summary="a=b", evidence=[], patients=[], first_event="2025-01-01T09:00:00+00:00",
    ...           last_event="2025-01-01T10:00:00+00:00", score=0.93)
    >>> format_cef(a, received_ms=0).split("|")[:7]
    ['CEF:0', 'Sentinelle', 'Sentinelle', '0.1.0', 'volume', 'a=b', '8']
    """
    msg = alert.summary
    if alert.evidence:
        msg += " | " + " ; ".join(alert.evidence)
    if len(msg) > max_msg:
        msg = msg[: max_msg - 1] + "…"
    ext: list[tuple[str, str]] = [
        ("rt", str(received_ms if received_ms is not None else int(time.time() * 1000))),
        ("externalId", alert.id),
        ("cat", alert.kind),
        ("suser", alert.account),
    ]
    if alert.address:
        try:
            ipaddress.ip_address(alert.address)
            ext.append(("src", alert.address))
        except ValueError:
            ext.append(("shost", alert.address))
    if alert.client:
        ext.append(("requestClientApplication", alert.client))
    for key, iso in (("start", alert.first_event), ("end", alert.last_event)):
        ms = _ms(iso)
        if ms:
            ext.append((key, ms))
    ext += [
        ("cs1Label", "episode"), ("cs1", alert.episode),
        ("cn1Label", "patients"), ("cn1", str(alert.patient_count or len(alert.patients))),
        ("cfp1Label", "score"), ("cfp1", f"{alert.score:.4f}"),
    ]
    if alert.codes:
        ext += [("cs2Label", "evidence codes"), ("cs2", ",".join(alert.codes))]
    if include_patients and alert.patients:
        ext += [("cs3Label", "patients"), ("cs3", ",".join(alert.patients))]
    ext.append(("msg", msg))
    head = "|".join(_header(x) for x in (
        "CEF:0", "Sentinelle", "Sentinelle", __version__, alert.kind or "alert", alert.summary,
    ))
    return f"{head}|{CEF_SEVERITY.get(alert.severity, 5)}|" + " ".join(f"{k}={_ext(v)}" for k, v in ext)


def format_syslog(alert: Alert, cef: str, *, facility: int = 10, hostname: str | None = None) -> bytes:
    """An RFC 5424 syslog message carrying a CEF record (facility 10: authpriv by default)."""
    pri = facility * 8 + _SYSLOG_SEVERITY.get(alert.severity, 5)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    host = (hostname or socket.gethostname() or "-").replace(" ", "_")[:255]
    return f"<{pri}>1 {stamp} {host} sentinelle - CEF - {cef}".encode()


class CefChannel:
    """Sends each alert as CEF in a syslog message over UDP, TCP or TLS."""

    kind: ClassVar[str] = "cef"

    def __init__(self, host: str, port: int, *, protocol: str = "udp", name: str = "cef",
                 min_severity: str = "low", framing: str = "", include_patients: bool = False,
                 facility: int = 10, timeout_s: float = 5.0, tls_ca: str = "", tls_verify: bool = True) -> None:
        if protocol not in ("udp", "tcp", "tls"):
            raise ValueError(f"CEF protocol must be udp, tcp or tls, got {protocol!r}")
        self.host = host
        self.port = port
        self.protocol = protocol
        self.name = name
        self.min_severity = min_severity
        # RFC 5425 (TLS) mandates octet counting; plain TCP receivers mostly split on newlines.
        self.framing = framing or ("octet" if protocol == "tls" else "newline")
        self.include_patients = include_patients
        self.facility = facility
        self.timeout_s = timeout_s
        self.tls_ca = tls_ca
        self.tls_verify = tls_verify
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def message(self, alert: Alert) -> bytes:
        """The syslog message (without transport framing) sent for an alert."""
        cef = format_cef(alert, include_patients=self.include_patients,
                         max_msg=_UDP_MAX // 2 if self.protocol == "udp" else 16000)
        return format_syslog(alert, cef, facility=self.facility)

    def deliver(self, alert: Alert) -> None:
        """Send one alert; a broken TCP connection is reopened once before giving up."""
        data = self.message(alert)
        if self.protocol == "udp":
            try:
                with socket.socket(_family(self.host), socket.SOCK_DGRAM) as s:
                    s.sendto(data[:_UDP_MAX], (self.host, self.port))
            except OSError as exc:
                raise DeliveryError(self.name, f"cannot send the UDP datagram: {exc}") from None
            return
        frame = f"{len(data)} ".encode() + data if self.framing == "octet" else data + b"\n"
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._sock is None:
                        self._sock = self._connect()
                    self._sock.sendall(frame)
                    return
                except OSError as exc:
                    self._drop()
                    if attempt == 2:
                        raise DeliveryError(self.name, f"cannot send over {self.protocol}: {exc}") from None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        if self.protocol == "tls":
            ctx = ssl.create_default_context(cafile=self.tls_ca or None)
            if not self.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=self.host)
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the TCP connection, if any."""
        with self._lock:
            self._drop()


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET
