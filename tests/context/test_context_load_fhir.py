"""Loading FHIR context files: NDJSON, JSON, Bundles, arrays, gzip, directories, bad records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import msgspec
import pytest
from context_factory import (
    device,
    encounter,
    organization,
    patient,
    practitioner,
    role,
    t,
    write_ndjson,
)

from sentinelle.context import CareContext, Reason
from sentinelle.errors import InputFormatError
from sentinelle.sources.quarantine import Quarantine

TESTDATA = Path(__file__).parents[2] / ".." / "shared" / "testdata"
AT = t("2024-03-01T12:00:00Z")


def _line(resource: dict[str, object]) -> bytes:
    return msgspec.json.encode(resource) + b"\n"


def test_ndjson_bad_lines_are_quarantined_and_the_rest_loads(tmp_path: Path) -> None:
    lines = [
        _line(practitioner("d1", "alice")),
        b"{not json at all\n",
        _line({**patient("p1"), "birthDate": 19850912}),  # wrong type
        b"\n",
        _line({"resourceType": "Patient", "name": [{"family": "X"}]}),  # no id
        _line(encounter("e1", "p2", ["Practitioner/d1"], "yesterday", None)),  # bad date
        _line({"resourceType": "Observation", "id": "o1"}),  # not used: skipped
        _line({"id": "no-type"}),
        b"[1, 2]\n",
        _line(patient("p2")),
        _line(encounter("e2", "p2", ["Practitioner/d1"], "2024-03-01T08:00:00Z", "2024-03-02T08:00:00Z")),
    ]
    path = tmp_path / "context.ndjson"
    path.write_bytes(b"".join(lines))
    quarantine = Quarantine()
    ctx = CareContext.load([path], quarantine)
    where = {r.location: r.reason for r in quarantine.kept}
    assert set(where) == {"line 2", "line 3", "line 5", "line 6", "line 8", "line 9"}
    assert "not a JSON object" in where["line 2"]
    assert where["line 3"].startswith("Patient:") and "birthDate" in where["line 3"]
    assert where["line 5"] == "Patient has no id"
    assert where["line 6"].startswith("Encounter/e1 period:") and "yesterday" in where["line 6"]
    assert where["line 8"] == "no resourceType"
    assert all(r.origin == str(path) for r in quarantine.kept)
    stats = ctx.stats()
    assert (stats["rejected"], stats["skipped"], stats["patients"], stats["encounters"]) == (6, 1, 1, 1)
    assert ctx.explain("alice", "Patient/p2", AT) & Reason.ENCOUNTER


def test_ndjson_with_a_broken_first_line(tmp_path: Path) -> None:
    path = tmp_path / "c.ndjson"
    path.write_bytes(b'{"resourceType": "Patient", "id": }\n' + _line(patient("p1")) + _line(patient("p2")))
    quarantine = Quarantine()
    ctx = CareContext.load([path], quarantine)
    assert [r.location for r in quarantine.kept] == ["line 1"]
    assert ctx.stats()["patients"] == 2


def test_single_resource_pretty_printed(tmp_path: Path) -> None:
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(patient("p1", ins="1"), indent=2))
    ctx = CareContext.load([path])
    assert ctx.resolve_patient("urn:oid:1.2.250.1.213.1.4.8|1") == "Patient/p1"


def test_bundle_with_a_bad_entry(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": practitioner("d1", "alice")},
            {"resource": {**patient("p1"), "address": "not a list"}},
            {"resource": patient("p2")},
            {"resource": encounter("e1", "p2", ["Practitioner/d1"], "2024-03-01T08:00:00Z", "2024-03-02")},
            {"request": {"method": "DELETE", "url": "Patient/p9"}},
        ],
    }
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, indent=1))
    quarantine = Quarantine()
    ctx = CareContext.load([path], quarantine)
    assert [(r.location, r.reason.split(":")[0]) for r in quarantine.kept] == [("entry 2", "Patient")]
    assert ctx.stats()["patients"] == 1
    assert ctx.explain("alice", "Patient/p2", AT) & Reason.ENCOUNTER


def test_bundle_inside_ndjson_names_line_and_entry(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"resource": patient("p1")}, {"resource": {"resourceType": "Patient"}}],
    }
    path = tmp_path / "b.ndjson"
    path.write_bytes(_line(patient("p0")) + _line(bundle))
    quarantine = Quarantine()
    CareContext.load([path], quarantine)
    assert [r.location for r in quarantine.kept] == ["line 2 entry 2"]


def test_json_array_of_resources(tmp_path: Path) -> None:
    path = tmp_path / "all.json"
    path.write_text(json.dumps([patient("p1"), organization("cardio"), {"resourceType": "Patient"}], indent=2))
    quarantine = Quarantine()
    ctx = CareContext.load([path], quarantine)
    assert ctx.stats()["patients"] == 1 and ctx.stats()["organizations"] == 1
    assert [r.location for r in quarantine.kept] == ["entry 3"]


def test_gzip_and_directories(tmp_path: Path) -> None:
    folder = tmp_path / "context"
    (folder / "staff").mkdir(parents=True)
    write_ndjson(folder / "staff" / "Practitioner.ndjson", [practitioner("d1", "alice")])
    write_ndjson(folder / "staff" / "PractitionerRole.ndjson", [role("r1", "d1", "cardio", "doctor")])
    resources = [patient("p1"), encounter("e1", "p1", ["Practitioner/d1"], "2024-03-01T08:00:00Z", None, "cardio")]
    with gzip.open(folder / "care.ndjson.gz", "wb") as f:
        f.write(b"".join(_line(r) for r in resources))
    (folder / "README.txt").write_text("not FHIR, left alone in a directory walk\n")
    (folder / ".hidden.ndjson").write_text("garbage\n")
    ctx = CareContext.load([folder])
    assert ctx.explain("alice", "Patient/p1", AT) == Reason.ENCOUNTER | Reason.DEPARTMENT | Reason.TREATED_BEFORE
    assert ctx.stats()["rejected"] == 0


def test_gzip_file_without_gz_suffix(tmp_path: Path) -> None:
    path = tmp_path / "context.ndjson"
    path.write_bytes(gzip.compress(_line(patient("p1"))))
    assert CareContext.load([path]).stats()["patients"] == 1


def test_a_file_that_is_not_json_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(InputFormatError) as err:
        CareContext.load([path])
    assert str(path) in str(err.value)
    with pytest.raises(InputFormatError, match="no such file"):
        CareContext.load([tmp_path / "missing.ndjson"])


def test_broken_json_document_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "resourceType": "Bundle",\n  "entry": [\n')
    quarantine = Quarantine()
    ctx = CareContext.load([path], quarantine)
    assert [r.location for r in quarantine.kept] == ["document"]
    assert ctx.patients_count == 0


def test_quarantine_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"{oops}\n" + _line(patient("p1")))
    qfile = tmp_path / "q" / "rejected.jsonl"
    with Quarantine(qfile) as quarantine:
        CareContext.load([path], quarantine)
    rows = [json.loads(line) for line in qfile.read_text().splitlines()]
    assert [(r["origin"], r["location"]) for r in rows] == [(str(path), "line 1")]


def test_r5_shapes(tmp_path: Path) -> None:
    enc = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "in-progress",
        "class": [{"coding": [{"code": "IMP"}]}],
        "subject": {"reference": "Patient/p1"},
        "participant": [{"actor": {"reference": "Practitioner/d1"}}],
        "serviceProvider": {"reference": "Organization/cardio"},
        "actualPeriod": {"start": "2024-03-01T08:00:00+01:00"},
    }
    dev = {**device("api", "client-42", "api_client", owner="cardio"), "type": [{"text": "api_client"}]}
    path = write_ndjson(tmp_path / "r5.ndjson", [practitioner("d1", "alice"), patient("p1"), enc, dev])
    ctx = CareContext.load([path])
    assert ctx.explain("alice", "Patient/p1", AT) & Reason.ENCOUNTER
    info = ctx.account_info("client-42")
    assert info is not None and info.kind == "api_client"


def test_partial_dates_cover_their_whole_period(tmp_path: Path) -> None:
    path = write_ndjson(
        tmp_path / "c.ndjson",
        [
            practitioner("d1", "alice"),
            role("r1", "d1", "cardio", "doctor", "2023", "2024-03"),
            patient("p1"),
            encounter("e1", "p1", [], "2024-03-20T08:00:00Z", "2024-03-21T08:00:00Z", org="cardio"),
        ],
    )
    ctx = CareContext.load([path])
    info = ctx.account_info("alice")
    assert info is not None and (info.start, info.end) == (t("2023-01-01"), t("2024-04-01") - 1)
    assert ctx.explain("alice", "Patient/p1", t("2024-03-31T23:00:00Z")) == Reason.DEPARTMENT


def test_audit_events_in_the_shared_testdata_are_skipped_not_rejected() -> None:
    folder = TESTDATA / "fhir-r4"
    if not folder.is_dir():
        pytest.skip("shared testdata absent (../shared/testdata/fhir-r4)")
    files = sorted(folder.glob("*.json"))
    quarantine = Quarantine()
    ctx = CareContext.load(files, quarantine)
    assert ctx.stats()["skipped"] == len(files)
    assert quarantine.count == 0
