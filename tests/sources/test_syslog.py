"""Captured syslog: the published ATNA frames and every DICOM sample, in both wire framings."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest

from sentinelle.errors import InputFormatError, RecordError
from sentinelle.events import AccessEvent, category_names, format_time
from sentinelle.sources import atna, open_events, syslog
from sentinelle.sources.quarantine import Quarantine
from sentinelle.sources.syslog import FrameSplitter

TESTDATA = Path(__file__).parents[2] / ".." / "shared" / "testdata"
SYSLOG = TESTDATA / "syslog"
DICOM = TESTDATA / "dicom-audit"
BOM = b"\xef\xbb\xbf"


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    """The three published frames, then every DICOM sample wrapped in an RFC 5424 frame."""
    if not SYSLOG.is_dir() or not DICOM.is_dir():
        pytest.skip(f"syslog or DICOM audit samples absent ({TESTDATA})")
    out = [p.read_bytes() for p in sorted(SYSLOG.glob("*.txt"))]
    for i, p in enumerate(sorted(DICOM.glob("*.xml"))):
        header = f"<85>1 2024-05-0{1 + i % 9}T10:00:00.000+02:00 pacs-01 dcm4chee-arc {1000 + i} IHE+DICOM - "
        out.append(header.encode() + BOM + p.read_bytes().rstrip())
    return out


def _dicom(name: str) -> bytes:
    path = DICOM / f"{name}.xml"
    if not path.exists():
        pytest.skip(f"DICOM audit sample absent ({path})")
    return path.read_bytes()


def octet_counted(frames: list[bytes]) -> bytes:
    return b"".join(str(len(f)).encode() + b" " + f for f in frames)


def newline_framed(frames: list[bytes]) -> bytes:
    return b"\n".join(frames) + b"\n"


def _read(data: bytes, origin: str = "capture.log") -> tuple[list[AccessEvent], Quarantine]:
    q = Quarantine()
    return list(syslog.read(io.BytesIO(data), origin, q)), q


def _sample(name: str) -> bytes:
    path = SYSLOG / name
    if not path.exists():
        pytest.skip(f"syslog sample absent ({path})")
    return path.read_bytes()


def test_frame_1_pix_query_rfc3881() -> None:
    ev = syslog.parse_frame(_sample("frame-1.txt"))
    assert ev.account == "openhim-mediator-ohie-xds|openhim"
    assert ev.actor_kind == "application"
    assert (ev.action, ev.outcome) == ("search", "success")
    assert ev.patients == ("urn:oid:1.3.6.1.4.1.21367.2005.13.20.3000|fc133984036647e",)
    assert ev.address == "192.168.1.111"
    assert format_time(ev.time) == "2015-03-05T10:52:31.356Z"
    assert ev.source == "openhim"
    assert ev.query.startswith("MSH|^~\\&|openhim|openhim-mediator-ohie-xds|pix|pix|")
    assert "QPD|IHE PIX Query|" in ev.query
    assert category_names(ev.categories) == ["identity"]


@pytest.mark.parametrize(
    ("name", "when"),
    [("frame-2.txt", "2010-12-17T21:12:04.287Z"), ("frame-3.txt", "2013-10-17T21:12:04.287Z")],
)
def test_frames_2_and_3_login_in_both_dialects(name: str, when: str) -> None:
    # frame-2 is RFC 3881 (code=), frame-3 DICOM (csd-code=): the same login.
    ev = syslog.parse_frame(_sample(name))
    assert (ev.account, ev.actor_kind, ev.action, ev.outcome) == (
        "farley.granger@wb.com",
        "human",
        "login",
        "success",
    )
    assert ev.patients == ()
    assert ev.address == "125.20.175.12"  # the person has none: the application beside them
    assert ev.client == "fe80::5999:d1ef:63de:a8bb%11"
    assert format_time(ev.time) == when


@pytest.mark.parametrize("framing", [octet_counted, newline_framed], ids=["octet-counted", "newline"])
def test_every_sample_in_both_framings(tmp_path: Path, frames: list[bytes], framing: object) -> None:
    path = tmp_path / "atna.log"
    path.write_bytes(framing(frames))  # type: ignore[operator]
    q = Quarantine()
    events = list(open_events([path], q))  # sniffed as syslog
    assert q.count == 0, q.kept[:3]
    assert len(events) == len(frames)
    # The same message gives the same event, from a file or from a syslog frame.
    direct = [atna.parse_message(p.read_bytes()) for p in sorted(DICOM.glob("*.xml"))]
    assert events[3:] == direct
    assert [e.account for e in events[:3]] == [
        "openhim-mediator-ohie-xds|openhim",
        "farley.granger@wb.com",
        "farley.granger@wb.com",
    ]


def test_mixed_framings_and_crlf(frames: list[bytes]) -> None:
    data = (
        octet_counted(frames[:2])
        + b"\r\n"
        + newline_framed(frames[2:4]).replace(b"\n", b"\r\n")
        + octet_counted(frames[4:6])
    )
    events, q = _read(data)
    assert q.count == 0, q.kept
    assert len(events) == 6


@pytest.mark.parametrize("framing", [octet_counted, newline_framed], ids=["octet-counted", "newline"])
def test_splitter_is_incremental(frames: list[bytes], framing: object) -> None:
    data: bytes = framing(frames[:8])  # type: ignore[operator]
    one_shot = FrameSplitter()
    whole = one_shot.feed(data) + one_shot.close()
    rng = random.Random(7)
    for _ in range(3):
        s = FrameSplitter()
        got = []
        i = 0
        while i < len(data):
            n = rng.choice([1, 2, 7, 64, 1000])
            got += s.feed(data[i : i + n])
            i += n
        got += s.close()
        assert got == whole
    assert [f.data for f in whole] == frames[:8]
    assert not any(f.error for f in whole)


def test_listener_gets_an_xml_frame_as_soon_as_it_is_whole() -> None:
    s = FrameSplitter()
    frame = _sample("frame-2.txt")
    assert s.feed(frame[:-10]) == []
    out = s.feed(frame[-10:] + b"\n")
    assert [f.data for f in out] == [frame]


def test_bad_frames_go_to_quarantine_with_their_offset(frames: list[bytes]) -> None:
    good = frames[0]
    junk = b"garbage line that is no frame\n"
    truncated = b"9999 " + frames[1][:200]  # declares more than it holds; the next frame follows
    not_audit = b"<13>1 2024-01-01T00:00:00Z host cron 42 - - backup finished\n"
    data = octet_counted([good]) + b"\n" + junk + truncated + b"\n" + not_audit + octet_counted([good])
    events, q = _read(data, "mixed.log")
    assert len(events) == 2
    kept = {r.reason.split(":")[0]: r for r in q.kept}
    assert set(kept) == {"not a syslog frame", "truncated frame", "syslog message carries no audit record (MSGID none)"}
    for r in q.kept:
        offset = int(r.location.removeprefix("offset "))
        assert data[offset:].startswith(r.raw.encode()[:20])
    assert data.index(junk) == int(kept["not a syslog frame"].location.split()[1])
    assert data.index(b"9999 ") == int(kept["truncated frame"].location.split()[1])


def test_truncated_last_frame() -> None:
    frame = _sample("frame-1.txt")
    events, q = _read(octet_counted([frame]) + octet_counted([frame])[:-50])
    assert len(events) == 1
    assert q.kept[0].reason.startswith("truncated frame")


def test_structured_data_and_bom() -> None:
    xml = _dicom("query-01")
    frame = (
        b'<110>1 2024-01-01T00:00:00Z pacs app 7 IHE+DICOM [meta sequenceId="1" note="a \\] b c"][x@1 y="z"] '
        + BOM
        + xml
    )
    ev = syslog.parse_frame(frame)
    assert ev == atna.parse_message(xml)


def test_rfc3164_header_is_tolerated() -> None:
    xml = _dicom("query-01")
    ev = syslog.parse_frame(b"<85>Oct 11 22:14:15 pacs-01 audit: " + xml)
    assert ev.account == "127.0.0.1" and ev.action == "search"


def test_syslog_timestamp_and_host_stand_in_for_missing_fields() -> None:
    xml = _dicom("query-01")
    xml = xml.replace(b' EventDateTime="2017-07-27T09:12:21.331+02:00"', b"").replace(
        b'AuditSourceID="dcm4chee-arc"', b""
    )
    ev = syslog.parse_frame(b"<85>1 2024-02-03T04:05:06.789Z pacs-07 app - IHE+DICOM - " + xml)
    assert format_time(ev.time) == "2024-02-03T04:05:06.789Z"
    assert ev.source == "pacs-07"


def test_fhir_audit_event_json_payload() -> None:
    path = TESTDATA / "fhir-r4" / "audit-event-example-search.json"
    if not path.exists():
        pytest.skip(f"FHIR sample absent ({path})")
    resource = json.dumps(json.loads(path.read_bytes())).encode()
    ev = syslog.parse_frame(b"<85>1 2015-08-22T23:42:24Z ehr app - FHIR+JSON - " + BOM + resource)
    assert (ev.id, ev.account, ev.action) == ("example-search", "95", "search")
    with pytest.raises(RecordError, match="not an AuditEvent"):
        syslog.parse_frame(b'<85>1 - h a - - - {"resourceType": "Patient", "id": "1"}')
    with pytest.raises(RecordError, match="invalid JSON"):
        syslog.parse_frame(b"<85>1 - h a - - - {not json")


def test_frames_without_audit_payload() -> None:
    with pytest.raises(RecordError, match="no message"):
        syslog.parse_frame(b"<85>1 - h a - IHE+RFC-3881 -")
    with pytest.raises(RecordError, match="not an ATNA AuditMessage"):
        syslog.parse_frame(b"<85>1 - h a - - - <html>hi</html>")
    with pytest.raises(RecordError, match="no RFC 5424 or RFC 3164 syslog header"):
        syslog.parse_frame(b"hello")


def test_not_syslog_at_all() -> None:
    with pytest.raises(InputFormatError, match=re.escape("notes.txt: no syslog frame found")):
        _read(b"some notes\nnothing else\n", "notes.txt")
    assert _read(b"\n \n")[0] == []
