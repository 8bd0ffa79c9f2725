"""The incident file: read the TOML and validate it completely, every problem with its line."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from markdown_it import MarkdownIt
from markdown_it.token import Token

from portal.core.blind_index import KdfParams
from portal.core.errors import PortalError
from portal.core.printable import quoted, shown
from portal.incidents import toml_errors

# long: one checker over one vocabulary of keys (EXPECTED below): each rule sits beside the
# words its message uses, and split in two, a rule would be read apart from them.
LANGUAGES = ("nl", "en")
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
INCIDENT_KEYS = frozenset(
    {
        "slug",
        "languages",
        "discovered",
        "contact_email",
        "regulator_notified",
        "title",
        "notice",
        "faq",
        "partners",
        "blind_index",
        "organisation",
        "website",
        *("which_data", "consequences", "measures", "advice"),
    }
)
PARTNER_KEYS = frozenset(
    {
        "slug",
        "name",
        "contact_email",
        "webhook_url",
        "webhook_secret",
        "language",
        "certainty",
        "intro",
        "forward",
    }
)
CERTAINTIES = ("confirmed", "possible")
# How a partner gets its requests: each by itself, or a daily digest and its queue page.
FORWARDS = ("each", "daily")
# Optional Markdown sections of the incident page, per language, beside the notice (which
# says what happened). GDPR Art. 34(2) asks every notice for the nature of the breach (the
# notice), a contact point (contact_email), the likely consequences and the measures taken:
# the loader warns when one of the last two is missing.
SECTIONS = ("which_data", "consequences", "measures", "advice")
ARTICLE_34 = {
    "consequences": "the likely consequences of the breach",
    "measures": "the measures taken to address it",
}
FAQ_KEYS = frozenset({"question", "answer"})
# Optional argon2id parameters of a new incident: (lowest, highest) allowed.
KDF_LIMITS = {"memory_kib": (8192, 4 * 1024 * 1024), "time_cost": (1, 20), "parallelism": (1, 16)}
MAX_NAME = 200
TAG = re.compile(r"</?[A-Za-z][^\s>/]*")
# Only to find raw HTML: the pages render Markdown with HTML off (portal/web/pages.py).
_COMMONMARK = MarkdownIt("commonmark")
# An incident's slug is the first part of its URLs: these are the portal's own.
RESERVED_SLUGS = frozenset({"admin", "api", "healthz", "metrics", "r", "static", "v"})
# What each key takes, as a message says it when the value is missing or of the wrong type.
TEXT = 'a text in quotes ("..." on one line, """...""" over several)'
TEXTS = 'a text per language, such as { nl = "...", en = "..." } or a [table]'
ADDRESS = 'an email address in quotes, such as "privacy@example.org"'
URL = 'an http(s) URL in quotes, such as "https://example.org"'
EXPECTED: dict[tuple[str, ...], str] = {
    ("slug",): 'a slug in quotes, such as "ticketing-2021"',
    ("organisation",): f"a name in quotes (1-{MAX_NAME} characters)",
    ("website",): URL,
    ("languages",): 'a list of languages in quotes, such as ["nl", "en"]',
    ("discovered",): "a date such as 2021-02-22 (without quotes)",
    ("contact_email",): ADDRESS,
    ("regulator_notified",): "true or false (without quotes)",
    ("title",): TEXTS,
    ("notice",): TEXTS,
    **{(section,): TEXTS for section in SECTIONS},
    ("faq",): "[[faq]] tables, each with a question and an answer",
    ("faq", "question"): TEXTS,
    ("faq", "answer"): TEXTS,
    ("partners",): "[[partners]] tables",
    ("partners", "slug"): 'a slug in quotes, such as "park-a"',
    ("partners", "name"): f"a name in quotes (1-{MAX_NAME} characters)",
    ("partners", "contact_email"): ADDRESS,
    ("partners", "webhook_url"): URL,
    ("partners", "webhook_secret"): "a text in quotes",
    ("partners", "language"): " or ".join(f'"{lang}"' for lang in LANGUAGES),
    ("partners", "certainty"): " or ".join(f'"{c}"' for c in CERTAINTIES),
    ("partners", "intro"): TEXTS,
    ("partners", "forward"): " or ".join(f'"{f}"' for f in FORWARDS),
    ("blind_index",): "a [blind_index] table",
    **{("blind_index", k): f"a whole number {lo}-{hi}" for k, (lo, hi) in KDF_LIMITS.items()},
}
# Tables whose keys are languages, each holding a text.
TEXT_TABLES = frozenset(key for key, expected in EXPECTED.items() if expected == TEXTS)


def parse_incident_file(path: Path) -> dict[str, Any]:
    """Reads and validates the file; raises PortalError listing every problem with its line."""
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problem = toml_errors.locate(text, exc)
        raise PortalError(f"{path}:{problem.line}: {_syntax_message(problem)}") from None
    checker = _Checker(_KeyLines(text))
    clean = checker.incident(data)
    if checker.problems:
        raise PortalError("\n".join(f"{path}:{line}: {msg}" for line, msg in checker.sorted()))
    clean["warnings"] = [f"{path}:{line}: {msg}" for line, msg in sorted(checker.warnings)]
    return clean


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PortalError(f"cannot read {path}: no such file") from None
    except UnicodeDecodeError:
        raise PortalError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as exc:
        raise PortalError(f"cannot read {path}: {exc.strerror}") from None


def expected_for(path: tuple[str | int, ...]) -> str | None:
    """What the key at `path` takes (indexes of [[tables]] left out), if the file knows it."""
    names = tuple(part for part in path if isinstance(part, str))
    if names in EXPECTED:
        return EXPECTED[names]
    return TEXT if names[:-1] in TEXT_TABLES else None


def key_name(path: tuple[str | int, ...]) -> str:
    """A key as messages name it: "regulator_notified", "title.en", "partner 2: certainty"."""
    if len(path) > 2 and isinstance(path[1], int) and path[0] in ("partners", "faq"):
        rest = ".".join(map(str, path[2:]))
        where = "partner" if path[0] == "partners" else "faq entry"
        return f"{where} {path[1] + 1}: {rest}"
    return ".".join(map(str, path))


# tomllib's reasons, in the words of someone who writes the file.
SYNTAX_REASONS = {
    "Invalid value": "not a TOML value",
    "Expected newline or end of document after a statement": "not one TOML value",
    "Invalid date or datetime": "not a valid date",
    "Unterminated string": "a text without its closing quotes",
    "Illegal character '\\n'": "a text without its closing quote",
    "Unclosed array": "a list without its closing ]",
    "Unclosed inline table": "a table without its closing }",
    "Unescaped '\\' in a string": "a \\ in a text: write \\\\, or put the text in '...'",
    "Cannot overwrite a value": "given twice",
}


def _syntax_message(problem: toml_errors.TomlProblem) -> str:
    """A TOML error as the key it is about and what that key takes, where that is known."""
    expected = expected_for(problem.key) if problem.key else None
    if problem.key is None:
        return problem.reason
    name = key_name(problem.key)
    why = SYNTAX_REASONS.get(problem.reason, problem.reason[:1].lower() + problem.reason[1:])
    if not problem.about_a_value or expected is None:
        return f"{name}: {why}"
    if "secret" in name or not problem.value:  # a secret is not printed, not even a bad one
        return f"{name}: expected {expected}, got something else ({why})"
    return f"{name}: expected {expected}, got {shown(problem.value, 60)} ({why})"


def toml_type(value: Any) -> str:
    """What a parsed TOML value is, as a message names what was given instead."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "a text in quotes"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, date):
        return "a date" if not hasattr(value, "hour") else "a date and time"
    return "a list" if isinstance(value, list) else "a table"


