"""The simulated hospital: departments, staff, devices, patients, households and addresses.

A benchmark is only as honest as the hospital behind it. This module builds a French
general hospital ("CH Sentinelle") whose shape follows REALISM.md: clinical wards and an
emergency department staffed around the clock, ancillary and administrative departments
on office hours, interns with short contracts, leavers, staff who are also patients,
households sharing a family name and an address, VIPs with restricted records and a few
decoy records. Everything is drawn from one seeded `random.Random`, so a seed names a
hospital.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "DAY_MS",
    "DEPARTMENTS",
    "HOUR_MS",
    "MINUTE_MS",
    "SIZES",
    "Dept",
    "Device",
    "Hospital",
    "SizeConfig",
    "Staff",
    "build_hospital",
]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
PARIS = ZoneInfo("Europe/Paris")


@dataclass(frozen=True)
class SizeConfig:
    """One benchmark size: how big the hospital is and how long the trail runs.

    `scale` multiplies the staffing table and every patient flow; `patients` is the
    number of records already in the DPI on the first day (the population an intruder
    can reach), `new_patients` those registered during the period.
    """

    name: str
    scale: float
    days: int
    start: date
    patients: int
    new_patients: int
    history_days: int = 540


SIZES: dict[str, SizeConfig] = {
    # tiny exists for the test-suite: every attack and trap, in seconds.
    "tiny": SizeConfig("tiny", 0.12, 15, date(2025, 1, 20), 3_000, 300, 365),
    "small": SizeConfig("small", 0.3, 28, date(2025, 1, 6), 12_000, 1_200),
    "standard": SizeConfig("standard", 1.5, 56, date(2025, 1, 6), 80_000, 8_000),
    "large": SizeConfig("large", 5.5, 91, date(2025, 1, 6), 300_000, 30_000),
}

# code, French name, English alias, kind, beds at scale 1, staff at scale 1 (role -> count),
# minimum staff (role -> count), specialty shown on appointments.
# Kinds: "ed" (24/7 emergency), "ward" (inpatient, 24/7), "ancillary" (radiology, lab,
# pharmacy: serve other departments' patients), "outpatient", "admin" (office hours).
DEPARTMENTS: list[tuple[str, str, str, str, int, dict[str, int], dict[str, int], str]] = [
    ("ed", "Urgences", "Emergency department", "ed", 0,
     {"doctor": 12, "nurse": 28, "admissions": 6}, {"doctor": 3, "nurse": 7, "admissions": 2}, "Médecine d'urgence"),
    ("cardio", "Cardiologie", "Cardiology", "ward", 30,
     {"doctor": 7, "intern": 2, "nurse": 22, "secretary": 3}, {"doctor": 2, "nurse": 5, "secretary": 1}, "Cardiologie"),
    ("med", "Médecine interne", "Internal medicine", "ward", 40,
     {"doctor": 8, "intern": 3, "nurse": 28, "secretary": 3}, {"doctor": 2, "nurse": 6, "secretary": 1},
     "Médecine interne"),
    ("surg", "Chirurgie", "Surgery", "ward", 40,
     {"doctor": 9, "intern": 3, "nurse": 28, "secretary": 3}, {"doctor": 2, "nurse": 6, "secretary": 1}, "Chirurgie"),
    ("peds", "Pédiatrie", "Pediatrics", "ward", 20,
     {"doctor": 5, "intern": 2, "nurse": 16, "secretary": 2}, {"doctor": 2, "nurse": 5, "secretary": 1}, "Pédiatrie"),
    ("mat", "Maternité", "Maternity", "ward", 25,
     {"doctor": 5, "intern": 1, "nurse": 20, "secretary": 2}, {"doctor": 2, "nurse": 5, "secretary": 1},
     "Gynécologie-obstétrique"),
    ("onco", "Oncologie", "Oncology", "ward", 20,
     {"doctor": 5, "intern": 1, "nurse": 16, "secretary": 2}, {"doctor": 2, "nurse": 5, "secretary": 1}, "Oncologie"),
    ("rad", "Imagerie médicale", "Radiology", "ancillary", 0,
     {"doctor": 6, "technician": 14, "secretary": 3}, {"doctor": 1, "technician": 3, "secretary": 1}, "Radiologie"),
    ("lab", "Laboratoire de biologie médicale", "Laboratory", "ancillary", 0,
     {"doctor": 3, "technician": 12}, {"doctor": 1, "technician": 2}, "Biologie médicale"),
    ("pharm", "Pharmacie à usage intérieur", "Pharmacy", "ancillary", 0,
     {"pharmacist": 5, "technician": 6}, {"pharmacist": 1, "technician": 1}, "Pharmacie"),
    ("outp", "Consultations externes", "Outpatient clinic", "outpatient", 0,
     {"doctor": 14, "secretary": 14}, {"doctor": 2, "secretary": 3}, "Consultations spécialisées"),
    ("adm", "Bureau des admissions", "Admissions", "admin", 0,
     {"admissions": 12}, {"admissions": 2}, ""),
    ("bill", "Facturation", "Billing", "admin", 0,
     {"billing": 10}, {"billing": 2}, ""),
    ("dim", "Département d'information médicale", "Medical information (coding)", "admin", 0,
     {"coding": 8, "doctor": 1}, {"coding": 2}, ""),
    ("it", "Direction des systèmes d'information", "IT", "admin", 0,
     {"it": 10}, {"it": 2}, ""),
    ("urc", "Unité de recherche clinique", "Clinical research", "admin", 0,
     {"research": 6}, {"research": 1}, ""),
]

#: Specialties of the outpatient clinic's doctors (appointments show them, Doctolib-style).
OUTPATIENT_SPECIALTIES = [
    "Dermatologie", "Ophtalmologie", "ORL", "Rhumatologie", "Gastro-entérologie",
    "Neurologie", "Endocrinologie", "Pneumologie", "Urologie", "Néphrologie",
]

def _names(block: str) -> list[str]:
    # Two-word names ("Le Gall", "Da Silva") are written with a non-breaking marker in the
    # block above; splitting on spaces alone would cut them.
    out: list[str] = []
    words = block.split()
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("Le", "Da") and i + 1 < len(words):
            out.append(f"{w} {words[i + 1]}")
            i += 2
            continue
        out.append(w)
        i += 1
    return out


FAMILY_NAMES = _names("""Martin Bernard Thomas Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel
Lefebvre Leroy Roux David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine Rousseau
Vincent Muller Lefevre Faure Andre Mercier Blanc Guerin Boyer Garnier Chevalier Francois Legrand
Gauthier Garcia Perrin Robin Clement Morin Nicolas Henry Roussel Mathieu Gautier Masson Marchand
Duval Denis Dumont Marie Lemaire Noel Meyer Dufour Meunier Brun Blanchard Giraud Joly Riviere Lucas
Brunet Gaillard Barbier Arnaud Martinez Gerard Roche Renard Schmitt Roy Leroux Colin Vidal Caron
Picard Roger Fabre Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre Benoit
Rey Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert Berger
Carpentier Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury Royer Klein
Jacquet Adam Paris Poirier Marty Aubry Guyot Carre Charles Renault Charpentier Menard Maillard
Baron Bertin Bailly Herve Schneider Fernandez Le Gall Collet Leger Bouvier Julien Prevost Millet
Perrot Daniel Le Roux Cousin Germain Breton Besson Langlois Remy Le Goff Pelletier Leveque Perrier
Leblanc Barre Lebrun Marchal Weber Mallet Hamon Boulanger Jacob Monnier Michaud Rodriguez Guichard
Gillet Etienne Grondin Poulain Tessier Chevallier Collin Chauvin Da Silva Bouchet Gay Lemaitre
Benard Marechal Humbert Reynaud Antoine Hoarau Perret Barthelemy Cordier Pichon Lejeune Gilbert
Lamy Delaunay Pasquier Carlier Laporte Lefrancois Leduc Hebert Dubosc Lecoq Levasseur Lemonnier
Tougard Vautier Leprevost Quesnel Lebas Lecanu Lepetit Hamel Lebourg Malandain Lemercier""")

MALE_NAMES = _names("""Jean Pierre Michel Philippe Alain Nicolas Christophe Patrick Daniel Bernard Eric
Laurent Frederic Stephane David Julien Sebastien Olivier Thierry Pascal Jacques Francois Thomas Alexandre
Vincent Antoine Maxime Guillaume Romain Kevin Hugo Lucas Louis Gabriel Arthur Jules Raphael Leo Adam
Nathan Paul Mathis Ethan Noah Tom Theo Clement Quentin Benjamin Matthieu Yannick Gerard Andre Rene
Marcel Claude Robert Henri Georges Roger""")

FEMALE_NAMES = _names("""Marie Nathalie Isabelle Sylvie Catherine Sophie Christine Valerie Sandrine Veronique
Stephanie Celine Nicole Monique Francoise Julie Aurelie Emilie Camille Laura Sarah Manon Chloe Emma
Lea Ines Jade Louise Alice Lina Rose Anna Mila Julia Zoe Lucie Pauline Mathilde Charlotte Claire Anne
Helene Martine Jacqueline Christiane Brigitte Josiane Colette Simone Jeanne Odette Yvette Elodie Audrey
Amandine Marion Caroline Virginie Patricia Agnes""")

STREETS = _names("""rue_de_la_Republique rue_Jeanne_d'Arc rue_du_Gros-Horloge avenue_de_Bretagne rue_Victor_Hugo
rue_des_Carmes boulevard_de_l'Yser rue_Beauvoisine rue_Saint-Julien rue_du_General_Leclerc avenue_Pasteur
rue_de_Lille rue_des_Lilas allee_des_Tilleuls rue_du_Moulin chemin_des_Vignes rue_de_la_Gare impasse_des_Roses
rue_Jean_Jaures place_du_Marche rue_de_l'Eglise rue_des_Ecoles avenue_de_la_Liberte rue_Pierre_Corneille
rue_Gustave_Flaubert rue_du_Bac rue_Saint-Sever rue_Lafayette rue_Martainville rue_Eau-de-Robec
avenue_du_Mont-Riboudet rue_de_Sotteville rue_des_Chartreux rue_Louis_Pasteur rue_d'Elbeuf rue_Armand_Carrel""")
STREETS = [s.replace("_", " ") for s in STREETS]

