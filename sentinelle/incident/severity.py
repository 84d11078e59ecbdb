"""Severity of a personal data breach with the ENISA methodology: SE = DPC x EI + CB.

Why ENISA: the CNIL form asks for the likely consequences and their severity, and the
Art. 34 decision (tell every person) turns on a "high risk". ENISA's Recommendations
for a methodology of the assessment of severity of personal data breaches (2013) give a
reproducible score a DPO can defend, with the reasoning written down:

- DPC, data processing context (1-4): the kind of data (simple 1, behavioural 2,
  financial 3, sensitive 4), adjusted by the context (here: the controller is a health
  establishment, so even a name reveals a care relationship; vulnerable persons); the
  highest category wins.
- EI, ease of identification (0.25 negligible, 0.5 limited, 0.75 significant, 1 maximum).
- CB, circumstances of the breach, added: loss of confidentiality (0 / 0.25 known
  recipients / 0.5 unknown number of recipients), of integrity (0 / 0.25 recoverable /
  0.5 not recoverable), of availability (0 / 0.25 temporary / 0.5 permanent), and
  malicious intent (+0.5).
- Levels: SE < 2 low, 2 <= SE < 3 medium, 3 <= SE < 4 high, SE >= 4 very high.

Every number comes with a sentence in French and English saying why.
"""

from __future__ import annotations

import msgspec

from sentinelle.incident.model import Incident, ScopeSummary

__all__ = ["DPC_BY_CATEGORY", "Factor", "Severity", "assess"]

#: ENISA data processing context per data category: (score, kind, French reason, English reason).
DPC_BY_CATEGORY: dict[str, tuple[int, str, str, str]] = {
    "identity": (1, "simple", "données d'identité : données simples (score de base 1)",
                 "identity data: simple data (basic score 1)"),
    "contact": (1, "simple", "coordonnées : données simples (score de base 1)",
                "contact details: simple data (basic score 1)"),
    "national_id": (2, "simple", "NIR/INS : donnée simple relevée de 1, car un identifiant national permet "
                                 "l'usurpation d'identité et le rapprochement de fichiers",
                    "NIR/INS: simple data raised by 1, as a national identifier enables identity theft and the "
                    "linkage of records across systems"),
    "appointment": (2, "behavioural", "rendez-vous : données comportementales (dates et lieux de soins, score 2)",
                    "appointments: behavioural data (dates and places of care, score 2)"),
    "specialty": (3, "sensitive", "spécialité du praticien : donnée de santé (elle révèle la nature des soins) "
                                  "abaissée de 1 car elle ne donne pas de diagnostic (score 3)",
                  "practitioner's specialty: health data (it reveals the kind of care), lowered by 1 as it gives "
                  "no diagnosis (score 3)"),
    "clinical": (4, "sensitive", "données cliniques : données de santé (score 4)",
                 "clinical data: health data (score 4)"),
    "prescription": (4, "sensitive", "prescriptions : données de santé (score 4)",
                     "prescriptions: health data (score 4)"),
    "allergy": (4, "sensitive", "allergies : données de santé (score 4)", "allergies: health data (score 4)"),
    "lab": (4, "sensitive", "résultats d'analyses : données de santé (score 4)",
            "laboratory results: health data (score 4)"),
    "document": (4, "sensitive", "documents médicaux : données de santé (score 4)",
                 "medical documents: health data (score 4)"),
    "imaging": (4, "sensitive", "imagerie : données de santé (score 4)", "imaging: health data (score 4)"),
    "billing": (3, "financial", "facturation : données financières révélant des actes de soins (score 3)",
                "billing: financial data revealing care procedures (score 3)"),
}

_LEVELS = ((2.0, "low"), (3.0, "medium"), (4.0, "high"))


class Factor(msgspec.Struct, frozen=True):
    """One step of the reasoning: which term, its value, and why (French and English)."""

    term: str  # DPC | DPC+ | EI | CB.confidentiality | CB.integrity | CB.availability | CB.malicious | note
    value: float
    fr: str
    en: str


class Severity(msgspec.Struct, frozen=True):
    """The ENISA score, its level and the reasoning behind each term."""

    score: float
    level: str  # low | medium | high | very_high
    dpc: float
    ei: float
    cb: float
    factors: list[Factor]

    @property
    def high_risk(self) -> bool:
        """Whether the breach is a high risk to the persons (Art. 34: tell each of them)."""
        return self.level in ("high", "very_high")

    def reasoning(self, lang: str = "fr") -> list[str]:
        """The reasoning as sentences, in order, ending with the formula."""
        lines = [f"{f.term} = {f.value:g} : {f.fr}" if lang == "fr" else f"{f.term} = {f.value:g}: {f.en}"
                 for f in self.factors]
        lines.append(f"SE = DPC × EI + CB = {self.dpc:g} × {self.ei:g} + {self.cb:g} = {self.score:g}")
        return lines


