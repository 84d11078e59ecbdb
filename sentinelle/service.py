"""The service behind `sentinelle serve`: live intake, durable ledger, online detection, alert delivery.

One process, four kinds of work, each where it is cheapest:

- the **event loop** (uvicorn's HTTP API and the syslog listener) reads requests and
  frames, decodes small inputs in place and large NDJSON bodies in a worker process,
  and waits; it never touches the database;
- the **writer thread** takes everything queued since its last commit and appends it
  to the ledger in one transaction (group commit: concurrent requests share one fsync),
  then wakes the requests: an HTTP request is answered 2xx only after its events are
  durable;
- the **detection thread** runs the same `Engine` as `sentinelle scan` on the events the
  ledger just stored, in ledger order, raises alerts into the alert store and writes
  snapshots of the engine state;
- the **dispatcher** threads deliver alerts (webhook, CEF syslog, e-mail).

Backpressure instead of loss: the intake queue is bounded (in events). An HTTP request
that arrives when it is nearly full gets 429 with Retry-After before its body is read;
a request already admitted waits for room; the syslog listener stops reading its
socket (TCP flow control). A full detection queue holds the writer, which fills the
intake queue: every stage slows the one before it, none drops what it accepted.

Restart: the engine state is snapshotted every `snapshot_seconds` (after the alerts it
raised are durable in the store) with the ledger position it reflects; on start the
snapshot is restored and the ledger tail after that position is replayed through the
engine. Alert ids are stable (episode id and version), so the replayed alerts already
in the store are recognised and not raised again, while an episode running at the
crash continues. See docs/service.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import fcntl
import gc
import hashlib
import hmac
import io
import itertools
import json
import logging
import operator
import os
import queue
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from sentinelle.context import CareContext
from sentinelle.detect import Alert, Engine, Settings, load_settings
from sentinelle.errors import ConfigError, InputFormatError, SentinelleError
from sentinelle.events import AccessEvent
from sentinelle.ledger import Appended, Ledger, LedgerSettings
from sentinelle.ledger.records import KIND_EVENT
from sentinelle.respond import (
    AlertStore,
    CefChannel,
    Channel,
    Dispatcher,
    EmailChannel,
    WebhookChannel,
)
from sentinelle.sources import atna, fhir_json, fhir_xml, mapped, syslog
from sentinelle.sources.listener import SyslogListener
from sentinelle.sources.mapped import Mapping, load_mapping
from sentinelle.sources.quarantine import Quarantine

__all__ = [
    "API_SOURCE",
    "SETTINGS",
    "BusyError",
    "CefConfig",
    "ClosingError",
    "DeliveryConfig",
    "EmailConfig",
    "HttpConfig",
    "IngestResult",
    "IntakeConfig",
    "Principal",
    "Service",
    "ServiceConfig",
    "SyslogConfig",
    "Token",
    "TokenRegistry",
    "WebhookConfig",
    "hash_token",
    "load_config",
    "new_token",
    "run_demo",
    "serve",
]

log = logging.getLogger("sentinelle.service")

#: Source name of the service's own audit records (who called the API): they go to the
#: ledger, tamper-evident like everything else, but not through detection.
API_SOURCE = "sentinelle-api"
ROLES = ("source", "analyst", "metrics", "admin")


# ======================================================================================
# Configuration
# ======================================================================================


class HttpConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The HTTP API."""

    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str = ""
    tls_key: str = ""
    max_body_bytes: int = 32 << 20
    max_resource_bytes: int = 1 << 20
    max_requests: int = 256


class SyslogConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The syslog listener (each port absent = that transport off)."""

    host: str = "127.0.0.1"
    tcp_port: int | None = None
    tls_port: int | None = None
    udp_port: int | None = None
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    udp_buffer: int = 10_000
    max_frame_bytes: int = 1 << 20


class IntakeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The bounded intake queue and group commit."""

    queue_events: int = 200_000
    batch_events: int = 4_000
    high_water: float = 0.8
    chunk_events: int = 2_000
    decode_workers: int = -1
    detection_queue_batches: int = 16


class DeliveryConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Retries of every delivery channel."""

    retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0


class WebhookConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One webhook receiver."""

    url: str
    secret: str = ""
    secret_env: str = ""
    name: str = "webhook"
    min_severity: str = "medium"
    timeout_s: float = 5.0


class CefConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One SIEM receiving CEF over syslog."""

    host: str
    port: int = 514
    protocol: str = "udp"
    framing: str = ""
    name: str = "cef"
    min_severity: str = "low"
    include_patients: bool = False
    tls_ca: str = ""


class EmailConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One SMTP relay and its recipients."""

    host: str
    port: int = 25
    sender: str
    recipients: list[str]
    security: str = "none"
    username: str = ""
    password_env: str = ""
    name: str = "email"
    min_severity: str = "high"
    lang: str = "fr"
    include_patients: bool = False
    console_url: str = ""


