"""The chronological timeline of an incident, for the complaint to the prosecutor and the insurer.

Why from the trail and the response log together: the prosecutor and the insurer ask
"what happened when": the intruder's first and last accesses, from which addresses, how
many records per hour, when the alerts fired, when the establishment became aware, what
it did (accounts disabled, CNIL notified, letters sent). The trail gives the first half
exactly (from the scope's selected accesses), the incident's notes, alerts and the
document log give the second.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import msgspec
import numpy as np

from sentinelle.incident.model import AWARENESS_HOURS, HOUR_MS, Establishment, Incident, clock
from sentinelle.incident.pdf import render_html
from sentinelle.incident.scope import Scope
from sentinelle.incident.store import DocumentRecord
from sentinelle.incident.texts import check_lang, fmt_datetime, fmt_int

__all__ = ["TimelineEntry", "build_timeline", "timeline_csv", "timeline_html"]


class TimelineEntry(msgspec.Struct, frozen=True):
    """One dated line of the timeline, in both languages."""

    time: int
    kind: str  # access | activity | alert | awareness | deadline | action | document | notification
    fr: str
    en: str


def _n(v: int) -> tuple[str, str]:
    return fmt_int(v, "fr"), fmt_int(v, "en")


def build_timeline(incident: Incident, scope: Scope | None = None, documents: list[DocumentRecord] | None = None,
                   *, hourly: int = 48, actors: int = 10) -> list[TimelineEntry]:
    """Every dated fact of the incident in time order.

    `hourly` bounds the hours of activity listed (the busiest, then in time order);
    `actors` the accounts and addresses whose first and last accesses are listed.
    """
    out: list[TimelineEntry] = []
    if scope is not None and scope.summary.first is not None:
        s = scope.summary
        for a in s.accounts[:actors]:
            pf, pe = _n(a.patients)
            out.append(TimelineEntry(a.first, "access", f"Premier accès du compte {a.name} ({pf} patients au total)",
                                     f"First access by account {a.name} ({pe} patients in all)"))
            out.append(TimelineEntry(a.last, "access", f"Dernier accès du compte {a.name}",
                                     f"Last access by account {a.name}"))
        for a in s.addresses[:actors]:
            ef, ee = _n(a.events)
            out.append(TimelineEntry(a.first, "access", f"Premier accès depuis l'adresse {a.name} ({ef} accès)",
                                     f"First access from address {a.name} ({ee} accesses)"))
        rows = scope.rows
        if len(rows["time"]):
            hours = rows["time"] // HOUR_MS
            uh, inv = np.unique(hours, return_inverse=True)
            counts = np.bincount(inv)
            pats = np.zeros(len(uh), dtype=np.int64)
            has = rows["pk"] != 0
            if has.any():
                pair = np.unique(np.stack([inv[has], rows["pk"][has]], axis=1), axis=0)
                pats = np.bincount(pair[:, 0], minlength=len(uh))
            failed = np.bincount(inv, weights=(rows["outcome"] != _code(scope, "outcome", "success")),
                                 minlength=len(uh)).astype(np.int64)
            top = np.sort(np.argsort(-counts, kind="stable")[:hourly])
            for i in top.tolist():
                t = int(uh[i]) * HOUR_MS
                cf, ce = _n(int(counts[i]))
                pf, pe = _n(int(pats[i]))
                extra_fr = f", {int(failed[i])} refusés ou en erreur" if failed[i] else ""
                extra_en = f", {int(failed[i])} denied or failed" if failed[i] else ""
                out.append(TimelineEntry(t, "activity", f"Heure d'activité : {cf} accès, {pf} patients{extra_fr}",
                                         f"Hour of activity: {ce} accesses, {pe} patients{extra_en}"))
    for al in incident.alerts:
        out.append(TimelineEntry(al.time, "alert", f"Alerte {al.severity} ({al.kind}) : {al.summary}",
                                 f"Alert {al.severity} ({al.kind}): {al.summary_en or al.summary}"))
    out.append(TimelineEntry(incident.aware, "awareness", "Prise de connaissance de la violation : début du délai "
                                                          f"de {AWARENESS_HOURS} h",
                             f"Awareness of the breach: the {AWARENESS_HOURS}-hour clock starts"))
    clk = clock(incident, incident.aware)
    out.append(TimelineEntry(clk.deadline, "deadline", "Échéance de notification à la CNIL (art. 33)",
                             "Deadline for the CNIL notification (Art. 33)"))
    if incident.cnil_notified is not None:
        out.append(TimelineEntry(incident.cnil_notified, "notification", "Notification à la CNIL",
                                 "CNIL notified"))
    for note in incident.notes:
        by_fr = f" ({note.author})" if note.author else ""
        out.append(TimelineEntry(note.time, note.kind, note.text + by_fr, note.text + by_fr))
    for d in documents or []:
        names = {"cnil": ("Projet de notification CNIL généré", "CNIL notification draft generated"),
                 "hipaa": ("Évaluation HIPAA générée", "HIPAA assessment generated"),
                 "letters": ("Courriers aux personnes générés", "Letters to the persons generated"),
                 "emails": ("Courriels aux personnes envoyés", "E-mails to the persons sent"),
                 "timeline": ("Chronologie générée", "Timeline generated"),
                 "history": ("Rapport d'accès patient généré", "Patient access report generated")}
        fr, en = names.get(d.kind, (d.kind, d.kind))
        cf, ce = _n(d.count)
        out.append(TimelineEntry(d.time, "document", f"{fr} ({cf}, {d.lang})", f"{en} ({ce}, {d.lang})"))
    out.sort(key=lambda e: (e.time, e.kind))
    return out


def _code(scope: Scope, column: str, value: str) -> int:
    try:
        return scope.dicts[column].index(value)
    except ValueError:
        return -1


def timeline_html(incident: Incident, entries: list[TimelineEntry], establishment: Establishment, *, now: int,
                  lang: str = "fr", templates: str | Path | None = None) -> str:
    """The timeline as HTML, with the 72-hour clock."""
    check_lang(lang)
    ctx = {"incident": incident, "entries": entries, "est": establishment, "now": now,
           "clock_text": clock(incident, now).text(lang)}
    return render_html("timeline", lang, ctx, templates, establishment.timezone)


def timeline_csv(entries: list[TimelineEntry], lang: str = "fr", tz: str = "Europe/Paris") -> str:
    """The timeline as CSV: ISO time (UTC), local time in words, kind, text."""
    from sentinelle.events import format_time

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["time_utc", "time_local", "kind", "event"])
    for e in entries:
        w.writerow([format_time(e.time), fmt_datetime(e.time, lang, tz), e.kind, e.fr if lang == "fr" else e.en])
    return buf.getvalue()
