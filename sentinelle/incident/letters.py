"""Art. 34 letters: one per person, saying which of *their* data was read and what to do.

Why per person from the scope: GDPR Art. 34 asks that each person be told in clear and
plain language, and a letter that lists the person's own exposed data (from the exact
scope, not the incident's union) is both truthful and reassuring ("no medical
information about you was read"). The advice against phishing is the one the seed
articles give: no health professional or establishment asks for personal information
by e-mail or SMS; never answer an urgent message at once; check through the
organisation's official channel.

Outputs: a PDF per person and a merged print file, a mail-merge CSV for the printer or
mailing house, and e-mails over SMTP (HTML with a plain-text part and the PDF attached),
each with a `progress(done, total)` callback. Decoy records are never written to: they
are not persons. Names go into the letters and the CSV, never into logs.
"""

from __future__ import annotations

import concurrent.futures
import csv
import html as html_mod
import io
import logging
import multiprocessing
import os
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import msgspec

from sentinelle.incident.directory import Directory, PatientEntry
from sentinelle.incident.model import HEALTH_CATEGORIES, Establishment, Incident, PatientExposure, ScopeSummary
from sentinelle.incident.pdf import html_to_pdf, merge_pdfs, render_html
from sentinelle.incident.scope import Scope
from sentinelle.incident.texts import CATEGORY_LABELS, check_lang, fmt_datetime

__all__ = [
    "LetterRun",
    "SendReport",
    "SmtpSettings",
    "benchmark_letters",
    "letter_html",
    "letter_kind",
    "recipients",
    "send_letters",
    "write_letters",
]

log = logging.getLogger("sentinelle.incident")

Progress = Callable[[int, int], None]
_HEALTH_NAMES = [n for n in CATEGORY_LABELS if n in {
    "appointment", "specialty", "clinical", "prescription", "allergy", "lab", "document", "imaging"}]


class SmtpSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where letters are e-mailed from."""

    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    user: str = ""
    password: str = ""
    timeout: float = 30.0
    sender: str = ""


class LetterRun(msgspec.Struct, kw_only=True):
    """What `write_letters` produced."""

    letters: int = 0
    no_address: int = 0
    decoys_skipped: int = 0
    files: list[str] = msgspec.field(default_factory=list)
    print_file: str = ""  # the first (usually the only) merged print file
    print_files: list[str] = msgspec.field(default_factory=list)
    csv_file: str = ""
    seconds: float = 0.0


class SendReport(msgspec.Struct, kw_only=True):
    """What `send_letters` did: sent, refused (with the SMTP reason), and persons without e-mail."""

    sent: int = 0
    failed: int = 0
    no_email: int = 0
    decoys_skipped: int = 0
    errors: list[tuple[str, str]] = msgspec.field(default_factory=list)  # (patient ref, reason)
    seconds: float = 0.0


class _Person:
    """The person as the letter template sees it."""

    def __init__(self, p: PatientEntry, lang: str) -> None:
        self.id = p.id
        self.line = p.line
        self.postal_code = p.postal_code
        self.city = p.city
        family = p.family.upper()
        g = p.gender
        if lang == "fr":
            title = {"female": "Mme", "male": "M."}.get(g, "")
            self.salutation = {"female": "Madame", "male": "Monsieur"}.get(g, "Madame, Monsieur")
        else:
            title = {"female": "Ms", "male": "Mr"}.get(g, "")
            self.salutation = f"Dear {title} {p.family}" if title else "Dear Sir or Madam"
        self.display_name = " ".join(x for x in (title, p.given, family) if x)


def letter_kind(incident: Incident, scope: ScopeSummary) -> str:
    """How the letter tells what happened: `api` (a connected software), `external` or `insider`."""
    if any(a.kind == "api_client" for a in scope.accounts[:5]):
        return "api"
    return "external" if incident.origin.startswith("external") or incident.origin == "unknown" else "insider"


def letter_html(person: PatientEntry, exposure: PatientExposure, incident: Incident, establishment: Establishment,
                *, now: int, lang: str = "fr", kind: str = "external", templates: str | Path | None = None) -> str:
    """One person's letter as HTML."""
    check_lang(lang)
    ctx: dict[str, Any] = {
        "person": _Person(person, lang), "exposure": exposure, "incident": incident, "est": establishment,
        "now": now, "kind": kind, "health_categories": _HEALTH_NAMES,
        "has_health": bool(exposure.mask & HEALTH_CATEGORIES),
    }
    return render_html("letter", lang, ctx, templates, establishment.timezone)


