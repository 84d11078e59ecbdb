"""The service under load: bulk NDJSON ingest with durable ledger appends, single-event latency, event-to-alert latency.

What is measured, per ledger backend (SQLite, PostgreSQL):

1. **Sustained bulk ingest**: simulated BALP FHIR AuditEvents (the simulator's hospital,
   1.8 KB each) POSTed as NDJSON (`/fhir/AuditEvent/$bulk`, 5,000 lines a request) by
   two client threads over keep-alive connections to a service running in this process
   (HTTP, decoding, group-committed durable ledger appends, detection online). Events/s
   counts events acknowledged (200 = durable); the time until detection has seen the
   last one is printed too. The ratio is to a **bare bulk insert** of the same events as
   plain rows (15 columns, no hashing, no protection) into the same database, with the
   reference code of bench/ingest_ledger.py (one transaction; and 10,000-row ones).
2. **Single-event HTTP latency**: one AuditEvent per POST /fhir/AuditEvent, one client,
   sequential (so each is its own group commit): p50 and p99, idle and during the bulk load.
3. **Event-to-alert latency** during the bulk load: every 50 ms an account opens a decoy
   record (an access that always alerts); latency = the service's raise time minus the
   client's send time of that event, p50 and p99.

Usage:
    python bench/ingest.py [--events 150000] [--size small] [--backends sqlite,postgresql]
        [--pg postgresql://root@127.0.0.1:5432/test] [--latency 1000]
The machine has 2 cores; the client threads share them with the service.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _data import trail
from ingest_ledger import bare_postgres, bare_sqlite, plain_rows

from sentinelle.events import parse_time
from sentinelle.service import hash_token
from sentinelle.sources import Quarantine, fhir_json

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-source-token"
ANALYST = "bench-analyst-token"
CHUNK = 5000


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=300)

    def post(self, path: str, body: bytes, ctype: str) -> tuple[int, dict[str, str]]:
        self.conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype})
        r = self.conn.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}


def _decoy_context(folder: Path, n: int = 500) -> Path:
    """Decoy patients added beside the hospital's context: any access to one alerts, even while learning."""
    tag = {"system": "https://sentinelle.health/tags", "code": "decoy"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Patient.ndjson").write_text("".join(
        json.dumps({"resourceType": "Patient", "id": f"bench-decoy-{i}", "meta": {"tag": [tag]}}) + "\n"
        for i in range(n)))
    return folder


def _decoy_event(i: int, t_ms: int) -> bytes:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ms / 1000)) + f".{t_ms % 1000:03d}Z"
    return json.dumps({
        "resourceType": "AuditEvent", "id": f"bench-decoy-ev-{i}-{uuid.uuid4().hex[:6]}",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R", "recorded": when, "outcome": "0",
        "agent": [{"who": {"identifier": {"value": f"bench.snoop{i}"}}, "requestor": True}],
        "source": {"observer": {"display": "bench"}},
        "entity": [{"what": {"reference": f"Patient/bench-decoy-{i % 500}"}}],
    }).encode()


