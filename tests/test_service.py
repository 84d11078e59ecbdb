"""The service as a whole: configuration, syslog from util-linux `logger` into the ledger, restarts that
keep running episodes without re-raising alerts, and `kill -9` during a sustained ingest."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from service_kit import (
    ANALYST_TOKEN,
    DECOYS,
    ROOT,
    SOURCE_TOKEN,
    TESTDATA,
    audit_event,
    decoy_context,
    running,
    service_config,
    write_context,
)

from sentinelle.context import CareContext
from sentinelle.detect import Alert
from sentinelle.errors import ConfigError
from sentinelle.ledger import LedgerReader, load_keyring, verify
from sentinelle.service import SETTINGS, Service, ServiceConfig, TokenRegistry, hash_token, load_config
from sentinelle.sources import atna

SRC = {"Authorization": f"Bearer {SOURCE_TOKEN}", "Content-Type": "application/fhir+json"}
NDJSON = {"Authorization": f"Bearer {SOURCE_TOKEN}", "Content-Type": "application/fhir+ndjson"}
ANALYST = {"Authorization": f"Bearer {ANALYST_TOKEN}"}


# ---- configuration ---------------------------------------------------------------------------


def test_config_file_paths_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    cfg_file = tmp_path / "conf" / "service.toml"
    cfg_file.write_text('state_dir = "state"\ncontext = ["ctx"]\n[ledger]\nurl = "sqlite:///data/l.db"\n'
                        '[http]\nport = 8443\n[syslog]\ntcp_port = 6514\n[detection]\nlearning_days = 3\n')
    cfg = load_config(cfg_file)
    assert cfg.state_dir == str(tmp_path / "conf" / "state")
    assert cfg.context == [str(tmp_path / "conf" / "ctx")]
    assert cfg.ledger.url == f"sqlite:///{tmp_path / 'conf' / 'data' / 'l.db'}"
    assert (cfg.http.port, cfg.syslog.tcp_port, cfg.syslog.udp_port) == (8443, 6514, None)
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config(bad)
    with pytest.raises(ConfigError, match="detection settings"):
        Service(load_config(None, {"detection": {"no_such_setting": 1}}))


def test_tokens_are_hashed_and_checked(tmp_path: Path) -> None:
    f = tmp_path / "tokens.toml"
    f.write_text(f'[[tokens]]\nname = "dpi"\nrole = "source"\nsha256 = "{hash_token("t0ken")}"\n'
                 '[[tokens]]\nname = "soc"\nrole = "analyst"\nsha256 = "sha256:' + hash_token("other") + '"\n')
    reg = TokenRegistry.load(f)
    assert reg.authenticate("t0ken") is not None and reg.authenticate("t0ken").role == "source"  # type: ignore[union-attr]
    assert reg.authenticate("other").name == "soc"  # type: ignore[union-attr]
    assert reg.authenticate("t0ke") is None and reg.authenticate("") is None
    f.write_text('[[tokens]]\nname = "x"\nrole = "root"\ntoken = "a"\n')
    with pytest.raises(ConfigError, match="role"):
        TokenRegistry.load(f)


def test_settings_table_names_every_field() -> None:
    names = {name for name, _, _ in SETTINGS}
    top = set(ServiceConfig.__struct_fields__) - {"ledger"}
    for name in top:
        sub = getattr(ServiceConfig(), name)
        fields = getattr(type(sub), "__struct_fields__", None)
        if fields is None or name in ("webhook", "cef", "email", "tokens"):
            assert name in names, name
        else:
            assert {f"{name}.{f}" for f in fields} <= names, name
    defaults = {name: default for name, default, _ in SETTINGS}
    cfg = ServiceConfig()
    for name, default in defaults.items():
        obj: object = cfg
        for part in name.split("."):
            obj = getattr(obj, part)
        assert obj == default, (name, obj, default)
    doc = (ROOT / "docs" / "service.md").read_text()
    missing = [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"settings missing from docs/service.md: {missing}"


# ---- syslog from a real sender ------------------------------------------------------------------


def _atna_in_ledger(svc: Service, files: list[Path], seconds: float) -> tuple[dict[str, object], dict[str, object]]:
    """(the events the file reader makes of `files`, those of them found in the service's ledger in time)."""
    expected: dict[str, object] = {atna.parse_message(p.read_bytes()).id: atna.parse_message(p.read_bytes())
                                   for p in files}
    ring = load_keyring(key_dir=svc.config.ledger.key_dir)
    found: dict[str, object] = {}
    deadline = time.monotonic() + seconds
    while len(found) < len(files) and time.monotonic() < deadline:
        time.sleep(0.1)
        with LedgerReader.open(svc.config.ledger.url, ring) as reader:
            found = {s.event.id: s.event for s in reader.events() if s.event.id in expected}
    return expected, found


def test_logger_sends_atna_messages_that_end_up_in_the_ledger(tmp_path: Path) -> None:
    dicom = TESTDATA / "dicom-audit"
    if not dicom.is_dir():
        pytest.skip(f"DICOM samples absent ({dicom})")
    if shutil.which("logger") is None:
        pytest.skip("util-linux logger is not installed")
    files = [dicom / n for n in ("query-03.xml", "patient-record-01.xml", "data-export-01.xml",
                                 "dicom-instances-accessed-12.xml")]
    modes = [["--tcp", "--octet-count"], ["--tcp"], ["--udp"], ["--tcp", "--octet-count"]]
    with running(tmp_path, syslog={"tcp_port": 0, "udp_port": 0}) as svc:
        for path, mode in zip(files, modes, strict=True):
            port = svc.ports["syslog_udp" if "--udp" in mode else "syslog_tcp"]
            subprocess.run(["logger", "--server", "127.0.0.1", "--port", str(port), *mode, "--rfc5424",
                            "--msgid", "IHE+RFC-3881", "--size", "65536", "-t", "atna", path.read_text()],
                           check=True, timeout=10)
        expected, found = _atna_in_ledger(svc, files, 20)
        assert found == expected  # same events as the file reader, clear patients after decryption
        assert svc.listener is not None and svc.listener.stats.rejected == 0



def _rsyslog_with_gtls() -> str | None:
    """rsyslogd when it is installed with its GnuTLS network driver (Debian: rsyslog, rsyslog-gnutls)."""
    import glob

    found = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if found is None or not glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") + glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so"):
        return None
    return found


