"""Format sniffing and `open_events`: files, folders, gzip, stdin-like streams, unknown input."""

from __future__ import annotations

import gzip
import io
import sys
import warnings
from pathlib import Path

import pytest

from sentinelle.errors import InputFormatError
from sentinelle.sources import open_events, read_stream, sniff_format
from sentinelle.sources.quarantine import Quarantine

TESTDATA = Path(__file__).parents[2] / ".." / "shared" / "testdata"


def _sample(rel: str) -> bytes:
    path = TESTDATA / rel
    if not path.exists():
        pytest.skip(f"sample absent ({path})")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'{"resourceType": "AuditEvent"}', "fhir-json"),
        (b'\n\n  [{"resourceType": "AuditEvent"}]', "fhir-json"),
        (b"\xef\xbb\xbf{}", "fhir-json"),
        (b"<85>1 2015-03-05T12:52:31.358+02:00 host java 9293 IHE+RFC-3881 - <?xml", "syslog"),
        (b"2124 <85>1 2015-03-05T12:52:31.358+02:00 host", "syslog"),
        (b"\xef\xbb\xbf<13>Oct 11 22:14:15 host app: hi", "syslog"),
        (b'<?xml version="1.0"?>\n<AuditMessage xmlns:xsi="x">', "atna-xml"),
        (b"<Messages><AuditMessage>", "atna-xml"),
        (b'<AuditEvent xmlns="http://hl7.org/fhir">', "fhir-xml"),
        (b'<?xml version="1.0"?><Bundle xmlns="http://hl7.org/fhir">', "fhir-xml"),
        (b"Date;Login;Action\n01/01/2025;a;b\n", None),
        (b"<html><body>", None),
        (b"", None),
        (b" \n\t", None),
    ],
)
def test_sniff_format(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


@pytest.mark.parametrize(
    "rel",
    [
        "dicom-audit/query-01.xml",
        "syslog/frame-1.txt",
        "fhir-r4/audit-event-example-search.json",
        "ch-atc/atc-log-read.xml",
    ],
)
def test_each_format_reads_from_a_file_whatever_its_name(tmp_path: Path, rel: str) -> None:
    data = _sample(rel)
    path = tmp_path / "export.log"
    path.write_bytes(data)
    q = Quarantine()
    try:
        events = list(open_events([path], q))
    except ModuleNotFoundError as exc:  # a sibling reader not written yet
        pytest.skip(f"reader absent: {exc}")
    assert len(events) == 1 and q.count == 0, q.kept


def test_gzip_file_is_read_and_closed(tmp_path: Path) -> None:
    data = _sample("dicom-audit/query-01.xml")
    path = tmp_path / "audit.xml.gz"
    path.write_bytes(gzip.compress(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = list(open_events([path], Quarantine()))
        import gc

        gc.collect()
    assert [e.account for e in events] == ["127.0.0.1"]
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]


def test_gzip_stream_like_stdin() -> None:
    data = _sample("syslog/frame-2.txt")
    events = list(read_stream(io.BytesIO(gzip.compress(data)), "<stdin>", Quarantine()))
    assert [e.account for e in events] == ["farley.granger@wb.com"]


def test_dash_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _sample("syslog/frame-3.txt")

    class _Stdin:
        buffer = io.BufferedReader(io.BytesIO(data))

    monkeypatch.setattr(sys, "stdin", _Stdin())
    assert [e.action for e in open_events(["-"], Quarantine())] == ["login"]


def test_directory_recursive_sorted_without_hidden(tmp_path: Path) -> None:
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.xml").write_bytes(_sample("dicom-audit/user-authentication-01.xml"))
    (tmp_path / "b" / "frames.log").write_bytes(_sample("syslog/frame-1.txt"))
    (tmp_path / "b" / "deeper" / "q.xml.gz").write_bytes(gzip.compress(_sample("dicom-audit/query-02.xml")))
    (tmp_path / ".hidden.xml").write_bytes(_sample("dicom-audit/query-03.xml"))
    (tmp_path / ".git" / "x.xml").write_bytes(_sample("dicom-audit/query-04.xml"))
    (tmp_path / "empty.log").write_bytes(b"")
    accounts = [e.account for e in open_events([tmp_path], Quarantine())]
    assert accounts == ["admin", "FINDSCU", "openhim-mediator-ohie-xds|openhim"]


def test_unknown_format_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trace_dpi.csv"
    path.write_bytes(b"Date;Login;Action\n01/01/2025;a;b\n")
    with pytest.raises(InputFormatError) as info:
        list(open_events([path], Quarantine()))
    assert info.value.where == str(path)
    assert str(path) in str(info.value) and "--mapping" in str(info.value)


def test_unknown_format_name_and_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_bytes(_sample("dicom-audit/query-01.xml"))
    with pytest.raises(InputFormatError, match="unknown format 'evtx'"):
        list(open_events([path], Quarantine(), fmt="evtx"))
    with pytest.raises(InputFormatError, match="no such file or directory"):
        list(open_events([tmp_path / "nope.log"], Quarantine()))


def test_forced_format_overrides_sniffing(tmp_path: Path) -> None:
    # Octet-counted syslog forced as syslog; the same bytes forced as ATNA XML still read,
    # the frame header around the message is reported as text outside it.
    frame = _sample("syslog/frame-1.txt")
    path = tmp_path / "x"
    path.write_bytes(str(len(frame)).encode() + b" " + frame)
    assert len(list(open_events([path], Quarantine(), fmt="syslog"))) == 1
    q = Quarantine()
    assert len(list(open_events([path], q, fmt="atna-xml"))) == 1
    assert q.kept[0].reason == "text outside any AuditMessage element"