def recipients(scope: Scope, directory: Directory) -> Iterator[tuple[PatientExposure, PatientEntry | None]]:
    """Every exposed person with their directory entry (None when unknown), decoys left out."""
    for exp in scope.exposures():
        entry = directory.patient(exp.ref)
        if entry is not None and entry.decoy:
            continue
        yield exp, entry


def _lang_of(entry: PatientEntry, default: str) -> str:
    return entry.language if entry.language in ("fr", "en") else default


#: Letters per merged print file. A printing house takes batches, and a breach of
#: hundreds of thousands of persons must not hold every PDF in memory to merge them.
PRINT_BATCH = 2_000
#: Persons laid out per round of the worker pool (bounds the PDFs in flight).
_ROUND = 256
#: Below this many letters the PDFs are made in this process (starting workers costs ~1 s).
_POOL_MIN = 64


def _pdf_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Processes laying out letters (spawned: the caller may be a threaded service)."""
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _pdf_of(job: tuple[str, str, str]) -> bytes:
    """One letter's PDF (in a worker process: module-level, so it pickles)."""
    doc, title, footer = job
    return html_to_pdf(doc, title=title, footer=footer)


def write_letters(scope: Scope, directory: Directory, incident: Incident, establishment: Establishment,
                  out_dir: str | Path, *, now: int, lang: str = "fr", pdf: bool = True, merged: bool = True,
                  csv_file: bool = True, html: bool = False, progress: Progress | None = None,
                  templates: str | Path | None = None, per_person_language: bool = True,
                  limit: int | None = None, workers: int | None = None) -> LetterRun:
    """Write the letters of a scope: `letter-<id>.pdf` per person, `letters-print.pdf`, `mail-merge.csv`.

    A person's own language (Patient.communication) wins over `lang` when
    `per_person_language`. Persons without a directory entry or postal address are
    counted in `no_address` and listed in the CSV without a letter file. `limit` stops
    after that many persons (a proof run before printing everything). PDFs are laid out
    by `workers` processes (default: one per CPU) when there are many; the print file
    is cut into `letters-print-0001.pdf`, ... of `PRINT_BATCH` letters beyond that many.
    """
    check_lang(lang)
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = LetterRun()
    kind = letter_kind(incident, scope.summary)
    total = len(scope)
    if limit is not None:
        total = min(total, limit)
    rows: list[list[str]] = []
    title = f"{establishment.name} – {incident.id}"
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    pool = None
    if pdf and n_workers > 1 and total >= _POOL_MIN:
        pool = _pdf_pool(n_workers)
    batch: list[bytes] = []
    single_print = total <= PRINT_BATCH

    def flush_print(final: bool) -> None:
        if not batch or not (final or len(batch) >= PRINT_BATCH):
            return
        name = "letters-print.pdf" if single_print else f"letters-print-{len(run.print_files) + 1:04d}.pdf"
        (out / name).write_bytes(merge_pdfs(batch))
        run.print_files.append(name)
        run.print_file = run.print_files[0]
        batch.clear()

    done = 0
    people = recipients(scope, directory)
    try:
        while limit is None or done < limit:
            chunk: list[tuple[PatientExposure, PatientEntry | None]] = []
            for item in people:
                chunk.append(item)
                if len(chunk) >= _ROUND or (limit is not None and done + len(chunk) >= limit):
                    break
            if not chunk:
                break
            docs: list[tuple[str, str] | None] = []
            for exp, entry in chunk:
                if entry is None:
                    docs.append(None)
                    continue
                lg = _lang_of(entry, lang) if per_person_language else lang
                docs.append((letter_html(entry, exp, incident, establishment, now=now, lang=lg, kind=kind,
                                         templates=templates), lg))
            jobs = [(d[0], title, title) for d in docs if d is not None]
            if not pdf:
                pdfs: list[bytes] = []
            elif pool is not None:
                pdfs = list(pool.map(_pdf_of, jobs, chunksize=4))
            else:
                pdfs = [_pdf_of(j) for j in jobs]
            k = 0
            for (exp, entry), d in zip(chunk, docs, strict=True):
                done += 1
                if entry is None or d is None:
                    run.no_address += 1
                    rows.append([exp.ref, "", "", "", "", "", "", "", "", "", "", ";".join(exp.categories), "", "",
                                 "", str(exp.first), str(exp.last), ""])
                    if progress is not None:
                        progress(done, total)
                    continue
                doc, lg = d
                name = ""
                if pdf:
                    data = pdfs[k]
                    k += 1
                    name = f"letter-{_safe(entry.id)}.pdf"
                    (out / name).write_bytes(data)
                    run.files.append(name)
                    if merged:
                        batch.append(data)
                        flush_print(False)
                if html:
                    (out / f"letter-{_safe(entry.id)}.html").write_text(doc, encoding="utf-8")
                if not entry.line and not entry.postal_code:
                    run.no_address += 1
                run.letters += 1
                person = _Person(entry, lg)
                rows.append([
                    exp.ref, person.display_name, entry.given, entry.family, entry.line, entry.postal_code,
                    entry.city, entry.country, entry.emails[0] if entry.emails else "",
                    entry.phones[0] if entry.phones else "", lg,
                    ";".join(exp.categories), " ; ".join(CATEGORY_LABELS[c][lg] for c in exp.categories),
                    "yes" if exp.mask & HEALTH_CATEGORIES else "no", "yes" if "national_id" in exp.categories else "no",
                    fmt_datetime(exp.first, lg, establishment.timezone, date_only=True),
                    fmt_datetime(exp.last, lg, establishment.timezone, date_only=True), name,
                ])
                if progress is not None:
                    progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    run.decoys_skipped = 0 if limit is not None else total - done
    if merged:
        flush_print(True)
    if csv_file:
        with (out / "mail-merge.csv").open("w", newline="", encoding="utf-8-sig") as f:
            w = csv.writer(f)
            w.writerow(["patient", "display_name", "given", "family", "address_line", "postal_code", "city",
                        "country", "email", "phone", "language", "categories", "categories_text", "health_data",
                        "nir", "first_access", "last_access", "letter_file"])
            w.writerows(rows)
        run.csv_file = "mail-merge.csv"
    run.seconds = time.perf_counter() - started
    log.info("Wrote %d letters (%d persons without address, %d decoys skipped) for incident %s in %.1f s.",
             run.letters, run.no_address, run.decoys_skipped, incident.id, run.seconds)
    return run


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80]


