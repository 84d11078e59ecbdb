"""Local hours without datetime objects: the Europe/Paris rules by integer arithmetic."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sentinelle.detect.clock import LocalClock
from sentinelle.errors import ConfigError

PARIS = ZoneInfo("Europe/Paris")


def test_paris_hours_and_days_match_the_tz_database() -> None:
    clock = LocalClock("paris")
    rng = random.Random(1)
    # the EU rule (last Sundays of March and October at 01:00 UTC) holds since 1996
    times = [rng.randrange(852_076_800_000, 4_102_444_800_000) for _ in range(5000)]
    times += [t for y in (2024, 2025, 2026) for t in _switches(y)]
    for t in times:
        local = datetime.fromtimestamp(t / 1000, tz=PARIS)
        assert clock.hour(t) == local.hour, t
        assert clock.offset(t) == int(local.utcoffset().total_seconds() * 1000), t  # type: ignore[union-attr]


def _switches(year: int) -> list[int]:
    out = []
    for month in (3, 10):
        for day in range(25, 32):
            base = int(datetime(year, month, day, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
            out += [base + k * 900_000 for k in range(8)]
    return out


def test_fixed_offset_mode() -> None:
    clock = LocalClock("1")
    assert clock.hour(1_719_835_200_000) == 13  # 12:00 UTC in summer, yet UTC+1 as asked
    assert LocalClock("-5").hour(0) == 19


def test_bad_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        LocalClock("Europe/Paris")
