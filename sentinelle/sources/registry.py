"""Finds the format of each input (file, directory, gzip, stdin) and dispatches to its reader.

Formats are recognised from the first bytes, not from file names, because audit
exports are often named `*.log` or `*.txt` whatever they hold.
"""

from __future__ import annotations

import gzip
import importlib
import io
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from sentinelle.errors import InputFormatError
from sentinelle.events import AccessEvent
from sentinelle.sources.quarantine import Quarantine

__all__ = ["FORMATS", "open_events", "read_stream", "sniff_format"]

Reader = Callable[[BinaryIO, str, Quarantine], Iterator[AccessEvent]]

#: format name -> module under `sentinelle.sources` whose `read` function reads it.
FORMATS: dict[str, str] = {
    "fhir-json": "fhir_json",
    "fhir-xml": "fhir_xml",
    "atna-xml": "atna",
    "syslog": "syslog",
    "mapped": "mapped",
}

_SYSLOG_START = re.compile(rb"^(?:\d{1,9} )?<\d{1,3}>\d? ?")
_SNIFF_BYTES = 8192


def _reader(fmt: str) -> Reader:
    module = importlib.import_module(f"sentinelle.sources.{FORMATS[fmt]}")
    reader: Reader = module.read
    return reader


def sniff_format(head: bytes) -> str | None:
    """Format name of an input from its first bytes, or None when unrecognised."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        return None
    if text[:1] in (b"{", b"["):
        return "fhir-json"
    if _SYSLOG_START.match(text):
        return "syslog"
    if text[:1] == b"<":
        if b"<AuditMessage" in head:
            return "atna-xml"
        if b"hl7.org/fhir" in head or b"<AuditEvent" in head or b"<Bundle" in head:
            return "fhir-xml"
    return None


def _open_binary(path: Path) -> BinaryIO:
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        # Reopen by name: a GzipFile given a fileobj never closes it.
        raw.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


def _buffered(stream: BinaryIO) -> io.BufferedReader:
    """A reader that can peek at the first bytes without consuming them."""
    if isinstance(stream, io.BufferedReader):
        return stream
    return io.BufferedReader(cast(io.RawIOBase, stream), 1 << 20)


def read_stream(
    stream: BinaryIO,
    origin: str,
    quarantine: Quarantine,
    fmt: str = "auto",
    mapping: Any = None,
) -> Iterator[AccessEvent]:
    """Events of one stream, in the given format or the one its first bytes show."""
    buffered = _buffered(stream)
    head = buffered.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
    if head[:2] == b"\x1f\x8b":
        buffered = _buffered(cast(BinaryIO, gzip.GzipFile(fileobj=buffered, mode="rb")))
        head = buffered.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
    if mapping is not None and fmt in ("auto", "mapped"):
        from sentinelle.sources import mapped

        yield from mapped.read_mapped(buffered, origin, quarantine, mapping)
        return
    if fmt == "auto":
        if not head.strip():
            return
        found = sniff_format(head)
        if found is None:
            raise InputFormatError(
                origin,
                "not a supported audit format (FHIR AuditEvent JSON/XML, DICOM audit XML, "
                "RFC 5424 syslog); for JSON lines or CSV of another shape give --mapping",
            )
        fmt = found
    if fmt not in FORMATS:
        raise InputFormatError(origin, f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    yield from _reader(fmt)(cast(BinaryIO, buffered), origin, quarantine)


def _expand(paths: Iterable[str | Path]) -> Iterator[Path | None]:
    for p in paths:
        if str(p) == "-":
            yield None
            continue
        path = Path(p)
        if path.is_dir():
            # Hidden files and everything under hidden folders (.git, .cache) are skipped.
            yield from sorted(
                f
                for f in path.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
        elif path.exists():
            yield path
        else:
            raise InputFormatError(str(path), "no such file or directory")


def open_events(
    paths: Iterable[str | Path],
    quarantine: Quarantine,
    fmt: str = "auto",
    mapping: Any = None,
) -> Iterator[AccessEvent]:
    """Events of every input in turn: files, directories (recursively), gzip, `-` for stdin."""
    for path in _expand(paths):
        if path is None:
            yield from read_stream(sys.stdin.buffer, "<stdin>", quarantine, fmt, mapping)
            continue
        with _open_binary(path) as stream:
            yield from read_stream(stream, str(path), quarantine, fmt, mapping)
