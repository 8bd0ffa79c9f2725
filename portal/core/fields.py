"""The field vocabulary: stable keys, bit positions, labels, advice, severity, CSV names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Severity: 3 = act now (money, identity), 2 = be on guard, 1 = good to know.
HIGH, MEDIUM, LOW = 3, 2, 1


@dataclass(frozen=True)
class Field:
    key: str
    bit: int  # stable forever: the exposures table stores a bit set of these
    severity: int
    label: dict[str, str]
    advice: dict[str, str]
    columns: tuple[str, ...] = ()


FIELDS: tuple[Field, ...] = (
    Field(
        "email",
        0,
        MEDIUM,
        {"nl": "E-mailadres", "en": "Email address"},
        {
            "nl": "Verwacht phishing: mails die dringend om een betaling, inlog of bevestiging "
            "vragen. Klik niet op links in onverwachte mails; ga zelf naar de website.",
            "en": "Expect phishing: messages urging you to pay, log in or confirm something. "
            "Do not click links in unexpected mail; go to the website yourself.",
        },
        ("email", "e-mail", "emailadres", "e-mailadres", "mailadres", "email address", "mail"),
    ),
    Field(
        "name",
        1,
        LOW,
        {"nl": "Naam", "en": "Name"},
        {
            "nl": "Oplichters kunnen u met uw naam aanspreken om betrouwbaar over te komen. "
            "Een bericht dat uw naam kent, is daarom nog niet echt.",
            "en": "Fraudsters may address you by name to seem trustworthy. A message that "
            "knows your name is not genuine for that reason alone.",
        },
        (
            "naam",
            "voornaam",
            "achternaam",
            "tussenvoegsel",
            "voorletters",
            "name",
            "first name",
            "last name",
            "full name",
        ),
    ),
    Field(
        "gender",
        2,
        LOW,
        {"nl": "Geslacht of aanhef", "en": "Gender or salutation"},
        {
            "nl": "Op zichzelf weinig risico; samen met andere gegevens maakt het phishing "
            "overtuigender.",
            "en": "Little risk on its own; together with other data it makes phishing more "
            "convincing.",
        },
        ("geslacht", "aanhef", "gender", "sex", "salutation"),
    ),
    Field(
        "birth_date",
        3,
        MEDIUM,
        {"nl": "Geboortedatum", "en": "Date of birth"},
        {
            "nl": "Gebruik uw geboortedatum nergens als wachtwoord of controlevraag. "
            "Wees alert als iemand die als bewijs van uw identiteit noemt.",
            "en": "Never use your date of birth as a password or security answer. Be wary "
            "when someone offers it as proof of who they are.",
        },
        ("geboortedatum", "date of birth", "birthdate", "dob"),
    ),
    Field(
        "phone",
        4,
        MEDIUM,
        {"nl": "Telefoonnummer", "en": "Phone number"},
        {
            "nl": "Verwacht nepsms'jes en nepbellers (ook 'uw bank' of 'een familielid met een "
            "nieuw nummer'). Maak nooit geld over na alleen een bericht of telefoontje.",
            "en": "Expect fake texts and callers (also 'your bank' or 'a relative with a new "
            "number'). Never transfer money on the strength of a message or call alone.",
        },
        (
            "telefoon",
            "telefoonnummer",
            "mobiel",
            "mobiel nummer",
            "phone",
            "telephone",
            "mobile",
            "phone number",
        ),
    ),
    Field(
        "address",
        5,
        MEDIUM,
        {"nl": "Adres", "en": "Postal address"},
        {
            "nl": "Wees alert op brieven en mensen aan de deur die zich voordoen als bank, "
            "energiebedrijf of overheid. Controleer een afzender via een nummer dat u zelf "
            "opzoekt.",
            "en": "Beware of letters and doorstep callers posing as your bank, utility or a "
            "government office. Check any sender through a number you look up yourself.",
        },
        (
            "adres",
            "straat",
            "straatnaam",
            "huisnummer",
            "toevoeging",
            "address",
            "street",
            "house number",
        ),
    ),
    # A postcode, town or country alone is not "your address": each says less, and its own
    # advice says what it does allow.
    Field(
        "postcode",
        17,
        LOW,
        {"nl": "Postcode", "en": "Postcode"},
        {
            "nl": "Uw postcode verraadt uw buurt, en met uw naam komt een brief of bericht "
            "geloofwaardiger over. Controleer een afzender altijd via een nummer dat u zelf "
            "opzoekt.",
            "en": "Your postcode gives away your neighbourhood, and with your name it makes a "
            "letter or message more convincing. Always check a sender through a number you "
            "look up yourself.",
        },
        ("postcode", "zip", "zip code", "postal code"),
    ),
    Field(
        "city",
        18,
        LOW,
        {"nl": "Woonplaats", "en": "Town or city"},
        {
            "nl": "Oplichters kunnen uw woonplaats noemen om vertrouwd over te komen, "
            "bijvoorbeeld als 'de gemeente' of een bedrijf uit de buurt. Dat iemand weet waar u "
            "woont, bewijst niet wie hij is.",
            "en": "Fraudsters may mention your town to seem familiar, for instance posing as "
            "the council or a local business. Knowing where you live does not prove who they "
            "are.",
        },
        ("woonplaats", "plaats", "stad", "city", "town"),
    ),
    Field(
        "country",
        19,
        LOW,
        {"nl": "Land", "en": "Country"},
        {
            "nl": "Op zichzelf weinig risico. Wees wel alert op berichten die zich voordoen "
            "als een instantie uit uw land, zoals de Belastingdienst of de politie.",
            "en": "Little risk on its own. Do be wary of messages posing as an authority of "
            "your country, such as the tax office or the police.",
        },
        ("land", "country"),
    ),
    Field(
        "iban",
        6,
        HIGH,
        {"nl": "Bankrekeningnummer (IBAN)", "en": "Bank account number (IBAN)"},
        {
            "nl": "Pas op voor bellers die zich voordoen als uw bank: een bank vraagt nooit om "
            "codes, pincode of om geld over te maken naar een 'veilige rekening'. Controleer "
            "afschrijvingen en incasso's en laat onbekende incasso's terugboeken.",
            "en": "Beware of callers posing as your bank: a bank never asks for codes, your "
            "PIN or to move money to a 'safe account'. Check your statements and direct "
            "debits and reverse any you do not recognise.",
        },
        ("iban", "rekeningnummer", "bankrekeningnummer", "bank account"),
    ),
    Field(
        "password_hash",
        7,
        HIGH,
        {"nl": "Wachtwoord (versleuteld)", "en": "Password (hashed)"},
        {
            "nl": "Wijzig dit wachtwoord nu, en overal waar u hetzelfde wachtwoord gebruikte. "
            "Zet tweestapsverificatie aan waar dat kan.",
            "en": "Change this password now, and everywhere you reused it. Turn on two-step "
            "verification where you can.",
        },
        ("wachtwoord", "password", "password hash"),
    ),
    Field(
        "order_history",
        8,
        LOW,
        {"nl": "Bestelgeschiedenis", "en": "Order history"},
        {
            "nl": "Oplichters kunnen naar echte bestellingen verwijzen. Betaal niet na een "
            "bericht over een 'openstaande' bestelling zonder het zelf na te gaan.",
            "en": "Fraudsters may refer to real orders. Do not pay after a message about an "
            "'outstanding' order without checking it yourself.",
        },
        ("bestellingen", "orders", "order history"),
    ),
    Field(
        "customer_number",
        9,
        LOW,
        {"nl": "Klant- of lidnummer", "en": "Customer or member number"},
        {
            "nl": "Een bericht dat uw klantnummer noemt, is daardoor nog niet echt.",
            "en": "A message that quotes your customer number is not genuine for that reason "
            "alone.",
        },
        (
            "klantnummer",
            "relatienummer",
            "lidnummer",
            "abonnementsnummer",
            "customer number",
            "member number",
        ),
    ),
    Field(
        "ip_address",
        10,
        LOW,
        {"nl": "IP-adres", "en": "IP address"},
        {
            "nl": "Hieruit is uw globale locatie of provider af te leiden. Meestal hoeft u "
            "niets te doen.",
            "en": "It can reveal your rough location or provider. Usually there is nothing "
            "you need to do.",
        },
        ("ip", "ip-adres", "ip address"),
    ),
    Field(
        "username",
        11,
        MEDIUM,
        {"nl": "Gebruikersnaam", "en": "Username"},
        {
            "nl": "Gebruikt u deze gebruikersnaam elders, wijzig daar dan ook uw wachtwoord en "
            "zet tweestapsverificatie aan.",
            "en": "If you use this username elsewhere, change your password there too and turn "
            "on two-step verification.",
        },
        ("gebruikersnaam", "username", "login"),
    ),
    Field(
        "security_questions",
        12,
        HIGH,
        {"nl": "Beveiligingsvragen", "en": "Security questions"},
        {
            "nl": "Verander uw beveiligingsvragen en -antwoorden overal waar u dezelfde "
            "gebruikt; kies antwoorden die niet te raden zijn.",
            "en": "Change your security questions and answers wherever you used the same ones; "
            "choose answers nobody can guess.",
        },
        ("beveiligingsvragen", "security questions", "security question"),
    ),
    Field(
        "credit_card",
        13,
        HIGH,
        {"nl": "Creditcardgegevens", "en": "Credit card details"},
        {
            "nl": "Laat uw kaart blokkeren en vervangen via het nummer op de achterkant, en "
            "controleer uw afschriften op onbekende betalingen.",
            "en": "Have your card blocked and replaced through the number on its back, and "
            "check your statements for payments you do not recognise.",
        },
        ("creditcard", "creditcardnummer", "credit card", "card number"),
    ),
    Field(
        "national_id",
        14,
        HIGH,
        {"nl": "Burgerservicenummer (BSN)", "en": "National ID number (BSN)"},
        {
            "nl": "Wees alert op identiteitsfraude. Neem bij misbruik contact op met het "
            "Centraal Meldpunt Identiteitsfraude en doe aangifte bij de politie.",
            "en": "Watch for identity fraud. If it is misused, contact the Dutch central "
            "identity fraud desk (CMI) and report it to the police.",
        },
        ("bsn", "burgerservicenummer", "national id", "social security number"),
    ),
    Field(
        "health_data",
        15,
        HIGH,
        {"nl": "Gezondheidsgegevens", "en": "Health data"},
        {
            "nl": "Dit zijn bijzondere persoonsgegevens. Wees alert op chantage of berichten "
            "die ernaar verwijzen, en ga er niet op in: neem contact op met ons en de politie.",
            "en": "This is special-category data. Be alert to blackmail or messages that refer "
            "to it and do not engage: contact us and the police.",
        },
        ("gezondheid", "medisch", "health", "health data", "medical"),
    ),
    Field(
        "photo",
        16,
        MEDIUM,
        {"nl": "Foto", "en": "Photo"},
        {
            "nl": "Een foto kan worden misbruikt voor nepprofielen. Zoek af en toe op uw naam "
            "en meld nepprofielen bij het platform.",
            "en": "A photo can be misused for fake profiles. Search for your name now and then "
            "and report fake profiles to the platform.",
        },
        ("foto", "pasfoto", "photo", "picture"),
    ),
)

BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}


def squash(column: str) -> str:
    """A column name compared ignoring case, spaces, hyphens, underscores and dots."""
    return re.sub(r"[\s\-_.]+", "", column.strip().lower())


COLUMN_INDEX: dict[str, str] = {squash(name): f.key for f in FIELDS for name in (*f.columns, f.key)}


def field_for_column(column: str) -> str | None:
    """The field key a CSV column name maps to by the built-in vocabulary, if any."""
    return COLUMN_INDEX.get(squash(column))


def to_bits(keys: Iterable[str]) -> int:
    bits = 0
    for key in keys:
        bits |= 1 << BY_KEY[key].bit
    return bits


def from_bits(bits: int) -> list[Field]:
    """The fields in a bit set, most serious first (then in vocabulary order)."""
    found = [f for f in FIELDS if bits & (1 << f.bit)]
    return sorted(found, key=lambda f: -f.severity)
