"""The access event: time conversion, category masks, and the compact layout."""

from __future__ import annotations

import doctest
import gc

import msgspec
import pytest

import sentinelle.events as events_module
from sentinelle.events import AccessEvent, Category, category_mask, category_names, format_time, parse_time


def test_doctests() -> None:
    result = doctest.testmod(events_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-01-02T03:04:05.678Z", 1704164645678),
        ("2024-01-02T04:04:05.678+01:00", 1704164645678),
        ("2024-01-02T03:04:05", 1704164645000),
        ("2015-03-05T12:52:31.358+02:00", 1425552751358),
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


def test_format_time_round_trip() -> None:
    for ms in (0, 1704164645678, 1425552751358):
        assert parse_time(format_time(ms)) == ms


def test_category_mask_round_trip() -> None:
    names = ["identity", "national_id", "prescription", "billing"]
    mask = category_mask(names)
    assert category_names(mask) == names
    assert mask == Category.IDENTITY | Category.NATIONAL_ID | Category.PRESCRIPTION | Category.BILLING
    with pytest.raises(KeyError):
        category_mask(["not-a-category"])


def test_event_is_compact_and_untracked() -> None:
    e = AccessEvent(id="1", time=1, account="a", action="read", patients=("Patient/1",), categories=3)
    assert not gc.is_tracked(e), "millions of events must not burden the garbage collector"
    assert msgspec.json.decode(msgspec.json.encode(e), type=AccessEvent) == e
    # defaults are omitted so stored events stay small
    assert b"outcome" not in msgspec.json.encode(e)
