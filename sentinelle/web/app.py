"""The HTTP API: FHIR-style intake, alerts for analysts, metrics for Prometheus.

A thin layer over `sentinelle.service.Service`: each route checks the token, the content
type and the body size, hands the body to the service, and turns the result into an
HTTP answer (FHIR OperationOutcome for intake and errors). No decoding, ledger or
detection logic lives here.

Intake answers 2xx only once every accepted event is durable in the ledger; 429 with
Retry-After when the intake queue is nearly full (the body is not read); 413 for a body
over the limit, 415 for a content type the route does not take, 400 when the body
cannot be read at all (truncated JSON, invalid UTF-8, malformed XML, DTDs), 422 when it
reads but holds no usable record. A bulk body with some bad lines is accepted for the
good ones (200) and the bad ones are listed, by line, in the OperationOutcome and kept
in the quarantine.

Every call is authenticated with a bearer token (source tokens send events, analyst
tokens read alerts and proofs, metrics tokens scrape /metrics, admin tokens do all)
and recorded in the service's audit log (who, when, what, answer).
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at
# definition time, and the `Annotated` dependencies below are local to `create_app`.
import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentinelle import __version__
from sentinelle.errors import ConfigError
from sentinelle.events import format_time, parse_time
from sentinelle.service import BusyError, ClosingError, Format, IngestResult, Principal, Service
from sentinelle.web.outcome import FHIR_JSON, Problem, issue, outcome

__all__ = ["create_app"]

_encode = msgspec.json.Encoder().encode

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir")
NDJSON_TYPES = ("application/fhir+ndjson", "application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/x-jsonlines", "application/jsonlines")
CSV_TYPES = ("text/csv",)
SYSLOG_TYPES = ("text/plain", "application/octet-stream")
_DRAIN_LIMIT = 256 << 20
_SYNTAX_WORDS = ("invalid JSON", "invalid UTF-8", "malformed XML", "not JSON", "not XML", "truncated",
                 "document type declaration", "DTD", "invalid XML")

_REASONS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "too_large",
            415: "unsupported_media", 422: "unprocessable", 429: "busy", 503: "closing"}


class _KindOnly(msgspec.Struct):
    resourceType: str | None = None


_kind_decoder = msgspec.json.Decoder(_KindOnly)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None,
          media_type: str = "application/json") -> Response:
    return Response(_encode(body), status_code=status, headers=headers, media_type=media_type)


def _intake_doc(types: tuple[str, ...], what: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": what,
                            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in types}}}


_OUTCOME_EXAMPLE = outcome([issue("information", "informational",
                                  "3 events accepted and durable in the ledger: 3 new, 0 already stored")])
_INTAKE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Accepted (durable in the ledger); refused records listed as issues",
          "content": {FHIR_JSON: {"example": _OUTCOME_EXAMPLE}}},
    400: {"description": "The body cannot be read (truncated JSON, invalid UTF-8, malformed XML, DTD)"},
    401: {"description": "No or unknown bearer token"},
    403: {"description": "The token may not send events"},
    413: {"description": "Body over the size limit"},
    415: {"description": "Content type (or encoding) not taken by this route"},
    422: {"description": "Readable, but no usable record"},
    429: {"description": "Intake queue nearly full: retry after the Retry-After header's seconds"},
    503: {"description": "The service is stopping or its ledger cannot commit"},
}


class _AuditMiddleware:
    """Records every API call (who, when, what, answer) through `Service.audit_call`."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            state = scope.get("state") or {}
            principal: Principal | None = state.get("principal")
            client = scope.get("client")
            query = scope.get("query_string", b"").decode("latin-1")
            self.service.audit_call(
                who=principal.name if principal else "anonymous", role=principal.role if principal else "",
                method=scope.get("method", ""), path=scope.get("path", ""), query=query, status=status,
                address=client[0] if client else "", seconds=time.perf_counter() - t0,
                detail=state.get("audit"),
            )


