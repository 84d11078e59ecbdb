"""The compiled reader (`sources/_balp.cpp`) gives exactly what the Python path gives.

Where the fast path answers, its event must equal the one `Normaliser.from_lazy` makes,
field for field; where it is unsure it declines and the Python path reads the line, so
the events *and* the quarantine entries of a whole read must be the same either way.
Checked on a simulated hospital, on the published FHIR samples, on this project's BALP
fixtures and on generated variations of BALP lines built to hit every rule it mirrors
(sessions, entities, queries, times, unusual members, duplicate keys, escapes).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinelle.events import AccessEvent
from sentinelle.sources import fhir_common, fhir_json
from sentinelle.sources.fhir_common import Normaliser
from sentinelle.sources.fhir_json import read_lines
from sentinelle.sources.quarantine import Quarantine

SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "balp"
SOURCE = Path(fhir_common.__file__).with_name("_balp.cpp")

pytestmark = pytest.mark.skipif(
    fhir_common._balp is None, reason="the compiled reader is not built here (needs libsimdjson-dev; see setup.py)"
)


class _Collect(Quarantine):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, str, bytes]] = []

    def reject(self, origin: str, location: str, reason: str, raw: bytes | str = b"") -> None:
        self.items.append((location, reason, raw if isinstance(raw, bytes) else raw.encode()))


def _read_with(lines: list[bytes], fast: bool) -> tuple[list[AccessEvent], list[tuple[str, str, bytes]]]:
    q = _Collect()
    events = list(read_lines(lines, "test", q, normaliser=Normaliser(fast=fast)))
    return events, q.items


def _both(lines: Iterable[bytes]) -> tuple[tuple[list[AccessEvent], list[tuple[str, str, bytes]]], ...]:
    lines = list(lines)
    return _read_with(lines, True), _read_with(lines, False)


def _assert_same(lines: Iterable[bytes]) -> None:
    (fast_events, fast_rejects), (slow_events, slow_rejects) = _both(lines)
    assert fast_events == slow_events
    assert fast_rejects == slow_rejects


def test_built_and_current_where_simdjson_is_installed() -> None:
    if not Path("/usr/include/simdjson.h").exists():
        pytest.skip("libsimdjson-dev is not installed")
    built = Path(fhir_common._balp.__file__)  # type: ignore[union-attr]
    assert built.stat().st_mtime >= SOURCE.stat().st_mtime, (
        f"{built.name} is older than _balp.cpp: rebuild it (make test, or pip install -e .)"
    )
    assert Normaliser().fast_line is not None
    assert Normaliser(fast=False).fast_line is None


def test_same_events_on_a_simulated_hospital(tmp_path: Path) -> None:
    from sentinelle.simulate import simulate

    simulate(tmp_path, size="tiny", seed=5)
    lines = (tmp_path / "events" / "auditevents.ndjson").read_bytes().splitlines(keepends=True)
    assert len(lines) > 10_000
    (fast_events, fast_rejects), (slow_events, slow_rejects) = _both(lines)
    assert fast_events == slow_events and fast_rejects == slow_rejects
    # The comparison means something only if the fast path answered: it must, for the
    # simulator's shapes (logins and logouts included).
    norm = Normaliser()
    answered = sum(norm.fast_line(line) is not None for line in lines)  # type: ignore[misc]
    assert answered == len(lines)
    stats = norm._fast.stats()
    assert stats["misses"] < len(lines) / 5  # sessions are cut out of the memo key


def _worker_read(lines: list[bytes], tmp_path: Path) -> tuple[list[AccessEvent], list[tuple[str, str, bytes]]]:
    """What a reader worker process sends back for these lines (msgpack), decoded as the
    parent decodes it: the compiled path with its warm memos across a whole range."""
    path = tmp_path / "range.ndjson"
    path.write_bytes(b"".join(lines))
    answer = fhir_json._task(fhir_json._Task(str(path), 0, path.stat().st_size, "test"))
    return list(fhir_json._events.decode(answer.events)), answer.rejects


def test_a_reader_worker_answers_the_same_events(tmp_path: Path) -> None:
    from sentinelle.simulate import simulate

    simulate(tmp_path, size="tiny", seed=6)
    lines = (tmp_path / "events" / "auditevents.ndjson").read_bytes().splitlines(keepends=True)[:20_000]
    lines[100:100] = [b"{broken\n", b"\n", b'{"resourceType":"Patient"}\n']  # declined, then read by Python
    events, rejects = _worker_read(lines, tmp_path)
    slow_events, slow_rejects = _read_with(lines, fast=False)
    assert events == slow_events
    assert [(loc, reason) for loc, reason, _ in rejects] == [(loc, reason) for loc, reason, _ in slow_rejects]


def _json_files() -> list[Path]:
    found = sorted(FIXTURES.glob("*.json"))
    if SHARED.is_dir():
        found += sorted((SHARED / "fhir-r4").glob("*.json")) + sorted((SHARED / "fhir-r4-mock").glob("*.json"))
    return found


def test_same_events_on_published_samples_and_fixtures() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the published samples are not on this machine")
    lines = []
    for path in _json_files():
        value = json.loads(path.read_text())
        entries = [e["resource"] for e in value.get("entry", [])] if value.get("resourceType") == "Bundle" else [value]
        lines += [json.dumps(v, separators=(",", ":")).encode() + b"\n" for v in entries]
    assert len(lines) > 20
    _assert_same(lines)


def test_sessions_share_one_context_and_keep_their_own_value() -> None:
    base = _balp_event()
    lines = []
    for session in ("s-one", "s-two", "s-three"):
        event = json.loads(json.dumps(base))
        event["agent"][0]["extension"] = [{"url": "https://example.org/fhir/session", "valueString": session}]
        lines.append(json.dumps(event).encode())
    norm = Normaliser()
    events = [norm.fast_line(line) for line in lines]  # type: ignore[misc]
    assert [e.session for e in events if e is not None] == ["s-one", "s-two", "s-three"]
    assert norm._fast.stats()["misses"] == 1
    _assert_same(lines)


# -- generated variations -----------------------------------------------------------------

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ETYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"


def _balp_event() -> dict[str, object]:
    return {
        "resourceType": "AuditEvent",
        "id": "e1",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R",
        "recorded": "2025-03-04T05:06:07.089Z",
        "outcome": "0",
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                            "code": "humanuser",
                        }
                    ]
                },
                "who": {"identifier": {"system": "urn:login", "value": "jdupont"}},
                "requestor": True,
                "network": {"address": "10.0.0.7", "type": "2"},
                "extension": [
                    {"url": "https://sentinelle.health/fhir/authn-method", "valueCode": "card"},
                    {"url": "https://sentinelle.health/fhir/session", "valueString": "abc123"},
                ],
            },
            {
                "type": {"coding": [{"system": DCM, "code": "110150"}]},
                "who": {"identifier": {"value": "dpi-web"}},
                "requestor": False,
            },
            {
                "type": {"coding": [{"system": DCM, "code": "110152"}]},
                "requestor": False,
                "network": {"address": "10.0.0.7", "type": "2"},
            },
        ],
        "source": {"site": "CH", "observer": {"reference": "Device/dpi", "display": "DPI"}},
        "entity": [
            {
                "what": {"reference": "Patient/42"},
                "type": {"system": ETYPE, "code": "1"},
                "role": {"system": ROLE, "code": "1"},
            },
            {
                "what": {"reference": "Observation/9"},
                "type": {"system": ETYPE, "code": "2"},
                "role": {"system": ROLE, "code": "4"},
            },
        ],
    }


_text = st.sampled_from(
    ["", "x", "Patient", "Patient/7", "Observation/1/_history/2", "urn:uuid:1", "é", "a\\b", '"q"', "\u2028"]
)
_time = st.one_of(
    st.sampled_from(
        [
            "2025-03-04T05:06:07Z",
            "2025-03-04T05:06:07.1Z",
            "2025-03-04T05:06:07.123456Z",
            "2025-03-04T05:06:07.1234567Z",
            "2025-03-04T05:06:07+02:00",
            "2025-03-04T05:06:07-00:30",
            "2025-03-04T05:06:07",
            "2025-03-04T05:06:07z",
            "2025-03-04 05:06:07Z",
            "2024-02-29T23:59:59.999Z",
            "2023-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-03-04T24:00:00Z",
            "2025-03-04",
            " 2025-03-04T05:06:07Z",
            "1970-01-01T00:00:00.0005Z",
            "1969-12-31T23:59:59.9995Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999+14:00",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
)
#: Plain FHIR instants (the fast path declines dates before ~1685 or after ~2255).
_plain_time = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1)).map(
    lambda d: d.isoformat(timespec=("milliseconds", "microseconds", "seconds")[d.microsecond % 3]) + "Z"
)
_query = st.one_of(
    st.sampled_from(
        [
            "",
            "not base64!",
            "R0VU",
            "R0VUIC9QYXRpZW50P25hbWU9eA==",
            "R0VUIC9PYnNlcnZhdGlvbj9jYXRlZ29yeT1sYWJvcmF0b3J5",
            "////",
            "=",
            "YQ",
            "YQ=",
            "YQ==",
        ]
    ),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=30).map(lambda t: base64.b64encode(t.encode()).decode()),
)
_plain_query = st.sampled_from(
    [
        "GET /fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1",
        "GET /Observation?category=laboratory&_type=x",
        "/Encounter?_type=Condition,Procedure",
    ]
).map(lambda t: base64.b64encode(t.encode()).decode())


@st.composite
def _entity(draw: st.DrawFn, odd: bool) -> dict[str, object]:
    """A BALP entity; with `odd`, any of the shapes the fast path must decline or get right."""
    code = draw(st.sampled_from(["1", "4", "3", "24", "13", "2", None] if odd else ["1", "4", "3", "24", "13"]))
    entity: dict[str, object] = {}
    if code != "24" or draw(st.booleans()):
        rtypes = ["Patient", "Observation", "MedicationRequest", "Appointment", "Unknown"]
        rtype = draw(st.sampled_from([*rtypes, "", "patient"] if odd else rtypes if code != "1" else ["Patient"]))
        rid = draw(st.integers(0, 3))
        refs = (
            [f"{rtype}/{rid}", rtype, f"{rtype}/a/b", f"http://x/{rtype}/1", f"{rtype}/", "urn:uuid:1"]
            if odd
            else [f"{rtype}/{rid}"]
        )
        entity["what"] = {"reference": draw(st.sampled_from(refs))}
        if odd and draw(st.integers(0, 4)) == 0:
            entity["what"] = {"reference": draw(st.sampled_from(refs)), "display": "d"}
    if code is not None:
        entity["role"] = {"system": draw(st.sampled_from([ROLE, "urn:other"])) if odd else ROLE, "code": code}
    if draw(st.booleans()):
        types = [{"system": ETYPE, "code": "2"}, {"system": ETYPE, "code": "1", "display": "Person"}]
        entity["type"] = draw(
            st.sampled_from([*types, {"code": "2"}, {"system": ETYPE, "coding": []}] if odd else types)
        )
    if code == "24" or (odd and draw(st.integers(0, 5)) == 0):
        entity["query"] = draw(_query if odd else _plain_query)
    if draw(st.integers(0, 6)) == 0:
        entity["description"] = draw(_text)
    if draw(st.integers(0, 8)) == 0:
        entity["name"] = draw(st.one_of(_text, st.integers()) if odd else _text)
    if odd and draw(st.integers(0, 8)) == 0:
        entity["detail"] = [{"type": "x", "valueString": "y"}]
    return entity


_SESSION_URLS = ["https://x/session", "https://x/SESSION", "https://x/Session-id", "https://x/other"]
_ODD_SESSION_URLS = ["https://x/auth-session", "https://x/authn", "urn:é:session"]


@st.composite
def _variant(draw: st.DrawFn) -> bytes:
    """A BALP line: most are plain shapes with varied values (the fast path must answer
    them exactly); about a third carry something unusual (it must decline or still match)."""
    odd = draw(st.integers(0, 2)) == 0
    event = _balp_event()
    event["id"] = draw(
        st.one_of(st.sampled_from(["", "ü"]), st.none(), st.integers()) if odd else st.sampled_from(["e1", "e2", "ü-3"])
    )
    event["recorded"] = draw(_time if odd else _plain_time)
    event["entity"] = draw(st.lists(_entity(odd), max_size=4))
    event["subtype"] = [
        {
            "system": "http://hl7.org/fhir/restful-interaction",
            "code": draw(st.sampled_from(["read", "search-type", "create", "vread", "other"])),
        }
    ]
    if draw(st.booleans()):
        event["action"] = draw(st.sampled_from(["R", "E", "C", "U", "D", None] if odd else ["R", "E", "C", "U", "D"]))
    user = event["agent"][0]  # type: ignore[index]
    values = st.sampled_from(["s1", "s2", "s3", "", "s\u00e9", 'a"b']) if odd else st.sampled_from(["s1", "s2", "s3"])
    optional = {"valueString": values, "valueCode": st.sampled_from(["password", "mfa", "c1"])}
    if odd:
        optional |= {"valueId": st.sampled_from(["i1", ""]), "valueIdentifier": st.just({"value": "v1"})}
    user["extension"] = draw(  # type: ignore[index]
        st.lists(
            st.fixed_dictionaries(
                {"url": st.sampled_from(_SESSION_URLS + (_ODD_SESSION_URLS if odd else []))}, optional=optional
            ),
            max_size=3,
        )
    )
    user["network"] = {"address": draw(st.sampled_from(["10.0.0.7", "10.0.0.8", "2001:db8::1"]))}  # type: ignore[index]
    agents = event["agent"]
    assert isinstance(agents, list)
    if draw(st.booleans()):  # a Source node elsewhere: reads, searches and others pick differently
        agents.append(
            {
                "type": {"coding": [{"system": DCM, "code": draw(st.sampled_from(["110153", "110152"]))}]},
                "requestor": False,
                "network": {"address": draw(st.sampled_from(["192.168.1.9", "10.0.0.7"]))},
            }
        )
    if draw(st.integers(0, 3)) == 0:  # a session on another agent too: the first one counts
        agents[draw(st.integers(1, len(agents) - 1))]["extension"] = [
            {"url": "https://x/session", "valueString": draw(st.sampled_from(["app-s", "s1"]))}
        ]
    if draw(st.integers(0, 6)) == 0:
        agents[1]["requestor"] = True
    if odd:
        if draw(st.integers(0, 8)) == 0:
            del event["agent"]
        for key in draw(
            st.lists(st.sampled_from(["outcome", "source", "type", "resourceType", "recorded"]), max_size=2)
        ):
            event.pop(key, None)
    extras: list[tuple[str, object]] = [
        ("outcomeDesc", "ok"),
        ("purposeOfEvent", [{"coding": [{"code": "BTG"}]}]),
        ("outcome", "4"),
        ("category", [{"coding": [{"code": "rest"}]}]),
    ]
    if odd:
        extras += [
            ("period", {"start": "2025-01-01T00:00:00Z"}),
            ("meta", {}),
            ("patient", {"reference": "Patient/1"}),
            ("outcome", {"code": {"code": "8"}}),
            ("source", None),
            ("authorization", [{"coding": [{"code": "x"}]}]),
        ]
    for key, value in draw(st.lists(st.sampled_from(extras), max_size=2)):
        event[key] = value
    text = json.dumps(
        event, ensure_ascii=draw(st.booleans()), separators=draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    )
    mangle = draw(st.integers(0, 12)) if odd else -1
    if mangle == 0:  # a duplicate member
        text = text.replace('"recorded"', '"recorded":"2020-01-01T00:00:00Z","recorded"', 1)
    elif mangle == 1:  # trailing data
        text += " {}"
    elif mangle == 2:  # truncated
        text = text[: len(text) // 2]
    elif mangle == 3:  # escaped member name
        text = text.replace('"id"', '"\\u0069d"', 1)
    data = text.encode()
    if mangle == 4:
        data = data.replace(b"jdupont", b"jd\xffpont")
    return data + draw(st.sampled_from([b"\n", b"\r\n", b""]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_variant(), min_size=1, max_size=6))
def test_same_events_and_rejects_on_generated_variations(lines: list[bytes]) -> None:
    _assert_same(lines)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(_variant(), min_size=1, max_size=6))
def test_a_reader_worker_answers_the_same_on_generated_variations(tmp_path: Path, lines: list[bytes]) -> None:
    lines = [line if line.endswith(b"\n") else line + b"\n" for line in lines]
    events, rejects = _worker_read(lines, tmp_path)
    slow_events, slow_rejects = _read_with(lines, fast=False)
    assert events == slow_events
    assert [(loc, reason) for loc, reason, _ in rejects] == [(loc, reason) for loc, reason, _ in slow_rejects]


def test_generated_variations_reach_the_fast_path() -> None:
    """The property above means something only if most plain variations are answered."""
    answered = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(_variant())
    def record(line: bytes) -> None:
        answered.append(Normaliser().fast_line(line) is not None)  # type: ignore[misc]

    record()
    assert sum(answered) > 0.4 * len(answered), f"{sum(answered)} of {len(answered)} answered"


def test_an_open_action_is_decided_by_the_entities() -> None:
    """No RESTful or DICOM action (a custom subtype, action "E"): a query entity makes a
    search, whose client is the Source node; otherwise "other", from the requestor."""
    lines = []
    for with_query in (True, False):
        event = _balp_event()
        event["subtype"] = [{"system": "urn:example:ops", "code": "batch"}]
        event["action"] = "E"
        event["agent"].append(  # type: ignore[attr-defined]
            {
                "type": {"coding": [{"system": DCM, "code": "110153"}]},
                "requestor": False,
                "network": {"address": "192.168.1.9"},
            }
        )
        if with_query:
            query = base64.b64encode(b"GET /fhir/Patient?name=x").decode()
            event["entity"].append({"role": {"system": ROLE, "code": "24"}, "query": query})  # type: ignore[attr-defined]
        lines.append(json.dumps(event).encode())
    norm = Normaliser()
    search, other = (norm.fast_line(line) for line in lines)  # type: ignore[misc]
    assert search is not None and other is not None
    assert (search.action, search.address, search.query) == ("search", "192.168.1.9", "GET /fhir/Patient?name=x")
    assert (other.action, other.address) == ("other", "10.0.0.7")
    _assert_same(lines)


def test_a_huge_line_goes_to_the_python_path() -> None:
    """Beyond 1 MB a line is declined (the parser would keep that capacity), and read all the same."""
    event = _balp_event()
    event["outcomeDesc"] = "x" * (1 << 20)
    line = json.dumps(event).encode()
    assert Normaliser().fast_line(line) is None  # type: ignore[misc]
    (events, _), _ = _both([line])
    assert len(events) == 1
    _assert_same([line])
