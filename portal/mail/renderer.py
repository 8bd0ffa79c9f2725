"""One templates folder and what is made from it once: the Jinja environments, kept renders."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.templating import Jinja2Templates

from portal.core.i18n import template_context
from portal.mail.markdown import site
from portal.mail.messages import Message

T = TypeVar("T")
KEPT_MOST = 1000  # kept renders (incidents x languages x partners): never near it


class Renderer:
    """Renders emails (and, for the web, pages) from one templates folder.

    The composition root (`portal.workers`) builds one per process and hands it to what
    renders: each environment compiles a template once, and `kept` holds renders that are
    the same for many (a link email, but for its token).
    """

    def __init__(
        self, folder: Path, *, pages: Callable[[Path], Jinja2Templates] | None = None
    ) -> None:
        self.folder = folder.resolve()
        self.emails = _email_environment(self.folder)
        self.pages = pages(self.folder) if pages else None
        self._kept: dict[Hashable, tuple[tuple[object, ...], Any]] = {}

    def email(self, name: str, lang: str, **context: Any) -> Message:
        """Renders emails/<name>/{subject.txt,body.txt,body.html} in the language `lang`."""
        values = {**context, **template_context(lang)}

        def part(filename: str) -> str:
            return self.emails.get_template(f"emails/{name}/{filename}").render(values)

        # Template blocks may span lines; a subject header is one line.
        subject = " ".join(part("subject.txt").split())
        values["subject"] = subject  # the HTML part's <title>
        return Message(subject=subject, text=part("body.txt"), html=part("body.html"))

    def kept(self, key: Hashable, of: tuple[object, ...], make: Callable[[], T]) -> T:
        """What `make` renders for `key`, kept; made anew when an object in `of` is not the
        one it was made of (a reloaded incident is a new object: portal.incidents.cache)."""
        held = self._kept.get(key)
        if held is None or any(old is not new for old, new in zip(held[0], of, strict=True)):
            if len(self._kept) >= KEPT_MOST:
                self._kept.clear()
            held = self._kept[key] = (of, make())
        made: T = held[1]
        return made


def _email_environment(folder: Path) -> Environment:
    env = Environment(
        loader=FileSystemLoader(folder),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.policies["ext.i18n.trimmed"] = True
    env.filters["site"] = site  # the portal named without being linked to
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return env
