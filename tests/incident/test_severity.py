"""ENISA severity on the seed cases: the score, the level and the reasoning."""

from __future__ import annotations

from sentinelle.events import category_mask
from sentinelle.incident import Incident, ScopeSummary, assess
from sentinelle.incident.model import HEALTH_CATEGORIES, NIR_CATEGORIES, CategoryCount


def summary(cats: list[str], patients: int = 1000, writes: int = 0) -> ScopeSummary:
    cc = [CategoryCount(c, patients, patients, bool(category_mask([c]) & HEALTH_CATEGORIES),
                        bool(category_mask([c]) & NIR_CATEGORIES)) for c in cats]
    return ScopeSummary(patients=patients, records=patients, events=patients, failed_events=0, attempted_only=0,
                        categories=cc, accounts=[], clients=[], addresses=[], first=0, last=1, health_patients=0,
                        nir_patients=0, writes=writes)


INC = Incident(id="i", title="t", opened=0, aware=0, selectors=[])


def test_normande_sante_identity_and_contact_is_medium() -> None:
    s = assess(summary(["identity", "contact"]), INC)
    assert (s.dpc, s.ei, s.cb, s.score, s.level) == (2.0, 1.0, 0.75, 2.75, "medium")
    assert "établissement de santé" in s.reasoning("fr")[0]
    assert s.reasoning("en")[-1] == "SE = DPC × EI + CB = 2 × 1 + 0.75 = 2.75"


def test_doctolib_specialty_is_high_and_mediboard_allergies_very_high() -> None:
    assert assess(summary(["identity", "contact", "appointment", "specialty"]), INC).level == "high"
    s = assess(summary(["identity", "contact", "allergy", "prescription"]), INC)
    assert (s.score, s.level, s.high_risk) == (4.75, "very_high", True)


def test_leak_writes_and_dpo_adjustments() -> None:
    leaked = Incident(id="i", title="t", opened=0, aware=0, selectors=[], leaked=True, malicious=False,
                      dpc_adjustment=-1, dpc_reason="données anciennes")
    s = assess(summary(["identity"], writes=3), leaked)
    assert (s.dpc, s.cb) == (1.0, 0.75)  # 0.5 unknown recipients + 0.25 integrity
    assert any(f.term == "CB.integrity" for f in s.factors)
    assert assess(summary(["contact"]), INC).ei == 0.75
    assert assess(summary(["clinical"]), INC).ei == 0.5
    assert assess(summary(["identity"]), INC, minors=3).dpc == 3.0
