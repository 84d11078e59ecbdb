"""Settings are data: one table, one typed record, and the docs list them all."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from sentinelle.detect import REGISTRY, SETTINGS, Settings, load_settings
from sentinelle.errors import ConfigError

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "detection.md"


def test_table_and_record_agree() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert set(names) == set(Settings.__struct_fields__)
    defaults = Settings()
    for s in SETTINGS:
        value = getattr(defaults, s.name)
        assert value == s.default, f"{s.name}: record default {value!r} != table default {s.default!r}"
        assert len(s.help) > 20 and s.help[0].isupper()


def test_load_settings_overrides_and_refuses_unknown_names() -> None:
    assert load_settings({"alert_threshold": 0.9}).alert_threshold == 0.9
    assert load_settings(None) == Settings()
    with pytest.raises(ConfigError, match="alert_treshold"):
        load_settings({"alert_treshold": 0.9})
    with pytest.raises(ConfigError):
        load_settings({"alert_threshold": "high"})


def test_settings_round_trip_through_toml_shaped_data() -> None:
    data = msgspec.to_builtins(Settings())
    assert load_settings(data) == Settings()


def test_docs_list_every_setting_detector_and_evidence_code() -> None:
    if not DOC.exists():
        pytest.fail("docs/detection.md is missing")
    text = DOC.read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in text]
    assert not missing, f"settings missing from docs/detection.md: {missing}"
    missing = [name for name in REGISTRY if f"`{name}`" not in text]
    assert not missing, f"detectors missing from docs/detection.md: {missing}"
    codes: set[str] = set()
    detectors = ROOT / "sentinelle" / "detect" / "detectors"
    for path in detectors.glob("*.py"):
        codes |= set(re.findall(r'"((?:volume|care|context|automation|api_client|snooping|decoy)\.[a-z_.]+)"',
                                path.read_text()))
    assert codes, "no evidence code found in the detectors' source"
    volume_codes = {f"volume.{w}" for w in ("10min", "hour", "day", "week")}
    missing = sorted(c for c in codes | volume_codes if f"`{c}`" not in text)
    assert not missing, f"evidence codes missing from docs/detection.md: {missing}"
