"""The benchmark's answer key: planted attacks, their events, and the benign traps.

Labels live in `OUT/labels/`, apart from the trail and the context, and nothing in
`OUT/events/` or `OUT/context/` refers to them: a detector under test reads only the
trail and the context, an evaluator reads the labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from sentinelle.errors import InputFormatError

__all__ = [
    "AttackEventLabel",
    "AttackLabel",
    "TrapLabel",
    "iter_attack_events",
    "load_attacks",
    "load_traps",
]


class AttackLabel(msgspec.Struct, frozen=True):
    """One planted attack (`labels/attacks.json`); times are ISO 8601 UTC."""

    id: str
    kind: str
    seed_case: str
    account: str
    client: str
    addresses: list[str]
    start: str | None
    end: str | None
    n_events: int
    n_patients: int
    description: str


class AttackEventLabel(msgspec.Struct, frozen=True):
    """One malicious event (`labels/attack_events.ndjson`): the AuditEvent id and its patients."""

    id: str
    attack: str
    time_ms: int
    patients: list[str]


class TrapLabel(msgspec.Struct, frozen=True):
    """One benign trap (`labels/traps.json`): accounts and window where alerts are false."""

    id: str
    kind: str
    accounts: list[str]
    start: str
    end: str
    description: str
    patients: list[str] = []


def _load_list(path: Path, kind: type[msgspec.Struct]) -> list[msgspec.Struct]:
    try:
        return msgspec.json.decode(path.read_bytes(), type=list[kind])  # type: ignore[valid-type]
    except FileNotFoundError as exc:
        raise InputFormatError(str(path), "labels file not found: is this a `sentinelle simulate` output?") from exc
    except msgspec.ValidationError as exc:
        raise InputFormatError(str(path), f"not a labels file: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InputFormatError(str(path), f"not valid JSON: {exc}") from exc


def load_attacks(data_dir: Path) -> list[AttackLabel]:
    """The attacks of a simulated data set."""
    return _load_list(Path(data_dir) / "labels" / "attacks.json", AttackLabel)  # type: ignore[return-value]


def load_traps(data_dir: Path) -> list[TrapLabel]:
    """The benign traps of a simulated data set."""
    return _load_list(Path(data_dir) / "labels" / "traps.json", TrapLabel)  # type: ignore[return-value]


def iter_attack_events(data_dir: Path) -> Iterator[AttackEventLabel]:
    """Malicious events, one per line, in trail order."""
    path = Path(data_dir) / "labels" / "attack_events.ndjson"
    decoder = msgspec.json.Decoder(AttackEventLabel)
    try:
        f = path.open("rb")
    except FileNotFoundError as exc:
        raise InputFormatError(str(path), "labels file not found: is this a `sentinelle simulate` output?") from exc
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield decoder.decode(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise InputFormatError(f"{path}:{n}", f"not an attack event label: {exc}") from exc