def test_rsyslog_forwards_atna_over_tls_and_they_end_up_in_the_ledger(tmp_path: Path) -> None:
    """RFC 5425 with a real relay: logger -> rsyslog (imtcp) -> rsyslog omfwd over TLS (gtls,
    octet-counted, the certificate checked) -> Sentinelle's TLS listener -> ledger."""
    from service_kit import free_port, self_signed

    dicom = TESTDATA / "dicom-audit"
    if not dicom.is_dir():
        pytest.skip(f"DICOM samples absent ({dicom})")
    rsyslogd = _rsyslog_with_gtls()
    if rsyslogd is None or shutil.which("logger") is None:
        pytest.skip("rsyslog with rsyslog-gnutls, or util-linux logger, is not installed "
                    "(`make test` installs them on Debian: apt-get install rsyslog rsyslog-gnutls)")
    files = [dicom / n for n in ("query-03.xml", "patient-record-01.xml", "data-export-01.xml")]
    cert, key = self_signed(tmp_path / "tls")
    relay_port = free_port()
    work = tmp_path / "rsyslog"
    work.mkdir()
    with running(tmp_path, syslog={"tls_port": 0, "tls_cert": str(cert), "tls_key": str(key)}) as svc:
        conf = work / "rsyslog.conf"
        conf.write_text(f"""
global(workDirectory="{work}" maxMessageSize="256k" parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriverCAFile="{cert}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{relay_port}" ruleset="to-sentinelle")
ruleset(name="to-sentinelle") {{
  action(type="omfwd" target="127.0.0.1" port="{svc.ports['syslog_tls']}" protocol="tcp"
         TCP_Framing="octet-counted" StreamDriver="gtls" StreamDriverMode="1"
         StreamDriverAuthMode="x509/certvalid" template="RSYSLOG_SyslogProtocol23Format")
}}
""")
        log = open(work / "rsyslogd.log", "wb")  # noqa: SIM115 - closed below
        relay = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(work / "pid")],
                                 stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", relay_port), 0.5):
                    break
                assert relay.poll() is None and time.monotonic() < deadline, (work / "rsyslogd.log").read_text()
                time.sleep(0.1)
            for path in files:
                subprocess.run(["logger", "--server", "127.0.0.1", "--port", str(relay_port), "--tcp",
                                "--octet-count", "--rfc5424", "--msgid", "IHE+RFC-3881", "--size", "65536",
                                "-t", "atna", path.read_text()], check=True, timeout=10)
            expected, found = _atna_in_ledger(svc, files, 30)
        finally:
            relay.terminate()
            relay.wait(10)
            log.close()
        assert found == expected, (work / "rsyslogd.log").read_text()[-2000:]
        assert svc.listener is not None and svc.listener.stats.rejected == 0