CITIES = [
    ("Rouen", "76000"), ("Rouen", "76100"), ("Sotteville-lès-Rouen", "76300"), ("Le Grand-Quevilly", "76120"),
    ("Mont-Saint-Aignan", "76130"), ("Bois-Guillaume", "76230"), ("Darnétal", "76160"), ("Elbeuf", "76500"),
    ("Canteleu", "76380"), ("Déville-lès-Rouen", "76250"), ("Petit-Quevilly", "76140"), ("Maromme", "76150"),
    ("Barentin", "76360"), ("Yvetot", "76190"), ("Louviers", "27400"), ("Saint-Étienne-du-Rouvray", "76800"),
]

# Public address blocks of French home connections (web-portal and VPN users appear with them).
HOME_PREFIXES = ["90.", "86.", "176.", "109.", "92.", "78.", "83.", "88.", "2.", "81."]


class Dept:
    """A department: an Organization of the care context, with its workstations."""

    __slots__ = ("alias", "code", "id", "kind", "name", "number", "specialty", "workstations")

    def __init__(self, code: str, name: str, alias: str, kind: str, number: int, specialty: str) -> None:
        self.code = code
        self.id = f"dept-{code}"
        self.name = name
        self.alias = alias
        self.kind = kind
        self.number = number
        self.specialty = specialty
        self.workstations: list[str] = []


