"""Translations: the gettext catalogues, dates and numbers per language, choosing a language.

The catalogues are `portal/locale/{nl,en}/LC_MESSAGES/messages.po`, extracted from the
templates and the code with `pybabel` (CONTRIBUTING.md). They are compiled in memory the
first time a language is used: installing the package needs no build step, and a .po file
edited by hand is what runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

from babel.dates import format_date as babel_format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

SUPPORTED = ("nl", "en")
# The locale whose conventions a language's dates and numbers follow: "22 February 2021".
LOCALES = {"nl": "nl_NL", "en": "en_GB"}
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"


def N_(message: str) -> str:
    """Marks a message for extraction; it is translated where it is shown."""
    return message


@lru_cache(maxsize=len(SUPPORTED))
def translations(lang: str) -> NullTranslations:
    """The catalogue of `lang`, compiled from its .po file; the source text when missing."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang not in SUPPORTED or not path.is_file():
        return NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=lang, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def gettext(lang: str, message: str, **values: object) -> str:
    """The message in `lang`, with `%(name)s` placeholders filled."""
    text = translations(lang).gettext(message)
    return fill(text, values) if values else text


def fill(text: str, values: dict[str, Any]) -> str:
    """`text % values`, without a second full stop after a value that ends with one.

    A sentence that ends on a name ("Published by %(org)s.") would otherwise read
    "Published by TicketHub Nederland B.V.." for an organisation whose name ends in "B.V.".
    """
    for name, value in values.items():
        if isinstance(value, str) and value.endswith("."):
            # Markup.replace keeps a catalogue text Markup (it escapes only its arguments).
            text = text.replace(f"%({name})s.", f"%({name})s")
    return text % values


def format_date(value: date | datetime, lang: str) -> str:
    """A date as people write it: "22 februari 2021", "22 February 2021"."""
    day = value.date() if isinstance(value, datetime) else value
    return babel_format_date(day, format="long", locale=LOCALES.get(lang, LOCALES["en"]))


def format_number(value: int | float, lang: str) -> str:
    """A number with the language's grouping: "1.900.000", "1,900,000"."""
    return format_decimal(value, locale=LOCALES.get(lang, LOCALES["en"]))


def template_context(lang: str) -> dict[str, Any]:
    """What a template needs to speak `lang`: gettext for `{% trans %}` and `_()`, dates."""
    catalogue = translations(lang)
    return {
        "lang": lang,
        "gettext": _jinja_gettext(catalogue.gettext),
        "ngettext": _jinja_ngettext(catalogue.ngettext),
        "date": lambda value: format_date(value, lang),
        "number": lambda value: format_number(value, lang),
    }


# Jinja's "new style" gettext: the template passes its variables as keywords and gets the
# text back formatted, escaped as the template is (jinja2.ext does the same for the
# callables it installs; these are per render, so one environment serves every language).


def _jinja_gettext(translate: Callable[[str], str]) -> Callable[..., str]:
    @pass_context
    def gettext(context: Context, message: str, **values: Any) -> str:
        text: str = translate(message)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 (a catalogue text; values are escaped by %)
        return fill(text, values)

    return gettext


def _jinja_ngettext(translate: Callable[[str, str, int], str]) -> Callable[..., str]:
    @pass_context
    def ngettext(context: Context, singular: str, plural: str, num: int, **values: Any) -> str:
        values.setdefault("num", num)
        text: str = translate(singular, plural, num)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704
        return fill(text, values)

    return ngettext


def choose_language(
    available: list[str],
    *,
    query: str | None,
    cookie: str | None,
    accept: str | None,
    carried: str | None = None,
) -> str:
    """The query's choice, else the cookie's, else the one carried by a link or session,
    else the browser's, else the first available."""
    for wanted in (query, cookie, carried):
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
