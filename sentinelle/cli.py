"""The `sentinelle` command: a thin shell over the library.

Each command parses its options, calls one library function and prints the result
with Rich. No detection, context or ledger logic lives here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from sentinelle.errors import SentinelleError
from sentinelle.events import AccessEvent, format_time

app = typer.Typer(
    name="sentinelle",
    help="Watch what legitimate accounts do with patient records.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=False)
err = Console(stderr=True)


def _mount_subcommands() -> None:
    from sentinelle.incident.cli import incident_app

    app.add_typer(incident_app, name="incident", help="Incident response: scope, notification, letters, attribution.")

EventsArg = Annotated[list[str], typer.Argument(help="Event files or directories (gzip ok), '-' for stdin.")]
ContextOpt = Annotated[
    list[str] | None,
    typer.Option("--context", "-c", help="Care context: FHIR NDJSON/Bundle files or directories."),
]
QuarantineOpt = Annotated[
    Path | None,
    typer.Option("--quarantine", "-q", help="Where rejected records go (JSON lines)."),
]
MappingOpt = Annotated[
    Path | None, typer.Option("--mapping", "-m", help="TOML column mapping for JSON lines or CSV of any shape.")
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Input format, or 'auto' to detect it.")]


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _tracked(events: Iterable[AccessEvent], progress: Progress, what: str) -> Iterator[AccessEvent]:
    task = progress.add_task(what, total=None)
    n = 0
    for event in events:
        n += 1
        if not n & 0x3FFF:
            progress.update(task, completed=n)
        yield event
    progress.update(task, completed=n)


def _load_context(paths: list[str] | None, quarantine: Any) -> Any:
    if not paths:
        return None
    from sentinelle.context import CareContext

    return CareContext.load(paths, quarantine=quarantine)


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    from sentinelle.errors import ConfigError

    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _default_quarantine(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    return Path(f"quarantine-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")


def _table(title: str, counts: dict[str, int], total: int) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(title.split(" ")[-1])
    table.add_column("events", justify="right")
    table.add_column("%", justify="right")
    for key, n in counts.items():
        table.add_row(key or "(none)", f"{n:,}", f"{100 * n / total:.1f}" if total else "-")
    return table


@app.command()
def inspect(
    events: EventsArg,
    context: ContextOpt = None,
    quarantine: QuarantineOpt = None,
    mapping: MappingOpt = None,
    fmt: FormatOpt = "auto",
) -> None:
    """Read any supported input and print what it holds."""
    from sentinelle.inventory import Inventory
    from sentinelle.sources import Quarantine, open_events
    from sentinelle.sources.mapped import load_mapping

    qpath = _default_quarantine(quarantine)
    try:
        with Quarantine(qpath) as q, _progress() as progress:
            ctx = _load_context(context, q)
            inv = Inventory(ctx)
            started = time.perf_counter()
            the_mapping = load_mapping(mapping) if mapping is not None else None
            for event in _tracked(open_events(events, q, fmt, the_mapping), progress, "reading events"):
                inv.add(event)
            elapsed = time.perf_counter() - started
    except SentinelleError as exc:
        _fail(exc)
        return
    report = inv.report()
    n = report.events
    console.print(
        f"[bold]{n:,}[/] events read in {elapsed:.1f} s"
        + (f" ({n / elapsed:,.0f}/s)" if elapsed > 0 and n else "")
    )
    if report.first is not None and report.last is not None:
        console.print(f"period: {format_time(report.first)} → {format_time(report.last)}")
    console.print(_table("events by source", report.by_source, n))
    console.print(_table("events by action", report.by_action, n))
    console.print(_table("events by actor kind", report.by_actor_kind, n))
    console.print(_table("events by category", report.by_category, n))
    console.print(f"accounts: {report.accounts:,}")
    console.print(f"patients: {report.patients:,}")
    if ctx is not None:
        stats = ctx.stats()
        console.print("context: " + ", ".join(f"{k} {v:,}" for k, v in stats.items()))
        share = report.explained_share
        console.print(
            f"explained by the care context: {report.explained or 0:,} of {report.patient_accesses:,} "
            f"patient accesses" + (f" ({100 * share:.1f} %)" if share is not None else "")
        )
    else:
        console.print("explained by the care context: n/a (no --context given)")
    where = q.where() if q.count else f"{q.where()} (not written: nothing rejected)"
    console.print(f"quarantined: {q.count} → {where}")
    for reason, count in sorted(q.by_reason.items(), key=lambda kv: -kv[1])[:10]:
        console.print(f"  {count:>8,}  {reason}")


@app.command()
def scan(
    events: EventsArg,
    context: ContextOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Alerts as JSON lines.")] = Path("alerts.jsonl"),
    report: Annotated[Path | None, typer.Option("--report", help="Also write an HTML report.")] = None,
    settings: Annotated[Path | None, typer.Option("--settings", help="TOML overriding detection settings.")] = None,
    lang: Annotated[str, typer.Option(help="Language of the report: fr or en.")] = "fr",
    quarantine: QuarantineOpt = None,
    mapping: MappingOpt = None,
    fmt: FormatOpt = "auto",
) -> None:
    """Learn and detect in one pass over an audit trail; write alerts and print a summary."""
    from sentinelle.detect import Alert, load_settings, render_html_report, write_alerts
    from sentinelle.detect import scan as run_scan
    from sentinelle.sources import Quarantine, open_events
    from sentinelle.sources.mapped import load_mapping

    qpath = _default_quarantine(quarantine)
    try:
        with Quarantine(qpath) as q, out.open("wb") as sink, _progress() as progress:
            ctx = _load_context(context, q)
            if ctx is None:
                from sentinelle.context import CareContext

                ctx = CareContext.from_resources([])
                err.print("[yellow]no --context given: no access can be explained by care[/]")
            the_settings = load_settings(_read_toml(settings)) if settings is not None else None
            the_mapping = load_mapping(mapping) if mapping is not None else None
            stream = _tracked(open_events(events, q, fmt, the_mapping), progress, "scanning events")

            def on_alert(alert: Alert) -> None:
                write_alerts(sink, [alert])

            result = run_scan(stream, ctx, the_settings, on_alert=on_alert)
    except SentinelleError as exc:
        _fail(exc)
        return
    rate = result.events / result.elapsed_s if result.elapsed_s > 0 else 0.0
    console.print(
        f"[bold]{result.events:,}[/] events, {result.accounts:,} accounts, {result.patients:,} patients "
        f"scanned in {result.elapsed_s:.1f} s ({rate:,.0f} events/s); learning until {result.learning_until or '-'}"
    )
    console.print(f"period: {result.first_event} → {result.last_event}")
    by_sev = Table(title="alerts by severity", title_justify="left")
    by_sev.add_column("severity")
    by_sev.add_column("alerts", justify="right")
    for severity, n in result.by_severity.items():
        by_sev.add_row(severity, str(n))
    console.print(by_sev)
    console.print(_table("alerts by kind", result.by_kind, max(1, len(result.alerts))))
    top = Table(title="top accounts", title_justify="left")
    for col in ("account", "severity", "score", "patients", "episodes", "kinds"):
        top.add_column(col)
    for acc in result.top_accounts:
        top.add_row(acc.account, acc.severity, f"{acc.score:.2f}", f"{acc.patients:,}", str(acc.episodes),
                    ", ".join(acc.kinds))
    console.print(top)
    console.print(f"explained by the care context: {100 * result.explained_share:.1f} % of patient accesses")
    console.print(f"alerts: {len(result.alerts)} episodes ({result.updates} versions) → {out}")
    if report is not None:
        render_html_report(result, report, lang=lang)
        console.print(f"report → {report}")
    where = q.where() if q.count else f"{q.where()} (not written: nothing rejected)"
    console.print(f"quarantined: {q.count} → {where}")


@app.command()
def verify(
    url: Annotated[str, typer.Argument(help="Ledger URL: sqlite:///ledger.db or postgresql://host/db?schema=s.")],
    witness: Annotated[Path | None, typer.Option(help="Witness file of exported checkpoints.")] = None,
    keyring: Annotated[Path | None, typer.Option(help="Keyring file: also authenticates sealed fields.")] = None,
    public_key: Annotated[
        list[str] | None, typer.Option("--public-key", help="Trusted checkpoint public key (base64 or PEM).")
    ] = None,
) -> None:
    """Re-check the whole ledger; name the first event or checkpoint that was tampered with."""
    from sentinelle.ledger import load_keyring
    from sentinelle.ledger import verify as run_verify

    try:
        keys = load_keyring(keyring, create=False) if keyring is not None else None
        report = run_verify(url, keyring=keys, witness=witness, public_keys=public_key)
    except SentinelleError as exc:
        _fail(exc)
        return
    console.print(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Output directory (events/, context/, labels/).")],
    size: Annotated[str, typer.Option(help="small, standard or large.")] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same hospital.")] = 1,
) -> None:
    """Write a simulated hospital: audit trail, care context and the labels of planted attacks."""
    from sentinelle.simulate import simulate as run_simulation

    try:
        with _progress() as progress:
            task = progress.add_task(f"simulating a {size} hospital (seed {seed})", total=None)

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            summary = run_simulation(out, size=size, seed=seed, progress=on_progress)
    except SentinelleError as exc:
        _fail(exc)
        return
    table = Table(title=f"simulated hospital → {out}", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, (int, float, str)):
            table.add_row(str(key), f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="A directory written by `sentinelle simulate`.")],
    alerts: Annotated[Path, typer.Argument(help="Alerts as JSON lines (the alert contract).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")] = None,
) -> None:
    """Score an alert file against the planted attacks and benign traps of a simulated hospital."""
    from sentinelle.simulate.evaluate import evaluate as run_evaluation
    from sentinelle.simulate.evaluate import render_report

    try:
        report = run_evaluation(data, alerts)
    except SentinelleError as exc:
        _fail(exc)
        return
    console.print(render_report(report))
    if json_out is not None:
        import msgspec

        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the simulated hospital is written.")] = Path("demo-out"),
    size: Annotated[str, typer.Option(help="tiny, small, standard or large.")] = "small",
    seed: Annotated[int, typer.Option(help="Random seed of the simulated hospital.")] = 1,
    live: Annotated[bool, typer.Option(help="Also replay the hospital into the live service.")] = True,
) -> None:
    """Simulate a hospital, inspect and scan it, score the alerts, then replay it into the live service."""
    if not (out / "manifest.json").exists():
        simulate(out, size=size, seed=seed)
    else:
        console.print(f"using the hospital already simulated in {out}")
    console.rule("1. inspect: what the audit trail holds")
    inspect([str(out / "events")], context=[str(out / "context")], quarantine=out / "quarantine.jsonl",
            mapping=None, fmt="auto")
    console.rule("2. scan: learn and detect in one pass")
    scan([str(out / "events")], context=[str(out / "context")], out=out / "alerts.jsonl",
         report=out / "report.html", settings=None, lang="fr", quarantine=out / "quarantine.jsonl",
         mapping=None, fmt="auto")
    console.rule("3. evaluate: the alerts against the planted attacks and benign traps")
    evaluate(out, out / "alerts.jsonl", json_out=out / "evaluation.json")
    if live:
        from sentinelle.service.demo import run_demo

        console.rule("4. the live service: the same hospital replayed over HTTP, alerts as they arrive")
        run_demo(out, size=size, seed=seed, echo=console.print)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="Service configuration (TOML).")] = None,
) -> None:
    """Run the service: HTTP and syslog intake, ledger, real-time detection, alert delivery."""
    from sentinelle.service import serve as run_service

    try:
        run_service(config)
    except SentinelleError as exc:
        _fail(exc)


_mount_subcommands()


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
