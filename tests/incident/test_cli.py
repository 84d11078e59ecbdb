"""The `incident` Typer sub-app end to end on event files (the lead mounts it on `sentinelle`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from incident_factory import Hospital
from typer.testing import CliRunner

from sentinelle.incident.cli import incident_app


def test_cli_flow(hospital: Hospital, tmp_path: Path) -> None:
    run = CliRunner()
    store = str(tmp_path / "inc.db")
    data = ["--events", str(hospital.events_dir), "--context", str(hospital.context_dir)]
    attack = next(a for a in hospital.attacks if a["kind"] == "stolen_credentials")
    est = tmp_path / "est.toml"
    est.write_text('name = "CH Sentinelle"\nofficial_phone = "02 35 00 00 00"\ndpo_email = "dpo@ch.fr"\n')
    r = run.invoke(incident_app, ["open", "Identifiants volés", "--account", str(attack["account"]),
                                  "--address", str(attack["addresses"][0]), "--start", str(attack["start"]),
                                  "--end", "2030-01-01T00:00:00Z", "--store", store])
    assert r.exit_code == 0, r.output
    inc_id = r.output.split()[1]
    r = run.invoke(incident_app, ["scope", inc_id, *data, "--store", store])
    assert r.exit_code == 0, r.output
    assert f"patients: {len(hospital.truth[str(attack['id'])]):,}" in r.output
    r = run.invoke(incident_app, ["notify", inc_id, *data, "--out", str(tmp_path / "n"), "--establishment", str(est),
                                  "--store", store])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "n" / f"{inc_id}-cnil-fr.pdf").stat().st_size > 2000
    r = run.invoke(incident_app, ["letters", inc_id, *data, "--out", str(tmp_path / "l"), "--limit", "3",
                                  "--establishment", str(est), "--store", store])
    assert r.exit_code == 0, r.output
    with (tmp_path / "l" / "mail-merge.csv").open(encoding="utf-8-sig") as f:
        assert len(list(csv.DictReader(f))) == 3
    r = run.invoke(incident_app, ["note", inc_id, "Plainte déposée", "--store", store])
    assert r.exit_code == 0, r.output
    r = run.invoke(incident_app, ["timeline", inc_id, *data, "--out", str(tmp_path / "t"), "--store", store])
    assert r.exit_code == 0, r.output
    assert "Plainte déposée" in (tmp_path / "t" / f"{inc_id}-timeline-fr.csv").read_text()
    r = run.invoke(incident_app, ["list", "--store", store])
    assert inc_id in r.output and "Délai CNIL" in r.output
    victims = hospital.victims(str(attack["id"]))[:12]
    sample = tmp_path / "leak.json"
    sample.write_text(json.dumps([{"email": hospital.directory.patient(v).emails[0]} for v in victims]))  # type: ignore[union-attr]
    r = run.invoke(incident_app, ["attribute", str(sample), *data])
    assert r.exit_code == 0, r.output
    assert str(attack["account"]) in r.output.split("account")[1]
    r = run.invoke(incident_app, ["history", victims[0], "--requester", "dpo", "--purpose", "demande",
                                  "--out", str(tmp_path / "h.pdf"), *data, "--store", store])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "h.pdf").exists() and (tmp_path / "h.json").exists()
    r = run.invoke(incident_app, ["scope", "nope", *data, "--store", store])
    assert r.exit_code == 2 and "no incident" in r.output