def assess(scope: ScopeSummary, incident: Incident, *, health_controller: int = 1, minors: int | None = None
           ) -> Severity:
    """Score the breach of `scope` under the circumstances recorded in `incident`.

    `health_controller` is the DPC adjustment for simple data held by a health
    establishment (1 for a general hospital: being its patient reveals a care
    relationship; 2 for a specialised one: psychiatry, HIV, oncology...). `minors` is the
    number of minors in scope when known (vulnerable persons raise the DPC by 1).
    """
    factors: list[Factor] = []
    present = [c.category for c in scope.categories if c.patients]
    dpc = 0.0
    best: tuple[int, str, str] | None = None
    for cat in present:
        base, kind, fr, en = DPC_BY_CATEGORY.get(cat, (1, "simple", cat, cat))
        score = base
        if kind == "simple" and health_controller:
            score = min(4, base + health_controller)
            fr += f", relevé de {health_controller} : le responsable est un établissement de santé, être son " \
                  "patient révèle une relation de soins"
            en += f", raised by {health_controller}: the controller is a health establishment, being its patient " \
                  "reveals a care relationship"
        if best is None or score > best[0]:
            best = (score, fr, en)
    if best is None:
        factors.append(Factor("DPC", 1, "aucune donnée patient renvoyée : score minimal 1",
                              "no patient data returned: minimum score 1"))
        dpc = 1.0
    else:
        dpc = float(best[0])
        factors.append(Factor("DPC", dpc, "catégorie la plus sensible : " + best[1],
                              "most sensitive category: " + best[2]))
    if minors and dpc < 4:
        dpc = min(4.0, dpc + 1)
        factors.append(Factor("DPC+", 1, f"{minors} mineur(s) concerné(s) : personnes vulnérables",
                              f"{minors} minor(s) concerned: vulnerable persons"))
    if incident.dpc_adjustment:
        new = max(1.0, min(4.0, dpc + incident.dpc_adjustment))
        factors.append(Factor("DPC+", new - dpc, incident.dpc_reason or "ajustement décidé par le DPO",
                              incident.dpc_reason or "adjustment decided by the DPO"))
        dpc = new

    cats = set(present)
    if cats & {"identity", "national_id"}:
        ei = 1.0
        factors.append(Factor("EI", ei, "maximale : nom, prénom et date de naissance ou NIR identifient chaque "
                                        "personne directement",
                              "maximum: name with date of birth, or the NIR, identify each person directly"))
    elif "contact" in cats:
        ei = 0.75
        factors.append(Factor("EI", ei, "significative : adresse, téléphone et e-mail identifient la plupart des "
                                        "personnes", "significant: address, phone and e-mail identify most persons"))
    elif cats:
        ei = 0.5
        factors.append(Factor("EI", ei, "limitée : les données portent les identifiants de l'hôpital, pas les "
                                        "noms ; qui détient aussi l'index des patients peut identifier les "
                                        "personnes", "limited: the records carry the hospital's identifiers, not "
                                                     "names; whoever also holds the patient index can identify "
                                                     "the persons"))
    else:
        ei = 0.25
        factors.append(Factor("EI", ei, "négligeable : aucune donnée patient renvoyée",
                              "negligible: no patient data returned"))

    cb = 0.0
    if incident.leaked:
        conf = 0.5
        factors.append(Factor("CB.confidentiality", conf, "les données ont été retrouvées hors de l'établissement "
                                                          "(publiées ou mises en vente) : destinataires en nombre "
                                                          "inconnu", "the data was found outside the establishment "
                                                                     "(published or offered for sale): unknown "
                                                                     "number of recipients"))
    elif scope.patients:
        conf = 0.25
        factors.append(Factor("CB.confidentiality", conf, "données consultées par des comptes identifiés sans "
                                                          "finalité légitime : destinataires connus",
                              "data read by identified accounts without a legitimate purpose: known recipients"))
    else:
        conf = 0.0
        factors.append(Factor("CB.confidentiality", conf, "aucune donnée renvoyée", "no data returned"))
    cb += conf
    if incident.integrity_loss is not None:
        integ = incident.integrity_loss
        factors.append(Factor("CB.integrity", integ, "évaluée par le DPO", "assessed by the DPO"))
    elif scope.writes:
        integ = 0.25
        factors.append(Factor("CB.integrity", integ, f"{scope.writes} écriture(s) (création, modification, "
                                                     "suppression) : récupérables depuis la trace d'audit et les "
                                                     "sauvegardes", f"{scope.writes} write(s) (create, update, "
                                                                    "delete): recoverable from the audit trail and "
                                                                    "backups"))
    else:
        integ = 0.0
    cb += integ
    if incident.availability_loss:
        factors.append(Factor("CB.availability", incident.availability_loss, "évaluée par le DPO",
                              "assessed by the DPO"))
        cb += incident.availability_loss
    if incident.malicious:
        factors.append(Factor("CB.malicious", 0.5, "acte malveillant (accès sans finalité de soins)",
                              "malicious act (access without a care purpose)"))
        cb += 0.5
    if scope.patients > 100:
        factors.append(Factor("note", scope.patients, "plus de 100 personnes concernées : la gravité est "
                                                      "renforcée (critère complémentaire ENISA)",
                              "more than 100 persons concerned: severity reinforced (ENISA additional criterion)"))
    se = round(dpc * ei + cb, 2)
    level = "very_high"
    for bound, name in _LEVELS:
        if se < bound:
            level = name
            break
    return Severity(se, level, dpc, ei, round(cb, 2), factors)
