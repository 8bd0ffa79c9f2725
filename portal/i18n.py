"""The page chrome in Dutch and English, and choosing a visitor's language."""

from __future__ import annotations

SUPPORTED = ("nl", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "skip": {"nl": "Naar de inhoud", "en": "Skip to content"},
    "language": {"nl": "Taal", "en": "Language"},
    "incidents": {"nl": "Datalekken", "en": "Data breaches"},
    "no_incidents": {
        "nl": "Er is nog geen datalek beschreven.",
        "en": "No data breach has been described yet.",
    },
    "discovered": {"nl": "Ontdekt op", "en": "Discovered on"},
    "regulator_yes": {
        "nl": "Wij hebben het datalek gemeld bij de Autoriteit Persoonsgegevens.",
        "en": "We have reported the breach to the Dutch Data Protection Authority.",
    },
    "regulator_no": {
        "nl": "Dit datalek is (nog) niet gemeld bij de Autoriteit Persoonsgegevens.",
        "en": "This breach has not (yet) been reported to the Dutch Data Protection Authority.",
    },
    "check_title": {"nl": "Ben ik getroffen?", "en": "Am I affected?"},
    "check_intro": {
        "nl": "Vul uw e-mailadres in. U krijgt een e-mail met een persoonlijke link. Achter "
        "die link ziet u per organisatie welke gegevens van u zijn gelekt. Gebruikte u "
        "meerdere adressen? Controleer ze dan allemaal.",
        "en": "Enter your email address. You will get an email with a personal link. Behind "
        "that link you see, per organisation, which of your data leaked. Did you use "
        "several addresses? Then check each of them.",
    },
    "email_label": {"nl": "E-mailadres", "en": "Email address"},
    "send_link": {"nl": "Stuur mij de link", "en": "Send me the link"},
    "privacy_note": {
        "nl": "Wij bewaren uw e-mailadres niet: het wordt alleen gebruikt om deze e-mail te "
        "sturen.",
        "en": "We do not keep your email address: it is used only to send this email.",
    },
    "email_missing": {"nl": "Vul een e-mailadres in.", "en": "Enter an email address."},
    "email_control": {
        "nl": "Het adres bevat onzichtbare stuurtekens.",
        "en": "The address contains control characters.",
    },
    "email_too_long": {
        "nl": "Het adres is langer dan 254 tekens.",
        "en": "The address is longer than 254 characters.",
    },
    "email_local_too_long": {
        "nl": "Het deel vóór de @ is langer dan 64 tekens.",
        "en": "The part before the @ is longer than 64 characters.",
    },
    "email_not_ascii": {
        "nl": "Letters met accenten of andere bijzondere tekens vóór de @ worden niet ondersteund.",
        "en": "Letters with accents or other special characters before the @ are not supported.",
    },
    "email_mixed_script": {
        "nl": "Het domein mengt alfabetten, zoals nagemaakte domeinen doen.",
        "en": "The domain mixes alphabets, as look-alike domains do.",
    },
    "email_lookalike": {
        "nl": "Het domein bootst een ander domein na met letters die erop lijken.",
        "en": "The domain imitates another one with look-alike letters.",
    },
    "email_invalid": {
        "nl": "Dit is geen geldig e-mailadres.",
        "en": "This is not a valid email address.",
    },
    "faq": {"nl": "Veelgestelde vragen", "en": "Frequently asked questions"},
    "contact": {"nl": "Vragen? Mail ons op", "en": "Questions? Email us at"},
    "sent_title": {"nl": "Kijk in uw mailbox", "en": "Check your inbox"},
    "sent_body": {
        "nl": "Als dit adres bij ons bekend is of niet: u krijgt binnen enkele minuten een "
        "e-mail met een persoonlijke link. Die link werkt één keer en is {minutes} minuten "
        "geldig. Geen e-mail? Kijk in uw spammap of probeer het later opnieuw.",
        "en": "Whether or not we know this address, you will get an email with a personal link "
        "within a few minutes. The link works once and is valid for {minutes} minutes. No "
        "email? Check your spam folder or try again later.",
    },
    "back": {"nl": "Terug naar de informatiepagina", "en": "Back to the information page"},
    "confirm_title": {"nl": "Bekijk uw resultaat", "en": "See your result"},
    "confirm_body": {
        "nl": "Klik op de knop om te zien welke gegevens van u zijn gelekt. De link werkt "
        "daarna niet meer.",
        "en": "Press the button to see which of your data leaked. The link will not work "
        "again afterwards.",
    },
    "confirm_button": {"nl": "Toon mijn resultaat", "en": "Show my result"},
    "link_invalid_title": {"nl": "Deze link werkt niet", "en": "This link does not work"},
    "link_invalid": {
        "nl": "Deze link is ongeldig. Misschien is hij niet helemaal gekopieerd.",
        "en": "This link is not valid. Perhaps it was not copied completely.",
    },
    "link_expired": {
        "nl": "Deze link is verlopen. Vraag hieronder een nieuwe aan.",
        "en": "This link has expired. Ask for a new one below.",
    },
    "link_used": {
        "nl": "Deze link is al gebruikt. Een link werkt één keer; vraag een nieuwe aan.",
        "en": "This link has been used already. A link works once; ask for a new one.",
    },
    "new_link": {"nl": "Vraag een nieuwe link aan", "en": "Ask for a new link"},
    "results_title": {"nl": "Uw resultaat", "en": "Your result"},
    "not_affected": {
        "nl": "Uw e-mailadres komt niet voor in de gelekte gegevens van dit datalek. Gebruikte "
        "u bij deze organisaties een ander adres? Controleer dat dan ook.",
        "en": "Your email address does not occur in the leaked data of this breach. Did you "
        "use another address with these organisations? Then check that one too.",
    },
    "affected_intro": {
        "nl": "Uw e-mailadres komt voor in de gelekte gegevens van {count} organisatie(s). Per "
        "organisatie ziet u welke gegevens van u zijn gelekt.",
        "en": "Your email address occurs in the leaked data of {count} organisation(s). For "
        "each one you see which of your data leaked.",
    },
    "exposed_at": {"nl": "Gelekt bij {name}", "en": "Leaked at {name}"},
    "what_to_do": {"nl": "Wat kunt u doen?", "en": "What can you do?"},
    "delete_title": {"nl": "Gegevens laten verwijderen", "en": "Have your data deleted"},
    "delete_body": {
        "nl": "U kunt {name} vragen uw gegevens te verwijderen (AVG artikel 17). Wij sturen "
        "uw verzoek door; {name} moet binnen een maand reageren.",
        "en": "You can ask {name} to delete your data (GDPR Article 17). We forward your "
        "request; {name} must answer within one month.",
    },
    "delete_button": {
        "nl": "Vraag {name} mijn gegevens te verwijderen",
        "en": "Ask {name} to delete my data",
    },
    "delete_all_button": {
        "nl": "Vraag alle organisaties mijn gegevens te verwijderen",
        "en": "Ask every organisation to delete my data",
    },
    "deletion_requested": {
        "nl": "Verwijderverzoek {reference}: {status}. Uiterlijk antwoord op {due}.",
        "en": "Deletion request {reference}: {status}. Answer due by {due}.",
    },
    "status_received": {"nl": "ontvangen", "en": "received"},
    "status_forwarded": {"nl": "doorgestuurd", "en": "forwarded"},
    "status_forward_failed": {"nl": "wordt opnieuw doorgestuurd", "en": "being forwarded again"},
    "status_completed": {"nl": "uitgevoerd", "en": "completed"},
    "status_rejected": {"nl": "afgewezen", "en": "rejected"},
    "ground_legal_obligation": {
        "nl": "een wettelijke plicht om de gegevens te bewaren (AVG art. 17 lid 3 onder b), "
        "zoals de fiscale bewaarplicht van 7 jaar",
        "en": "a legal obligation to keep the data (GDPR Art. 17(3)(b)), such as the "
        "7-year tax retention duty",
    },
    "ground_legal_claims": {
        "nl": "de gegevens zijn nodig voor een rechtsvordering (AVG art. 17 lid 3 onder e)",
        "en": "the data are needed for legal claims (GDPR Art. 17(3)(e))",
    },
    "ground_public_interest": {
        "nl": "een taak van algemeen belang (AVG art. 17 lid 3 onder b en d)",
        "en": "a task in the public interest (GDPR Art. 17(3)(b) and (d))",
    },
    "ground_other": {
        "nl": "een andere grond, hieronder uitgelegd",
        "en": "another ground, explained below",
    },
    "deletion_received_on": {"nl": "Ontvangen op {date}.", "en": "Received on {date}."},
    "deletion_extended": {
        "nl": "De termijn is verlengd tot {due}. De reden: {reason}",
        "en": "The deadline was extended to {due}. The reason: {reason}",
    },
    "deletion_closed_on": {"nl": "Afgehandeld op {date}.", "en": "Handled on {date}."},
    "deletion_ground": {"nl": "De grond: {ground}.", "en": "The ground: {ground}."},
    "deletion_complain": {
        "nl": "Bent u het er niet mee eens? U kunt een klacht indienen bij de Autoriteit "
        "Persoonsgegevens (autoriteitpersoonsgegevens.nl).",
        "en": "Do you disagree? You may complain to the Dutch Data Protection Authority, the "
        "Autoriteit Persoonsgegevens (autoriteitpersoonsgegevens.nl).",
    },
    "partner_title": {
        "nl": "Verzoek tot verwijdering {reference}",
        "en": "Erasure request {reference}",
    },
    "partner_intro": {
        "nl": "Een persoon vraagt {name} om verwijdering van zijn of haar gegevens (AVG artikel "
        "17). Het adres is geverifieerd met een eenmalige link naar dat adres.",
        "en": "A person asks {name} to erase their data (GDPR Article 17). The address was "
        "verified by a single-use link sent to it.",
    },
    "partner_reference_label": {"nl": "Referentie", "en": "Reference"},
    "partner_address": {"nl": "Adres van de persoon", "en": "Person's address"},
    "partner_address_erased": {
        "nl": "gewist na afloop van de bewaartermijn",
        "en": "erased after the retention period",
    },
    "partner_verified": {"nl": "Geverifieerd op", "en": "Verified on"},
    "partner_received": {"nl": "Ontvangen", "en": "Received"},
    "partner_due": {"nl": "Uiterlijk antwoord", "en": "Answer due"},
    "partner_status": {"nl": "Status", "en": "Status"},
    "partner_fields": {"nl": "Gelekte gegevens bij {name}", "en": "Data exposed at {name}"},
    "partner_report": {"nl": "Resultaat melden", "en": "Report the outcome"},
    "partner_outcome": {"nl": "Resultaat", "en": "Outcome"},
    "partner_outcome_completed": {
        "nl": "Uitgevoerd: de gegevens zijn verwijderd",
        "en": "Completed: the data have been erased",
    },
    "partner_outcome_rejected": {
        "nl": "Afgewezen: (een deel van) de gegevens wordt bewaard",
        "en": "Rejected: (some of) the data are kept",
    },
    "partner_ground": {
        "nl": "Grond (verplicht bij afwijzing)",
        "en": "Ground (required to reject)",
    },
    "partner_ground_none": {"nl": "geen", "en": "none"},
    "partner_reason": {
        "nl": "Toelichting voor de persoon (verplicht bij afwijzing)",
        "en": "Explanation for the person (required to reject)",
    },
    "partner_kept": {
        "nl": "Gegevens die u bewaart (bij afwijzing)",
        "en": "Data you keep (when rejecting)",
    },
    "partner_own_reference": {
        "nl": "Uw eigen referentie (optioneel)",
        "en": "Your own reference (optional)",
    },
    "partner_submit": {"nl": "Resultaat versturen", "en": "Send the outcome"},
    "partner_closed": {
        "nl": "Dit verzoek is afgehandeld op {date}: {status}.",
        "en": "This request was handled on {date}: {status}.",
    },
    "partner_refused_title": {"nl": "Niet verwerkt", "en": "Not accepted"},
    "partner_back": {"nl": "Terug naar het verzoek", "en": "Back to the request"},
    "partner_link_closed": {
        "nl": "Deze link werkt niet meer: het verzoek is langer dan 30 dagen geleden afgehandeld.",
        "en": "This link no longer works: the request was handled more than 30 days ago.",
    },
    "session_note": {
        "nl": "Deze pagina is {minutes} minuten zichtbaar. Daarna vraagt u een nieuwe link aan.",
        "en": "This page stays visible for {minutes} minutes. After that, ask for a new link.",
    },
    "error_title": {"nl": "Er ging iets mis", "en": "Something went wrong"},
    "error_400": {"nl": "Het verzoek klopte niet.", "en": "The request was not valid."},
    "error_403": {
        "nl": "Het formulier is verlopen. Ga terug, laad de pagina opnieuw en probeer het nog "
        "eens.",
        "en": "The form has expired. Go back, reload the page and try again.",
    },
    "error_404": {"nl": "Deze pagina bestaat niet.", "en": "This page does not exist."},
    "error_405": {"nl": "Dat kan op deze pagina niet.", "en": "That is not possible on this page."},
    "error_413": {"nl": "Het verzoek is te groot.", "en": "The request is too large."},
    "error_415": {
        "nl": "Dit soort gegevens nemen wij niet aan.",
        "en": "We do not accept this kind of content.",
    },
    "error_429": {
        "nl": "Dat waren te veel pogingen. Wacht even en probeer het dan opnieuw.",
        "en": "Too many attempts. Please wait a while and try again.",
    },
    "error_500": {
        "nl": "Er ging bij ons iets mis. Probeer het later opnieuw.",
        "en": "Something went wrong on our side. Please try again later.",
    },
    "error_503": {
        "nl": "De dienst is even niet beschikbaar.",
        "en": "The service is unavailable for a moment.",
    },
}


def translate(key: str, lang: str, **values: object) -> str:
    """The message in `lang` (English when missing), with `{name}` placeholders filled."""
    texts = MESSAGES[key]
    text = texts.get(lang) or texts["en"]
    return text.format(**values) if values else text


def choose_language(
    available: list[str], *, query: str | None, cookie: str | None, accept: str | None
) -> str:
    """The query's choice, else the cookie's, else the browser's, else the first available."""
    for wanted in (query, cookie):
        if wanted in available:
            return wanted
    for code in _accepted(accept or ""):
        if code in available:
            return code
    return available[0]


def _accepted(header: str) -> list[str]:
    """Accept-Language codes by preference (q), leaving out those with q=0."""
    ranked = []
    for position, part in enumerate(header.split(",")):
        code, _, params = part.strip().partition(";")
        try:
            quality = float(params.strip().removeprefix("q=")) if params else 1.0
        except ValueError:
            quality = 0.0
        if quality > 0 and code:
            ranked.append((-quality, position, code.strip().lower()[:2]))
    return [code for *_, code in sorted(ranked)]
