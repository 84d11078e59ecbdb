"""Helpers shared by the service, web, response and listener tests: certificates, ports, a care
context with decoys, events, and a service running in a background thread.

Imported by name: tests/ is on sys.path for tests/test_service.py, and the conftest files of
tests/web and tests/respond put it there for theirs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sentinelle.context import CareContext
from sentinelle.service import Service, load_config

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT / ".." / "shared" / "testdata"
SOURCE_TOKEN = "source-token-0123456789"
OTHER_SOURCE_TOKEN = "other-source-token-0123"
ANALYST_TOKEN = "analyst-token-0123456789"
METRICS_TOKEN = "metrics-token-0123456789"
TOKENS = [
    {"name": "dpi-main", "role": "source", "token": SOURCE_TOKEN},
    {"name": "lab", "role": "source", "token": OTHER_SOURCE_TOKEN},
    {"name": "alice", "role": "analyst", "token": ANALYST_TOKEN},
    {"name": "prometheus", "role": "metrics", "token": METRICS_TOKEN},
]
T0 = 1_736_935_200_000  # 2025-01-15T10:00:00Z
DECOYS = [f"Patient/decoy-{i}" for i in range(40)]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate and key for `host`, as PEM files (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def context_resources() -> list[dict[str, Any]]:
    """A small care context: two staff members and decoy patients (any access to one is an alert)."""
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": p.split("/")[1],
         "meta": {"tag": [{"system": "https://sentinelle.health/tags", "code": "decoy"}]}}
        for p in DECOYS
    ]
    out.append({"resourceType": "Patient", "id": "123"})
    return out


def decoy_context() -> CareContext:
    return CareContext.from_resources(context_resources())


def write_context(folder: Path) -> Path:
    """The same context as an NDJSON file (for services in another process)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Patient.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in context_resources()))
    return folder


def audit_event(i: int, *, account: str = "j.martin", patient: str = "Patient/123", t: int | None = None,
                source: str = "dpi-main", event_id: str | None = None) -> dict[str, Any]:
    """A minimal BALP-shaped FHIR R4 AuditEvent read of one patient."""
    when = dt.datetime.fromtimestamp((T0 + i * 1000 if t is None else t) / 1000, dt.UTC)
    return {
        "resourceType": "AuditEvent",
        "id": event_id or f"ev-{i}",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R",
        "recorded": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": "0",
        "agent": [{"who": {"identifier": {"value": account}}, "requestor": True,
                   "network": {"address": "10.0.0.7", "type": "2"}}],
        "source": {"observer": {"display": source}},
        "entity": [{"what": {"reference": patient},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                    "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}],
    }


def service_config(tmp: Path, **overrides: Any) -> Any:
    doc: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "ledger": {"url": f"sqlite:///{tmp / 'ledger.db'}", "key_dir": str(tmp / "keys"), "checkpoint_events": 1000},
        "http": {"host": "127.0.0.1", "port": 0},
        "tokens": TOKENS,
        "intake": {"decode_workers": 0},
        "detection": {"learning_days": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return load_config(None, doc)


@contextmanager
def running(tmp: Path, context: Any = None, **overrides: Any) -> Iterator[Service]:
    """A service on free ports in a background thread, stopped (drained, closed) afterwards."""
    svc = Service(service_config(tmp, **overrides), context=context if context is not None else decoy_context())
    svc.start_background()
    try:
        yield svc
    finally:
        svc.stop()


def make_alert(n: int = 1, *, severity: str = "high", kind: str = "volume", account: str = "j.martin",
               version: int = 1, patients: tuple[str, ...] = ("Patient/1", "Patient/2"), time_ms: int = T0) -> Any:
    """An alert shaped as the engine's (`build_alert`): id = episode id + version."""
    from sentinelle.detect import Alert, AlertText

    episode = f"ep-{n:016x}"
    fr = AlertText(summary=f"Compte {account} : volume inhabituel, {len(patients)} patients concernés.",
                   evidence=["312 dossiers ouverts en 1 heure, 9 fois son maximum habituel"])
    en = AlertText(summary=f"Account {account}: unusual volume, {len(patients)} patients involved.",
                   evidence=["312 records opened in 1 hour, 9 times its usual maximum"])
    iso = dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
    return Alert(id=f"{episode}-{version}", account=account, time=iso, severity=severity, kind=kind,
                 summary=fr.summary, evidence=fr.evidence, patients=list(patients), first_event=iso, last_event=iso,
                 score=0.93, client="dpi-web", address="10.1.2.3", episode=episode, version=version,
                 patient_count=len(patients), codes=["volume.hour"], lang={"fr": fr, "en": en}, time_ms=time_ms)
