"""Rendering pages: templates with the visitor's language, CSRF token and sanitised Markdown."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import nh3
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from portal.core.i18n import choose_language, template_context
from portal.incidents.stored import Incident
from portal.web.csrf import csrf_token, set_csrf_cookie

LANG_COOKIE = "portal_lang"
T = TypeVar("T")

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})


def markdown(text: str) -> Markup:
    """Markdown to HTML, raw HTML off and the result sanitised (links get rel=noopener)."""
    return Markup(nh3.clean(_markdown.render(text), link_rel="noopener noreferrer"))  # noqa: S704


def page_templates(directory: Path) -> Jinja2Templates:
    """The pages' templates, with gettext (`{% trans %}`, `_()`) in whitespace-trimmed form."""
    env = Environment(
        loader=FileSystemLoader(directory),
        # Templates change with a release, not while serving: no stat() per render.
        auto_reload=False,
        autoescape=select_autoescape(enabled_extensions=("html",)),
        extensions=["jinja2.ext.i18n"],
    )
    env.policies["ext.i18n.trimmed"] = True
    # The source text until a render passes its language's callables (i18n.template_context).
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    env.globals["markdown"] = markdown
    return Jinja2Templates(env=env)


def language(request: Request, incident: Incident | None, *, carried: str | None = None) -> str:
    """The visitor's language: their switch (query, then cookie), the language a link or
    session carries, their browser's, else the incident's first."""
    available = incident.languages if incident else ["nl", "en"]
    return choose_language(
        available,
        query=request.query_params.get("lang"),
        cookie=request.cookies.get(LANG_COOKIE),
        carried=carried,
        accept=request.headers.get("accept-language"),
    )


class RenderedPages:
    """Pages rendered once and kept, with the parts of one visitor filled in per request.

    Each is kept with the object it shows (an incident from `portal.incidents.cache`): when
    the cache holds a new object, the page is rendered anew. What differs per visitor goes
    in per request, in place of markers no text can contain (a random value of this
    process): the CSRF token, and for a personal page its addresses, escaped as the
    template would have. A personal page is kept by its `shape` (which partners, which
    fields, the date: never an address), the most recently used `MOST` of them.
    """

    MOST = 512

    def __init__(self) -> None:
        self.marker = f"fill-{secrets.token_hex(16)}"
        self.filled = re.compile(re.escape(self.marker) + r"(?:-(\d+))?")
        self.pages: OrderedDict[tuple[Any, ...], tuple[object, str]] = OrderedDict()

    def page(
        self,
        request: Request,
        template: str,
        *,
        lang: str,
        of: Any,
        shape: Hashable = (),
        values: Sequence[str | None] = (),
        context: Callable[[list[str | None]], dict[str, Any]] | None = None,
        **fixed: Any,
    ) -> str:
        """The page; on a miss rendered with `context(stand-ins for values)` or `fixed`."""
        key = (template, lang, getattr(of, "id", 0), shape)
        kept = self.pages.get(key)
        if kept is None or kept[0] is not of:
            stand_ins = [None if v is None else f"{self.marker}-{i}" for i, v in enumerate(values)]
            shown = {**fixed, **(context(stand_ins) if context else {})}
            shown.update(_context(request, lang), csrf_token=lambda: self.marker, request=request)
            html = request.app.state.renderer.pages.get_template(template).render(shown)
            self.pages[key] = kept = (of, html)
            if len(self.pages) > self.MOST:
                self.pages.popitem(last=False)
        else:
            self.pages.move_to_end(key)
        token = csrf_token(request)
        # One pass: a filled-in value is never read again for markers.
        return self.filled.sub(
            lambda m: token if m[1] is None else str(escape(values[int(m[1])])), kept[1]
        )


def render_shared(
    request: Request,
    template: str,
    *,
    lang: str,
    of: Any,
    shape: Hashable = (),
    values: Sequence[str | None] = (),
    context: Callable[[list[str | None]], dict[str, Any]] | None = None,
    **fixed: Any,
) -> Response:
    """Like `render`, from `RenderedPages`: for a page that shows `of`, the CSRF token, and
    for a personal one `values` (its addresses) in a layout that `shape` determines."""
    pages = request.app.state.pages
    html = pages.page(
        request, template, lang=lang, of=of, shape=shape, values=values, context=context, **fixed
    )
    return _with_cookies(request, HTMLResponse(html), lang)


def _context(request: Request, lang: str) -> dict[str, Any]:
    return {
        **template_context(lang),
        "csrf_token": partial(csrf_token, request),
        "portal_url": request.app.state.settings.base_url,
        "text": lambda mapping: _pick(mapping, lang),
    }


def render(
    request: Request,
    template: str,
    *,
    lang: str,
    status: int = 200,
    **context: Any,
) -> Response:
    templates = request.app.state.renderer.pages
    context.update(_context(request, lang))
    response: Response = templates.TemplateResponse(request, template, context, status_code=status)
    return _with_cookies(request, response, lang)


def _with_cookies(request: Request, response: Response, lang: str) -> Response:
    set_csrf_cookie(request, response)
    chosen = request.query_params.get("lang")
    if chosen == lang:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            httponly=True,
            samesite="lax",
            secure=request.app.state.settings.https,
            max_age=365 * 24 * 3600,
        )
    return response


def _pick(mapping: dict[str, str], lang: str) -> str:
    return mapping.get(lang) or next(iter(mapping.values()), "")


async def with_db(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs `fn(conn, *args)` in one transaction, off the event loop."""
    engine = request.app.state.engine

    def call() -> T:
        with engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    return await anyio.to_thread.run_sync(call, limiter=_db_threads(request))


# Page queries run on a few threads of their own rather than on anyio's 40: every thread
# that runs Python holds the GIL in turn, and with dozens of them ready the event loop
# waits its turn behind each (measured: twice the results pages per second with 4-8).
DB_THREADS = 8


def _db_threads(request: Request) -> anyio.CapacityLimiter:
    """The app's page-query limiter on the running event loop (a test may start several)."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    kept = getattr(state, "db_threads", None)
    if kept is None or kept[0] is not loop:
        kept = state.db_threads = (loop, anyio.CapacityLimiter(DB_THREADS))
    limiter: anyio.CapacityLimiter = kept[1]
    return limiter


def client_address(request: Request) -> str:
    """Who the client is for rate limits; X-Forwarded-For counts only from a trusted proxy.

    A trusted proxy is an address, or in a network, of PORTAL_TRUSTED_PROXIES. An IPv6
    client is its /64: one subscriber usually holds a whole /64, and counting its addresses
    one by one would let it step around every limit.
    """
    peer = request.client.host if request.client else "unknown"
    settings = request.app.state.settings
    if not settings.trusts_proxy(peer):
        return _network(peer)
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not settings.trusts_proxy(hop):
            return _network(hop)
    return _network(peer)


def _network(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
