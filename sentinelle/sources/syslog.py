"""Reads captured syslog (RFC 5424) carrying audit messages: ATNA XML or FHIR AuditEvent JSON.

IHE ATNA sends each audit message as one syslog frame (MSGID `IHE+RFC-3881` or
`IHE+DICOM`). Captures keep the frames as they were on the wire, in either framing:
octet-counted (`LEN SP FRAME`, RFC 5425 / RFC 6587, what TLS senders on 6514 use and
what a multi-line XML payload needs) or one frame per line (non-transparent framing,
where a multi-line payload runs on until the next line that starts a frame `<PRI>1 `).
Both may be mixed in one file, and a UTF-8 BOM may precede the payload. BSD (RFC 3164)
headers are tolerated.

`FrameSplitter` cuts bytes into frames incrementally (feed what arrives, get whole
frames), so a TCP listener can use it as is; `parse_frame` turns one frame into an
`AccessEvent`. Bytes that are no frame, and frames cut short, go to the quarantine with
their byte offset; the frames around them are still read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

import msgspec

from sentinelle.errors import InputFormatError, RecordError
from sentinelle.events import AccessEvent, parse_time
from sentinelle.sources import atna
from sentinelle.sources.quarantine import Quarantine

__all__ = ["MAX_FRAME_BYTES", "Frame", "FrameSplitter", "SyslogHeader", "parse_frame", "read", "split_header"]

#: Largest frame accepted; a bigger one is reported and skipped.
MAX_FRAME_BYTES = 16 << 20

_BLOCK = 1 << 16
#: Bytes that are no frame are reported in pieces of about this size.
_JUNK_PIECE = 1 << 20
# A frame header: RFC 5424 `<PRI>VERSION SP`, or RFC 3164 `<PRI>Mmm dd hh:mm:ss SP`.
_HDR = rb"<\d{1,3}>(?:[1-9]\d{0,2} |[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )"
_LINE_START = re.compile(_HDR)
_OCTET_START = re.compile(rb"(\d{1,9}) (?=" + _HDR + rb")")
_HEADER_AT = re.compile(_HDR)
# The line that ends a newline-framed frame: the next one starts a frame.
_LINE_NEXT = re.compile(rb"\n(?=" + _HDR + rb"|\d{1,9} " + _HDR + rb")")
# A newline-framed XML payload is complete at its closing tag's line end.
_XML_DONE = re.compile(rb"</AuditMessage\s*>[ \t\r\x00]*\n")
_SPACE = b" \t\r\n\x00"

_RFC5424 = re.compile(rb"<(\d{1,3})>[1-9]\d{0,2} (\S+) (\S+) (\S+) (\S+) (\S+)")
_RFC3164 = re.compile(rb"<(\d{1,3})>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+) ")
_PAYLOAD_START = re.compile(rb"<\?xml|<AuditMessage|\{")
_BOM = b"\xef\xbb\xbf"


def _frame_start(buf: bytearray, start: int, end: int, line_only: bool) -> int:
    """Where the next frame begins in buf[start:end], or -1.

    A frame begins at a header `<PRI>VERSION ` preceded by its octet count (`LEN SP`), or,
    for a newline-framed one, at a line start. With `line_only` false (looking past junk),
    a bare header anywhere also counts. Headers are found by a regex that starts with a
    literal `<`, which `re` scans for quickly; what precedes them is checked by hand
    (a look-behind alternation costs a hundred times more).
    """
    i = start
    while True:
        m = _HEADER_AT.search(buf, i, end)
        if m is None:
            return -1
        j = m.start()
        k = j - 1
        if k >= start and buf[k] == 0x20:
            d = k
            while d > start and 0x30 <= buf[d - 1] <= 0x39 and k - d < 9:
                d -= 1
            if d < k:
                return d  # LEN SP <PRI>...: at most 9 digits, junk digits before are junk
        if j == start or buf[j - 1] == 0x0A or not line_only:
            return j
        i = j + 1


class Frame(NamedTuple):
    """A piece of the input: a whole frame, or (when `error` is set) bytes that are none."""

    offset: int
    data: bytes
    error: str = ""


class SyslogHeader(NamedTuple):
    """The parts of a syslog header Sentinelle uses."""

    priority: int
    timestamp: str
    hostname: str
    app_name: str
    msgid: str


class FrameSplitter:
    """Cuts a byte stream into syslog frames, octet-counted or newline-framed, incrementally.

    `feed(data)` returns the frames completed so far; `close()` returns what remains at
    end of input. Offsets count from the first byte fed. A newline-framed frame ends
    at the next line that starts a frame, or at the line ending its `</AuditMessage>`,
    so a listener gets an ATNA frame as soon as it is whole.

    >>> s = FrameSplitter()
    >>> [f.data for f in s.feed(b"9 <85>1 - x")] + [f.data for f in s.close()]
    [b'<85>1 - x']
    """

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._base = 0
        self._need = 0  # bytes the buffer must hold before trying again (octet frames)
        self._scan = 0  # where to resume looking for a newline-framed frame's end

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by these bytes."""
        self._buf += data
        if self._need and len(self._buf) < self._need:
            return []
        return self._drain(eof=False)

    def close(self) -> list[Frame]:
        """Everything left, at end of input: the last frame, or what could not be one."""
        out = self._drain(eof=True)
        self._buf = bytearray()
        return out

    def _drain(self, eof: bool) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        pos = 0
        self._need = 0
        while True:
            while pos < len(buf) and buf[pos] in _SPACE:
                pos += 1
            if pos >= len(buf):
                break
            step = self._step(buf, pos, eof, out)
            if step < 0:
                break
            pos = step
        if pos:
            del buf[:pos]
            self._base += pos
            self._scan = max(0, self._scan - pos)
            if self._need:
                self._need -= pos
        return out

    def _step(self, buf: bytearray, pos: int, eof: bool, out: list[Frame]) -> int:
        """Consumes one frame or junk piece at `pos`; returns the new position, or -1 to wait."""
        m = _OCTET_START.match(buf, pos)
        if m is not None:
            return self._octet(buf, pos, m, eof, out)
        if _LINE_START.match(buf, pos):
            return self._line(buf, pos, eof, out)
        r = _frame_start(buf, pos + 1, len(buf), line_only=False)
        if r < 0:
            if not eof and len(buf) - pos <= _JUNK_PIECE:
                return -1
            end = len(buf) if eof else len(buf) - 64
            out.append(Frame(self._base + pos, bytes(buf[pos:end]), "not a syslog frame"))
            return end
        out.append(Frame(self._base + pos, bytes(buf[pos:r]), "not a syslog frame"))
        return r

    def _octet(self, buf: bytearray, pos: int, m: re.Match[bytes], eof: bool, out: list[Frame]) -> int:
        digits = m.group(1)
        body_start = m.end()
        first_failure = ""
        cut_at = -1
        waiting = False
        # The count may be glued to junk digits before it ("...12" + "150 <85>1 ..."): when
        # the whole run does not give a frame, try its shorter tails.
        for k in range(len(digits)):
            n = int(digits[k:])
            if n == 0 or n > self.max_frame:
                first_failure = first_failure or f"octet count {n} out of range"
                continue
            body_end = body_start + n
            embedded = _frame_start(buf, body_start + 1, min(body_end, len(buf)), line_only=True)
            if embedded >= 0:
                if not first_failure:
                    first_failure = f"truncated frame: {n} octets declared, another frame starts before"
                    cut_at = embedded
                continue
            if body_end > len(buf):
                if not eof:
                    if k == 0:
                        self._need = body_end
                        return -1
                    waiting = True
                    continue
                first_failure = first_failure or (f"truncated frame: {n} octets declared, {len(buf) - body_start} left")
                continue
            body = bytes(buf[body_start:body_end])
            # A shorter reading of the count must still give a whole frame: a full header
            # and a payload that ends like one.
            if k > 0 and not (
                body.rstrip(_SPACE).endswith((b">", b"}")) and (_RFC5424.match(body) or _RFC3164.match(body))
            ):
                continue
            if k > 0:
                out.append(Frame(self._base + pos, bytes(buf[pos : pos + k]), "not a syslog frame"))
            out.append(Frame(self._base + pos + k, body))
            return body_end
        if waiting:
            self._need = len(buf) + 1
            return -1
        # No reading of the count gives a frame: report up to where the next frame starts.
        if cut_at <= pos:
            r = _frame_start(buf, body_start, len(buf), line_only=False)
            cut_at = r if r >= 0 else len(buf) if eof else -1
        if cut_at < 0:
            self._need = len(buf) + 1
            return -1
        out.append(Frame(self._base + pos, bytes(buf[pos:cut_at]), first_failure or "bad octet-counted frame"))
        return cut_at

    def _line(self, buf: bytearray, pos: int, eof: bool, out: list[Frame]) -> int:
        scan = max(pos, self._scan)
        nxt = _LINE_NEXT.search(buf, scan)
        done = _XML_DONE.search(buf, scan, nxt.start() + 1 if nxt is not None else len(buf))
        if done is not None:
            out.append(Frame(self._base + pos, bytes(buf[pos : done.end()]).rstrip(_SPACE)))
            self._scan = 0
            return done.end()
        if nxt is not None:
            out.append(Frame(self._base + pos, bytes(buf[pos : nxt.start()]).rstrip(_SPACE)))
            self._scan = 0
            return nxt.start() + 1
        if eof:
            out.append(Frame(self._base + pos, bytes(buf[pos:]).rstrip(_SPACE)))
            self._scan = 0
            return len(buf)
        if len(buf) - pos > self.max_frame:
            # Report the oversized frame and go on from the next line that starts one.
            out.append(
                Frame(self._base + pos, bytes(buf[pos : pos + 4096]), f"frame larger than {self.max_frame} bytes")
            )
            self._scan = 0
            return len(buf) - 64
        # Resume the search near the end next time; a boundary may straddle two reads.
        self._scan = max(pos, len(buf) - 64)
        return -1


