"""Benchmark: reading FHIR AuditEvent NDJSON, against a bare typed msgspec decode of the same file.

The issue's target: one million BALP-shaped AuditEvents (~1-1.7 KB a line) read at
>= 300,000 events/s, in at most 1.5 x the time of decoding every line into the typed
AuditEvent structs and doing nothing else, with memory flat in the file size.

    .venv/bin/python bench/read.py                    # 1,000,000 simulated events
    .venv/bin/python bench/read.py --events 200000
    .venv/bin/python bench/read.py --file audit.ndjson

The file comes from `sentinelle.simulate` when it is there (its "small" hospital, cycled
with fresh ids up to the size asked), else from a BALP generator in this script. Measured
in one process, one after the other: (a) the bare typed decode (`fhir_common.AuditEvent`,
all the fields the reader uses, no normalisation), (a') the lazy decode the reader really
does, (b) `open_events` fully consumed as configured (worker processes for large files),
(b1) the same in one process (`SENTINELLE_WORKERS=1`), (b2) with two workers. RSS is
sampled while each runs; workers report their own peak. Last, (c) times (a) and (b1)
alternately on the first 100,000 lines, CPU time, best of 5: the steadiest ratio on a
machine shared with other work.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).parent))

from _data import reader_path

from sentinelle.sources import Quarantine, fhir_json, open_events
from sentinelle.sources.fhir_common import AuditEvent, AuditEventLazy

_ID_RE = re.compile(rb'"id":"([^"]*)"')


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _from_simulator(path: Path, n: int) -> bool:
    """Cycle the simulator's "small" hospital (fresh ids each round) up to n lines.

    The simulator runs in a child process so that its memory does not count in the
    reader's peak RSS.
    """
    if not (Path(__file__).parents[1] / "sentinelle" / "simulate" / "__init__.py").exists():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import sys; from pathlib import Path; from sentinelle.simulate import simulate; "
            "simulate(Path(sys.argv[1]), 'small', 0)"
        )
        done = subprocess.run([sys.executable, "-c", code, tmp], capture_output=True, text=True)
        source = Path(tmp) / "events" / "auditevents.ndjson"
        if done.returncode != 0 or not source.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"simulator unavailable ({last}); using the built-in generator")
            return False
        written = 0
        with path.open("wb") as out:
            round_ = 0
            while written < n:
                replacement = rb'"id":"\1-r%d"' % round_
                before = written
                with source.open("rb") as lines:
                    for line in lines:
                        out.write(_ID_RE.sub(replacement, line, count=1) if round_ else line)
                        written += 1
                        if written >= n:
                            break
                if written == before:
                    return False  # the simulator wrote no events
                round_ += 1
    return True


def _generated(n: int, seed: int = 1) -> Iterator[bytes]:
    """BALP-shaped AuditEvent lines: reads, searches, creates, updates by varied users."""
    rnd = random.Random(seed)
    dcm = "http://dicom.nema.org/resources/ontology/DCM"
    participation = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
    users = [f"user{i:04d}" for i in range(400)]
    ips = [f"10.{rnd.randint(0, 40)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}" for _ in range(300)]
    apps = [None, "oauth-rdv-42", "cli-mobile-7"]
    types = ["Observation", "Encounter", "MedicationRequest", "DocumentReference", "Appointment", "Condition"]
    enc = msgspec.json.Encoder()
    start = 1_735_689_600_000
    for i in range(n):
        user = rnd.choice(users)
        ip = ips[users.index(user) % len(ips)] if rnd.random() < 0.9 else rnd.choice(ips)
        app = rnd.choice(apps)
        patient = f"Patient/p{rnd.randint(1, 200_000)}"
        rtype = rnd.choice(types)
        r = rnd.random()
        sub, act, client_role, server_role = (
            ("read", "R", "110152", "110153")
            if r < 0.6
            else ("search-type", "E", "110153", "110152")
            if r < 0.9
            else ("update", "U", "110153", "110152")
        )
        ms = start + i * 2_500
        agents: list[dict[str, object]] = [
            {
                "type": {"coding": [{"system": dcm, "code": client_role}]},
                "who": {"display": f"pc-{ip}"},
                "requestor": False,
                "network": {"address": ip, "type": "2"},
            },
            {
                "type": {"coding": [{"system": dcm, "code": server_role}]},
                "who": {"reference": "Device/dpi"},
                "requestor": False,
                "network": {"address": "https://dpi.example.fr/fhir", "type": "5"},
            },
            {
                "type": {"coding": [{"system": participation, "code": "IRCP"}]},
                "who": {"identifier": {"system": "urn:sentinelle:login", "value": user}},
                "requestor": True,
            },
        ]
        if app:
            agents.append(
                {
                    "type": {"coding": [{"system": dcm, "code": "110150"}]},
                    "who": {"identifier": {"system": "urn:sentinelle:client", "value": app}},
                    "requestor": False,
                }
            )
        entity_type = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
        role = "http://terminology.hl7.org/CodeSystem/object-role"
        entities: list[dict[str, object]] = [
            {
                "what": {"reference": patient},
                "type": {"system": entity_type, "code": "1"},
                "role": {"system": role, "code": "1"},
            }
        ]
        if act == "E":
            query = f"GET /fhir/{rtype}?patient={patient[8:]}&_count=50".encode()
            entities.append(
                {
                    "type": {"system": entity_type, "code": "2"},
                    "role": {"system": role, "code": "24"},
                    "query": base64.b64encode(query).decode(),
                }
            )
        else:
            entities.append(
                {
                    "what": {"reference": f"{rtype}/{rnd.randint(1, 10**7)}"},
                    "type": {"system": entity_type, "code": "2"},
                    "role": {"system": role, "code": "4"},
                }
            )
        event = {
            "resourceType": "AuditEvent",
            "id": str(uuid.UUID(int=rnd.getrandbits(128))),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": sub}],
            "action": act,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z",
            "outcome": "0",
            "agent": agents,
            "source": {"site": "CH Exemple", "observer": {"reference": "Device/dpi"}},
            "entity": entities,
        }
        yield enc.encode(event) + b"\n"


def _bare_decode(path: Path, struct: type) -> tuple[int, float]:
    decoder: msgspec.json.Decoder[object] = msgspec.json.Decoder(struct)
    decode = decoder.decode
    n = 0
    t0 = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            decode(line)
            n += 1
    return n, time.perf_counter() - t0


def _read(path: Path, workers: str | None) -> tuple[int, float, int, float, float]:
    if workers is not None:
        os.environ["SENTINELLE_WORKERS"] = workers
    else:
        os.environ.pop("SENTINELLE_WORKERS", None)
    gc.collect()
    q = Quarantine()
    rss_start = _rss_mb()
    rss_max = rss_start
    n = 0
    t0 = time.perf_counter()
    for _ in open_events([path], q):
        n += 1
        if n % 100_000 == 0:
            rss_max = max(rss_max, _rss_mb())
    elapsed = time.perf_counter() - t0
    rss_max = max(rss_max, _rss_mb())
    return n, elapsed, q.count, rss_start, rss_max


def _interleaved(path: Path, n: int = 100_000, rounds: int = 5) -> tuple[float, float]:
    """Best-of-rounds CPU seconds of (a) and (b1) on the first n lines, run alternately.

    On a shared machine wall-clock figures swing by half; CPU time taken alternately,
    best of several rounds, gives a ratio that holds still.
    """
    fd, name = tempfile.mkstemp(prefix="sentinelle-bench-head-", suffix=".ndjson")
    head = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, path.open("rb") as src:
            for i, line in enumerate(src):
                if i >= n:
                    break
                out.write(line)
        os.environ["SENTINELLE_WORKERS"] = "1"
        best_a = best_b = float("inf")
        for _ in range(rounds):
            c0 = time.process_time()
            _bare_decode(head, AuditEvent)
            best_a = min(best_a, time.process_time() - c0)
            c0 = time.process_time()
            for _ in open_events([head], Quarantine()):
                pass
            best_b = min(best_b, time.process_time() - c0)
        return best_a, best_b
    finally:
        os.environ.pop("SENTINELLE_WORKERS", None)
        head.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to generate (default 1,000,000)")
    parser.add_argument("--file", type=Path, help="read this NDJSON file instead of generating one")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    parser.add_argument("--builtin", action="store_true", help="use the built-in BALP generator, not the simulator")
    args = parser.parse_args(argv)

    generated: Path | None = None
    if args.file is not None:
        path = args.file
        origin = "given file"
    else:
        fd, name = tempfile.mkstemp(prefix="sentinelle-bench-", suffix=".ndjson")
        os.close(fd)
        path = generated = Path(name)
        t0 = time.perf_counter()
        if not args.builtin and _from_simulator(path, args.events):
            origin = "sentinelle.simulate (small hospital, cycled)"
        else:
            origin = "built-in BALP generator"
            with path.open("wb") as out:
                for line in _generated(args.events):
                    out.write(line)
        print(f"generated {args.events:,} events in {time.perf_counter() - t0:.1f} s")
    try:
        size = path.stat().st_size
        n_lines = sum(1 for _ in path.open("rb"))
        print(
            f"file: {path} ({origin}), {n_lines:,} lines, {size / 2**20:.0f} MiB, {size / max(n_lines, 1):.0f} B/line"
        )
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; Python {sys.version.split()[0]}")
        print(f"reader: {reader_path()}")

        n_a, t_a = _bare_decode(path, AuditEvent)
        print(f"(a)  bare typed decode (fhir_common.AuditEvent): {n_a / t_a:>10,.0f} events/s  {t_a:6.2f} s")
        n_l, t_l = _bare_decode(path, AuditEventLazy)
        print(f"(a') lazy decode the reader uses (AuditEventLazy): {n_l / t_l:>8,.0f} events/s  {t_l:6.2f} s")
        rows = []
        runs = (
            ("(b)  open_events, default workers", None),
            ("(b1) open_events, SENTINELLE_WORKERS=1", "1"),
            ("(b2) open_events, SENTINELLE_WORKERS=2", "2"),
        )
        for label, workers in runs:
            n_b, t_b, rejected, rss0, rss1 = _read(path, workers)
            rows.append((label, n_b, t_b))
            worker_rss = f", worker peak {fhir_json.worker_peak_kb / 1024:.0f} MiB" if fhir_json.worker_peak_kb else ""
            print(
                f"{label}: {n_b / t_b:>10,.0f} events/s  {t_b:6.2f} s  ratio to (a) {t_b / t_a:4.2f}  "
                f"rejected {rejected}  RSS {rss0:.0f} -> max {rss1:.0f} MiB (+{rss1 - rss0:.0f}){worker_rss}"
            )
            fhir_json.worker_peak_kb = 0
        head = min(n_a, 100_000)
        cpu_a, cpu_b = _interleaved(path, head)
        print(
            f"(c)  CPU time, (a) and (b1) alternately on the first {head:,} lines, best of 5: "
            f"{cpu_a / head * 1e6:.2f} vs {cpu_b / head * 1e6:.2f} µs/event, ratio {cpu_b / cpu_a:.2f}"
        )
        self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {self_peak:.0f} MiB")
        n_b, t_b = rows[0][1], rows[0][2]
        target = n_b / t_b >= 300_000 and t_b / t_a <= 1.5
        print(f"target (>= 300,000 events/s and <= 1.5 x (a)): {'met' if target else 'NOT met'}")
    finally:
        os.environ.pop("SENTINELLE_WORKERS", None)
        if generated is not None and not args.keep:
            generated.unlink(missing_ok=True)
        elif generated is not None:
            print(f"kept {generated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
