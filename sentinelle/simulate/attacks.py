"""Planted attacks, each modelled on a French breach (the seed articles) or a known insider pattern.

Every attack uses an account that is allowed in and standard functions, as in the press
reports: nothing "breaks"; only what the account does with patient records gives it
away. Victims are chosen so the care context does not explain the accesses (no
encounter, appointment, care team or department link for the attacker at that time),
and attacks start after the first third of the trail (clean history to learn from).
Rates and sizes vary with the seed; volumes scale with the hospital.
"""

from __future__ import annotations

import random
from typing import Any

from sentinelle.simulate.activity import WARDS, Activity
from sentinelle.simulate.fhir_out import Op, format_recorded
from sentinelle.simulate.hospital import HOUR_MS, Device, Hospital, Staff

__all__ = ["KINDS", "Attack", "plan_attacks"]

#: kind -> (seed article, short name)
KINDS: dict[str, tuple[str, str]] = {
    "privileged_app_bulk": ("Mediboard / Aléo Santé, November 2024 (seeds 001, 003)", "Mediboard"),
    "api_client_overreach": ("Doctolib, July 2020 (seed 002)", "Doctolib 2020"),
    "stolen_credentials": ("Normand'e-Santé / ARS Hauts-de-France (seed 004)", "Normand'e-Santé"),
    "platform_pull": ("MédecinDirect, November 2025 (seed 000)", "MédecinDirect"),
    "dormant_account": ("Departed employee's account reused (insider pattern; REALISM.md turnover 19 %/year)",
                        "dormant account"),
    "throttled_script": ("Scripted exfiltration below hourly thresholds (variant of seeds 001, 003)",
                         "throttled script"),
    "low_and_slow": ("Low-and-slow insider reading a few unrelated records a day (REALISM.md, Boxwala 2011)",
                     "low and slow"),
    "vip_snooping": ("Snooping on a VIP (REALISM.md, Boxwala 2011: VIP flags)", "VIP snooping"),
    "coworker_snooping": ("Snooping on a coworker (REALISM.md, Boxwala 2011: coworker flags)", "coworker"),
    "relative_snooping": ("Snooping on a relative (REALISM.md, Protenus: family is 77 % of snooping)", "relative"),
}


class Attack:
    """One planted attack: who, from where, when, against whom; generates its own events."""

    def __init__(self, idx: int, kind: str, actor: Staff | Device, client: str, d0: int, d1: int,
                 description: str) -> None:
        self.idx = idx
        self.id = f"atk-{idx + 1:02d}"
        self.kind = kind
        self.seed_case = KINDS[kind][0]
        self.actor = actor
        self.account = actor.login
        self.client = client
        self.d0 = d0
        self.d1 = d1
        self.description = description
        self.addresses: list[str] = []
        self.params: dict[str, Any] = {}
        self.victims: list[int] = []

    def label(self, n_events: int, patients: int, first: int | None, last: int | None,
              addresses: list[str]) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "seed_case": self.seed_case,
            "account": self.account,
            "client": self.client,
            "addresses": addresses,
            "start": format_recorded(first) if first is not None else None,
            "end": format_recorded(last) if last is not None else None,
            "n_events": n_events,
            "n_patients": patients,
            "description": self.description,
        }


def _ip(rng: random.Random, prefix: str) -> str:
    parts = prefix.count(".")
    return prefix + ".".join(str(rng.randrange(2, 250)) for _ in range(4 - parts))


