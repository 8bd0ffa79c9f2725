"""HTTP hygiene as pure ASGI middleware: security headers, body size limit, access log."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.core import metrics

access_log = logging.getLogger("portal.access")
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PERMISSIONS = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


class SecurityHeaders:
    """Adds the strict headers of design §4.5 to every response.

    Each replaces a header of that name the response had; they are encoded once, here,
    not per response.
    """

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        strict = {
            "content-security-policy": CSP,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-frame-options": "DENY",
            "permissions-policy": PERMISSIONS,
            "cross-origin-opener-policy": "same-origin",
            "cross-origin-resource-policy": "same-origin",
        }
        if https:
            strict["strict-transport-security"] = "max-age=63072000; includeSubDomains"
        self.static = _encoded(strict)
        self.pages = _encoded({**strict, "cache-control": "no-store"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names, added = self.static if scope["path"].startswith("/static/") else self.pages

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                kept = [(k, v) for k, v in headers if k.lower() not in names]
                message["headers"] = kept + added
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _encoded(headers: dict[str, str]) -> tuple[frozenset[bytes], list[tuple[bytes, bytes]]]:
    added = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return frozenset(name for name, _ in added), added


class ErrorPage:
    """Turns an unhandled error into the 500 page inside the middleware stack.

    Starlette's own handler sits outside every middleware (the page would miss the security
    headers) and re-raises, so that the server logs the exception's text, which can hold a
    query's parameters. Here the error ends: `handler` logs its type and place only.
    """

    def __init__(self, app: ASGIApp, *, handler: ErrorHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            response = await self.handler(Request(scope, receive), exc)
            if not started:
                await response(scope, receive, send)


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413 before anything parses it.

    A path matching `own_limit` (an upload route) enforces a limit of its own while it
    streams the body (portal.web.uploads), and is let through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        handler: ErrorHandler,
        own_limit: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.handler = handler
        self.own_limit = own_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.own_limit is not None and self.own_limit.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive), HTTPException(413))
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class BodyTooLarge(Exception):
    pass


# A path segment a log may keep: short, lower-case, no @. Anything else (a token, an address
# typed into the URL, a mistyped /V/) is written as "…".
# Any other method is counted and logged as "other": a label per invented method would grow
# /metrics without bound, and a method as sent (5,000 characters, say) would fill the log.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LOOKUP_ROUTE = "/{incident}/lookup"  # its latency is the lookup as the person sees it
LOGGABLE_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")


def loggable_path(path: str) -> str:
    """The path as a log may keep it: `/v/{token}` becomes `/v/…`, so does an address."""
    return "/".join(
        segment if not segment or LOGGABLE_SEGMENT.fullmatch(segment) else "…"
        for segment in path.split("/")
    )


class AccessLog:
    """One JSON line per request (no query string, no token, no client address) + metrics.

    Per request this costs what the line and the figures need, no more (measured with
    bench/page_profile.py): the metrics' children are kept per label values, and the log
    record is made directly, without the stack walk `Logger.info` does to name the caller.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.counted: dict[tuple[str, str, str], Any] = {}
        self.timed: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_name(scope)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self._count(method, route, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                path = loggable_path(scope["path"])
                fields = {"method": method, "path": path, "status": status}
                fields["ms"] = round(elapsed * 1000, 1)
                access_log.handle(
                    access_log.makeRecord(
                        access_log.name,
                        logging.INFO,
                        __file__,
                        0,
                        "%s %s %s",
                        (method, path, status),
                        None,
                        extra={"fields": fields},
                    )
                )

    def _count(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, str(status))
        counter = self.counted.get(key)
        if counter is None:
            counter = self.counted[key] = metrics.requests_total.labels(*key)
        counter.inc()
        timer = self.timed.get(route)
        if timer is None:
            timer = self.timed[route] = metrics.request_seconds.labels(route)
        timer.observe(elapsed)
        if route == LOOKUP_ROUTE and method == "POST":
            metrics.lookup_response_seconds.observe(elapsed)


def _route_name(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", "unmatched")
