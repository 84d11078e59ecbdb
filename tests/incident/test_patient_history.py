"""A patient's access history: who, when, what, why; inclusion proofs that verify; audited look-ups."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest
from incident_factory import Hospital
from pypdf import PdfReader

from sentinelle.errors import ConfigError
from sentinelle.incident import (
    Establishment,
    HistoryReport,
    IncidentStore,
    ScopeIndex,
    document_pdf,
    history_html,
    patient_history,
    verify_report,
)
from sentinelle.ledger import Keyring, Ledger, SigningKey
from sentinelle.ledger.settings import LedgerSettings

EST = Establishment(name="CH Sentinelle", dpo_email="dpo@ch-sentinelle.fr")


def test_history_from_the_ledger_with_proofs_and_audit(hospital: Hospital, tmp_path: Path) -> None:
    ring = Keyring.generate()
    settings = LedgerSettings(checkpoint_events=5_000)
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", ring, signing_key=SigningKey.generate(), settings=settings)
    idx = ScopeIndex.open(tmp_path / "idx", ring, write=True)
    idx.attach(led)
    led.append_batch(hospital.events[:20_000])
    snoop = next(a for a in hospital.attacks if a["kind"] == "relative_snooping")
    victim = hospital.victims(str(snoop["id"]))[0]
    store = IncidentStore(tmp_path / "inc.db")
    # The victim named by its INS: any spelling finds every access.
    entry = hospital.directory.patient(victim)
    assert entry is not None
    ins_ref = next(i for i in entry.identifiers if i.startswith("urn:oid:1.2.250.1.213.1.4.8|"))
    rep = patient_history(ins_ref, requester="dpo.martin", purpose="demande du patient", context=hospital.context,
                          directory=hospital.directory, view=idx.view(led), reader=led, store=store,
                          writer=led, now=1_800_000_000_000)
    expected = [e for e in hospital.events[:20_000] if victim in e.patients]
    assert rep.patient == victim and len(rep.accesses) == len(expected) > 0
    assert [a.event_id for a in rep.accesses] == [e.id for e in sorted(expected, key=lambda e: (e.time, e.id))]
    assert not verify_report(rep) and all(a.proof is not None for a in rep.accesses)
    assert any(a.proof and a.proof.signed for a in rep.accesses) and rep.checkpoints
    # Names are hidden by default; roles and departments are given; some accesses are explained.
    assert all(a.who == "" for a in rep.accesses) and any(a.role for a in rep.accesses)
    assert any(a.reasons for a in rep.accesses)
    # The report round-trips as JSON and a forged line is caught.
    again = msgspec.json.decode(msgspec.json.encode(rep), type=HistoryReport)
    assert not verify_report(again)
    first = again.accesses[0]
    assert first.proof is not None
    forged = msgspec.structs.replace(first, proof=msgspec.structs.replace(first.proof, leaf="00" * 32))
    again.accesses[0] = forged
    assert verify_report(again)
    # The look-up is audited: in the store by pseudonym, and as a read in the ledger.
    looks = store.lookups()
    assert [(x.requester, x.purpose) for x in looks] == [("dpo.martin", "demande du patient")]
    assert looks[0].patient.startswith("p.") and looks[0].patient == led.pseudonym(victim)
    audited = list(led.events(account="dpo.martin"))
    assert len(audited) == 1 and audited[0].event.patients == (victim,)
    # Plain-language HTML and PDF, in French and English, names shown on request.
    html_fr = history_html(rep, EST, directory=hospital.directory)
    assert "aucune relation de soins enregistrée" in html_fr or "relation de soins" in html_fr
    assert "C-579/21" in html_fr and "RFC 9162" in html_fr
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(document_pdf(html_fr, "h"))).pages).split())
    assert "Historique des accès" in text and entry.family.upper() in text
    shown = patient_history(victim, requester="dpo.martin", purpose="plainte", context=hospital.context,
                            directory=hospital.directory, view=idx.view(led), reader=led, names="shown",
                            proofs=False)
    assert any(a.who for a in shown.accesses)
    assert "Access history" in history_html(shown, EST, lang="en", directory=hospital.directory)
    with pytest.raises(ConfigError):
        patient_history(victim, requester="", purpose="x", context=hospital.context, events=[])
    idx.close()
    led.close()


def test_history_from_files_without_ledger(hospital: Hospital) -> None:
    victim = hospital.victims(str(hospital.attacks[0]["id"]))[0]
    rep = patient_history(victim, requester="rssi", purpose="enquête", context=hospital.context,
                          directory=hospital.directory, events=hospital.events)
    assert rep.accesses and not rep.ledger and all(a.proof is None for a in rep.accesses)
    assert any(a.account == hospital.attacks[0]["account"] and not a.reasons for a in rep.accesses)


def test_a_namesake_on_a_search_page_is_told_why(hospital: Hospital, tmp_path: Path) -> None:
    """A patient shown by a name search that found someone the account treats: explained as a namesake."""
    from sentinelle.incident.patient_history import SEARCH_PAGE

    ctx = hospital.context
    pages: dict[tuple[str, int], list[str]] = {}
    for e in hospital.events:
        if e.action == "search" and e.outcome == "success" and e.id not in hospital.labels:
            pages.setdefault((e.account, e.time), []).extend(e.patients)
    case = next(((acct, t, p) for (acct, t), pats in pages.items() if len(set(pats)) > 1
                 for p in pats if not ctx.explain(acct, p, t)
                 and any(ctx.explain(acct, q, t) for q in pats if q != p)), None)
    assert case is not None, "the simulated hospital has namesakes on search pages"
    account, t, namesake = case
    ring = Keyring.generate()
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", ring, signing_key=SigningKey.generate())
    idx = ScopeIndex.open(tmp_path / "idx", ring, write=True)
    idx.attach(led)
    led.append_batch([e for e in hospital.events if e.time <= t + 60_000])
    rep = patient_history(namesake, requester="dpo", purpose="demande du patient", context=ctx, view=idx.view(led),
                          reader=led, proofs=False)
    line = next(a for a in rep.accesses if a.account == account and a.time == t)
    assert line.reasons == [SEARCH_PAGE]
    assert "homonyme" in history_html(rep, EST) and "namesake" in history_html(rep, EST, lang="en")