def plan_attacks(h: Hospital, act: Activity, rng: random.Random) -> list[Attack]:
    """Choose accounts, victims, days and rates of the ten attacks (before generation)."""
    days = h.cfg.days
    learn = days // 3 + 1
    sc = h.cfg.scale
    out: list[Attack] = []
    used: set[int] = set()

    def window(lo: float, hi: float, length: int) -> tuple[int, int]:
        d0 = rng.randint(max(learn, int(days * lo)), max(learn, int(days * hi)))
        d0 = min(d0, days - length)
        return d0, min(days - 1, d0 + length - 1)

    def staff(pool: list[Staff]) -> Staff:
        pool = [s for s in pool if s.idx not in used and not s.intern and s.start_day < 0 and s.last_day > 10**5]
        s = pool[rng.randrange(len(pool))]
        used.add(s.idx)
        return s

    # (a) Mediboard: the DPI editor's privileged technical account, password only, at night,
    # from a new address, bulk-reading identities and some allergies and prescriptions.
    d0, d1 = window(0.55, 0.8, rng.randint(1, 2))
    a = Attack(len(out), "privileged_app_bulk", h.devices["editeur-integration"], "editeur-integration", d0, d1,
               "The DPI editor's privileged technical account (password only, no MFA) is used at night from a new "
               "address to read thousands of patient identities, with allergies and prescriptions for some.")
    a.params = {
        "target": max(600, int(h.cfg.patients * rng.uniform(0.18, 0.3) * (1.0 if sc < 1 else 0.6))),
        "rate": rng.uniform(900, 2200),  # patients per hour
        "clinical": rng.uniform(0.15, 0.35),
        "address": _ip(rng, rng.choice(["185.220.101.", "45.134.", "193.32."])),
    }
    out.append(a)

    # (b) Doctolib 2020: a connected booking software's API credentials read thousands of
    # appointments of other practices in a few hours (name, contact, date, doctor's specialty).
    d0, d1 = window(0.45, 0.85, 1)
    dev = h.devices["rdv-connect"]
    b = Attack(len(out), "api_client_overreach", dev, dev.login, d0, d1,
               "The API credentials of the practices' booking software read the appointments of the whole hospital "
               "(patient name and contact, date, doctor's specialty), far beyond its own practices, in a few hours.")
    b.params = {
        "target": max(250, int(6128 * min(1.0, sc / 1.5) * rng.uniform(0.8, 1.1))),
        "rate": rng.uniform(1500, 4000),  # appointments per hour
        "patient_reads": rng.uniform(0.3, 0.6),
        "address": _ip(rng, rng.choice(["103.151.", "91.242.", "5.188."])),
        "hour": rng.uniform(13, 19),
    }
    out.append(b)

    # (c) Normand'e-Santé: a health professional's stolen credentials, at night, unseen
    # address, identities across departments.
    d0, d1 = window(0.4, 0.75, 2)
    doc = staff([s for w in ("cardio", "med", "surg") for s in h.staff_of(w, "doctor")])
    doc.home_auth = "password"
    c = Attack(len(out), "stolen_credentials", doc, "dpi-web", d0, d1,
               "A doctor's stolen login and password are used at night from an address never seen before to "
               "read patient identities and contact details across all departments.")
    c.params = {
        "target": max(150, int(900 * min(1.5, sc) * rng.uniform(0.7, 1.3))),
        "address": _ip(rng, rng.choice(["91.219.", "80.94.", "194.26."])),
    }
    out.append(c)

    # (d) MédecinDirect: the teleconsultation platform's account pulls identities, NIR,
    # treating doctor, consultation history and prescriptions, round the clock.
    d0, d1 = window(0.5, 0.8, 2)
    tele = h.devices["teleconsult"]
    dd = Attack(len(out), "platform_pull", tele, tele.login, d0, d1,
                "The teleconsultation platform's account, from its usual servers, pulls patient identities with "
                "NIR and treating doctor, consultation history and prescriptions, for patients it never served.")
    dd.params = {
        "target": max(200, int(2600 * min(1.5, sc) * rng.uniform(0.7, 1.2))),
        "hours": rng.uniform(18, 34),
    }
    out.append(dd)

    # (e) Dormant account of a departed nurse, reused in the evening from outside.
    leaver = staff([s for w in WARDS for s in h.staff_of(w, "nurse")])
    leaver.last_day = rng.randint(1, max(2, learn - 3))
    leaver.end_day = leaver.last_day + rng.randint(0, 2)
    leaver.home_auth = "password"
    lo_day = max(learn, leaver.end_day + 14, int(days * 0.5))
    d0 = min(days - 3, rng.randint(lo_day, max(lo_day, int(days * 0.85))))
    d1 = d0 + 2
    e = Attack(len(out), "dormant_account", leaver, "dpi-web", d0, d1,
               "The account of a nurse who left the hospital (employment ended, account never disabled) is reused "
               "in the evenings from outside to browse patient records.")
    e.params = {"target": max(30, int(rng.uniform(40, 120) * min(1.5, sc ** 0.5))),
                "address": _ip(rng, rng.choice(["37.170.", "31.32.", "79.127."]))}
    out.append(e)

    # (f) Scripted exfiltration from an IT workstation, throttled to 20-30 patients an hour,
    # round the clock, regular timing, sequential patient ids.
    length = {"tiny": 3, "small": 4, "standard": 6}.get(h.cfg.name, 8)
    d0, d1 = window(0.4, 0.6, length)
    it = staff(h.staff_of("it", "it"))
    f = Attack(len(out), "throttled_script", it, "dpi-web", d0, d1,
               "A script on an IT workstation reads patient records with sequential ids, 20-30 an hour round the "
               "clock at a regular pace, below any hourly threshold.")
    f.params = {"per_hour": rng.uniform(20, 30), "start_rank": rng.randrange(0, max(1, h.cfg.patients - 4000)),
                "address": it.office or it.favourites[0]}
    out.append(f)

    # (g) Low-and-slow: a ward secretary reads a few unrelated records a day, for weeks.
    d0 = learn + rng.randint(0, 2)
    sec = staff([s for w in WARDS for s in h.staff_of(w, "secretary")])
    g = Attack(len(out), "low_and_slow", sec, "dpi-web", d0, days - 1,
               "A ward secretary opens two to five unrelated patients' records a day, during her shifts, from her "
               "usual workstation, for weeks.")
    g.params = {"per_day": (2, 5)}
    out.append(g)

    # (h) VIP snooping: a nurse from another department opens a public figure's record
    # while they are in hospital (the VIP's stay is a trap planned with the same dates).
    vips = [p for p in h.vips if h.p_flags[p] & 1]
    vip = vips[rng.randrange(len(vips))] if vips else h.vips[0]
    vip_ward = rng.choice(["cardio", "med", "surg"])
    act.vip_planned = (vip, vip_ward)
    vd = max(learn, int(days * 0.4))
    snooper = staff([s for w in WARDS if w != vip_ward for s in h.staff_of(w, "nurse")])
    hv = Attack(len(out), "vip_snooping", snooper, "dpi-web", vd, min(days - 1, vd + 2),
                "A nurse from another department breaks the glass to open a hospitalised public figure's record "
                "several times, without any part in their care.")
    hv.victims = [vip]
    act.avoid_dept.setdefault(vip, set()).add(snooper.dept.code)
    out.append(hv)
    used_patients = {vip}

    # (i) Coworker: a nurse reads the record of a colleague of her ward after the colleague's
    # emergency visit.
    ward_staff = [s for s in h.staff if s.patient >= 0 and s.dept.code in WARDS and s.idx not in used]
    victim_staff = ward_staff[rng.randrange(len(ward_staff))]
    used.add(victim_staff.idx)
    colleagues = [s for s in h.staff_of(victim_staff.dept.code, "nurse") if s is not victim_staff]
    snoop2 = staff(colleagues or h.staff_of(victim_staff.dept.code, "doctor"))
    cd = max(learn + 1, int(days * rng.uniform(0.45, 0.65)))
    act.planned.setdefault(cd, []).append((victim_staff.patient, "", 20.5, 0.0, "ed"))
    act.avoid_dept.setdefault(victim_staff.patient, set()).add(victim_staff.dept.code)
    i = Attack(len(out), "coworker_snooping", snoop2, "dpi-web", cd + 1, min(days - 1, cd + 3),
               "A nurse reads the emergency-department record of a colleague from her own ward, in which she had "
               "no part.")
    i.victims = [victim_staff.patient]
    out.append(i)
    used_patients.add(victim_staff.patient)

    # (j) Relative: a staff member reads the record of a relative (same family name and
    # address) seen in the emergency department.
    pairs = [(h.staff[k], rel) for k, rel in h.relatives_of_staff.items()
             if k not in used and h.staff[k].dept.code in [*WARDS, "outp", "adm", "bill"] and not h.staff[k].intern
             and h.staff[k].start_day < 0]
    pairs = [(s, [q for q in rel if q not in used_patients]) for s, rel in pairs]
    pairs = [(s, rel) for s, rel in pairs if rel]
    s_rel, rel = pairs[rng.randrange(len(pairs))]
    used.add(s_rel.idx)
    q = rel[0]
    rd = max(learn + 1, int(days * rng.uniform(0.5, 0.75)))
    act.planned.setdefault(rd, []).append((q, "", 9.5, 0.0, "ed"))
    act.avoid_dept.setdefault(q, set()).add(s_rel.dept.code)
    j = Attack(len(out), "relative_snooping", s_rel, "dpi-web", rd, min(days - 1, rd + 3),
               "A staff member repeatedly reads the emergency record of a relative (same family name and address) "
               "treated by another department.")
    j.victims = [q]
    out.append(j)
    used_patients.add(q)

    act.reserved_staff = set(used)
    act.used_patients = used_patients
    return out


