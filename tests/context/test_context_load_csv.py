"""Loading the care context from CSV exports through a TOML mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
from context_factory import DAY, patient, practitioner, t, write_ndjson

from sentinelle.context import CareContext, Reason
from sentinelle.errors import ConfigError
from sentinelle.events import ActorKind
from sentinelle.sources.quarantine import Quarantine

MAPPING = """
# Exports of the identity directory, the admission system and the scheduler
delimiter = ";"
timezone = "Europe/Paris"
time_format = "%d/%m/%Y %H:%M"
date_format = "%d/%m/%Y"

[accounts]
file = "comptes.csv"
time_format = "%d/%m/%Y"
login = "identifiant"
person = "matricule"
role = "profil"
department = "uf"
start = "debut"
end = "fin"
kind = "type"
privileged = "admin"
ins = "nir"
family = "nom"
given = "prenom"
birth_date = "naissance"

[accounts.roles]
MED = "doctor"
IDE = "nurse"
INFO = "it"

[patients]
file = "patients.csv"
id = "ipp"
id_system = "urn:oid:1.2.250.1.999"
ins = "ins"
family = "nom"
given = "prenom"
birth_date = "naissance"
address = "adresse"
postal_code = "cp"
restricted = "vip"

[stays]
file = "sejours.csv"
id = "numero"
patient = "ipp"
department = "uf"
start = "entree"
end = "sortie"
participants = "intervenants"

