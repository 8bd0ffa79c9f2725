"""Small factories for tests: an incident file, partner CSVs, and the personas' addresses."""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

import anyio
from sqlalchemy import Engine, select

from portal import workers
from portal.core.config import Settings
from portal.incidents.cache import IncidentCache
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.mail.messages import Message
from portal.mail.renderer import Renderer
from portal.operator import accounts
from portal.person.lookup_queue import LookupQueue
from portal.person.lookups import LookupRequest
from portal.person.ratelimit import RateLimiter
from portal.person.sessions import VerifiedSession, confirm_link
from portal.requests.deletions import DeletionRequest, request_deletion
from portal.store import db, tables

# The portal's templates, rendered as the portal renders them.
RENDERER = workers.renderer()

# Personas: alice occurs at two partners, bob at one, carol nowhere.
ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"

INCIDENT = """\
slug = "ticketing-2021"
languages = ["nl", "en"]
discovered = 2021-02-22
contact_email = "privacy@ticketing.example"
regulator_notified = true

[title]
nl = "Datalek bij TicketDienst"
en = "Data breach at TicketDienst"

[notice]
nl = "Wij ontdekten een **lek**. <script>alert(1)</script>"
en = "We found a **leak**. <script>alert(1)</script>"

[[faq]]
question = { nl = "Wat moet ik doen?", en = "What should I do?" }
answer = { nl = "Lees het advies.", en = "Read the advice." }

[[partners]]
slug = "park-a"
name = "Attractiepark A"
contact_email = "privacy@park-a.example"

[[partners]]
slug = "theater-b"
name = "Theater B"
contact_email = "privacy@theater-b.example"

[[partners]]
slug = "omroep-c"
name = "Omroep C"
contact_email = "privacy@omroep-c.example"
"""

PARK_A = [
    ["E-mailadres", "Naam", "Telefoon", "Postcode"],
    [ALICE, "Alice Aap", "0612345678", "1234 AB"],
    [BOB, "Bob Beer", "", "2345 BC"],
]
THEATER_B = [
    ["email", "naam", "IBAN"],
    [ALICE.upper(), "Alice Aap", "NL91ABNA0417164300"],
]