def split_header(frame: bytes) -> tuple[SyslogHeader, bytes]:
    """The header of one frame and its payload (BOM removed); raises `RecordError`."""
    m = _RFC5424.match(frame)
    if m is not None:
        i = m.end()
        if frame[i : i + 1] == b" ":
            i += 1
        # Structured data: `-`, or [id param="value" ...] blocks with \" \] \\ escapes.
        # Some senders leave it out and start the message at once: accept that too.
        if frame[i : i + 1] == b"[" or (frame[i : i + 1] == b"-" and frame[i + 1 : i + 2] in (b" ", b"")):
            i = _skip_structured_data(frame, i)
            if frame[i : i + 1] == b" ":
                i += 1
        header = SyslogHeader(
            int(m.group(1)),
            _nil(m.group(2)),
            _nil(m.group(3)),
            _nil(m.group(4)),
            _nil(m.group(6)),
        )
        payload = frame[i:]
    else:
        b = _RFC3164.match(frame)
        if b is None:
            raise RecordError("no RFC 5424 or RFC 3164 syslog header")
        header = SyslogHeader(int(b.group(1)), "", _nil(b.group(3)), "", "")
        rest = frame[b.end() :]
        start = _PAYLOAD_START.search(rest)
        payload = rest[start.start() :] if start is not None else rest
    payload = payload.strip(_SPACE)
    if payload.startswith(_BOM):
        payload = payload[len(_BOM) :].lstrip(_SPACE)
    return header, payload


