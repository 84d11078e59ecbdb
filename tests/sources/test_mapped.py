"""CSV and JSON lines of any shape, read through a TOML mapping: the shipped examples and the checks."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from sentinelle.errors import ConfigError, InputFormatError
from sentinelle.events import AccessEvent, category_names, format_time
from sentinelle.sources import mapped, open_events
from sentinelle.sources.quarantine import Quarantine

DPI_HEADER = "Date/Heure;Identifiant;Profil;Poste;Adresse IP;Action;Écran;IPP;INS;Résultat;Session;Critères"
DPI_ROWS = [
    # winter time (UTC+1)
    "03/01/2025 14:05:09;jdupont;MEDECIN;PC-CARDIO-12;10.2.4.17;CONSULTATION;DOSSIER;IPP004211;;OK;S-88121;",
    # summer time (UTC+2), INS given, two screens in one cell, a refused access
    "15/07/2025 08:00:00;mlefort;IDE;PC-URG-3;10.2.9.40;CONSULTATION;BIOLOGIE,ORDONNANCE;IPP000017;"
    "2840575123456;REFUS;S-1;",
    # a search, with its criteria; an unknown screen adds no category
    '04/01/2025 09:30:00;secr2;SECRETAIRE;PC-ACC-1;10.2.1.5;RECHERCHE;ECRAN_INCONNU;;;OK;S-9;"nom=MARTIN; né=1950"',
    # an interface account exporting, no result column value: default success
    "05/01/2025 02:00:00;robot-hl7;SERVICE;SRV-EAI;10.9.0.2;EXPORT;DOSSIER;IPP000001;;;;",
]


def _dpi_file(rows: list[str], encoding: str = "cp1252") -> bytes:
    return ("\r\n".join([DPI_HEADER, *rows]) + "\r\n").encode(encoding)


def _read(data: bytes, mapping: mapped.Mapping | str, origin: str = "in") -> tuple[list[AccessEvent], Quarantine]:
    q = Quarantine()
    return list(mapped.read_mapped(io.BytesIO(data), origin, q, mapping)), q


def test_shipped_mappings_load() -> None:
    assert mapped.builtin_mappings() == ["api_gateway_jsonl", "dpi_csv_fr"]
    dpi = mapped.load_mapping("dpi_csv_fr")
    assert (dpi.format, dpi.delimiter, dpi.encoding) == ("csv", ";", "cp1252")
    assert mapped.load_mapping("api-gateway-jsonl").format == "jsonl"  # dashes accepted


def test_dpi_csv_export() -> None:
    events, q = _read(_dpi_file(DPI_ROWS), "dpi_csv_fr", "export.csv")
    assert q.count == 0, q.kept
    a, b, c, d = events
    assert (a.account, a.action, a.outcome, a.actor_kind) == ("jdupont", "read", "success", "human")
    assert format_time(a.time) == "2025-01-03T13:05:09.000Z"  # Europe/Paris, winter
    assert a.patients == ("urn:sentinelle:ipp|IPP004211",)
    assert category_names(a.categories) == ["identity", "clinical"]
    assert (a.address, a.session, a.source, a.client) == ("10.2.4.17", "S-88121", "dpi-x", "dpi-x")
    assert a.id.startswith("sha1:")

    assert format_time(b.time) == "2025-07-15T06:00:00.000Z"  # summer
    assert b.outcome == "denied"
    assert b.patients == ("urn:sentinelle:ipp|IPP000017", "urn:oid:1.2.250.1.213.1.4.8|2840575123456")
    assert category_names(b.categories) == ["national_id", "prescription", "lab"]

    assert (c.action, c.patients, c.categories, c.query) == ("search", (), 0, "nom=MARTIN; né=1950")
    assert (d.actor_kind, d.action, d.outcome) == ("application", "export", "success")
    # Re-reading gives the same ids: a re-ingested export is stored once.
    assert [e.id for e in _read(_dpi_file(DPI_ROWS), "dpi_csv_fr")[0]] == [e.id for e in events]


def test_bad_rows_are_quarantined_and_reading_goes_on() -> None:
    rows = [
        DPI_ROWS[0],
        "31/02/2025 14:05:09;jdupont;MEDECIN;PC;10.2.4.17;CONSULTATION;DOSSIER;IPP1;;OK;S;",
        "03/01/2025 14:05:09;jdupont;MEDECIN;PC;10.2.4.17;LIRE;DOSSIER;IPP1;;OK;S;",
        "03/01/2025 14:05:09;;MEDECIN",
        "03/01/2025 14:05:09;jdupont;MEDECIN;PC;10.2.4.17;CONSULTATION;DOSSIER;IPP1;;PEUT-ETRE;S;",
        DPI_ROWS[1],
    ]
    data = _dpi_file(rows)
    data = data.replace(b"PC;10.2.4.17;LIRE", b"P\x81;10.2.4.17;LIRE")  # a byte cp1252 does not define
    events, q = _read(data, "dpi_csv_fr", "export.csv")
    assert [e.account for e in events] == ["jdupont", "mlefort"]
    assert [(r.location, r.reason) for r in q.kept] == [
        ("line 3", "bad time '31/02/2025 14:05:09' in column 'Date/Heure' (format %d/%m/%Y %H:%M:%S)"),
        ("line 4", "bytes not valid in cp1252 (check csv.encoding)"),
        ("line 5", "missing account: column 'Identifiant' is empty"),
        ("line 6", "unknown outcome value 'PEUT-ETRE' in column 'Résultat'"),
    ]
    assert q.kept[0].origin == "export.csv"


def test_unknown_action_value() -> None:
    row = "03/01/2025 14:05:09;jdupont;MEDECIN;PC;10.2.4.17;LIRE;DOSSIER;IPP1;;OK;S;"
    events, q = _read(_dpi_file([row]), "dpi_csv_fr")
    assert events == [] and q.kept[0].reason == "unknown action value 'LIRE' in column 'Action'"


def test_header_without_a_mapped_column() -> None:
    data = _dpi_file(DPI_ROWS).replace(b"Identifiant", b"Login")
    with pytest.raises(InputFormatError, match=re.escape("x.csv: column(s) 'Identifiant' named by mapping")):
        _read(data, "dpi_csv_fr", "x.csv")


def test_caller_stream_stays_open() -> None:
    stream = io.BytesIO(_dpi_file(DPI_ROWS))
    assert len(list(mapped.read_mapped(stream, "in", Quarantine(), "dpi_csv_fr"))) == 4
    assert not stream.closed


GATEWAY = [
    {
        "ts": 1741010709123,
        "trace_id": "7f3a",
        "client_id": "rdv-connect",
        "remote_addr": "203.0.113.9",
        "token_id": "tk-19",
        "request": {"interaction": "search-type", "resource": "Patient", "query": "family=MARTIN"},
        "response": {"status": 200},
        "patients": ["Patient/p1", "Patient/p2"],
    },
    {
        "ts": 1741010710000,
        "trace_id": "7f3b",
        "client_id": "rdv-connect",
        "request": {"interaction": "read", "resource": "Observation"},
        "response": {"status": 403},
        "patients": ["Patient/p1"],
    },
    {
        "ts": 1741010711000,
        "trace_id": "7f3c",
        "client_id": "labo-export",
        "request": {"interaction": "$export", "resource": "Group"},
        "response": {"status": 500},
    },
]


def test_api_gateway_json_lines() -> None:
    lines = [json.dumps(GATEWAY[0]), "", "{not json", json.dumps(GATEWAY[1]), "[1, 2]", json.dumps(GATEWAY[2])]
    events, q = _read(("\n".join(lines) + "\n").encode(), "api_gateway_jsonl", "gw.jsonl")
    a, b, c = events
    assert (a.id, a.account, a.client, a.action, a.outcome) == (
        "7f3a",
        "rdv-connect",
        "rdv-connect",
        "search",
        "success",
    )
    assert (a.actor_kind, a.auth, a.source, a.session) == ("api_client", "oauth", "api-gateway", "tk-19")
    assert a.patients == ("Patient/p1", "Patient/p2") and a.query == "family=MARTIN"
    assert format_time(a.time) == "2025-03-03T14:05:09.123Z"
    assert category_names(a.categories) == ["identity"]
    assert (b.action, b.outcome, category_names(b.categories)) == ("read", "denied", ["lab"])
    assert (c.action, c.outcome, c.categories, c.patients) == ("export", "error", 0, ())
    assert [(r.location, r.reason.split(":")[0]) for r in q.kept] == [
        ("line 3", "invalid JSON"),
        ("line 5", "line is not a JSON object"),
    ]


def _mapping(tmp_path: Path, text: str) -> mapped.Mapping:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    return mapped.load_mapping(path)


MINIMAL = """
format = "csv"
[fields]
time = "t"
account = "who"
action = "what"
"""


def test_minimal_mapping_without_header_and_with_plain_values(tmp_path: Path) -> None:
    m = _mapping(
        tmp_path,
        """