_TAG = re.compile(r"<[^>]+>")


def html_to_text(document: str) -> str:
    """A plain-text rendering of a letter for the e-mail's text part."""
    body = document.split("<body>", 1)[-1]
    body = re.sub(r"(?s)<style.*?</style>", "", body)
    body = re.sub(r"<li>", "\n  - ", body)
    body = re.sub(r"</(p|h1|h2|h3|ul|table|tr)>", "\n\n", body)
    body = re.sub(r"<br\s*/?>", "\n", body)
    text = html_mod.unescape(_TAG.sub("", body))
    lines = [" ".join(line.split()) if not line.startswith("  - ") else "  - " + " ".join(line[4:].split())
             for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _subject(est: Establishment, lang: str) -> str:
    if lang == "fr":
        return f"Information importante sur vos données personnelles – {est.name}"
    return f"Important information about your personal data – {est.name}"


def send_letters(scope: Scope, directory: Directory, incident: Incident, establishment: Establishment,
                 smtp: SmtpSettings, *, now: int, lang: str = "fr", attach_pdf: bool = True,
                 progress: Progress | None = None, templates: str | Path | None = None,
                 per_person_language: bool = True) -> SendReport:
    """E-mail each person with a known address their letter; one SMTP session, reconnecting if dropped.

    A refused recipient is recorded with the server's reason and the run goes on.
    """
    check_lang(lang)
    started = time.perf_counter()
    report = SendReport()
    kind = letter_kind(incident, scope.summary)
    sender = smtp.sender or establishment.mail_from or establishment.dpo_email
    if not sender:
        from sentinelle.errors import ConfigError

        raise ConfigError("no sender address: set smtp.sender or the establishment's mail_from")
    total = len(scope)
    conn: smtplib.SMTP | None = None
    done = 0
    try:
        for exp, entry in recipients(scope, directory):
            done += 1
            if entry is None or not entry.emails:
                report.no_email += 1
                if progress is not None:
                    progress(done, total)
                continue
            lg = _lang_of(entry, lang) if per_person_language else lang
            doc = letter_html(entry, exp, incident, establishment, now=now, lang=lg, kind=kind, templates=templates)
            msg = EmailMessage()
            msg["From"] = sender
            msg["To"] = entry.emails[0]
            msg["Subject"] = _subject(establishment, lg)
            msg["Date"] = formatdate(localtime=False)
            msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
            msg.set_content(html_to_text(doc))
            msg.add_alternative(doc, subtype="html")
            if attach_pdf:
                data = html_to_pdf(doc, title=f"{establishment.name} – {incident.id}",
                                   footer=f"{establishment.name} – {incident.id}")
                msg.add_attachment(data, maintype="application", subtype="pdf",
                                   filename=f"{incident.id}-{_safe(entry.id)}.pdf")
            for attempt in (1, 2):
                try:
                    if conn is None:
                        conn = _connect(smtp)
                    conn.send_message(msg)
                    report.sent += 1
                    break
                except smtplib.SMTPServerDisconnected:
                    conn = None
                    if attempt == 2:
                        report.failed += 1
                        report.errors.append((exp.ref, "the SMTP server closed the connection"))
                except smtplib.SMTPRecipientsRefused as exc:
                    report.failed += 1
                    reason = "; ".join(f"{code} {m.decode(errors='replace') if isinstance(m, bytes) else m}"
                                       for code, m in exc.recipients.values())
                    report.errors.append((exp.ref, f"recipient refused: {reason}"))
                    break
                except smtplib.SMTPException as exc:
                    report.failed += 1
                    report.errors.append((exp.ref, f"{type(exc).__name__}: {exc}"))
                    break
            if progress is not None:
                progress(done, total)
    finally:
        if conn is not None:
            try:
                conn.quit()
            except smtplib.SMTPException:
                conn.close()
    report.decoys_skipped = total - done
    report.seconds = time.perf_counter() - started
    log.info("E-mailed %d letters for incident %s (%d failed, %d persons without e-mail) in %.1f s.",
             report.sent, incident.id, report.failed, report.no_email, report.seconds)
    return report


def _connect(s: SmtpSettings) -> smtplib.SMTP:
    conn: smtplib.SMTP
    if s.ssl:
        conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout)
    else:
        conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        if s.starttls:
            conn.starttls()
    if s.user:
        conn.login(s.user, s.password)
    return conn