def _nil(value: bytes) -> str:
    return "" if value == b"-" else value.decode("utf-8", "replace")


def _skip_structured_data(frame: bytes, i: int) -> int:
    if frame[i : i + 1] == b"-":
        return i + 1
    n = len(frame)
    while i < n and frame[i : i + 1] == b"[":
        i += 1
        quoted = False
        while i < n:
            c = frame[i]
            if c == 0x5C:  # backslash escapes the next byte
                i += 2
                continue
            if c == 0x22:
                quoted = not quoted
            elif c == 0x5D and not quoted:
                break
            i += 1
        if i >= n:
            raise RecordError("structured data is not closed")
        i += 1
    return i


def _fhir_audit_event(payload: bytes) -> AccessEvent:
    """The access event of a FHIR AuditEvent JSON payload, through the FHIR readers' normaliser."""
    # Imported here: the FHIR normaliser is a sibling reader's module, needed only when a
    # sender ships FHIR JSON over syslog.
    try:
        from sentinelle.sources import fhir_common
    except ImportError:  # pragma: no cover - the module ships with the package
        raise RecordError("JSON syslog payloads are not supported: no FHIR AuditEvent normaliser") from None
    try:
        resource = msgspec.json.decode(payload, type=fhir_common.AuditEvent)
    except msgspec.ValidationError as exc:
        raise RecordError(f"JSON payload is not a FHIR AuditEvent: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RecordError(f"invalid JSON payload: {exc}") from None
    if resource.resourceType != "AuditEvent":
        raise RecordError(f"JSON payload is a {resource.resourceType or 'resource without type'}, not an AuditEvent")
    return fhir_common.Normaliser().from_full(resource, resource.id or fhir_common.stable_id(payload))


def parse_frame(frame: bytes, origin: str = "", location: str = "") -> AccessEvent:
    """The access event of one syslog frame (header and payload); raises `RecordError`."""
    header, payload = split_header(frame)
    if not payload:
        raise RecordError("syslog frame has no message")
    fallback_time: int | None = None
    if header.timestamp:
        try:
            fallback_time = parse_time(header.timestamp)
        except ValueError:
            fallback_time = None
    if payload[:1] not in (b"<", b"{"):
        start = _PAYLOAD_START.search(payload)
        if start is not None:
            payload = payload[start.start() :]
    if payload[:1] == b"<":
        if b"AuditMessage" not in payload:
            raise RecordError("syslog message is XML but not an ATNA AuditMessage")
        return atna.parse_message(
            payload, origin, location, fallback_time=fallback_time, fallback_source=header.hostname
        )
    if payload[:1] == b"{":
        return _fhir_audit_event(payload)
    msgid = header.msgid or "none"
    raise RecordError(f"syslog message carries no audit record (MSGID {msgid})")


def read(stream: BinaryIO, origin: str, quarantine: Quarantine) -> Iterator[AccessEvent]:
    """Access events of a captured syslog stream; bad frames go to the quarantine."""
    splitter = FrameSplitter()
    frames = 0
    # Junk before the first frame is held: if no frame ever comes the input is not syslog
    # at all (InputFormatError), otherwise it is reported like any other junk.
    held: list[Frame] = []

    def handle(pieces: list[Frame]) -> Iterator[AccessEvent]:
        nonlocal frames
        for piece in pieces:
            if piece.error:
                if frames:
                    quarantine.reject(origin, f"offset {piece.offset}", piece.error, piece.data)
                elif len(held) < 1000:
                    held.append(piece)
                continue
            if frames == 0:
                for junk in held:
                    quarantine.reject(origin, f"offset {junk.offset}", junk.error, junk.data)
                held.clear()
            frames += 1
            location = f"offset {piece.offset}"
            try:
                yield parse_frame(piece.data, origin, location)
            except RecordError as exc:
                quarantine.reject(origin, location, exc.reason, piece.data)

    while True:
        data = stream.read(_BLOCK)
        if not data:
            break
        yield from handle(splitter.feed(data))
    yield from handle(splitter.close())
    if frames == 0 and held:
        raise InputFormatError(origin, "no syslog frame found (expected `<PRI>1 ...` or `LEN <PRI>1 ...`)")
