"""Child processes on pipes: how they are started and how messages cross.

The parallel NDJSON reader and the service (its decoding workers, its detection process)
run their helpers as plain `python -m MODULE FLAG` children, not `multiprocessing`: the
service runs threads, so fork is unsafe, and spawn would re-import whatever script embeds
Sentinelle. A message is 8 bytes of little-endian length, then the bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

__all__ = ["receive", "send", "spawn"]

_ROOT = str(Path(__file__).resolve().parents[2])


def send(pipe: IO[bytes], payload: bytes) -> None:
    """Write one message and flush it."""
    pipe.write(len(payload).to_bytes(8, "little"))
    pipe.write(payload)
    pipe.flush()


def receive(pipe: IO[bytes]) -> bytes | None:
    """Read one message; None when the other side has gone (end of file, or a cut message)."""
    head = pipe.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data = pipe.read(size)
    return data if len(data) == size else None


def spawn(module: str, flag: str, pipe_bytes: int = 0) -> subprocess.Popen[bytes]:
    """`python -P -m module flag` with this package first on its path and pipes on stdin and stdout.

    `-P`: the working directory does not go on sys.path (nothing there can shadow a
    module). `SENTINELLE_WORKERS=1`: a child never starts reading workers of its own.
    `pipe_bytes` enlarges both pipes (Linux only; elsewhere the default stays), so that a
    large message crosses in a few writes rather than many context switches.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["SENTINELLE_WORKERS"] = "1"
    proc = subprocess.Popen([sys.executable, "-P", "-m", module, flag],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    if pipe_bytes:
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), pipe_bytes)  # type: ignore[union-attr]
    return proc
