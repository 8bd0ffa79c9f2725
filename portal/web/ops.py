"""Operational endpoints: health and Prometheus metrics (no personal data)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.core import metrics as figures
from portal.core.clock import utcnow
from portal.core.metrics import exposition
from portal.mail import outbox
from portal.operator import stats
from portal.store.db_errors import RETRY_AFTER
from portal.web.pages import with_db


async def healthz(request: Request) -> Response:
    try:
        await with_db(request, lambda conn: conn.execute(text("SELECT 1")))
    except SQLAlchemyError:
        figures.database_up.set(0)
        body = {"status": "unavailable", "reason": "database"}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})
    figures.database_up.set(1)
    state = request.app.state
    # Records imported with another pepper: every lookup would answer "not affected".
    if mismatched := await state.pepper.mismatched():
        body = {"status": "unavailable", "reason": "pepper", "incidents": mismatched}
        return JSONResponse(body, status_code=503)
    answer = {"status": "ok"}
    # Limits are then kept in each process's memory: the portal serves on (design §6).
    if await state.limiter.redis_down():
        answer["redis"] = "down"
    if state.mail_worker is not None and state.mail_worker.health.failing:
        answer["mail"] = "failing"
    return JSONResponse(answer)


async def metrics(request: Request) -> Response:
    # The figures that live in the database are read at the scrape, so that the gauges
    # say how things are now, whichever process answers and whether or not it runs a
    # mail worker; and a database that does not answer shows as portal_database_up 0.
    try:
        await with_db(request, _read_gauges)
    except SQLAlchemyError:
        figures.database_up.set(0)
    else:
        figures.database_up.set(1)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


def _read_gauges(conn: Any) -> None:
    now = utcnow()
    figures.outbox_depth.set(outbox.depth(conn, now=now))
    figures.requests_overdue.set(stats.requests_overdue(conn, today=now.date()))


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
