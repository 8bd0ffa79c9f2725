"""The pages about the portal itself: the privacy statement and /.well-known/security.txt."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from portal.core.clock import utcnow
from portal.incidents import stored
from portal.incidents.file import SLUG
from portal.web.pages import language, render, with_db
from portal.web.public import SENT_MAX_AGE
from portal.web.security_txt import security_txt


async def privacy(request: Request) -> Response:
    slug = request.path_params["incident"]
    # No incident has another slug; and PostgreSQL refuses a NUL in a query's text (a 500).
    incident = await with_db(request, stored.get_incident, slug) if SLUG.fullmatch(slug) else None
    if incident is None:
        raise HTTPException(404)
    settings = request.app.state.settings
    return render(
        request,
        "privacy.html",
        lang=language(request, incident),
        incident=incident,
        link_minutes=settings.link_ttl // 60,
        session_minutes=settings.session_ttl // 60,
        deletion_days=settings.deletion_retention_days,
        sent_minutes=SENT_MAX_AGE // 60,
    )


async def security(request: Request) -> Response:
    found = await with_db(request, stored.list_incidents)
    text = security_txt(
        request.app.state.settings,
        fallback_contact=found[0].contact_email if found else None,
        now=utcnow(),
    )
    if text is None:
        raise HTTPException(404)
    return PlainTextResponse(text)


routes = [
    Route("/.well-known/security.txt", security, methods=["GET"]),
    Route("/{incident}/privacy", privacy, methods=["GET"]),
]
