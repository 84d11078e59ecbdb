"""Words of the incident documents in French (the default) and English.

Why one catalogue: the same labels (data categories, reasons, severity levels) appear in
the CNIL notification, the letters, the timeline and the patient report; defining them
once keeps every document saying the same thing in the same words. Long prose lives in
the Jinja2 templates (`templates/<lang>/`), where an establishment can edit it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sentinelle.errors import ConfigError

__all__ = [
    "CATEGORY_LABELS",
    "LANGS",
    "REASON_LABELS",
    "check_lang",
    "fmt_datetime",
    "fmt_duration",
    "fmt_int",
    "label",
]

#: Languages every document exists in; the first is the default.
LANGS = ("fr", "en")

#: Plain-language names of the data categories of `sentinelle.events.Category`.
CATEGORY_LABELS: dict[str, dict[str, str]] = {
    "identity": {"fr": "identité (nom, prénom, sexe, date de naissance)",
                 "en": "identity (name, sex, date of birth)"},
    "contact": {"fr": "coordonnées (adresse postale, téléphone, adresse e-mail)",
                "en": "contact details (postal address, phone, e-mail address)"},
    "national_id": {"fr": "numéro de sécurité sociale (NIR) et identifiant national de santé (INS)",
                    "en": "social security number (NIR) and national health identifier (INS)"},
    "appointment": {"fr": "rendez-vous (dates et lieux de consultation)",
                    "en": "appointments (dates and places of consultation)"},
    "specialty": {"fr": "nom et spécialité des professionnels de santé consultés",
                  "en": "name and specialty of the health professionals seen"},
    "clinical": {"fr": "notes et comptes rendus médicaux (symptômes, diagnostics, historique des consultations)",
                 "en": "medical notes and reports (symptoms, diagnoses, consultation history)"},
    "prescription": {"fr": "prescriptions et traitements (médicaments, posologies)",
                     "en": "prescriptions and treatments (medicines, dosages)"},
    "allergy": {"fr": "allergies et intolérances", "en": "allergies and intolerances"},
    "lab": {"fr": "résultats d'analyses biologiques", "en": "laboratory results"},
    "document": {"fr": "documents médicaux (courriers, ordonnances, comptes rendus numérisés)",
                 "en": "medical documents (letters, prescriptions, scanned reports)"},
    "imaging": {"fr": "imagerie médicale (images et comptes rendus)", "en": "medical imaging (images and reports)"},
    "billing": {"fr": "facturation (actes facturés, organismes payeurs)",
                "en": "billing (procedures billed, payers)"},
}

#: Short names of the categories, for tables.
CATEGORY_SHORT: dict[str, dict[str, str]] = {
    "identity": {"fr": "identité", "en": "identity"},
    "contact": {"fr": "coordonnées", "en": "contact details"},
    "national_id": {"fr": "NIR / INS", "en": "NIR / INS"},
    "appointment": {"fr": "rendez-vous", "en": "appointments"},
    "specialty": {"fr": "spécialité du praticien", "en": "practitioner's specialty"},
    "clinical": {"fr": "données cliniques", "en": "clinical data"},
    "prescription": {"fr": "prescriptions", "en": "prescriptions"},
    "allergy": {"fr": "allergies", "en": "allergies"},
    "lab": {"fr": "résultats d'analyses", "en": "lab results"},
    "document": {"fr": "documents", "en": "documents"},
    "imaging": {"fr": "imagerie", "en": "imaging"},
    "billing": {"fr": "facturation", "en": "billing"},
}

#: Plain-language sentences for each care-context reason (sentinelle.context.Reason names).
REASON_LABELS: dict[str, dict[str, str]] = {
    "ENCOUNTER": {"fr": "cette personne participait à votre séjour ou à votre passage à l'hôpital",
                  "en": "this person took part in your hospital stay or visit"},
    "APPOINTMENT": {"fr": "cette personne (ou ce logiciel) était concernée par l'un de vos rendez-vous",
                    "en": "this person (or software) was involved in one of your appointments"},
    "CARE_TEAM": {"fr": "cette personne faisait partie de votre équipe de soins",
                  "en": "this person was a member of your care team"},
    "DEPARTMENT": {"fr": "cette personne travaille dans un service qui vous prenait en charge à ce moment-là",
                   "en": "this person works in a department that was treating you at the time"},
    "TREATED_BEFORE": {"fr": "cette personne vous a déjà soigné(e) auparavant",
                       "en": "this person has treated you before"},
    "SEARCH_PAGE": {"fr": "votre nom est apparu dans les résultats d'une recherche qui a trouvé un patient "
                          "que cette personne soignait (homonyme)",
                    "en": "your name appeared in the results of a search that found a patient this person "
                          "was treating (a namesake)"},
}

_WORDS: dict[str, dict[str, str]] = {
    "low": {"fr": "faible", "en": "low"},
    "medium": {"fr": "moyenne", "en": "medium"},
    "high": {"fr": "élevée", "en": "high"},
    "very_high": {"fr": "très élevée", "en": "very high"},
    "yes": {"fr": "oui", "en": "yes"},
    "no": {"fr": "non", "en": "no"},
    "ongoing": {"fr": "en cours", "en": "ongoing"},
    "unknown": {"fr": "inconnu", "en": "unknown"},
    "to_complete": {"fr": "à compléter", "en": "to be completed"},
    "hours": {"fr": "h", "en": "h"},
    "minutes": {"fr": "min", "en": "min"},
    "remaining": {"fr": "restant", "en": "left"},
    "overdue": {"fr": "dépassé de", "en": "overdue by"},
    "deadline": {"fr": "échéance", "en": "deadline"},
}

_MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
              "novembre", "décembre")
_MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")


def check_lang(lang: str) -> str:
    """The language code if supported, else `ConfigError`."""
    if lang not in LANGS:
        raise ConfigError(f"language {lang!r} is not available; choose one of {', '.join(LANGS)}")
    return lang


def label(word: str, lang: str) -> str:
    """A short word of the catalogue (severity levels, yes/no ...) in `lang`."""
    return _WORDS[word][lang]


def fmt_int(value: int | float, lang: str) -> str:
    """A whole number with the thousands separator of the language (a no-break space in French).

    >>> fmt_int(758912, "fr"), fmt_int(758912, "en")
    ('758\\xa0912', '758,912')
    """
    text = f"{round(value):,}"
    # U+00A0 rather than the typographic U+202F: every PDF base font has it.
    return text.replace(",", "\u00a0") if lang == "fr" else text


def fmt_datetime(ms: int | None, lang: str, tz: str = "Europe/Paris", *, date_only: bool = False) -> str:
    """A time in words of the language, in the establishment's time zone.

    >>> fmt_datetime(1738366326986, "fr")
    '1er février 2025 à 00:32'
    >>> fmt_datetime(1738366326986, "en", "UTC")
    '31 January 2025, 23:32 UTC'
    """
    if ms is None:
        return label("unknown", lang)
    zone = ZoneInfo(tz)
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(zone)
    if lang == "fr":
        day = "1er" if dt.day == 1 else str(dt.day)
        text = f"{day} {_MONTHS_FR[dt.month - 1]} {dt.year}"
        return text if date_only else f"{text} à {dt:%H:%M}"
    text = f"{dt.day} {_MONTHS_EN[dt.month - 1]} {dt.year}"
    if date_only:
        return text
    suffix = "" if tz == "Europe/Paris" else f" {tz}"
    return f"{text}, {dt:%H:%M}{suffix}"


def fmt_duration(ms: int, lang: str) -> str:
    """A duration in hours and minutes.

    >>> fmt_duration(148_320_000, "fr")
    '41 h 12 min'
    """
    minutes = abs(ms) // 60_000
    h, m = divmod(minutes, 60)
    _ = lang  # same spelling in both languages
    return f"{h} h {m:02d} min"