[appointments]
file = "rdv.csv"
patient = "ipp"
start = "debut"
end = "fin"
participants = "praticien"
"""

COMPTES = """identifiant;matricule;profil;uf;debut;fin;type;admin;nir;nom;prenom;naissance
adurand;M001;MED;cardio;01/01/2020;;;;2850976123456;Durand;Alice;12/09/1985
adurand2;M001;MED;pneumo;01/01/2022;;;;;;;
bmartin;M002;IDE;cardio;01/01/2019;31/01/2024;;;;Martin;Bob;03/02/1990
root;M003;INFO;;01/01/2015;;;;;;;
batch;batch;;cardio;;;application;;;;;
broken;M004;MED;cardio;32/13/2020;;;;;;;
;M005;MED;cardio;01/01/2020;;;;;;;
robot;M006;MED;cardio;;;cyborg;;;;;
"""

PATIENTS = """ipp;ins;nom;prenom;naissance;adresse;cp;vip
1001;2850976123456;DURAND;Alice;12/09/1985;12 rue de l'Église;76000;
1002;;Star;Rock;01/01/1960;1 place du Vieux-Marché;76000;oui
1003;;Petit;Léa;1/1/2001;;;
1004;;Roy;Jean;99/99/1999;;;
"""

SEJOURS = """numero;ipp;uf;entree;sortie;intervenants
S1;1003;cardio;01/03/2024 09:00;05/03/2024 12:00;adurand|bmartin
S2;1002;pneumo;10/03/2024 09:00;;adurand2
S3;1003;cardio;hier;05/03/2024 12:00;adurand
S4;1003;cardio;05/03/2024 12:00;01/03/2024 12:00;adurand
S5;;cardio;05/03/2024 12:00;;adurand
"""

RDV = """ipp;debut;fin;praticien
1001;10/06/2024 10:00;10/06/2024 10:30;adurand
"""


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    for name, text in (
        ("comptes.csv", COMPTES),
        ("patients.csv", PATIENTS),
        ("sejours.csv", SEJOURS),
        ("rdv.csv", RDV),
    ):
        (tmp_path / name).write_text(text, encoding="utf-8")
    path = tmp_path / "context.toml"
    path.write_text(MAPPING, encoding="utf-8")
    return path


def test_accounts_from_csv(mapping: Path) -> None:
    ctx = CareContext.load([], Quarantine(), mapping=mapping)
    info = ctx.account_info("adurand")
    assert info is not None
    assert (info.person, info.kind, info.role) == ("M001", ActorKind.HUMAN, "doctor")
    assert info.departments == frozenset({"cardio", "pneumo"})
    assert info.start == t("2019-12-31T23:00:00Z")  # midnight in Paris
    # both logins of one person reach the same person
    assert ctx.account_info("adurand2").person == "M001"  # type: ignore[union-attr]
    bob = ctx.account_info("bmartin")
    assert bob is not None and bob.end == t("2024-01-31T23:00:00Z") - 1  # end of 31/01 in Paris
    assert ctx.account_info("root").privileged  # type: ignore[union-attr]
    batch = ctx.account_info("batch")
    assert batch is not None and (batch.kind, batch.role) == (ActorKind.APPLICATION, "service")


def test_bad_rows_are_quarantined_with_their_line(mapping: Path) -> None:
    quarantine = Quarantine()
    ctx = CareContext.load([], quarantine, mapping=mapping)
    where = {(Path(r.origin).name, r.location): r.reason for r in quarantine.kept}
    assert set(where) == {
        ("comptes.csv", "line 7"),
        ("comptes.csv", "line 8"),
        ("comptes.csv", "line 9"),
        ("patients.csv", "line 5"),
        ("sejours.csv", "line 4"),
        ("sejours.csv", "line 5"),
        ("sejours.csv", "line 6"),
    }
    assert "32/13/2020" in where[("comptes.csv", "line 7")]
    assert where[("comptes.csv", "line 8")] == "account: login is empty"
    assert "cyborg" in where[("comptes.csv", "line 9")]
    assert where[("sejours.csv", "line 5")] == "stay: end is before start"
    assert where[("sejours.csv", "line 6")] == "stay: patient is empty"
    assert ctx.stats()["rejected"] == 7


def test_stays_and_appointments_explain(mapping: Path) -> None:
    ctx = CareContext.load([], Quarantine(), mapping=mapping)
    during = t("2024-03-02T10:00:00Z")
    assert (
        ctx.explain("adurand", "Patient/1003", during) == Reason.ENCOUNTER | Reason.DEPARTMENT | Reason.TREATED_BEFORE
    )
    assert ctx.explain("bmartin", "Patient/1003", during) == 0  # left cardio on 31/01/2024
    # an ongoing stay, a participant named by his second login
    assert ctx.explain("adurand", "Patient/1002", t("2024-04-01T10:00:00Z")) & Reason.ENCOUNTER
    # the appointment names no department: the doctor's departments at its start are used
    before = t("2024-06-10T08:00:00Z") - 20 * DAY
    assert ctx.explain("adurand", "Patient/1001", before) == Reason.APPOINTMENT | Reason.DEPARTMENT


def test_patients_from_csv(mapping: Path) -> None:
    ctx = CareContext.load([], Quarantine(), mapping=mapping)
    assert ctx.resolve_patient("urn:oid:1.2.250.1.999|1002") == "Patient/1002"
    assert ctx.resolve_patient("urn:oid:1.2.250.1.213.1.4.8|2850976123456") == "Patient/1001"
    assert ctx.is_restricted("Patient/1002") and not ctx.is_restricted("Patient/1003")
    assert ctx.is_own_record("adurand", "Patient/1001")
    assert ctx.is_coworker("bmartin", "Patient/1001")
    stats = ctx.stats()
    assert (stats["patients"], stats["encounters"], stats["appointments"], stats["accounts"]) == (3, 2, 1, 5)
    assert stats["organizations"] == 2


def test_csv_and_fhir_together(mapping: Path, tmp_path: Path) -> None:
    fhir = write_ndjson(tmp_path / "more.ndjson", [practitioner("x", "fhir-user"), patient("p9")])
    ctx = CareContext.load([fhir], Quarantine(), mapping=mapping)
    assert ctx.account_info("fhir-user") is not None and ctx.account_info("adurand") is not None
    assert ctx.stats()["patients"] == 4


def test_mapping_errors_name_the_file_and_key(tmp_path: Path, mapping: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[accounts]\nfile = "comptes.csv"\nlogin = "identifiant"\nlogni = "x"\n')
    with pytest.raises(ConfigError, match=r"bad.toml \[accounts\]: unknown key\(s\) logni"):
        CareContext.load([], mapping=bad)
    bad.write_text('[stays]\nfile = "sejours.csv"\npatient = "ipp"\n')
    with pytest.raises(ConfigError, match="start required"):
        CareContext.load([], mapping=bad)
    bad.write_text('[patients]\nfile = "patients.csv"\nid = "numero_ipp"\ndelimiter = ";"\n')
    with pytest.raises(ConfigError, match="numero_ipp"):
        CareContext.load([], mapping=bad)
    bad.write_text('[patients]\nfile = "absent.csv"\nid = "ipp"\n')
    with pytest.raises(ConfigError, match=r"absent\.csv"):
        CareContext.load([], mapping=bad)
    bad.write_text('timezone = "Mars/Olympus"\n[patients]\nfile = "patients.csv"\nid = "ipp"\n')
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        CareContext.load([], mapping=bad)
    bad.write_text("[patients\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        CareContext.load([], mapping=bad)
    bad.write_text('wards = "x"\n')
    with pytest.raises(ConfigError, match="wards"):
        CareContext.load([], mapping=bad)
