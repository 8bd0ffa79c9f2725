"""Operational endpoints: health and Prometheus metrics (no personal data)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.core.metrics import exposition
from portal.store.db_errors import RETRY_AFTER
from portal.web.pages import with_db


async def healthz(request: Request) -> Response:
    try:
        await with_db(request, lambda conn: conn.execute(text("SELECT 1")))
    except SQLAlchemyError:
        body = {"status": "unavailable", "reason": "database"}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})
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
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
