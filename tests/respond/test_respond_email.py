"""E-mail delivery against a real local SMTP server (aiosmtpd) started by the test."""

from __future__ import annotations

import email
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from service_kit import free_port, make_alert

from sentinelle.respond import DeliveryError, EmailChannel


class Inbox:
    """aiosmtpd handler: keeps every message; refuses recipients of the `refuse` domain with 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address.endswith("@refuse.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def test_alert_mail_in_french_without_patients(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    channel = EmailChannel("127.0.0.1", port, "sentinelle@hopital.example", ["rssi@hopital.example"])
    alert = make_alert(1, severity="critical", patients=("Patient/778899", "Patient/112233"))
    channel.deliver(alert)
    sender, rcpt, msg = inbox.messages[0]
    assert sender == "sentinelle@hopital.example" and rcpt == ["rssi@hopital.example"]
    assert msg["X-Sentinelle-Alert"] == alert.id
    assert "CRITIQUE" in msg["Subject"] and "j.martin" in msg["Subject"]
    body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "312 dossiers ouverts en 1 heure" in body and "Patients concernés : 2" in body
    assert "778899" not in body  # references stay out of e-mail unless asked


def test_english_with_patients_and_link(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    channel = EmailChannel("127.0.0.1", port, "s@h.example", ["dpo@h.example", "cert@h.example"], lang="en",
                           include_patients=True, console_url="https://sentinelle.h.example")
    alert = make_alert(2)
    channel.deliver(alert)
    _, rcpt, msg = inbox.messages[0]
    body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert rcpt == ["dpo@h.example", "cert@h.example"]
    assert "Patient/1, Patient/2" in body and "312 records opened" in body
    assert f"https://sentinelle.h.example/alerts/{alert.id}" in body


def test_refused_recipient_is_permanent(smtp: tuple[Inbox, int]) -> None:
    _, port = smtp
    channel = EmailChannel("127.0.0.1", port, "s@h.example", ["nobody@refuse.example"])
    with pytest.raises(DeliveryError) as info:
        channel.deliver(make_alert(3))
    assert info.value.permanent


def test_no_server_is_transient() -> None:
    channel = EmailChannel("127.0.0.1", free_port(), "s@h.example", ["a@h.example"], timeout_s=2)
    with pytest.raises(DeliveryError) as info:
        channel.deliver(make_alert(4))
    assert not info.value.permanent
