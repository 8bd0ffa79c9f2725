"""Letters (design §8): a personal code for each person of a file whom email cannot reach.

Each person (rows with the same key: portal.reach.letter_rows) gets one code for the
incident, kept as `letter_codes`: the blind index of the key (argon2id, as an address) and
an HMAC of the code, never the code, the key or a postal address. The code is derived
from the key's blind index with the secret key, so a later partner's file finds the same
person and prints the same code on a follow-up letter, which names only that partner. The
code's exposures are ordinary exposures with the code's hash as their blind index: the
results page and deletion requests read them as they read an address's.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, select

from portal.core import fields, letter_codes
from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.incidents import fingerprints
from portal.incidents.importer import Hasher, ImportSummary, Progress, require_partner
from portal.incidents.stored import Incident, Partner, get_partners
from portal.reach.letter_rows import PeopleRead, Person, read_people
from portal.reach.notices import BOUNCED
from portal.store import audit, db, tables

log = logging.getLogger("portal.letters")

FIRST, FOLLOW_UP, AGAIN = "first", "follow-up", "again"
CHUNK = 1000  # people whose codes one transaction commits
_KEY_CHANGED = (
    "these people got letters under another PORTAL_SECRET_KEY (or PORTAL_PEPPER): a new "
    "letter would print a code that does not work; run with the keys of the first letters"
)


@dataclass(frozen=True)
class Letter:
    """One letter to write: the code, language, postal block and the partners it names."""

    code: str
    lang: str
    postal: dict[str, str]
    kind: str  # first, follow-up (names only the new partner) or again (--all)
    partners: list[Partner]
    fields: list[fields.Field]


@dataclass
class LettersSummary:
    """What a letters run read and made: rows read = with an address + skipped (as import)."""

    read: ImportSummary
    postal_fields: list[str]
    people: int = 0  # distinct people (by key) a letter was considered for
    without_address: list[int] = field(default_factory=list)  # rows with no postal address
    with_email: int = 0  # people reached by email: no letter
    bounced: int = 0  # people whose notice bounced (--bounced)
    first: int = 0
    follow_ups: int = 0
    again: int = 0  # --all: letters again for partners already named
    already: int = 0  # partner already named in a letter: none again
    resumed: int = 0  # recorded by an interrupted run: their letters made again
    dry_run: bool = False
    letters: list[Letter] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """How `portal letters` was asked."""

    bounced: bool = False
    everyone: bool = False  # --all
    key: list[str] | None = None
    dry_run: bool = False


class Output(Protocol):
    """Where a run's letters go (portal.reach.letter_files.LetterFiles): written aside
    before the codes are committed, put in place after."""

    def interrupted(self, incident: str, partner: str) -> datetime | None:
        """The stamp of this incident's and partner's run that stopped between committing
        its codes and putting its letters in place, if there is one."""

    def prepare(
        self, summary: LettersSummary, *, incident: str, partner: str, stamp: datetime
    ) -> None:
        """Writes the letters aside, with a note of the run's `stamp`: nothing in place."""

    def finish(self) -> None:
        """Puts the letters written aside in place, then drops the note."""


