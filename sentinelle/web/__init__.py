"""The web layer: the FastAPI application of the service (intake, alerts, ledger proofs, metrics).

Thin on purpose: routes check tokens, content types and sizes, call the service and
shape the answer. See docs/service.md for the endpoints.
"""

from __future__ import annotations

from sentinelle.web.app import create_app
from sentinelle.web.outcome import Problem, issue, outcome

__all__ = ["Problem", "create_app", "issue", "outcome"]
