"""`sentinelle incident ...`: a thin Typer shell over the incident library.

Mount with `app.add_typer(incident_app, name="incident")`. Each command parses options,
calls library functions and prints with Rich; no scope, document or attribution logic
lives here. Data come from the ledger (`--ledger URL --keyring FILE --index DIR`) or from
event files (`--events ...`), with the care context (`--context ...`, FHIR NDJSON, which
also holds the Patient resources the letters need).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sentinelle.context import CareContext
from sentinelle.errors import SentinelleError
from sentinelle.events import parse_time
from sentinelle.incident.attribution import attribute, read_sample
from sentinelle.incident.create import group_alerts, incident_from_alerts, new_incident_id, open_incident
from sentinelle.incident.directory import Directory
from sentinelle.incident.index import IndexView, ScopeIndex
from sentinelle.incident.letters import SmtpSettings, send_letters, write_letters
from sentinelle.incident.model import Establishment, Incident, Note, clock
from sentinelle.incident.notify_cnil import cnil_notification_html, document_pdf, hipaa_report_html
from sentinelle.incident.patient_history import history_html, patient_history
from sentinelle.incident.scope import Scope, compute_scope
from sentinelle.incident.store import DocumentRecord, IncidentStore
from sentinelle.incident.texts import CATEGORY_SHORT, fmt_datetime
from sentinelle.incident.timeline import build_timeline, timeline_csv, timeline_html
from sentinelle.ledger import Keyring, LedgerReader, load_keyring
from sentinelle.sources import Quarantine, open_events

__all__ = ["incident_app"]

incident_app = typer.Typer(help="Incident response: scope, CNIL notification, letters, attribution, access reports.",
                           no_args_is_help=True)
out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[Path, typer.Option("--store", help="Incident store (SQLite).")]
LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="Ledger URL (sqlite:///... or postgresql://...).")]
KeyringOpt = Annotated[Path | None, typer.Option("--keyring", help="Ledger keyring file (default: key folder).")]
IndexOpt = Annotated[Path | None, typer.Option("--index", help="Scope index folder (built from the ledger if absent).")]
EventsOpt = Annotated[list[str] | None, typer.Option("--events", help="Event files instead of the ledger.")]
ContextOpt = Annotated[list[str] | None, typer.Option("--context", "-c", help="Care context (FHIR NDJSON).")]
LangOpt = Annotated[str, typer.Option("--lang", help="fr (default) or en.")]
EstOpt = Annotated[Path | None, typer.Option("--establishment", help="TOML file: name, DPO, official channels.")]
DEFAULT_STORE = Path("sentinelle-incidents.db")


def _now() -> int:
    return int(time.time() * 1000)


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def _est(path: Path | None) -> Establishment:
    if path is None:
        return Establishment()
    try:
        return msgspec.convert(tomllib.loads(path.read_text(encoding="utf-8")), Establishment)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc


def _time(text: str | None) -> int | None:
    return None if not text else parse_time(text)


@contextlib.contextmanager
def _data(ledger: str | None, keyring: Path | None, index: Path | None, events: list[str] | None
          ) -> Iterator[tuple[IndexView, LedgerReader | None]]:
    """An index view over the ledger (with its tail) or over event files (temporary index)."""
    if ledger:
        ring = load_keyring(keyring, key_dir="sentinelle-keys", create=False)
        reader = LedgerReader.open(ledger, ring)
        folder = index or Path(str(ledger).rsplit("/", 1)[-1] + ".scope-index")
        try:
            if not (folder / "meta.json").exists():
                w = ScopeIndex.open(folder, ring, write=True)
                w.catch_up(reader)
                w.close()
            yield ScopeIndex.open(folder, ring).view(reader), reader
        finally:
            reader.close()
    elif events:
        with tempfile.TemporaryDirectory(prefix="sentinelle-scope-") as tmp:
            idx = ScopeIndex.build(open_events(events, Quarantine(None)), tmp, Keyring.generate())
            try:
                yield idx.view(), None
            finally:
                idx.close()
    else:
        raise typer.BadParameter("give --ledger (with --keyring) or --events")


def _context(paths: list[str] | None) -> CareContext:
    return CareContext.load(paths) if paths else CareContext()


def _scope(store: IncidentStore, inc: Incident, view: IndexView, ctx: CareContext) -> Scope:
    sc = compute_scope(view, inc.selectors, ctx)
    store.save_scope(inc.id, sc.summary)
    return sc


def _print_scope(sc: Scope, inc: Incident, lang: str) -> None:
    s = sc.summary
    out.print(f"[bold]{inc.id}[/] {inc.title}")
    out.print(f"[red]{clock(inc, _now()).text(lang)}[/]")
    out.print(f"patients: [bold]{s.patients:,}[/]  records: {s.records:,}  events: {s.events:,}  "
              f"failed: {s.failed_events:,}  attempted only: {s.attempted_only:,}  health data: {s.health_patients:,}"
              f"  NIR: {s.nir_patients:,}  decoys: {s.decoys}")
    out.print(f"from {fmt_datetime(s.first, lang)} to {fmt_datetime(s.last, lang)}")
    t = Table("category", "patients", "records", "special")
    for c in s.categories:
        t.add_row(CATEGORY_SHORT[c.category][lang], f"{c.patients:,}", f"{c.records:,}",
                  "health" if c.health else ("NIR" if c.nir else ""))
    out.print(t)
    for title, rows in (("accounts", s.accounts), ("addresses", s.addresses), ("clients", s.clients)):
        t = Table(title, "patients", "events", "failed", "first", "last")
        for a in rows[:10]:
            t.add_row(a.name, f"{a.patients:,}", f"{a.events:,}", str(a.failed), fmt_datetime(a.first, lang),
                      fmt_datetime(a.last, lang))
        out.print(t)


@incident_app.command("open")
def open_cmd(title: str, account: Annotated[list[str] | None, typer.Option()] = None,
             client: Annotated[list[str] | None, typer.Option()] = None,
             address: Annotated[list[str] | None, typer.Option(help="Address or CIDR block.")] = None,
             start: Annotated[str | None, typer.Option(help="ISO 8601")] = None,
             end: Annotated[str | None, typer.Option(help="ISO 8601, exclusive")] = None,
             aware: Annotated[str | None, typer.Option(help="Time of awareness (default now).")] = None,
             unexplained_only: bool = False, store: StoreOpt = DEFAULT_STORE) -> None:
    """Open an incident by hand: an account, a client application, an address, a time window."""
    try:
        with IncidentStore(store) as st:
            now = _now()
            inc = open_incident(title, accounts=account or [], clients=client or [], addresses=address or [],
                                start=_time(start), end=_time(end), aware=_time(aware), now=now,
                                unexplained_only=unexplained_only, incident_id=new_incident_id(st.ids(), now))
            st.save(inc)
            out.print(f"opened [bold]{inc.id}[/]\n[red]{clock(inc, now).text()}[/]")
    except SentinelleError as exc:
        _fail(exc)


@incident_app.command("from-alerts")
def from_alerts(alerts: Path, gap_hours: float = 24.0, margin_hours: float = 1.0,
                store: StoreOpt = DEFAULT_STORE) -> None:
    """Open one incident per group of alerts (same account, windows within --gap-hours)."""
    from sentinelle.detect import read_alerts

    try:
        with IncidentStore(store) as st:
            for group in group_alerts(read_alerts(alerts), gap_hours):
                now = _now()
                inc = incident_from_alerts(group, margin_hours=margin_hours, now=now,
                                           incident_id=new_incident_id(st.ids(), now))
                st.save(inc)
                out.print(f"opened [bold]{inc.id}[/] {inc.title} ({len(group)} alerts)")
    except SentinelleError as exc:
        _fail(exc)


@incident_app.command("list")
def list_cmd(store: StoreOpt = DEFAULT_STORE, lang: LangOpt = "fr") -> None:
    """Every incident with its 72-hour clock."""
    with IncidentStore(store) as st:
        t = Table("id", "title", "status", "patients", "clock")
        for inc in st.all():
            s = st.scope(inc.id)
            t.add_row(inc.id, inc.title, inc.status, f"{s.patients:,}" if s else "?", clock(inc, _now()).text(lang))
        out.print(t)


@incident_app.command("note")
def note_cmd(incident: str, text: str, kind: str = "action", author: str = "",
             at: Annotated[str | None, typer.Option(help="ISO 8601 (default now)")] = None,
             store: StoreOpt = DEFAULT_STORE) -> None:
    """Add a dated fact (account disabled, complaint filed...) to an incident's timeline."""
    try:
        with IncidentStore(store) as st:
            st.add_note(incident, Note(time=_time(at) or _now(), text=text, author=author, kind=kind))
    except SentinelleError as exc:
        _fail(exc)