def make_letters(
    engine: Engine,
    settings: Settings,
    *,
    incident: str,
    partner: str,
    path: Path,
    options: Options,
    mapping: dict[str, str] | None = None,
    email_column: str | None = None,
    progress: Progress | None = None,
    output: Output | None = None,
) -> LettersSummary:
    """Reads the file, picks the people to write to, gives each a code and returns the
    letters to print; the codes are stored unless `dry_run`.

    The letters are planned first (reading only), `output` writes them aside, the codes are
    then committed CHUNK people per transaction (no write lock held for long, none while a
    PDF is made), and last `output` puts the files in place. A run that stops before that
    leaves its note: run again with the same `output`, it makes the letters of the people
    that run recorded (their partner bears its stamp) once more, and the others anew.
    """
    with engine.begin() as conn:
        found, target = require_partner(conn, incident, partner)
        salt = db.ensure_salt(conn)
        fingerprints.refuse_another(conn, incident_id=found.id, pepper=settings.pepper, salt=salt)
    resumed = output.interrupted(found.slug, target.slug) if output is not None else None
    people = read_people(
        path,
        mapping=mapping,
        email_column=email_column,
        key=options.key,
        with_addresses=options.bounced or options.everyone,
        progress=progress,
    )
    hasher = Hasher(settings.pepper, salt, found.kdf)
    summary = LettersSummary(people.read, people.postal_fields, dry_run=options.dry_run)
    summary.without_address = people.without_address
    chosen = _chosen(engine, found, people, hasher, options, summary)
    with engine.connect() as conn:
        planned = _plan_each(
            conn, settings, found, target, chosen, hasher, options, resumed, summary
        )
    if options.dry_run:
        return summary
    stamp = resumed or utcnow()
    if output is not None:
        output.prepare(summary, incident=found.slug, partner=target.slug, stamp=stamp)
    _store(engine, settings, found, target, salt, planned, stamp)
    with engine.begin() as conn:
        audit.record(
            conn,
            actor="cli",
            action="letters_made",
            object=f"{found.slug}/{target.slug}",
            detail=f"{len(summary.letters)} letter(s)",
        )
    if output is not None:
        output.finish()
    return summary


def _store(
    engine: Engine,
    settings: Settings,
    incident: Incident,
    partner: Partner,
    salt: bytes,
    planned: list[Planned],
    stamp: datetime,
) -> None:
    """Commits the planned codes CHUNK people per transaction (the first claims the pepper)."""
    for start in range(0, len(planned), CHUNK):
        with engine.begin() as conn:
            if start == 0:
                fingerprints.claim(
                    conn,
                    incident_id=incident.id,
                    pepper=settings.pepper,
                    salt=salt,
                    params=incident.kdf,
                )
            _store_chunk(conn, incident, partner, planned[start : start + CHUNK], stamp)


def _chosen(
    engine: Engine,
    incident: Incident,
    people: PeopleRead,
    hasher: Hasher,
    options: Options,
    summary: LettersSummary,
) -> list[Person]:
    """The people who get a letter: no valid address; else bounced (--bounced) or --all."""
    summary.people = len(people.people)
    bounced = _bounced(engine, incident, people, hasher) if options.bounced else set()
    chosen = []
    for person in people.people.values():
        if person.key in bounced:
            summary.bounced += 1
        if person.no_email or options.everyone or person.key in bounced:
            chosen.append(person)
        else:
            summary.with_email += 1
    return chosen


def _bounced(engine: Engine, incident: Incident, people: PeopleRead, hasher: Hasher) -> set[str]:
    """The keys of the people with an address whose notice bounced."""
    owners: dict[str, str] = {}
    for person in people.people.values():
        for address in person.addresses:
            owners[address] = person.key
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        indexes = dict(zip(pool.map(hasher, list(owners)), owners.values(), strict=True))
    n = tables.notices.c
    with engine.connect() as conn:
        hit = conn.scalars(
            select(n.bidx).where(
                n.incident_id == incident.id, n.status == BOUNCED, n.bidx.in_(list(indexes))
            )
        ).all()
    return {indexes[bidx] for bidx in hit}


def _plan_each(
    conn: Connection,
    settings: Settings,
    incident: Incident,
    partner: Partner,
    chosen: list[Person],
    hasher: Hasher,
    options: Options,
    resumed: datetime | None,
    summary: LettersSummary,
) -> list[Planned]:
    """Each chosen person's code and letter, and what storing it takes; writes nothing."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        keys = list(pool.map(lambda p: hasher("letter-key\0" + p.key), chosen))
    partners = {p.id: p for p in get_partners(conn, incident.id)}
    lang = incident.languages[0]  # a partner's `language` is of the mail to it, not to people
    planned = []
    for person, person_key in zip(chosen, keys, strict=True):
        code = letter_codes.derive(settings.secret_key.encode(), person_key)
        plan = _plan_one(
            conn, settings, incident, partner, person, person_key, code, lang, resumed, options
        )
        if plan is None:
            summary.already += 1
            continue
        planned.append(plan)
        summary.resumed += plan.resumed
        summary.letters.append(
            _letter(code, lang, person, plan.kind, plan.named, partners, partner, summary)
        )
    return planned


@dataclass
class Planned:
    """One letter's storing: the code (a new row when `code_id` is None) and the partner."""

    person_key: bytes
    hashed: bytes
    lang: str
    code_id: int | None
    kind: str
    named: dict[int, int]  # partner id -> fields, this partner's included
    new_partner: bool
    bits: int
    resumed: bool = False  # recorded by an interrupted run: its letter made again


