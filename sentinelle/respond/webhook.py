"""Alerts POSTed as JSON to a webhook, signed with HMAC-SHA256 so the receiver can trust them.

Why signed: a webhook endpoint is reachable by anyone who can reach the receiver; the
signature proves the alert came from this Sentinelle and was not altered or replayed.
The scheme is the one Stripe and GitHub receivers already know: a header
`Sentinelle-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`;
the receiver recomputes it (`verify_signature`) and refuses old timestamps.

Retries with backoff and the dead-letter log are the dispatcher's (same for every
channel); this module says which failures are worth retrying: network errors, timeouts,
408, 425, 429 and 5xx answers. Any other 4xx is permanent: sending the same body again
cannot fix it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from typing import ClassVar

import msgspec

from sentinelle.detect import Alert
from sentinelle.respond.channel import DeliveryError

__all__ = ["SIGNATURE_HEADER", "WebhookChannel", "sign", "verify_signature"]

SIGNATURE_HEADER = "Sentinelle-Signature"
_RETRYABLE = frozenset({408, 425, 429})
_encode = msgspec.json.Encoder().encode


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header value of `body` sent at `timestamp` (unix seconds).

    >>> sign(b"k", b"{}", 1700000000)[:13]
    't=1700000000,'
    """
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, tolerance_s: float = 300.0,
                     now: float | None = None) -> bool:
    """Whether `header` is a valid signature of `body` made within `tolerance_s` of now.

    For receivers (and the tests). Compares in constant time.

    >>> h = sign(b"k", b"{}", 1700000000)
    >>> verify_signature(b"k", h, b"{}", now=1700000010), verify_signature(b"x", h, b"{}", now=1700000010)
    (True, False)
    """
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts.get("t", ""))
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookChannel:
    """POSTs each alert (the alert contract as JSON) to `url`, signed with `secret`."""

    kind: ClassVar[str] = "webhook"

    def __init__(self, url: str, secret: str | bytes, *, name: str = "webhook", min_severity: str = "low",
                 timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s), got {url!r}")
        self.url = url
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.name = name
        self.min_severity = min_severity
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})

    def body(self, alert: Alert) -> bytes:
        """The bytes POSTed for an alert."""
        return _encode(alert)

    def deliver(self, alert: Alert) -> None:
        """POST one alert; raise `DeliveryError` (permanent for 4xx other than 408/425/429)."""
        body = self.body(alert)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sentinelle-webhook/1",
            "Idempotency-Key": alert.id,
            "Sentinelle-Alert": alert.id,
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
            **self.headers,
        }
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read(1 << 16)
        except urllib.error.HTTPError as exc:
            code = exc.code
            exc.close()
            permanent = 400 <= code < 500 and code not in _RETRYABLE
            raise DeliveryError(self.name, f"the receiver answered HTTP {code}", permanent=permanent) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(self.name, f"cannot reach the receiver: {reason}") from None

    def close(self) -> None:
        """Nothing to release: one connection per POST."""