class Token(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One API token: who holds it, what it may do, and its SHA-256 (or, discouraged, the token itself)."""

    name: str
    role: str = "source"
    sha256: str = ""
    token: str = ""
    source: str = ""


class ServiceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything `sentinelle serve` reads from its TOML file; every field is in `SETTINGS`."""

    state_dir: str = "sentinelle-state"
    context: list[str] = msgspec.field(default_factory=list)
    context_mapping: str = ""
    tokens_file: str = ""
    tokens: list[Token] = msgspec.field(default_factory=list)
    mappings: dict[str, str] = msgspec.field(default_factory=dict)
    snapshot_seconds: float = 30.0
    snapshot_events: int = 1_000_000
    ready_file: str = ""
    ledger: LedgerSettings = msgspec.field(default_factory=LedgerSettings)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    syslog: SyslogConfig = msgspec.field(default_factory=SyslogConfig)
    intake: IntakeConfig = msgspec.field(default_factory=IntakeConfig)
    detection: dict[str, Any] = msgspec.field(default_factory=dict)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    webhook: list[WebhookConfig] = msgspec.field(default_factory=list)
    cef: list[CefConfig] = msgspec.field(default_factory=list)
    email: list[EmailConfig] = msgspec.field(default_factory=list)


#: (name, default, help) of every service setting, in the order docs/service.md lists them.
#: The ledger's own settings (`[ledger]`) are in docs/ledger.md, detection's (`[detection]`)
#: in docs/detection.md.
SETTINGS: tuple[tuple[str, object, str], ...] = (
    ("state_dir", "sentinelle-state", "Folder of the engine snapshot, alert store, audit log, quarantine and "
     "dead letters; relative paths in the file are relative to the file's folder."),
    ("context", [], "Care context: FHIR NDJSON/Bundle files or folders, loaded at start."),
    ("context_mapping", "", "TOML mapping for CSV files of the care context."),
    ("tokens_file", "", "TOML file of [[tokens]] (name, role, sha256, source); read at start."),
    ("tokens", [], "Tokens given in the configuration file itself, same fields as in tokens_file."),
    ("mappings", {}, "Named mappings for POST /ingest/{name}: name = mapping file; the shipped "
     "mappings (api_gateway_jsonl, dpi_csv_fr) are always available."),
    ("snapshot_seconds", 30.0, "Write the engine state at most this many seconds apart (restart replays "
     "the ledger after it)."),
    ("snapshot_events", 1_000_000, "...or after this many events, whichever comes first."),
    ("ready_file", "", "Once listening, write the bound ports here as JSON (for scripts and tests)."),
    ("http.host", "127.0.0.1", "Address the HTTP API listens on."),
    ("http.port", 8080, "Port of the HTTP API (0: any free port)."),
    ("http.tls_cert", "", "PEM certificate (chain) for HTTPS; empty = plain HTTP."),
    ("http.tls_key", "", "PEM private key for HTTPS."),
    ("http.max_body_bytes", 32 << 20, "Largest bulk, Bundle or mapped body (after gzip); larger gets 413."),
    ("http.max_resource_bytes", 1 << 20, "Largest single-resource body (POST /fhir/AuditEvent)."),
    ("http.max_requests", 256, "Ingest requests handled at once; more get 429."),
    ("syslog.host", "127.0.0.1", "Address the syslog listener binds."),
    ("syslog.tcp_port", None, "RFC 5424 over TCP, octet-counting or newline framing (absent: off; 0: any)."),
    ("syslog.tls_port", None, "RFC 5425 syslog over TLS (usually 6514)."),
    ("syslog.udp_port", None, "RFC 5426 syslog over UDP (no flow control: see udp_buffer)."),
    ("syslog.tls_cert", "", "PEM certificate of the TLS syslog port."),
    ("syslog.tls_key", "", "PEM private key of the TLS syslog port."),
    ("syslog.tls_client_ca", "", "When set, TLS senders must present a certificate signed by this CA."),
    ("syslog.udp_buffer", 10_000, "Datagrams waiting for the queue; more are dropped and counted."),
    ("syslog.max_frame_bytes", 1 << 20, "Largest syslog frame; a larger one is quarantined."),
    ("intake.queue_events", 200_000, "Capacity of the intake queue, in events (memory bound)."),
    ("intake.batch_events", 4_000, "Most events appended in one ledger transaction (group commit)."),
    ("intake.high_water", 0.8, "Queue fill (share of capacity) from which new HTTP requests get 429."),
    ("intake.chunk_events", 2_000, "Events of one request queued at a time (a bulk body is queued in chunks; "
     "requests of at most 64 events go ahead of bulk chunks)."),
    ("intake.decode_workers", -1, "Processes decoding large NDJSON bodies (-1: one if 2+ CPUs, 0: decode "
     "in a thread of the service)."),
    ("intake.detection_queue_batches", 16, "Committed batches waiting for detection before the writer waits."),
    ("detection", {}, "Detection settings (see docs/detection.md), e.g. learning_days = 10."),
    ("delivery.retries", 6, "Retries of a failed delivery before it goes to the dead-letter log."),
    ("delivery.backoff_s", 1.0, "First retry delay; doubled at each retry (±20 % jitter)."),
    ("delivery.max_backoff_s", 300.0, "Longest retry delay."),
    ("webhook", [], "[[webhook]] url, secret or secret_env, name, min_severity, timeout_s."),
    ("cef", [], "[[cef]] host, port, protocol (udp, tcp, tls), framing, name, min_severity, "
     "include_patients, tls_ca."),
    ("email", [], "[[email]] host, port, sender, recipients, security (none, starttls, tls), username, "
     "password_env, name, min_severity, lang, include_patients, console_url."),
)


def _absolute(base: Path, value: str) -> str:
    if not value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _absolute_url(base: Path, url: str) -> str:
    if url.startswith("sqlite:////") or not url.startswith("sqlite:///"):
        return url if "://" in url else _absolute(base, url)
    return "sqlite:///" + _absolute(base, url[len("sqlite:///"):])


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ServiceConfig:
    """The service configuration of a TOML file (relative paths against its folder); raises `ConfigError`."""
    doc: dict[str, Any] = {}
    base = Path.cwd()
    where = "service configuration"
    if path is not None:
        p = Path(path)
        where = str(p)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the configuration: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        base = p.resolve().parent
    for key, value in (overrides or {}).items():
        doc[key] = value
    try:
        cfg = msgspec.convert(doc, ServiceConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return _resolve_paths(cfg, base)


def _resolve_paths(cfg: ServiceConfig, base: Path) -> ServiceConfig:
    led = cfg.ledger
    led = msgspec.structs.replace(
        led,
        url=_absolute_url(base, led.url),
        key_dir=_absolute(base, led.key_dir),
        keyring_file=_absolute(base, led.keyring_file),
        signing_key_file=_absolute(base, led.signing_key_file),
        witness_file=_absolute(base, led.witness_file),
    )
    http = msgspec.structs.replace(cfg.http, tls_cert=_absolute(base, cfg.http.tls_cert),
                                   tls_key=_absolute(base, cfg.http.tls_key))
    sl = cfg.syslog
    sl = msgspec.structs.replace(sl, tls_cert=_absolute(base, sl.tls_cert), tls_key=_absolute(base, sl.tls_key),
                                 tls_client_ca=_absolute(base, sl.tls_client_ca))
    return msgspec.structs.replace(
        cfg,
        state_dir=_absolute(base, cfg.state_dir),
        context=[_absolute(base, c) for c in cfg.context],
        context_mapping=_absolute(base, cfg.context_mapping),
        tokens_file=_absolute(base, cfg.tokens_file),
        mappings={k: _absolute(base, v) for k, v in cfg.mappings.items()},
        ready_file=_absolute(base, cfg.ready_file),
        ledger=led,
        http=http,
        syslog=sl,
    )


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


# ======================================================================================
# Decoding request bodies (runs in a worker process or thread, never in the event loop)
# ======================================================================================

#: Issues of one request listed in its answer; the rest are counted and quarantined.
MAX_ISSUES = 100
Format = Literal["ndjson", "fhir-json", "fhir-xml", "atna", "syslog", "mapped"]


class _Collect(Quarantine):
    """A request's quarantine: keeps the first issues for the answer, forwards all to the service's."""

    def __init__(self, forward: Quarantine | None = None) -> None:
        super().__init__()
        self.forward = forward
        self.issues: list[tuple[str, str]] = []
        self.raws: list[tuple[str, str, bytes]] = []

    def reject(self, origin: str, location: str, reason: str, raw: bytes | str = b"") -> None:
        self.count += 1
        if len(self.issues) < MAX_ISSUES:
            self.issues.append((location, reason))
        if self.forward is not None:
            self.forward.reject(origin, location, reason, raw)
        else:
            data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw[:4096])
            self.raws.append((location, reason, data))


class _Decoded(msgspec.Struct, array_like=True):
    events: bytes  # msgpack list[AccessEvent] (from a worker) or b"" when `direct` is used
    rejects: list[tuple[str, str, bytes]]
    count: int
    error: str = ""


_encode_events = msgspec.msgpack.Encoder().encode
_decode_events = msgspec.msgpack.Decoder(list[AccessEvent]).decode
_mapping_cache: dict[str, Mapping] = {}
#: `Appended.new` of a ledger result, as a C-level getter (summed over 10,000-event batches).
_is_new = operator.itemgetter(1)


def _bad_utf8_lines(lines: list[bytes]) -> set[int]:
    bad: set[int] = set()
    for i, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.add(i)
    return bad


def _stamp(events: Iterable[AccessEvent], source: str, q: Quarantine, origin: str) -> Iterator[AccessEvent]:
    """Events with the token's source name; those that cannot be ledger entries are refused."""
    replace = msgspec.structs.replace
    for e in events:
        if not e.id:
            q.reject(origin, f"record {e.time}", "the event has no id (needed for idempotency)", b"")
            continue
        yield e if not source or e.source == source else replace(e, source=source)


def decode_body(fmt: Format, body: bytes, origin: str, source: str, quarantine: Quarantine,
                mapping: Mapping | None = None, first_line: int = 1) -> list[AccessEvent]:
    """Access events of a request body in one of the intake formats; bad records to `quarantine`.

    Raises `InputFormatError` when the body as a whole is not in the format.
    """
    if fmt == "ndjson":
        lines = body.splitlines(keepends=True)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            bad = _bad_utf8_lines(lines)
            for i in sorted(bad):
                line = lines[i]
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as u:
                    quarantine.reject(origin, f"line {first_line + i}",
                                      f"invalid UTF-8: byte 0x{line[u.start]:02x} at offset {u.start}", line)
                lines[i] = b"\n"
        events: Iterable[AccessEvent] = fhir_json.read_lines(lines, origin, quarantine, first_line)
    elif fmt == "fhir-json":
        events = fhir_json.read(io.BytesIO(body), origin, quarantine)
    elif fmt == "fhir-xml":
        events = fhir_xml.read(io.BytesIO(body), origin, quarantine)
    elif fmt == "atna":
        events = atna.read(io.BytesIO(body), origin, quarantine)
    elif fmt == "syslog":
        events = syslog.read(io.BytesIO(body), origin, quarantine)
    else:
        if mapping is None:
            raise InputFormatError(origin, "no mapping given")
        events = mapped.read_mapped(io.BytesIO(body), origin, quarantine, mapping)
    return list(_stamp(events, source, quarantine, origin))


def _decode_in_worker(body: bytes, origin: str, source: str, first_line: int) -> _Decoded:
    """NDJSON decoding in a worker process: events come back msgpack-encoded (2 µs each to decode)."""
    q = _Collect()
    try:
        events = decode_body("ndjson", body, origin, source, q, first_line=first_line)
    except SentinelleError as exc:
        return _Decoded(b"", q.raws, 0, str(exc))
    return _Decoded(_encode_events(events), q.raws, len(events))


class _Task(msgspec.Struct, array_like=True):
    body: bytes
    origin: str
    source: str
    first_line: int


_encode_msg = msgspec.msgpack.Encoder().encode
_decode_task = msgspec.msgpack.Decoder(_Task).decode
_decode_answer = msgspec.msgpack.Decoder(_Decoded).decode


def _send(pipe: Any, payload: bytes) -> None:
    pipe.write(len(payload).to_bytes(8, "little"))
    pipe.write(payload)
    pipe.flush()


def _receive(pipe: Any) -> bytes | None:
    head = pipe.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data: bytes = pipe.read(size)
    return data if len(data) == size else None


def _decode_worker_main() -> None:
    """A decoding worker: tasks on stdin, answers on stdout, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (payload := _receive(stdin)) is not None:
        task = _decode_task(payload)
        _send(stdout, _encode_msg(_decode_in_worker(task.body, task.origin, task.source, task.first_line)))


class _DecodeWorkers:
    """Processes that decode large NDJSON bodies, so the service's own process only stores and detects.

    Plain `python -m sentinelle.service --decode-worker` children on pipes, not
    multiprocessing: the service runs threads (fork is unsafe) and must not re-import
    whatever script embeds it (spawn does). A worker that dies is replaced and its piece
    decoded in the service itself: a broken worker costs speed, never events.
    """

    def __init__(self, n: int) -> None:
        self._idle: queue.Queue[subprocess.Popen[bytes]] = queue.Queue()
        self._all: list[subprocess.Popen[bytes]] = []
        for _ in range(n):
            proc = self._spawn()
            self._all.append(proc)
            self._idle.put(proc)
        self._threads = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="sentinelle-decode-io")

    @staticmethod
    def _spawn() -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["SENTINELLE_WORKERS"] = "1"
        proc = subprocess.Popen([sys.executable, "-m", "sentinelle.service", "--decode-worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        # 1 MiB pipes instead of 64 KiB: a 2 MiB piece crosses in two writes, not thirty-two
        # context switches (Linux only; elsewhere the default stays).
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)  # type: ignore[union-attr]
        return proc

    def _call(self, task: _Task) -> _Decoded:
        proc = self._idle.get()
        answer: bytes | None = None
        try:
            _send(proc.stdin, _encode_msg(task))
            answer = _receive(proc.stdout)
        except OSError:
            answer = None
        if answer is None:
            log.warning("A decoding worker died; starting another and decoding its piece here.")
            with contextlib.suppress(OSError):
                proc.kill()
            self._all.remove(proc)
            proc = self._spawn()
            self._all.append(proc)
            self._idle.put(proc)
            return _decode_in_worker(task.body, task.origin, task.source, task.first_line)
        self._idle.put(proc)
        return _decode_answer(answer)

    async def decode(self, body: bytes, origin: str, source: str, first_line: int) -> _Decoded:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._call, _Task(body, origin, source, first_line))

    def close(self) -> None:
        for proc in self._all:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
        for proc in self._all:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
        self._threads.shutdown(wait=False)


# ======================================================================================
# The intake queue (bounded, in events) and its group-committing writer
# ======================================================================================


#: Submissions of at most this many events jump ahead of bulk chunks in the intake queue.
SMALL_ITEM = 64


class BusyError(SentinelleError):
    """The intake queue is full: the caller should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int, reason: str = "the intake queue is full") -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ClosingError(SentinelleError):
    """The service is stopping (or its ledger failed) and takes no more events."""


