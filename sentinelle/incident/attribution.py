"""Leak attribution: which accounts, applications, addresses and hours a leaked sample came from.

Why: a breach is often learnt from a forum post ("near2tlg" offering 750,000 records
with a sample). The sample's rows are matched to patients (INS/NIR, local identifier,
e-mail, phone, name with birth date), then the audit trail says whose reads cover them.

Method. For each candidate source c (an account; likewise a client application or an
address) the reads of c that returned the sample's kind of data (identity, contact,
national identifier or appointments) within c's covering window give R_c, the set of
patients c could have leaked, and the coverage k_c / n of the n matched rows. The
sample is scored as a draw from R_c with a fraction eps of noise rows (fakes or other
patients): log-likelihood ratio against a draw from the whole population P,

    LLR_c = sum over matched rows x of log((1 - eps) * [x in R_c] * P / |R_c| + eps)

so a source that read exactly the sample's patients, and few others, scores high; one
that reads everybody (an admissions desk) scores near zero however much it covers. The
posterior over candidates (softmax of LLR) times the coverage is the confidence;
`others` counts the other candidates that cover at least as many rows. With the care
context, a source whose covering reads a care relationship explains is weighted down
(`care_weight`): a snooper reading one neighbour's record stands out from the ward's
nurses who read it too. A decoy record in
the sample (a patient nobody has a reason to open) identifies the readers of that decoy
at once: confidence 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from sentinelle.context import CareContext
from sentinelle.errors import ConfigError, InputFormatError
from sentinelle.events import Category
from sentinelle.incident.directory import Directory, PatientEntry, norm_name, norm_phone
from sentinelle.incident.index import IndexView

__all__ = [
    "FIELDS",
    "Attribution",
    "Candidate",
    "RowMatch",
    "attribute",
    "detect_columns",
    "match_rows",
    "read_sample",
]

#: Fields a sample column can hold.
FIELDS = ("family", "given", "name", "birth_date", "phone", "email", "ins", "ipp", "postal_code", "city", "address")

_HEADERS: dict[str, tuple[str, ...]] = {
    "family": ("nom", "nomdefamille", "nomdenaissance", "nomusage", "family", "familyname", "lastname", "surname",
               "namelast"),
    "given": ("prenom", "prenoms", "given", "givenname", "firstname", "first", "namefirst"),
    "name": ("nomcomplet", "fullname", "name", "patient", "identite", "patientname", "nomprenom"),
    "birth_date": ("datenaissance", "datedenaissance", "naissance", "ddn", "dob", "birthdate", "dateofbirth", "birth",
                   "birthday", "bdate", "nele", "nee"),
    "phone": ("telephone", "tel", "phone", "mobile", "portable", "telmobile", "phonenumber", "gsm", "numtel",
              "telephoneportable"),
    "email": ("email", "mail", "courriel", "emailaddress", "adressemail", "adresseemail", "mailaddress"),
    "ins": ("nir", "ins", "numsecu", "numerosecu", "securitesociale", "numss", "ssn", "insnir", "matriculeins",
            "numerodesecuritesociale", "nss"),
    "ipp": ("ipp", "idpatient", "patientid", "numeropatient", "mrn", "id", "numdossier", "dossier"),
    "postal_code": ("cp", "codepostal", "postalcode", "zip", "zipcode"),
    "city": ("ville", "city", "commune"),
    "address": ("adresse", "address", "rue", "street", "adressepostale"),
}
_HEADER_OF = {h: f for f, hs in _HEADERS.items() for h in hs}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I)
_DATE = re.compile(r"^(\d{4}[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}|\d{8})$")
_NIR = re.compile(r"^[12]\s?\d{2}\s?\d{2}\s?(\d{2}|2[AB])\s?\d{3}\s?\d{3}(\s?\d{2})?$", re.I)
_PHONE = re.compile(r"^\+?[\d\s.()-]{9,18}$")

#: Categories whose reads reveal a sample's identity-like fields.
REVEALING = int(Category.IDENTITY | Category.CONTACT | Category.NATIONAL_ID | Category.APPOINTMENT)


def parse_date(text: str) -> str:
    """An ISO date (YYYY-MM-DD) of the usual spellings, or "".

    >>> parse_date("03/02/1961"), parse_date("1961-02-03"), parse_date("19610203")
    ('1961-02-03', '1961-02-03', '1961-02-03')
    """
    t = text.strip()
    try:
        if re.match(r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}", t):
            y, m, d = (int(x) for x in re.split(r"[-/]", t[:10])[:3])
        elif re.match(r"^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$", t):
            d, m, y = (int(x) for x in re.split(r"[-/.]", t))
        elif re.match(r"^\d{8}$", t):
            y, m, d = int(t[:4]), int(t[4:6]), int(t[6:])
        else:
            return ""
        return date(y, m, d).isoformat()
    except ValueError:
        return ""


def read_sample(path: str | Path, mapping: Mapping[str, str] | None = None
                ) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Rows of a leaked sample (CSV of any delimiter, JSON array, JSON lines, or {"data": [...]})
    as {field: value}, and the column -> field mapping used (detected, then `mapping` applied)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputFormatError(str(p), f"cannot read the sample ({exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    records = _records(text, str(p))
    if not records:
        raise InputFormatError(str(p), "the sample holds no rows")
    columns = list(dict.fromkeys(k for r in records[:200] for k in r))
    cols = detect_columns(columns, records)
    for col, field in (mapping or {}).items():
        if field not in FIELDS:
            raise ConfigError(f"mapping {col}={field}: unknown field (one of {', '.join(FIELDS)})")
        if col not in columns:
            raise ConfigError(f"mapping {col}={field}: the sample has no column {col!r}")
        cols = {k: v for k, v in cols.items() if v != field or k == col}
        cols[col] = field
    if not cols:
        raise InputFormatError(str(p), "no column could be recognised; give a mapping (column=field)")
    rows = [{cols[k]: str(v).strip() for k, v in r.items() if k in cols and v not in (None, "")} for r in records]
    return rows, cols


def _records(text: str, where: str) -> list[dict[str, Any]]:
    s = text.lstrip()
    if s.startswith(("[", "{")):
        try:
            data = json.loads(s)
        except ValueError:
            data = None
            lines = []
            for n, line in enumerate(s.splitlines(), 1):
                if line.strip():
                    try:
                        lines.append(json.loads(line))
                    except ValueError as exc:
                        raise InputFormatError(f"{where}:{n}", f"not JSON ({exc})") from exc
            data = lines
        if isinstance(data, dict):
            for key in ("data", "rows", "records", "patients", "items", "results"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
            else:
                data = [data]
        if not isinstance(data, list):
            raise InputFormatError(where, "a JSON sample must be a list of objects")
        return [_flatten(r) for r in data if isinstance(r, dict)]
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    return [dict(r) for r in reader]


def _flatten(r: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in r.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = v[0] if v and not isinstance(v[0], (dict, list)) else json.dumps(v)
        else:
            out[key] = v
    return out


def detect_columns(columns: list[str], records: list[dict[str, Any]]) -> dict[str, str]:
    """column -> field, by header names first, then by what the values look like."""
    out: dict[str, str] = {}
    for c in columns:
        key = norm_name(c.split(".")[-1])
        f = _HEADER_OF.get(key)
        if f is None:
            for h, field in _HEADER_OF.items():
                if len(h) >= 4 and (key.startswith(h) or key.endswith(h)):
                    f = field
                    break
        if f is not None and f not in out.values():
            out[c] = f
    sample = records[:200]
    for c in columns:
        if c in out:
            continue
        vals = [str(r.get(c, "")).strip() for r in sample if str(r.get(c, "")).strip()]
        if not vals:
            continue

        def share(rx: re.Pattern[str], vals: list[str] = vals) -> float:
            return sum(1 for v in vals if rx.match(v)) / len(vals)

        for field, rx in (("email", _EMAIL), ("ins", _NIR), ("birth_date", _DATE), ("phone", _PHONE)):
            if field not in out.values() and share(rx) >= 0.8:
                out[c] = field
                break
    return out


class RowMatch(msgspec.Struct, frozen=True):
    """How a sample row matched a patient (`ref` empty when it did not)."""

    row: int
    ref: str
    how: str  # ins | ipp | email | phone | name_birth | fullname_birth | family_birth | none | ambiguous


class _Index:
    def __init__(self, directory: Directory) -> None:
        self.ins: dict[str, set[str]] = {}
        self.ident: dict[str, set[str]] = {}
        self.email: dict[str, set[str]] = {}
        self.phone: dict[str, set[str]] = {}
        self.fgb: dict[tuple[str, str, str], set[str]] = {}
        self.fb: dict[tuple[str, str], set[str]] = {}
        self.tokens_b: dict[tuple[frozenset[str], str], set[str]] = {}
        for p in directory.iter_patients():
            ref = p.ref
            if p.ins:
                self.ins.setdefault(p.ins.replace(" ", ""), set()).add(ref)
            for ident in p.identifiers:
                value = ident.rpartition("|")[2]
                self.ident.setdefault(value.lower(), set()).add(ref)
            self.ident.setdefault(p.id.lower(), set()).add(ref)
            self.ident.setdefault(ref.lower(), set()).add(ref)
            for e in p.emails:
                self.email.setdefault(e.lower(), set()).add(ref)
            for ph in p.phones:
                self.phone.setdefault(norm_phone(ph), set()).add(ref)
            fam, giv = norm_name(p.family), norm_name(p.given)
            if p.birth_date:
                self.fgb.setdefault((fam, giv, p.birth_date), set()).add(ref)
                self.fb.setdefault((fam, p.birth_date), set()).add(ref)
                toks = frozenset(_tokens(f"{p.given} {p.family}"))
                self.tokens_b.setdefault((toks, p.birth_date), set()).add(ref)


def _tokens(text: str) -> list[str]:
    return [norm_name(t) for t in re.split(r"[\s,;/-]+", text) if norm_name(t)]


def match_rows(rows: list[dict[str, str]], directory: Directory) -> list[RowMatch]:
    """Match each sample row to a patient: strong identifiers first, then name and birth date.

    A key that points to two patients is `ambiguous` and left unmatched.
    """
    idx = _Index(directory)
    out = []
    for i, r in enumerate(rows):
        birth = parse_date(r.get("birth_date", ""))
        tries: list[tuple[str, set[str] | None]] = []
        if r.get("ins"):
            tries.append(("ins", idx.ins.get(re.sub(r"\s", "", r["ins"]))))
        if r.get("ipp"):
            tries.append(("ipp", idx.ident.get(r["ipp"].strip().lower())))
        if r.get("email"):
            tries.append(("email", idx.email.get(r["email"].strip().lower())))
        if r.get("phone"):
            tries.append(("phone", idx.phone.get(norm_phone(r["phone"]))))
        if birth and r.get("family") and r.get("given"):
            tries.append(("name_birth", idx.fgb.get((norm_name(r["family"]), norm_name(r["given"]), birth))))
        if birth and r.get("name"):
            tries.append(("fullname_birth", idx.tokens_b.get((frozenset(_tokens(r["name"])), birth))))
        if birth and r.get("family"):
            tries.append(("family_birth", idx.fb.get((norm_name(r["family"]), birth))))
        found = RowMatch(i, "", "none")
        for how, refs in tries:
            if not refs:
                continue
            if len(refs) == 1:
                found = RowMatch(i, next(iter(refs)), how)
                break
            found = RowMatch(i, "", "ambiguous")
        out.append(found)
    return out


class Candidate(msgspec.Struct, frozen=True):
    """One possible source of the leak, ranked by confidence."""

    kind: str  # account | client | address | window
    name: str
    covered: int
    coverage: float
    breadth: int  # distinct patients it read (revealing data) in its window
    first: int
    last: int
    core_start: int  # shortest interval holding 90 % of its covering reads
    core_end: int
    others: int  # other candidates of the kind covering at least as many rows
    confidence: float
    llr: float
    decoys: int = 0


class Attribution(msgspec.Struct, kw_only=True):
    """The result: matching figures and the ranked candidates of each kind."""

    rows: int
    matched: int
    unmatched: int
    ambiguous: int
    methods: dict[str, int]
    decoys: list[str]
    columns: dict[str, str]
    population: int
    accounts: list[Candidate]
    clients: list[Candidate]
    addresses: list[Candidate]
    windows: list[Candidate]

    @property
    def best(self) -> Candidate | None:
        """The most likely account, or None."""
        return self.accounts[0] if self.accounts else None


def _core(times: np.ndarray[Any, Any], share: float = 0.9) -> tuple[int, int]:
    t = np.sort(times)
    k = max(1, math.ceil(share * len(t)))
    if len(t) <= k:
        return int(t[0]), int(t[-1])
    spans = t[k - 1:] - t[:len(t) - k + 1]
    i = int(np.argmin(spans))
    return int(t[i]), int(t[i + k - 1])


def attribute(view: IndexView, rows: list[dict[str, str]], directory: Directory, *,
              columns: Mapping[str, str] | None = None, context: CareContext | None = None, eps: float = 0.1,
              top: int = 20, require: int = REVEALING, care_weight: float = 0.1) -> Attribution:
    """Rank the sources of a leaked sample (rows from `read_sample`) from the audit trail.

    With the care context, an account's reads that a care relationship explains count
    `care_weight` times as likely to be the leak's as unexplained ones.
    """
    matches = match_rows(rows, directory)
    methods: dict[str, int] = {}
    for m in matches:
        methods[m.how] = methods.get(m.how, 0) + 1
    refs = sorted({m.ref for m in matches if m.ref})
    n = len(refs)
    decoys = [r for r in refs if (directory.patient(r) or PatientEntry(id="")).decoy
              or (context is not None and context.is_decoy(r))]
    population = max(len(directory), 1)
    # Every spelling a source may use for these patients -> the patient's position.
    key_to_pat: dict[int, int] = {}
    for i, ref in enumerate(refs):
        entry = directory.patient(ref)
        spellings = {ref, *(entry.identifiers if entry else ())}
        for s in spellings:
            key_to_pat[view.pk(s)] = i
    keys = np.array(sorted(key_to_pat), dtype=np.int64)
    is_decoy = np.array([r in set(decoys) for r in refs], dtype=bool)
    success = view.dicts["outcome"].find("success")
    picked: dict[str, list[np.ndarray[Any, Any]]] = {c: [] for c in ("pk", "time", "account", "client", "address")}
    for part in view.parts:
        if not len(keys):
            break
        cols = part.cols
        m = np.isin(cols["pk"], keys) & (cols["outcome"] == success) & ((cols["categories"] & require) != 0)
        sel = np.flatnonzero(m)
        for c in picked:
            picked[c].append(np.asarray(cols[c][sel]))
    got = {c: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for c, v in picked.items()}
    lut_keys = keys
    lut_pat = np.array([key_to_pat[int(k)] for k in keys], dtype=np.int64)
    pat = lut_pat[np.searchsorted(lut_keys, got["pk"])] if len(got["pk"]) else np.zeros(0, dtype=np.int64)

    def rank(column: str) -> list[Candidate]:
        if not n or not len(pat):
            return []
        codes = got[column].astype(np.int64)
        values = view.dicts[column].values
        cands = []
        for c in np.unique(codes).tolist():
            mine = codes == c
            p = pat[mine]
            t = got["time"][mine]
            covered_pats = np.unique(p)
            # First read of each covered patient: the reads that could have leaked it.
            order = np.lexsort((t, p))
            firsts = t[order][np.concatenate([[True], p[order][1:] != p[order][:-1]])]
            unexplained = 1.0
            if context is not None and column == "account":
                # Reads a care relationship explains are less likely to be the leak's.
                order_p = p[order][np.concatenate([[True], p[order][1:] != p[order][:-1]])]
                acc = values[c]
                flags = [context.explain(acc, refs[int(i)], int(tt)) == 0 for i, tt in zip(order_p, firsts,
                                                                                         strict=True)]
                unexplained = sum(flags) / len(flags)
            cands.append((c, covered_pats, firsts, unexplained))
        cands.sort(key=lambda x: -len(x[1]))
        cands = cands[:top]
        out = []
        llrs = []
        for c, covered_pats, firsts, unexplained in cands:
            start, end = int(firsts.min()), int(firsts.max())
            breadth = _breadth(view, column, c, start, end + 1, require, success)
            breadth = max(breadth, len(covered_pats))
            inside = np.zeros(n, dtype=bool)
            inside[covered_pats] = True
            ratio = (1 - eps) * population / breadth
            llr = float(np.sum(np.log(np.where(inside, ratio + eps, eps))))
            llr += math.log(care_weight + (1 - care_weight) * unexplained)
            llrs.append(llr)
            out.append((c, covered_pats, firsts, start, end, breadth, llr))
        mx = max(llrs)
        z = sum(math.exp(v - mx) for v in llrs)
        result = []
        for c, covered_pats, firsts, start, end, breadth, llr in out:
            cov = len(covered_pats) / n
            post = math.exp(llr - mx) / z
            dec = int(np.count_nonzero(is_decoy[covered_pats]))
            conf = 1.0 if dec else post * cov
            others = sum(1 for o in out if o[0] != c and len(o[1]) >= len(covered_pats))
            cs, ce = _core(firsts)
            result.append(Candidate(column if column != "account" else "account", values[c], len(covered_pats), cov,
                                    breadth, start, end, cs, ce, others, round(conf, 4), round(llr, 2), dec))
        result.sort(key=lambda x: (-x.confidence, -x.covered, x.name))
        return result

    accounts = rank("account")
    windows = [Candidate("window", a.name, a.covered, a.coverage, a.breadth, a.first, a.last, a.core_start,
                         a.core_end, a.others, a.confidence, a.llr, a.decoys) for a in accounts[:5]]
    return Attribution(
        rows=len(rows), matched=sum(1 for m in matches if m.ref), unmatched=sum(1 for m in matches if not m.ref),
        ambiguous=methods.get("ambiguous", 0), methods=methods, decoys=decoys, columns=dict(columns or {}),
        population=population, accounts=accounts, clients=rank("client"), addresses=rank("address"),
        windows=windows,
    )


def _breadth(view: IndexView, column: str, code: int, start: int, end: int, require: int, success: int) -> int:
    """Distinct patients a source read (revealing data, successfully) in [start, end)."""
    pks: list[np.ndarray[Any, Any]] = []
    for part in view.parts:
        cols = part.cols
        for a, b in part.ranges(start, end):
            c = cols[column][a:b]
            m = c == code
            if not m.any():
                continue
            t = cols["time"][a:b]
            m &= (t >= start) & (t < end) & (cols["outcome"][a:b] == success) & ((cols["categories"][a:b] & require)
                                                                                   != 0)
            pks.append(np.asarray(cols["pk"][a:b][m]))
    if not pks:
        return 0
    allp = np.concatenate(pks)
    return len(np.unique(allp[allp != 0]))


def sample_of(entries: Iterable[PatientEntry], fields: Iterable[str] = ("family", "given", "birth_date", "phone",
                                                                         "email")) -> list[dict[str, str]]:
    """Sample rows from directory entries (tests and demos build forum-like samples with it)."""
    out = []
    for p in entries:
        full = {"family": p.family, "given": p.given, "birth_date": p.birth_date,
                "phone": p.phones[0] if p.phones else "", "email": p.emails[0] if p.emails else "", "ins": p.ins,
                "postal_code": p.postal_code, "city": p.city, "address": p.line}
        out.append({f: full.get(f, "") for f in fields})
    return out