class ServiceProcess:
    """`python -m sentinelle.service` with a TOML configuration, as it is deployed."""

    def __init__(self, tmp: Path, name: str, url: str, context: list[Path], workers: int) -> None:
        self.dir = tmp / f"service-{name}"
        self.dir.mkdir()
        cfg = self.dir / "service.toml"
        ctx = ", ".join(json.dumps(str(c)) for c in context)
        cfg.write_text(f"""
state_dir = "state"
context = [{ctx}]
[[tokens]]
name = "bench"
role = "source"
sha256 = "{hash_token(TOKEN)}"
[[tokens]]
name = "analyst"
role = "analyst"
sha256 = "{hash_token(ANALYST)}"
[ledger]
url = {json.dumps(url)}
key_dir = "keys"
checkpoint_events = 10000
[http]
host = "127.0.0.1"
port = 0
[intake]
decode_workers = {workers}
""")
        ready = self.dir / "ready.json"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log = open(self.dir / "service.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "sentinelle.service", "--config", str(cfg),
                                      "--ready-file", str(ready)], env=env, stdout=self.log, stderr=self.log)
        t0 = time.perf_counter()
        while not ready.exists():
            if self.proc.poll() is not None:
                raise SystemExit((self.dir / "service.log").read_text()[-3000:])
            time.sleep(0.05)
        self.url = json.loads(ready.read_text())["url"]
        self.started_s = time.perf_counter() - t0

    def get(self, path: str) -> Any:
        host, port = self.url.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", path, headers={"Authorization": f"Bearer {ANALYST}"})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return json.loads(data) if path != "/metrics" else data.decode()

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in self.get("/metrics").splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def cpu_s(self, pid: int | None = None) -> float:
        """CPU seconds (user + system) of the service process, or of one of its decoding workers."""
        with open(f"/proc/{pid or self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def workers(self, flag: str = "--decode-worker") -> list[int]:
        """Pids of the service's child processes started with `flag` (its NDJSON decoding workers)."""
        out: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for pid in (int(x) for x in (task / "children").read_text().split()):
                    if flag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                        out.append(pid)
        return out

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()


def _wait_detected(svc: ServiceProcess, timeout: float = 300) -> None:
    """Until detection has seen everything stored (metrics: queue empty, lag reported)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = svc.metrics()
        if m.get("sentinelle_intake_queue_events", 1) == 0 and m.get("sentinelle_detection_queue_batches", 1) == 0:
            return
        time.sleep(0.05)


def run_backend(name: str, url: str, lines: list[bytes], context: list[Path], tmp: Path, args: argparse.Namespace
                ) -> dict[str, float]:
    svc = ServiceProcess(tmp, name, url, context, args.workers)
    print(f"  service up in {svc.started_s:.1f} s on {svc.url} (pid {svc.proc.pid})", flush=True)
    out: dict[str, float] = {}
    try:
        # 2. single events, idle
        c = Client(svc.url)
        lat_idle = []
        for line in lines[: args.latency]:
            s = time.perf_counter()
            status, _ = c.post("/fhir/AuditEvent", line, "application/fhir+json")
            lat_idle.append(time.perf_counter() - s)
            assert status in (200, 201), status
        out["single_p50_idle_ms"] = _pct(lat_idle, 0.5) * 1000
        out["single_p99_idle_ms"] = _pct(lat_idle, 0.99) * 1000

        # 1 + 3. bulk from two clients; single events and decoy accesses beside them
        bulk = lines[args.latency:]
        chunks = [b"".join(bulk[i:i + CHUNK]) for i in range(0, len(bulk), CHUNK)]
        acked = [0, 0]
        done = threading.Event()
        decoy_sent: dict[str, float] = {}
        lat_load: list[float] = []

        def sender(k: int) -> None:
            cl = Client(svc.url)
            for j in range(k, len(chunks), 2):
                while True:
                    status, headers = cl.post("/fhir/AuditEvent/$bulk", chunks[j], "application/fhir+ndjson")
                    if status != 429:
                        break
                    time.sleep(float(headers.get("retry-after", "1")))
                assert status == 200, status
                acked[k] += int(headers["x-sentinelle-accepted"])

        def prober() -> None:
            cl = Client(svc.url)
            i = 0
            base = int(time.time() * 1000)
            while not done.is_set():
                i += 1
                decoy_sent[f"bench.snoop{i}"] = time.time()
                cl.post("/fhir/AuditEvent", _decoy_event(i, base + i), "application/fhir+json")
                line = lines[i % args.latency]
                s = time.perf_counter()
                cl.post("/fhir/AuditEvent", line, "application/fhir+json")
                lat_load.append(time.perf_counter() - s)
                time.sleep(0.05)

        threads = [threading.Thread(target=sender, args=(k,)) for k in (0, 1)]
        probe = threading.Thread(target=prober)
        m0 = svc.metrics()
        cpu0 = svc.cpu_s()
        workers = svc.workers()
        wcpu0 = sum(svc.cpu_s(w) for w in workers)
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        probe.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu = svc.cpu_s() - cpu0
        wcpu = sum(svc.cpu_s(w) for w in workers) - wcpu0
        done.set()
        probe.join()
        _wait_detected(svc)
        caught_up = time.perf_counter() - t0
        m1 = svc.metrics()
        n = sum(acked)
        out["bulk_events"] = n
        out["bulk_rate"] = n / wall
        out["bulk_cpu_us"] = cpu / n * 1e6
        out["worker_cpu_us"] = wcpu / n * 1e6
        out["workers"] = len(workers)
        out["detection_apart"] = len(svc.workers("--detect-worker"))
        for thread in ("writer", "detection"):
            key = f'sentinelle_thread_cpu_seconds_total{{thread="{thread}"}}'
            out[f"{thread}_cpu_us"] = (m1.get(key, 0) - m0.get(key, 0)) / n * 1e6
        out["commits"] = m1["sentinelle_ledger_commit_seconds_count"] - m0["sentinelle_ledger_commit_seconds_count"]
        out["detected_after_s"] = caught_up
        out["single_p50_load_ms"] = _pct(lat_load, 0.5) * 1000
        out["single_p99_load_ms"] = _pct(lat_load, 0.99) * 1000
        alerts = []
        cursor = ""
        raised: dict[str, float] = {}
        while True:
            page = svc.get(f"/alerts?kind=decoy&latest=false&limit=1000{cursor}")
            for a in page["alerts"]:
                t = parse_time(a["raised"]) / 1000
                raised[a["account"]] = min(t, raised.get(a["account"], t))
            if page["cursor"] is None:
                break
            cursor = f"&cursor={page['cursor']}"
        for account, sent in decoy_sent.items():
            if account in raised:
                alerts.append(raised[account] - sent)
        out["alerts"] = len(alerts)
        out["decoys_sent"] = len(decoy_sent)
        out["alert_p50_ms"] = _pct(alerts, 0.5) * 1000
        out["alert_p99_ms"] = _pct(alerts, 0.99) * 1000
    finally:
        svc.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--size", default="small")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    ap.add_argument("--latency", type=int, default=1000, help="single events timed while idle")
    ap.add_argument("--workers", type=int, default=-1, help="decode workers (-1: the service's default)")
    args = ap.parse_args()

    path, context_dir = trail(args.events + args.latency, size=args.size, seed=3)
    with open(path, "rb") as f:
        lines = f.readlines()
    q = Quarantine()
    events = list(fhir_json.read_lines(lines, "bench", q))
    rows = plain_rows(events)
    mb = sum(map(len, lines)) / 2**20
    print(f"{len(lines):,} simulated BALP AuditEvents ({mb:,.0f} MB of NDJSON, {mb * 2**20 / len(lines):,.0f} B "
          f"each); {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="sentinelle-bench-ingest-"))
    try:
        for backend in args.backends.split(","):
            print(f"{backend}:", flush=True)
            if backend == "sqlite":
                bare = bare_sqlite(tmp / "bare.db", rows, None)
                bare_b = bare_sqlite(tmp / "bare-b.db", rows, 10_000)
                url = f"sqlite:///{tmp / 'ledger.db'}"
            else:
                try:
                    with psycopg.connect(args.pg, connect_timeout=3):
                        pass
                except psycopg.Error as exc:
                    print(f"  skipped: {exc}")
                    continue
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                bare = bare_postgres(args.pg, schema, rows, None)
                bare_b = bare_postgres(args.pg, schema, rows, 10_000)
                url = f"{args.pg}?schema={schema}"
            r = run_backend(backend, url, lines, [context_dir, _decoy_context(tmp / "decoys")], tmp, args)
            n = len(rows)
            print(f"  bare bulk insert of the same rows: {n / bare:,.0f} rows/s (one transaction), "
                  f"{n / bare_b:,.0f} rows/s (10,000-row transactions)")
            print(f"  service bulk NDJSON ingest, durable: {r['bulk_rate']:,.0f} events/s "
                  f"({r['bulk_events']:,.0f} events) = {r['bulk_rate'] / (n / bare):.0%} of the bare one-transaction "
                  f"rate, {r['bulk_rate'] / (n / bare_b):.0%} of the batched one; "
                  f"{r['bulk_cpu_us']:.1f} µs CPU/event in the service process")
            if r["detection_apart"]:
                detection = (f"; plus detection {r['detection_cpu_us']:.1f} µs (its own process, and the "
                             "service thread feeding it)")
            else:
                detection = f", detection {r['detection_cpu_us']:.1f} µs"
            print(f"    of which the ledger writer thread {r['writer_cpu_us']:.1f} µs{detection}; "
                  f"{r['commits']:,.0f} group commits; plus {r['worker_cpu_us']:.1f} µs/event in "
                  f"{r['workers']:.0f} decoding worker process(es)")
            busiest = max(r["bulk_cpu_us"], r["worker_cpu_us"] / max(1.0, r["workers"]),
                          r["detection_cpu_us"] if r["detection_apart"] else 0.0)
            print(f"    CPU-bound rate with a core for each process: {1e6 / busiest:,.0f} events/s "
                  f"(the machine's load average was {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
            print(f"  detection caught up {r['detected_after_s']:.1f} s after the start of the bulk load")
            print(f"  single-event POST latency: idle p50 {r['single_p50_idle_ms']:.2f} ms, p99 "
                  f"{r['single_p99_idle_ms']:.2f} ms; under the bulk load p50 {r['single_p50_load_ms']:.1f} ms, "
                  f"p99 {r['single_p99_load_ms']:.1f} ms")
            print(f"  event-to-alert latency under the bulk load ({r['alerts']:.0f} alerts of {r['decoys_sent']:.0f} "
                  "decoy accesses): "
                  f"p50 {r['alert_p50_ms']:.0f} ms, p99 {r['alert_p99_ms']:.0f} ms", flush=True)
            if backend != "sqlite":
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
