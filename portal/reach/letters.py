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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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
    dry_run: bool = False
    letters: list[Letter] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """How `portal letters` was asked."""

    bounced: bool = False
    everyone: bool = False  # --all
    key: list[str] | None = None
    dry_run: bool = False


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
    deliver: Callable[[LettersSummary], None] | None = None,
) -> LettersSummary:
    """Reads the file, picks the people to write to, gives each a code and returns the
    letters to print; the codes are stored unless `dry_run`.

    `deliver` (writing the files) runs before the codes are committed: a letter that could
    not be written is not recorded as sent, so running again writes it.
    """
    with engine.begin() as conn:
        found, target = require_partner(conn, incident, partner)
        salt = db.ensure_salt(conn)
        fingerprints.refuse_another(conn, incident_id=found.id, pepper=settings.pepper, salt=salt)
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
    with engine.begin() as conn:
        if not options.dry_run and chosen:
            fingerprints.claim(
                conn, incident_id=found.id, pepper=settings.pepper, salt=salt, params=found.kdf
            )
        _code_each(conn, settings, found, target, chosen, hasher, options, summary)
        if deliver is not None and not options.dry_run:
            deliver(summary)
        if not options.dry_run:
            audit.record(
                conn,
                actor="cli",
                action="letters_made",
                object=f"{found.slug}/{target.slug}",
                detail=f"{len(summary.letters)} letter(s)",
            )
    return summary


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


def _code_each(
    conn: Connection,
    settings: Settings,
    incident: Incident,
    partner: Partner,
    chosen: list[Person],
    hasher: Hasher,
    options: Options,
    summary: LettersSummary,
) -> None:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        keys = list(pool.map(lambda p: hasher("letter-key\0" + p.key), chosen))
    partners = {p.id: p for p in get_partners(conn, incident.id)}
    lang = incident.languages[0]  # a partner's `language` is of the mail to it, not to people
    for person, person_key in zip(chosen, keys, strict=True):
        code = letter_codes.derive(settings.secret_key.encode(), person_key)
        letter = _code_one(
            conn,
            settings,
            incident,
            partner,
            person,
            person_key,
            code,
            lang,
            partners,
            options,
            summary,
        )
        if letter is not None:
            summary.letters.append(letter)


def _code_one(
    conn: Connection,
    settings: Settings,
    incident: Incident,
    partner: Partner,
    person: Person,
    person_key: bytes,
    code: str,
    lang: str,
    partners: dict[int, Partner],
    options: Options,
    summary: LettersSummary,
) -> Letter | None:
    """Stores the person's code and this partner's exposure; the letter it calls for."""
    c, lp = tables.letter_codes.c, tables.letter_partners.c
    hashed = letter_codes.code_hash(settings.pepper, code)
    row = conn.execute(
        select(c.id, c.lang, c.code_hash).where(
            c.incident_id == incident.id, c.person_key == person_key
        )
    ).first()
    named = {}
    if row is not None:
        if bytes(row.code_hash) != hashed:
            raise PortalError(_KEY_CHANGED)
        lang = row.lang
        named = dict(
            conn.execute(select(lp.partner_id, lp.fields).where(lp.code_id == row.id)).all()
        )
    if partner.id in named:
        if not options.everyone:
            summary.already += 1
            return None
        kind = AGAIN
    else:
        kind = FIRST if not named else FOLLOW_UP
    if not options.dry_run:
        code_id = (
            row.id if row is not None else _insert_code(conn, incident, person_key, hashed, lang)
        )
        _name_partner(conn, code_id, partner, person.bits, new=partner.id not in named)
        db.write_exposures(conn, partner.id, {hashed: person.bits})
    named[partner.id] = named.get(partner.id, 0) | person.bits
    return _letter(code, lang, person, kind, named, partners, partner, summary)


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
    conn: Connection, code_id: int, partner: Partner, bits: int, *, new: bool
) -> None:
    lp = tables.letter_partners
    if new:
        conn.execute(
            lp.insert().values(
                code_id=code_id, partner_id=partner.id, fields=bits, lettered_at=utcnow()
            )
        )
    else:
        conn.execute(
            lp.update()
            .where(lp.c.code_id == code_id, lp.c.partner_id == partner.id)
            .values(fields=lp.c.fields.op("|")(bits))
        )
