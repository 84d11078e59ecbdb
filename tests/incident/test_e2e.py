"""End to end: a simulated hospital with planted attacks -> ledger -> incidents -> exact scope ->
notification, letters (PDF parsed back) and e-mails received by a real local SMTP server."""

from __future__ import annotations

import io
import socket
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from incident_factory import INSIDER_KINDS, PLATFORM_KINDS, Hospital
from pypdf import PdfReader

from sentinelle.context import Reason
from sentinelle.detect import scan
from sentinelle.events import category_names, parse_time
from sentinelle.incident import (
    Establishment,
    Incident,
    IncidentStore,
    Note,
    ScopeIndex,
    SmtpSettings,
    assess,
    build_timeline,
    cnil_notification_html,
    compute_scope,
    document_pdf,
    group_alerts,
    incident_from_alerts,
    open_incident,
    send_letters,
    timeline_html,
    write_letters,
)
from sentinelle.incident.texts import CATEGORY_LABELS
from sentinelle.ledger import Keyring, Ledger, SigningKey

EST = Establishment(name="Centre hospitalier Sentinelle", address="1 rue de l'Hôpital, 76000 Rouen",
                    official_phone="02 35 00 00 00", website="https://www.ch-sentinelle.fr",
                    dpo_name="Claire Dubois", dpo_email="dpo@ch-sentinelle.fr", mail_from="dpo@ch-sentinelle.fr")


STRONG = int(Reason.ENCOUNTER | Reason.APPOINTMENT | Reason.CARE_TEAM)


def pdf_text(data: bytes) -> str:
    """All the text of a PDF, whitespace collapsed."""
    reader = PdfReader(io.BytesIO(data))
    return " ".join(" ".join(page.extract_text() or "" for page in reader.pages).split())