# ---- restart: snapshot + ledger tail ---------------------------------------------------------------


def _reads(first: int, n: int, account: str = "intruder") -> bytes:
    return b"".join(json.dumps(audit_event(first + k, account=account, patient=f"Patient/x{first + k}",
                                           event_id=f"r-{first + k}")).encode() + b"\n" for k in range(n))


def test_a_large_bulk_decoded_by_a_worker_names_bad_lines_across_its_pieces(tmp_path: Path) -> None:
    """A body of several 2 MiB pieces (the worker path): each bad line is named by its line in the body."""
    lines = _reads(0, 9000).splitlines(keepends=True)
    bad = [3, 4100, 8999]  # 1-based: in the first, second or third piece, and the last line
    for n in bad:
        lines[n - 1] = b'{"resourceType": "AuditEvent", "id": \n'
    body = b"".join(lines)
    assert len(body) > (4 << 20)  # at least three pieces
    with running(tmp_path, intake={"decode_workers": 1}) as svc:
        r = httpx.post(f"{svc.url}/fhir/AuditEvent/$bulk", content=body, headers=NDJSON, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["x-sentinelle-new"] == str(9000 - len(bad))
        named = [i["location"][0] for i in r.json()["issue"] if i["severity"] == "error"]
        assert named == [f"line {n}" for n in bad]
    with LedgerReader.open(f"sqlite:///{tmp_path / 'ledger.db'}") as reader:
        ids = {s.event.id for s in reader.events() if s.event.source == "dpi-main"}
    assert len(ids) == 9000 - len(bad) and "r-4099" not in ids and "r-4100" in ids


def _episode_versions(svc: Service, account: str) -> list[tuple[str, int]]:
    return sorted((s.alert.episode, s.alert.version) for s in svc.store.query(account=account, latest=False).items)


@pytest.mark.parametrize("detection", ["thread", "process"])
def test_restart_continues_the_episode_and_raises_nothing_twice(tmp_path: Path, detection: str) -> None:
    # Detection in a thread of the service (a context object given to it), or in a process
    # of its own (the context from files): the same restart semantics.
    if detection == "thread":
        ctx: CareContext | None = decoy_context()
        cfg = service_config(tmp_path, snapshot_seconds=0.2)
    else:
        ctx = None
        cfg = service_config(tmp_path, snapshot_seconds=0.2, context=[str(write_context(tmp_path / "ctx"))],
                             intake={"detection_process": 1})
    raised: list[Alert] = []
    svc = Service(cfg, context=ctx)
    svc.on_alert(lambda a, _: raised.append(a))
    svc.start_background()
    try:
        r = httpx.post(f"{svc.url}/fhir/AuditEvent", headers=SRC,
                       content=json.dumps(audit_event(0, account="intruder", patient=DECOYS[0])).encode())
        assert r.status_code == 201
        assert svc.wait_detected(10)
        time.sleep(1.5)  # a timed snapshot now covers the decoy alert
        stale = svc.snapshot_path.read_bytes()
        r = httpx.post(f"{svc.url}/fhir/AuditEvent/$bulk", content=_reads(10, 12), headers=NDJSON)
        assert r.status_code == 200
        assert svc.wait_detected(10)
    finally:
        svc.stop()
    episode = raised[0].episode
    assert (raised[0].kind, raised[0].version) == ("decoy", 1)
    assert [(a.episode, a.version) for a in raised] == [(episode, v) for v in range(1, len(raised) + 1)]
    assert len(raised) >= 2  # the reads after the snapshot grew the episode
    last = len(raised)

    # Restart from the stale snapshot: the 12 reads after it are replayed, the versions they
    # raised are recognised (not raised again), and the episode keeps growing.
    svc.snapshot_path.write_bytes(stale)
    again: list[Alert] = []
    svc2 = Service(cfg, context=ctx)
    svc2.on_alert(lambda a, _: again.append(a))
    svc2.start_background()
    try:
        assert svc2.replayed >= 12
        assert again == []
        r = httpx.post(f"{svc2.url}/fhir/AuditEvent/$bulk", content=_reads(30, 14), headers=NDJSON)
        assert r.status_code == 200
        assert svc2.wait_detected(10)
        assert again and [(a.episode, a.version) for a in again] == [
            (episode, v) for v in range(last + 1, last + 1 + len(again))]
        last += len(again)
        assert _episode_versions(svc2, "intruder") == [(episode, v) for v in range(1, last + 1)]
    finally:
        svc2.stop()

    # Without any snapshot the whole ledger is replayed: same state, nothing raised again.
    svc2.snapshot_path.unlink()
    third: list[Alert] = []
    svc3 = Service(cfg, context=ctx)
    svc3.on_alert(lambda a, _: third.append(a))
    svc3.start_background()
    try:
        assert svc3.replayed >= 27 and third == []
        assert (svc3.engine is not None) == (detection == "thread")
        if svc3.engine is not None:
            ep = svc3.engine.accounts["intruder"].episode
            assert ep is not None and ep.id == episode and ep.version == last
        r = httpx.post(f"{svc3.url}/fhir/AuditEvent/$bulk", content=_reads(50, 40), headers=NDJSON)
        assert r.status_code == 200
        assert svc3.wait_detected(10)
        assert third and [(a.episode, a.version) for a in third] == [
            (episode, v) for v in range(last + 1, last + 1 + len(third))]
    finally:
        svc3.stop()


def test_a_dead_detection_process_loses_no_event_and_the_restart_detects_them(tmp_path: Path) -> None:
    cfg = service_config(tmp_path, context=[str(write_context(tmp_path / "ctx"))], intake={"detection_process": 1})
    svc = Service(cfg)
    svc.start_background()
    try:
        assert svc._remote is not None
        svc._remote._proc.kill()
        svc._remote._proc.wait()
        r = httpx.post(f"{svc.url}/fhir/AuditEvent", headers=SRC,
                       content=json.dumps(audit_event(0, account="intruder", patient=DECOYS[0])).encode())
        assert r.status_code == 201  # stored and acknowledged: detection is not on the durable path
        deadline = time.monotonic() + 10
        while svc.failed is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert svc.failed is not None and "stopped answering" in str(svc.failed)
    finally:
        svc.stop()
    raised: list[Alert] = []
    svc2 = Service(cfg)
    svc2.on_alert(lambda a, _: raised.append(a))
    svc2.start()
    try:
        assert [(a.kind, a.account) for a in raised] == [("decoy", "intruder")]
    finally:
        svc2.close()


# ---- kill -9 ----------------------------------------------------------------------------------------


def _write_config(tmp: Path, extra: str = "", workers: int = 0) -> Path:
    write_context(tmp / "context")
    text = f"""
state_dir = "state"
context = ["context"]
snapshot_seconds = 0.5
[[tokens]]
name = "dpi-main"
role = "source"
sha256 = "{hash_token(SOURCE_TOKEN)}"
[[tokens]]
name = "alice"
role = "analyst"
sha256 = "{hash_token(ANALYST_TOKEN)}"
[http]
host = "127.0.0.1"
port = 0
[intake]
decode_workers = {workers}
[detection]
learning_days = 0
{extra}
"""
    if "[ledger]" not in extra:
        text += '[ledger]\nurl = "sqlite:///ledger.db"\nkey_dir = "keys"\ncheckpoint_events = 500\n'
    path = tmp / "service.toml"
    path.write_text(text)
    return path


class Proc:
    """`python -m sentinelle.service` in a subprocess, ready once it wrote its ports."""

    def __init__(self, config: Path) -> None:
        self.ready = config.parent / "ready.json"
        self.ready.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log = open(config.parent / "service.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "sentinelle.service", "--config", str(config),
                                      "--ready-file", str(self.ready)], env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 90
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.flush()
                log = (config.parent / "service.log").read_text()[-3000:]
                raise AssertionError(f"the service did not start: {log}")
            time.sleep(0.05)
        self.url = json.loads(self.ready.read_text())["url"]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.log.close()
        return code


@pytest.fixture
def pg_url() -> Iterator[str]:
    import uuid

    base = os.environ.get("SENTINELLE_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
    try:
        with psycopg.connect(base, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at {base} is not reachable ({exc})")
    schema = f"svc_{uuid.uuid4().hex[:8]}"
    yield f"{base}?schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _sustained_ingest(url: str, seconds: float, kill: Proc | None = None, bulk: int = 25
                      ) -> tuple[set[str], dict[str, bytes]]:
    """Four senders post single events and bulks of `bulk` events; returns (acknowledged ids, attempted id -> line)."""
    acked: set[str] = set()
    attempted: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def sender(t: int) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                n += 1
                ids = [f"k{t}-{n}-{j}" for j in range(1 if n % 3 else bulk)]
                lines = [json.dumps(audit_event(t * 1_000_000 + n * 1_000 + j, account=f"user{t}",
                                                event_id=eid)).encode() + b"\n" for j, eid in enumerate(ids)]
                body = b"".join(lines)
                with lock:
                    attempted.update(zip(ids, lines, strict=True))
                try:
                    r = c.post("/fhir/AuditEvent/$bulk", content=body, headers=NDJSON)
                except httpx.HTTPError:
                    return  # the service is gone: these ids are in doubt, never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.update(ids)
                elif r.status_code != 429:
                    return

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    if kill is not None:
        kill.kill()
    stop.set()
    for t in threads:
        t.join(30)
    return acked, attempted


def _ledger_ids(url: str) -> list[str]:
    with LedgerReader.open(url) as reader:
        return [s.event.id for s in reader.events(reveal=False) if s.event.source == "dpi-main"]


def _kill_test(tmp_path: Path, extra: str, ledger_url: str, workers: int = 0, bulk: int = 25) -> None:
    config = _write_config(tmp_path, extra, workers)
    proc = Proc(config)
    with httpx.Client(base_url=proc.url, timeout=30) as c:
        r = c.post("/fhir/AuditEvent", headers=SRC,
                   content=json.dumps(audit_event(-5, account="intruder", patient=DECOYS[1], event_id="dec")).encode())
        assert r.status_code == 201
        deadline = time.monotonic() + 10
        while not c.get("/alerts", headers=ANALYST).json()["alerts"] and time.monotonic() < deadline:
            time.sleep(0.05)
    acked, attempted = _sustained_ingest(proc.url, 2.5, kill=proc, bulk=bulk)
    assert len(acked) > 200, "the ingest did not get going before the kill"

    proc = Proc(config)  # restart on the same ledger: replays the tail after the snapshot
    try:
        ids = _ledger_ids(ledger_url)
        assert len(ids) == len(set(ids)), "an event is stored twice"
        missing = acked - set(ids)
        assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            # the alert raised before the crash is not raised again by the replay
            alerts = c.get("/alerts", params={"account": "intruder", "latest": "false"}, headers=ANALYST).json()
            assert alerts["count"] == 1
            # re-sending everything that was attempted: acknowledged ones are recognised, the rest stored once
            items = sorted(attempted)
            new = dup = 0
            for i in range(0, len(items), 500):
                body = b"".join(attempted[eid] for eid in items[i:i + 500])
                r = c.post("/fhir/AuditEvent/$bulk", content=body, headers=NDJSON)
                assert r.status_code == 200
                new += int(r.headers["x-sentinelle-new"])
                dup += int(r.headers["x-sentinelle-accepted"]) - int(r.headers["x-sentinelle-new"])
        assert dup >= len(acked) and new == len(set(attempted) - set(ids))
        ids = _ledger_ids(ledger_url)
        assert len(ids) == len(set(ids)) and set(ids) >= set(attempted)
    finally:
        assert proc.terminate() == 0
    report = verify(ledger_url)
    assert report.ok, report.summary()
    if workers:
        with LedgerReader.open(ledger_url) as reader:  # the bulks were sealed in the worker
            assert any(r is not None and r.nonce[:1] and r.nonce[0] & 0x80 for _, r in reader.records())


def test_kill_9_during_sustained_ingest_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    _kill_test(tmp_path, "", f"sqlite:///{tmp_path / 'ledger.db'}")


def test_kill_9_with_decoding_workers_sealing_large_bulks(tmp_path: Path) -> None:
    """The bulk path of production: bodies over 256 KB decoded and sealed by a worker process."""
    _kill_test(tmp_path, "", f"sqlite:///{tmp_path / 'ledger.db'}", workers=1, bulk=450)


def test_kill_9_with_postgresql(tmp_path: Path, pg_url: str) -> None:
    extra = f'[ledger]\nurl = "{pg_url}"\nkey_dir = "keys"\ncheckpoint_events = 500\n'
    _kill_test(tmp_path, extra, pg_url)


# ---- the demo -----------------------------------------------------------------------------------------


def test_demo_replays_a_hospital_and_shows_alerts_live(tmp_path: Path) -> None:
    from sentinelle.service.demo import run_demo

    seen: list[tuple[Alert, float]] = []
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", size="tiny", seed=1, echo=lines.append,
                      on_alert=lambda a, latency: seen.append((a, latency)))
    assert result.events_stored == result.events_sent > 10_000
    assert result.alerts == len(seen) > 0 and result.episodes >= 1
    assert result.verify.startswith("OK")
    assert max(latency for _, latency in seen) < 5.0
    assert any("Replayed" in line for line in lines)
