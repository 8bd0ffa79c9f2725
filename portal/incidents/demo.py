"""The demo incident: a synthetic ticketing breach with three partners, made with Faker."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select

from portal.core.config import Settings
from portal.incidents.importer import ImportSummary, Progress, import_csv
from portal.incidents.stored import load_incident_file
from portal.store import tables

if TYPE_CHECKING:
    from faker import Faker

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
organisation = "TicketDienst B.V. (demo)"
website = "https://www.ticketdienst.example/datalek"
languages = ["nl", "en"]
discovered = 2021-02-22
contact_email = "privacy@ticketing.example"
regulator_notified = true

[title]
nl = "Datalek bij TicketDienst (demo)"
en = "Data breach at TicketDienst (demo)"

[notice]
nl = """
**Dit is een demonstratie. Alle namen, adressen en gegevens zijn verzonnen.**

TicketDienst verkoopt kaartjes namens theaters, attractieparken en omroepverenigingen. Op
maandag 22 februari 2021 zag ons beveiligingsteam ongewoon veel verkeer naar een
testomgeving van het klantensysteem. Die omgeving had per vergissing een kopie van echte
klantgegevens en was via internet bereikbaar zonder wachtwoord. Uit de logbestanden blijkt
dat een onbekende tussen 14 en 22 februari een deel van die kopie heeft gedownload.
"""
en = """
**This is a demonstration. All names, addresses and data are made up.**

TicketDienst sells tickets on behalf of theatres, amusement parks and broadcasting
associations. On Monday 22 February 2021 our security team noticed unusual traffic to a test
environment of the customer system. By mistake, that environment held a copy of real
customer data and could be reached from the internet without a password. The logs show that
someone unknown downloaded part of that copy between 14 and 22 February.
"""

[which_data]
nl = "Wat er van u in de kopie stond, hangt af van de organisatie waar u kaartjes kocht of lid bent: altijd uw e-mailadres, meestal uw naam, en soms uw telefoonnummer, adres, geboortedatum, bankrekeningnummer of bestelgeschiedenis. Wachtwoorden en creditcardgegevens stonden niet in de kopie."
en = "What the copy held about you depends on the organisation where you bought tickets or are a member: always your email address, usually your name, and sometimes your phone number, address, date of birth, bank account number or order history. Passwords and credit card details were not in the copy."

[consequences]
nl = "Wij hebben geen aanwijzingen dat de gegevens al zijn misbruikt. Wie ze heeft, kan u wel berichten sturen die echt lijken: een mail over een 'terugbetaling' van een voorstelling, een sms over een 'openstaande' bestelling, of een telefoontje van iemand die zegt van uw bank te zijn en uw rekeningnummer al weet."
en = "We have no sign that the data have been misused yet. Whoever holds them can, however, send you messages that look genuine: an email about a 'refund' for a show, a text about an 'outstanding' order, or a call from someone who claims to be your bank and already knows your account number."

[measures]
nl = "Wij hebben de testomgeving dezelfde dag offline gehaald en alle kopieën van echte gegevens uit testomgevingen verwijderd. Een extern beveiligingsbedrijf onderzoekt hoe dit kon gebeuren; testomgevingen krijgen voortaan alleen nog verzonnen gegevens. Wij hebben aangifte gedaan bij de politie en het lek op 23 februari gemeld bij de Autoriteit Persoonsgegevens."
en = "We took the test environment offline the same day and removed every copy of real data from test environments. An outside security firm is investigating how this could happen; from now on test environments only get made-up data. We have reported the crime to the police and reported the breach to the Dutch Data Protection Authority on 23 February."

[advice]
nl = "Krijgt u een bericht over kaartjes, een terugbetaling of uw lidmaatschap dat u niet verwacht? Klik niet op de link, maar ga zelf naar de website van de organisatie. TicketDienst en de organisaties hieronder vragen u nooit per mail of telefoon om uw wachtwoord, een betaling of een kopie van uw identiteitsbewijs."
en = "Do you get a message about tickets, a refund or your membership that you did not expect? Do not click the link; go to the organisation's website yourself. TicketDienst and the organisations below never ask you by email or phone for your password, a payment or a copy of your ID."

[[faq]]
question = { nl = "Waarom zegt de pagina altijd 'kijk in uw mailbox'?", en = "Why does the page always say 'check your inbox'?" }
answer = { nl = "Zo kan niemand met deze pagina uitzoeken of iemand anders in de gegevens staat. Alleen wie de e-mail op dat adres ontvangt, ziet het resultaat.", en = "So that nobody can use this page to find out whether someone else is in the data. Only whoever receives the email at that address sees the result." }

[[faq]]
question = { nl = "Ik heb meerdere e-mailadressen gebruikt.", en = "I have used several email addresses." }
answer = { nl = "Controleer elk adres apart. Wij weten niet welke adressen bij dezelfde persoon horen.", en = "Check each address separately. We do not know which addresses belong to the same person." }

[[faq]]
question = { nl = "Moet ik mijn wachtwoord wijzigen?", en = "Should I change my password?" }
answer = { nl = "Wachtwoorden stonden niet in de kopie. Gebruikt u hetzelfde wachtwoord op veel plaatsen? Dan is dit een goed moment om dat te veranderen.", en = "Passwords were not in the copy. Do you use the same password in many places? Then this is a good moment to change that." }

[[faq]]
question = { nl = "Kan ik mijn gegevens laten verwijderen?", en = "Can I have my data deleted?" }
answer = { nl = "Ja. Op uw resultaatpagina kunt u elke organisatie vragen uw gegevens te verwijderen. U krijgt een ontvangstbevestiging en binnen een maand antwoord.", en = "Yes. On your result page you can ask each organisation to delete your data. You get a receipt, and an answer within a month." }

[[partners]]
slug = "park-a"
name = "Attractiepark A"
contact_email = "privacy@park-a.example"
language = "nl"

[[partners]]
slug = "theater-b"
name = "Theater B"
contact_email = "privacy@theater-b.example"
language = "nl"

[[partners]]
slug = "omroep-c"
name = "Omroepvereniging C"
contact_email = "ledenadministratie@omroep-c.example"
language = "nl"
certainty = "possible"  # its member list was only partly in the copy
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
    from faker import Faker  # here: only `portal demo` needs it, and it takes 0.1 s to load

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


def load_demo(
    engine: Engine,
    settings: Settings,
    folder: Path,
    *,
    records: int,
    progress: Callable[[Path], AbstractContextManager[Progress]],
) -> dict[str, ImportSummary] | None:
    """Loads the demo incident and imports each partner's file, with `progress(file)` shown
    per import; None when its records were imported before (the incident is updated)."""
    files = write_demo_files(folder, records=records)
    load_incident_file(engine, files[0])
    if is_loaded(engine):
        return None
    imported = {}
    for path in files[1:]:
        with progress(path) as update:
            imported[path.stem] = import_csv(
                engine, settings, incident=DEMO_SLUG, partner=path.stem, path=path, progress=update
            )
    return imported
