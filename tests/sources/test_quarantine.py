"""Rejected records are kept with where and why, and never lost silently."""

from __future__ import annotations

from pathlib import Path

import msgspec

from sentinelle.sources.quarantine import RAW_LIMIT, Quarantine, Rejected


def test_writes_one_line_per_rejected_record(tmp_path: Path) -> None:
    path = tmp_path / "q" / "quarantine.jsonl"
    with Quarantine(path) as q:
        q.reject("a.ndjson", "line 3", "invalid JSON: unexpected end", b'{"resourceType": ')
        q.reject("a.ndjson", "line 9", "invalid JSON: bad byte", b"\xff\xfe")
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    first = msgspec.json.decode(lines[0], type=Rejected)
    assert (first.origin, first.location) == ("a.ndjson", "line 3")
    assert first.reason.startswith("invalid JSON")
    assert q.count == 2 and q.by_reason == {"invalid JSON": 2}


def test_no_file_for_a_clean_run(tmp_path: Path) -> None:
    path = tmp_path / "quarantine.jsonl"
    with Quarantine(path) as q:
        pass
    assert q.count == 0 and not path.exists()


def test_raw_text_is_bounded() -> None:
    q = Quarantine()
    q.reject("big", "line 1", "too big", b"x" * (RAW_LIMIT * 10))
    assert len(q.kept[0].raw) == RAW_LIMIT
