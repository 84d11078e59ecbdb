"""Incident response: exact breach scope, the CNIL notification, letters, leak attribution, access reports.

After a breach the establishment must tell the CNIL within 72 hours what happened and to
whom (GDPR Art. 33), tell every person about *their* data (Art. 34), file a complaint,
find where a leaked sample came from and answer patients who ask who read their record.
This stage does all of it from the audit trail: the ledger (through the scope index, a
columnar side index kept at append time) or event files with the care context.

    >>> from sentinelle.incident import Selector
    >>> Selector(accounts=("editeur-integration",)).accounts
    ('editeur-integration',)

See docs/incident.md.
"""

from __future__ import annotations

from sentinelle.incident.attribution import Attribution, Candidate, RowMatch, attribute, match_rows, read_sample
from sentinelle.incident.create import group_alerts, incident_from_alerts, new_incident_id, open_incident
from sentinelle.incident.directory import Directory, PatientEntry
from sentinelle.incident.index import IndexView, ScopeIndex, ScopeIndexError
from sentinelle.incident.letters import LetterRun, SendReport, SmtpSettings, letter_html, send_letters, write_letters
from sentinelle.incident.model import (
    ActorCount,
    AlertRef,
    CategoryCount,
    Clock,
    Establishment,
    Incident,
    Note,
    PatientExposure,
    ScopeSummary,
    Selector,
    clock,
)
from sentinelle.incident.notify_cnil import cnil_notification_html, document_pdf, hipaa_report_html
from sentinelle.incident.patient_history import HistoryReport, history_html, patient_history, verify_report
from sentinelle.incident.pdf import html_to_pdf, merge_pdfs
from sentinelle.incident.scope import Scope, compute_scope, scope_from_events
from sentinelle.incident.severity import Severity, assess
from sentinelle.incident.store import DocumentRecord, IncidentNotFoundError, IncidentStore, IncidentStoreError
from sentinelle.incident.timeline import TimelineEntry, build_timeline, timeline_csv, timeline_html

__all__ = [
    "ActorCount",
    "AlertRef",
    "Attribution",
    "Candidate",
    "CategoryCount",
    "Clock",
    "Directory",
    "DocumentRecord",
    "Establishment",
    "HistoryReport",
    "Incident",
    "IncidentNotFoundError",
    "IncidentStore",
    "IncidentStoreError",
    "IndexView",
    "LetterRun",
    "Note",
    "PatientEntry",
    "PatientExposure",
    "RowMatch",
    "Scope",
    "ScopeIndex",
    "ScopeIndexError",
    "ScopeSummary",
    "Selector",
    "SendReport",
    "Severity",
    "SmtpSettings",
    "TimelineEntry",
    "assess",
    "attribute",
    "build_timeline",
    "clock",
    "cnil_notification_html",
    "compute_scope",
    "document_pdf",
    "group_alerts",
    "hipaa_report_html",
    "history_html",
    "html_to_pdf",
    "incident_from_alerts",
    "letter_html",
    "match_rows",
    "merge_pdfs",
    "new_incident_id",
    "open_incident",
    "patient_history",
    "read_sample",
    "scope_from_events",
    "send_letters",
    "timeline_csv",
    "timeline_html",
    "verify_report",
    "write_letters",
]
