"""Emails as built for the wire: what the email package would write, in a fraction of the time."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import cast

import pytest

from portal.mail.messages import Message, build_email
from portal.mail.sender import from_header

LINK = "https://lek.example.org/v/tok3n"
CASES = [
    ("alice@example.org", Message("Uw link", f"Hallo,\n\n{LINK}\n", f'<a href="{LINK}">x</a>')),
    (
        "bob.o'neil+x@example.org",
        Message("Datalek bij Café Zoë: uw gegevens", "Beste Zoë,\r\nüber\n\nGroet", "<p>é</p>"),
    ),
    ("c@example.org", Message("=?utf-8?q?not_encoded?= " + "long " * 150, "x" * 990, "<p/>")),
    ("d@example.org", Message("Hi", "a line far too long " * 60, "<p>" + "y" * 1200 + "</p>")),
    ("jörg@example.de", Message("Hi", "Hallo Jörg", "<p>Hallo Jörg</p>")),
]


def by_the_email_package(to: str, message: Message, sender_name: str | None) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = from_header("portal@example.net", sender_name)
    msg["To"] = to
    msg["Subject"] = message.subject
    msg.set_content(message.text, charset="utf-8")
    msg.add_alternative(message.html, subtype="html", charset="utf-8")
    return msg


@pytest.mark.parametrize(("to", "message"), CASES)
@pytest.mark.parametrize("sender_name", [None, "TicketDienst B.V.", 'Zoë "de" Vries, B.V.'])
def test_it_writes_what_the_email_package_would(
    to: str, message: Message, sender_name: str | None
) -> None:
    built = build_email(
        kind="link",
        to=to,
        message=message,
        mail_from="portal@example.net",
        sender_name=sender_name,
        message_id="<a1.7@example.net>",
    )
    assert b"\n" not in built.data.replace(b"\r\n", b"")  # CRLF line ends only
    got = cast(EmailMessage, message_from_bytes(built.data, policy=policy.default))
    wire = by_the_email_package(to, message, sender_name).as_bytes()
    want = cast(EmailMessage, message_from_bytes(wire, policy=policy.default))
    for name in ("From", "To", "Subject"):
        assert str(got[name]) == str(want[name])
    assert (got["Message-ID"], got["X-Portal-Kind"]) == ("<a1.7@example.net>", "link")
    assert got["Date"].datetime.utcoffset().total_seconds() == 0
    got_parts, want_parts = list(got.iter_parts()), list(want.iter_parts())
    assert [p.get_content_type() for p in got_parts] == ["text/plain", "text/html"]
    assert [p.get_content() for p in got_parts] == [p.get_content() for p in want_parts]
    assert built.payload_sha256 and built.recipient == to and built.sender == "portal@example.net"
