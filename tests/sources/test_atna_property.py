"""Junk among good records never stops a reader and never costs a good record (hypothesis)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinelle.events import AccessEvent
from sentinelle.sources import atna, mapped, syslog
from sentinelle.sources.quarantine import Quarantine

TESTDATA = Path(__file__).parents[2] / ".." / "shared" / "testdata"
DICOM = TESTDATA / "dicom-audit"
SYSLOG = TESTDATA / "syslog"

if not DICOM.is_dir() or not SYSLOG.is_dir():
    pytest.skip(f"audit samples absent ({TESTDATA})", allow_module_level=True)

MESSAGES = [p.read_bytes() for p in sorted(DICOM.glob("*.xml"))[:12]]
FRAMES = [p.read_bytes() for p in sorted(SYSLOG.glob("*.txt"))] + [
    b"<85>1 2024-05-01T10:00:00Z pacs dcm4chee-arc 77 IHE+DICOM - \xef\xbb\xbf" + m.rstrip() for m in MESSAGES[:5]
]
EXPECTED_FRAMES = [syslog.parse_frame(f) for f in FRAMES]
EXPECTED_MESSAGES = [atna.parse_message(m) for m in MESSAGES]

# A syslog header anywhere in the junk would make it a frame: junk is everything else.
_HEADER = re.compile(rb"<\d{1,3}>")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _junk() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8")),
        st.sampled_from(
            [b"<AuditMessage>", b"</AuditMessage>", b"12 ", b"999999 <", b"\xef\xbb\xbf", b"- - -", b"<?xml "]
        ),
    ).filter(lambda b: not _HEADER.search(b))


def _ids(events: list[AccessEvent]) -> list[str]:
    return [e.id for e in events]


def _subsequence(wanted: list[str], got: list[str]) -> bool:
    it = iter(got)
    return all(any(g == w for g in it) for w in wanted)


@PROPERTY
@given(
    picks=st.lists(st.integers(0, len(FRAMES) - 1), min_size=1, max_size=6),
    junk=st.lists(_junk(), min_size=7, max_size=7),
    octet=st.booleans(),
)
def test_syslog_junk_between_frames(picks: list[int], junk: list[bytes], octet: bool) -> None:
    parts = [junk[0]]
    for n, i in enumerate(picks):
        frame = FRAMES[i]
        if octet:
            parts.append(str(len(frame)).encode() + b" " + frame)
        else:
            # Newline framing: a frame starts a line, and junk stays on lines of its own.
            parts.append(b"\n" + frame + b"\n")
        parts.append(junk[n + 1].replace(b"\n", b" ") if not octet else junk[n + 1])
    data = b"".join(parts)
    q = Quarantine()
    events = list(syslog.read(io.BytesIO(data), "fuzz.log", q))
    assert _subsequence([EXPECTED_FRAMES[i].id for i in picks], _ids(events))


_FRAGMENTS = st.one_of(
    st.sampled_from(
        [
            b"<AuditMessage>",
            b"<AuditMessage ",
            b"</AuditMessage>",
            b"<AuditMessage></AuditMessage>",
            b"<!-- unclosed",
            b"<![CDATA[",
            b'<?xml version="1.0" encoding="UTF-8"?>',
            b'<!DOCTYPE x [<!ENTITY e "boom">]>',
            b"<Batch>",
            b"&e;",
            b"<EventIdentification/>",
        ]
    ),
    st.text(alphabet="<>/!?-=\"' aAuditMessage&;\n", max_size=60).map(lambda t: t.encode()),
    st.binary(max_size=80),
)


@PROPERTY
@given(
    picks=st.lists(st.integers(0, len(MESSAGES) - 1), min_size=1, max_size=5),
    fragments=st.lists(_FRAGMENTS, min_size=6, max_size=6),
)
def test_atna_fragments_between_messages(picks: list[int], fragments: list[bytes]) -> None:
    # A fragment could end inside an XML declaration or an unclosed start tag that the next
    # message's bytes would complete; each message here starts with its own declaration.
    parts = [fragments[0]]
    for n, i in enumerate(picks):
        parts += [b"\n", MESSAGES[i], b"\n", fragments[n + 1]]
    data = b"".join(parts)
    q = Quarantine()
    events = list(atna.read(io.BytesIO(data), "fuzz.xml", q))
    assert _subsequence([EXPECTED_MESSAGES[i].id for i in picks], _ids(events))


_HEADER_ROW = "t;who;what;pid"
_GOOD_ROWS = [
    "2025-01-03T10:00:00Z;alice;read;P1",
    "2025-01-03T10:01:00Z;bob;search;",
    "2025-01-03T10:02:00Z;carol;export;P2,P3",
]
_MAPPING = mapped.loads_mapping(
    """
    format = "csv"
    csv = { delimiter = ";" }
    [fields]
    time = "t"
    account = "who"
    action = "what"
    patients = { column = "pid", separator = "," }
    """,
    "fuzz.toml",
)


_ROW_IDS = [
    e.id
    for row in _GOOD_ROWS
    for e in mapped.read_mapped(io.BytesIO(f"{_HEADER_ROW}\n{row}\n".encode()), "x", Quarantine(), _MAPPING)
]


@PROPERTY
@given(
    picks=st.lists(st.integers(0, len(_GOOD_ROWS) - 1), min_size=1, max_size=6),
    junk=st.lists(st.text(max_size=80), min_size=7, max_size=7),
)
def test_mapped_csv_junk_rows(picks: list[int], junk: list[str]) -> None:
    # A quote opens a field that may run over lines: that is CSV, not junk handling.
    cleaned = [re.sub(r'["\r\n\x00\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e]', " ", j) for j in junk]
    lines = [_HEADER_ROW, cleaned[0]]
    for n, i in enumerate(picks):
        lines += [_GOOD_ROWS[i], cleaned[n + 1]]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    q = Quarantine()
    events = list(mapped.read_mapped(io.BytesIO(data), "fuzz.csv", q, _MAPPING))
    assert _subsequence([_ROW_IDS[i] for i in picks], _ids(events))


@PROPERTY
@given(junk=st.lists(st.binary(max_size=120), min_size=3, max_size=3))
def test_mapped_jsonl_junk_lines(junk: list[bytes]) -> None:
    m = mapped.load_mapping("api_gateway_jsonl")
    good = b'{"ts": 1741010709123, "trace_id": "t1", "client_id": "c", "request": {"interaction": "read"}}'
    lines = [j.replace(b"\n", b" ") for j in junk]
    data = b"\n".join([lines[0], good, lines[1], good.replace(b"t1", b"t2"), lines[2]])
    q = Quarantine()
    events = list(mapped.read_mapped(io.BytesIO(data), "fuzz.jsonl", q, m))
    assert _subsequence(["t1", "t2"], _ids(events))