class _KeyLines:
    """Best-effort map from a key path such as ("partners", 1, "slug") to its line."""

    def __init__(self, text: str) -> None:
        self.raw = text.splitlines()
        self.lines: dict[tuple[str | int, ...], int] = {}
        table: tuple[str | int, ...] = ()
        counts: dict[str, int] = {}
        in_string = False
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            starts_in_string = in_string
            in_string ^= (line.count('"""') + line.count("'''")) % 2 == 1
            if starts_in_string:
                continue
            if found := re.match(r"\[\[\s*([\w-]+)\s*\]\]", line):
                index = counts.get(found[1], 0)
                counts[found[1]] = index + 1
                table = (found[1], index)
                self._remember((found[1],), number)
                self._remember(table, number)
            elif found := re.match(r"\[\s*([\w.-]+)\s*\]", line):
                table = tuple(found[1].split("."))
                self._remember(table, number)
            elif found := re.match(r'([\w.-]+|"[^"]*")\s*=', line):
                self._remember((*table, *found[1].strip('"').split(".")), number)

    def _remember(self, path: tuple[str | int, ...], number: int) -> None:
        self.lines.setdefault(path, number)

    def line(self, *path: str | int) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    def value_line(self, path: tuple[str | int, ...], offset: int) -> int:
        """The file line of a string value's `offset`-th line.

        A multi-line string's text starts on the line after its opening quotes.
        """
        line = self.line(*path)
        opening = self.raw[line - 1].rstrip() if line <= len(self.raw) else ""
        return line + offset + (1 if opening.endswith(('"""', "'''")) else 0)