@incident_app.command("scope")
def scope_cmd(incident: str, ledger: LedgerOpt = None, keyring: KeyringOpt = None, index: IndexOpt = None,
              events: EventsOpt = None, context: ContextOpt = None, lang: LangOpt = "fr",
              store: StoreOpt = DEFAULT_STORE) -> None:
    """Compute an incident's exact scope and print it."""
    try:
        with IncidentStore(store) as st, _data(ledger, keyring, index, events) as (view, _):
            inc = st.get(incident)
            _print_scope(_scope(st, inc, view, _context(context)), inc, lang)
    except SentinelleError as exc:
        _fail(exc)


@incident_app.command("notify")
def notify_cmd(incident: str, out_dir: Annotated[Path, typer.Option("--out")], ledger: LedgerOpt = None,
               keyring: KeyringOpt = None, index: IndexOpt = None, events: EventsOpt = None,
               context: ContextOpt = None, lang: LangOpt = "fr", establishment: EstOpt = None,
               hipaa: bool = False, store: StoreOpt = DEFAULT_STORE) -> None:
    """Write the CNIL notification draft (or the HIPAA assessment) as HTML and PDF."""
    try:
        est = _est(establishment)
        with IncidentStore(store) as st, _data(ledger, keyring, index, events) as (view, _):
            inc = st.get(incident)
            sc = _scope(st, inc, view, _context(context))
            now = _now()
            kind = "hipaa" if hipaa else "cnil"
            html = (hipaa_report_html(inc, sc.summary, est, now=now, lang=lang) if hipaa
                    else cnil_notification_html(inc, sc.summary, est, now=now, lang=lang))
            out_dir.mkdir(parents=True, exist_ok=True)
            base = out_dir / f"{inc.id}-{kind}-{lang}"
            base.with_suffix(".html").write_text(html, encoding="utf-8")
            pdf = document_pdf(html, f"{inc.id} {kind}", footer=f"{est.name} – {inc.id}")
            base.with_suffix(".pdf").write_bytes(pdf)
            st.log_document(DocumentRecord(inc.id, kind, lang, str(base), 1, now))
            out.print(f"wrote {base}.html and .pdf\n[red]{clock(inc, now).text(lang)}[/]")
    except SentinelleError as exc:
        _fail(exc)


