"""The audit trail being written: events of a day are buffered, sorted, encoded, written.

Generation streams: the simulator produces one day at a time and only events that may
still be followed by earlier ones (a night shift spills past midnight) stay in memory.
Labels are written beside the trail as events leave the buffer, from a field that is
never encoded into the AuditEvent, so the trail itself carries no label.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import IO, Any

import msgspec

from sentinelle.simulate.fhir_out import EventEncoder
from sentinelle.simulate.hospital import Device, Staff

__all__ = ["AttackStats", "Trail"]


class AttackStats:
    """What the trail really holds of one attack (filled as its events are written)."""

    __slots__ = ("addresses", "first", "last", "n_events", "patients")

    def __init__(self) -> None:
        self.n_events = 0
        self.patients: set[str] = set()
        self.first: int | None = None
        self.last: int | None = None
        self.addresses: list[str] = []


class Trail:
    """Buffers, orders and writes AuditEvents; records attack events into the labels."""

    def __init__(self, events_path: Path, labels_path: Path, rng: random.Random) -> None:
        events_path.parent.mkdir(parents=True, exist_ok=True)
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[str] = events_path.open("w", encoding="utf-8", newline="\n", buffering=1 << 22)
        self._labels: IO[bytes] = labels_path.open("wb")
        self._rng = rng
        self._buf: list[tuple[Any, ...]] = []
        self._seq = 0
        self._enc = EventEncoder()
        self.attack_ids: list[str] = []
        self.stats: list[AttackStats] = []
        self.count = 0
        self.by_op: dict[str, int] = {}
        self.by_kind: dict[str, int] = {}
        self.bytes = 0
        self.end_ms: int | None = None

    def set_attacks(self, attack_ids: list[str]) -> None:
        """Name the attacks whose events the labels record (index = `attack` of `emit`)."""
        self.attack_ids = list(attack_ids)
        self.stats = [AttackStats() for _ in attack_ids]

    def emit(
        self,
        t: int,
        actor: Staff | Device,
        client: str,
        addr: str,
        session: str,
        op: str,
        patient: str = "",
        rtype: str = "",
        rid: str = "",
        outcome: str = "0",
        query: str = "",
        attack: int = -1,
        purpose: str = "",
    ) -> None:
        """Queue one event; `attack` is the label index (-1 for benign) and is never written."""
        self._seq += 1
        self._buf.append((t, self._seq, actor, client, addr, session, op, patient, rtype, rid, outcome, query,
                          attack, purpose))

    def _uuid(self) -> str:
        h = f"{self._rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def flush(self, until: int) -> None:
        """Write, in time order, every buffered event before `until` (UTC ms)."""
        self._buf.sort()
        cut = len(self._buf)
        for i, ev in enumerate(self._buf):
            if ev[0] >= until:
                cut = i
                break
        ready, self._buf = self._buf[:cut], self._buf[cut:]
        if self.end_ms is not None:
            ready = [e for e in ready if e[0] < self.end_ms]
        write = self._out.write
        encode = self._enc.encode
        label_lines: list[bytes] = []
        by_op = self.by_op
        for t, _seq, actor, client, addr, session, op, patient, rtype, rid, outcome, query, attack, purpose in ready:
            eid = self._uuid()
            line = encode(eid, t, actor, client, addr, session, op, patient, rtype, rid, outcome, query, purpose)
            write(line)
            self.bytes += len(line)
            by_op[op] = by_op.get(op, 0) + 1
            kind = "human" if isinstance(actor, Staff) else actor.kind
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if attack >= 0:
                st = self.stats[attack]
                st.n_events += 1
                if patient:
                    st.patients.add(patient)
                if st.first is None:
                    st.first = t
                st.last = t
                if addr not in st.addresses:
                    st.addresses.append(addr)
                label_lines.append(
                    msgspec.json.encode(
                        {"id": eid, "attack": self.attack_ids[attack], "time_ms": t,
                         "patients": [patient] if patient else []}
                    )
                )
        self.count += len(ready)
        if label_lines:
            self._labels.write(b"\n".join(label_lines) + b"\n")
        self._enc.clear()

    def close(self) -> None:
        """Write what is left (up to the end of the period) and close the files."""
        self.flush(self.end_ms if self.end_ms is not None else 2**62)
        self._out.close()
        self._labels.close()

