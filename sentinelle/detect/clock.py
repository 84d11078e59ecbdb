"""Local time of an event time, by integer arithmetic: hour of day and local day number.

Detectors ask "what hour is it for this account" for every opened patient; building a
`datetime` with a time zone each time would cost more than the rest of the detection.
France follows the EU rule (UTC+1, UTC+2 from the last Sunday of March 01:00 UTC to the
last Sunday of October 01:00 UTC), so the offset of a whole year is two integers,
computed once per year. A fixed offset can be chosen instead (`utc_offset_mode`).
"""

from __future__ import annotations

import calendar

from sentinelle.errors import ConfigError

__all__ = ["DAY", "HOUR", "MINUTE", "LocalClock"]

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000


def _last_sunday_1utc(year: int, month: int) -> int:
    """Milliseconds of the last Sunday of a month at 01:00 UTC (the EU switch instant)."""
    last = calendar.monthrange(year, month)[1]
    weekday = calendar.weekday(year, month, last)  # Monday = 0
    day = last - (weekday + 1) % 7
    return (calendar.timegm((year, month, day, 1, 0, 0)) * 1000)


class LocalClock:
    """Local offset of millisecond times, cached for the year being processed.

    >>> clock = LocalClock("paris")
    >>> clock.hour(1_719_835_200_000)  # 2024-07-01T12:00Z is 14:00 in Paris
    14
    >>> clock.hour(1_704_110_400_000)  # 2024-01-01T12:00Z is 13:00 in Paris
    13
    """

    __slots__ = ("_fixed", "_hi", "_lo", "_off", "_off_summer", "_off_winter", "_paris")

    def __init__(self, mode: str = "paris") -> None:
        self._paris = mode == "paris"
        self._fixed = 0
        if not self._paris:
            try:
                self._fixed = round(float(mode) * HOUR)
            except ValueError as exc:
                raise ConfigError(f"utc_offset_mode: expected 'paris' or hours, got {mode!r}") from exc
        self._off_winter = HOUR
        self._off_summer = 2 * HOUR
        # [_lo, _hi) is the range of times whose offset is `_off`; empty until first use.
        self._lo = 1
        self._hi = 0
        self._off = self._fixed

    def offset(self, t: int) -> int:
        """Offset from UTC, in milliseconds, at time `t`."""
        if self._lo <= t < self._hi:
            return self._off
        if not self._paris:
            self._lo, self._hi, self._off = -(1 << 62), 1 << 62, self._fixed
            return self._fixed
        year = _year_of(t)
        start = _last_sunday_1utc(year, 3)
        end = _last_sunday_1utc(year, 10)
        if t < start:
            self._lo, self._hi, self._off = calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000, start, HOUR
        elif t < end:
            self._lo, self._hi, self._off = start, end, 2 * HOUR
        else:
            self._lo, self._hi, self._off = end, calendar.timegm((year + 1, 1, 1, 0, 0, 0)) * 1000, HOUR
        return self._off

    def span(self, t: int) -> tuple[int, int, int]:
        """Offset at `t` and the range of times [lo, hi) sharing it, for callers that cache it."""
        off = self.offset(t)
        return off, self._lo, self._hi

    def local(self, t: int) -> int:
        """Local wall-clock time of `t` as milliseconds since the epoch (for day and hour arithmetic)."""
        return t + self.offset(t)

    def hour(self, t: int) -> int:
        """Local hour of day, 0-23."""
        return ((t + self.offset(t)) // HOUR) % 24

    def day(self, t: int) -> int:
        """Local day number (days since 1970-01-01 in local time)."""
        return (t + self.offset(t)) // DAY


def _year_of(t: int) -> int:
    """UTC year of a millisecond time, without building a datetime."""
    days = t // DAY
    # Civil-from-days (Howard Hinnant's algorithm), year only.
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return y + (1 if month <= 2 else 0)