format = "csv"
[csv]
header = false
[fields]
time = { column = 1, format = "%Y%m%d %H%M%S.%f %z" }
account = 2
action = 3
patients = { column = 4, separator = "|", prefix = "Patient/" }
categories = { column = 5, separator = "+" }
""",
    )
    data = b"20250103 140509.250 +0100,alice,READ,12|13,identity+Lab\n20250103 140509.250 +0100,bob,peek,,\n"
    events, q = _read(data, m)
    assert len(events) == 1 and events[0].action == "read"  # plain values are matched case-insensitively
    assert format_time(events[0].time) == "2025-01-03T13:05:09.250Z"
    assert events[0].patients == ("Patient/12", "Patient/13")
    assert category_names(events[0].categories) == ["identity", "lab"]
    assert q.kept[0].reason == "unknown action value 'peek' in column '3'"


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("iso", "2025-01-03T14:05:09+01:00", "2025-01-03T13:05:09.000Z"),
        ("iso", "2025-01-03 14:05:09", "2025-01-03T13:05:09.000Z"),  # naive: the mapping's zone
        ("epoch_s", "1735909509.5", "2025-01-03T13:05:09.500Z"),
        ("epoch_ms", "1735909509123", "2025-01-03T13:05:09.123Z"),
        ("%d %b %Y %H:%M", "03 Jan 2025 14:05", "2025-01-03T13:05:00.000Z"),  # strptime fallback
        ("%d/%m/%y %Hh%M", "03/01/25 14h05", "2025-01-03T13:05:00.000Z"),
        # the spring change in Paris: 01:30 is still winter time, 03:30 already summer time
        ("%d/%m/%Y %H:%M", "30/03/2025 01:30", "2025-03-30T00:30:00.000Z"),
        ("%d/%m/%Y %H:%M", "30/03/2025 03:30", "2025-03-30T01:30:00.000Z"),
        # the autumn hour that happens twice: the first (summer-time) one is taken
        ("%d/%m/%Y %H:%M", "26/10/2025 02:30", "2025-10-26T00:30:00.000Z"),
        ("%d/%m/%Y %H:%M", "26/10/2025 03:30", "2025-10-26T02:30:00.000Z"),
    ],
)
def test_time_formats(tmp_path: Path, fmt: str, value: str, expected: str) -> None:
    zone = "" if fmt.startswith("epoch") else ', timezone = "Europe/Paris"'
    m = _mapping(tmp_path, MINIMAL.replace('time = "t"', f'time = {{ column = "t", format = "{fmt}"{zone} }}'))
    events, q = _read(f"t,who,what\n{value},alice,read\n".encode(), m)
    assert q.count == 0, q.kept
    assert format_time(events[0].time) == expected


def test_constants_and_defaults(tmp_path: Path) -> None:
    m = _mapping(
        tmp_path,
        MINIMAL.replace('action = "what"', 'outcome = "res"')
        + """
