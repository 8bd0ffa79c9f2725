"""A partner's pages: its request's /r/ link (page and form), and the signed report-back API."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portal.core.fields import BY_KEY, to_bits
from portal.core.printable import quoted
from portal.core.tokens import TokenInvalid
from portal.requests import reporting
from portal.requests.deletions import GROUNDS, RequestNotFound, RequestRefused
from portal.web.csrf import checked_form
from portal.web.forms import read_decision
from portal.web.pages import language, render, with_db

TEXTS = ("outcome", "ground", "reason", "note", "partner_reference")
EXPECTED = (
    'expected an object: {"outcome": "completed" or "rejected", "ground", "reason", '
    '"partner_reference", "kept": [field keys]}'
)


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
            renderer=state.renderer,
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
    try:
        payload = _payload(body)
    except BadPayload as exc:
        return _error(400, str(exc), **exc.details)
    try:
        changed = await with_db(
            request,
            reporting.report_by_api,
            reference=reference,
            partner=partner,
            renderer=request.app.state.renderer,
            **payload,
        )
    except RequestRefused as exc:
        return _error(409, str(exc), **_refused_details(exc))
    _wake(request)
    return JSONResponse({"reference": changed.reference, "status": changed.status})


class BadPayload(ValueError):
    """A body the API cannot read as a report: the message names the field and what it takes."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = {key: value for key, value in details.items() if value is not None}


def _payload(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadPayload(f"the body is not JSON ({exc}); {EXPECTED}") from None
    if not isinstance(data, dict):
        raise BadPayload(f"the body is a JSON {_json_type(data)}; {EXPECTED}")
    strings = {key: _string(data, key) for key in TEXTS}
    outcome = strings.pop("outcome") or ""
    return {"outcome": outcome, **strings, "kept_fields": to_bits(_kept(data))}


def _string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        got = _json_type(value)
        raise BadPayload(f"{key}: expected a string, got a JSON {got}", field=key)
    return value


def _kept(data: dict[str, Any]) -> list[str]:
    """The field keys the partner keeps: each one of the vocabulary, named when it is not."""
    kept = data.get("kept", [])
    allowed = list(BY_KEY)
    if not isinstance(kept, list):
        raise BadPayload(
            f"kept: expected a list of field keys, got a JSON {_json_type(kept)}",
            field="kept",
            allowed=allowed,
        )
    for key in kept:
        if not isinstance(key, str) or key not in BY_KEY:
            shown = quoted(key) if isinstance(key, str) else f"a JSON {_json_type(key)}"
            raise BadPayload(
                f"kept: {shown} is not a field key; the field keys are: {', '.join(allowed)}",
                field="kept",
                value=key if isinstance(key, str) else None,
                allowed=allowed,
            )
    return kept


def _json_type(value: object) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _refused_details(exc: RequestRefused) -> dict[str, object]:
    details = {"field": exc.field, "value": exc.value, "allowed": list(exc.allowed) or None}
    return {key: value for key, value in details.items() if value is not None}


def _error(status: int, message: str, **details: object) -> Response:
    return JSONResponse({"error": message, **details}, status_code=status)


def _wake(request: Request) -> None:
    if request.app.state.mail_worker is not None:
        request.app.state.mail_worker.wake()


routes = [
    Route("/r/{token}", request_page, methods=["GET"]),
    Route("/r/{token}", report, methods=["POST"]),
    Route("/api/requests/{reference}", api_report, methods=["POST"]),
]
