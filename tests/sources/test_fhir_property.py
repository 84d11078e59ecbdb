"""Whatever is mixed into an audit file, the FHIR readers never crash and never lose good records.

The rule for raising: a JSON input raises `InputFormatError` only when none of its lines
is JSON; an XML input only when it has no FHIR root element (or declares a DTD). Anything
else is judged record by record.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinelle.errors import InputFormatError
from sentinelle.events import parse_time
from sentinelle.sources import Quarantine, fhir_json, fhir_xml
from sentinelle.sources.fhir_common import (
    AUDIT_ENTITY_TYPE,
    OBJECT_ROLE,
    Entity,
    fast_time,
    touched_fast,
    touched_of,
)

BALP = Path(__file__).parents[1] / "fixtures" / "balp"
GOOD = json.loads((BALP / "patient-read.json").read_text())
GOOD_XML = (BALP / "patient-read.xml").read_text().split("?>", 1)[1]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["resourceType", "id", "agent", "entity", "recorded", "type", "x"]) | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
garbage = st.one_of(
    json_values.map(lambda v: msgspec.json.encode(v)),
    st.binary(max_size=60),
    st.sampled_from(
        [b"{", b"[1,", b'{"resourceType":"AuditEvent"}', b"\xff\xfe", b'{"resourceType":"Bundle","entry":7}']
    ),
)


def _good(i: int) -> bytes:
    return msgspec.json.encode({**GOOD, "id": f"good-{i}"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), garbage), min_size=1, max_size=12))
def test_ndjson_keeps_every_good_line_whatever_lies_between(items: list[tuple[bool, bytes]]) -> None:
    lines: list[bytes] = []
    expected: list[str] = []
    for i, (good, junk) in enumerate(items):
        if good:
            lines.append(_good(i))
            expected.append(f"good-{i}")
        else:
            lines.append(junk)
    if not expected:
        lines.append(_good(99))
        expected.append("good-99")
    q = Quarantine()
    events = list(fhir_json.read(io.BytesIO(b"\n".join(lines) + b"\n"), "prop.ndjson", q))
    got = [e.id for e in events if e.id.startswith("good-")]
    assert got == expected
    for r in q.kept:
        assert r.location.startswith("line ") and r.reason


_json_ish = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.sampled_from([b'"\xff"', b"[1]", b"{", b"}", b'{"a":1}', b"null", b"1 2"]),
).filter(lambda b: b.strip())


@settings(max_examples=150, deadline=None)
@given(st.lists(_json_ish, min_size=1, max_size=6))
def test_json_input_raises_only_when_no_line_is_json(chunks: list[bytes]) -> None:
    data = b"\n".join(chunks)
    lines = [line for line in data.split(b"\n") if line.strip()]

    # "JSON" here is JSON syntax; a string with bad UTF-8 in it is JSON, and a bad record.
    def is_json(line: bytes) -> bool:
        try:
            msgspec.json.decode(line, type=msgspec.Raw)
        except msgspec.DecodeError:
            return False
        return True

    whole = data if is_json(data) else None
    q = Quarantine()
    try:
        list(fhir_json.read(io.BytesIO(data), "prop.ndjson", q))
    except InputFormatError:
        assert whole is None and not any(is_json(line) for line in lines)
        return
    assert whole is not None or any(is_json(line) for line in lines) or not lines


def _xml_entry(i: int) -> str:
    return f"<entry><resource>{GOOD_XML.replace('ex-balp-read', f'good-{i}', 1)}</resource></entry>"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.just(None),
            st.text(max_size=40),
            st.binary(max_size=40),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_xml_bundle_keeps_every_good_entry_whatever_lies_between(items: list[Any]) -> None:
    parts: list[bytes] = [b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/>']
    expected: list[str] = []
    for i, item in enumerate(items):
        if item is None:
            parts.append(_xml_entry(i).encode())
            expected.append(f"good-{i}")
        elif isinstance(item, str):  # text dropped raw into an entry's resource
            parts.append(f"<entry><resource><AuditEvent>{item}</AuditEvent></resource></entry>".encode())
        else:  # raw bytes where an entry would be
            parts.append(b"<entry>" + item + b"</entry>")
    parts.append(b"</Bundle>")
    q = Quarantine()
    events = list(fhir_xml.read(io.BytesIO(b"".join(parts)), "prop.xml", q))
    assert [e.id for e in events if e.id.startswith("good-")] == expected
    for r in q.kept:
        assert r.location.startswith("entry ") and r.reason


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_xml_reader_raises_nothing_but_input_format_errors(data: bytes) -> None:
    q = Quarantine()
    with contextlib.suppress(InputFormatError):
        list(fhir_xml.read(io.BytesIO(data), "prop.xml", q))


@settings(max_examples=200, deadline=None)
@given(st.datetimes(timezones=st.timezones()), st.sampled_from(["seconds", "milliseconds", "microseconds"]))
def test_fast_time_is_parse_time(moment: Any, spec: str) -> None:
    text = moment.isoformat(timespec=spec)
    assert fast_time(text) == parse_time(text)


_roles = st.sampled_from([(OBJECT_ROLE, "1"), (OBJECT_ROLE, "4"), (OBJECT_ROLE, "24"), (OBJECT_ROLE, "3"), (None, "1")])
_refs = st.sampled_from(
    [
        "Patient/p1",
        "Patient/p2",
        "Observation/o1",
        "Appointment/a",
        "http://x/fhir/Patient/p3",
        "Patient/p1/_history/2",
        "",
    ]
)


@st.composite
def _entities(draw: Any) -> list[Entity]:
    out = []
    for _ in range(draw(st.integers(0, 4))):
        system, code = draw(_roles)
        ref = draw(_refs)
        out.append(
            msgspec.convert(
                {
                    "what": {"reference": ref} if ref else None,
                    "type": {"system": AUDIT_ENTITY_TYPE, "code": "2"} if draw(st.booleans()) else None,
                    "role": {"system": system, "code": code},
                    "query": draw(st.sampled_from([None, "R0VUIC9maGlyL0NvbmRpdGlvbj9wYXRpZW50PTE=", "not base64"])),
                },
                Entity,
            )
        )
    return out


@settings(max_examples=200, deadline=None)
@given(_entities())
def test_fast_entity_path_answers_like_the_general_one_or_not_at_all(entities: list[Entity]) -> None:
    fast = touched_fast(entities)
    if fast is not None:
        assert fast == touched_of(entities, None)
