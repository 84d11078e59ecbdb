"""FHIR OperationOutcome bodies: how every answer of the API says what went right or wrong.

Why OperationOutcome everywhere, errors included: FHIR clients (and the people reading
their logs) already know it; each issue names the record (`location`: "line 12",
"entry 3", "offset 2048") and the reason in one sentence, so a sender can fix exactly
the lines that were refused.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FHIR_JSON", "Problem", "issue", "outcome"]

FHIR_JSON = "application/fhir+json"


def issue(severity: str, code: str, diagnostics: str, location: str = "") -> dict[str, Any]:
    """One OperationOutcome issue (severity fatal|error|warning|information, code from the FHIR IssueType)."""
    out: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if location:
        out["location"] = [location]
        out["expression"] = [location]
    return out


def outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome resource.

    >>> outcome([issue("error", "invalid", "invalid JSON", "line 2")])["issue"][0]["location"]
    ['line 2']
    """
    return {"resourceType": "OperationOutcome", "issue": issues}


class Problem(Exception):
    """An HTTP error answered as an OperationOutcome (raised inside route handlers)."""

    def __init__(self, status: int, code: str, diagnostics: str, *, location: str = "",
                 headers: dict[str, str] | None = None, issues: list[dict[str, Any]] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.location = location
        self.headers = headers or {}
        self.issues = issues or []

    def body(self) -> dict[str, Any]:
        """The OperationOutcome of this problem."""
        severity = "fatal" if self.status >= 500 else "error"
        return outcome([issue(severity, self.code, self.diagnostics, self.location), *self.issues])
