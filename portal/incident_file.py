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

from portal.blind_index import KdfParams
from portal.errors import PortalError

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
    }
)
CERTAINTIES = ("confirmed", "possible")
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


def parse_incident_file(path: Path) -> dict[str, Any]:
    """Reads and validates the file; raises PortalError listing every problem with its line."""
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        message = getattr(exc, "msg", None) or str(exc)
        raise PortalError(f"{path}:{line}: {message}") from None
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


def _line_from_message(message: str) -> int:
    found = re.search(r"line (\d+)", message)
    return int(found[1]) if found else 1


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
            self.problem(("blind_index",), "blind_index must be a table")
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
        if not isinstance(value, list) or not value:
            self.problem(("languages",), f"languages must be a non-empty list of: {supported}")
            return list(LANGUAGES[:1])
        wrong = [lang for lang in value if lang not in LANGUAGES]
        if wrong:
            shown = ", ".join(repr(lang) for lang in wrong)
            self.problem(("languages",), f"unsupported language {shown} (supported: {supported})")
        if len(set(map(str, value))) != len(value):
            self.problem(("languages",), "languages lists a language twice")
        return [lang for lang in value if lang in LANGUAGES] or list(LANGUAGES[:1])

    def slug(self, value: Any, path: tuple[str | int, ...], what: str) -> str:
        if not isinstance(value, str) or not SLUG.fullmatch(value):
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
            self.problem(path, f"{what} must be a table with a text per language")
            return {}
        for lang in self.languages:
            text = value.get(lang)
            if not isinstance(text, str) or not text.strip():
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
            self.problem(("faq",), "faq must be a list of [[faq]] tables")
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
            self.problem(("discovered",), "discovered must be a date such as 2021-02-22")
            return None
        return value

    def email(self, value: Any, path: tuple[str | int, ...], where: str) -> str:
        if not isinstance(value, str):
            self.problem((*path,), f"{where}contact_email is required (an email address)")
            return ""
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.problem(path, f"{where}contact_email is not a valid email address: {exc}")
            return ""

    def flag(self, value: Any) -> bool:
        if not isinstance(value, bool):
            self.problem(("regulator_notified",), "regulator_notified must be true or false")
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
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
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
            self.problem(path, f"{where}certainty must be one of: {', '.join(CERTAINTIES)}")
            return CERTAINTIES[0]
        return str(value)

    def partner_language(self, value: Any, path: tuple[str | int, ...], where: str) -> str | None:
        if value is None or value in LANGUAGES:
            return value  # type: ignore[no-any-return]
        self.problem(path, f"{where}language must be one of: {', '.join(LANGUAGES)}")
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
