"""CSRF protection: a random cookie and a form token that is its keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "portal_csrf"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def csrf_token(request: Request) -> str:
    """The token for this visitor's forms; starts their CSRF cookie when they have none."""
    value = request.cookies.get(COOKIE) or getattr(request.state, "csrf_cookie", None)
    if not value:
        value = secrets.token_urlsafe(32)
        request.state.csrf_cookie = value
    return _sign(request, value)


def rotate_csrf_cookie(request: Request, response: Response) -> None:
    """A fresh CSRF cookie when a session starts: a value planted before it is worth nothing."""
    request.state.csrf_cookie = secrets.token_urlsafe(32)
    set_csrf_cookie(request, response)


def set_csrf_cookie(request: Request, response: Response) -> None:
    value = getattr(request.state, "csrf_cookie", None)
    if value:
        settings = request.app.state.settings
        response.set_cookie(
            COOKIE, value, httponly=True, samesite="lax", secure=settings.https, path="/"
        )


async def checked_form(request: Request, *, max_fields: int = 20, max_files: int = 0) -> FormData:
    """The POSTed form, after checking its content type (415) and CSRF token (403)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in FORM_TYPES:
        raise HTTPException(415)
    form = await request.form(max_files=max_files, max_fields=max_fields)
    cookie = request.cookies.get(COOKIE)
    token = form.get("csrf_token")
    # Bytes: compare_digest refuses a str with non-ASCII characters (a 500, not a 403).
    if (
        not cookie
        or not isinstance(token, str)
        or not hmac.compare_digest(token.encode(), _sign(request, cookie).encode())
    ):
        await form.close()  # an uploaded file's temporary copy
        raise HTTPException(403)
    return form


def _sign(request: Request, value: str) -> str:
    key = request.app.state.settings.secret_key.encode()
    return hmac.new(key, b"csrf:" + value.encode(), hashlib.sha256).hexdigest()