class _Item:
    __slots__ = ("events", "future", "loop", "origin", "t0")

    def __init__(self, events: list[AccessEvent], future: Any, loop: asyncio.AbstractEventLoop | None,
                 origin: str) -> None:
        self.events = events
        self.future = future  # asyncio.Future (loop set), concurrent.futures.Future, or None
        self.loop = loop
        self.origin = origin
        self.t0 = time.monotonic()


class IntakeQueue:
    """Events waiting for the ledger, bounded by `capacity` events; thread-safe, asyncio-friendly.

    An item counts against the capacity until the writer committed it, so the bound
    covers everything accepted and not yet durable.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.depth = 0
        self.closed = False
        self._items: deque[_Item] = deque()
        # Small submissions (single events, a syslog read) go first: a one-event request
        # must not wait behind the commit of a 10,000-event bulk chunk queued before it.
        self._small: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._space: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.depth == 0 or self.depth + n <= self.capacity

    async def put(self, events: list[AccessEvent], origin: str, *, wait: bool = True,
                  track: bool = True) -> asyncio.Future[list[Appended]] | None:
        """Queue events (waiting for room when `wait`); returns a future of their ledger results."""
        loop = asyncio.get_running_loop()
        n = len(events)
        while True:
            with self._cond:
                if self.closed:
                    raise ClosingError("the service is stopping")
                if self._fits(n):
                    fut: asyncio.Future[list[Appended]] | None = loop.create_future() if track else None
                    self._push(_Item(events, fut, loop, origin))
                    self.depth += n
                    self._cond.notify_all()
                    return fut
                if not wait:
                    raise BusyError(1)
                waiter: asyncio.Future[None] = loop.create_future()
                self._space.append((loop, waiter))
            await waiter

    def put_blocking(self, events: list[AccessEvent], origin: str, timeout: float | None = None,
                     force: bool = False) -> concurrent.futures.Future[list[Appended]]:
        """Queue events from a thread (waiting for room unless `force`); returns a future of their results."""
        fut: concurrent.futures.Future[list[Appended]] = concurrent.futures.Future()
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not force and not self._fits(len(events)) and not self.closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise BusyError(1)
                self._cond.wait(left)
            if self.closed:
                raise ClosingError("the service is stopping")
            self._push(_Item(events, fut, None, origin))
            self.depth += len(events)
            self._cond.notify_all()
        return fut

    def _push(self, item: _Item) -> None:
        (self._small if len(item.events) <= SMALL_ITEM else self._items).append(item)

    def take(self, max_events: int, timeout: float) -> list[_Item]:
        """Items queued so far, small ones first, up to `max_events` events (at least one item);
        waits up to `timeout` when nothing is queued."""
        with self._cond:
            if not self._items and not self._small:
                self._cond.wait(timeout)
            out: list[_Item] = []
            n = 0
            for items in (self._small, self._items):
                while items and (not out or n + len(items[0].events) <= max_events):
                    item = items.popleft()
                    out.append(item)
                    n += len(item.events)
            return out

    def release(self, n: int) -> None:
        """Events left the queue (committed or failed): make room and wake the waiters."""
        with self._cond:
            self.depth -= n
            waiters = list(self._space)
            self._space.clear()
            self._cond.notify_all()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(_wake, fut)

    def close(self) -> None:
        """Take no more events; the writer drains what is queued."""
        with self._cond:
            self.closed = True
            waiters = list(self._space)
            self._space.clear()
            self._cond.notify_all()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


# ======================================================================================
# Metrics
# ======================================================================================


class _Metrics:
    """The Prometheus metrics of one service (own registry: several services may share a process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter("sentinelle_events_received", "Events decoded and queued, by channel.",
                                ["channel"], registry=r)
        self.stored = Counter("sentinelle_events_stored", "Events appended to the ledger (new).", registry=r)
        self.duplicates = Counter("sentinelle_events_duplicate",
                                  "Events re-sent and found already in the ledger (not stored again).", registry=r)
        self.quarantined = Counter("sentinelle_events_quarantined", "Records refused and set aside, by channel.",
                                   ["channel"], registry=r)
        self.refused = Counter("sentinelle_requests_refused", "HTTP requests refused, by reason.", ["reason"],
                               registry=r)
        self.alerts = Counter("sentinelle_alerts", "Alert versions raised, by severity.", ["severity"], registry=r)
        self.deliveries = Counter("sentinelle_deliveries", "Delivery attempts, by channel and outcome.",
                                  ["channel", "outcome"], registry=r)
        self.queue = Gauge("sentinelle_intake_queue_events", "Events accepted and not yet durable.", registry=r)
        self.det_queue = Gauge("sentinelle_detection_queue_batches", "Committed batches waiting for detection.",
                               registry=r)
        self.lag = Gauge("sentinelle_detection_lag_seconds",
                         "Seconds between a batch's ledger commit and its detection (last batch).", registry=r)
        self.event_age = Gauge("sentinelle_event_age_seconds",
                               "Wall clock minus event time of the last event detected (how late sources report).",
                               registry=r)
        self.ledger_size = Gauge("sentinelle_ledger_events", "Leaves in the ledger (events and ledger records).",
                                 registry=r)
        self.udp_dropped = Gauge("sentinelle_syslog_udp_dropped", "UDP datagrams dropped because the queue was full.",
                                 registry=r)
        self.cpu = Counter("sentinelle_thread_cpu_seconds", "CPU time of the service's own threads.", ["thread"],
                           registry=r)
        self.commit = Histogram("sentinelle_ledger_commit_seconds", "Duration of one group commit.", registry=r,
                                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.batch = Histogram("sentinelle_ledger_batch_events", "Events per group commit.", registry=r,
                               buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000, 20000, 50000))

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# ======================================================================================
# Results of an ingest
# ======================================================================================


class IngestResult(msgspec.Struct, kw_only=True):
    """What one request's events became: accepted (durable), new, already stored, rejected with why."""

    accepted: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    issues: list[tuple[str, str]] = msgspec.field(default_factory=list)
    error: str = ""  # the whole input was not in the format


class _Snapshot(msgspec.Struct):
    version: int
    ledger: str
    seq: int
    time: int


# ======================================================================================
# The service
# ======================================================================================


class Service:
    """One running Sentinelle: `start()`, then `await serve()` (or `start_background()`), then `close()`."""

    def __init__(self, config: ServiceConfig, *, context: Any = None) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.metrics = _Metrics()
        self.tokens = TokenRegistry.load(config.tokens_file or None, config.tokens)
        self.detection_settings: Settings = load_settings(config.detection)
        self._context = context
        self.intake = IntakeQueue(config.intake.queue_events)
        self.ports: dict[str, int] = {}
        self.engine: Engine | None = None
        self.engine_seq = -1
        self.replayed = 0
        self.stored = 0
        self._hooked_seq = -1
        self._commits: deque[tuple[float, int]] = deque(maxlen=64)
        self._close_lock = threading.Lock()
        self._alert_callbacks: list[Callable[[Alert, int], None]] = []
        self._det_q: queue.Queue[tuple[float, list[tuple[int, AccessEvent]]] | None] = queue.Queue(
            max(1, config.intake.detection_queue_batches))
        self._writer: threading.Thread | None = None
        self._detector: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bg_thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._serve_error: BaseException | None = None
        self._active_requests = 0
        self._pool: _DecodeWorkers | None = None
        self._threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sentinelle-decode")
        self._closed = False
        self._started = False
        self._snap_due = 0.0
        self._snap_events = 0
        self._audit_file: io.BufferedWriter | None = None
        self._audit_lock = threading.Lock()
        self._mappings: dict[str, Mapping] = {}
        self.ledger: Ledger
        self.store: AlertStore
        self.dispatcher: Dispatcher
        self.quarantine: Quarantine
        self.listener: SyslogListener | None = None
        self.failed: BaseException | None = None

    # ---- start -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the ledger and stores, restore detection (snapshot + ledger tail), start the threads."""
        cfg = self.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.quarantine = Quarantine(self.state_dir / "quarantine.jsonl")
        for name, path in cfg.mappings.items():
            self._mappings[name] = load_mapping(path)
        context = self._context
        if context is None:
            context = (CareContext.load(cfg.context, quarantine=self.quarantine,
                                        mapping=cfg.context_mapping or None)
                       if cfg.context else CareContext.from_resources([]))
        self.context = context
        self.ledger = Ledger.open(settings=cfg.ledger)
        try:
            self.store = AlertStore(self.state_dir / "alerts.db")
            self.dispatcher = Dispatcher(
                self._channels(), self.store, self.state_dir / "dead-letters.jsonl",
                retries=cfg.delivery.retries, backoff_s=cfg.delivery.backoff_s,
                max_backoff_s=cfg.delivery.max_backoff_s,
                on_result=lambda ch, outcome: self.metrics.deliveries.labels(ch, outcome).inc())
            self.dispatcher.start()
            self._restore()
            self.metrics.ledger_size.set_function(lambda: float(self.ledger.size))
            self.metrics.queue.set_function(lambda: float(self.intake.depth))
            self.metrics.det_queue.set_function(lambda: float(self._det_q.qsize()))
            self.ledger.on_append(self._on_stored)
            self._audit_file = open(self.state_dir / "audit.jsonl", "ab")  # noqa: SIM115 - kept open
            self._writer = threading.Thread(target=self._write_loop, name="sentinelle-writer", daemon=True)
            self._detector = threading.Thread(target=self._detect_loop, name="sentinelle-detect", daemon=True)
            self._writer.start()
            self._detector.start()
            self._start_pool()
            self.ledger.append_note(json.dumps({"service": "start", "pid": os.getpid()}))
        except BaseException:
            self.ledger.close(checkpoint=False)
            raise
        self._started = True
        log.info("Service started: ledger %s with %d leaves, %d events replayed into detection.",
                 self.ledger.ledger_id, self.ledger.size, self.replayed)

    def _channels(self) -> list[Channel]:
        out: list[Channel] = []
        for w in self.config.webhook:
            secret = w.secret or (os.environ.get(w.secret_env, "") if w.secret_env else "")
            if not secret:
                raise ConfigError(f"webhook {w.name!r}: needs secret or secret_env (an environment variable)")
            out.append(WebhookChannel(w.url, secret, name=w.name, min_severity=w.min_severity,
                                      timeout_s=w.timeout_s))
        for c in self.config.cef:
            out.append(CefChannel(c.host, c.port, protocol=c.protocol, framing=c.framing, name=c.name,
                                  min_severity=c.min_severity, include_patients=c.include_patients,
                                  tls_ca=c.tls_ca))
        for m in self.config.email:
            out.append(EmailChannel(m.host, m.port, m.sender, m.recipients, name=m.name,
                                    min_severity=m.min_severity, security=m.security, username=m.username,
                                    password=os.environ.get(m.password_env, "") if m.password_env else "",
                                    lang=m.lang, include_patients=m.include_patients,
                                    console_url=m.console_url))
        return out

    def _start_pool(self) -> None:
        workers = self.config.intake.decode_workers
        if workers < 0:
            workers = 1 if (os.cpu_count() or 1) >= 2 else 0
        if workers > 0:
            try:
                self._pool = _DecodeWorkers(workers)
            except OSError as exc:
                log.warning("Decoding workers did not start (%s); decoding in threads.", type(exc).__name__)
                self._pool = None

    # ---- restart: snapshot + ledger tail --------------------------------------------------
    @property
    def snapshot_path(self) -> Path:
        """Where the engine snapshot lives."""
        return self.state_dir / "engine.snapshot"

    def _read_snapshot(self) -> tuple[_Snapshot, bytes] | None:
        try:
            data = self.snapshot_path.read_bytes()
        except FileNotFoundError:
            return None
        head, _, body = data.partition(b"\n")
        try:
            meta = msgspec.json.decode(head, type=_Snapshot)
        except msgspec.MsgspecError:
            log.warning("The engine snapshot %s is unreadable; detection restarts from the whole ledger.",
                        self.snapshot_path)
            return None
        return meta, body

    def _restore(self) -> None:
        """Engine from the snapshot, then the ledger events after it, through the same `process`."""
        ledger = self.ledger
        after = -1
        engine: Engine | None = None
        snap = self._read_snapshot()
        if snap is not None:
            meta, body = snap
            if meta.ledger != ledger.ledger_id or meta.seq >= ledger.size:
                log.warning("The engine snapshot belongs to another ledger (or is ahead of it); ignored.")
            else:
                try:
                    restored = Engine.restore(self.context, body)
                except Exception as exc:
                    log.warning("The engine snapshot could not be restored (%s); replaying the whole ledger.",
                                type(exc).__name__)
                else:
                    if restored.settings != self.detection_settings:
                        log.warning("Detection settings changed since the snapshot; replaying the whole ledger.")
                    else:
                        engine, after = restored, meta.seq
        self.engine = engine or Engine(self.context, self.detection_settings)
        self.engine_seq = after
        process = self.engine.process
        n = 0
        protector = ledger.protector
        assert protector is not None
        for seq, rec in ledger.records(after + 1):
            if rec is None or rec.kind != KIND_EVENT or rec.source == API_SOURCE:
                continue
            alerts = process(protector.reveal(rec))
            n += 1
            if alerts:
                self._raise(alerts)
            self.engine_seq = seq
        self.engine_seq = ledger.size - 1
        self.replayed = n
        if n:
            self._write_snapshot()

    def _write_snapshot(self) -> None:
        assert self.engine is not None
        meta = _Snapshot(1, self.ledger.ledger_id, self.engine_seq, int(time.time() * 1000))
        data = msgspec.json.encode(meta) + b"\n" + self.engine.snapshot()
        tmp = self.snapshot_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)
        dfd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._snap_due = time.monotonic() + self.config.snapshot_seconds
        self._snap_events = 0

    # ---- the writer thread -------------------------------------------------------------
    def _write_loop(self) -> None:
        intake = self.intake
        ledger = self.ledger
        max_events = self.config.intake.batch_events
        m = self.metrics
        while True:
            items = intake.take(max_events, 0.5)
            if not items:
                if intake.closed and not intake.depth:
                    return
                try:
                    ledger.maybe_checkpoint()
                except Exception as exc:
                    log.error("A timed checkpoint failed with %s.", type(exc).__name__)
                continue
            c0 = time.thread_time()
            events = list(itertools.chain.from_iterable(it.events for it in items))
            t0 = time.perf_counter()
            results: list[Appended] | None = None
            error: BaseException | None = None
            for attempt in range(3):
                try:
                    results = ledger.append_batch(events)
                    break
                except Exception as exc:  # a database failure: retried, then reported to the senders
                    error = exc
                    log.error("A ledger commit of %d events failed with %s (attempt %d).", len(events),
                              type(exc).__name__, attempt + 1)
                    time.sleep(0.2 * (attempt + 1))
            m.commit.observe(time.perf_counter() - t0)
            m.batch.observe(len(events))
            if results is not None:
                new = sum(map(_is_new, results))  # C-level count: a generator costs ~0.3 µs per event
                m.stored.inc(new)
                m.duplicates.inc(len(results) - new)
                self.stored += new
                self._commits.append((time.monotonic(), len(events)))
            self._complete(items, results, error)
            intake.release(len(events))
            m.cpu.labels("writer").inc(time.thread_time() - c0)

    def _complete(self, items: list[_Item], results: list[Appended] | None, error: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        pos = 0
        exc = None if results is not None else ClosingError(
            f"the ledger could not commit: {type(error).__name__ if error else 'unknown error'}")
        for it in items:
            n = len(it.events)
            value = results[pos:pos + n] if results is not None else None
            pos += n
            if it.future is None:
                if exc is not None:
                    # Nobody waits for these (syslog): keep them where an operator finds them.
                    for e in it.events:
                        self.quarantine.reject(it.origin, f"event {e.id}", f"not stored: {exc}",
                                               msgspec.json.encode(e))
                continue
            if it.loop is None:
                if exc is not None:
                    it.future.set_exception(exc)
                else:
                    it.future.set_result(value)
            else:
                by_loop.setdefault(it.loop, []).append((it.future, value, exc))
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, batch)

    def _on_stored(self, stored: Sequence[tuple[int, AccessEvent]]) -> None:
        # Runs in the writer thread after the commit; blocking here when detection is behind
        # is the backpressure that keeps its queue bounded.
        self._det_q.put((time.time(), list(stored)))
        self._hooked_seq = stored[-1][0]

    # ---- the detection thread ----------------------------------------------------------
    def _detect_loop(self) -> None:
        assert self.engine is not None
        engine = self.engine
        m = self.metrics
        interval = self.config.snapshot_seconds
        self._snap_due = time.monotonic() + interval
        while True:
            try:
                item = self._det_q.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() >= self._snap_due and self._snap_events:
                    self._safe_snapshot()
                continue
            if item is None:
                break
            c0 = time.thread_time()
            committed, stored = item
            process = engine.process
            last_time = 0
            try:
                for seq, e in stored:
                    if e.source != API_SOURCE:
                        alerts = process(e)
                        if alerts:
                            self._raise(alerts)
                        last_time = e.time
                    self.engine_seq = seq
            except Exception as exc:
                self.failed = exc
                log.exception("Detection failed with %s; events stay in the ledger and are replayed at restart.",
                              type(exc).__name__)
                continue
            self._snap_events += len(stored)
            m.cpu.labels("detection").inc(time.thread_time() - c0)
            now = time.time()
            m.lag.set(now - committed)
            if last_time:
                m.event_age.set(now - last_time / 1000)
            if time.monotonic() >= self._snap_due or self._snap_events >= self.config.snapshot_events:
                self._safe_snapshot()
        self._safe_snapshot()

    def _safe_snapshot(self) -> None:
        try:
            self._write_snapshot()
        except Exception as exc:
            log.error("Writing the engine snapshot failed with %s.", type(exc).__name__)

    def _raise(self, alerts: list[Alert]) -> None:
        """Store new alert versions (already stored ones come from a replay: skipped) and deliver them."""
        for alert in alerts:
            channels = self.dispatcher.channels_for(alert)
            now = int(time.time() * 1000)
            n = self.store.add(alert, channels, now)
            if n is None:
                continue
            self.metrics.alerts.labels(alert.severity).inc()
            self.dispatcher.submit(n, alert, channels)
            for cb in list(self._alert_callbacks):
                try:
                    cb(alert, now)
                except Exception as exc:
                    log.warning("An alert callback failed with %s.", type(exc).__name__)

    def on_alert(self, callback: Callable[[Alert, int], None]) -> Callable[[], None]:
        """Call `callback(alert, raised_ms)` for every new alert version (in the detection thread)."""
        self._alert_callbacks.append(callback)
        return lambda: self._alert_callbacks.remove(callback)

    # ---- intake API (used by the web layer and the listener) ------------------------------
    def admit(self) -> None:
        """Refuse a new request when the queue is nearly full (BusyError) or the service stops (ClosingError)."""
        if self.intake.closed or self._closed:
            raise ClosingError("the service is stopping")
        cfg = self.config.intake
        if self.intake.depth >= cfg.high_water * self.intake.capacity:
            raise BusyError(self._retry_after(), "the intake queue is nearly full")
        if self._active_requests >= self.config.http.max_requests:
            raise BusyError(1, "too many ingest requests at once")

    def _retry_after(self) -> int:
        # Seconds for the queue to drain at the recent commit rate, at least one.
        rate = max(1000.0, self.commit_rate())
        return max(1, min(60, int(self.intake.depth / rate) + 1))

    def commit_rate(self) -> float:
        """Events committed per second over the last few seconds."""
        commits = list(self._commits)
        if len(commits) < 2:
            return 0.0
        span = time.monotonic() - commits[0][0]
        return sum(n for _, n in commits[1:]) / span if span > 0 else 0.0

    def wait_detected(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued is committed and detected (for the demo and tests)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.intake.depth and self.engine_seq >= self._hooked_seq and self._det_q.empty():
                return True
            time.sleep(0.01)
        return False

    async def ingest(self, fmt: Format, body: bytes, principal: Principal, origin: str,
                     mapping: str | None = None) -> IngestResult:
        """Decode a request body, queue its events, and return once they are durable in the ledger."""
        self._active_requests += 1
        try:
            return await self._ingest(fmt, body, principal, origin, mapping)
        finally:
            self._active_requests -= 1

    def mapping(self, name: str) -> Mapping:
        """A named mapping: configured ones first, then the shipped ones; raises ConfigError."""
        found = self._mappings.get(name)
        if found is None:
            if "/" in name or name.startswith("."):
                raise ConfigError(f"no mapping named {name!r}")
            found = self._mappings[name] = load_mapping(name)
        return found

    async def _ingest(self, fmt: Format, body: bytes, principal: Principal, origin: str,
                      mapping: str | None) -> IngestResult:
        loop = asyncio.get_running_loop()
        collect = _Collect(self.quarantine)
        result = IngestResult()
        if fmt == "ndjson" and self._pool is not None and len(body) > (256 << 10):
            pieces = _split_lines(body, 2 << 20)
            futures = [asyncio.ensure_future(self._pool.decode(piece, origin, principal.source, first))
                       for piece, first in pieces]
            pending: list[asyncio.Future[list[Appended]]] = []
            for fut in futures:
                decoded = await fut
                for location, reason, raw in decoded.rejects:
                    collect.reject(origin, location, reason, raw)
                if decoded.error:
                    result.error = decoded.error
                    continue
                events = _decode_events(decoded.events) if decoded.count else []
                pending += await self._queue(events, origin, "http")
            return await self._finish(pending, collect, result)
        the_mapping = self.mapping(mapping) if fmt == "mapped" and mapping is not None else None
        try:
            if len(body) > (64 << 10):
                # Off the event loop: a large body takes long enough to delay other senders.
                events = await loop.run_in_executor(self._threads, decode_body, fmt, body, origin, principal.source,
                                                    collect, the_mapping)
            else:
                events = decode_body(fmt, body, origin, principal.source, collect, the_mapping)
        except InputFormatError as exc:
            result.error = exc.reason
            events = []
        pending = await self._queue(events, origin, "http")
        return await self._finish(pending, collect, result)

    async def _queue(self, events: list[AccessEvent], origin: str, channel: str
                     ) -> list[asyncio.Future[list[Appended]]]:
        out: list[asyncio.Future[list[Appended]]] = []
        step = self.config.intake.chunk_events
        for i in range(0, len(events), step):
            part = events[i:i + step]
            fut = await self.intake.put(part, origin, wait=True)
            assert fut is not None
            out.append(fut)
        if events:
            self.metrics.received.labels(channel).inc(len(events))
        return out

    async def _finish(self, pending: list[asyncio.Future[list[Appended]]], collect: _Collect,
                      result: IngestResult) -> IngestResult:
        for fut in pending:
            appended = await fut
            result.accepted += len(appended)
            result.new += sum(map(_is_new, appended))
        result.duplicates = result.accepted - result.new
        result.rejected = collect.count
        result.issues = collect.issues
        if collect.count:
            self.metrics.quarantined.labels("http").inc(collect.count)
        return result

    async def _syslog_sink(self, events: list[AccessEvent], origin: str) -> None:
        good = [e for e in events if e.id and e.source != "@ledger"]
        await self.intake.put(good, origin, wait=True, track=False)
        self.metrics.received.labels("syslog").inc(len(good))

    def submit_blocking(self, events: Sequence[AccessEvent], origin: str = "library",
                        timeout: float | None = None) -> list[Appended]:
        """Queue events from a thread and wait until they are durable (for embedding and tests)."""
        return self.intake.put_blocking(list(events), origin, timeout).result()

    # ---- the service's own audit trail -----------------------------------------------------
    def audit_call(self, *, who: str, role: str, method: str, path: str, query: str, status: int,
                   address: str, seconds: float, detail: dict[str, Any] | None = None) -> None:
        """Record one API call (who, when, what, answer) in the audit log; analysts' reads also in the ledger.

        Why both: the JSON-lines log is for operations (every call, ingest included); the
        ledger entry makes who looked at which alerts as tamper-evident as the hospital's
        own trail. Ingest calls are not put in the ledger: their events are, with the token's source.
        """
        now = int(time.time() * 1000)
        line: dict[str, Any] = {"time": now, "who": who, "role": role, "method": method, "path": path,
                                "query": query, "status": status, "address": address,
                                "ms": round(seconds * 1000, 2)}
        if detail:
            line.update(detail)
        data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        with self._audit_lock:
            if self._audit_file is not None:
                self._audit_file.write(data)
                self._audit_file.flush()
        if role in ("analyst", "admin", "metrics") and not self.intake.closed:
            action = "read" if method == "GET" and path.count("/") >= 2 else ("search" if method == "GET" else "other")
            event = AccessEvent(
                id=uuid.uuid4().hex, time=now, account=who, action=action, actor_kind="human",
                outcome="success" if status < 400 else "denied", client="sentinelle-api", address=address,
                source=API_SOURCE, query=f"{method} {path}" + (f"?{query}" if query else ""),
            )
            with contextlib.suppress(SentinelleError):
                self.intake.put_blocking([event], "api-audit", force=True)

    # ---- serving -----------------------------------------------------------------------
    def _ssl_context(self, cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def serve(self, *, install_signals: bool = True) -> None:
        """Listen (HTTP, syslog) until `request_stop()` or SIGTERM/SIGINT, then drain and close everything."""
        if not self._started:
            self.start()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_requested = asyncio.Event()
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop_requested.set)
        server: _QuietServer | None = None
        task: asyncio.Task[None] | None = None
        sock: socket.socket | None = None
        try:
            await self._start_listener()
            sock = self._http_socket()
            server = _QuietServer(self._uvicorn_config())
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if task.done():
                task.result()  # it failed to start: raise why
            self._write_ready()
            self._ready.set()
            log.info("Listening: %s.", ", ".join(f"{k} {v}" for k, v in sorted(self.ports.items())))
            stop_wait = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
        finally:
            # Stop taking (requests in progress finish: uvicorn waits for them), then drain.
            if server is not None:
                server.should_exit = True
            if self.listener is not None:
                await self.listener.stop()
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
            if sock is not None:
                sock.close()
            await loop.run_in_executor(None, self.close)

    async def _start_listener(self) -> None:
        sl = self.config.syslog
        if sl.tcp_port is None and sl.tls_port is None and sl.udp_port is None:
            return
        tls_ctx = self._ssl_context(sl.tls_cert, sl.tls_key, sl.tls_client_ca) if sl.tls_port is not None else None
        listener = SyslogListener(self._syslog_sink, self.quarantine, host=sl.host, tcp_port=sl.tcp_port,
                                  tls_port=sl.tls_port, udp_port=sl.udp_port, ssl_context=tls_ctx,
                                  max_frame=sl.max_frame_bytes, udp_buffer=sl.udp_buffer)
        self.listener = listener
        await listener.start()
        self.metrics.udp_dropped.set_function(lambda: float(listener.stats.udp_dropped))
        self.ports.update({f"syslog_{k}": v for k, v in listener.ports.items()})

    def _http_socket(self) -> socket.socket:
        host, port = self.config.http.host, self.config.http.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every answer waits for the client's delayed ACK (~40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"http: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.ports["http"] = sock.getsockname()[1]
        return sock

    def _uvicorn_config(self) -> Any:
        import uvicorn

        from sentinelle.web import create_app

        http = self.config.http
        return uvicorn.Config(
            create_app(self), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=30,
            ssl_certfile=http.tls_cert or None, ssl_keyfile=http.tls_key or None,
            http="httptools" if _has("httptools") else "h11", server_header=False, proxy_headers=False,
            h11_max_incomplete_event_size=64 << 10,
        )

    def _write_ready(self) -> None:
        if not self.config.ready_file:
            return
        p = Path(self.config.ready_file)
        tmp = p.with_suffix(".tmp")
        scheme = "https" if self.config.http.tls_cert else "http"
        host = self.config.http.host
        tmp.write_text(json.dumps({"pid": os.getpid(), "ports": self.ports,
                                   "url": f"{scheme}://{host}:{self.ports['http']}"}))
        os.replace(tmp, p)

    def request_stop(self) -> None:
        """Ask a serving service to stop (from any thread)."""
        loop, ev = self._loop, self._stop_requested
        if loop is not None and ev is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    def close(self) -> None:
        """Drain the queue into the ledger, let detection finish and snapshot, close everything."""
        with self._close_lock:
            if self._closed or not self._started:
                return
            self._close()

    def _close(self) -> None:
        self.intake.close()
        if self._writer is not None:
            self._writer.join()
        self._closed = True
        if self._detector is not None:
            self._det_q.put(None)
            self._detector.join()
        with contextlib.suppress(Exception):
            self.ledger.append_note(json.dumps({"service": "stop", "pid": os.getpid()}))
        self.ledger.close()
        self.dispatcher.stop()
        self.store.close()
        self.quarantine.close()
        if self._pool is not None:
            self._pool.close()
        self._threads.shutdown(wait=False)
        with self._audit_lock:
            if self._audit_file is not None:
                self._audit_file.close()
                self._audit_file = None
        log.info("Service stopped: ledger closed at %d leaves.", self.ledger.size)

    # ---- in a background thread (demo, tests, embedding) ----------------------------------
    def start_background(self, timeout: float = 120.0) -> Service:
        """Start and serve in a background thread; returns once listening (`ports` is filled)."""
        self.start()

        def run() -> None:
            loop = _new_loop()
            try:
                loop.run_until_complete(self.serve(install_signals=False))
            except BaseException as exc:  # reported to the starter
                self._serve_error = exc
                self._ready.set()
            finally:
                loop.close()

        self._bg_thread = threading.Thread(target=run, name="sentinelle-service", daemon=True)
        self._bg_thread.start()
        if not self._ready.wait(timeout):
            raise ClosingError("the service did not start listening in time")
        if self._serve_error is not None:
            raise self._serve_error
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop a service started with `start_background` and wait for it to close."""
        self.request_stop()
        if self._bg_thread is not None:
            self._bg_thread.join(timeout)
        self.close()

    @property
    def url(self) -> str:
        """Base URL of the HTTP API once listening."""
        scheme = "https" if self.config.http.tls_cert else "http"
        host = self.config.http.host
        return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{self.ports.get('http', 0)}"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _split_lines(body: bytes, size: int) -> list[tuple[bytes, int]]:
    """Pieces of about `size` bytes cut at line ends, each with the number of its first line."""
    out: list[tuple[bytes, int]] = []
    start = 0
    line = 1
    n = len(body)
    while start < n:
        end = body.find(b"\n", min(n, start + size) - 1)
        end = n if end < 0 else end + 1
        piece = body[start:end]
        out.append((piece, line))
        line += piece.count(b"\n")
        start = end
    return out


class _QuietServer:
    """A uvicorn server that leaves signals to the service (it must drain before exiting)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def capture_signals(self) -> Any:  # the service handles SIGTERM/SIGINT itself
                return contextlib.nullcontext()

        self._server = Server(config)

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def should_exit(self) -> bool:
        return bool(self._server.should_exit)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._server.should_exit = value

    async def serve(self, sockets: list[socket.socket]) -> None:
        await self._server.serve(sockets=sockets)


# ======================================================================================
# Entry points: `sentinelle serve`, `python -m sentinelle.service`, `sentinelle demo`
# ======================================================================================


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()


def serve(config: str | Path | ServiceConfig | None = None, *, ready_file: str | None = None) -> None:
    """Run the service in the foreground until SIGTERM or SIGINT (what `sentinelle serve` calls)."""
    cfg = config if isinstance(config, ServiceConfig) else load_config(config)
    if ready_file:
        cfg = msgspec.structs.replace(cfg, ready_file=str(Path(ready_file).resolve()))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = Service(cfg)
    service.start()
    # The care context and the restored detection state are large and live for the whole
    # run: freezing them keeps every later full garbage collection from walking them again
    # (only done here, where the process is the service's own, never for an embedding app).
    gc.collect()
    gc.freeze()
    loop = _new_loop()
    try:
        loop.run_until_complete(service.serve())
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m sentinelle.service --config FILE [--ready-file FILE]`."""
    ap = argparse.ArgumentParser(prog="python -m sentinelle.service", description="Run the Sentinelle service.")
    ap.add_argument("--config", "-c", help="TOML configuration (docs/service.md)")
    ap.add_argument("--ready-file", help="write the bound ports here once listening")
    ap.add_argument("--decode-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.decode_worker:
        _decode_worker_main()
        return
    try:
        serve(args.config, ready_file=args.ready_file)
    except SentinelleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


class DemoResult(msgspec.Struct, kw_only=True):
    """What `run_demo` did."""

    events_sent: int
    events_stored: int
    seconds: float
    alerts: int
    episodes: int
    by_severity: dict[str, int]
    verify: str
    url: str
    state_dir: str


def run_demo(out: str | Path = "demo-out", *, size: str = "tiny", seed: int = 1, speed: float = 0.0,
             chunk_events: int = 2000, keep_running: bool = False,
             echo: Callable[[str], None] | None = None,
             on_alert: Callable[[Alert, float], None] | None = None) -> DemoResult:
    """Start the service, replay a simulated hospital into it over HTTP, and show alerts as they arrive.

    The hospital is simulated into `out` (kept when already there); the service's state
    (ledger, alert store) is recreated in `out/service` at every run so the replay starts
    clean. Events are POSTed as bulk NDJSON in time order, as fast as possible (`speed`
    0) or at `speed` simulated seconds per wall second. Each new alert is passed to
    `on_alert(alert, latency_s)` (latency from the POST of the batch that triggered it)
    or, by default, printed through `echo`. With `keep_running` the service stays up
    (Ctrl-C to stop) so the API can be explored: the tokens are printed.
    """
    import http.client
    import shutil
    import urllib.parse

    from sentinelle.ledger import verify
    from sentinelle.simulate import simulate

    say = echo or print
    out = Path(out)
    if not (out / "manifest.json").exists():
        say(f"Simulating a {size} hospital (seed {seed}) into {out} ...")
        simulate(out, size=size, seed=seed)
    state = out / "service"
    if state.exists():
        shutil.rmtree(state)
    source_token, analyst_token = new_token(), new_token()
    cfg = load_config(None, {
        "state_dir": str(state),
        "context": [str(out / "context")],
        "ledger": {"url": f"sqlite:///{(state / 'ledger.db').resolve()}", "key_dir": str(state / "keys"),
                   "checkpoint_events": 10_000},
        "http": {"host": "127.0.0.1", "port": 0},
        "tokens": [{"name": "simulated-dpi", "role": "source", "sha256": hash_token(source_token)},
                   {"name": "analyst", "role": "analyst", "sha256": hash_token(analyst_token)}],
    })
    service = Service(cfg)
    sent_at: dict[int, float] = {}
    raised: list[tuple[Alert, float]] = []
    lock = threading.Lock()

    def alerted(alert: Alert, raised_ms: int) -> None:
        # the POST that carried the last event seen by the alert (events are sent in time order)
        with lock:
            keys = [k for k in sent_at if k <= alert.time_ms]
            t_sent = sent_at[max(keys)] if keys else time.time()
        latency = max(0.0, raised_ms / 1000 - t_sent)
        raised.append((alert, latency))
        if on_alert is not None:
            on_alert(alert, latency)
        elif alert.version == 1:
            say(f"  NEW ALERT {alert.severity.upper():8} {alert.time[:16]}  {alert.account:<22} {alert.summary[:100]}"
                f"  [{latency * 1000:.0f} ms after its event arrived]")
        else:
            say(f"    update {alert.severity.upper():8} {alert.time[:16]}  {alert.account:<22} v{alert.version}: "
                f"{alert.patient_count} patients, score {alert.score:.2f}  [{latency * 1000:.0f} ms]")

    service.on_alert(alerted)
    service.start_background()
    say(f"Service listening on {service.url}; replaying {out / 'events'} ...")
    parsed = urllib.parse.urlsplit(service.url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=120)
    headers = {"Authorization": f"Bearer {source_token}", "Content-Type": "application/fhir+ndjson"}
    sent = 0
    t_start = time.time()
    first_event_ms: int | None = None
    decode_time = msgspec.json.Decoder(_TimeOnly)
    try:
        with open(out / "events" / "auditevents.ndjson", "rb") as f:
            while True:
                lines = list(itertools.islice(f, chunk_events))
                if not lines:
                    break
                body = b"".join(lines)
                last_ms = _event_ms(decode_time, lines[-1])
                if speed > 0 and last_ms:
                    if first_event_ms is None:
                        first_event_ms = _event_ms(decode_time, lines[0]) or last_ms
                    due = t_start + (last_ms - first_event_ms) / 1000 / speed
                    if due > time.time():
                        time.sleep(due - time.time())
                with lock:
                    sent_at[last_ms] = time.time()
                for _ in range(20):
                    conn.request("POST", "/fhir/AuditEvent/$bulk", body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 429:
                        break
                    time.sleep(float(resp.getheader("Retry-After", "1")))
                if resp.status >= 300:
                    raise ClosingError(f"the service refused a batch: HTTP {resp.status}")
                sent += len(lines)
        elapsed = time.time() - t_start
        service.wait_detected(60)
        counts = service.store.count()
        episodes = service.store.episodes()
        stored = service.stored
        say(f"Replayed {sent:,} events in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):,.0f} events/s); "
            f"{sum(counts.values())} alert versions in {episodes} episodes.")
        if keep_running:
            say(f"API: {service.url}/docs — analyst token: {analyst_token} — source token: {source_token}")
            say("Press Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
    finally:
        conn.close()
        service.stop()
    report = verify(cfg.ledger.url)
    say(f"Ledger: {report.summary().splitlines()[0]}")
    return DemoResult(events_sent=sent, events_stored=int(stored), seconds=round(elapsed, 3),
                      alerts=sum(counts.values()), episodes=episodes, by_severity=counts,
                      verify=report.summary().splitlines()[0], url=service.url, state_dir=str(state))


class _TimeOnly(msgspec.Struct):
    recorded: str = ""


def _event_ms(decoder: msgspec.json.Decoder[_TimeOnly], line: bytes) -> int:
    from sentinelle.events import parse_time

    try:
        rec = decoder.decode(line).recorded
        return parse_time(rec) if rec else 0
    except (msgspec.MsgspecError, ValueError):
        return 0


if __name__ == "__main__":
    main()
