"""Context: where from, when, and whether the account should be active at all.

- a network address never seen for the account: decisive for application and API client
  accounts, which come from a few fixed addresses; only a hint for people, who roam
  between ward PCs, VDI gateways and home (a new /24 or /48 range, not a new address);
- activity outside the account's own hours (learned per hour of the local day);
- a dormant account waking up;
- an account used after its holder's employment ended;
- an application or API client account used through a client software it never used.
Each but the employment end is a hint that needs other evidence to become an alert.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from sentinelle.detect.clock import DAY, HOUR
from sentinelle.detect.detectors.base import Detector, Observation, ev
from sentinelle.detect.settings import Settings
from sentinelle.detect.signal import Signal, fmt_int, fmt_pct
from sentinelle.detect.state import AccountState
from sentinelle.events import format_time

__all__ = ["ContextDetector", "ContextState", "address_range"]

_SERVICE_KINDS = frozenset({"application", "api_client"})
_MAX_ADDRESSES = 256
_MAX_CLIENTS = 32
#: Active hours of history needed before hours of activity are judged.
_MIN_HOURS = 40


def address_range(address: str) -> str:
    """The network range an address belongs to: /24 for IPv4, /48 for IPv6, else the address.

    >>> address_range("10.2.31.7"), address_range("2001:db8:5:1::7")
    ('10.2.31', '2001:db8:5')
    """
    if ":" in address:
        return ":".join(address.split(":")[:3])
    parts = address.split(".")
    if len(parts) == 4:
        return ".".join(parts[:3])
    return address


class ContextState(msgspec.Struct):
    """Addresses, ranges and clients seen, and the learned hours of activity."""

    addresses: dict[str, int] = msgspec.field(default_factory=dict)
    ranges: dict[str, int] = msgspec.field(default_factory=dict)
    clients: dict[str, int] = msgspec.field(default_factory=dict)
    hours: list[int] = msgspec.field(default_factory=lambda: [0] * 24)
    hours_total: int = 0
    today_hours: list[int] = msgspec.field(default_factory=lambda: [0] * 24)
    last_hour: int = -1
    last_address: str = ""
    last_client: str = ""
    after_end_day: int = -1


class ContextDetector(Detector):
    """New address or range, off-hours, dormancy, use after employment end, interactive use."""

    name: ClassVar[str] = "context"
    hooks: ClassVar[frozenset[str]] = frozenset({"event", "day"})
    kinds: ClassVar[dict[str, tuple[str, str]]] = {
        "new_address": ("connexion depuis une adresse réseau inédite", "access from a new network address"),
        "off_hours": ("activité hors des horaires habituels du compte", "activity outside the account's hours"),
        "dormant": ("réveil d'un compte dormant", "dormant account waking up"),
        "after_end": ("compte utilisé après la fin de contrat de son titulaire",
                      "account used after its holder's employment ended"),
        "interactive": ("compte applicatif utilisé de façon interactive",
                        "application account used interactively"),
    }
    learning_kinds: ClassVar[frozenset[str]] = frozenset({"after_end"})

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._grace = int(settings.after_end_grace_hours * HOUR)
        self._dormant = int(settings.dormant_days * DAY)
        # what is "new" for an account is judged once it has been active on enough days
        # (any activity: a technical account may log in daily and read rarely)
        self._known_days = settings.min_history_days

    def new_state(self, acc: AccountState) -> ContextState:
        return ContextState()

    def state_type(self) -> type[ContextState]:
        return ContextState

    def on_event(self, state: ContextState, obs: Observation) -> list[Signal] | None:
        a = obs.acc
        e = obs.event
        t = obs.time
        s = self.settings
        found: list[Signal] | None = None
        # employment end: no history needed
        if a.end is not None and t > a.end + self._grace and state.after_end_day != obs.day:
            state.after_end_day = obs.day
            days = (t - a.end) / DAY
            found = [self.signal(obs, s.after_end_score, "after_end", [ev(
                "context.after_end",
                f"compte utilisé {fmt_int(days, 'fr')} jours après la fin de contrat de son titulaire "
                f"({format_time(a.end)[:10]})",
                f"account used {fmt_int(days, 'en')} days after its holder's employment ended "
                f"({format_time(a.end)[:10]})",
                days_after_end=round(days, 1),
                end=format_time(a.end),
            )])]
        # dormancy: measured against the previous visit of this account
        if t - a.prev_time > self._dormant and a.prev_time:
            days = (t - a.prev_time) / DAY
            found = _add(found, self.signal(obs, s.dormant_score, "dormant", [ev(
                "context.dormant",
                f"première activité depuis {fmt_int(days, 'fr')} jours (dernière le "
                f"{format_time(a.prev_time)[:10]})",
                f"first activity in {fmt_int(days, 'en')} days (last on {format_time(a.prev_time)[:10]})",
                idle_days=round(days, 1),
            )]))
        addr = e.address
        if addr and addr != state.last_address:
            state.last_address = addr
            sig = self._address(state, obs, addr)
            if sig is not None:
                found = _add(found, sig)
        client = e.client
        if client and client != state.last_client:
            state.last_client = client
            if client not in state.clients:
                if (
                    a.kind in _SERVICE_KINDS
                    and a.active_days > self._known_days
                    and 0 < len(state.clients) <= 3
                    and not obs.learning
                ):
                    found = _add(found, self.signal(obs, s.interactive_score, "interactive", [ev(
                        "context.new_client",
                        f"compte applicatif utilisé via le logiciel « {client} », jamais utilisé jusqu'ici "
                        f"(habituels : {', '.join(sorted(state.clients)[:3])})",
                        f"application account used through client software '{client}', never used before "
                        f"(usual: {', '.join(sorted(state.clients)[:3])})",
                        client=client,
                    )]))
                if len(state.clients) < _MAX_CLIENTS:
                    state.clients[client] = 1
        # hours of activity: counted once per clock hour the account is active
        abs_hour = t // HOUR
        if abs_hour != state.last_hour:
            state.last_hour = abs_hour
            h = obs.hour
            state.today_hours[h] += 1
            if a.active_days > self._known_days and state.hours_total >= _MIN_HOURS and not obs.learning:
                hours = state.hours
                near = hours[h] + hours[(h - 1) % 24] + hours[(h + 1) % 24]
                share = near / state.hours_total
                if share < s.offhours_min_share:
                    found = _add(found, self.signal(obs, s.offhours_score, "off_hours", [ev(
                        "context.off_hours",
                        f"activité à {h} h, heure où ce compte n'a presque jamais travaillé "
                        f"({fmt_pct(share, 'fr')} de ses heures d'activité passées entre {(h - 1) % 24} h et "
                        f"{(h + 2) % 24} h)",
                        f"activity at {h}:00, an hour this account has almost never worked "
                        f"({fmt_pct(share, 'en')} of its past active hours between {(h - 1) % 24}:00 and "
                        f"{(h + 2) % 24}:00)",
                        hour=h,
                        share=round(share, 4),
                    )]))
        return found

    def _address(self, state: ContextState, obs: Observation, addr: str) -> Signal | None:
        known = state.addresses
        if addr in known:
            known[addr] += 1
            return None
        a = obs.acc
        s = self.settings
        rng = address_range(addr)
        new_range = rng not in state.ranges
        n_known = len(known)
        if len(known) >= _MAX_ADDRESSES:
            del known[next(iter(known))]
        known[addr] = 1
        state.ranges[rng] = state.ranges.get(rng, 0) + 1
        if len(state.ranges) > _MAX_ADDRESSES:
            del state.ranges[next(iter(state.ranges))]
        if a.declared_addresses and addr not in a.declared_addresses and not obs.learning:
            # the care context declares this account's addresses: no history needed
            return self.signal(obs, s.address_service_score, "new_address", [ev(
                "context.undeclared_address",
                f"connexion depuis {addr}, hors des adresses déclarées pour ce compte "
                f"({', '.join(a.declared_addresses[:3])})",
                f"access from {addr}, outside the addresses declared for this account "
                f"({', '.join(a.declared_addresses[:3])})",
                address=addr,
                declared=len(a.declared_addresses),
            )])
        if a.active_days <= self._known_days or obs.learning or n_known == 0:
            return None
        if a.kind in _SERVICE_KINDS and n_known <= s.service_max_addresses:
            return self.signal(obs, s.address_service_score, "new_address", [ev(
                "context.new_address_service",
                f"première connexion depuis {addr} ; ce compte applicatif n'utilisait que "
                f"{fmt_int(n_known, 'fr')} adresse(s) fixe(s)",
                f"first access from {addr}; this application account had used only "
                f"{fmt_int(n_known, 'en')} fixed address(es)",
                address=addr,
                known_addresses=n_known,
            )])
        if new_range:
            return self.signal(obs, s.address_hint_score, "new_address", [ev(
                "context.new_range",
                f"première connexion depuis {addr}, hors des réseaux déjà utilisés par ce compte",
                f"first access from {addr}, outside the networks this account has used",
                address=addr,
                known_ranges=len(state.ranges) - 1,
            )])
        return None

    def end_day(self, state: ContextState, acc: AccountState, learned: bool) -> None:
        today = state.today_hours
        n = sum(today)
        if not n:
            return
        if learned:
            state.hours = [h + k for h, k in zip(state.hours, today, strict=True)]
            state.hours_total += n
        state.today_hours = [0] * 24



def _add(found: list[Signal] | None, sig: Signal) -> list[Signal]:
    if found is None:
        return [sig]
    found.append(sig)
    return found
