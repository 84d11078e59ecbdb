"""The GDPR Art. 33 notification draft for the CNIL, and the HIPAA breach report variant.

Why a draft generated from the scope: the CNIL's online form asks for the nature of the
breach, the categories and approximate numbers of persons and records, the likely
consequences, the measures taken and proposed, the DPO's contact and whether the persons
are informed, within 72 hours of awareness. Everything the audit trail can answer is
filled in from the exact scope (counts, categories, accounts, addresses, dates); what
only the establishment knows is marked "à compléter". The HIPAA variant (45 CFR
164.400-414) carries the four-factor risk assessment, the 60-day and 500-person rules and
the fields of the HHS breach portal, for US users.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinelle.incident.model import Establishment, Incident, ScopeSummary, clock
from sentinelle.incident.pdf import html_to_pdf, render_html
from sentinelle.incident.severity import Severity, assess
from sentinelle.incident.texts import check_lang, label

__all__ = [
    "HIPAA_DAYS",
    "HIPAA_MEDIA_THRESHOLD",
    "cnil_notification_html",
    "consequences",
    "document_pdf",
    "hipaa_report_html",
    "suggestions",
]

DAY_MS = 86_400_000
#: HIPAA: individuals, HHS (500 or more) and media are told within 60 days of discovery.
HIPAA_DAYS = 60
#: HIPAA: 500 or more persons: HHS at once (within 60 days) and, per State, the media.
HIPAA_MEDIA_THRESHOLD = 500

_DEMOGRAPHIC = {"identity", "contact", "national_id"}
_CLINICAL = {"appointment", "specialty", "clinical", "prescription", "allergy", "lab", "document", "imaging"}


def consequences(scope: ScopeSummary) -> list[str]:
    """Keys of the likely consequences for the persons, from what was exposed."""
    cats = {c.category for c in scope.categories if c.patients}
    out = []
    if cats & {"identity", "contact"}:
        out.append("phishing")
    if "national_id" in cats or {"identity", "contact"} <= cats:
        out.append("identity_theft")
    if cats & (_CLINICAL - {"appointment", "specialty"}):
        out.append("health_disclosure")
    if cats & {"appointment", "specialty"} or cats & {"identity"}:
        out.append("care_relationship")
    if scope.writes:
        out.append("integrity")
    if "billing" in cats:
        out.append("financial")
    if scope.patients:
        out.append("distress")
    return out


def _external(addresses: list[str]) -> list[str]:
    out = []
    for a in addresses:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if ip.is_global:
            out.append(a)
    return out


def suggestions(scope: ScopeSummary) -> list[str]:
    """Keys of the measures the scope suggests (accounts to disable, MFA, addresses to block...)."""
    out = []
    if scope.accounts:
        out.append("disable_accounts")
    if scope.auth.get("password") and not scope.auth.get("mfa"):
        out.append("enforce_mfa")
    if _external([a.name for a in scope.addresses]):
        out.append("block_addresses")
    kinds = {a.kind for a in scope.accounts}
    if "api_client" in kinds:
        out.append("restrict_api")
    if kinds & {"api_client", "application"}:
        out.append("rotate_credentials")
    out.append("watch")
    return out


def _common(incident: Incident, scope: ScopeSummary, est: Establishment, now: int, lang: str,
            severity: Severity | None, minors: int | None, informed: int | None, emails: int | None,
            ongoing: bool, top: int) -> dict[str, Any]:
    sev = severity or assess(scope, incident, minors=minors)
    clk = clock(incident, now)
    accounts = scope.accounts[:top]
    processors = sorted({a.name for a in scope.accounts if a.kind in ("application", "api_client")}
                        | {c.name for c in scope.clients if c.name and c.name not in ("dpi-web",)} - {""})
    auth = scope.auth
    auth_text = ""
    if auth:
        parts = [f"{k or ('inconnue' if lang == 'fr' else 'unknown')}: {v}" for k, v in sorted(auth.items())]
        auth_text = ", ".join(parts)
    alerts = incident.alerts
    if alerts:
        first = min(alerts, key=lambda a: a.time)
        discovery = (f"Alerte Sentinelle {first.id} ({first.kind}, {first.severity}) : {first.summary}" if lang == "fr"
                     else f"Sentinelle alert {first.id} ({first.kind}, {first.severity}): "
                          f"{first.summary_en or first.summary}")
    else:
        discovery = label("to_complete", lang)
    return {
        "incident": incident, "scope": scope, "est": est, "now": now, "clock_text": clk.text(lang),
        "deadline": clk.deadline, "late": clk.remaining < 0 and incident.cnil_notified is None,
        "severity": sev, "severity_level": label(sev.level, lang), "severity_reasoning": sev.reasoning(lang),
        "accounts": accounts, "addresses": scope.addresses[:top], "clients": [c for c in scope.clients if c.name][:top],
        "accounts_names": [a.name for a in accounts],
        "external_addresses": _external([a.name for a in scope.addresses]),
        "processors": processors, "auth_password": auth_text, "minors": minors, "informed": informed,
        "emails": emails, "ongoing": ongoing, "consequences": consequences(scope), "suggestions": suggestions(scope),
        "discovery_auto": discovery, "complete": False,
    }


def cnil_notification_html(incident: Incident, scope: ScopeSummary, establishment: Establishment, *, now: int,
                           lang: str = "fr", severity: Severity | None = None, minors: int | None = None,
                           informed: int | None = None, emails: int | None = None, ongoing: bool = False,
                           templates: str | Path | None = None, top: int = 20) -> str:
    """The Art. 33 notification draft as HTML, every field of the CNIL form, in `lang` (fr by default).

    `minors` (persons under 18 in scope), `informed` (persons already told) and `emails`
    (persons with a known e-mail address) come from the directory and the letter runs
    when known. `top` bounds the accounts and addresses listed.
    """
    check_lang(lang)
    ctx = _common(incident, scope, establishment, now, lang, severity, minors, informed, emails, ongoing, top)
    return render_html("cnil_notification", lang, ctx, templates, establishment.timezone)


def hipaa_report_html(incident: Incident, scope: ScopeSummary, establishment: Establishment, *, now: int,
                      lang: str = "en", states: dict[str, int] | None = None, notices_sent: int = 0,
                      severity: Severity | None = None, templates: str | Path | None = None, top: int = 20) -> str:
    """The HIPAA variant: four-factor risk assessment, deadlines and the HHS breach portal fields.

    `states` counts the persons per US State (from their addresses) for the media rule.
    """
    check_lang(lang)
    ctx = _common(incident, scope, establishment, now, lang, severity, None, notices_sent, None, False, top)
    cats = {c.category for c in scope.categories if c.patients}
    n = scope.patients
    discovered = incident.aware
    deadline = discovered + HIPAA_DAYS * DAY_MS
    year = datetime.fromtimestamp(discovered / 1000, tz=UTC).year
    # 60 days after 31 December; noon UTC so the date is the same in every time zone.
    annual_due = int(datetime(year + 1, 3, 1, 12, tzinfo=UTC).timestamp() * 1000)
    states = states or {}
    media_states = sorted(s for s, k in states.items() if k >= HIPAA_MEDIA_THRESHOLD)
    kinds = {a.kind for a in scope.accounts}
    ctx.update({
        "n": n, "discovered": discovered, "hipaa_deadline": deadline, "annual_due": annual_due,
        "hhs_now": n >= HIPAA_MEDIA_THRESHOLD, "media_states": media_states, "states": states,
        "media_unknown": not states and n >= HIPAA_MEDIA_THRESHOLD,
        "phi_demographic": bool(cats & _DEMOGRAPHIC), "phi_clinical": bool(cats & _CLINICAL),
        "phi_financial": "billing" in cats,
        "breach_type": "hacking" if incident.origin.startswith("external") else "unauthorized",
        "insider": "human" in kinds and incident.origin.startswith("internal"),
        "viewed": scope.records, "exported": scope.exports, "notices_sent": notices_sent,
    })
    return render_html("hipaa_report", lang, ctx, templates, establishment.timezone)


def document_pdf(html: str, title: str, footer: str = "") -> bytes:
    """A generated HTML document as PDF (A4)."""
    return html_to_pdf(html, title=title, footer=footer)
