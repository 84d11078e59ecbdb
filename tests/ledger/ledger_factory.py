"""Helpers of the ledger tests: events, and raw SQL to tamper with a stored ledger."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from sentinelle.events import AccessEvent

T0 = 1_717_200_000_000


def make_events(n: int, start: int = 0, source: str = "dpi") -> list[AccessEvent]:
    """Events e<start>..e<start+n-1>: 7 accounts, 40 patients, a search every 10th with a name in its query."""
    out = []
    for i in range(start, start + n):
        search = i % 10 == 0
        out.append(AccessEvent(
            id=f"e{i}", time=T0 + i * 1000, account=f"user{i % 7}", action="search" if search else "read",
            patients=(f"Patient/{i % 40}",) if i % 13 else (), categories=33, client="dpi-web",
            address=f"10.0.0.{i % 250}", session=f"s{i // 50}", source=source,
            query="Patient?family=DUPONTEL" if search else "", auth="card",
        ))
    return out


class Raw:
    """Raw SQL on a ledger's database, as an intruder with database access would run it.

    Write SQL with `?` placeholders and `{events}`-style table names; both backends.
    """

    def __init__(self, url: str) -> None:
        self.pg = url.startswith("postgresql://")
        if self.pg:
            base, _, schema = url.partition("?schema=")
            self.conn: Any = psycopg.connect(base, autocommit=True)
            self.prefix = f'"{schema}".'
        else:
            self.conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
            self.prefix = ""

    def sql(self, text: str) -> str:
        names = {t: self.prefix + t for t in ("events", "checkpoints", "meta", "nodes", "batches")}
        text = text.format(**names)
        return text.replace("?", "%s") if self.pg else text

    def run(self, text: str, *params: object) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self.sql(text).encode() if self.pg else self.sql(text), params)
        return list(cur.fetchall()) if cur.description else []

    def close(self) -> None:
        self.conn.close()