[constants]
action = "read"
source = "dpi-y"
categories = ["clinical"]
[defaults]
outcome = "error"
""",
    )
    events, _ = _read(b"t,who,res\n2025-01-03T10:00:00Z,alice,\n2025-01-03T10:00:00Z,bob,denied\n", m)
    assert [(e.action, e.outcome, e.source, category_names(e.categories)) for e in events] == [
        ("read", "error", "dpi-y", ["clinical"]),
        ("read", "denied", "dpi-y", ["clinical"]),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("format = 'xml'\n", 'format: must be "csv" or "jsonl"'),
        ("colour = 1\n" + MINIMAL, "colour: unknown key"),
        (MINIMAL + "colour = 1\n", "fields.colour: not an event field"),
        (MINIMAL.replace('account = "who"', ""), "fields.account: required"),
        (
            MINIMAL.replace('action = "what"', 'action = { column = "op", map = { X = "lire" } }'),
            "fields.action.map.X: 'lire' is not a valid action",
        ),
        (
            MINIMAL + 'categories = { column = "c", map = { X = "secret" } }\n',
            "fields.categories.map.X: unknown category 'secret'",
        ),
        (
            MINIMAL.replace('time = "t"', 'time = { column = "t", timezone = "Mars/Olympus" }'),
            "fields.time.timezone: unknown time zone",
        ),
        (
            MINIMAL.replace('time = "t"', 'time = { column = "t", format = "dd/mm/yyyy" }'),
            "fields.time.format: must be iso",
        ),
        (
            MINIMAL + 'client = { column = "c", separator = "," }\n',
            "fields.client.separator: only for patients and categories",
        ),
        (MINIMAL + "[constants]\naccount = 'x'\n", "constants.account: also mapped in fields.account"),
        (MINIMAL + "[csv]\nencoding = 'klingon'\n", "csv.encoding: unknown encoding 'klingon'"),
        (MINIMAL + "[csv]\ndelimiter = ';;'\n", "csv.delimiter: must be one character"),
        (MINIMAL + "[defaults]\nclient = 'x'\n", "defaults.client: no fields.client"),
        (MINIMAL + "[fields.client]\ncolumn = 'c'\nfallback = 'x'\n", "fields.client.fallback: only with `map`"),
        ("format = 'csv'\n[fields\n", "not valid TOML"),
    ],
)
def test_mapping_errors_name_the_key_and_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace("*", "\\*")) as info:
        _mapping(tmp_path, text)
    assert str(info.value).startswith(str(tmp_path / "m.toml"))


def test_unknown_mapping_name() -> None:
    with pytest.raises(ConfigError, match="no such mapping file \\(shipped mappings: api_gateway_jsonl, dpi_csv_fr\\)"):
        mapped.load_mapping("nope")


def test_plain_read_says_a_mapping_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(_dpi_file(DPI_ROWS))
    with pytest.raises(InputFormatError, match="needs a mapping file"):
        list(open_events([path], Quarantine(), fmt="mapped"))
    events = list(open_events([path], Quarantine(), mapping="dpi_csv_fr"))
    assert len(events) == 4
