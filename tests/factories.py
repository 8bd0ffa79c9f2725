"""Small factories for tests: an incident file, partner CSVs, and the personas' addresses."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import Engine

from portal import workers
from portal.core.config import Settings
from portal.incidents.cache import IncidentCache
from portal.incidents.importer import import_csv
from portal.incidents.stored import load_incident_file
from portal.person.lookup_queue import LookupQueue
from portal.person.ratelimit import RateLimiter

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


def load_personas(engine: Engine, settings: Settings, folder: Path) -> None:
    """The standard incident with alice (park-a, theater-b) and bob (park-a)."""
    incident = folder / "incident.toml"
    incident.write_text(INCIDENT, encoding="utf-8")
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
        await queue.close()
        await cache.close()
