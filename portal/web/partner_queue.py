"""A partner's queue page (/r/partner/{token}): open requests, their CSV, uploaded outcomes."""

from __future__ import annotations

import re

import anyio.to_thread
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message

from portal.core.tokens import TokenExpired, TokenInvalid
from portal.requests import partner_queue
from portal.requests.partner_queue import UPLOAD_MAX_BYTES, BadUpload
from portal.web.csrf import checked_form
from portal.web.pages import language, render, with_db

UPLOAD_PATH = re.compile(r"/r/partner/[^/]+/outcomes")
# The form around the file: its boundaries, headers and the CSRF token.
FORM_OVERHEAD = 64 * 1024


class UploadTooLarge(Exception):
    """The body went past the upload's limit while it streamed in."""


async def queue_page(request: Request) -> Response:
    token = request.path_params["token"]
    upload = request.query_params.get("upload", "")
    upload_id = int(upload) if upload.isdigit() and len(upload) < 10 else None
    try:
        settings = request.app.state.settings
        owner, queued, shown = await with_db(
            request, partner_queue.view_queue, settings, token, upload_id=upload_id
        )
    except TokenInvalid as exc:
        return _bad_link(request, exc)
    return render(
        request,
        "partner/queue.html",
        lang=owner.lang,
        owner=owner,
        queued=queued,
        upload=shown,
        token=token,
    )


async def requests_csv(request: Request) -> Response:
    token = request.path_params["token"]
    try:
        owner, body = await with_db(
            request, partner_queue.queue_csv, request.app.state.settings, token
        )
    except TokenInvalid as exc:
        return _bad_link(request, exc)
    name = f"{owner.incident.slug}-{owner.partner.slug}-requests.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def upload_outcomes(request: Request) -> Response:
    """The body is counted as it streams in: past 5 MB (and the form around the file) the
    upload stops there, with 400, before the rest is read."""
    token = request.path_params["token"]
    state = request.app.state
    try:
        form = await checked_form(_limited(request), max_fields=5, max_files=1)  # CSRF: 403
    except UploadTooLarge:
        form = None
    try:
        await with_db(request, partner_queue.owner_of_link, state.settings, token)
    except TokenInvalid as exc:
        if form is not None:
            await form.close()
        return _bad_link(request, exc)
    try:
        if form is None:
            raise BadUpload("the file is over 5 MB: split it in parts")
        rows = partner_queue.read_outcomes(await _file(form))
    except BadUpload as exc:
        return await _refused(request, token, str(exc))
    upload_id = await _apply(request, token, rows)
    if state.mail_worker is not None:
        state.mail_worker.wake()  # the closing emails to the people
    return RedirectResponse(f"/r/partner/{token}?upload={upload_id}", status_code=303)


async def _apply(request: Request, token: str, rows: list[partner_queue.OutcomeRow]) -> int:
    """Applies the rows off the event loop, each in a transaction of its own."""
    state = request.app.state

    def apply() -> int:
        return partner_queue.apply_outcomes(
            state.engine, state.settings, token, rows, renderer=state.renderer
        )

    return await anyio.to_thread.run_sync(apply)


def _limited(request: Request) -> Request:
    """The request, its body refused (UploadTooLarge) once past the upload's limit."""
    most = UPLOAD_MAX_BYTES + FORM_OVERHEAD
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > most):
        raise UploadTooLarge
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > most:
            raise UploadTooLarge
        return message

    return Request(request.scope, counting_receive)


async def _file(form: FormData) -> bytes:
    """The uploaded file `file` of the form; the form's temporary files closed."""
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadUpload("no file: choose a CSV file of outcomes")
        return await upload.read(UPLOAD_MAX_BYTES + 1)
    finally:
        await form.close()


async def _refused(request: Request, token: str, why: str) -> Response:
    owner = await with_db(
        request, partner_queue.refused_upload, request.app.state.settings, token, why
    )
    response = render(
        request, "partner/upload_refused.html", lang=owner.lang, status=400, owner=owner,
        message=why, token=token,
    )  # fmt: skip
    response.headers["Connection"] = "close"  # the rest of a body too large is not read
    return response


def _bad_link(request: Request, exc: TokenInvalid) -> Response:
    if isinstance(exc, TokenExpired):
        reason, status = "partner_queue_expired", 410
    else:
        reason, status = "link_invalid", 400
    lang = language(request, None)
    return render(request, "partner/link_invalid.html", lang=lang, status=status, reason=reason)


routes = [
    Route("/r/partner/{token}", queue_page, methods=["GET"]),
    Route("/r/partner/{token}/requests.csv", requests_csv, methods=["GET"]),
    Route("/r/partner/{token}/outcomes", upload_outcomes, methods=["POST"]),
]
