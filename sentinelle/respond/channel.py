"""What every alert delivery channel is: a name, a severity floor and one `deliver` method.

Why one method: a channel (webhook, CEF syslog, e-mail, a ticketing system) only knows
how to hand one alert to the outside world. Retries, backoff, the dead-letter log and
the record of what was delivered belong to the dispatcher, so each channel module stays
a short self-contained file and a new channel is one class.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from sentinelle.detect import SEVERITIES, Alert
from sentinelle.errors import SentinelleError

__all__ = ["Channel", "DeliveryError", "severity_at_least"]

_RANK = {name: i for i, name in enumerate(SEVERITIES)}


class DeliveryError(SentinelleError):
    """An alert could not be handed to a channel's destination (said whether retrying can help)."""

    def __init__(self, channel: str, reason: str, *, permanent: bool = False) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason
        self.permanent = permanent


@runtime_checkable
class Channel(Protocol):
    """One way of delivering alerts to people or systems outside Sentinelle."""

    kind: ClassVar[str]
    name: str
    min_severity: str

    def deliver(self, alert: Alert) -> None:
        """Hand one alert over; raise `DeliveryError` (permanent or not) when it did not go through."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def severity_at_least(severity: str, floor: str) -> bool:
    """Whether an alert of `severity` passes a channel's floor.

    >>> severity_at_least("high", "medium"), severity_at_least("low", "medium")
    (True, False)
    """
    return _RANK.get(severity, 0) >= _RANK.get(floor, 0)