def _bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err)


@incident_app.command("letters")
def letters_cmd(incident: str, out_dir: Annotated[Path, typer.Option("--out")], ledger: LedgerOpt = None,
                keyring: KeyringOpt = None, index: IndexOpt = None, events: EventsOpt = None,
                context: ContextOpt = None, lang: LangOpt = "fr", establishment: EstOpt = None,
                smtp: Annotated[str | None, typer.Option(help="host:port to e-mail the letters")] = None,
                sender: str = "", starttls: bool = False, limit: int | None = None,
                store: StoreOpt = DEFAULT_STORE) -> None:
    """Write the Art. 34 letters (PDF each, print file, mail-merge CSV) and e-mail them with --smtp."""
    try:
        est = _est(establishment)
        with IncidentStore(store) as st, _data(ledger, keyring, index, events) as (view, _):
            inc = st.get(incident)
            ctx = _context(context)
            sc = _scope(st, inc, view, ctx)
            directory = Directory.load(context or [], only=set(sc.refs))
            now = _now()
            with _bar() as bar:
                task = bar.add_task("letters", total=len(sc))
                run = write_letters(sc, directory, inc, est, out_dir, now=now, lang=lang, limit=limit,
                                    progress=lambda d, t: bar.update(task, completed=d, total=t))
            st.log_document(DocumentRecord(inc.id, "letters", lang, str(out_dir), run.letters, now))
            out.print(f"{run.letters:,} letters in {out_dir} ({run.no_address} without address, "
                      f"{run.decoys_skipped} decoys left out) in {run.seconds:.1f} s")
            if smtp:
                host, _, port = smtp.partition(":")
                settings = SmtpSettings(host=host, port=int(port or 25), starttls=starttls, sender=sender)
                with _bar() as bar:
                    task = bar.add_task("e-mails", total=len(sc))
                    rep = send_letters(sc, directory, inc, est, settings, now=now, lang=lang,
                                       progress=lambda d, t: bar.update(task, completed=d, total=t))
                st.log_document(DocumentRecord(inc.id, "emails", lang, smtp, rep.sent, _now()))
                out.print(f"{rep.sent:,} e-mails sent, {rep.failed} failed, {rep.no_email:,} without e-mail")
                for ref, why in rep.errors[:20]:
                    err.print(f"  {ref}: {why}")
    except SentinelleError as exc:
        _fail(exc)