class Staff:
    """A member of staff with a DPI login: a Practitioner and its PractitionerRole.

    `start_day`/`end_day` are the recorded employment period in days from the first
    simulated day (negative: before; None: open). `last_day` is the last day they really
    work; a leaver whose end is recorded late has `end_day > last_day`.
    """

    __slots__ = (
        "address", "addresses", "auth", "birth", "dept", "end_day", "evening", "family", "favourites",
        "gender", "given", "home_auth", "home_ip", "idx", "ins", "intern", "last_day", "login", "office",
        "patient", "phase", "practitioner_id", "privileged", "role", "role_id", "specialty", "start_day",
    )

    def __init__(self, idx: int, dept: Dept, role: str) -> None:
        self.idx = idx
        self.dept = dept
        self.role = role
        self.intern = False
        self.login = ""
        self.practitioner_id = f"prac-{idx:05d}"
        self.role_id = f"role-{idx:05d}"
        self.given = ""
        self.family = ""
        self.gender = "female"
        self.birth = ""
        self.address = 0
        self.ins = ""
        self.start_day: int = -1000
        self.end_day: int | None = None
        self.last_day: int = 10**6
        self.phase = 0
        self.favourites: list[str] = []
        self.office = ""
        self.home_ip = ""
        self.home_auth = "mfa"
        self.auth = "card"
        self.evening = 0.0
        self.patient = -1
        self.specialty = ""
        self.privileged = False
        self.addresses: set[str] = set()


