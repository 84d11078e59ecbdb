"""DICOM / IHE ATNA audit messages: every published sample, concatenations, hostile XML."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from sentinelle.errors import InputFormatError, RecordError
from sentinelle.events import AccessEvent, Category, category_names, format_time
from sentinelle.sources import atna, open_events
from sentinelle.sources.quarantine import Quarantine

TESTDATA = Path(__file__).parents[2] / ".." / "shared" / "testdata"
DICOM = TESTDATA / "dicom-audit"


def _samples() -> list[Path]:
    if not DICOM.is_dir():
        return []
    return sorted(DICOM.glob("*.xml"))


@pytest.fixture(scope="module")
def samples() -> list[Path]:
    found = _samples()
    if not found:
        pytest.skip(f"DICOM audit samples absent ({DICOM})")
    return found


def _read(data: bytes, origin: str = "test.xml") -> tuple[list[AccessEvent], Quarantine]:
    q = Quarantine()
    return list(atna.read(io.BytesIO(data), origin, q)), q


def _sample_bytes(name: str) -> bytes:
    path = DICOM / f"{name}.xml"
    if not path.exists():
        pytest.skip(f"DICOM audit sample absent ({path})")
    return path.read_bytes()


def _one(name: str) -> AccessEvent:
    path = DICOM / f"{name}.xml"
    if not path.exists():
        pytest.skip(f"DICOM audit sample absent ({path})")
    events, q = _read(path.read_bytes(), path.name)
    assert q.count == 0, q.kept
    assert len(events) == 1
    return events[0]


@pytest.mark.parametrize("path", _samples(), ids=lambda p: p.stem)
def test_every_sample_gives_one_event(path: Path) -> None:
    events, q = _read(path.read_bytes(), path.name)
    assert q.count == 0, q.kept
    assert len(events) == 1
    ev = events[0]
    assert ev.account and ev.source and ev.id.startswith("sha1:")
    assert ev.time > 1_000_000_000_000


# Values checked by reading each sample by hand: who, what, outcome, whose record, from where, when.
EXPECTED: dict[str, dict[str, object]] = {
    "query-03": dict(
        account="127.0.0.1",
        actor_kind="human",
        action="search",
        outcome="success",
        patients=("urn:oid:1.2.40.0.13.1.1.999|PDQ-4711",),
        address="127.0.0.1",
        time="2021-07-05T07:16:21.400Z",
        client="HL7SND|DCM4CHEE",
    ),
    "query-02": dict(
        account="FINDSCU",
        actor_kind="application",
        action="search",
        outcome="success",
        patients=(),
        address="localhost",
        time="2019-02-05T17:01:25.000Z",
    ),
    "query-04": dict(
        account="127.0.0.1",
        action="search",
        patients=("https://github.com/synthetichealth/synthea|e925b0f3-8006-43f6-aa31-94bd215e55e7",),
        time="2022-07-18T11:20:56.601Z",
    ),
    "user-authentication-01": dict(
        account="admin",
        actor_kind="human",
        action="login",
        outcome="success",
        patients=(),
        address="127.0.0.1",
        time="2017-01-26T16:28:59.553Z",
        client="",
    ),
    "security-alert-01": dict(account="127.0.0.1", action="other", outcome="error", address="127.0.0.1"),
    "security-alert-02": dict(account="STGCMTSCU1", action="other", outcome="denied", address="localhost"),
    "security-alert-05": dict(account="admin", actor_kind="human", action="break_glass", outcome="success"),
    "data-export-01": dict(
        account="dcm4chee-arc",
        actor_kind="application",
        action="export",
        outcome="error",
        patients=("urn:oid:1.3.6.1.4.1.21367.2005.13.20.1000|MGID001",),
        address="localhost",
        time="2024-08-21T13:23:47.566Z",
    ),
    "patient-record-01": dict(
        account="PAMSimulator|IHE",
        action="create",
        patients=("urn:oid:1.3.6.1.4.1.12559.11.1.4.1.2|MEE4-54798",),
        address="localhost",
        time="2018-09-11T09:43:05.007Z",
    ),
    "patient-record-03": dict(account="127.0.0.1", actor_kind="human", action="create", patients=("4785133^^^UKL",)),
    "dicom-instances-accessed-01": dict(
        account="127.0.0.1", action="update", patients=("GE1118",), time="2024-08-28T09:07:29.705Z"
    ),
    "dicom-instances-accessed-08": dict(account="127.0.0.1", action="export", patients=(), address="127.0.0.1"),
    "dicom-instances-accessed-12": dict(account="dcm4chee-arc", action="read", patients=("54321",)),
    "dicom-instances-transferred-01": dict(
        account="STORESCU",
        action="create",
        patients=("SMS530102^^^DCM4CHEE.95FB6349.06B2DF89",),
        address="view-localhost",
        time="2023-11-28T14:16:32.025Z",
    ),
    "dicom-instances-transferred-02": dict(account="STORESCU", outcome="error", patients=()),
    "dicom-instances-transferred-06": dict(account="GETSCU", action="read", patients=("12345-HD11",)),
    "dicom-instances-transferred-07": dict(account="MOVESCU", action="export", address="view-localhost"),
    "dicom-instances-transferred-08": dict(account="MOVESCU", action="export", outcome="error"),
    "procedure-record-06": dict(account="127.0.0.1", action="delete", patients=("ALGO00003",)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_values(name: str) -> None:
    ev = _one(name)
    for field, want in EXPECTED[name].items():
        got = format_time(ev.time) if field == "time" else getattr(ev, field)
        assert got == want, f"{name}.{field}"
    assert ev.source == "dcm4chee-arc" or name.startswith("security-alert-08")


def test_categories_follow_what_was_touched() -> None:
    assert category_names(_one("data-export-01").categories) == ["identity", "document"]
    assert category_names(_one("dicom-instances-accessed-01").categories) == ["identity", "imaging"]
    assert category_names(_one("query-02").categories) == ["imaging"]
    assert category_names(_one("user-authentication-01").categories) == []
    assert _one("procedure-record-01").categories & Category.CLINICAL


def test_query_is_decoded_when_text_and_kept_in_base64_when_binary() -> None:
    assert _one("query-01").query == (
        "/dcm4chee-arc/aets/DCM4CHEE/rs/patientsincludefield=all&offset=0&limit=21&orderby=PatientName"
    )
    assert _one("query-03").query.startswith("MSH|^~\\&|HL7SND|DCM4CHEE|HL7RCV|DCM4CHEE|")
    # query-02 carries a binary DICOM C-FIND identifier: not text, kept as sent.
    assert _one("query-02").query.startswith("CABSAAYAAABTVFVEWSAg")


def test_concatenated_samples_read_like_separate_files(samples: list[Path]) -> None:
    alone = [ev for p in samples for ev in _read(p.read_bytes(), p.name)[0]]
    joined, q = _read(b"\n".join(p.read_bytes() for p in samples))
    assert q.count == 0, q.kept[:3]
    assert joined == alone


class _Trickle(io.RawIOBase):
    """A stream that returns a few bytes per read, as a slow pipe or socket does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(self.step, len(b), len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("step", [1, 7, 100])
def test_reads_that_end_anywhere(samples: list[Path], step: int) -> None:
    data = b"<Batch>\n" + b"\n".join(p.read_bytes() for p in samples[:6]) + b"\n</Batch>\n"
    q = Quarantine()
    events = list(atna.read(_Trickle(data, step), "slow.xml", q))  # type: ignore[arg-type]
    assert q.count == 0, q.kept
    assert events == _read(data)[0]
    assert len(events) == 6


def test_messages_inside_a_wrapping_root_with_inherited_namespaces(samples: list[Path]) -> None:
    # A wrapper declares xmlns:xsi once; the messages use xsi: without declaring it.
    bodies = []
    for p in samples[:5]:
        text = re.sub(rb"<\?xml[^>]*\?>", b"", p.read_bytes())
        bodies.append(text.replace(b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"', b""))
    wrapped = (
        b'<?xml version="1.0"?>\n<Messages xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        + b"\n".join(bodies)
        + b"\n</Messages>\n"
    )
    events, q = _read(wrapped)
    assert q.count == 0, q.kept
    assert [e.account for e in events] == [_read(p.read_bytes())[0][0].account for p in samples[:5]]


def test_default_namespace_is_tolerated() -> None:
    data = _sample_bytes("user-authentication-01")
    data = data.replace(b"<AuditMessage ", b'<AuditMessage xmlns="urn:example:audit" ', 1)
    events, q = _read(data)
    assert q.count == 0 and events[0].account == "admin" and events[0].action == "login"


def test_id_ignores_formatting_but_not_content() -> None:
    data = _sample_bytes("query-01")
    compact = re.sub(rb">\s+<", b"><", data)
    changed = data.replace(b'UserID="127.0.0.1"', b'UserID="127.0.0.2"')
    ids = [_read(d)[0][0].id for d in (data, compact, changed)]
    assert ids[0] == ids[1] != ids[2]


def test_rfc3881_style_codes() -> None:
    # The older dialect: code/displayName instead of csd-code/originalText, no UserTypeCode.
    xml = b"""<AuditMessage>
      <EventIdentification EventActionCode="R" EventDateTime="2024-03-01T10:00:00Z" EventOutcomeIndicator="0">
        <EventID code="110110" codeSystemName="DCM" displayName="Patient Record"/>
        <EventTypeCode code="ITI-43" codeSystemName="IHE Transactions" displayName="Retrieve Document Set"/>
      </EventIdentification>
      <ActiveParticipant UserID="jdupont" UserName="Jeanne Dupont" UserIsRequestor="true">
        <RoleIDCode code="MED" codeSystemName="local" displayName="Medecin"/>
      </ActiveParticipant>
      <ActiveParticipant UserID="dpi-viewer" AlternativeUserID="4242" UserIsRequestor="false"
                         NetworkAccessPointID="10.1.2.3" NetworkAccessPointTypeCode="2">
        <RoleIDCode code="110152" codeSystemName="DCM" displayName="Destination"/>
      </ActiveParticipant>
      <AuditSourceIdentification AuditSourceID="hospital-xds"/>
      <ParticipantObjectIdentification ParticipantObjectID="1666093441321^^^&amp;1.2.250.1.213.1.4.8&amp;ISO"
          ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">
        <ParticipantObjectIDTypeCode code="2"/>
      </ParticipantObjectIdentification>
    </AuditMessage>"""
    ev = atna.parse_message(xml)
    assert (ev.account, ev.actor_kind, ev.action, ev.client, ev.address) == (
        "jdupont",
        "human",
        "read",
        "dpi-viewer",
        "10.1.2.3",
    )
    assert ev.patients == ("urn:oid:1.2.250.1.213.1.4.8|1666093441321",)
    assert category_names(ev.categories) == ["identity", "national_id", "document"]
    assert ev.source == "hospital-xds"


def _auth(indicator: str, description: str = "", type_code: str = "110122") -> AccessEvent:
    xml = f"""<AuditMessage>
      <EventIdentification EventActionCode="E" EventDateTime="2024-03-01T10:00:00+01:00"
                           EventOutcomeIndicator="{indicator}">
        <EventID csd-code="110114" codeSystemName="DCM" originalText="User Authentication"/>
        <EventTypeCode csd-code="{type_code}" codeSystemName="DCM"/>
        <EventOutcomeDescription>{description}</EventOutcomeDescription>
      </EventIdentification>
      <ActiveParticipant UserID="mlefort" UserIsRequestor="true" UserTypeCode="1"
                         NetworkAccessPointID="/192.168.4.20:51544" NetworkAccessPointTypeCode="2"/>
      <AuditSourceIdentification AuditSourceID="dpi"/>
    </AuditMessage>""".encode()
    return atna.parse_message(xml)


def test_authentication_outcomes() -> None:
    ok = _auth("0")
    assert (ok.action, ok.outcome, ok.address) == ("login", "success", "192.168.4.20")
    assert (_auth("4", "Invalid credentials").action, _auth("4").outcome) == ("login_failed", "denied")
    assert _auth("8").action == "login_failed" and _auth("8").outcome == "error"
    assert _auth("0", type_code="110123").action == "logout"
    assert format_time(ok.time) == "2024-03-01T09:00:00.000Z"


def test_minor_failure_is_a_denial_only_when_the_description_says_so() -> None:
    base = _sample_bytes("data-export-01")  # indicator 4, "Connection refused"
    assert atna.parse_message(base).outcome == "error"
    denied = base.replace(b"Connection refused", b"Access denied by policy")
    assert atna.parse_message(denied).outcome == "denied"


def test_latin1_declared_messages() -> None:
    msg = _sample_bytes("user-authentication-01")
    msg = msg.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"').replace(
        b'"admin"', '"h\xe9l\xe8ne"'.encode("latin-1")
    )
    events, q = _read(msg + b"\n" + msg)
    assert q.count == 0, q.kept
    assert [e.account for e in events] == ["hélène", "hélène"]


def test_missing_time_uses_fallback_or_is_refused() -> None:
    data = re.sub(rb'EventDateTime="[^"]*"', b"", _sample_bytes("query-01"))
    with pytest.raises(RecordError, match="no EventDateTime"):
        atna.parse_message(data, "f.xml", "offset 0")
    assert atna.parse_message(data, fallback_time=1_700_000_000_000).time == 1_700_000_000_000


def test_bad_messages_are_quarantined_and_the_rest_goes_on() -> None:
    good = _sample_bytes("query-01")
    no_requestor = good.replace(b'UserIsRequestor="true"', b'UserIsRequestor="false"')
    bad_time = good.replace(b"2017-07-27T09:12:21.331+02:00", b"yesterday")
    malformed = b"<AuditMessage><EventIdentification></AuditMessage>"
    data = b"\n".join([good, no_requestor, bad_time, malformed, b"stray words", good])
    events, q = _read(data, "mixed.xml")
    assert len(events) == 2
    reasons = [r.reason for r in q.kept]
    assert reasons[0] == 'no requesting participant (UserIsRequestor="true")'
    assert reasons[1] == "bad EventDateTime 'yesterday'"
    assert reasons[2].startswith("malformed XML")
    assert reasons[3] == "text outside any AuditMessage element"
    assert all(r.origin == "mixed.xml" for r in q.kept)
    # locations are byte offsets of each message
    offset = int(q.kept[1].location.split()[1])
    assert data[offset:].startswith(b"<AuditMessage")
    assert data.index(bad_time.split(b"<AuditMessage", 1)[1]) > offset


def test_truncated_message() -> None:
    good = _sample_bytes("query-01")
    cut = good[: len(good) // 2]
    events, q = _read(cut + b"\n" + good + b"\n" + cut)
    assert len(events) == 1
    assert [r.reason for r in q.kept] == [
        "truncated AuditMessage: the next message starts before it closes",
        "truncated AuditMessage: no closing tag",
    ]


def test_not_an_audit_file() -> None:
    with pytest.raises(InputFormatError, match=re.escape("plain.txt: no <AuditMessage> element found")):
        _read(b"just some text\nand more\n", "plain.txt")
    assert _read(b"  \n")[0] == []


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE AuditMessage [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<AuditMessage>
  <EventIdentification EventActionCode="R" EventDateTime="2024-01-01T00:00:00Z" EventOutcomeIndicator="0">
    <EventID csd-code="110110"/>
  </EventIdentification>
  <ActiveParticipant UserID="&lol9;" UserIsRequestor="true"/>
  <AuditSourceIdentification AuditSourceID="x"/>
</AuditMessage>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE AuditMessage [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<AuditMessage>
  <EventIdentification EventActionCode="R" EventDateTime="2024-01-01T00:00:00Z" EventOutcomeIndicator="0">
    <EventID csd-code="110110"/>
  </EventIdentification>
  <ActiveParticipant UserID="&xxe;" UserIsRequestor="true"/>
  <AuditSourceIdentification AuditSourceID="x"/>
</AuditMessage>
"""


@pytest.mark.parametrize("hostile", [BOMB, XXE], ids=["billion-laughs", "external-entity"])
def test_dtds_are_refused_and_never_expanded(hostile: bytes) -> None:
    started = time.perf_counter()
    events, q = _read(hostile, "hostile.xml")
    assert time.perf_counter() - started < 1.0
    assert events == []
    reasons = [r.reason for r in q.kept]
    assert reasons[0] == atna.DTD_REFUSED
    # The message that uses the entity cannot be read without the DTD: refused, not expanded.
    assert reasons[1].startswith("malformed XML") and "not defined" in reasons[1]
    assert all("lollollol" not in r.raw and "root:" not in r.raw for r in q.kept)
    with pytest.raises(RecordError, match="document type declaration refused"):
        atna.parse_message(hostile)


def test_a_dtd_in_the_prolog_does_not_cost_the_messages_that_do_not_use_it() -> None:
    good = _sample_bytes("query-01").split(b"?>", 1)[1]
    data = b'<!DOCTYPE x [<!ENTITY e "boom">]>\n<Batch>' + good + good + b"</Batch>"
    events, q = _read(data)
    assert len(events) == 2 and [r.reason for r in q.kept] == [atna.DTD_REFUSED]


def test_reads_through_the_registry(tmp_path: Path, samples: list[Path]) -> None:
    path = tmp_path / "audit.log"  # the name says nothing: the content does
    path.write_bytes(b"".join(p.read_bytes() for p in samples[:3]))
    events = list(open_events([path], Quarantine()))
    assert len(events) == 3


def test_normalise_patient_id() -> None:
    f = atna.normalise_patient_id
    assert f("1666093441321^^^&1.2.250.1.213.1.4.8&ISO") == "urn:oid:1.2.250.1.213.1.4.8|1666093441321"
    assert f("MEE4-54798^^^MEE4&1.3.6.1.4.1.12559.11.1.4.1.2&ISO^PI") == (
        "urn:oid:1.3.6.1.4.1.12559.11.1.4.1.2|MEE4-54798"
    )
    assert f("42^^^&https://ids.example.org/ipp&URI") == "https://ids.example.org/ipp|42"
    assert f("P-00000001") == "P-00000001"
    assert f("4785133^^^UKL") == "4785133^^^UKL"
    assert f("^^^&1.2.3&ISO") == "^^^&1.2.3&ISO"
