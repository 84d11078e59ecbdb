"""Benign traps: legitimate situations that look like misuse and must not raise alarms.

Each trap is something real hospitals live with and naive rules flag: a mass-casualty
surge in the emergency department, billing clerks closing the month, a clinic recalling
hundreds of former patients, new hires with no history, a doctor covering another unit,
a VIP admitted and treated, staff and relatives of staff who are patients. The traps
only set hooks on the `Activity`; the care they cause is generated like any other, with
the encounters and appointments that explain it.

Choice for the covering doctor: the covering doctor is added to the covered unit's
encounters as an attending participant for 85 % of the patients they see; the other
15 % are not recorded, as happens when the rota is not in the DPI.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sentinelle.simulate.activity import WARDS, Activity
from sentinelle.simulate.fhir_out import format_recorded
from sentinelle.simulate.hospital import DAY_MS, Hospital, Staff

__all__ = ["COVER_LISTED_SHARE", "Traps"]

COVER_LISTED_SHARE = 0.85


class Traps:
    """Plans the benign traps and the staff lifecycle (hires, leavers, interns)."""

    def __init__(self, h: Hospital, rng: random.Random, reserved: set[int]) -> None:
        self.h = h
        self.rng = rng
        self.reserved = reserved  # staff the attacks use: no trap may involve them
        self.items: list[dict[str, Any]] = []
        self.lifecycle: dict[str, list[str]] = {"hires": [], "leavers": [], "interns": []}

    def _free(self, staff: list[Staff]) -> list[Staff]:
        return [s for s in staff if s.idx not in self.reserved and s.start_day <= 0 and s.last_day > 10**5]

    def _add(self, kind: str, accounts: list[str], start: int, end: int, description: str,
             patients: list[str] | None = None) -> None:
        self.items.append({
            "id": f"trap-{len(self.items) + 1:02d}",
            "kind": kind,
            "accounts": sorted(set(accounts)),
            "start": format_recorded(start),
            "end": format_recorded(end),
            "description": description,
            "patients": patients or [],
        })

    # Before the roster: who works when.
    def plan_staff(self, act: Activity) -> None:
        h, rng = self.h, self.rng
        days = h.cfg.days
        # Leavers, about 19 % a year; their end date is recorded late (a few days to weeks).
        n_leave = max(1, round(len(h.staff) * 0.19 * days / 365))
        pool = self._free([s for s in h.staff if s.role in ("nurse", "secretary", "admissions", "technician")])
        for s in rng.sample(pool, min(n_leave, len(pool))):
            s.last_day = rng.randint(days // 4, days - 2)
            s.end_day = s.last_day + rng.randint(3, 25)
            self.lifecycle["leavers"].append(s.login)
            self.reserved.add(s.idx)
        # New hires, first days after the learning period: no history at all.
        n_hire = max(2, round(len(h.staff) * 0.19 * days / 365))
        pool = self._free([s for s in h.staff if s.dept.code in [*WARDS, "ed", "outp"]
                           and s.role in ("nurse", "doctor", "secretary") and not s.intern])
        for s in rng.sample(pool, min(n_hire, len(pool))):
            s.start_day = rng.randint(days // 3 + 1, max(days // 3 + 2, days - 5))
            self.lifecycle["hires"].append(s.login)
            self.reserved.add(s.idx)
            t0 = h.local_ms(s.start_day, 0)
            self._add("new_hire", [s.login], t0, t0 + 5 * DAY_MS,
                      f"New {s.role} in {s.dept.alias}: first days of the account, no history.")
        self.lifecycle["interns"] = [s.login for s in h.staff if s.intern]
        # A doctor covers another ward for a week.
        d0 = days // 2
        while h.weekday(d0) != 0:
            d0 += 1
        d0 = min(d0, days - 5)
        src, dst = rng.sample(WARDS[:4], 2)
        docs = self._free([s for s in h.staff_of(src, "doctor") if not s.intern])
        if docs and len(h.staff_of(src, "doctor")) > 1:
            s = docs[rng.randrange(len(docs))]
            self.reserved.add(s.idx)
            act.cover.append((s, h.depts[dst], d0, d0 + 4, COVER_LISTED_SHARE))
            act.cover_listed[s.idx] = COVER_LISTED_SHARE
            self._add("covering_doctor", [s.login], h.local_ms(d0, 0), h.local_ms(d0 + 5, 0),
                      f"A {h.depts[src].alias} doctor covers {h.depts[dst].alias} for a week: listed as attending "
                      f"on {int(COVER_LISTED_SHARE * 100)} % of the patients seen there.")
        # Mass-casualty surge in the emergency department.
        sd = max(days // 3 + 1, int(days * 0.55))
        count = max(8, round(26 * h.cfg.scale ** 0.8))
        act.surges[sd] = (15.5, count)
        ed_staff = [s.login for s in h.staff if s.dept.code == "ed"]
        self._add("mass_casualty", ed_staff, h.local_ms(sd, 15), h.local_ms(sd + 1, 8),
                  f"Coach accident: {count} casualties arrive within 2.5 hours; the whole emergency team opens "
                  "their charts (encounters recorded).")
        # Month-end billing: the last two weekdays of every month in the period.
        clerks = [s.login for s in h.staff_of("bill", "billing")]
        for d in range(days):
            day = h.cfg.start + timedelta(days=d)
            nxt = day + timedelta(days=1)
            remaining = 0
            while nxt.month == day.month:
                remaining += nxt.weekday() < 5
                nxt += timedelta(days=1)
            if remaining == 0 and day.weekday() < 5 and d >= 1:
                first = d - 1
                while h.weekday(first) >= 5:
                    first -= 1
                self._add("month_end_billing", clerks, h.local_ms(max(first, 0), 0), h.local_ms(d + 1, 0),
                          "Month-end closing: billing clerks re-check every stay discharged this month.")

    # After the bootstrap: who is treated when.
    def plan_patients(self, act: Activity, used_patients: set[int]) -> None:
        h, rng = self.h, self.rng
        days = h.cfg.days
        # Recall campaign: one clinic's secretaries call hundreds of former patients.
        outp = h.depts["outp"]
        secs = self._free(h.staff_of("outp", "secretary"))
        secs = [s for s in secs if s not in act.call_centre][:3] or secs[:1]
        former = sorted({p for p, hist in act.p_hist.items()
                         for dcode, _start, end in hist if dcode == "outp" and end < h.start_ms})
        former = [p for p in former if p not in used_patients and not h.p_flags[p] & 7]
        n = min(len(former), max(60, round(330 * h.cfg.scale ** 0.7)))
        if secs and n:
            d0 = max(days // 3 + 1, int(days * 0.45))
            while h.weekday(d0) >= 5:
                d0 += 1
            d1 = d0 + 3
            chosen = rng.sample(former, n)
            act.recall.append((outp, secs, d0, d1, chosen))
            for s in secs:
                self.reserved.add(s.idx)
            self._add("recall_campaign", [s.login for s in secs], h.local_ms(d0, 0), h.local_ms(d1 + 3, 0),
                      f"Device recall: outpatient secretaries call {n} former patients over four working days "
                      "and book control visits.", [h.patient_ref(p) for p in chosen[:20]])
        # A VIP is admitted through the emergency department and treated.
        vd = max(days // 3 + 1, int(days * 0.4))
        vip = act.vip_planned
        if vip is not None:
            p, ward = vip
            act.planned.setdefault(vd, []).append((p, ward, 14.2, 4.0, "ed"))
            accounts = [s.login for s in h.staff if s.dept.code in ("ed", ward)]
            self._add("vip_admission", accounts, h.local_ms(vd, 14), h.local_ms(vd + 6, 0),
                      "A public figure (restricted record) is admitted through the emergency department and "
                      "treated: the treating team's accesses (break-the-glass in the emergency department).",
                      [h.patient_ref(p)])
        # A staff member admitted to their own ward: colleagues treat a coworker.
        staff_patients = [s for s in h.staff if s.patient >= 0 and s.dept.code in WARDS and s.idx not in self.reserved
                          and s.patient not in used_patients]
        if staff_patients:
            s = staff_patients[rng.randrange(len(staff_patients))]
            cd = max(days // 3 + 2, int(days * 0.62))
            act.planned.setdefault(cd, []).append((s.patient, s.dept.code, 10.0, 3.0, "adm"))
            used_patients.add(s.patient)
            self.reserved.add(s.idx)
            accounts = [x.login for x in h.staff if x.dept is s.dept and x is not s]
            self._add("coworker_treated", accounts, h.local_ms(cd, 9), h.local_ms(cd + 5, 0),
                      f"A {s.dept.alias} staff member is admitted to their own ward; colleagues treat them.",
                      [h.patient_ref(s.patient)])
        # A nurse's relative is admitted to the nurse's ward; she treats them.
        pairs = [(h.staff[i], rel) for i, rel in h.relatives_of_staff.items()
                 if h.staff[i].role == "nurse" and h.staff[i].dept.code in WARDS and i not in self.reserved]
        pairs = [(s, [q for q in rel if q not in used_patients]) for s, rel in pairs]
        pairs = [(s, rel) for s, rel in pairs if rel]
        if pairs:
            s, rel = pairs[rng.randrange(len(pairs))]
            q = rel[0]
            rd = max(days // 3 + 2, int(days * 0.7))
            act.planned.setdefault(rd, []).append((q, s.dept.code, 11.0, 3.0, "adm"))
            act.forced[q] = s
            used_patients.add(q)
            self.reserved.add(s.idx)
            self._add("relative_treated", [s.login], h.local_ms(rd, 10), h.local_ms(rd + 5, 0),
                      "A nurse's relative (same family name and address) is admitted to her ward; she is on duty "
                      "and cares for them.", [h.patient_ref(q)])
