"""The letter page: `/{incident}/code`, where a person types the code from their letter."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.incidents import stored
from portal.incidents.file import SLUG
from portal.person.codes import open_code
from portal.web.csrf import checked_form
from portal.web.pages import language, render, with_db
from portal.web.public import to_results, within_client_limit

MAX_TYPED = 64  # a code is 25 characters; room for spaces a person types


async def code_page(request: Request) -> Response:
    incident = await _incident(request)
    return _form(request, incident)


async def code(request: Request) -> Response:
    incident = await _incident(request)
    form = await checked_form(request)
    await within_client_limit(request, "code")
    typed = form.get("code")
    typed = typed[:MAX_TYPED] if isinstance(typed, str) else ""
    lang = language(request, incident)
    cookie = await with_db(request, open_code, request.app.state.settings, incident, typed, lang)
    if cookie is None:
        shown = "".join(ch for ch in typed if ch.isprintable())
        return _form(request, incident, error=True, typed=shown, status=400)
    return to_results(request, incident.slug, cookie)


def _form(
    request: Request,
    incident: stored.Incident,
    *,
    error: bool = False,
    typed: str = "",
    status: int = 200,
) -> Response:
    response = render(
        request,
        "code.html",
        lang=language(request, incident),
        incident=incident,
        error=error,
        typed=typed,
    )
    response.status_code = status
    return response


async def _incident(request: Request) -> stored.Incident:
    slug = request.path_params["incident"]
    if not SLUG.fullmatch(slug):
        raise HTTPException(404)
    incident: stored.Incident | None = await request.app.state.incidents.incident(slug)
    if incident is None:
        raise HTTPException(404)
    return incident


routes = [
    Route("/{incident}/code", code_page, methods=["GET"]),
    Route("/{incident}/code", code, methods=["POST"]),
]