def _plan_one(
    conn: Connection,
    settings: Settings,
    incident: Incident,
    partner: Partner,
    person: Person,
    person_key: bytes,
    code: str,
    lang: str,
    resumed: datetime | None,
    options: Options,
) -> Planned | None:
    """The letter the person's code calls for (None: written to before, no letter)."""
    c, lp = tables.letter_codes.c, tables.letter_partners.c
    hashed = letter_codes.code_hash(settings.pepper, code)
    row = conn.execute(
        select(c.id, c.lang, c.code_hash).where(
            c.incident_id == incident.id, c.person_key == person_key
        )
    ).first()
    named, stamps = {}, {}
    if row is not None:
        if bytes(row.code_hash) != hashed:
            raise PortalError(_KEY_CHANGED)
        lang = row.lang
        for pid, bits, at in conn.execute(
            select(lp.partner_id, lp.fields, lp.lettered_at).where(lp.code_id == row.id)
        ):
            named[pid], stamps[pid] = bits, at
    again = resumed is not None and stamps.get(partner.id) == resumed
    earlier = {pid: bits for pid, bits in named.items() if pid != partner.id or not again}
    if partner.id in earlier:
        if not options.everyone:
            return None
        kind = AGAIN
    else:
        kind = FIRST if not earlier else FOLLOW_UP
    named[partner.id] = named.get(partner.id, 0) | person.bits
    code_id = None if row is None else int(row.id)
    new_partner = partner.id not in stamps
    return Planned(person_key, hashed, lang, code_id, kind, named, new_partner, person.bits, again)


def _store_chunk(
    conn: Connection, incident: Incident, partner: Partner, chunk: list[Planned], stamp: datetime
) -> None:
    """Stores a chunk's codes, the partner each names (lettered at the run's `stamp`) and
    the code's exposures, in the caller's transaction."""
    for plan in chunk:
        code_id = plan.code_id
        if code_id is None:
            code_id = _insert_code(conn, incident, plan.person_key, plan.hashed, plan.lang)
        _name_partner(conn, code_id, partner, plan.bits, new=plan.new_partner, stamp=stamp)
    db.write_exposures(conn, partner.id, {plan.hashed: plan.bits for plan in chunk})


def _letter(
    code: str,
    lang: str,
    person: Person,
    kind: str,
    named: dict[int, int],
    partners: dict[int, Partner],
    partner: Partner,
    summary: LettersSummary,
) -> Letter:
    if kind == FIRST:
        summary.first += 1
    elif kind == FOLLOW_UP:
        summary.follow_ups += 1
    else:
        summary.again += 1
    # A follow-up names only the new partner; a letter again (--all) every partner named.
    ids = [partner.id] if kind != AGAIN else sorted(named)
    bits = 0
    for pid in ids:
        bits |= named[pid]
    return Letter(
        code, lang, person.postal, kind, [partners[i] for i in ids], fields.from_bits(bits)
    )


def _insert_code(
    conn: Connection, incident: Incident, person_key: bytes, hashed: bytes, lang: str
) -> int:
    inserted = conn.execute(
        tables.letter_codes.insert().values(
            incident_id=incident.id,
            person_key=person_key,
            code_hash=hashed,
            lang=lang,
            created_at=utcnow(),
        )
    ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def _name_partner(
    conn: Connection, code_id: int, partner: Partner, bits: int, *, new: bool, stamp: datetime
) -> None:
    lp = tables.letter_partners
    if new:
        conn.execute(
            lp.insert().values(
                code_id=code_id, partner_id=partner.id, fields=bits, lettered_at=stamp
            )
        )
    else:
        conn.execute(
            lp.update()
            .where(lp.c.code_id == code_id, lp.c.partner_id == partner.id)
            .values(fields=lp.c.fields.op("|")(bits))
        )