# -- generation -------------------------------------------------------------------------------

def run_attacks(attacks: list[Attack], act: Activity, d: int, rng: random.Random) -> None:
    """Emit the events of every attack active on day `d`."""
    for a in attacks:
        if a.d0 <= d <= a.d1:
            _RUNNERS[a.kind](a, act, d, rng)


def _victim(act: Activity, rng: random.Random, dept: str, t: int, exclude: set[int]) -> int:
    for _ in range(200):
        p = act.eligible[rng.randrange(len(act.eligible))]
        if p in exclude or act.h.p_flags[p] & 7 or act.treated_by(p, dept, t):
            continue
        return p
    return act.eligible[rng.randrange(len(act.eligible))]


def _mediboard(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h, emit = act.h, act.trail.emit
    dev = a.actor
    assert isinstance(dev, Device)
    nights = a.d1 - a.d0 + 1
    target = a.params["target"] // nights
    addr = a.params["address"]
    token = f"{rng.getrandbits(48):012x}"
    t = h.local_ms(d, rng.uniform(0.5, 1.5))
    emit(t - 20_000, dev, dev.login, addr, token, Op.LOGIN, attack=a.idx)
    gap = HOUR_MS / a.params["rate"]
    # Standard functions: the patient list, page after page (one AuditEvent per patient in a
    # page, as BALP records searches), then allergies and prescriptions for some of them.
    pool = a.params.get("pool")
    if pool is None:
        pool = sorted((p for p in range(len(h.pid)) if h.registered[p]), key=lambda p: h.pid[p])
        a.params["pool"] = pool
        a.params["offset"] = rng.randrange(max(1, len(pool) - a.params["target"]))
    offset = a.params["offset"]
    for k in range(target):
        if (offset + k) % 100 == 0 or k == 0:
            page = (offset + k) // 100 * 100
            q = f"GET /fhir/Patient?_sort=_id&_count=100&_offset={page}"
            t += rng.randint(800, 2500)
        p = pool[(offset + k) % len(pool)]
        pref, pid = h.patient_ref(p), h.pid[p]
        emit(t, dev, dev.login, addr, token, Op.SEARCH, pref, "Patient", "", "0", q, attack=a.idx)
        if rng.random() < a.params["clinical"]:
            emit(t + 150, dev, dev.login, addr, token, Op.SEARCH, pref, "AllergyIntolerance", "", "0",
                 f"GET /fhir/AllergyIntolerance?patient={pid}", attack=a.idx)
            emit(t + 300, dev, dev.login, addr, token, Op.SEARCH, pref, "MedicationRequest", "", "0",
                 f"GET /fhir/MedicationRequest?patient={pid}&_count=100", attack=a.idx)
        t += max(20, int(rng.gauss(gap, gap * 0.3)))
    a.params["offset"] = offset + target


def _doctolib(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h, emit = act.h, act.trail.emit
    dev = a.actor
    assert isinstance(dev, Device)
    addr = a.params["address"]
    t = h.local_ms(d, a.params["hour"])
    own = dev.owner.code
    # Appointments of the other departments that exist by then, day after day, specialty by specialty.
    pool = [x for x in act.all_appts if x.doctor.dept.code != own and x.booked < t and x.by is not dev
            and not act.treated_by(x.p, own, t) and not h.p_flags[x.p] & 4]
    # Day by day, specialty by specialty: one search page per (day, specialty).
    pool.sort(key=lambda x: (h.day_of(x.start), x.doctor.specialty, x.start, x.id))
    target = min(a.params["target"], len(pool))
    first = rng.randrange(max(1, len(pool) - target + 1))
    chosen = pool[first: first + target]
    gap = HOUR_MS / a.params["rate"]
    token = f"{rng.getrandbits(48):012x}"
    page: list[Any] = []
    key: tuple[str, str] | None = None

    def flush_page(t: int) -> int:
        if not page:
            return t
        day, spec = key or ("", "")
        q = f"GET /fhir/Appointment?date={day}&specialty={spec}&_include=Appointment:patient&_count=100"
        for x in page:
            pref = h.patient_ref(x.p)
            emit(t, dev, dev.login, addr, token, Op.SEARCH, pref, "Appointment", "", "0", q, attack=a.idx)
            t += rng.randint(2, 15)
            if rng.random() < a.params["patient_reads"]:
                emit(t, dev, dev.login, addr, token, Op.READ, pref, "Patient", str(h.pid[x.p]), attack=a.idx)
                t += max(200, int(rng.gauss(gap, gap * 0.4)))
        page.clear()
        return t + max(500, int(rng.gauss(gap * 3, gap)))

    for x in chosen:
        k = (format_recorded(x.start)[:10], x.doctor.specialty or x.doctor.dept.specialty)
        if k != key or len(page) >= 100:
            t = flush_page(t)
            key = k
        page.append(x)
    flush_page(t)


def _stolen(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h = act.h
    s = a.actor
    assert isinstance(s, Staff)
    addr = a.params["address"]
    per_night = a.params["target"] // (a.d1 - a.d0 + 1)
    t = h.local_ms(d, rng.uniform(22.5, 23.8))
    exclude: set[int] = set(a.victims)
    for _ in range(per_night):
        p = _victim(act, rng, s.dept.code, t, exclude)
        exclude.add(p)
        a.victims.append(p)
        t = act.burst(s, t, addr, p, "peek", attack=a.idx, own_session=True)
        t += int(rng.uniform(3, 25) * 1000)


def _platform(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h, emit = act.h, act.trail.emit
    dev = a.actor
    assert isinstance(dev, Device)
    total_hours = a.params["hours"]
    start_t = h.local_ms(a.d0, rng.uniform(17, 21)) if d == a.d0 else h.local_ms(d, 0)
    end_t = h.local_ms(a.d0, 19) + int(total_hours * HOUR_MS)
    day_end = h.local_ms(d + 1, 0)
    if start_t >= end_t:
        return
    rate = a.params["target"] / total_hours
    n = int(rate * (min(end_t, day_end) - start_t) / HOUR_MS)
    t = start_t
    gap = HOUR_MS / max(rate, 1)
    exclude: set[int] = set(a.victims)
    own = dev.owner.code
    for _ in range(n):
        p = _victim(act, rng, own, t, exclude)
        exclude.add(p)
        a.victims.append(p)
        pref, pid = h.patient_ref(p), h.pid[p]
        addr = dev.addresses[rng.randrange(len(dev.addresses))]
        token = f"{rng.getrandbits(48):012x}"
        emit(t, dev, dev.login, addr, token, Op.READ, pref, "Patient", str(pid), attack=a.idx)
        emit(t + rng.randint(200, 900), dev, dev.login, addr, token, Op.SEARCH, pref, "Encounter", "", "0",
             f"GET /fhir/Encounter?patient={pid}&_sort=-date", attack=a.idx)
        emit(t + rng.randint(900, 2000), dev, dev.login, addr, token, Op.SEARCH, pref, "MedicationRequest", "", "0",
             f"GET /fhir/MedicationRequest?patient={pid}", attack=a.idx)
        t += max(1000, int(rng.gauss(gap, gap * 0.5)))
        if t >= day_end:
            break


def _dormant(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h = act.h
    s = a.actor
    assert isinstance(s, Staff)
    per_day = max(5, a.params["target"] // (a.d1 - a.d0 + 1))
    t = h.local_ms(d, rng.uniform(19.5, 21.5))
    exclude = set(a.victims)
    for _ in range(per_day):
        p = _victim(act, rng, s.dept.code, t, exclude)
        exclude.add(p)
        a.victims.append(p)
        t = act.burst(s, t, a.params["address"], p, "peek" if rng.random() < 0.7 else "home", attack=a.idx,
                      own_session=True)
        t += int(rng.uniform(20, 240) * 1000)


def _throttled(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h, emit = act.h, act.trail.emit
    s = a.actor
    assert isinstance(s, Staff)
    gap = HOUR_MS / a.params["per_hour"]
    t = a.params.get("next_t") or h.local_ms(d, rng.uniform(9, 11))
    rank = a.params.get("rank", a.params["start_rank"])
    addr = a.params["address"]
    day_end = h.local_ms(d + 1, 0)
    by_pid = a.params.get("by_pid")
    if by_pid is None:
        by_pid = {h.pid[p]: p for p in range(len(h.pid)) if h.registered[p]}
        a.params["by_pid"] = by_pid
    # The script runs in a session of its own (it logs in once a day).
    sid = act.session(s, addr, t, a.idx)
    while t < day_end:
        pid = 100000 + rank
        rank += 1
        ref = f"Patient/{pid}"
        if pid not in by_pid:
            emit(t, s, "dpi-web", addr, sid, Op.READ, ref, "Patient", str(pid), "4", attack=a.idx)
        else:
            emit(t, s, "dpi-web", addr, sid, Op.READ, ref, "Patient", str(pid), attack=a.idx)
            if rng.random() < 0.5:
                emit(t + rng.randint(300, 900), s, "dpi-web", addr, sid, Op.SEARCH, ref, "Coverage", "", "0",
                     f"GET /fhir/Coverage?beneficiary=Patient/{pid}", attack=a.idx)
        t += int(gap * rng.uniform(0.97, 1.03))
    a.params["rank"] = rank
    a.params["next_t"] = t


def _low_slow(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h = act.h
    s = a.actor
    assert isinstance(s, Staff)
    if act.roster[d + 1].get(s.idx) not in ("O", "D"):
        return
    lo, hi = a.params["per_day"]
    exclude = set(a.victims)
    for _ in range(rng.randint(lo, hi)):
        t = h.local_ms(d, rng.uniform(9, 16.5))
        p = _victim(act, rng, s.dept.code, t, exclude)
        exclude.add(p)
        a.victims.append(p)
        act.burst(s, t, act.address(s, "office"), p, "peek", attack=a.idx)


def _snoop(a: Attack, act: Activity, d: int, rng: random.Random) -> None:
    h = act.h
    s = a.actor
    assert isinstance(s, Staff)
    p = a.victims[0]
    if d != a.d0 and rng.random() < 0.35:
        return
    sessions = rng.randint(1, 2)
    for _ in range(sessions):
        shift = act.roster[d + 1].get(s.idx)
        if shift == "N":
            t = h.local_ms(d, rng.uniform(21, 26))
            where = "ward"
        elif shift in ("D", "O"):
            t = h.local_ms(d, rng.uniform(10, 17.5))
            where = "ward"
        else:
            t = h.local_ms(d, rng.uniform(19, 22.5))
            where = "home"
        purpose = "btg" if h.p_flags[p] & 19 else ""
        act.burst(s, t, act.address(s, where), p, "peek" if rng.random() < 0.5 else "home", attack=a.idx,
                  purpose=purpose)


_RUNNERS: dict[str, Any] = {
    "privileged_app_bulk": _mediboard,
    "api_client_overreach": _doctolib,
    "stolen_credentials": _stolen,
    "platform_pull": _platform,
    "dormant_account": _dormant,
    "throttled_script": _throttled,
    "low_and_slow": _low_slow,
    "vip_snooping": _snoop,
    "coworker_snooping": _snoop,
    "relative_snooping": _snoop,
}