class Device:
    """A non-human account: a service account (application) or a connected API client.

    `login` is the account as the audit trail names it (the client id); `owner` the
    department responsible for it, which the care context uses to explain its accesses.
    """

    __slots__ = ("addresses", "auth", "description", "id", "kind", "login", "name", "owner")

    def __init__(
        self, login: str, name: str, kind: str, owner: Dept, addresses: list[str], description: str, auth: str
    ) -> None:
        self.login = login
        self.id = f"dev-{login}"
        self.name = name
        self.kind = kind
        self.owner = owner
        self.addresses = addresses
        self.description = description
        self.auth = auth


class Hospital:
    """Everything that exists before the first event: people, accounts, places.

    Patients are kept in parallel lists indexed by a dense integer (memory matters at
    the large size); `pid[i]` is the number in the patient's FHIR id (`Patient/<pid>`),
    assigned in registration order, which is what a sequential scan walks through.
    """

    def __init__(self, cfg: SizeConfig) -> None:
        self.cfg = cfg
        self.depts: dict[str, Dept] = {}
        self.staff: list[Staff] = []
        self.by_dept_role: dict[tuple[str, str], list[Staff]] = {}
        self.devices: dict[str, Device] = {}
        self.addresses: list[tuple[str, str, str]] = []  # (line, city, postal code)
        # patients
        self.p_family: list[str] = []
        self.p_given: list[str] = []
        self.p_gender: list[str] = []
        self.p_birth: list[str] = []
        self.p_addr: list[int] = []
        self.p_ins: list[str] = []
        self.p_phone: list[str] = []
        self.p_gp: list[int] = []
        # bit 1 VIP (R), 2 VIP (V), 4 decoy, 8 staff member, 16 confidential stay (R, not a VIP)
        self.p_flags: list[int] = []
        self.pid: list[int] = []
        self.registered: list[bool] = []
        self.households: list[list[int]] = []
        self.staff_of_patient: dict[int, Staff] = {}
        self.relatives_of_staff: dict[int, list[int]] = {}
        self.vips: list[int] = []
        self.decoys: list[int] = []
        self.first_new_patient = 0
        self.new_queue: list[int] = []  # patients registered during the period, in order
        self.gps: list[str] = []
        # period
        self.day_start: list[int] = []  # UTC ms of each local midnight, days + 1 entries

    # -- helpers ---------------------------------------------------------------------------
    def staff_of(self, dept: str, role: str) -> list[Staff]:
        return self.by_dept_role.get((dept, role), [])

    @property
    def start_ms(self) -> int:
        return self.day_start[0]

    @property
    def end_ms(self) -> int:
        return self.day_start[-1]

    def day_of(self, t: int) -> int:
        """Index of the simulated day containing `t` (may be < 0 or >= days)."""
        lo, hi = 0, len(self.day_start) - 1
        if t < self.day_start[0]:
            return -1 - (self.day_start[0] - t) // DAY_MS
        if t >= self.day_start[-1]:
            return hi + (t - self.day_start[-1]) // DAY_MS
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.day_start[mid] <= t:
                lo = mid
            else:
                hi = mid
        return lo

    def local_ms(self, day: int, hour: float) -> int:
        """UTC ms of a local clock time (hours, may exceed 24) on a simulated day."""
        base = self.day_start[day] if 0 <= day < len(self.day_start) else self.day_start[0] + day * DAY_MS
        return base + int(hour * HOUR_MS)

    def weekday(self, day: int) -> int:
        return (self.cfg.start + timedelta(days=day)).weekday()

    def patient_ref(self, p: int) -> str:
        return f"Patient/{self.pid[p]}"


# -- construction -----------------------------------------------------------------------------

def _ascii(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isalnum() and c.isascii()).lower()


