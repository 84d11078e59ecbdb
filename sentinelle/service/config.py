"""The service's configuration: one TOML file, every setting in one table (`SETTINGS`)."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.errors import ConfigError
from sentinelle.ledger import LedgerSettings

log = logging.getLogger("sentinelle.service")

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
    detection_process: int = -1
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
    ("intake.detection_process", -1, "Detection in a process of its own (-1: when there are 2+ CPUs, 1: always, "
     "0: in a thread of the service)."),
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


