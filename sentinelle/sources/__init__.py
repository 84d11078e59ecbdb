"""Sources: readers that turn what health systems emit into `AccessEvent`s.

Every reader has the same shape, `read(stream, origin, quarantine) -> Iterator[AccessEvent]`:
it streams (constant memory), sets bad records aside in the quarantine with where
and why, and raises `InputFormatError` only when the whole input is not its format.
`open_events` finds the format of each input and chains them.
"""

from __future__ import annotations

from sentinelle.sources.quarantine import Quarantine, Rejected
from sentinelle.sources.registry import FORMATS, open_events, read_stream, sniff_format

__all__ = ["FORMATS", "Quarantine", "Rejected", "open_events", "read_stream", "sniff_format"]