def _nir(rng: random.Random, gender: str, birth: str, postal: str) -> str:
    """A 15-digit NIR-shaped INS with a valid key (fictitious: order numbers are random)."""
    sex = "1" if gender == "male" else "2"
    yy, mm = birth[2:4], birth[5:7]
    dep = postal[:2]
    body = f"{sex}{yy}{mm}{dep}{rng.randrange(1, 999):03d}{rng.randrange(1, 999):03d}"
    key = 97 - int(body) % 97
    return f"{body}{key:02d}"


def _birth(rng: random.Random, min_age: int, max_age: int, year: int = 2025) -> str:
    age = rng.randint(min_age, max_age)
    d = date(year - age, 1, 1) + timedelta(days=rng.randrange(365))
    return d.isoformat()


def _patient_age(rng: random.Random) -> tuple[int, int]:
    # Hospital patients skew old, with a block of newborns and children.
    r = rng.random()
    if r < 0.06:
        return 0, 1
    if r < 0.16:
        return 2, 17
    if r < 0.55:
        return 18, 59
    return 60, 98


def _public_ip(rng: random.Random, prefixes: list[str]) -> str:
    p = rng.choice(prefixes)
    parts = [str(rng.randrange(1, 255)) for _ in range(4 - p.count(".") - (0 if p.endswith(".") else 1))]
    return p + ".".join(parts)


def build_hospital(cfg: SizeConfig, rng: random.Random) -> Hospital:
    """Build the hospital of one size from one random stream."""
    h = Hospital(cfg)
    _period(h)
    _addresses(h, rng)
    _departments(h)
    _staff(h, rng)
    _devices(h, rng)
    _patients(h, rng)
    _staff_as_patients(h, rng)
    return h


def _period(h: Hospital) -> None:
    for d in range(h.cfg.days + 1):
        day = h.cfg.start + timedelta(days=d)
        local = datetime(day.year, day.month, day.day, tzinfo=PARIS)
        h.day_start.append(int(local.astimezone(UTC).timestamp() * 1000))


def _addresses(h: Hospital, rng: random.Random) -> None:
    n = max(2000, int((h.cfg.patients + h.cfg.new_patients) * 0.7))
    seen: set[tuple[str, str, str]] = set()
    while len(h.addresses) < n:
        city, postal = rng.choice(CITIES)
        line = f"{rng.randint(1, 180)} {rng.choice(STREETS)}"
        key = (line, city, postal)
        if key in seen:
            # Another home at the same number: an apartment building (the street space alone
            # would run out at the large size).
            key = (f"{line}, appt {rng.randint(1, 80)}", city, postal)
            if key in seen:
                continue
        seen.add(key)
        h.addresses.append(key)


def _departments(h: Hospital) -> None:
    for number, (code, name, alias, kind, _beds, _staff, _mins, specialty) in enumerate(DEPARTMENTS):
        dept = Dept(code, name, alias, kind, number, specialty)
        h.depts[code] = dept


def _login(h: Hospital, given: str, family: str, taken: set[str]) -> str:
    base = (_ascii(given)[:1] + _ascii(family))[:14]
    login = base
    n = 2
    while login in taken:
        login = f"{base}{n}"
        n += 1
    taken.add(login)
    return login


