"""Reads FHIR AuditEvent XML (R4, R5): single resources and Bundles such as ITI-81 responses.

FHIR XML carries values in `value="..."` attributes and repeats elements where JSON has
arrays. Each AuditEvent element is turned into the JSON shape (`fhir_common.AuditEvent`)
and normalised by the same code as JSON, so both formats give the same events.

Safety: audit files come from outside. A document type declaration (`<!DOCTYPE`) is
refused outright, since FHIR never needs one and DTDs are how entity-expansion bombs
and external-entity reads get in; the parser also runs with entity resolution, DTD
loading and network access off and lxml's size limits on.

Bundles are streamed entry by entry: the reader cuts `<entry>...</entry>` out of the
byte stream and parses each one on its own. `lxml.etree.iterparse` would also stream,
but XML cannot be resynchronised after an error, so one garbled entry would lose every
entry after it; cutting first confines the damage to the entry itself.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO, Final, cast

import msgspec
from lxml import etree

from sentinelle.errors import InputFormatError, RecordError
from sentinelle.events import AccessEvent
from sentinelle.sources.fhir_common import AuditEvent, Normaliser, stable_id
from sentinelle.sources.quarantine import Quarantine

__all__ = ["FHIR_NS", "read"]

FHIR_NS: Final = "http://hl7.org/fhir"

#: Bytes looked at for the prologue and the root element.
_HEAD_BYTES = 1 << 20
#: Largest single resource document or Bundle entry read.
_MAX_ITEM_BYTES = 64 << 20
_READ_BYTES = 1 << 20

#: Elements that are arrays in FHIR JSON whatever their count, by (parent, element).
_LISTS_BY_PARENT: Final = frozenset(
    {
        *(
            ("AuditEvent", name)
            for name in ("subtype", "purposeOfEvent", "agent", "entity", "category", "authorization", "basedOn")
        ),
        ("agent", "role"),
        ("agent", "policy"),
        ("agent", "purposeOfUse"),
        ("agent", "authorization"),
        ("source", "type"),
        ("entity", "securityLabel"),
        ("entity", "detail"),
        ("entity", "agent"),
        ("outcome", "detail"),
    }
)
_ALWAYS_LISTS: Final = frozenset({"coding", "extension", "modifierExtension"})
#: Parts of a resource Sentinelle never reads (narrative XHTML, contained resources).
_SKIPPED: Final = frozenset({"text", "contained", "meta", "modifierExtension"})

_TOKEN_RE: Final = re.compile(rb"<!--|<!\[CDATA\[|<\?|<(/?)(?:[A-Za-z_][\w.\-]*:)?entry(?=[\s/>])")
_TOKEN_ENDS: Final = {b"<!--": b"-->", b"<![CDATA[": b"]]>", b"<?": b"?>"}
_ROOT_RE: Final = re.compile(rb"<(?:([A-Za-z_][\w.\-]*):)?([A-Za-z_][\w.\-]*)((?:\s[^>]*)?)/?>")
_NSDECL_RE: Final = re.compile(rb"""\sxmlns(?::([A-Za-z_][\w.\-]*))?\s*=\s*(["'])(.*?)\2""", re.DOTALL)
_FULLURL_RE: Final = re.compile(rb"""<(?:[A-Za-z_][\w.\-]*:)?fullUrl\s+value\s*=\s*(["'])(.*?)\1""")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _value(el: Any, name: str) -> Any:
    """JSON-shaped value of one FHIR XML element."""
    value = el.get("value")
    if value is not None:
        return value  # a primitive (its extensions, if any, are not read)
    return _object(el, name)


def _object(el: Any, name: str) -> dict[str, Any]:
    """JSON-shaped object of a FHIR XML element with child elements."""
    out: dict[str, Any] = {}
    url = el.get("url")
    if url is not None:
        out["url"] = url
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        key = _local(tag)
        if name == "AuditEvent" and key in _SKIPPED:
            continue
        value = _value(child, key)
        if key in _ALWAYS_LISTS or (name, key) in _LISTS_BY_PARENT:
            out.setdefault(key, []).append(value)
        elif key not in out:  # a repeated single element: the first one counts
            out[key] = value
    return out


def audit_event_of(el: Any) -> AuditEvent:
    """Typed AuditEvent of an `<AuditEvent>` element; msgspec.ValidationError if misshapen."""
    shaped = _object(el, "AuditEvent")
    shaped["resourceType"] = "AuditEvent"
    return msgspec.convert(shaped, AuditEvent, strict=False)


class _Reader:
    def __init__(self, origin: str, quarantine: Quarantine) -> None:
        self.origin = origin
        self.quarantine = quarantine
        self.norm = Normaliser()

    def reject(self, location: str, reason: str, raw: bytes) -> None:
        self.quarantine.reject(self.origin, location, reason, raw)

    def resource(self, el: Any, raw: bytes, location: str, fallback_id: str | None) -> Iterator[AccessEvent]:
        """Event of one resource element; non-AuditEvent resources are passed over."""
        try:
            ev = audit_event_of(el)
        except msgspec.ValidationError as e:
            self.reject(location, f"invalid AuditEvent: {e}", raw)
            return
        try:
            yield self.norm.from_full(ev, ev.id or fallback_id or stable_id(raw))
        except RecordError as e:
            self.reject(location, e.reason, raw)

    def document(self, data: bytes) -> Iterator[AccessEvent]:
        try:
            root = etree.fromstring(data, _parser())
        except etree.XMLSyntaxError as e:
            self.reject("document", f"invalid XML: {e}", data)
            return
        name = _local(root.tag)
        if name != "AuditEvent":
            self.reject("document", f"not an AuditEvent: the resource is a {name}", data)
            return
        yield from self.resource(root, data, "document", None)

    def entry(self, fragment: bytes, wrap: tuple[bytes, bytes], k: int) -> Iterator[AccessEvent]:
        location = f"entry {k}"
        try:
            holder = etree.fromstring(wrap[0] + fragment + wrap[1], _parser())
        except etree.XMLSyntaxError as e:
            self.reject(location, f"invalid XML: {e}", fragment)
            return
        for entry in holder:
            if not isinstance(entry.tag, str):
                continue
            for part in entry:
                if isinstance(part.tag, str) and _local(part.tag) == "resource":
                    resource = next((c for c in part if isinstance(c.tag, str)), None)
                    if resource is None or _local(resource.tag) != "AuditEvent":
                        return  # other resources (OperationOutcome, Patient...) are no audit records
                    m = _FULLURL_RE.search(fragment)
                    full_url = m.group(2).decode("utf-8", "replace") if m else None
                    yield from self.resource(resource, fragment, location, full_url)
                    return

    def bundle(self, stream: BinaryIO, wrap: tuple[bytes, bytes]) -> Iterator[AccessEvent]:
        """Entries cut out of the byte stream and parsed one by one (see the module doc)."""
        buf = b""
        pos = 0
        start = -1  # where the open entry starts in `buf`, -1 when none is open
        k = 0
        eof = False
        while True:
            m = _TOKEN_RE.search(buf, pos)
            if m is not None:
                token = m.group(0)
                closer = _TOKEN_ENDS.get(token)
                if closer is not None:
                    end = buf.find(closer, m.end())
                    if end >= 0:
                        pos = end + len(closer)
                        continue
                    if eof or len(buf) - m.start() > _MAX_ITEM_BYTES:
                        # A comment, CDATA or PI that never ends is damage, not markup:
                        # passing over its opener keeps it from swallowing what follows.
                        pos = m.end()
                        continue
                else:
                    gt = buf.find(b">", m.end())
                    if gt >= 0:
                        pos = gt + 1
                        if m.group(1):  # </entry>
                            if start >= 0:
                                k += 1
                                yield from self.entry(buf[start:pos], wrap, k)
                                start = -1
                                buf, pos = buf[pos:], 0
                        elif buf[gt - 1 : gt] != b"/":  # <entry ...> (not <entry/>)
                            if start >= 0:
                                k += 1
                                self.unclosed(buf[start : m.start()], k)
                            start = m.start()
                        else:
                            k += 1  # an empty entry
                        continue
            # Need more bytes: the token (or its end) is not complete in `buf`.
            if eof:
                if start >= 0:
                    k += 1
                    self.reject(f"entry {k}", "invalid XML: the input ends inside this entry", buf[start:])
                return
            if start < 0:
                keep = max(pos, len(buf) - 64) if m is None else m.start()
                buf, pos = buf[keep:], max(0, pos - keep)
            elif len(buf) - start > _MAX_ITEM_BYTES:
                k += 1
                self.reject(f"entry {k}", f"entry larger than {_MAX_ITEM_BYTES >> 20} MB: not read", buf[start:])
                start = -1
                buf, pos = b"", 0
            chunk = stream.read(_READ_BYTES)
            if not chunk:
                eof = True
            buf += chunk

    def unclosed(self, fragment: bytes, k: int) -> None:
        # An entry holding a Bundle holds entries of its own; they are read one by one
        # and the outer entry is passed over. Anything else that opens a new entry
        # before closing is damaged.
        if b"Bundle" not in fragment:
            self.reject(f"entry {k}", "invalid XML: no </entry> before the next <entry>", fragment)


def _root(head: bytes, origin: str) -> tuple[str, bytes]:
    """Local name and start tag of the root element, after checking the prologue."""
    pos = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    while True:
        while pos < len(head) and head[pos : pos + 1] in b" \t\r\n":
            pos += 1
        if head.startswith(b"<?", pos):
            end = head.find(b"?>", pos)
            if end < 0:
                break
            pos = end + 2
        elif head.startswith(b"<!--", pos):
            end = head.find(b"-->", pos)
            if end < 0:
                break
            pos = end + 3
        elif head.startswith(b"<!", pos):
            raise InputFormatError(
                origin,
                "XML with a document type declaration (<!DOCTYPE) is refused: FHIR never needs "
                "one, and DTDs carry entity-expansion and external-entity attacks",
            )
        else:
            m = _ROOT_RE.match(head, pos)
            if m is None:
                break
            prefix = m.group(1)
            namespaces = {p or b"": uri for p, _, uri in _NSDECL_RE.findall(m.group(3))}
            if namespaces.get(prefix or b"") != FHIR_NS.encode():
                name = m.group(2).decode("utf-8", "replace")
                raise InputFormatError(
                    origin, f"not FHIR XML: the root element <{name}> is not in the {FHIR_NS} namespace"
                )
            return m.group(2).decode(), m.group(0)
    raise InputFormatError(origin, "not XML: no root element found at the start of the input")


def read(stream: BinaryIO, origin: str, quarantine: Quarantine) -> Iterator[AccessEvent]:
    """Events of a FHIR XML input: an AuditEvent, a Bundle of them, or another resource.

    InputFormatError when the input is not FHIR XML (no root element, another namespace)
    or declares a DTD; everything after the root element is judged entry by entry.
    """
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(cast(Any, stream), _HEAD_BYTES)
    head = buffered.peek(_HEAD_BYTES)[:_HEAD_BYTES]
    if not head.strip():
        return
    name, start_tag = _root(head, origin)
    reader = _Reader(origin, quarantine)
    if name != "Bundle":
        data = buffered.read(_MAX_ITEM_BYTES + 1)
        if len(data) > _MAX_ITEM_BYTES:
            raise InputFormatError(origin, f"a single resource larger than {_MAX_ITEM_BYTES >> 20} MB")
        yield from reader.document(data)
        return
    # Entries are parsed inside a copy of the Bundle's namespace declarations.
    decls = b"".join(m.group(0) for m in _NSDECL_RE.finditer(start_tag))
    wrap = (b"<entries" + decls + b">", b"</entries>")
    yield from reader.bundle(buffered, wrap)