def benchmark_letters(n: int = 200, lang: str = "fr", workers: int = 1) -> float:
    """PDF letters per second on made-up persons, laid out by `workers` processes as `write_letters` does."""
    from sentinelle.events import category_mask

    est = Establishment(name="Centre hospitalier Sentinelle", address="1 rue de l'Hôpital, 75000 Paris",
                        official_phone="01 23 45 67 89", dpo_email="dpo@example.fr")
    inc = Incident(id="INC-BENCH", title="bench", opened=1_738_000_000_000, aware=1_738_000_000_000, selectors=[],
                   measures_taken=["Le compte en cause a été désactivé."])
    people = [PatientEntry(id=str(i), family=f"Martin{i}", given="Claire", gender="female", line=f"{i} rue Victor Hugo",
                           postal_code="75011", city="Paris", emails=(f"c{i}@example.fr",)) for i in range(n)]
    mask = category_mask(["identity", "contact", "allergy", "prescription"])
    pool = _pdf_pool(workers) if workers > 1 else None
    try:
        if pool is not None:
            list(pool.map(_pdf_of, [("<p>warm-up</p>", "w", "w")] * workers))  # start the workers first
        started = time.perf_counter()
        jobs = [(letter_html(p, PatientExposure(p.ref, mask, 3, 1_737_900_000_000, 1_737_990_000_000), inc, est,
                             now=1_738_100_000_000, lang=lang), "bench", "bench") for p in people]
        pdfs = list(pool.map(_pdf_of, jobs, chunksize=4)) if pool is not None else [_pdf_of(j) for j in jobs]
        assert len(pdfs) == n
        return n / (time.perf_counter() - started)
    finally:
        if pool is not None:
            pool.shutdown()


def read_csv_rows(data: str) -> list[dict[str, str]]:
    """Rows of a mail-merge CSV (for checks)."""
    return list(csv.DictReader(io.StringIO(data.lstrip("\ufeff"))))