def _staff(h: Hospital, rng: random.Random) -> None:
    cfg = h.cfg
    taken: set[str] = set()
    for code, _name, _alias, _kind, _beds, counts, mins, _spec in DEPARTMENTS:
        dept = h.depts[code]
        for role, n in counts.items():
            count = max(mins.get(role, 1 if role != "intern" else 0), round(n * cfg.scale))
            for _ in range(count):
                s = Staff(len(h.staff), dept, "doctor" if role == "intern" else role)
                s.intern = role == "intern"
                s.gender = "female" if rng.random() < (0.85 if role in ("nurse", "secretary") else 0.55) else "male"
                s.given = rng.choice(FEMALE_NAMES if s.gender == "female" else MALE_NAMES)
                s.family = rng.choice(FAMILY_NAMES)
                s.birth = _birth(rng, 24, 30) if s.intern else _birth(rng, 23, 63)
                s.login = _login(h, s.given, s.family, taken)
                s.address = rng.randrange(len(h.addresses))
                if rng.random() < 0.6:
                    s.ins = _nir(rng, s.gender, s.birth, h.addresses[s.address][2])
                # Employment: most were hired long ago; interns are on a semester that
                # started in November (French semesters start in May and November).
                s.start_day = -rng.randint(60, 7000)
                if s.intern:
                    s.start_day = (date(2024, 11, 2) - cfg.start).days
                    s.end_day = (date(2025, 5, 1) - cfg.start).days
                s.phase = rng.randrange(7)
                s.specialty = dept.specialty
                if code == "outp":
                    s.specialty = rng.choice(OUTPATIENT_SPECIALTIES) if role == "doctor" else ""
                # Clinicians on ward PCs badge in with their CPS card; office staff use a password.
                s.auth = "card" if role in ("doctor", "nurse", "pharmacist", "technician") else "password"
                s.home_auth = "mfa" if rng.random() < 0.7 else "password"
                # Share of working days with an evening session from home (Arndt 2017, Apathy 2020).
                s.evening = {"doctor": 0.22, "nurse": 0.02, "pharmacist": 0.05, "it": 0.08}.get(role, 0.01)
                if rng.random() < 0.5 and role == "doctor":
                    s.evening *= 0.2  # half of physicians never work in the evening
                s.privileged = role == "it"
                h.staff.append(s)
                h.by_dept_role.setdefault((code, s.role), []).append(s)
    _network(h, rng)


