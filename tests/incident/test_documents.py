"""The HIPAA variant's rules and the PDF layer's fonts."""

from __future__ import annotations

import io

from pypdf import PdfReader

from sentinelle.incident import Establishment, Incident, ScopeSummary, hipaa_report_html, html_to_pdf
from sentinelle.incident.model import ActorCount, CategoryCount

EST = Establishment(name="Sentinel General Hospital", country="US", timezone="America/New_York")


def summary(n: int) -> ScopeSummary:
    return ScopeSummary(patients=n, records=n, events=n, failed_events=0, attempted_only=0,
                        categories=[CategoryCount("identity", n, n, False, False),
                                    CategoryCount("clinical", n // 2, n // 2, True, False)],
                        accounts=[ActorCount("svc-export", n, n, 1_738_000_000_000, 1_738_100_000_000, 0, "service",
                                             "", "application")],
                        clients=[], addresses=[], first=1_738_000_000_000, last=1_738_100_000_000,
                        health_patients=n // 2, nir_patients=0)


INC = Incident(id="INC-1", title="t", opened=1_738_200_000_000, aware=1_738_200_000_000, selectors=[])


def test_hipaa_500_person_rule() -> None:
    big = hipaa_report_html(INC, summary(1200), EST, now=INC.aware, states={"NY": 900, "NJ": 300})
    assert "500 or more" in big and "required in: NY" in big and "reportable breach" in big
    small = hipaa_report_html(INC, summary(40), EST, now=INC.aware)
    assert "fewer than 500" in small and "not required" in small and "March 1, 2026" not in small
    assert "1 March 2026" in small  # the annual log is due 60 days after the end of the year
    assert "Évaluation de notification HIPAA" in hipaa_report_html(INC, summary(40), EST, now=INC.aware, lang="fr")


def test_pdf_keeps_french_and_replaces_what_the_base_font_lacks() -> None:
    html = ("<html><head><style>p{}</style></head><body><h1>Œuvre – «\u00a0été\u00a0» ≥ 5</h1>"
            "<p>Ça coûte 10\u202f€</p><ul><li>un</li></ul><table><tr><th>a</th><th>b</th></tr>"
            "<tr><td>Nguyễn</td><td>x</td></tr></table></body></html>")
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(html_to_pdf(html))).pages).split())
    for needle in ("Œuvre", "été", ">= 5", "Ça coûte 10", "€", "un", "Nguyen"):
        assert needle in text, needle
    assert "p{}" not in text
