"""Response: where alerts go once detection raised them.

One module per channel (`webhook`, `cef`, `email`), each a class with one `deliver`
method; the `Dispatcher` runs them (a thread each, retries with backoff, dead-letter
log); the `AlertStore` keeps every alert version for the API (`GET /alerts`) and
records which deliveries are done, so nothing is lost or sent twice across restarts.
See docs/service.md.
"""

from __future__ import annotations

from sentinelle.respond.cef import CefChannel, format_cef, format_syslog
from sentinelle.respond.channel import Channel, DeliveryError, severity_at_least
from sentinelle.respond.dispatch import DeadLetter, Dispatcher
from sentinelle.respond.email import EmailChannel, render_email
from sentinelle.respond.store import AlertPage, AlertStore, StoredAlert
from sentinelle.respond.webhook import SIGNATURE_HEADER, WebhookChannel, sign, verify_signature

__all__ = [
    "SIGNATURE_HEADER",
    "AlertPage",
    "AlertStore",
    "CefChannel",
    "Channel",
    "DeadLetter",
    "DeliveryError",
    "Dispatcher",
    "EmailChannel",
    "StoredAlert",
    "WebhookChannel",
    "format_cef",
    "format_syslog",
    "render_email",
    "severity_at_least",
    "sign",
    "verify_signature",
]
