"""Every kind of email the portal sends, in each language, as the bytes its SMTP relay gets.

`send_every_email` walks the real paths (a lookup, an entry page's lookup, `portal notify`,
deletion requests, a partner's daily digest, an operator's extension and decisions, a
partner's reminder) for the example incident of docs/, once speaking Dutch and once
English, delivers the outbox with the real mail worker to an aiosmtpd server, and returns
what arrived.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import anyio
from sqlalchemy import Engine, func, select

from portal import workers
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.fields import to_bits
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.mail import outbox
from portal.mail.worker import MailWorker
from portal.person.lookups import LookupRequest
from portal.person.sessions import confirm_link
from portal.reach import notices
from portal.requests.decisions import change_status, extend
from portal.requests.deletions import Actor, request_deletion
from portal.requests.digests import send_due_digests
from portal.requests.forwarding import send_due_reminders
from portal.store import tables
from portal.workers import TEMPLATES_DIR
from tests.factories import RENDERER, running_lookups, write_csv
from tests.fixtures_mail import running_smtp_server

DOCS = Path(__file__).resolve().parent.parent / "docs"
LANGUAGES = ("nl", "en")
# Alice is at every partner, Bob at Park A only, Dave only in Omroep C's uncertain set,
# Carol nowhere (an entry page's lookup mails her all the same).
ALICE, BOB, CAROL, DAVE = (f"{name}@example.org" for name in ("alice", "bob", "carol", "dave"))
FILES = {
    "park-a": [
        ["E-mailadres", "Naam", "Telefoon", "Postcode", "Geboortedatum"],
        [ALICE, "Alice Aap", "0612345678", "1234 AB", "1990-01-01"],
        [BOB, "Bob Beer", "", "2345 BC", ""],
    ],
    "theater-b": [["email", "naam", "IBAN"], [ALICE, "Alice Aap", "NL91ABNA0417164300"]],
    "omroep-c": [
        ["email", "naam", "relatienummer", "geslacht"],
        [ALICE, "Alice Aap", "R-1001", "v"],
        [DAVE, "Dave Das", "R-1002", "m"],
    ],
}
# Notified after the others' notices went out: Alice (at every partner) gets a follow-up.
LATE_PARTNER = "omroep-c"
# Which case of its kind a message is, by its recipient.
CASES = {ALICE: "alice", BOB: "bob", CAROL: "carol", DAVE: "dave"}
OPERATOR = Actor("operator", "dora", "admin")
# What a shop keeps for the tax authority: a list long enough to read as a form to fill in.
KEPT = ("name", "address", "postcode", "city", "iban", "order_history")
REASONS = {
    "nl": {
        "extended": "Het theater zoekt uit in welke systemen uw gegevens nog staan.",
        "completed": "Uw gegevens zijn uit alle systemen verwijderd.",
        "rejected": "Wij bewaren facturen zeven jaar, zoals de belastingwet voorschrijft.",
    },
    "en": {
        "extended": "The theatre is finding out in which systems your data are still held.",
        "completed": "Your data have been removed from every system.",
        "rejected": "We keep invoices for seven years, as tax law requires.",
    },
}


@dataclass(frozen=True)
class Sent:
    """One email as the relay got it."""

    kind: str  # its X-Portal-Kind: link, notice, partner_request ...
    recipient: str
    lang: str
    data: bytes

    @property
    def template(self) -> str:
        """Its set in templates/emails/ (an entry page's link email is a link of its own)."""
        return "partner_link" if self.kind == "link" and self.recipient == CAROL else self.kind

    @property
    def name(self) -> str:
        """Which one it is: "notice[alice]-en", "partner_request[park-a:bob]-nl"."""
        case = CASES.get(self.recipient)
        partner = self.recipient.partition("@")[2].split(".")[0]
        if case is None and self.kind == "partner_digest":  # to a partner, about several
            case = partner
        elif case is None:  # to a partner, about a person
            person = next(name for address, name in CASES.items() if address.encode() in self.data)
            case = f"{partner}:{person}"
        return f"{self.template}[{case}]-{self.lang}"

    @property
    def message(self) -> EmailMessage:
        return cast(EmailMessage, message_from_bytes(self.data, policy=policy.default))

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"{self.name} has no text/{subtype} part"
        return str(body.get_content())


TEMPLATES = {path.name for path in (TEMPLATES_DIR / "emails").iterdir() if path.is_dir()}


def slug(lang: str) -> str:
    return f"ticketing-{lang}"


def incident_file(lang: str) -> str:
    """The example incident, speaking `lang` first (its notices and its partners' mail)."""
    other = next(x for x in LANGUAGES if x != lang)
    text = (DOCS / "incident.example.toml").read_text(encoding="utf-8")
    text = text.replace('slug = "ticketing-2021"', f'slug = "{slug(lang)}"')
    text = text.replace('languages = ["nl", "en"]', f'languages = ["{lang}", "{other}"]')
    text = text.replace('language = "nl"\n', "")  # every partner in the incident's language
    return re.sub(r"^webhook_(url|secret) = .*\n", "", text, flags=re.M)  # by email only


def send_every_email(engine: Engine, settings: Settings, folder: Path) -> list[Sent]:
    """Every email kind in every language, delivered by the mail worker to a real server.

    Every template set of templates/emails/ is among them: a new kind of email must be
    added here, and so is checked for its links and by SpamAssassin.
    """
    with running_smtp_server() as smtp:
        worker = workers.mail_worker(engine, replace(settings, smtp_url=smtp.url()))
        for lang in LANGUAGES:
            _load_and_notify(engine, settings, folder, lang)
            _people_ask(engine, settings, lang)
        # Omroep C takes its requests in bulk (forward = "daily"): one digest per incident.
        assert send_due_digests(engine, settings, renderer=RENDERER) == len(LANGUAGES)
        _deliver(engine, worker)  # the partners' requests go out: they are forwarded
        for lang in LANGUAGES:  # a partner notified late: Alice's follow-up, Dave's notice
            _notify(engine, settings, folder, lang, LATE_PARTNER)
        for lang in LANGUAGES:
            _operator_decides(engine, lang)
        later = utcnow() + timedelta(days=settings.partner_reminder_days + 1)
        assert send_due_reminders(engine, settings, renderer=RENDERER, now=later)
        _deliver(engine, worker)
        sent = [_sent(m.rcpt_tos, m.content) for m in smtp.received]
    assert {(s.template, s.lang) for s in sent} == {(t, x) for t in TEMPLATES for x in LANGUAGES}
    return sent


def _load_and_notify(engine: Engine, settings: Settings, folder: Path, lang: str) -> None:
    path = folder / f"incident-{lang}.toml"
    path.write_text(incident_file(lang), encoding="utf-8")
    load_incident_file(engine, path)
    for partner, rows in FILES.items():
        csv = write_csv(folder / f"{partner}.csv", rows)
        import_csv(engine, settings, incident=slug(lang), partner=partner, path=csv)
        if partner != LATE_PARTNER:
            _notify(engine, settings, folder, lang, partner)


def _notify(engine: Engine, settings: Settings, folder: Path, lang: str, partner: str) -> None:
    path = folder / f"{partner}.csv"
    notices.notify(
        engine,
        settings,
        incident=slug(lang),
        partner=partner,
        path=path,
        renderer=RENDERER,
        rate=1000,
    )


def _people_ask(engine: Engine, settings: Settings, lang: str) -> None:
    """Carol looks up on an entry page; Alice asks every partner to delete, Bob one."""
    _ask_link(engine, settings, lang, CAROL, partner="park-a")
    for address, partner in ((ALICE, "all"), (BOB, "park-a")):
        token = _ask_link(engine, settings, lang, address)
        with engine.begin() as conn:
            session = confirm_link(conn, settings, token)[1]
            request_deletion(conn, settings, session, partner=partner, renderer=RENDERER)


def _ask_link(
    engine: Engine, settings: Settings, lang: str, address: str, partner: str | None = None
) -> str:
    """A lookup as the incident page (or a partner's entry page) sends it; its link's token."""
    lookup = LookupRequest(slug(lang), address, "203.0.113.7", lang, partner)

    async def ask() -> None:
        async with running_lookups(engine, settings) as queue:
            assert queue.submit(lookup)

    anyio.run(ask)
    o = tables.outbox.c
    with engine.connect() as conn:
        text = conn.scalar(select(o.body_text).where(o.kind == "link").order_by(o.id.desc()))
    found = re.search(r"/v/([\w.-]+)", text or "")
    assert found, "the link email carries its link"
    return found.group(1)


def _operator_decides(engine: Engine, lang: str) -> None:
    """Of Alice's three requests the operator extends one, completes one, rejects one."""
    r, i = tables.deletion_requests.c, tables.incidents.c
    with engine.begin() as conn:
        first, second, third = conn.scalars(
            select(r.reference)
            .join(tables.incidents, i.id == r.incident_id)
            .where(i.slug == slug(lang), r.email == ALICE)
            .order_by(r.id)
        )
        reasons = REASONS[lang]
        common = {"actor": OPERATOR, "renderer": RENDERER}
        extend(conn, reference=first, months=2, reason=reasons["extended"], **common)
        change_status(conn, reference=second, to="completed", note=reasons["completed"], **common)
        change_status(
            conn,
            reference=third,
            to="rejected",
            ground="legal_obligation",
            reason=reasons["rejected"],
            kept_fields=to_bits(KEPT),
            **common,
        )


def _deliver(engine: Engine, worker: MailWorker, timeout: float = 30.0) -> None:
    """Runs the worker until the outbox holds nothing to send (notices go out on a
    schedule, a millisecond apart)."""
    o = tables.outbox.c
    deadline = time.monotonic() + timeout
    while True:
        anyio.run(worker.deliver_due)
        with engine.connect() as conn:
            left = conn.scalar(
                select(func.count()).where(o.status.in_((outbox.QUEUED, outbox.SENDING)))
            )
        if not left:
            return
        assert time.monotonic() < deadline, f"{left} message(s) not delivered"


def _sent(recipients: list[str], data: bytes) -> Sent:
    message = message_from_bytes(data, policy=policy.default)
    html = cast(EmailMessage, message).get_body(preferencelist=("html",))
    assert html is not None
    lang = re.search(r'<html lang="(\w+)"', str(html.get_content()))
    assert lang, "the HTML part names its language"
    (recipient,) = recipients
    return Sent(str(message["X-Portal-Kind"]), recipient, lang.group(1), data)
