"""Benign behaviour: who opens which chart, when, from where, and what the context records.

Every benign access follows a care process (an emergency visit, a stay, an appointment,
a coding or billing task, a lab result, a nightly export) and the process leaves the
resources that explain it: encounters with their participants, appointments, care teams.
A few percent of accesses are deliberately left without a recorded relationship, as in
real hospitals (Fabbri & LeFevre: > 94 % explained; the rest consults, first accesses,
group work): unrecorded consults, night cross-cover, homonyms in name searches, research
reads, the nightly export.

Shapes follow REALISM.md: 12-hour shifts for nurses and the emergency department, office
hours for administration, on-call doctors at weekends, evening sessions from home,
shared ward workstations and tablets, several addresses per person, bursts of 5-40
requests when a chart is opened, some failures, logins with the occasional mistyped
password, ~36 % of emergency arrivals at night and ~20 % of them admitted.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

from sentinelle.simulate import fhir_out
from sentinelle.simulate.fhir_out import ContextWriter, Op
from sentinelle.simulate.hospital import DAY_MS, HOUR_MS, MINUTE_MS, Dept, Device, Hospital, Staff
from sentinelle.simulate.trail import Trail

__all__ = ["Activity", "Appt", "Stay"]

WARDS = ["cardio", "med", "surg", "peds", "mat", "onco"]
#: Mean length of stay in days, per ward.
LOS = {"cardio": 5.0, "med": 7.0, "surg": 4.0, "peds": 3.0, "mat": 4.0, "onco": 5.0}
#: Elective admissions per weekday at scale 1.
ELECTIVE = {"cardio": 2.0, "med": 1.5, "surg": 4.0, "peds": 0.8, "mat": 1.5, "onco": 2.2}
BEDS = {"cardio": 30, "med": 40, "surg": 40, "peds": 20, "mat": 25, "onco": 20}
#: Emergency arrivals per hour of the day (local time): 36 % between 18:00 and 06:00.
ED_HOURLY = [0.030, 0.025, 0.020, 0.016, 0.015, 0.015, 0.024, 0.034, 0.050, 0.060, 0.065, 0.065,
             0.060, 0.060, 0.060, 0.059, 0.055, 0.050, 0.052, 0.050, 0.046, 0.041, 0.036, 0.032]
ED_PER_DAY = 80.0
OUTPATIENT_PER_DAY = 180.0
WEEKEND_DOCTOR_ROUND = 0.9  # share of inpatients seen by the on-call doctor on a weekend day
NIGHT_HOME_PREFIX = "10.250."
VDI = ["10.0.5.10", "10.0.5.11", "10.0.5.12"]

_QUERY = {
    "Observation": "GET /fhir/Observation?patient={pid}&_sort=-date&_count=50",
    "MedicationRequest": "GET /fhir/MedicationRequest?patient={pid}&status=active",
    "DiagnosticReport": "GET /fhir/DiagnosticReport?patient={pid}&_sort=-date",
    "DocumentReference": "GET /fhir/DocumentReference?patient={pid}&_sort=-date&_count=20",
    "Encounter": "GET /fhir/Encounter?patient={pid}&_sort=-date",
    "Coverage": "GET /fhir/Coverage?beneficiary=Patient/{pid}",
    "Appointment": "GET /fhir/Appointment?patient={pid}&date=ge{date}",
    "AllergyIntolerance": "GET /fhir/AllergyIntolerance?patient={pid}",
    "ImagingStudy": "GET /fhir/ImagingStudy?patient={pid}",
}


class Stay:
    """An encounter in progress: emergency visit (EMER), stay (IMP) or exam/consult (AMB)."""

    __slots__ = ("attending", "cls", "dept", "end", "id", "lab", "p", "parent", "parts", "start", "written")

    def __init__(self, sid: str, p: int, dept: Dept, cls: str, start: int, end: int) -> None:
        self.id = sid
        self.p = p
        self.dept = dept
        self.cls = cls
        self.start = start
        self.end = end
        self.attending: Staff | None = None
        self.parts: list[tuple[str, Staff]] = []
        self.lab = False
        self.parent = ""
        self.written = False


class Appt:
    """An appointment: booked (maybe before the period), then kept, missed or cancelled."""

    __slots__ = ("booked", "by", "doctor", "end", "id", "p", "service", "start", "status", "tele")

    def __init__(self, aid: str, p: int, doctor: Staff, start: int, end: int, booked: int, by: Device | None) -> None:
        self.id = aid
        self.p = p
        self.doctor = doctor
        self.start = start
        self.end = end
        self.booked = booked
        self.by = by
        self.status = "booked"
        self.service = ""
        self.tele = False


class Activity:
    """Generates the benign trail day by day and writes the care context as it becomes final."""

    def __init__(self, h: Hospital, rng: random.Random, ctx: ContextWriter, trail: Trail) -> None:
        self.h = h
        self.rng = rng
        self.ctx = ctx
        self.trail = trail
        self.days = h.cfg.days
        self.scale = h.cfg.scale
        self.census: dict[str, list[Stay]] = {w: [] for w in WARDS}
        self.tasks: dict[int, list[tuple[Any, ...]]] = {}
        self.appts: dict[int, list[Appt]] = {}
        self.p_hist: dict[int, list[tuple[str, int, int]]] = {}
        self.avoid_dept: dict[int, set[str]] = {}
        self.avoid_staff: dict[int, set[int]] = {}
        self.sessions: dict[tuple[int, str, int], list[Any]] = {}
        self.finished: dict[int, list[int]] = {}  # day -> patients whose encounter ended
        self.month_stays: dict[tuple[int, int], list[tuple[int, str, Staff]]] = {}
        self.seq = {"enc": 0, "apt": 0, "ct": 0, "res": 0}
        self.homonyms: dict[tuple[str, str], list[int]] = {}
        for p in range(len(h.pid)):
            if h.registered[p] and not h.p_flags[p] & 7:
                self.homonyms.setdefault((h.p_family[p], h.p_given[p]), []).append(p)
        self.eligible = [p for p in range(len(h.pid)) if h.registered[p] and not h.p_flags[p] & 7]
        self.new_cursor = 0
        # Hooks set by the traps before generation starts.
        self.surges: dict[int, tuple[float, int]] = {}
        self.cover: list[tuple[Staff, Dept, int, int, float]] = []
        self.recall: list[tuple[Dept, list[Staff], int, int, list[int]]] = []
        self.planned: dict[int, list[tuple[int, str, float, float, str]]] = {}
        urc = h.staff_of("urc", "research")
        self.research_heavy: list[Staff] = urc[: max(1, round(len(urc) * 0.3))]
        outp_secs = h.staff_of("outp", "secretary")
        self.call_centre: list[Staff] = outp_secs[: max(1, round(len(outp_secs) * 0.2))]
        self.cover_listed: dict[int, float] = {}
        self.forced: dict[int, Staff] = {}
        self.vip_planned: tuple[int, str] | None = None
        self.reserved_staff: set[int] = set()
        self.used_patients: set[int] = set()
        self.all_appts: list[Appt] = []
        self.roster: list[dict[int, str]] = []
        self.duty: list[dict[tuple[str, str, str], list[Staff]]] = []

    # -- rosters -----------------------------------------------------------------------------
    def build_roster(self) -> None:
        """Decide who works which shift each day (and the on-call doctors)."""
        h, rng = self.h, self.rng
        twelve = {("nurse", "ward"), ("nurse", "ed"), ("doctor", "ed"), ("admissions", "ed"),
                  ("technician", "ancillary")}
        for d in range(-1, self.days + 1):
            wd = h.weekday(d)
            weekend = wd >= 5
            shifts: dict[int, str] = {}
            for s in h.staff:
                if d < s.start_day or d > s.last_day:
                    continue
                kind = "ward" if s.dept.kind == "ward" else s.dept.kind
                if (s.role, kind) in twelve:
                    pos = (d + s.phase) % 7
                    code = "D" if pos in (0, 1) else ("N" if pos in (2, 3) else "")
                    # Fewer hands on weekend days (Blecker 2013: less activity at weekends).
                    if code == "D" and weekend and rng.random() < 0.25:
                        code = ""
                elif weekend:
                    code = ""
                else:
                    code = "O"
                if code and rng.random() < 0.07:
                    code = ""  # leave, sickness, training
                if code:
                    shifts[s.idx] = code
            # On call: one doctor per ward rounds at weekends; one pharmacist on weekend
            # mornings; one radiologist reads night images from home every night.
            for code in WARDS:
                docs = [s for s in h.staff_of(code, "doctor") if not s.intern and s.start_day <= d <= s.last_day]
                if docs and weekend:
                    shifts[docs[(d * 3 + 1) % len(docs)].idx] = "W"
            pharm = [s for s in h.staff_of("pharm", "pharmacist") if s.start_day <= d <= s.last_day]
            if pharm and weekend:
                shifts[pharm[d % len(pharm)].idx] = "W"
            rads = [s for s in h.staff_of("rad", "doctor") if s.start_day <= d <= s.last_day]
            if rads:
                r = rads[d % len(rads)]
                if shifts.get(r.idx) != "O":
                    shifts[r.idx] = "R"
            for s, _dept, d0, d1, _share in self.cover:
                if d0 <= d <= d1 and not weekend:
                    shifts[s.idx] = "C"
            duty: dict[tuple[str, str, str], list[Staff]] = {}
            for idx, code in shifts.items():
                s = h.staff[idx]
                dept_code = s.dept.code
                for cs, cdept, d0, d1, _share in self.cover:
                    if cs is s and d0 <= d <= d1 and code == "C":
                        dept_code = cdept.code
                        code = "O"
                duty.setdefault((dept_code, s.role, code), []).append(s)
            self.roster.append(shifts)
            self.duty.append(duty)

    def on_duty(self, dept: str, role: str, t: int) -> list[Staff]:
        """Staff of a department and role working at time `t`."""
        h = self.h
        d = h.day_of(t)
        hour = (t - h.local_ms(d, 0)) / HOUR_MS
        idx = d + 1  # roster starts at day -1
        if not 0 <= idx < len(self.duty):
            return []
        if hour < 7:
            if idx - 1 < 0:
                return []
            return self.duty[idx - 1].get((dept, role, "N"), [])
        if hour >= 19:
            return self.duty[idx].get((dept, role, "N"), [])
        found = self.duty[idx].get((dept, role, "D"), [])
        if 8 <= hour < 18.5:
            found = found + self.duty[idx].get((dept, role, "O"), [])
        if not found and hour < 14:
            found = self.duty[idx].get((dept, role, "W"), [])
        return found

    def pick(self, dept: str, role: str, t: int) -> Staff | None:
        found = self.on_duty(dept, role, t)
        if not found:
            d = self.h.day_of(t)
            found = [s for s in self.h.staff_of(dept, role) if s.start_day <= d <= s.last_day]
        if not found:
            return None
        return found[self.rng.randrange(len(found))]

    # -- addresses and sessions ------------------------------------------------------------------
    def address(self, s: Staff, where: str) -> str:
        rng = self.rng
        if where == "home":
            if s.home_ip and rng.random() < 0.8:
                return s.home_ip
            return f"{NIGHT_HOME_PREFIX}{rng.randrange(0, 16)}.{rng.randrange(2, 250)}"
        if where == "office" and s.office and rng.random() < 0.85:
            return s.office
        r = rng.random()
        if r < 0.10:
            return VDI[rng.randrange(len(VDI))]
        if where == "tablet":
            return f"10.{20 + s.dept.number}.3.{10 + rng.randrange(4)}"
        if r < 0.9 and s.favourites:
            return s.favourites[rng.randrange(len(s.favourites))]
        return s.dept.workstations[rng.randrange(len(s.dept.workstations))]

    def session(self, actor: Staff, addr: str, t: int, attack: int = -1, client: str = "dpi-web") -> str:
        """The session of an account on a machine today (an attack with its own login is apart)."""
        key = (actor.idx, addr, attack)
        cur = self.sessions.get(key)
        if cur is None:
            sid = f"{self.rng.getrandbits(64):016x}"
            self.sessions[key] = [sid, t, t, attack, actor, client]
            return sid
        if t < cur[1]:
            cur[1] = t
        if t > cur[2]:
            cur[2] = t
        found: str = cur[0]
        return found

    def close_sessions(self) -> None:
        """Login (and sometimes logout) events of the day's sessions."""
        rng, emit = self.rng, self.trail.emit
        for (_idx, addr, _tag), (sid, first, last, attack, actor, client) in self.sessions.items():
            t_login = first - rng.randint(3_000, 40_000)
            if rng.random() < 0.03:
                emit(t_login - rng.randint(8_000, 60_000), actor, client, addr, "", Op.LOGIN_FAILED,
                     outcome="4", attack=attack)
            emit(t_login, actor, client, addr, sid, Op.LOGIN, attack=attack)
            if rng.random() < 0.3:
                emit(last + rng.randint(5_000, 600_000), actor, client, addr, sid, Op.LOGOUT, attack=attack)
        self.sessions.clear()

    # -- patients ------------------------------------------------------------------------------
    def pick_patient(self, dept: str, t: int) -> int:
        rng, eligible = self.rng, self.eligible
        while True:
            p = eligible[rng.randrange(len(eligible))]
            avoid = self.avoid_dept.get(p)
            if avoid is None or dept not in avoid:
                return p

    def register_new(self) -> int | None:
        """A patient seen for the first time: gets the next FHIR id."""
        h = self.h
        if self.new_cursor >= len(h.new_queue):
            return None
        p = h.new_queue[self.new_cursor]
        h.pid[p] = h.first_new_patient + self.new_cursor
        self.new_cursor += 1
        h.registered[p] = True
        self.homonyms.setdefault((h.p_family[p], h.p_given[p]), []).append(p)
        self.eligible.append(p)
        return p

    def note_care(self, p: int, dept: str, start: int, end: int) -> None:
        self.p_hist.setdefault(p, []).append((dept, start, end))

    def treated_by(self, p: int, dept: str, t: int, margin: int = 31 * DAY_MS) -> bool:
        """Whether `dept` treats (or treated) `p` around `t`: what a victim must never be."""
        for dcode, start, end in self.p_hist.get(p, ()):
            if dcode == dept and (start - margin <= t <= end + margin or end < t):
                return True
        return False

    # -- bursts -----------------------------------------------------------------------------
    def rid(self, p: int) -> str:
        self.seq["res"] += 1
        return f"{self.h.pid[p]}-{self.seq['res']}"

    def burst(
        self,
        s: Staff,
        t: int,
        addr: str,
        p: int,
        kind: str,
        stay: Stay | None = None,
        attack: int = -1,
        purpose: str = "",
        client: str = "dpi-web",
        appt: Appt | None = None,
        own_session: bool = False,
    ) -> int:
        """Open one patient's chart: a burst of reads, searches and writes; returns its end.

        An insider's misuse happens inside their ordinary session (`own_session` False:
        the login is benign); an intruder logs in for themselves (`own_session` True).
        """
        if attack < 0:
            avoid = self.avoid_staff.get(p)
            if avoid is not None and s.idx in avoid:
                return t
        rng = self.rng
        if not purpose and self.h.p_flags[p] & 19 and s.dept.code == "ed":
            purpose = "btg"  # restricted record opened in the emergency department: break the glass
        sid = self.session(s, addr, t, attack if own_session else -1, client)
        pid = self.h.pid[p]
        pref = f"Patient/{pid}"
        emit = self.trail.emit
        ops = self.ops(kind, p)
        for op, rtype in ops:
            outcome = "0"
            r = rng.random()
            if r < 0.006:
                outcome = "4" if r < 0.0045 else "8"
            if op == Op.SEARCH:
                if rtype == "Patient":
                    t = self.name_search(s, t, addr, sid, p, attack, purpose, client)
                    continue
                q = _QUERY[rtype].format(pid=pid, date=fhir_out.format_recorded(t)[:10])
                emit(t, s, client, addr, sid, op, pref, rtype, "", outcome, q, attack, purpose)
            else:
                if rtype == "Encounter" and stay is not None:
                    rid = stay.id
                elif rtype == "Appointment" and appt is not None:
                    rid = appt.id
                elif rtype == "Patient":
                    rid = str(pid)
                elif op == Op.CREATE:
                    rid = self.rid(p)
                else:
                    rid = f"{pid}-{rng.randrange(1, 12)}"
                emit(t, s, client, addr, sid, op, pref, rtype, rid, outcome, "", attack, purpose)
            t += 250 + int(rng.expovariate(1 / 1100))
        return t

    def name_search(
        self, s: Staff | Device, t: int, addr: str, sid: str, p: int, attack: int, purpose: str, client: str
    ) -> int:
        """A patient search by name or INS: one AuditEvent per patient in the result page."""
        h, rng = self.h, self.rng
        r = rng.random()
        fam, giv = h.p_family[p], h.p_given[p]
        if r < 0.3:
            q = f"GET /fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{h.p_ins[p]}"
            results = [p]
        elif r < 0.85:
            q = f"GET /fhir/Patient?family={fam}&given={giv}&birthdate={h.p_birth[p]}"
            results = [p]
        else:
            q = f"GET /fhir/Patient?family={fam}&given={giv}"
            results = [p, *[x for x in self.homonyms.get((fam, giv), []) if x != p][:4]]
        for x in results:
            self.trail.emit(t, s, client, addr, sid, Op.SEARCH, f"Patient/{h.pid[x]}", "Patient", "", "0", q,
                            attack, purpose)
        return t + 300 + int(rng.expovariate(1 / 1500))

    def ops(self, kind: str, p: int) -> list[tuple[str, str]]:
        """The requests of one chart opening, by the kind of work being done."""
        rng = self.rng
        R, S, C, U, D = Op.READ, Op.SEARCH, Op.CREATE, Op.UPDATE, Op.DELETE
        out: list[tuple[str, str]] = []
        add = out.append
        if kind in ("round", "ed_doctor", "consult_ward", "home"):
            if rng.random() < 0.25:
                add((S, "Patient"))
            add((R, "Patient"))
            add((R, "Encounter"))
            add((S, "Observation"))
            for _ in range(rng.randint(2, 9)):
                add((R, "Observation"))
            add((S, "MedicationRequest"))
            for _ in range(rng.randint(0, 3)):
                add((R, "MedicationRequest"))
            if rng.random() < 0.7:
                add((S, "DiagnosticReport"))
                for _ in range(rng.randint(1, 4)):
                    add((R, "DiagnosticReport"))
            if rng.random() < 0.6:
                add((S, "DocumentReference"))
                for _ in range(rng.randint(1, 4)):
                    add((R, "DocumentReference"))
            if rng.random() < 0.3:
                add((R, "ImagingStudy"))
            if rng.random() < 0.3:
                add((R, "AllergyIntolerance"))
            if kind != "home":
                if rng.random() < 0.35:
                    add((C, "MedicationRequest"))
                if rng.random() < 0.25:
                    add((U, "MedicationRequest"))
                if rng.random() < (0.6 if kind == "ed_doctor" else 0.25):
                    add((C, "DocumentReference"))
        elif kind in ("nurse", "triage"):
            add((R, "Patient"))
            add((R, "Encounter"))
            add((S, "Observation"))
            for _ in range(rng.randint(1, 4)):
                add((R, "Observation"))
            for _ in range(rng.randint(1, 3)):
                add((C, "Observation"))
            add((S, "MedicationRequest"))
            for _ in range(rng.randint(1, 3)):
                add((R, "MedicationRequest"))
            if rng.random() < 0.3:
                add((S, "DocumentReference"))
                add((R, "DocumentReference"))
            if rng.random() < 0.01:
                add((D, "Observation"))  # a vital sign entered on the wrong chart
            if rng.random() < 0.25 or kind == "triage":
                add((R, "AllergyIntolerance"))
            if rng.random() < 0.2:
                add((U, "Encounter"))
        elif kind == "register":
            add((S, "Patient"))
            add((R, "Patient"))
            add((C, "Encounter"))
            add((S, "Coverage"))
            if rng.random() < 0.5:
                add((R, "Coverage"))
            if rng.random() < 0.3:
                add((U, "Patient"))
        elif kind == "secretary":
            add((R, "Patient"))
            add((R, "Encounter"))
            add((S, "DocumentReference"))
            add((R, "DocumentReference"))
            add((C, "DocumentReference"))
            if rng.random() < 0.02:
                add((D, "DocumentReference"))  # a letter filed twice
            if rng.random() < 0.3:
                add((S, "Appointment"))
        elif kind == "book":
            add((S, "Patient"))
            add((R, "Patient"))
            add((S, "Appointment"))
            add((C, "Appointment"))
        elif kind == "checkin":
            add((R, "Appointment"))
            add((R, "Patient"))
            add((U, "Appointment"))
            if rng.random() < 0.6:
                add((S, "Coverage"))
        elif kind == "consult":
            add((R, "Patient"))
            add((R, "Appointment"))
            add((S, "Encounter"))
            for _ in range(rng.randint(0, 2)):
                add((R, "Encounter"))
            add((S, "Observation"))
            for _ in range(rng.randint(1, 4)):
                add((R, "Observation"))
            add((S, "DocumentReference"))
            for _ in range(rng.randint(1, 4)):
                add((R, "DocumentReference"))
            if rng.random() < 0.3:
                add((S, "DiagnosticReport"))
            if rng.random() < 0.2:
                add((R, "AllergyIntolerance"))
            if rng.random() < 0.35:
                add((C, "MedicationRequest"))
            add((C, "DocumentReference"))
        elif kind == "pharm":
            add((S, "MedicationRequest"))
            for _ in range(rng.randint(1, 4)):
                add((R, "MedicationRequest"))
            add((R, "AllergyIntolerance"))
            add((S, "Observation"))
            if rng.random() < 0.5:
                add((U, "MedicationRequest"))
        elif kind == "rad_tech":
            add((R, "Patient"))
            add((R, "Encounter"))
            add((S, "ImagingStudy"))
            add((C, "ImagingStudy"))
        elif kind == "radiologist":
            add((R, "Patient"))
            add((S, "ImagingStudy"))
            for _ in range(rng.randint(1, 2)):
                add((R, "ImagingStudy"))
            add((S, "DiagnosticReport"))
            add((C, "DiagnosticReport"))
        elif kind == "lab_tech":
            add((S, "Observation"))
            for _ in range(rng.randint(1, 3)):
                add((R, "Observation"))
        elif kind == "coding":
            add((R, "Encounter"))
            add((S, "DocumentReference"))
            for _ in range(rng.randint(2, 6)):
                add((R, "DocumentReference"))
            add((S, "DiagnosticReport"))
            add((S, "Observation"))
            add((S, "MedicationRequest"))
        elif kind == "billing":
            add((R, "Patient"))
            add((R, "Encounter"))
            add((S, "Coverage"))
            if rng.random() < 0.5:
                add((R, "Coverage"))
            if rng.random() < 0.3:
                add((U, "Coverage"))
        elif kind == "billing_close":
            add((R, "Encounter"))
            add((S, "Coverage"))
            if rng.random() < 0.3:
                add((U, "Coverage"))
        elif kind == "reminder":
            add((R, "Appointment"))
            add((R, "Patient"))
        elif kind == "recall":
            add((S, "Patient"))
            add((R, "Patient"))
            add((S, "Encounter"))
            add((S, "Appointment"))
        elif kind == "research":
            add((S, "Encounter"))
            if rng.random() < 0.2:
                add((S, "Observation"))
        elif kind == "peek":
            add((R, "Patient"))
            if rng.random() < 0.6:
                add((S, "Encounter"))
            if rng.random() < 0.3:
                add((S, "DocumentReference"))
        else:
            raise ValueError(f"unknown burst kind {kind!r}")
        return out

    # -- encounters ---------------------------------------------------------------------------
    def new_id(self, kind: str) -> str:
        self.seq[kind] += 1
        return f"{kind}-{self.seq[kind]:07d}"

    def write_stay(self, st: Stay, open_end: bool = False) -> None:
        if st.written:
            return
        st.written = True
        end = None if open_end else st.end
        self.ctx.write(fhir_out.encounter(st.id, self.h.patient_ref(st.p), st.cls, st.dept, st.start, end,
                                          st.parts, st.parent))
        self.note_care(st.p, st.dept.code, st.start, st.end)
        if st.lab:
            lab = self.h.depts["lab"]
            techs = [s for s in self.h.staff_of("lab", "technician")[:2]]
            self.ctx.write(fhir_out.encounter(st.id + "-lab", self.h.patient_ref(st.p), "AMB", lab, st.start, end,
                                              [("PPRF", x) for x in techs], st.id))
            self.note_care(st.p, "lab", st.start, st.end)

    def ancillary(self, parent: Stay, dept_code: str, t: int, staff: list[Staff]) -> Stay:
        """A radiology exam attached to a stay or visit: its own short AMB encounter."""
        st = Stay(self.new_id("enc"), parent.p, self.h.depts[dept_code], "AMB", t, t + 2 * HOUR_MS)
        st.parts = [("PPRF", s) for s in staff]
        st.parent = parent.id
        self.write_stay(st)
        return st

    # -- one day ------------------------------------------------------------------------------
    def run_day(self, d: int) -> None:
        self.emergency(d)
        self.elective(d)
        self.planned_admissions(d)
        self.wards(d)
        self.outpatients(d)
        self.run_tasks(d)
        self.services(d)
        self.office_work(d)
        self.evenings(d)
        self.recall_campaign(d)

    # Emergency department ------------------------------------------------------------------
    def emergency(self, d: int) -> None:
        h, rng = self.h, self.rng
        wd = h.weekday(d)
        rate = ED_PER_DAY * self.scale * (1.1 if wd == 0 else (0.95 if wd >= 5 else 1.0))
        n = _poisson(rng, rate)
        arrivals: list[int] = []
        for _ in range(n):
            hour = _weighted_hour(rng, ED_HOURLY)
            arrivals.append(h.local_ms(d, hour + rng.random()))
        surge = self.surges.get(d)
        if surge is not None:
            at, count = surge
            for _ in range(count):
                arrivals.append(h.local_ms(d, at + rng.random() * 2.5))
        arrivals.sort()
        for t0 in arrivals:
            self.ed_visit(t0, surge is not None and t0 >= h.local_ms(d, surge[0]) and
                          t0 <= h.local_ms(d, surge[0] + 2.6))

    def ed_visit(
        self,
        t0: int,
        surge: bool = False,
        p: int | None = None,
        ward: str = "",
        los: float | None = None,
        admit: bool | None = None,
    ) -> Stay | None:
        h, rng = self.h, self.rng
        ed = h.depts["ed"]
        agent = self.pick("ed", "admissions", t0)
        triage = self.pick("ed", "nurse", t0)
        doctor = self.pick("ed", "doctor", t0)
        if agent is None or triage is None or doctor is None:
            return None
        new = False
        if p is None:
            if rng.random() < 0.25:
                q = self.register_new()
                if q is not None:
                    p, new = q, True
            if p is None:
                p = self.pick_patient("ed", t0)
        length = int(min(12.0, max(1.2, rng.lognormvariate(1.35, 0.5))) * HOUR_MS)
        if surge:
            length = int(rng.uniform(2, 6) * HOUR_MS)
        st = Stay(self.new_id("enc"), p, ed, "EMER", t0, t0 + length)
        st.parts = [("ADM", agent), ("PPRF", triage), ("ATND", doctor)]
        st.lab = rng.random() < 0.75
        # Registration at the desk.
        t = t0 + rng.randint(60_000, 6 * MINUTE_MS)
        addr = self.address(agent, "ward")
        if new:
            sid = self.session(agent, addr, t)
            t = self.name_search(agent, t, addr, sid, p, -1, "", "dpi-web") if rng.random() < 0.7 else t
            self.trail.emit(t, agent, "dpi-web", addr, sid, Op.CREATE, h.patient_ref(p), "Patient", str(h.pid[p]))
            t += rng.randint(20_000, 90_000)
        self.burst(agent, t, addr, p, "register", st)
        t_tri = t0 + rng.randint(5, 25) * MINUTE_MS
        self.burst(triage, t_tri, self.address(triage, "ward"), p, "triage", st)
        t_doc = t0 + rng.randint(20, 150) * MINUTE_MS if not surge else t0 + rng.randint(5, 40) * MINUTE_MS
        t_doc = min(t_doc, st.end - 10 * MINUTE_MS)
        self.burst(doctor, t_doc, self.address(doctor, "ward"), p, "ed_doctor", st)
        nurses = [triage]
        for _ in range(rng.randint(1, 3)):
            n2 = self.pick("ed", "nurse", t_doc)
            if n2 is None:
                continue
            tn = rng.randint(t_tri, st.end)
            self.burst(n2, tn, self.address(n2, "tablet" if rng.random() < 0.25 else "ward"), p, "nurse", st,
                       client="dpi-mobile" if rng.random() < 0.2 else "dpi-web")
            nurses.append(n2)
        for n2 in nurses[1:]:
            st.parts.append(("PPRF", n2))
        if rng.random() < 0.7:
            t2 = rng.randint(t_doc, st.end)
            d2 = self.pick("ed", "doctor", t2) or doctor
            self.burst(d2, t2, self.address(d2, "ward"), p, "ed_doctor", st)
            st.parts.append(("ATND", d2))
        if st.lab:
            self.lab_results(p, t0 + rng.randint(50, 130) * MINUTE_MS, rng.randint(1, 3))
        if rng.random() < 0.35:
            self.imaging(st, t0 + rng.randint(30, 180) * MINUTE_MS)
        # ~20 % of visits end in admission (DREES); more in a surge.
        if admit is None:
            admit = bool(ward) or rng.random() < (0.45 if surge else 0.20)
        day = h.day_of(st.end)
        if admit:
            w = ward or self.ward_for(p)
            self.admit(p, w, st.end, via_ed=st, los=los)
        else:
            bill = self.h.staff_of("bill", "billing")
            if bill:
                clerk = bill[st.p % len(bill)]
                st.parts.append(("PART", clerk))
                self.add_task(day + rng.randint(1, 6), ("billing", st, clerk))
        self.write_stay(st)
        self.finished.setdefault(day, []).append(p)
        return st

    def ward_for(self, p: int) -> str:
        h, rng = self.h, self.rng
        age = 2025 - int(h.p_birth[p][:4])
        if age < 16:
            return "peds"
        if h.p_gender[p] == "female" and 18 <= age <= 42 and rng.random() < 0.5:
            return "mat"
        return rng.choices(["cardio", "med", "surg", "onco"], [3, 4, 3, 1])[0]

    def imaging(self, parent: Stay, t: int) -> None:
        rng = self.rng
        tech = self.pick("rad", "technician", t)
        if tech is None:
            return
        # At night the radiologist on call reads from home (teleradiology).
        night_reader = [s for s in self.on_duty_code("rad", "doctor", t, "R")]
        doc = self.pick("rad", "doctor", t + 40 * MINUTE_MS)
        remote = False
        hour = self.hour(t)
        if (hour >= 19 or hour < 8 or self.h.weekday(self.h.day_of(t)) >= 5) and night_reader:
            doc, remote = night_reader[0], True
        staff = [tech] + ([doc] if doc else [])
        exam = self.ancillary(parent, "rad", t, staff)
        self.burst(tech, t, self.address(tech, "ward"), parent.p, "rad_tech", exam, client="ris-pacs")
        if doc is not None:
            t2 = t + rng.randint(15, 120) * MINUTE_MS
            self.burst(doc, t2, self.address(doc, "home" if remote else "office"), parent.p, "radiologist", exam,
                       client="ris-pacs")

    def on_duty_code(self, dept: str, role: str, t: int, code: str) -> list[Staff]:
        d = self.h.day_of(t)
        hour = self.hour(t)
        if hour < 8:
            d -= 1
        idx = d + 1
        if not 0 <= idx < len(self.duty):
            return []
        return self.duty[idx].get((dept, role, code), [])

    def hour(self, t: int) -> float:
        d = self.h.day_of(t)
        return (t - self.h.local_ms(d, 0)) / HOUR_MS

    def lab_results(self, p: int, t: int, n: int) -> None:
        dev = self.h.devices["lab-interface"]
        rng = self.rng
        pref = self.h.patient_ref(p)
        for _ in range(n):
            self.trail.emit(t, dev, dev.login, dev.addresses[0], "", Op.CREATE, pref, "Observation", self.rid(p))
            t += rng.randint(200, 3000)
        if rng.random() < 0.5:
            self.trail.emit(t, dev, dev.login, dev.addresses[0], "", Op.CREATE, pref, "DiagnosticReport", self.rid(p))
        if rng.random() < 0.12:
            tech = self.pick("lab", "technician", t)
            if tech is not None:
                self.burst(tech, t + rng.randint(2, 40) * MINUTE_MS, self.address(tech, "ward"), p, "lab_tech")

    # Inpatient stays ----------------------------------------------------------------------
    def admit(self, p: int, ward: str, t: int, via_ed: Stay | None = None, los: float | None = None) -> Stay:
        h, rng = self.h, self.rng
        dept = h.depts[ward]
        mean = LOS[ward]
        days = los if los is not None else max(0.4, rng.expovariate(1 / mean) * 0.7 + mean * 0.3)
        st = Stay(self.new_id("enc"), p, dept, "IMP", t, t + int(days * DAY_MS))
        # Discharges happen in the late morning / afternoon.
        dday = h.day_of(st.end)
        st.end = max(t + 6 * HOUR_MS, h.local_ms(dday, rng.uniform(10.5, 17.5)))
        docs = [s for s in h.staff_of(ward, "doctor") if not s.intern and s.start_day <= h.day_of(t) <= s.last_day]
        if docs:
            st.attending = docs[rng.randrange(len(docs))]
            st.parts.append(("ATND", st.attending))
        interns = [s for s in h.staff_of(ward, "doctor") if s.intern and s.start_day <= h.day_of(t) <= s.last_day]
        if interns and rng.random() < 0.7:
            st.parts.append(("ATND", interns[rng.randrange(len(interns))]))
        if via_ed is None:
            agent = self.pick("adm", "admissions", t)
            if agent is not None:
                st.parts.append(("ADM", agent))
                self.burst(agent, t - rng.randint(5, 40) * MINUTE_MS, self.address(agent, "office"), p, "register", st)
        else:
            st.parent = via_ed.id
        st.lab = True
        self.census[ward].append(st)
        sec = self.pick(ward, "secretary", t)
        if sec is not None and 8 <= self.hour(t) < 17:
            self.burst(sec, t + rng.randint(20, 180) * MINUTE_MS, self.address(sec, "office"), p, "secretary", st)
        # Oncology patients are discussed by a multidisciplinary team (RCP) with its own care team.
        if ward == "onco" and rng.random() < 0.6:
            self.care_team(st)
        return st

    def care_team(self, st: Stay) -> None:
        h, rng = self.h, self.rng
        members: list[Staff] = []
        for dept, role in (("onco", "doctor"), ("rad", "doctor"), ("pharm", "pharmacist"), ("surg", "doctor"),
                           ("onco", "nurse")):
            pool = h.staff_of(dept, role)
            if pool:
                members.append(pool[rng.randrange(len(pool))])
        self.ctx.write(fhir_out.care_team(self.new_id("ct"), h.patient_ref(st.p), st.dept, members,
                                          st.start - DAY_MS, st.end + 60 * DAY_MS, "RCP oncologie"))
        # The tumour board reads the file once, a few days into the stay.
        t = st.start + rng.randint(1, 3) * DAY_MS
        d = h.day_of(t)
        if 0 <= d < self.days and h.weekday(d) < 5:
            t = h.local_ms(d, rng.uniform(13, 16))
            for m in members[1:4]:
                self.burst(m, t + rng.randint(0, 50) * MINUTE_MS, self.address(m, "office"), st.p, "consult_ward", st)
        for m in members:
            self.note_care(st.p, m.dept.code, st.start, st.end)

    def elective(self, d: int) -> None:
        h, rng = self.h, self.rng
        if h.weekday(d) >= 5:
            return
        for ward in WARDS:
            cap = max(4, int(BEDS[ward] * self.scale))
            n = _poisson(rng, ELECTIVE[ward] * self.scale * 1.6)
            for _ in range(n):
                if len(self.census[ward]) >= cap:
                    break
                t = h.local_ms(d, rng.uniform(8, 15.5))
                p = self.pick_patient(ward, t)
                if rng.random() < 0.1:
                    q = self.register_new()
                    if q is not None:
                        p = q
                self.admit(p, ward, t)

    def planned_admissions(self, d: int) -> None:
        """Admissions the traps scheduled (a VIP, a staff member, a relative)."""
        for p, ward, hour, los, via in self.planned.get(d, []):
            t = self.h.local_ms(d, hour)
            if via == "ed":
                self.ed_visit(t, p=p, ward=ward, los=los, admit=bool(ward))
            else:
                self.admit(p, ward, t, los=los)

    def bootstrap(self) -> None:
        """Patients already in the wards on day 0, and the hospital's past (history, bookings)."""
        h, rng = self.h, self.rng
        t0 = h.start_ms
        for ward in WARDS:
            cap = max(4, int(BEDS[ward] * self.scale))
            for _ in range(int(cap * 0.75)):
                p = self.pick_patient(ward, t0)
                start = t0 - int(rng.uniform(0.1, LOS[ward]) * DAY_MS)
                st = self.admit_silent(p, ward, start)
                self.census[ward].append(st)
        self.history()
        self.book_ahead()

    def admit_silent(self, p: int, ward: str, start: int) -> Stay:
        h, rng = self.h, self.rng
        st = Stay(self.new_id("enc"), p, h.depts[ward], "IMP", start, start)
        mean = LOS[ward]
        st.end = max(h.start_ms + 3 * HOUR_MS, start + int(rng.expovariate(1 / mean) * DAY_MS))
        dday = h.day_of(st.end)
        st.end = max(st.end, h.local_ms(dday, rng.uniform(10.5, 17.5)))
        docs = [s for s in h.staff_of(ward, "doctor") if not s.intern]
        st.attending = docs[rng.randrange(len(docs))]
        st.parts.append(("ATND", st.attending))
        st.lab = True
        return st

    def history(self) -> None:
        """Past encounters (before the trail): what TREATED_BEFORE and recalls rely on."""
        h, rng = self.h, self.rng
        horizon = h.cfg.history_days
        n = int(len(self.eligible) * 0.5)
        depts = [*WARDS, "ed", "outp", "outp", "outp", "rad"]
        for _ in range(n):
            p = self.eligible[rng.randrange(len(self.eligible))]
            code = depts[rng.randrange(len(depts))]
            start = h.start_ms - rng.randint(35, horizon) * DAY_MS + rng.randint(8, 17) * HOUR_MS
            if self.avoid_dept.get(p) and code in self.avoid_dept[p]:
                continue
            cls = {"ed": "EMER", "outp": "AMB", "rad": "AMB"}.get(code, "IMP")
            length = {"EMER": 4 * HOUR_MS, "AMB": 30 * MINUTE_MS}.get(cls, int(rng.uniform(1, 8) * DAY_MS))
            dept = h.depts[code]
            docs = [s for s in h.staff_of(code, "doctor") or h.staff_of(code, "technician") if s.start_day < 0]
            parts = [("ATND", docs[rng.randrange(len(docs))])] if docs else []
            st = Stay(self.new_id("enc"), p, dept, cls, start, start + length)
            st.parts = parts
            self.write_stay(st)

    # Daily ward care -----------------------------------------------------------------------
    def wards(self, d: int) -> None:
        h, _rng = self.h, self.rng
        weekend = h.weekday(d) >= 5
        day_start, day_end = h.local_ms(d, 0), h.local_ms(d + 1, 0)
        for ward in WARDS:
            keep: list[Stay] = []
            for st in self.census[ward]:
                if st.start >= day_end:
                    keep.append(st)
                    continue
                discharge_today = st.end < day_end
                self.ward_day(st, d, weekend, day_start, discharge_today)
                if discharge_today:
                    self.discharge(st, d)
                else:
                    keep.append(st)
            self.census[ward] = keep

    def ward_day(self, st: Stay, d: int, weekend: bool, day_start: int, leaving: bool) -> None:
        h, rng = self.h, self.rng
        ward = st.dept.code
        p = st.p
        first = max(st.start, day_start)
        last = st.end if leaving else min(st.end, h.local_ms(d + 1, 7))

        def at(hour_lo: float, hour_hi: float) -> int | None:
            t = h.local_ms(d, rng.uniform(hour_lo, hour_hi))
            return t if first <= t <= last else None

        # Doctors: the attending on weekdays (a colleague when absent), the on-call doctor at weekends.
        if not weekend:
            t = at(8.5, 12.5)
            if t is not None:
                doc = st.attending if st.attending and self.roster[d + 1].get(st.attending.idx) == "O" else None
                if doc is None:
                    doc = self.pick(ward, "doctor", t)
                if doc is not None:
                    self.burst(doc, t, self.address(doc, "ward" if rng.random() < 0.6 else "office"), p, "round", st)
                    self.note_outsider(st, doc)
                    self.cover_assist(st, t, d)
            interns = self.interns_on(ward, d)
            if interns and rng.random() < 0.45:
                # The intern of the team sees the patient too (one per patient, whatever the team size).
                s2 = interns[st.p % len(interns)][0]
                t = at(9, 17)
                if t is not None:
                    self.burst(s2, t, self.address(s2, "ward"), p, "round", st)
            if rng.random() < 0.45:
                t = at(13.5, 18.5)
                if t is not None:
                    doc = self.pick(ward, "doctor", t)
                    if doc is not None:
                        self.burst(doc, t, self.address(doc, "office"), p, "round", st)
                        self.note_outsider(st, doc)
        elif rng.random() < WEEKEND_DOCTOR_ROUND:
            t = at(9, 13)
            if t is not None:
                oncall = self.duty[d + 1].get((ward, "doctor", "W"), [])
                if oncall:
                    self.burst(oncall[0], t, self.address(oncall[0], "ward"), p, "round", st)
        # Nurses: two visits on the day shift, one or two at night.
        night = 0.88 if weekend or h.weekday(d) == 4 else 1.0  # fewer night admissions and calls
        visits = ((7.2, 10.5, 1.0), (13.0, 18.5, 0.9), (19.5, 23.0, 0.85 * night), (24.5, 29.0, 0.4 * night))
        for lo, hi, prob in visits:
            if rng.random() > prob:
                continue
            t = at(lo, hi)
            if t is None:
                continue
            nurse = self.pick(ward, "nurse", t)
            forced = self.forced.get(p)
            if forced is not None and forced in self.on_duty(ward, forced.role, t) and rng.random() < 0.7:
                nurse = forced
            if nurse is None:
                continue
            tablet = rng.random() < 0.25
            self.burst(nurse, t, self.address(nurse, "tablet" if tablet else "ward"), p, "nurse", st,
                       client="dpi-mobile" if tablet else "dpi-web")
            if rng.random() < 0.2:
                st.parts.append(("PPRF", nurse))
        # Lab results every morning; imaging now and then; pharmacist validation.
        t = at(6.5, 11)
        if t is not None:
            self.lab_results(p, t, rng.randint(1, 4))
        if rng.random() < 0.12:
            t = at(9, 17)
            if t is not None:
                self.imaging(st, t)
        if (not weekend or rng.random() < 0.3) and rng.random() < 0.45:
            t = at(9, 16.5)
            if t is not None:
                ph = self.pick("pharm", "pharmacist", t)
                if ph is not None:
                    self.burst(ph, t, self.address(ph, "office"), p, "pharm", st)
                    st.parts.append(("PART", ph))
        # Consults from another department: recorded in the encounter two times out of three.
        if not weekend and rng.random() < 0.045:
            t = at(10, 17)
            if t is not None:
                other = rng.choice([w for w in WARDS if w != ward])
                cons = self.pick(other, "doctor", t)
                if cons is not None:
                    self.burst(cons, t, self.address(cons, "ward"), p, "consult_ward", st)
                    if rng.random() < 0.67:
                        st.parts.append(("CON", cons))
        # Night cross-cover: the doctor on call for several wards opens a chart not theirs.
        if rng.random() < 0.012:
            t = at(20, 30)
            if t is not None:
                other = rng.choice([w for w in WARDS if w != ward])
                cons = self.pick(other, "doctor", h.local_ms(d, 12))
                if cons is not None:
                    self.burst(cons, t, self.address(cons, "ward"), p, "round", st)

    def note_outsider(self, st: Stay, doc: Staff) -> None:
        """A doctor from another department (covering this ward) is listed, or not always."""
        if doc.dept is not st.dept and self.rng.random() < self.cover_listed.get(doc.idx, 0.0):
            st.parts.append(("ATND", doc))

    def interns_on(self, ward: str, d: int) -> list[tuple[Staff, str]]:
        return [(s, "O") for s in self.duty[d + 1].get((ward, "doctor", "O"), []) if s.intern]

    def cover_assist(self, st: Stay, t: int, d: int) -> None:
        """A doctor covering this ward for the week also sees its patients (trap)."""
        rng = self.rng
        for s, dept, d0, d1, listed in self.cover:
            if dept is st.dept and d0 <= d <= d1 and self.roster[d + 1].get(s.idx) == "C" and rng.random() < 0.6:
                self.burst(s, t + rng.randint(10, 90) * MINUTE_MS, self.address(s, "ward"), st.p, "round", st)
                if rng.random() < listed:
                    st.parts.append(("ATND", s))

    def discharge(self, st: Stay, d: int) -> None:
        h, rng = self.h, self.rng
        ward = st.dept.code
        t = st.end - rng.randint(20, 120) * MINUTE_MS
        doc = st.attending if st.attending and self.roster[d + 1].get(st.attending.idx) in ("O", "W") else None
        doc = doc or self.pick(ward, "doctor", t)
        if doc is not None and t > st.start:
            self.burst(doc, t, self.address(doc, "office"), st.p, "round", st)
            st.parts.append(("DIS", doc))
        sec = self.pick(ward, "secretary", t)
        if sec is not None:
            t2 = st.end + rng.randint(1, 26) * HOUR_MS
            t2 = self.office_time(t2)
            self.burst(sec, t2, self.address(sec, "office"), st.p, "secretary", st)
            # A follow-up consultation in the same department for a third of patients.
            if rng.random() < 0.3:
                self.book(st.p, ward, t2 + 60_000, h.day_of(t2) + rng.randint(18, 28), booker=sec)
        coders = h.staff_of("dim", "coding")
        if coders:
            coder = coders[(h.pid[st.p] + len(ward)) % len(coders)]
            st.parts.append(("PART", coder))
            self.add_task(d + rng.randint(2, 14), ("coding", st, coder))
        clerks = h.staff_of("bill", "billing")
        if clerks:
            clerk = clerks[h.pid[st.p] % len(clerks)]
            st.parts.append(("PART", clerk))
            self.add_task(d + rng.randint(1, 8), ("billing", st, clerk))
            month = _month(h, d)
            self.month_stays.setdefault(month, []).append((st.p, st.id, clerk))
        self.write_stay(st)
        self.finished.setdefault(h.day_of(st.end), []).append(st.p)

    def office_time(self, t: int) -> int:
        """Move a time to the next office hours (weekday 08:30-17:00)."""
        h, rng = self.h, self.rng
        d = h.day_of(t)
        hour = self.hour(t)
        if hour >= 17:
            d += 1
            hour = rng.uniform(8.5, 11)
        elif hour < 8.5:
            hour = rng.uniform(8.5, 11)
        while h.weekday(d) >= 5:
            d += 1
        return h.local_ms(d, hour)

    def add_task(self, d: int, task: tuple[Any, ...]) -> None:
        self.tasks.setdefault(d, []).append(task)

    # Outpatients ----------------------------------------------------------------------------
    def appt_doctor(self, dept: str, day: int) -> Staff | None:
        docs = [s for s in self.h.staff_of(dept, "doctor") if not s.intern and s.start_day <= day <= s.last_day]
        if not docs:
            return None
        return docs[self.rng.randrange(len(docs))]

    def book(self, p: int, dept: str, t_booked: int, day: int, booker: Staff | Device | None,
             tele: bool = False) -> Appt | None:
        """Book an appointment (and record the booking when it falls inside the trail)."""
        h, rng = self.h, self.rng
        while h.weekday(day) >= 5:
            day += 1
        doc = self.appt_doctor(dept, day)
        if doc is None:
            return None
        start = h.local_ms(day, rng.choice([8.5, 9, 9.5, 10, 10.5, 11, 11.5, 14, 14.5, 15, 15.5, 16, 16.5, 17]))
        start += rng.choice([0, 15]) * MINUTE_MS
        a = Appt(self.new_id("apt"), p, doc, start, start + (20 if tele else 30) * MINUTE_MS, t_booked,
                 booker if isinstance(booker, Device) else None)
        a.tele = tele
        a.service = ("Téléconsultation " if tele else "Consultation ") + (doc.specialty or doc.dept.specialty)
        self.note_care(p, dept, start, a.end)
        self.all_appts.append(a)
        if start < h.start_ms:
            # Before the trail: only context (kept, as most appointments are).
            self.ctx.write(fhir_out.appointment(a.id, h.patient_ref(p), doc, start, a.end, "fulfilled", t_booked,
                                                a.by, a.service))
            return a
        self.appts.setdefault(day, []).append(a)
        if t_booked >= h.start_ms and booker is not None:
            if isinstance(booker, Staff):
                self.burst(booker, t_booked, self.address(booker, "office"), p, "book", appt=a)
            else:
                self.api_book(booker, a, t_booked)
        return a

    def api_book(self, dev: Device, a: Appt, t: int) -> None:
        h, rng = self.h, self.rng
        pref = h.patient_ref(a.p)
        addr = dev.addresses[rng.randrange(len(dev.addresses))]
        token = f"{rng.getrandbits(48):012x}"
        q = f"GET /fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{h.p_ins[a.p]}"
        self.trail.emit(t, dev, dev.login, addr, token, Op.SEARCH, pref, "Patient", "", "0", q)
        self.trail.emit(t + rng.randint(300, 2500), dev, dev.login, addr, token, Op.CREATE, pref, "Appointment", a.id)

    def book_ahead(self) -> None:
        """Appointments of the period: booked 1-28 days ahead (some before the trail starts)."""
        h, rng = self.h, self.rng
        self.future: list[tuple[int, int, str, Any, bool]] = []
        for day in range(-28, self.days + 28):
            if h.weekday(day) >= 5:
                continue
            n = _poisson(rng, OUTPATIENT_PER_DAY * self.scale)
            for _ in range(n):
                dept = rng.choices(["outp", "cardio", "surg", "mat", "onco", "peds", "rad"],
                                   [55, 9, 9, 8, 6, 5, 8])[0]
                lead = min(28, 1 + int(rng.expovariate(1 / 9)))
                bday = day - lead
                while h.weekday(bday) >= 5:
                    bday -= 1
                t_booked = h.local_ms(bday, rng.uniform(8.5, 17.5))
                tele = False
                booker: Staff | Device | None
                r = rng.random()
                if dept == "outp" and r < 0.30:
                    booker = h.devices["rdv-connect"]
                    t_booked = h.local_ms(bday, rng.uniform(7, 22.5))
                elif dept == "outp" and r < 0.38:
                    booker = h.devices["teleconsult"]
                    tele = True
                    t_booked = h.local_ms(bday, rng.uniform(7, 22.5))
                elif dept == "rad" and r < 0.45:
                    booker = h.devices["agenda-imagerie"]
                    t_booked = h.local_ms(bday, rng.uniform(7, 22.5))
                else:
                    booker = None  # decided at booking time (who is at the desk)
                self.future.append((t_booked, day, dept, booker, tele))
        self.future.sort(key=lambda x: (x[0], x[1]))
        self.future_pos = 0
        # Bookings before the trail are only context.
        while self.future_pos < len(self.future) and self.future[self.future_pos][0] < h.start_ms:
            t_booked, day, dept, booker, tele = self.future[self.future_pos]
            self.future_pos += 1
            p = self.pick_patient(dept, t_booked)
            self.book(p, dept, t_booked, day, booker, tele)

    def outpatients(self, d: int) -> None:
        h, rng = self.h, self.rng
        end = h.local_ms(d + 1, 0)
        # Bookings made today.
        while self.future_pos < len(self.future) and self.future[self.future_pos][0] < end:
            t_booked, day, dept, booker, tele = self.future[self.future_pos]
            self.future_pos += 1
            if booker is None:
                sec_dept = dept
                booker = self.pick(sec_dept, "secretary", t_booked) if h.staff_of(sec_dept, "secretary") else None
                if booker is None:
                    continue
            p = self.pick_patient(dept, t_booked)
            self.book(p, dept, t_booked, day, booker, tele)
        self.api_sync(d)
        # Today's appointments.
        todays = self.appts.pop(d, [])
        for a in todays:
            dept = a.doctor.dept.code
            r = rng.random()
            if r < 0.04:
                a.status = "cancelled"
                t_cancel = max(h.local_ms(d, 8), a.start - rng.randint(30, 120) * MINUTE_MS)
                sec = self.pick(dept, "secretary", t_cancel) if h.staff_of(dept, "secretary") else None
                if sec is not None:
                    self.burst(sec, t_cancel, self.address(sec, "office"), a.p, "checkin", appt=a)
            elif r < 0.12:
                a.status = "noshow"
            else:
                a.status = "fulfilled"
                self.consultation(a)
            self.ctx.write(fhir_out.appointment(a.id, h.patient_ref(a.p), a.doctor, a.start, a.end, a.status,
                                                a.booked, a.by, a.service))
            if a.status == "fulfilled":
                self.finished.setdefault(d, []).append(a.p)

    def consultation(self, a: Appt) -> None:
        h, rng = self.h, self.rng
        dept = a.doctor.dept.code
        st = Stay(self.new_id("enc"), a.p, a.doctor.dept, "VR" if a.tele else "AMB", a.start, a.end)
        st.parts = [("ATND", a.doctor)]
        if a.tele:
            dev = h.devices["teleconsult"]
            self.platform_prepare(dev, a)
        elif h.staff_of(dept, "secretary"):
            sec = self.pick(dept, "secretary", a.start)
            if sec is not None:
                self.burst(sec, a.start - rng.randint(3, 20) * MINUTE_MS, self.address(sec, "office"), a.p, "checkin",
                           st, appt=a)
                st.parts.append(("ADM", sec))
        if dept == "rad":
            tech = self.pick("rad", "technician", a.start)
            if tech is not None:
                self.burst(tech, a.start + rng.randint(0, 10) * MINUTE_MS, self.address(tech, "ward"), a.p, "rad_tech",
                           st, client="ris-pacs")
                st.parts.append(("PPRF", tech))
            self.burst(a.doctor, a.start + rng.randint(20, 120) * MINUTE_MS, self.address(a.doctor, "office"), a.p,
                       "radiologist", st, client="ris-pacs")
        else:
            doc_t = a.start + rng.randint(0, 15) * MINUTE_MS
            self.burst(a.doctor, doc_t, self.address(a.doctor, "office"), a.p, "consult", st, appt=a)
        if rng.random() < 0.3:
            clerks = h.staff_of("bill", "billing")
            if clerks:
                clerk = clerks[h.pid[a.p] % len(clerks)]
                st.parts.append(("PART", clerk))
                self.add_task(h.day_of(a.start) + rng.randint(1, 10), ("billing", st, clerk))
        self.write_stay(st)

    def platform_prepare(self, dev: Device, a: Appt) -> None:
        """The teleconsultation platform fetches what the doctor needs before the call."""
        h, rng = self.h, self.rng
        pref = h.patient_ref(a.p)
        pid = h.pid[a.p]
        addr = dev.addresses[rng.randrange(len(dev.addresses))]
        token = f"{rng.getrandbits(48):012x}"
        t = a.start - rng.randint(5, 60) * MINUTE_MS
        emit = self.trail.emit
        emit(t, dev, dev.login, addr, token, Op.READ, pref, "Patient", str(pid))
        emit(t + 400, dev, dev.login, addr, token, Op.SEARCH, pref, "Encounter", "", "0",
             _QUERY["Encounter"].format(pid=pid))
        emit(t + 900, dev, dev.login, addr, token, Op.SEARCH, pref, "MedicationRequest", "", "0",
             _QUERY["MedicationRequest"].format(pid=pid))
        emit(a.end + rng.randint(1, 10) * MINUTE_MS, dev, dev.login, addr, token, Op.CREATE, pref,
             "DocumentReference", self.rid(a.p))

    def api_sync(self, d: int) -> None:
        """Connected booking software re-reads its upcoming appointments (status, changes)."""
        h, rng = self.h, self.rng
        if h.weekday(d) >= 5:
            return
        for login in ("rdv-connect", "agenda-imagerie"):
            dev = h.devices[login]
            mine = [a for dd in range(d, d + 3) for a in self.appts.get(dd, []) if a.by is dev]
            for a in mine:
                if rng.random() < 0.5:
                    continue
                t = h.local_ms(d, rng.uniform(6, 21))
                addr = dev.addresses[rng.randrange(len(dev.addresses))]
                self.trail.emit(t, dev, dev.login, addr, "", Op.READ, h.patient_ref(a.p), "Appointment", a.id)

    # Follow-up tasks (coding, billing), month-end closing ----------------------------------------
    def run_tasks(self, d: int) -> None:
        h, rng = self.h, self.rng
        todo = self.tasks.pop(d, [])
        if h.weekday(d) >= 5:
            self.tasks.setdefault(d + (7 - h.weekday(d)), []).extend(todo)
            return
        for task in todo:
            kind, st, who = task
            t = h.local_ms(d, rng.uniform(8.7, 16.8))
            if self.roster[d + 1].get(who.idx) != "O":
                self.tasks.setdefault(d + 1, []).append(task)
                continue
            self.burst(who, t, self.address(who, "office"), st.p, kind, st)
        self.month_end(d)

    def month_end(self, d: int) -> None:
        """Billing closes the month: every stay discharged this month is checked again (trap)."""
        h, rng = self.h, self.rng
        day = h.cfg.start + timedelta(days=d)
        remaining = 0
        nxt = day + timedelta(days=1)
        while nxt.month == day.month:
            remaining += nxt.weekday() < 5
            nxt += timedelta(days=1)
        if remaining > 1:
            return
        month = (day.year, day.month)
        stays = self.month_stays.get(month, [])
        half = len(stays) // 2
        for p, sid, clerk in (stays[:half] if remaining == 1 else stays[half:]):
            if self.roster[d + 1].get(clerk.idx) != "O":
                continue
            t = h.local_ms(d, rng.uniform(8.5, 18.5))
            st = Stay(sid, p, h.depts["bill"], "IMP", t, t)
            self.burst(clerk, t, self.address(clerk, "office"), p, "billing_close", st)

    # Service accounts ---------------------------------------------------------------------
    def services(self, d: int) -> None:
        h, rng = self.h, self.rng
        # Nightly export at 02:00 of yesterday's finished encounters: one search, one
        # AuditEvent per patient in the result pages.
        dev = h.devices["export-regional"]
        patients = sorted(set(self.finished.pop(d - 1, [])))
        if patients:
            t = h.local_ms(d, 2 + rng.uniform(0, 0.03))
            day = fhir_out.format_recorded(h.local_ms(d - 1, 12))[:10]
            q = f"GET /fhir/Encounter?date={day}&status=finished&_include=Encounter:patient&_count=100"
            token = f"{rng.getrandbits(48):012x}"
            for i, p in enumerate(patients):
                if i % 100 == 0:
                    t += rng.randint(400, 1500)
                self.trail.emit(t, dev, dev.login, dev.addresses[0], token, Op.SEARCH, h.patient_ref(p), "Encounter",
                                "", "0", q)
                t += rng.randint(2, 12)
        # The DPI editor's technical account: interface checks on weekdays, a few records.
        tech = h.devices["editeur-integration"]
        if h.weekday(d) < 5:
            token = f"{rng.getrandbits(48):012x}"
            t = h.local_ms(d, rng.uniform(9, 11))
            self.trail.emit(t, tech, tech.login, tech.addresses[0], token, Op.LOGIN)
            for _ in range(rng.randint(0, 3)):
                census = [s for w in WARDS for s in self.census[w]]
                if not census:
                    break
                st = census[rng.randrange(len(census))]
                t += rng.randint(20, 600) * 1000
                self.trail.emit(t, tech, tech.login, tech.addresses[0], token, Op.READ, h.patient_ref(st.p),
                                "Patient", str(h.pid[st.p]))

    # Office work: bulk readers, call centre, IT ------------------------------------------------
    def office_work(self, d: int) -> None:
        h, rng = self.h, self.rng
        if h.weekday(d) >= 5:
            return
        # Research: cohort screening, 50-400 records a day for the heavy readers.
        for s in self.research_heavy:
            if self.roster[d + 1].get(s.idx) != "O":
                continue
            n = int(rng.uniform(50, 260) * min(1.0, 0.35 + self.scale * 0.45))
            t = h.local_ms(d, rng.uniform(8.8, 10))
            addr = self.address(s, "office")
            cohort_dept = WARDS[(s.idx + d // 7) % len(WARDS)]
            for _ in range(n):
                p = self.pick_patient(cohort_dept, t)
                t = self.burst(s, t, addr, p, "research") + rng.randint(5, 90) * 1000
        # Call centre: reminder calls for tomorrow's outpatient appointments.
        for i, s in enumerate(self.call_centre):
            if self.roster[d + 1].get(s.idx) != "O":
                continue
            nxt = d + 1
            while h.weekday(nxt) >= 5:
                nxt += 1
            upcoming = [a for a in self.appts.get(nxt, []) if a.doctor.dept.code == "outp" and not a.tele]
            mine = upcoming[i:: max(1, len(self.call_centre))]
            t = h.local_ms(d, rng.uniform(9, 10))
            addr = self.address(s, "office")
            for a in mine:
                t = self.burst(s, t, addr, a.p, "reminder", appt=a) + rng.randint(40, 240) * 1000
        # IT support opens a record now and then for a ticket.
        for s in h.staff_of("it", "it"):
            if self.roster[d + 1].get(s.idx) == "O" and rng.random() < 0.15:
                census = [st for w in WARDS for st in self.census[w]]
                if census:
                    st = census[rng.randrange(len(census))]
                    self.burst(s, h.local_ms(d, rng.uniform(9, 17)), self.address(s, "office"), st.p, "peek")

    def evenings(self, d: int) -> None:
        """Doctors finishing letters or checking results from home in the evening or on days off."""
        h, rng = self.h, self.rng
        for ward in WARDS:
            census = self.census[ward]
            for s in h.staff_of(ward, "doctor"):
                if not s.evening or d < s.start_day or d > s.last_day:
                    continue
                working = self.roster[d + 1].get(s.idx) in ("O", "W", "D")
                if rng.random() >= (s.evening if working else s.evening * 0.5):
                    continue
                t = h.local_ms(d, rng.uniform(19.0, 22.4))
                addr = self.address(s, "home")
                mine = [st for st in census if st.attending is s] or census
                for _ in range(rng.randint(1, 5)):
                    if not mine:
                        break
                    st = mine[rng.randrange(len(mine))]
                    t = self.burst(s, t, addr, st.p, "home", st) + rng.randint(30, 600) * 1000

    def recall_campaign(self, d: int) -> None:
        """Secretaries of one clinic call back former patients (trap): hundreds over a few days."""
        h, rng = self.h, self.rng
        for dept, secs, d0, d1, patients in self.recall:
            if not d0 <= d <= d1 or h.weekday(d) >= 5:
                continue
            share = patients[(d - d0) * len(patients) // (d1 - d0 + 1): (d - d0 + 1) * len(patients) // (d1 - d0 + 1)]
            for i, p in enumerate(share):
                s = secs[i % len(secs)]
                t = h.local_ms(d, rng.uniform(8.7, 17))
                addr = self.address(s, "office")
                t = self.burst(s, t, addr, p, "recall")
                if rng.random() < 0.8:
                    self.book(p, dept.code, t + 30_000, d + rng.randint(7, 25), booker=s)

    # End of the period -------------------------------------------------------------------
    def finish(self) -> None:
        """Write what is still open: stays in progress, appointments after the period."""
        for ward in WARDS:
            for st in self.census[ward]:
                self.write_stay(st, open_end=st.end >= self.h.end_ms)
        for day in sorted(self.appts):
            for a in self.appts[day]:
                self.ctx.write(fhir_out.appointment(a.id, self.h.patient_ref(a.p), a.doctor, a.start, a.end,
                                                    "booked", a.booked, a.by, a.service))
        self.appts.clear()


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 60:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def _weighted_hour(rng: random.Random, weights: list[float]) -> int:
    r = rng.random() * sum(weights)
    for hour, w in enumerate(weights):
        r -= w
        if r <= 0:
            return hour
    return len(weights) - 1


def _month(h: Hospital, d: int) -> tuple[int, int]:
    day = h.cfg.start + timedelta(days=d)
    return day.year, day.month