class _Checker:
    """Validates the parsed TOML, collecting every problem instead of stopping at the first."""

    def __init__(self, lines: _KeyLines) -> None:
        self.key_lines = lines
        self.problems: list[tuple[int, str]] = []
        self.warnings: list[tuple[int, str]] = []
        self.languages: list[str] = list(LANGUAGES[:1])

    def problem(self, path: tuple[str | int, ...], message: str) -> None:
        self.problems.append((self.key_lines.line(*path), message))

    def wrong(self, path: tuple[str | int, ...], value: Any) -> None:
        """A required key left out, or a value of another type: the key and what it takes."""
        name, expected = key_name(path), expected_for(path)
        if value is None:
            self.problem(path, f"{name} is required: {expected}")
        else:
            self.problem(path, f"{name}: expected {expected}, got {toml_type(value)}")

    def sorted(self) -> list[tuple[int, str]]:
        return sorted(self.problems, key=lambda p: p[0])

    def raw_html(self, texts: dict[str, str], path: tuple[str | int, ...], what: str) -> None:
        """Warns of HTML tags in Markdown: the page shows them as text, it never runs them."""
        for lang, text in texts.items():
            found = _html_tags(text)
            if not found:
                continue
            tags = ", ".join(dict.fromkeys(tag for _, tag in found))
            line = self.key_lines.value_line((*path, lang), found[0][0])
            self.warnings.append(
                (
                    line,
                    f"{what} ({lang}) holds raw HTML ({tags}): the page shows it as text, not as "
                    "HTML; write Markdown instead",
                )
            )

    def incident(self, data: dict[str, Any]) -> dict[str, Any]:
        self.unknown_keys(data, INCIDENT_KEYS, (), "")
        self.languages = self.language_list(data.get("languages"))
        return {
            "slug": self.slug(data.get("slug"), ("slug",), "slug"),
            "languages": self.languages,
            "title": self.texts(data.get("title"), ("title",), "title"),
            "notice": self.markdown(data.get("notice"), ("notice",), "notice"),
            "faq": self.faq(data.get("faq", [])),
            "discovered": self.discovered(data.get("discovered")),
            "contact_email": self.email(data.get("contact_email"), ("contact_email",), ""),
            "regulator_notified": self.flag(data.get("regulator_notified")),
            "partners": self.partners(data.get("partners")),
            "kdf": self.kdf(data["blind_index"]) if "blind_index" in data else None,
            "organisation": self.name(data.get("organisation"), ("organisation",), "organisation"),
            "website": self.website(data.get("website")),
            "sections": self.sections(data),
        }

    def name(self, value: Any, path: tuple[str | int, ...], what: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
            self.problem(path, f"{what} must be a name of 1-{MAX_NAME} characters")
            return None
        return value.strip()

    def website(self, value: Any) -> str | None:
        if value is None:
            return None
        if not _is_http_url(value):
            self.problem(
                ("website",), "website must be an http(s) URL, such as https://example.org"
            )
            return None
        return str(value)

    def sections(self, data: dict[str, Any]) -> dict[str, dict[str, str]]:
        """The optional sections given; a warning for each Art. 34 element left out."""
        for key, element in ARTICLE_34.items():
            if key not in data:
                self.warnings.append(
                    (
                        1,
                        f"no [{key}]: a breach notice must tell people {element} (GDPR "
                        "Art. 34); the page shows a general text until you add it",
                    )
                )
        return {key: self.markdown(data[key], (key,), key) for key in SECTIONS if key in data}

    def kdf(self, table: Any) -> KdfParams:
        """The optional [blind_index] table; the defaults where it is silent."""
        if not isinstance(table, dict):
            self.wrong(("blind_index",), table)
            return KdfParams()
        self.unknown_keys(table, frozenset(KDF_LIMITS), ("blind_index",), "blind_index: ")
        defaults = KdfParams()
        chosen = {
            "memory_kib": defaults.memory_cost,
            "time_cost": defaults.time_cost,
            "parallelism": defaults.parallelism,
        }
        for key, (low, high) in KDF_LIMITS.items():
            value = table.get(key, chosen[key])
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                self.problem(
                    ("blind_index", key), f"blind_index.{key} must be a whole number {low}-{high}"
                )
                continue
            chosen[key] = value
        return KdfParams(chosen["time_cost"], chosen["memory_kib"], chosen["parallelism"])

    def unknown_keys(
        self, table: dict[str, Any], known: frozenset[str], path: tuple[str | int, ...], where: str
    ) -> None:
        for key in table:
            if key not in known:
                expected = ", ".join(sorted(known))
                self.problem((*path, key), f"{where}unknown key {key!r} (expected: {expected})")

    def language_list(self, value: Any) -> list[str]:
        supported = ", ".join(LANGUAGES)
        if not isinstance(value, list):
            self.wrong(("languages",), value)
            return list(LANGUAGES[:1])
        if not value:
            self.problem(("languages",), f"languages must list at least one of: {supported}")
            return list(LANGUAGES[:1])
        wrong = [lang for lang in value if lang not in LANGUAGES]
        if wrong:
            shown = ", ".join(repr(lang) for lang in wrong)
            self.problem(("languages",), f"unsupported language {shown} (supported: {supported})")
        if len(set(map(str, value))) != len(value):
            self.problem(("languages",), "languages lists a language twice")
        return [lang for lang in value if lang in LANGUAGES] or list(LANGUAGES[:1])

    def slug(self, value: Any, path: tuple[str | int, ...], what: str) -> str:
        if not isinstance(value, str):
            self.wrong(path, value)
            return ""
        if not SLUG.fullmatch(value):
            self.problem(
                path,
                f"{what} must be 1-64 lowercase letters, digits or hyphens, "
                "starting with a letter or digit",
            )
            return ""
        if path == ("slug",) and value in RESERVED_SLUGS:
            self.problem(path, f"slug {value!r} is taken by the portal's own pages")
            return ""
        if path[-1] == "slug" and path[0] == "partners" and value == "all":
            self.problem(path, f"{what} 'all' is taken: it asks every partner at once")
            return ""
        return value

    def texts(self, value: Any, path: tuple[str | int, ...], what: str) -> dict[str, str]:
        if not isinstance(value, dict):
            self.wrong(path, value)
            return {}
        for lang in self.languages:
            text = value.get(lang)
            if text is not None and not isinstance(text, str):
                self.wrong((*path, lang), text)
            elif not text or not text.strip():
                self.problem((*path, lang), f"{what} needs a non-empty text for {lang!r}")
        for lang in value:
            if lang not in self.languages:
                self.problem((*path, lang), f"{what} has a text for unlisted language {lang!r}")
        return {lang: str(value.get(lang, "")) for lang in self.languages}

    def markdown(self, value: Any, path: tuple[str | int, ...], what: str) -> dict[str, str]:
        texts = self.texts(value, path, what)
        self.raw_html(texts, path, what)
        return texts

    def faq(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            self.wrong(("faq",), value)
            return []
        entries = []
        for index, entry in enumerate(value):
            path: tuple[str | int, ...] = ("faq", index)
            if not isinstance(entry, dict):
                self.problem(path, f"faq entry {index + 1} must be a table")
                continue
            self.unknown_keys(entry, FAQ_KEYS, path, f"faq entry {index + 1}: ")
            entries.append(
                {
                    key: self.markdown(entry.get(key), (*path, key), f"faq entry {index + 1} {key}")
                    for key in ("question", "answer")
                }
            )
        return entries

    def discovered(self, value: Any) -> date | None:
        if value is None:
            return None
        if not isinstance(value, date) or hasattr(value, "hour"):
            self.wrong(("discovered",), value)
            return None
        return value

    def email(self, value: Any, path: tuple[str | int, ...], where: str) -> str:
        if not isinstance(value, str):
            self.wrong(path, value)
            return ""
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.problem(path, f"{where}contact_email is not a valid email address: {exc}")
            return ""

    def flag(self, value: Any) -> bool:
        if not isinstance(value, bool):
            self.wrong(("regulator_notified",), value)
            return False
        return value

    def partners(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not value:
            self.problem(("partners",), "at least one [[partners]] table is required")
            return []
        found: list[dict[str, Any]] = []
        for index, entry in enumerate(value):
            if not isinstance(entry, dict):
                self.problem(("partners", index), f"partner {index + 1} must be a table")
                continue
            partner = self.partner(entry, index)
            if partner["slug"] and partner["slug"] in {p["slug"] for p in found}:
                self.problem(
                    ("partners", index, "slug"), f"partner slug {partner['slug']!r} is used twice"
                )
            found.append(partner)
        return found

    def partner(self, entry: dict[str, Any], index: int) -> dict[str, Any]:
        path: tuple[str | int, ...] = ("partners", index)
        where = f"partner {index + 1}: "
        self.unknown_keys(entry, PARTNER_KEYS, path, where)
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            self.wrong((*path, "name"), name)
        elif not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            self.problem((*path, "name"), f"{where}name is required (1-{MAX_NAME} characters)")
        elif _control_characters(name):
            self.problem(
                (*path, "name"), f"{where}name must be one line without control characters"
            )
        return {
            "slug": self.slug(entry.get("slug"), (*path, "slug"), f"{where}slug"),
            "name": name.strip() if isinstance(name, str) else "",
            "contact_email": self.email(
                entry.get("contact_email"), (*path, "contact_email"), where
            ),
            **self.webhook(entry, path, where),
            "language": self.partner_language(entry.get("language"), (*path, "language"), where),
            "certainty": self.certainty(entry.get("certainty"), (*path, "certainty"), where),
            "intro": self.intro(entry.get("intro"), (*path, "intro"), where),
            "forward": self.forward(entry.get("forward"), (*path, "forward"), where),
        }

    def intro(self, value: Any, path: tuple[str | int, ...], where: str) -> dict[str, str]:
        """The optional Markdown text of the partner's entry page, per language."""
        if value is None:
            return {}
        return self.markdown(value, path, f"{where}intro")

    def certainty(self, value: Any, path: tuple[str | int, ...], where: str) -> str:
        if value is None:
            return CERTAINTIES[0]
        if value not in CERTAINTIES:
            self.problem(
                path,
                f"{where}certainty must be one of: {', '.join(CERTAINTIES)}, not {_given(value)}",
            )
            return CERTAINTIES[0]
        return str(value)

    def forward(self, value: Any, path: tuple[str | int, ...], where: str) -> str:
        if value is None:
            return FORWARDS[0]
        if value not in FORWARDS:
            self.problem(
                path, f"{where}forward must be one of: {', '.join(FORWARDS)}, not {_given(value)}"
            )
            return FORWARDS[0]
        return str(value)

    def partner_language(self, value: Any, path: tuple[str | int, ...], where: str) -> str | None:
        if value is None or value in LANGUAGES:
            return value  # type: ignore[no-any-return]
        self.problem(
            path, f"{where}language must be one of: {', '.join(LANGUAGES)}, not {_given(value)}"
        )
        return None

    def webhook(
        self, entry: dict[str, Any], path: tuple[str | int, ...], where: str
    ) -> dict[str, str | None]:
        url, secret = entry.get("webhook_url"), entry.get("webhook_secret")
        if url is not None and not _is_http_url(url):
            self.problem((*path, "webhook_url"), f"{where}webhook_url must be an http(s) URL")
        if url is not None and (not isinstance(secret, str) or not secret):
            self.problem(
                (*path, "webhook_url"), f"{where}webhook_url needs a webhook_secret to sign with"
            )
        if secret is not None and (not isinstance(secret, str) or _control_characters(secret)):
            self.problem((*path, "webhook_secret"), f"{where}webhook_secret must be a string")
        return {
            "webhook_url": url if isinstance(url, str) else None,
            "webhook_secret": secret if isinstance(secret, str) else None,
        }


def _given(value: Any) -> str:
    """A value given in the file, as a message repeats it: a text quoted and cut short."""
    return quoted(value, 40) if isinstance(value, str) else toml_type(value)


def _html_tags(text: str) -> list[tuple[int, str]]:
    """(line offset, tag) of each raw HTML tag in Markdown text, as CommonMark reads it."""
    found: list[tuple[int, str]] = []

    def walk(tokens: list[Token], line: int) -> None:
        for token in tokens:
            start = token.map[0] if token.map else line
            if token.type in ("html_block", "html_inline"):
                found.extend((start, tag[:40] + ">") for tag in TAG.findall(token.content))
            walk(token.children or [], start)

    walk(_COMMONMARK.parse(text), 0)
    return found


def _control_characters(value: str) -> bool:
    """A NUL or another control character: PostgreSQL refuses NUL in text, and the rest
    has no place on one line."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in value)


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or _control_characters(value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
