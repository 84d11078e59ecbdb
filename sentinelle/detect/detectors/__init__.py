"""The detectors, one module each, and the registry the engine reads.

A third-party detector subclasses `Detector` and is added with `register`; the engine,
the compliance tests and the docs all iterate over `REGISTRY`.
"""

from __future__ import annotations

from sentinelle.detect.detectors.api_client import ApiClientDetector
from sentinelle.detect.detectors.automation import AutomationDetector
from sentinelle.detect.detectors.base import ContextLike, Detector, Observation
from sentinelle.detect.detectors.care import CareDetector
from sentinelle.detect.detectors.context import ContextDetector
from sentinelle.detect.detectors.decoy import DecoyDetector
from sentinelle.detect.detectors.snooping import SnoopingDetector
from sentinelle.detect.detectors.volume import VolumeDetector

__all__ = ["REGISTRY", "ContextLike", "Detector", "Observation", "register"]

#: Detector name -> class, in the order the engine calls them.
REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Add a detector class to the registry (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


for _cls in (
    DecoyDetector,
    SnoopingDetector,
    VolumeDetector,
    CareDetector,
    ContextDetector,
    AutomationDetector,
    ApiClientDetector,
):
    register(_cls)