def _network(h: Hospital, rng: random.Random) -> None:
    """Workstations per department (shared, many users each), offices, home addresses."""
    for dept in h.depts.values():
        members = [s for s in h.staff if s.dept is dept]
        n_ws = max(3, len(members) // 3)
        dept.workstations = [f"10.{20 + dept.number}.1.{10 + i}" for i in range(n_ws)]
    office_roles = {"doctor", "secretary", "admissions", "billing", "coding", "it", "research", "pharmacist"}
    for s in h.staff:
        ws = s.dept.workstations
        s.favourites = rng.sample(ws, min(len(ws), rng.randint(2, 4)))
        if s.role in office_roles and s.dept.kind != "ed" and rng.random() < 0.8:
            s.office = f"10.{20 + s.dept.number}.2.{10 + s.idx % 240}"
        if rng.random() < 0.75:
            s.home_ip = _public_ip(rng, HOME_PREFIXES)


def _devices(h: Hospital, rng: random.Random) -> None:
    d = h.depts
    specs = [
        ("lab-interface", "Interface laboratoire (résultats)", "application", d["lab"], ["10.1.0.21"],
         "LIS to DPI result interface: writes lab results as they are validated", "certificate"),
        ("export-regional", "Export nocturne vers la plateforme régionale", "application", d["dim"], ["10.1.0.22"],
         "Nightly export of the previous day's finished encounters to the regional health platform", "certificate"),
        ("editeur-integration", "Compte technique éditeur DPI (interfaces)", "application", d["it"],
         ["10.1.0.50", "10.1.0.51"],
         "DPI editor's technical account for interface maintenance (privileged, password only)", "password"),
        ("rdv-connect", "RDV Connect (logiciel de prise de rendez-vous des cabinets)", "api_client", d["outp"],
         [_public_ip(rng, ["51.91.", "51.210."]), _public_ip(rng, ["51.91.", "51.210."])],
         "Appointment-booking software of outside practices, connected to the outpatient clinic", "oauth"),
        ("agenda-imagerie", "Agenda Imagerie Plus (cabinets adresseurs)", "api_client", d["rad"],
         [_public_ip(rng, ["137.74."]), _public_ip(rng, ["137.74."])],
         "Booking software of referring practices, connected to radiology", "oauth"),
        ("teleconsult", "Plateforme de téléconsultation", "api_client", d["outp"],
         [_public_ip(rng, ["54.36."]), _public_ip(rng, ["54.36."])],
         "Teleconsultation platform: books and runs teleconsultations with the outpatient clinic", "oauth"),
    ]
    for login, name, kind, owner, addresses, description, auth in specs:
        h.devices[login] = Device(login, name, kind, owner, addresses, description, auth)


def _patients(h: Hospital, rng: random.Random) -> None:
    cfg = h.cfg
    total = cfg.patients + cfg.new_patients
    h.gps = [f"Dr {rng.choice(FEMALE_NAMES + MALE_NAMES)} {rng.choice(FAMILY_NAMES)}" for _ in range(120)]
    used_addr = 0
    i = 0
    while i < total:
        # Households: about 45 % of patients share a home with other patients.
        size = 1 if rng.random() < 0.55 else rng.choice([2, 2, 2, 3, 3, 4])
        size = min(size, total - i)
        family = rng.choice(FAMILY_NAMES)
        addr = used_addr % len(h.addresses)
        used_addr += 1
        members = []
        for k in range(size):
            gender = "female" if rng.random() < 0.52 else "male"
            lo, hi = _patient_age(rng) if k < 2 else (0, 25)
            if size > 1 and k >= 2:
                lo, hi = 0, 22
            birth = _birth(rng, lo, hi)
            # A partner sometimes keeps their own family name.
            fam = family if (k != 1 or rng.random() < 0.75) else rng.choice(FAMILY_NAMES)
            h.p_family.append(fam)
            h.p_given.append(rng.choice(FEMALE_NAMES if gender == "female" else MALE_NAMES))
            h.p_gender.append(gender)
            h.p_birth.append(birth)
            h.p_addr.append(addr)
            h.p_ins.append(_nir(rng, gender, birth, h.addresses[addr][2]))
            h.p_phone.append(f"0{rng.choice('67')}{rng.randrange(10**8):08d}")
            h.p_gp.append(rng.randrange(len(h.gps)))
            h.p_flags.append(0)
            members.append(i)
            i += 1
        if size > 1:
            h.households.append(members)
    # Registration order = FHIR id order: shuffle so households are not contiguous.
    order = list(range(total))
    rng.shuffle(order)
    h.pid = [0] * total
    # Initial population first (ids 100000...), then those registered during the period.
    initial = order[: cfg.patients]
    new = order[cfg.patients:]
    initial.sort()
    for rank, p in enumerate(initial):
        h.pid[p] = 100000 + rank
    h.registered = [False] * total
    for p in initial:
        h.registered[p] = True
    # New patients get ids as they register (assigned by the activity); reserve order.
    h.first_new_patient = 100000 + cfg.patients
    h.new_queue = new
    # VIPs: restricted records (R) and a couple of very restricted (V).
    n_vip = max(3, cfg.patients // 4000)
    for p in rng.sample(initial, n_vip):
        h.p_flags[p] |= 2 if rng.random() < 0.25 else 1
        h.vips.append(p)
    # Confidential admissions ("non-divulgation de présence"): restricted records that are not VIPs.
    for p in rng.sample(initial, max(5, cfg.patients // 200)):
        if not h.p_flags[p]:
            h.p_flags[p] |= 16
    # Decoy records: fake patients nobody treats (honeytokens), spread through the id range.
    n_decoy = max(4, cfg.patients // 2500)
    candidates = [p for p in initial if not h.p_flags[p]]
    for p in rng.sample(candidates, n_decoy):
        h.p_flags[p] |= 4
        h.decoys.append(p)


def _staff_as_patients(h: Hospital, rng: random.Random) -> None:
    """About 35 % of staff are patients of their own hospital; some with relatives there."""
    initial = [p for p in range(len(h.pid)) if h.registered[p] and not h.p_flags[p]]
    rng.shuffle(initial)
    taken = 0
    household_of: dict[int, list[int]] = {}
    for hh in h.households:
        for p in hh:
            household_of[p] = hh
    for s in h.staff:
        if rng.random() >= 0.35 or taken >= len(initial):
            continue
        # Take over a patient record: the staff member's identity becomes the patient's.
        p = initial[taken]
        taken += 1
        while p in household_of and len(household_of[p]) > 1 and rng.random() < 0.2 and taken < len(initial):
            p = initial[taken]
            taken += 1
        h.p_family[p] = s.family
        h.p_given[p] = s.given
        h.p_gender[p] = s.gender
        h.p_birth[p] = s.birth
        if not s.ins:
            s.ins = _nir(rng, s.gender, s.birth, h.addresses[h.p_addr[p]][2])
        h.p_ins[p] = s.ins
        s.address = h.p_addr[p]
        h.p_flags[p] |= 8
        s.patient = p
        h.staff_of_patient[p] = s
        rel = [q for q in household_of.get(p, []) if q != p and h.registered[q]]
        for q in rel:
            h.p_family[q] = s.family  # relatives share the family name and the address
        if rel:
            h.relatives_of_staff[s.idx] = rel
