"""A partner's pages: its request's /r/ link (page and form), and the signed report-back API."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portal import reporting
from portal.deletions import GROUNDS, RequestNotFound, RequestRefused
from portal.fields import BY_KEY, to_bits
from portal.tokens import TokenInvalid
from portal.web.csrf import checked_form
from portal.web.forms import read_decision
from portal.web.pages import language, render, with_db


async def request_page(request: Request) -> Response:
    token = request.path_params["token"]
    try:
        view = await with_db(request, reporting.request_for_link, request.app.state.settings, token)
    except TokenInvalid as exc:
        return _bad_link(request, exc)
    return render(request, "partner/request.html", lang=view.lang, view=view, grounds=GROUNDS)


async def report(request: Request) -> Response:
    form = await checked_form(request, max_fields=40)
    decision = read_decision(form, status_field="outcome")
    token = request.path_params["token"]
    state = request.app.state
    try:
        await with_db(
            request,
            reporting.report_by_link,
            state.settings,
            token,
            outcome=decision.status,
            templates_dir=state.templates_dir,
            version=decision.version,
            note=decision.note,
            ground=decision.ground,
            reason=decision.reason,
            partner_reference=decision.partner_reference,
            kept_fields=decision.kept_fields,
        )
    except TokenInvalid as exc:
        return _bad_link(request, exc)
    except RequestRefused as exc:
        view = await with_db(request, reporting.request_for_link, state.settings, token)
        return render(
            request, "partner/refused.html", lang=view.lang, status=409, view=view, message=str(exc)
        )
    _wake(request)
    return RedirectResponse(request.url.path, status_code=303)


def _bad_link(request: Request, exc: TokenInvalid) -> Response:
    if isinstance(exc, reporting.LinkClosed):
        reason, status = "partner_link_closed", 410
    else:
        reason, status = "link_invalid", 400
    lang = language(request, None)
    return render(request, "partner/link_invalid.html", lang=lang, status=status, reason=reason)


async def api_report(request: Request) -> Response:
    """POST /api/requests/{reference}: JSON, signed like the outgoing webhook."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _error(415, "send application/json")
    body = await request.body()
    reference = request.path_params["reference"]
    headers = request.headers
    try:
        partner = await with_db(
            request,
            reporting.authenticate_call,
            reference=reference,
            timestamp=headers.get("x-portal-timestamp"),
            signature=headers.get("x-portal-signature"),
            body=body,
        )
    except reporting.Unauthenticated as exc:
        return _error(401, str(exc))
    except RequestNotFound:
        return _error(404, "no such request of yours")
    payload = _payload(body)
    if payload is None:
        return _error(400, 'expected a JSON object: {"outcome", "ground", "reason", ...}')
    try:
        changed = await with_db(
            request,
            reporting.report_by_api,
            reference=reference,
            partner=partner,
            templates_dir=request.app.state.templates_dir,
            **payload,
        )
    except RequestRefused as exc:
        return _error(409, str(exc))
    _wake(request)
    return JSONResponse({"reference": changed.reference, "status": changed.status})


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    strings = {k: data.get(k) for k in ("outcome", "ground", "reason", "note", "partner_reference")}
    if not all(v is None or isinstance(v, str) for v in strings.values()):
        return None
    kept = data.get("kept", [])
    if not isinstance(kept, list) or not all(isinstance(k, str) and k in BY_KEY for k in kept):
        return None
    outcome = strings.pop("outcome") or ""
    return {"outcome": outcome, **strings, "kept_fields": to_bits(kept)}


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _wake(request: Request) -> None:
    if request.app.state.mail_worker is not None:
        request.app.state.mail_worker.wake()


routes = [
    Route("/r/{token}", request_page, methods=["GET"]),
    Route("/r/{token}", report, methods=["POST"]),
    Route("/api/requests/{reference}", api_report, methods=["POST"]),
]