@pytest.fixture(scope="module")
def ledger(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The hospital's trail appended to a ledger, with the scope index kept by its hook."""
    root = tmp_path_factory.mktemp("ledger")
    ring = Keyring.generate()
    led = Ledger.open(f"sqlite:///{root / 'ledger.db'}", ring, signing_key=SigningKey.generate())
    idx = ScopeIndex.open(root / "index", ring, write=True, flush_rows=8_000)
    idx.attach(led)
    for i in range(0, len(hospital.events), 2_000):
        led.append_batch(hospital.events[i:i + 2_000])
    yield led, idx
    idx.close()
    led.close()


def _incident(attack: dict[str, Any]) -> Incident:
    start, end = parse_time(str(attack["start"])), parse_time(str(attack["end"]))
    return open_incident(f"{attack['kind']}", accounts=[str(attack["account"])],
                         addresses=[str(a) for a in attack["addresses"]], start=start, end=end + 1,
                         aware=end + 3_600_000, unexplained_only=attack["kind"] in INSIDER_KINDS | PLATFORM_KINDS,
                         explaining=STRONG if attack["kind"] in PLATFORM_KINDS else 0,
                         incident_id=f"INC-{attack['id']}", now=end + 3_600_000)


def test_scope_equals_the_planted_truth_to_the_patient_and_category(hospital: Hospital, ledger: Any) -> None:
    led, idx = ledger
    view = idx.view(led)
    assert view.rows >= len(hospital.events)
    for attack in hospital.attacks:
        aid = str(attack["id"])
        inc = _incident(attack)
        scope = compute_scope(view, inc.selectors, hospital.context)
        got = {e.ref: e.mask for e in scope.exposures()}
        truth = hospital.truth[aid]
        # Insiders read from the workstation of their daily work: the scope keeps what care
        # does not explain, and namesakes on a search page that found a treated patient are
        # explained with that patient (see scope._search_collateral).
        assert set(got) == set(truth), f"{aid}: patients differ {sorted(set(got) ^ set(truth))[:5]}"
        assert set(truth) <= set(got), f"{aid}: victims missing from the scope"
        wrong = {p: (category_names(got[p]), category_names(truth[p])) for p in truth if got[p] != truth[p]}
        assert not wrong, f"{aid}: categories differ {list(wrong.items())[:3]}"
        s = scope.summary
        assert s.patients == len(got) and s.resolved
        assert s.attempted_only == len(hospital.failed[aid] - set(got))
        per_cat = {c.category: c.patients for c in s.categories}
        for name in {n for m in got.values() for n in category_names(m)}:
            assert per_cat[name] == sum(1 for m in got.values() if name in category_names(m))
        assert s.accounts[0].name == attack["account"]


def test_incidents_from_alerts_cover_the_attacks_they_detect(hospital: Hospital, ledger: Any) -> None:
    led, idx = ledger
    alerts = scan(iter(hospital.events), hospital.context).alerts
    attackers = {str(a["account"]) for a in hospital.attacks}
    groups = [g for g in group_alerts(alerts) if g[0].account in attackers]
    assert groups, "the detection found none of the planted attacks"
    view = idx.view(led)
    best = 0.0
    for g in groups:
        inc = incident_from_alerts(g, now=0)
        assert inc.aware == min(r.time for r in inc.alerts)
        assert all(s.label.startswith("alert ") for s in inc.selectors)
        scope = compute_scope(view, inc.selectors, hospital.context)
        for attack in hospital.attacks:
            if attack["account"] == g[0].account:
                truth = set(hospital.truth[str(attack["id"])])
                best = max(best, len(truth & set(scope.refs)) / len(truth))
    # The alerts' windows, widened by an hour, hold a whole bulk attack.
    assert best >= 0.9


def test_notification_and_letters_and_emails(hospital: Hospital, ledger: Any, tmp_path: Path) -> None:
    led, idx = ledger
    view = idx.view(led)
    mediboard = next(a for a in hospital.attacks if a["kind"] == "privileged_app_bulk")
    inc = _incident(mediboard)
    inc.measures_taken.append("Le compte editeur-integration a été désactivé et son mot de passe renouvelé.")
    scope = compute_scope(view, inc.selectors, hospital.context)
    now = inc.aware + 20 * 3_600_000

    sev = assess(scope.summary, inc)
    assert sev.high_risk and sev.factors[0].term == "DPC"
    html_fr = cnil_notification_html(inc, scope.summary, EST, now=now)
    text = pdf_text(document_pdf(html_fr, "CNIL"))
    n = len(hospital.truth[str(mediboard["id"])])
    assert f"{n:,}".replace(",", "\xa0") in html_fr
    for needle in ("Délai CNIL (72 h) : 52 h 00 min restant", "Nombre de personnes concernées", "editeur-integration",
                   "allergies", "Données de santé", "Mesures prises", "Délégué à la protection des données",
                   "dpo@ch-sentinelle.fr", "Information des personnes", str(mediboard["addresses"][0])):
        assert needle in text, needle
    html_en = cnil_notification_html(inc, scope.summary, EST, now=now, lang="en")
    assert "Number of persons concerned" in html_en and "52 h 00 min left" in html_en

    # Letters for a smaller attack (30 persons or so): one PDF each, a print file, the CSV.
    dormant = next(a for a in hospital.attacks if a["kind"] == "dormant_account")
    inc2 = _incident(dormant)
    inc2.measures_taken.append("Le compte a été désactivé.")
    scope2 = compute_scope(view, inc2.selectors, hospital.context)
    done: list[tuple[int, int]] = []
    run = write_letters(scope2, hospital.directory, inc2, EST, tmp_path / "letters", now=now,
                        progress=lambda d, t: done.append((d, t)))
    persons = [e for e in scope2.exposures() if not hospital.directory.patients[e.ref.split("/")[1]].decoy]
    assert run.letters == len(persons) > 5 and done[-1][0] == len(scope2)
    for exp in persons[:6]:
        p = hospital.directory.patient(exp.ref)
        assert p is not None
        body = pdf_text((tmp_path / "letters" / f"letter-{p.id}.pdf").read_bytes())
        assert p.family.upper() in body
        for cat, labels in CATEGORY_LABELS.items():
            first_words = " ".join(labels["fr"].split()[:2])
            if cat in exp.categories:
                assert first_words in body, (cat, exp.ref)
        for cat in ("lab", "imaging", "billing"):
            if cat not in exp.categories:
                assert CATEGORY_LABELS[cat]["fr"] not in body
        assert "par e-mail ou par SMS" in body and "Ne répondez jamais immédiatement" in body
        assert "canaux officiels" in body and "02 35 00 00 00" in body
    printed = PdfReader(io.BytesIO((tmp_path / "letters" / "letters-print.pdf").read_bytes()))
    assert len(printed.pages) >= run.letters
    csv_text = (tmp_path / "letters" / "mail-merge.csv").read_text(encoding="utf-8-sig")
    assert len(csv_text.strip().splitlines()) == 1 + run.letters + run.decoys_skipped * 0

    # E-mails through a real SMTP server on the loopback.
    received: list[Message] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(message_from_bytes(envelope.content))
            return "250 Message accepted for delivery"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        ticks: list[int] = []
        report = send_letters(scope2, hospital.directory, inc2, EST, SmtpSettings(host="127.0.0.1", port=port),
                              now=now, progress=lambda d, t: ticks.append(d))
    finally:
        controller.stop()
    with_email = [e for e in persons if hospital.directory.patient(e.ref).emails]  # type: ignore[union-attr]
    assert report.sent == len(with_email) == len(received) > 5 and report.failed == 0
    assert ticks[-1] == len(scope2)
    by_to = {m["To"]: m for m in received}
    for exp in with_email[:5]:
        p = hospital.directory.patient(exp.ref)
        assert p is not None
        msg = by_to[p.emails[0]]
        assert "Information importante" in str(msg["Subject"])
        parts = {part.get_content_type(): part for part in msg.walk()}
        plain = parts["text/plain"].get_payload(decode=True).decode()  # type: ignore[union-attr]
        assert "Aucun professionnel de santé ni aucun établissement de santé" in plain
        assert p.family.upper() in plain
        assert "application/pdf" in parts

    # The timeline, with the response's notes and documents.
    store = IncidentStore(tmp_path / "incidents.db")
    store.save(inc2)
    store.add_note(inc2.id, Note(time=inc2.aware + 600_000, text="Compte désactivé", author="RSSI"))
    entries = build_timeline(store.get(inc2.id), scope2)
    assert [e.time for e in entries] == sorted(e.time for e in entries)
    kinds = {e.kind for e in entries}
    assert {"access", "activity", "awareness", "deadline", "action"} <= kinds
    html = timeline_html(store.get(inc2.id), entries, EST, now=now)
    assert "Premier accès du compte " + str(dormant["account"]) in html and "Compte désactivé (RSSI)" in html
    assert "Chronologie" in pdf_text(document_pdf(html, "timeline"))


def test_many_letters_are_laid_out_by_worker_processes_in_print_batches(
        hospital: Hospital, ledger: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large scope: PDFs made by a pool of processes, in file order, and print files of PRINT_BATCH letters."""
    from sentinelle.incident import letters

    led, idx = ledger
    mediboard = next(a for a in hospital.attacks if a["kind"] == "privileged_app_bulk")
    inc = _incident(mediboard)
    scope = compute_scope(idx.view(led), inc.selectors, hospital.context)
    monkeypatch.setattr(letters, "PRINT_BATCH", 30)
    run = write_letters(scope, hospital.directory, inc, EST, tmp_path, now=inc.aware, limit=70, workers=2)
    assert run.letters + run.no_address >= 66 and run.print_files == [
        f"letters-print-{i:04d}.pdf" for i in range(1, 1 + -(-run.letters // 30))]
    pages = [len(PdfReader(io.BytesIO((tmp_path / f).read_bytes())).pages) for f in run.print_files]
    assert sum(pages) >= run.letters and all(p >= 30 for p in pages[:-1])
    # The nth file is the nth person's letter, as the single-process run writes it.
    rows = (tmp_path / "mail-merge.csv").read_text(encoding="utf-8-sig").splitlines()[1:]
    last = [r for r in rows if r.endswith(".pdf")][-1]
    ref, name = last.split(",")[0], last.split(",")[-1]
    person = hospital.directory.patient(ref)
    assert person is not None and person.family.upper() in pdf_text((tmp_path / name).read_bytes())
