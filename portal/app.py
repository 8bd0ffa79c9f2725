"""create_app(settings): the Starlette application with its routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from traceback import extract_tb
from types import FrameType
from typing import Any

from prometheus_client import multiprocess
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from portal import workers
from portal.core import logs
from portal.core.config import Settings
from portal.incidents.cache import IncidentCache
from portal.incidents.fingerprints import PepperWatch
from portal.person.lookup_queue import LookupQueue
from portal.person.ratelimit import RateLimiter
from portal.store import db, db_errors
from portal.web import about, admin, codes, ops, partner, partner_queue, public
from portal.web.middleware import (
    AccessLog,
    BodyLimit,
    ErrorPage,
    SecurityHeaders,
    loggable_path,
)
from portal.web.pages import RenderedPages, language, page_templates, render

log = logging.getLogger("portal.app")
Handler = Callable[[int, FrameType | None], Any]

STATIC_DIR = workers.ROOT / "static"
ERROR_TEMPLATES = {400, 403, 404, 405, 413, 415, 429, 500, 503}


def create_app(settings: Settings, *, deliver_mail: bool = True) -> Starlette:
    """The portal as an ASGI app; `deliver_mail` runs the outbox worker in-process."""
    app = Starlette(
        routes=[
            *ops.routes,
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
            *admin.routes,
            *partner_queue.routes,
            *partner.routes,
            *about.routes,
            *codes.routes,
            *public.routes,
        ],
        middleware=[
            Middleware(AccessLog),
            Middleware(SecurityHeaders, https=settings.https),
            Middleware(ErrorPage, handler=server_error),
            Middleware(
                BodyLimit,
                max_bytes=settings.max_body_bytes,
                handler=http_error,
                own_limit=partner_queue.UPLOAD_PATH,
            ),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    # Starlette would answer a missing or extra slash with an absolute URL built from the
    # Host header (an open redirect behind a proxy that passes Host on).
    app.router.redirect_slashes = False
    _compose(app.state, settings, deliver_mail=deliver_mail)
    return app


def _compose(state: State, settings: Settings, *, deliver_mail: bool) -> None:
    """What the app's handlers share, each built once: the root of the web process."""
    engine = db.make_engine(settings.database_url)
    state.settings = settings
    state.engine = engine
    state.renderer = workers.renderer(pages=page_templates)
    state.pages = RenderedPages()
    state.limiter = RateLimiter(settings)
    state.mail_worker = workers.mail_worker(engine, settings) if deliver_mail else None
    state.incidents = IncidentCache(engine, ttl=settings.incident_cache_ttl)
    state.stop_signal = StopSignal()
    state.pepper = PepperWatch(engine, settings.pepper, interval=settings.pepper_check_interval)
    state.lookups = LookupQueue(
        engine,
        settings,
        state.limiter,
        state.incidents,
        renderer=state.renderer,
        written=state.mail_worker.wake if state.mail_worker else lambda: None,
    )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Starts the lookup queue, and the mail worker with the reminders; at the end, drains
    the lookups before the mail stops."""
    state = app.state
    stop = asyncio.Event()
    tasks = []
    state.lookups.start()
    state.stop_signal.listen()
    if state.mail_worker is not None:
        tasks.append(asyncio.create_task(state.mail_worker.run(stop)))
        reminders = workers.reminders(
            state.engine, state.settings, state.renderer, state.mail_worker, stop
        )
        tasks.append(asyncio.create_task(reminders))
    try:
        yield
    finally:
        # The accepted lookups first: their links' mails are then in the outbox. The
        # time they get counts from the signal, so that the whole shutdown fits in it.
        since = state.stop_signal.at or time.monotonic()
        await state.lookups.close(since + state.settings.shutdown_timeout - time.monotonic())
        stop.set()
        for task in tasks:
            await task
        state.stop_signal.forget()
        await state.incidents.close()
        state.engine.dispose()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # This worker's live gauges (the queue depth) leave the sum.
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class StopSignal:
    """When SIGTERM (or Ctrl+C) reached this process: PORTAL_SHUTDOWN_TIMEOUT counts from
    then, the requests still being answered included."""

    def __init__(self) -> None:
        self.at: float | None = None
        # signal -> (our handler, the one it calls after noting the moment)
        self.wrapped: dict[int, tuple[object, Handler]] = {}

    def listen(self) -> None:
        """Notes the moment, then lets the handler in place (uvicorn's) act as before."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (an app under a test client)
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                ours = partial(self._noted, previous)
                self.wrapped[signum] = (ours, previous)
                signal.signal(signum, ours)

    def forget(self) -> None:
        """Puts the handlers back as they were, unless another has replaced ours since."""
        for signum, (ours, previous) in self.wrapped.items():
            if signal.getsignal(signum) is ours:
                signal.signal(signum, previous)
        self.wrapped.clear()

    def _noted(self, previous: Handler, signum: int, frame: FrameType | None) -> None:
        if self.at is None:
            self.at = time.monotonic()
        previous(signum, frame)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code if exc.status_code in ERROR_TEMPLATES else 400
    response = render(
        request, "error.html", lang=language(request, None), status=status, code=status
    )
    if exc.headers:
        response.headers.update(exc.headers)
    if status == 429 and "retry-after" not in response.headers:
        # RFC 6585: say when to come back; without a precise answer, the longest window.
        response.headers["Retry-After"] = str(request.app.state.limiter.longest_window())
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    if db_errors.passing(exc):
        return database_unavailable(request, exc)
    # The message of an exception can hold a query's parameters: log only its type and place.
    where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in extract_tb(exc.__traceback__)]
    log.error(
        "unhandled %s on %s %s at %s",
        type(exc).__name__,
        request.method,
        loggable_path(request.url.path),
        " < ".join(reversed(where[-6:])),
    )
    return render(request, "error.html", lang=language(request, None), status=500, code=500)


def database_unavailable(request: Request, exc: Exception) -> Response:
    """The database is away (or its disk full): 503, come back in a few seconds; a page
    that needs no database (the incident's, from the cache) is not affected."""
    log.warning(
        "database unavailable (%s) on %s %s in %s",
        type(exc).__name__,
        request.method,
        loggable_path(request.url.path),
        db_errors.where(exc),
        extra={"fields": {"code": db_errors.code(exc)}},
    )
    response = render(request, "error.html", lang=language(request, None), status=503, code=503)
    response.headers["Retry-After"] = str(db_errors.RETRY_AFTER)
    return response


def from_env() -> Starlette:
    """The app as `portal serve` runs it under uvicorn (one per worker process)."""
    if not logging.getLogger().handlers:  # a worker process that uvicorn spawned
        logs.configure()
    settings = Settings.from_env()
    settings.refuse_unsafe_production()
    # A thread that wants the GIL waits up to this long for the one holding it: 5 ms by
    # default, a page's whole budget. Shorter, the event loop gets back sooner from a
    # page query's or a hash's thread (measured: bench/page_bench.py).
    sys.setswitchinterval(0.0005)
    return create_app(settings, deliver_mail=os.environ.get("PORTAL_IN_PROCESS_MAIL", "1") == "1")
