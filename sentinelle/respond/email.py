"""Alerts by e-mail over SMTP, for the security officer and the DPO who are not watching a console.

Why plain SMTP from the standard library: every hospital runs a mail relay, and the
message must be readable on a phone at night. The mail says what happened in one
sentence, the evidence, the account, the address and the period, in the channel's
language. Patient references stay out unless `include_patients` is set: e-mail is
copied, forwarded and archived far beyond the people entitled to know them.

SMTP answers decide retries: a 4xx is temporary (retried by the dispatcher), a 5xx to
the sender or the recipients is permanent (straight to the dead-letter log).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import ClassVar

from sentinelle.detect import Alert
from sentinelle.respond.channel import DeliveryError

__all__ = ["EmailChannel", "render_email"]

_SEVERITY_WORD = {
    "fr": {"low": "faible", "medium": "moyenne", "high": "élevée", "critical": "critique"},
    "en": {"low": "low", "medium": "medium", "high": "high", "critical": "critical"},
}
_LABELS = {
    "fr": ("Gravité", "Score", "Compte", "Application", "Adresse", "Premier accès", "Dernier accès",
           "Patients concernés", "Éléments", "Épisode", "Alerte", "Voir"),
    "en": ("Severity", "Score", "Account", "Client", "Address", "First access", "Last access",
           "Patients involved", "Evidence", "Episode", "Alert", "Open"),
}


def render_email(alert: Alert, *, sender: str, recipients: list[str], lang: str = "fr",
                 include_patients: bool = False, console_url: str = "", subject_prefix: str = "[Sentinelle]"
                 ) -> EmailMessage:
    """The e-mail message of one alert, in `lang` (fr or en)."""
    lang = lang if lang in _LABELS else "en"
    text = alert.lang.get(lang)
    summary = text.summary if text is not None else alert.summary
    evidence = text.evidence if text is not None else alert.evidence
    words = _SEVERITY_WORD[lang]
    lab = _LABELS[lang]
    lines = [summary, ""]
    rows = [
        (lab[0], words.get(alert.severity, alert.severity)),
        (lab[1], f"{alert.score:.2f}"),
        (lab[2], alert.account),
        (lab[3], alert.client),
        (lab[4], alert.address),
        (lab[5], alert.first_event),
        (lab[6], alert.last_event),
        (lab[7], str(alert.patient_count or len(alert.patients))),
    ]
    lines += [f"{k} : {v}" if lang == "fr" else f"{k}: {v}" for k, v in rows if v]
    if include_patients and alert.patients:
        lines.append("  " + ", ".join(alert.patients))
    if evidence:
        lines += ["", f"{lab[8]} :" if lang == "fr" else f"{lab[8]}:"]
        lines += [f"  - {e}" for e in evidence]
    lines += ["", f"{lab[9]} {alert.episode} — {lab[10]} {alert.id}"]
    if console_url:
        lines.append(f"{lab[11]}: {console_url.rstrip('/')}/alerts/{alert.id}")
    msg = EmailMessage()
    msg["Subject"] = f"{subject_prefix} {words.get(alert.severity, alert.severity).upper()} — {summary}"[:250]
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(idstring=alert.id.replace("@", "_"), domain="sentinelle.local")
    msg["X-Sentinelle-Alert"] = alert.id
    msg["X-Sentinelle-Severity"] = alert.severity
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailChannel:
    """Sends each alert as one e-mail through an SMTP relay (plain, STARTTLS or SMTPS)."""

    kind: ClassVar[str] = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: list[str], *, name: str = "email",
                 min_severity: str = "high", security: str = "none", username: str = "", password: str = "",
                 lang: str = "fr", include_patients: bool = False, console_url: str = "",
                 timeout_s: float = 10.0, tls_ca: str = "") -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"e-mail security must be none, starttls or tls, got {security!r}")
        if not recipients:
            raise ValueError("an e-mail channel needs at least one recipient")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.name = name
        self.min_severity = min_severity
        self.security = security
        self.username = username
        self.password = password
        self.lang = lang
        self.include_patients = include_patients
        self.console_url = console_url
        self.timeout_s = timeout_s
        self.tls_ca = tls_ca

    def deliver(self, alert: Alert) -> None:
        """Send one alert; raise `DeliveryError` (permanent on 5xx answers)."""
        msg = render_email(alert, sender=self.sender, recipients=self.recipients, lang=self.lang,
                           include_patients=self.include_patients, console_url=self.console_url)
        ctx = ssl.create_default_context(cafile=self.tls_ca or None)
        try:
            smtp: smtplib.SMTP
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=ctx)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=ctx)
                if self.username:
                    smtp.login(self.username, self.password)
                refused = smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(self.name, f"every recipient was refused ({codes})",
                                permanent=all(c >= 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(self.name, f"the SMTP server answered {exc.smtp_code}",
                                permanent=exc.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(self.name, f"cannot talk to the SMTP server: {type(exc).__name__}: {exc}") from None
        if refused:
            # Some recipients got it: not retried (the others would get it twice), but said.
            raise DeliveryError(self.name, f"{len(refused)} of {len(self.recipients)} recipients refused",
                                permanent=True)

    def close(self) -> None:
        """Nothing to release: one SMTP session per alert."""
