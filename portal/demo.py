"""The demo incident: a synthetic ticketing breach with three partners, made with Faker."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from faker import Faker
from sqlalchemy import Engine, func, select

from portal import tables

DEMO_SLUG = "ticketing-demo"
# Addresses printed by `portal demo`; the first two occur in the data, the last does not.
# park-a leaked a postcode and town only, theater-b a whole postal address: the results
# tell the two apart.
DEMO_ADDRESSES = {
    "demo.alles@example.nl": "occurs at all three partners, with a bank account number",
    "demo.park@example.nl": "occurs at one partner only",
    "niet.getroffen@example.nl": "does not occur: shows the 'not affected' result",
}

INCIDENT_TOML = '''\
slug = "ticketing-demo"
languages = ["nl", "en"]
discovered = 2021-02-22
contact_email = "privacy@ticketing.example"
regulator_notified = true

[title]
nl = "Datalek bij TicketDienst (demo)"
en = "Data breach at TicketDienst (demo)"

[notice]
nl = """
**Dit is een demonstratie met verzonnen gegevens.**

Op 22 februari 2021 ontdekten wij dat een onbevoegde toegang had tot een database van ons
ticketsysteem. Daarin stonden gegevens van klanten van theaters, attractieparken en
omroepen waarvoor wij kaartjes verkopen. Wij hebben de toegang direct afgesloten, alle
wachtwoorden vervangen en de Autoriteit Persoonsgegevens ingelicht.

Vul hierboven uw e-mailadres in. U krijgt een e-mail met een link; daarachter ziet u per
organisatie precies welke gegevens van u zijn gelekt, en wat u kunt doen.
"""
en = """
**This is a demonstration with made-up data.**

On 22 February 2021 we found that someone had unauthorised access to a database of our
ticketing system. It held data of customers of the theatres, amusement parks and
broadcasters we sell tickets for. We closed the access at once, replaced all passwords and
informed the Dutch Data Protection Authority.

Enter your email address above. You will get an email with a link; behind it you see, per
organisation, exactly which of your data leaked, and what you can do.
"""

[[faq]]
question = { nl = "Waarom krijg ik altijd dezelfde melding?", en = "Why do I always get the same message?" }
answer = { nl = "Zo kan niemand via deze pagina uitzoeken of een ander getroffen is. Alleen wie de e-mail ontvangt, ziet het resultaat.", en = "So that nobody can use this page to find out whether someone else is affected. Only whoever receives the email sees the result." }

[[faq]]
question = { nl = "Ik gebruikte meerdere e-mailadressen.", en = "I used several email addresses." }
answer = { nl = "Controleer elk adres apart; wij weten niet welke adressen bij elkaar horen.", en = "Check each address separately; we do not know which addresses belong together." }

[[faq]]
question = { nl = "Moet ik mijn wachtwoord wijzigen?", en = "Should I change my password?" }
answer = { nl = "Ja, als uw resultaat 'wachtwoord' noemt: wijzig het hier en overal waar u het ook gebruikte.", en = "Yes, if your result lists 'password': change it here and everywhere you used it too." }

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
name = "Omroepvereniging C"
contact_email = "ledenadministratie@omroep-c.example"
'''

PARTNER_COLUMNS = {
    "park-a": ["E-mailadres", "Voornaam", "Achternaam", "Telefoon", "Postcode", "Woonplaats"],
    "theater-b": [
        "email",
        "naam",
        "straat",
        "huisnummer",
        "postcode",
        "woonplaats",
        "land",
        "geboortedatum",
        "IBAN",
        "bestellingen",
    ],
    "omroep-c": ["E-mail", "Naam", "Geslacht", "Relatienummer"],
}


def write_demo_files(folder: Path, *, records: int = 2400, seed: int = 2021) -> list[Path]:
    """Writes the incident file and one CSV per partner; returns [incident, *csvs]."""
    fake = Faker("nl_NL")
    Faker.seed(seed)
    rng = random.Random(seed)
    people = [_person(fake, i) for i in range(records)]
    incident = folder / "incident.toml"
    incident.write_text(INCIDENT_TOML, encoding="utf-8")
    paths = [incident]
    for index, (slug, columns) in enumerate(PARTNER_COLUMNS.items()):
        chosen = [p for p in people if rng.random() < 0.45]
        chosen += [_person(fake, -1, "demo.alles@example.nl")]
        if index == 0:
            chosen.append(_person(fake, -2, "demo.park@example.nl"))
        paths.append(_write_csv(folder / f"{slug}.csv", columns, chosen))
    return paths


def _person(fake: Faker, index: int, email: str | None = None) -> dict[str, str]:
    first, last = fake.first_name(), fake.last_name()
    return {
        "email": email or f"{_local(first)}.{_local(last)}.{index}@{fake.safe_domain_name()}",
        "first": first,
        "last": last,
        "phone": fake.phone_number(),
        "street": fake.street_name(),
        "house_number": fake.building_number(),
        "postcode": fake.postcode(),
        "city": fake.city(),
        "country": "Nederland",
        "birth": fake.date_of_birth().isoformat(),
        "iban": fake.iban(),
        "orders": str(fake.random_int(1, 12)),
        "gender": fake.random_element(["M", "V", "X"]),
        "number": str(fake.random_int(100000, 999999)),
    }


def _local(name: str) -> str:
    """A name as it would appear before the @: letters and digits only."""
    return "".join(ch for ch in name.lower() if ch.isascii() and ch.isalnum())


def _write_csv(path: Path, columns: list[str], people: list[dict[str, str]]) -> Path:
    keys = {
        "E-mailadres": "email",
        "email": "email",
        "E-mail": "email",
        "Voornaam": "first",
        "Achternaam": "last",
        "Telefoon": "phone",
        "Postcode": "postcode",
        "Woonplaats": "city",
        "naam": "last",
        "Naam": "last",
        "straat": "street",
        "huisnummer": "house_number",
        "postcode": "postcode",
        "woonplaats": "city",
        "land": "country",
        "geboortedatum": "birth",
        "IBAN": "iban",
        "bestellingen": "orders",
        "Geslacht": "gender",
        "Relatienummer": "number",
    }
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(columns)
        for person in people:
            writer.writerow([person[keys[c]] for c in columns])
    return path


def is_loaded(engine: Engine) -> bool:
    """Whether every demo partner has its records already (so a restart skips hashing)."""
    with engine.connect() as conn:
        loaded = conn.scalar(
            select(func.count(func.distinct(tables.exposures.c.partner_id)))
            .select_from(tables.exposures)
            .join(tables.partners)
            .join(tables.incidents)
            .where(tables.incidents.c.slug == DEMO_SLUG)
        )
    return loaded == len(PARTNER_COLUMNS)