def write_csv(path: Path, rows: list[list[str]], *, delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def incident_store(
    folder: Path, database_url: str, *, secret_key: str, pepper: bytes
) -> tuple[Engine, Settings]:
    """A migrated database with the personas' incident loaded and no records yet."""
    settings = Settings(
        instance_dir=folder, database_url=database_url, secret_key=secret_key, pepper=pepper
    )
    engine = db.make_engine(settings.database_url)
    db.migrate(engine)
    (folder / "incident.toml").write_text(INCIDENT, encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    return engine, settings


def load_personas(
    engine: Engine, settings: Settings, folder: Path, *, incident_text: str = INCIDENT
) -> None:
    """The standard incident (or `incident_text`, a variant of it) with alice (park-a,
    theater-b) and bob (park-a)."""
    incident = folder / "incident.toml"
    incident.write_text(incident_text, encoding="utf-8")
    load_incident_file(engine, incident)
    for partner, rows in (("park-a", PARK_A), ("theater-b", THEATER_B)):
        path = write_csv(folder / f"{partner}.csv", rows)
        import_csv(engine, settings, incident="ticketing-2021", partner=partner, path=path)


@asynccontextmanager
async def running_lookups(
    engine: Engine, settings: Settings, limiter: RateLimiter | None = None
) -> AsyncIterator[LookupQueue]:
    """The lookup queue the web submits to, started; on leaving, drained and closed, so
    that every lookup submitted is written (its link and mail) or counted as refused."""
    cache = IncidentCache(engine, ttl=settings.incident_cache_ttl)
    queue = LookupQueue(
        engine, settings, limiter or RateLimiter(settings), cache, renderer=RENDERER
    )
    queue.start()
    try:
        yield queue
    finally:
        await queue.close(settings.shutdown_timeout)
        await cache.close()


# -- operators, lookups and mail made for a test ---------------------------------------

SLUG = "ticketing-2021"  # the personas' incident (INCIDENT)


# Operators: dora works the queue, eve is the colleague acting at the same moment.
DORA, DORA_PASSWORD = "dora", "a long passphrase she keeps"


EVE, EVE_PASSWORD = "eve", "another long passphrase of hers"


def create_operators(engine: Engine) -> None:
    with engine.begin() as conn:
        accounts.create_operator(conn, username=DORA, password=DORA_PASSWORD)
        accounts.create_operator(conn, username=EVE, password=EVE_PASSWORD)


def ask_deletion(
    engine: Engine, settings: Settings, address: str, partner: str = "all"
) -> list[DeletionRequest]:
    """A person signs in and asks for deletion: the request as the public flow makes it."""
    session = sign_in_directly(engine, settings, address)
    with engine.begin() as conn:
        return request_deletion(conn, settings, session, partner=partner, renderer=RENDERER)


CLIENT = "203.0.113.7"


async def ask_link(
    engine: Engine,
    settings: Settings,
    limiter: RateLimiter,
    address: str,
    *,
    incident: str = SLUG,
    client: str = CLIENT,
) -> bool:
    """Submits one lookup to a real lookup queue and drains it; True when its link was mailed."""
    lookup = LookupRequest(incident=incident, address=address, client=client, lang="en")
    before = len(link_mails(engine))
    async with running_lookups(engine, settings, limiter) as queue:
        assert queue.submit(lookup)
    return len(link_mails(engine)) > before


def link_mails(engine: Engine) -> list[tuple[str, str]]:
    """(recipient, token) of every queued link email, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(tables.outbox.c.recipient, tables.outbox.c.body_text)
            .where(tables.outbox.c.kind == "link")
            .order_by(tables.outbox.c.id)
        ).all()
    return [(r.recipient, re.search(r"/v/(\S+)", r.body_text).group(1)) for r in rows]


def sign_in_directly(engine: Engine, settings: Settings, address: str) -> VerifiedSession:
    """Asks a link for `address` and confirms it: the person's path without HTTP."""

    async def ask() -> None:
        assert await ask_link(engine, settings, RateLimiter(settings), address)

    anyio.run(ask)
    _, token = link_mails(engine)[-1]
    with engine.begin() as conn:
        return confirm_link(conn, settings, token)[1]


TEST_TEMPLATES = Path(__file__).parent / "data"


TEST_MAIL = Renderer(TEST_TEMPLATES)  # emails/hello/ only


LINK = "http://127.0.0.1:8000/v/tok3n-secret"


class Clock:
    """A worker clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def hello(lang: str = "en", incident: str = "Parks & Co <b>") -> Message:
    return TEST_MAIL.email("hello", lang, incident=incident, link=LINK)


def start_operator_session(engine: Engine, settings: Settings, username: str = "dora") -> str:
    with engine.begin() as conn:
        operator = accounts.get_operator(conn, username)
        assert operator is not None
        return accounts.start_session(conn, settings, operator)


PEPPER_REFUSAL = (
    "PORTAL_PEPPER is not the pepper the records of incident(s) ticketing-2021 were imported "
    'with: every lookup would answer "not affected"; set PORTAL_PEPPER to the pepper those '
    "incidents were imported with, or purge them (portal purge --incident SLUG --all) and "
    "import them again"
)


DAILY_SECRET = "park-a-daily-secret"


def load_daily_partner(
    engine: Engine, settings: Settings, folder: Path, *, webhook_url: str | None = None
) -> None:
    """The personas' incident with park-a taking its requests in bulk (forward = "daily"),
    in English, with a signed webhook when `webhook_url` is given; park-a's file imported."""
    line = 'contact_email = "privacy@park-a.example"\n'
    extra = 'forward = "daily"\nlanguage = "en"\n'
    if webhook_url:
        extra += f'webhook_url = "{webhook_url}"\nwebhook_secret = "{DAILY_SECRET}"\n'
    (folder / "incident.toml").write_text(INCIDENT.replace(line, line + extra), encoding="utf-8")
    load_incident_file(engine, folder / "incident.toml")
    import_csv(
        engine, settings, incident="ticketing-2021", partner="park-a",
        path=write_csv(folder / "park-a.csv", PARK_A),
    )  # fmt: skip