def create_app(service: Service) -> FastAPI:
    """The FastAPI application of one service."""
    cfg = service.config.http
    app = FastAPI(
        title="Sentinelle",
        version=__version__,
        description="Audit-event intake (FHIR AuditEvent, NDJSON, ATNA, syslog, mapped CSV/JSON lines) into a "
                    "tamper-evident ledger, real-time detection of misuse of patient records, and alerts. "
                    "Every route needs a bearer token. See docs/service.md.",
        openapi_tags=[
            {"name": "intake", "description": "Send audit events (source tokens)."},
            {"name": "alerts", "description": "Read alerts (analyst tokens)."},
            {"name": "ledger", "description": "Signed checkpoints and inclusion proofs (analyst tokens)."},
            {"name": "operations", "description": "Metrics and health."},
        ],
    )
    bearer = HTTPBearer(auto_error=False, description="A token of the service's tokens file.")

    def role(*roles: str) -> Callable[..., Awaitable[Principal]]:
        async def check(request: Request,
                        creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None) -> Principal:
            challenge = {"WWW-Authenticate": 'Bearer realm="sentinelle"'}
            if creds is None:
                raise Problem(401, "login", "missing bearer token (Authorization: Bearer <token>)", headers=challenge)
            principal = service.tokens.authenticate(creds.credentials)
            if principal is None:
                raise Problem(401, "login", "unknown bearer token", headers=challenge)
            request.state.principal = principal
            if principal.role != "admin" and principal.role not in roles:
                raise Problem(403, "forbidden", f"token {principal.name!r} has role {principal.role!r}; "
                              f"this route needs {' or '.join(roles)}")
            return principal

        return check

    Source = Annotated[Principal, Depends(role("source"))]
    Analyst = Annotated[Principal, Depends(role("analyst"))]
    Scraper = Annotated[Principal, Depends(role("metrics", "analyst"))]

    # ---- errors ------------------------------------------------------------------------
    def refused(status: int) -> None:
        service.metrics.refused.labels(_REASONS.get(status, str(status))).inc()

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        refused(exc.status)
        return _json(exc.body(), exc.status, exc.headers, FHIR_JSON)

    @app.exception_handler(BusyError)
    async def on_busy(request: Request, exc: BusyError) -> Response:
        refused(429)
        body = outcome([issue("error", "throttled", f"{exc}: retry after {exc.retry_after} s")])
        return _json(body, 429, {"Retry-After": str(exc.retry_after)}, FHIR_JSON)

    @app.exception_handler(ClosingError)
    async def on_closing(request: Request, exc: ClosingError) -> Response:
        refused(503)
        return _json(outcome([issue("fatal", "transient", str(exc))]), 503, {"Retry-After": "5"}, FHIR_JSON)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        refused(exc.status_code)
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return _json(outcome([issue("error", code, str(exc.detail))]), exc.status_code,
                     dict(exc.headers or {}), FHIR_JSON)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        refused(400)
        issues = [issue("error", "invalid", str(e.get("msg", "")), ".".join(str(x) for x in e.get("loc", ())))
                  for e in exc.errors()]
        return _json(outcome(issues), 400, None, FHIR_JSON)

    app.add_middleware(_AuditMiddleware, service=service)

    # ---- intake helpers --------------------------------------------------------------
    def media(request: Request, allowed: dict[str, Format]) -> Format:
        raw = request.headers.get("content-type", "")
        mtype, _, params = raw.partition(";")
        mtype = mtype.strip().lower()
        fmt = allowed.get(mtype)
        if fmt is None:
            raise Problem(415, "not-supported", f"content type {mtype or '(none)'!r} is not taken here; "
                          f"send one of {', '.join(allowed)}")
        for p in params.split(";"):
            key, _, value = p.partition("=")
            if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8") \
                    and fmt in ("fhir-json", "ndjson"):
                raise Problem(415, "not-supported", f"charset {value.strip()!r} is not taken; send UTF-8")
        enc = request.headers.get("content-encoding", "identity").strip().lower()
        if enc not in ("identity", "gzip", ""):
            raise Problem(415, "not-supported", f"content encoding {enc!r} is not taken; send gzip or none")
        return fmt

    async def read_body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise Problem(400, "structure", f"invalid Content-Length {declared!r}") from None
            if size > limit:
                await drain(request, size)
                raise Problem(413, "too-costly", f"body of {size:,} bytes is over the limit of {limit:,} bytes")
        # The chunks are joined once at the end: growing one buffer copies a bulk body
        # several times over, and copying it again into bytes once more.
        chunks: list[bytes] = []
        seen = 0
        async for chunk in request.stream():
            chunks.append(chunk)
            seen += len(chunk)
            if seen > limit:
                await drain(request, seen)
                raise Problem(413, "too-costly", f"body over the limit of {limit:,} bytes")
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if request.headers.get("content-encoding", "").strip().lower() == "gzip":
            data = gunzip(data, limit)
        return data

    async def drain(request: Request, seen: int) -> None:
        # Reading the rest lets the client see the 413 instead of a reset while it uploads.
        if seen > _DRAIN_LIMIT:
            return
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > _DRAIN_LIMIT:
                    break
        except Exception:  # the client gave up: nothing to answer to
            return

    def gunzip(data: bytes, limit: int) -> bytes:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = d.decompress(data, limit + 1)
        except zlib.error as exc:
            raise Problem(400, "structure", f"invalid gzip body: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise Problem(413, "too-costly", f"body over the limit of {limit:,} bytes once decompressed")
        if not d.eof:
            raise Problem(400, "structure", "gzip body is truncated")
        return out

    def check_json(body: bytes, expected: str) -> None:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as u:
            raise Problem(400, "structure", f"invalid UTF-8: byte 0x{body[u.start]:02x} at offset {u.start}",
                          location=f"offset {u.start}") from None
        if not body.strip():
            raise Problem(400, "structure", "empty body: no resource")
        try:
            kind = _kind_decoder.decode(body).resourceType
        except msgspec.ValidationError:
            raise Problem(422, "structure", f"not a FHIR resource: expected a JSON object ({expected})") from None
        except msgspec.DecodeError as exc:
            raise Problem(400, "structure", f"invalid JSON: {_json_reason(str(exc))}") from None
        if kind != expected:
            raise Problem(422, "invalid", f"expected a {expected}, got {kind or 'an object without resourceType'}")

    def origin_of(request: Request, principal: Principal) -> str:
        client = request.client
        return f"http {principal.name}@{client.host if client else '?'}"

    async def ingest(request: Request, principal: Principal, fmt: Format, limit: int, *, created: bool = False,
                     expected: str = "", mapping: str | None = None) -> Response:
        try:
            service.admit()
        except (BusyError, ClosingError):
            # Read (and drop) the body, so that the client, still uploading, gets the answer.
            await drain(request, 0)
            raise
        body = await read_body(request, limit)
        if expected and fmt == "fhir-json":
            check_json(body, expected)
        if not body.strip():
            raise Problem(400, "structure", "empty body: no event")
        result = await service.ingest(fmt, body, principal, origin_of(request, principal), mapping)
        request.state.audit = {"accepted": result.accepted, "new": result.new, "rejected": result.rejected}
        return ingest_response(result, created)

    def ingest_response(result: IngestResult, created: bool) -> Response:
        issues = [issue("error", "invalid", reason, location) for location, reason in result.issues]
        if result.rejected > len(result.issues):
            issues.append(issue("warning", "informational",
                                f"{result.rejected - len(result.issues):,} more records refused (in the quarantine)"))
        headers = {"X-Sentinelle-Accepted": str(result.accepted), "X-Sentinelle-New": str(result.new),
                   "X-Sentinelle-Rejected": str(result.rejected)}
        if result.error:
            issues.insert(0, issue("error", "structure", result.error))
        if not result.accepted:
            reasons = [result.error] + [r for _, r in result.issues]
            syntax = any(w.lower() in r.lower() for r in reasons for w in _SYNTAX_WORDS)
            if not issues:
                issues = [issue("error", "required", "no event in the body")]
            return _json(outcome(issues), 400 if syntax else 422, headers, FHIR_JSON)
        text = (f"{result.accepted:,} event{'s' if result.accepted != 1 else ''} accepted and durable in the "
                f"ledger: {result.new:,} new, {result.duplicates:,} already stored")
        if result.rejected:
            text += f"; {result.rejected:,} refused"
        status = 201 if created and result.new else 200
        return _json(outcome([issue("information", "informational", text), *issues]), status, headers, FHIR_JSON)

    # ---- intake routes ---------------------------------------------------------------
    json_or_xml: dict[str, Format] = {**dict.fromkeys(JSON_TYPES, "fhir-json"), **dict.fromkeys(XML_TYPES, "fhir-xml")}
    ndjson: dict[str, Format] = dict.fromkeys(NDJSON_TYPES, "ndjson")

    @app.post("/fhir/AuditEvent", tags=["intake"], status_code=201, responses=_INTAKE_RESPONSES,
              openapi_extra=_intake_doc(JSON_TYPES + XML_TYPES, "One FHIR AuditEvent (R4, R5 or STU3), JSON or XML."),
              summary="Record one AuditEvent")
    async def post_audit_event(request: Request, principal: Source) -> Response:
        """Create one AuditEvent. 201 when new, 200 when it was already stored (idempotent on its id)."""
        return await ingest(request, principal, media(request, json_or_xml), cfg.max_resource_bytes, created=True,
                            expected="AuditEvent")

    @app.post("/fhir", tags=["intake"], responses=_INTAKE_RESPONSES, summary="Record a Bundle of AuditEvents",
              openapi_extra=_intake_doc(JSON_TYPES + XML_TYPES, "A FHIR Bundle (batch, transaction, collection, "
                                        "searchset) whose AuditEvent entries are recorded; other entries skipped."))
    async def post_bundle(request: Request, principal: Source) -> Response:
        """Record the AuditEvents of a Bundle; refused entries are listed by entry number."""
        return await ingest(request, principal, media(request, json_or_xml), cfg.max_body_bytes, expected="Bundle")

    bulk_doc = _intake_doc(NDJSON_TYPES, "FHIR AuditEvent NDJSON, one resource per line (gzip allowed).")

    @app.post("/fhir/AuditEvent/$bulk", tags=["intake"], responses=_INTAKE_RESPONSES, openapi_extra=bulk_doc,
              summary="Bulk NDJSON upload")
    async def post_bulk(request: Request, principal: Source) -> Response:
        """Record AuditEvents, one per line; bad lines are refused by line number, the others kept."""
        return await ingest(request, principal, media(request, ndjson), cfg.max_body_bytes)

    @app.post("/ingest/ndjson", tags=["intake"], responses=_INTAKE_RESPONSES, openapi_extra=bulk_doc,
              summary="Bulk NDJSON upload (alias)")
    async def post_ndjson(request: Request, principal: Source) -> Response:
        """Same as POST /fhir/AuditEvent/$bulk."""
        return await ingest(request, principal, media(request, ndjson), cfg.max_body_bytes)

    @app.post("/ingest/atna", tags=["intake"], responses=_INTAKE_RESPONSES,
              openapi_extra=_intake_doc(XML_TYPES, "DICOM / IHE ATNA audit messages (<AuditMessage>), one or many."),
              summary="DICOM audit messages")
    async def post_atna(request: Request, principal: Source) -> Response:
        """Record DICOM PS3.15 A.5 audit messages; refused ones are listed by byte offset."""
        return await ingest(request, principal, media(request, dict.fromkeys(XML_TYPES, "atna")), cfg.max_body_bytes)

    @app.post("/ingest/syslog", tags=["intake"], responses=_INTAKE_RESPONSES,
              openapi_extra=_intake_doc(SYSLOG_TYPES, "Captured syslog: octet-counted or newline-framed RFC 5424 "
                                        "frames carrying ATNA XML or FHIR JSON."),
              summary="Captured syslog frames")
    async def post_syslog(request: Request, principal: Source) -> Response:
        """Record the audit messages of captured syslog frames (a file as it was on the wire)."""
        return await ingest(request, principal, media(request, dict.fromkeys(SYSLOG_TYPES, "syslog")),
                            cfg.max_body_bytes)

    @app.post("/ingest/{mapping}", tags=["intake"], responses=_INTAKE_RESPONSES,
              openapi_extra=_intake_doc(CSV_TYPES + NDJSON_TYPES, "CSV or JSON lines read through the named mapping."),
              summary="CSV or JSON lines through a named mapping")
    async def post_mapped(request: Request, principal: Source, mapping: str) -> Response:
        """Record rows of a CSV or JSON-lines export through a mapping (configured or shipped, e.g. dpi_csv_fr)."""
        try:
            m = service.mapping(mapping)
        except ConfigError:
            raise Problem(404, "not-found", f"no mapping named {mapping!r}") from None
        types = CSV_TYPES if m.format == "csv" else NDJSON_TYPES
        media(request, dict.fromkeys(types, "mapped"))
        return await ingest(request, principal, "mapped", cfg.max_body_bytes, mapping=mapping)

    # ---- alerts ------------------------------------------------------------------------
    def when(value: str | None, name: str) -> int | None:
        if not value:
            return None
        if value.isdigit():
            return int(value)
        try:
            return parse_time(value)
        except ValueError:
            raise Problem(400, "invalid", f"{name}: expected ISO 8601 or milliseconds, got {value!r}") from None

    def split(values: list[str] | None) -> list[str]:
        return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]

    @app.get("/alerts", tags=["alerts"], summary="List alerts, newest first")
    async def get_alerts(
        request: Request,
        principal: Analyst,
        severity: Annotated[list[str] | None, Query(description="low, medium, high, critical")] = None,
        min_severity: Annotated[str, Query(description="at least this severity")] = "",
        kind: Annotated[list[str] | None, Query(description="detector kind (repeat or comma)")] = None,
        account: Annotated[str, Query(description="the account alerted")] = "",
        episode: Annotated[str, Query(description="one episode's versions")] = "",
        since: Annotated[str | None, Query(description="alert time from (ISO 8601 or ms)")] = None,
        until: Annotated[str | None, Query(description="alert time before (ISO 8601 or ms)")] = None,
        latest: Annotated[bool, Query(description="only the newest version of each episode")] = True,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[int | None, Query(description="the `next` value of the previous page")] = None,
    ) -> Response:
        """Alerts (the alert contract, plus `raised`: when the service raised it), filtered and paged."""
        args = dict(severity=split(severity), min_severity=min_severity, kind=split(kind), account=account,
                    episode=episode, since_ms=when(since, "since"), until_ms=when(until, "until"), latest=latest,
                    limit=limit, cursor=cursor)
        page = await asyncio.to_thread(lambda: service.store.query(**args))  # type: ignore[arg-type]
        items = []
        for s in page.items:
            d = msgspec.to_builtins(s.alert)
            d["raised"] = format_time(s.raised_ms)
            d["n"] = s.n
            items.append(d)
        nxt = None
        if page.next is not None:
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
            nxt = "/alerts?" + urlencode([*params, ("cursor", str(page.next))])
        request.state.audit = {"returned": len(items)}
        return _json({"alerts": items, "count": len(items), "next": nxt, "cursor": page.next})

    @app.get("/alerts/{alert_id}", tags=["alerts"], summary="One alert version, with its deliveries")
    async def get_alert(request: Request, principal: Analyst, alert_id: str) -> Response:
        """One alert version by id, with the state of its delivery on each channel."""
        found = await asyncio.to_thread(service.store.get, alert_id)
        if found is None:
            raise Problem(404, "not-found", f"no alert {alert_id!r}")
        d = msgspec.to_builtins(found.alert)
        d["raised"] = format_time(found.raised_ms)
        d["n"] = found.n
        d["deliveries"] = {ch: {"state": st, "attempts": n, "error": err}
                           for ch, (st, n, err) in service.store.deliveries(found.n).items()}
        return _json(d)

    # ---- ledger ------------------------------------------------------------------------
    @app.get("/ledger/checkpoint", tags=["ledger"], summary="The latest signed checkpoint")
    async def get_checkpoint(principal: Analyst) -> Response:
        """The latest signed tree head (RFC 9162 style), to compare with an outside witness."""
        cp = service.ledger.last_checkpoint
        if cp is None:
            raise Problem(404, "not-found", "no checkpoint signed yet")
        return _json(msgspec.to_builtins(cp))

    @app.get("/ledger/proof", tags=["ledger"], summary="Inclusion proof of one event")
    async def get_proof(principal: Analyst, source: str, id: str) -> Response:
        """The RFC 9162 audit path of the event (source, id) against the latest checkpoint covering it."""
        try:
            proof = await asyncio.to_thread(service.ledger.inclusion_proof, event_id=id, source=source)
        except Exception as exc:
            raise Problem(404, "not-found", f"no proof for event {id!r} of {source!r}: {exc}") from None
        return _json(msgspec.to_builtins(proof))

    # ---- operations ----------------------------------------------------------------------
    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def get_metrics(principal: Scraper) -> Response:
        """Events in, quarantined, queue, lag, alerts, deliveries, ledger size (Prometheus text format)."""
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", tags=["operations"], summary="Liveness (no token needed, no data)")
    async def get_health() -> Response:
        """200 while the service takes events, 503 while it stops."""
        if service.intake.closed:
            return _json({"status": "stopping"}, 503)
        return _json({"status": "ok"})

    return app


def _json_reason(message: str) -> str:
    if "truncated" in message:
        return "truncated: the body ends before the JSON value does"
    return message