@incident_app.command("timeline")
def timeline_cmd(incident: str, out_dir: Annotated[Path, typer.Option("--out")], ledger: LedgerOpt = None,
                 keyring: KeyringOpt = None, index: IndexOpt = None, events: EventsOpt = None,
                 context: ContextOpt = None, lang: LangOpt = "fr", establishment: EstOpt = None,
                 store: StoreOpt = DEFAULT_STORE) -> None:
    """Write the incident's chronological timeline (HTML, PDF, CSV)."""
    try:
        est = _est(establishment)
        with IncidentStore(store) as st, _data(ledger, keyring, index, events) as (view, _):
            inc = st.get(incident)
            sc = _scope(st, inc, view, _context(context))
            entries = build_timeline(inc, sc, st.documents(inc.id))
            now = _now()
            html = timeline_html(inc, entries, est, now=now, lang=lang)
            out_dir.mkdir(parents=True, exist_ok=True)
            base = out_dir / f"{inc.id}-timeline-{lang}"
            base.with_suffix(".html").write_text(html, encoding="utf-8")
            base.with_suffix(".pdf").write_bytes(document_pdf(html, f"{inc.id} timeline"))
            base.with_suffix(".csv").write_text(timeline_csv(entries, lang, est.timezone), encoding="utf-8")
            st.log_document(DocumentRecord(inc.id, "timeline", lang, str(base), len(entries), now))
            out.print(f"wrote {base}.html, .pdf and .csv ({len(entries)} entries)")
    except SentinelleError as exc:
        _fail(exc)


@incident_app.command("attribute")
def attribute_cmd(sample: Path, ledger: LedgerOpt = None, keyring: KeyringOpt = None, index: IndexOpt = None,
                  events: EventsOpt = None, context: ContextOpt = None,
                  map_: Annotated[list[str] | None, typer.Option("--map", help="column=field")] = None,
                  lang: LangOpt = "fr") -> None:
    """Rank the accounts, clients, addresses and windows whose reads cover a leaked sample."""
    try:
        mapping = dict(m.split("=", 1) for m in (map_ or []))
        rows, cols = read_sample(sample, mapping)
        with _data(ledger, keyring, index, events) as (view, _):
            ctx = _context(context)
            res = attribute(view, rows, Directory.load(context or []), columns=cols, context=ctx)
        out.print(f"{res.rows} rows, {res.matched} matched, {res.unmatched} unmatched, columns {cols}")
        if res.decoys:
            out.print(f"[bold red]{len(res.decoys)} decoy record(s) in the sample[/]")
        for title, cands in (("account", res.accounts), ("client", res.clients), ("address", res.addresses)):
            t = Table(title, "coverage", "others", "confidence", "read", "window (90 %)")
            for c in cands[:5]:
                t.add_row(c.name, f"{c.coverage:.0%} ({c.covered})", str(c.others), f"{c.confidence:.2f}",
                          f"{c.breadth:,}", f"{fmt_datetime(c.core_start, lang)} – {fmt_datetime(c.core_end, lang)}")
            out.print(t)
    except SentinelleError as exc:
        _fail(exc)


@incident_app.command("history")
def history_cmd(patient: str, requester: Annotated[str, typer.Option()], purpose: Annotated[str, typer.Option()],
                out_file: Annotated[Path, typer.Option("--out", help="report.html or report.pdf")],
                ledger: LedgerOpt = None, keyring: KeyringOpt = None, index: IndexOpt = None,
                events: EventsOpt = None, context: ContextOpt = None, lang: LangOpt = "fr",
                names: str = "hidden", establishment: EstOpt = None, incident: str = "",
                store: StoreOpt = DEFAULT_STORE) -> None:
    """A patient's access history with inclusion proofs (the look-up is audited)."""
    try:
        est = _est(establishment)
        ctx = _context(context)
        directory = Directory.load(context or [])
        with IncidentStore(store) as st:
            kwargs: dict[str, Any] = {}
            if ledger:
                cm: Any = _data(ledger, keyring, index, None)
            else:
                cm = contextlib.nullcontext((None, None))
                kwargs["events"] = open_events(events or [], Quarantine(None))
            with cm as (view, reader):
                rep = patient_history(patient, requester=requester, purpose=purpose, context=ctx,
                                      directory=directory, view=view, reader=reader, store=st, incident=incident,
                                      names=names, **kwargs)
            html = history_html(rep, est, lang=lang, directory=directory)
            if out_file.suffix == ".pdf":
                out_file.write_bytes(document_pdf(html, "history"))
            else:
                out_file.write_text(html, encoding="utf-8")
            out_file.with_suffix(".json").write_bytes(msgspec.json.encode(rep))
            out.print(f"{len(rep.accesses)} accesses -> {out_file} (+ .json with the proofs); look-up no. {rep.lookup}")
    except SentinelleError as exc:
        _fail(exc)
