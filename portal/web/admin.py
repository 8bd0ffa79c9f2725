"""The operator's pages under /admin: login, the queue, one request, export, audit, figures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from portal.core import metrics
from portal.core.clock import utcnow
from portal.core.fields import FIELDS
from portal.core.i18n import N_, SUPPORTED, choose_language, gettext
from portal.operator import accounts, export, overview, queue, stats
from portal.operator.accounts import OperatorSession
from portal.requests import decisions
from portal.requests.deletions import GROUNDS, STATUSES, Actor, RequestNotFound, RequestRefused
from portal.store import audit
from portal.web import charts
from portal.web.csrf import checked_form, rotate_csrf_cookie
from portal.web.forms import number, read_decision, text
from portal.web.pages import LANG_COOKIE, client_address, render, with_db

ADMIN_COOKIE = "portal_admin"
ADMIN_PATH = "/admin"
LOGIN = "/admin/login"
LOGIN_REFUSED = N_("Unknown username or wrong password.")
LOGIN_THROTTLED = N_("Too many failed logins. Wait a while, then try again.")
OPERATOR_STATUSES = ("forwarded", "completed", "rejected")
AUDIT_PAGE = 200
NO_STATUS = N_("Choose the new status.")
# The operator's languages: English for a browser that asks for neither of them.
ADMIN_LANGUAGES = ["en", *(lang for lang in SUPPORTED if lang != "en")]
# The detail of the audit entry written at an operator's first view of a request in a day.
VIEWED = "first view today (UTC); it shows the person's address"
Endpoint = Callable[[Request], Awaitable[Response]]


def admin_language(request: Request) -> str:
    """The operator's language, chosen as a visitor's is: the switch, then the browser."""
    return choose_language(
        ADMIN_LANGUAGES,
        query=request.query_params.get("lang"),
        cookie=request.cookies.get(LANG_COOKIE),
        accept=request.headers.get("accept-language"),
    )


def said(request: Request, message: str) -> str:
    """A message of this module in the operator's language."""
    return gettext(admin_language(request), message)


def page(request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
    """An admin page in the operator's language, with the signed-in operator for the
    navigation and the language switch."""
    operator = getattr(request.state, "operator", None)
    return render(
        request,
        f"admin/{template}",
        lang=admin_language(request),
        status=status,
        operator=operator,
        languages=list(SUPPORTED),
        **context,
    )


def operator_only(endpoint: Endpoint) -> Endpoint:
    """The endpoint behind the operator's session; without one, 303 to the login page."""

    async def guarded(request: Request) -> Response:
        settings = request.app.state.settings
        token = request.cookies.get(ADMIN_COOKIE)
        session = await with_db(request, accounts.load_session, settings, token)
        if session is None:
            return RedirectResponse(LOGIN, status_code=303)
        request.state.operator = session
        return await endpoint(request)

    return guarded


def _operator(request: Request) -> OperatorSession:
    session: OperatorSession = request.state.operator
    return session


def _actor(request: Request) -> Actor:
    return Actor("operator", _operator(request).username, "admin")


# -- login -------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    return page(request, "login.html")


async def login(request: Request) -> Response:
    form = await checked_form(request)
    username, password = text(form, "username") or "", form.get("password")
    password = password if isinstance(password, str) else ""
    limiter, client = request.app.state.limiter, client_address(request)
    account = username.lower()[:64]
    allowed = await limiter.allows("login", client) and await limiter.allows(
        "login_account", account
    )
    if not allowed:
        metrics.rate_limited_total.labels(limit="login").inc()
        refused = said(request, LOGIN_THROTTLED)
        return page(request, "login.html", status=429, error=refused, username=username)
    operator = await with_db(request, accounts.authenticate, username=username, password=password)
    if operator is None:
        await limiter.hit("login", client)
        await limiter.hit("login_account", account)
        await with_db(request, _audit_failed_login, username)
        refused = said(request, LOGIN_REFUSED)
        return page(request, "login.html", status=400, error=refused, username=username)
    token = await with_db(request, _start, request.app.state.settings, operator)
    response = RedirectResponse(f"{ADMIN_PATH}/", status_code=303)
    response.set_cookie(
        ADMIN_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.https,
        path=ADMIN_PATH,
    )
    rotate_csrf_cookie(request, response)
    return response


def _start(conn: Any, settings: Any, operator: accounts.Operator) -> str:
    audit.record(conn, actor=f"operator:{operator.username}", action="login", object="admin")
    return accounts.start_session(conn, settings, operator)


def _audit_failed_login(conn: Any, username: str) -> None:
    # What was typed is written only when it could be a username: never an address.
    name = username if accounts.USERNAME.fullmatch(username) else "(not a username)"
    audit.record(conn, actor="system", action="login_failed", object=f"operator:{name}")


async def logout(request: Request) -> Response:
    await checked_form(request)
    await with_db(request, _end, _operator(request))
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path=ADMIN_PATH)
    return response


def _end(conn: Any, session: OperatorSession) -> None:
    accounts.end_session(conn, session.id)
    audit.record(conn, actor=f"operator:{session.username}", action="logout", object="admin")


# -- figures, queue, one request -----------------------------------------------------------


async def home(request: Request) -> Response:
    figures, notice_day = await with_db(request, _figures)
    return page(
        request,
        "home.html",
        figures=figures,
        overview=notice_day,
        bars=charts.hourly_bars,
        notice_statuses=stats.PARTNER_NOTICES,
    )


def _figures(
    conn: Any,
) -> tuple[list[tuple[stats.IncidentFigures, list[stats.PartnerFigures]]], overview.Overview]:
    partners = stats.partner_figures(conn)
    per_incident = [
        (incident, [p for p in partners if p.incident == incident.incident])
        for incident in stats.incident_figures(conn)
    ]
    return per_incident, overview.overview(conn)


async def requests_page(request: Request) -> Response:
    params = request.query_params
    wanted = queue.QueueFilter(
        incident=params.get("incident") or None,
        partner=params.get("partner") or None,
        status=params.get("status") or None,
        overdue=params.get("overdue") in ("1", "true", "on"),
        page=int(params["page"]) if params.get("page", "").isdigit() else 1,
    )
    today = utcnow().date()
    found, choices = await with_db(request, _queue, wanted, today)
    return page(request, "requests.html", queue=found, wanted=wanted, choices=choices, today=today)


def _queue(
    conn: Any, wanted: queue.QueueFilter, today: Any
) -> tuple[queue.Queue, dict[str, list[str]]]:
    return queue.list_requests(conn, wanted, today=today), queue.filter_choices(conn)


@dataclass(frozen=True)
class Refusal:
    """A decision not made: shown on the request's page, in the form that asked for it."""

    form: str  # status, extend or retry
    message: str
    errors: dict[str, str]  # a field's name: what is wrong with it
    typed: dict[str, Any]  # the form as it was sent, to fill it in again
    status: int = 409


async def request_page(request: Request, *, refusal: Refusal | None = None) -> Response:
    reference = request.path_params["reference"]
    try:
        detail = await with_db(request, _viewed, reference, _operator(request).username)
    except RequestNotFound:
        raise HTTPException(404) from None
    return page(
        request,
        "request.html",
        status=refusal.status if refusal else 200,
        detail=detail,
        refusal=refusal,
        today=utcnow().date(),
        statuses=OPERATOR_STATUSES,
        grounds=GROUNDS,
        all_statuses=STATUSES,
        all_fields=FIELDS,
    )


def _viewed(conn: Any, reference: str, username: str) -> queue.RequestDetail:
    detail = queue.request_detail(conn, reference)
    # It shows a person's address: who saw it is kept, once a day, not at every reload
    # (and never the address itself).
    audit.record_daily(
        conn,
        actor=f"operator:{username}",
        action="request_viewed",
        object=reference,
        detail=VIEWED,
    )
    return detail


def _typed(form: FormData, *names: str) -> dict[str, Any]:
    """What the operator sent, as sent: to fill the form in again when it is refused."""
    typed: dict[str, Any] = {n: v for n in names if isinstance(v := form.get(n), str)}
    typed["kept"] = [k for k in form.getlist("kept") if isinstance(k, str)]
    return typed


async def set_status(request: Request) -> Response:
    form = await checked_form(request, max_fields=40)
    decision = read_decision(form)
    typed = _typed(form, "status", "note", "ground", "reason", "partner_reference")
    if not decision.status:
        asked = said(request, NO_STATUS)
        refusal = Refusal("status", asked, {"status": asked}, typed, status=400)
        return await request_page(request, refusal=refusal)
    state = request.app.state
    return await _decide(
        request,
        ("status", typed),
        decisions.change_status,
        to=decision.status,
        actor=_actor(request),
        renderer=state.renderer,
        version=decision.version,
        note=decision.note,
        ground=decision.ground,
        reason=decision.reason,
        partner_reference=decision.partner_reference,
        kept_fields=decision.kept_fields,
    )


async def extend(request: Request) -> Response:
    form = await checked_form(request)
    return await _decide(
        request,
        ("extend", _typed(form, "months", "reason")),
        decisions.extend,
        months=number(form, "months") or 0,
        reason=text(form, "reason"),
        actor=_actor(request),
        renderer=request.app.state.renderer,
        version=number(form, "version"),
    )


async def retry(request: Request) -> Response:
    form = await checked_form(request)
    state = request.app.state
    return await _decide(
        request,
        ("retry", {}),
        decisions.retry,
        state.settings,
        actor=_actor(request),
        renderer=state.renderer,
        version=number(form, "version"),
    )


async def _decide(
    request: Request,
    sent: tuple[str, dict[str, Any]],
    decide: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> Response:
    """Makes the decision, then 303 to the request; refused, its page with the form as sent."""
    reference = request.path_params["reference"]
    try:
        await with_db(request, decide, *args, reference=reference, **kwargs)
    except RequestNotFound:
        raise HTTPException(404) from None
    except RequestRefused as exc:
        form, typed = sent
        # What the lifecycle says beside a field is a catalogue message (decisions.NEEDS_*).
        errors = {name: said(request, message) for name, message in exc.fields.items()}
        return await request_page(request, refusal=Refusal(form, str(exc), errors, typed))
    if request.app.state.mail_worker is not None:
        request.app.state.mail_worker.wake()
    return RedirectResponse(f"{ADMIN_PATH}/requests/{reference}", status_code=303)


# -- export and audit ----------------------------------------------------------------------


async def export_csv(request: Request) -> Response:
    incident, partner = request.path_params["incident"], request.path_params["partner"]
    try:
        body = await with_db(request, _export, incident, partner, _operator(request).username)
    except export.ExportNotFound:
        raise HTTPException(404) from None
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{incident}-{partner}-requests.csv"'
        },
    )


def _export(conn: Any, incident: str, partner: str, username: str) -> bytes:
    body, _rows = export.export_requests(
        conn, incident=incident, partner=partner, actor=f"operator:{username}"
    )
    return body


async def audit_page(request: Request) -> Response:
    number_ = request.query_params.get("page", "")
    current = int(number_) if number_.isdigit() and int(number_) > 0 else 1
    entries, total = await with_db(request, _audit, current)
    pages = max(1, -(-total // AUDIT_PAGE))
    return page(request, "audit.html", entries=entries, page=current, pages=pages, total=total)


def _audit(conn: Any, current: int) -> tuple[list[audit.Entry], int]:
    return audit.entries(conn, limit=AUDIT_PAGE, offset=(current - 1) * AUDIT_PAGE), audit.count(
        conn
    )


async def to_home(request: Request) -> Response:
    return RedirectResponse(f"{ADMIN_PATH}/", status_code=308)


async def not_found(request: Request) -> Response:
    raise HTTPException(404)


routes = [
    Route("/admin", to_home, methods=["GET"]),
    Route("/admin/login", login_page, methods=["GET"]),
    Route("/admin/login", login, methods=["POST"]),
    Route("/admin/logout", operator_only(logout), methods=["POST"]),
    Route("/admin/", operator_only(home), methods=["GET"]),
    Route("/admin/requests", operator_only(requests_page), methods=["GET"]),
    Route("/admin/requests/{reference}", operator_only(request_page), methods=["GET"]),
    Route("/admin/requests/{reference}/status", operator_only(set_status), methods=["POST"]),
    Route("/admin/requests/{reference}/extend", operator_only(extend), methods=["POST"]),
    Route("/admin/requests/{reference}/retry", operator_only(retry), methods=["POST"]),
    Route("/admin/export/{incident}/{partner}.csv", operator_only(export_csv), methods=["GET"]),
    Route("/admin/audit", operator_only(audit_page), methods=["GET"]),
    # Anything else under /admin: the login first, then a 404.
    Route("/admin/{rest:path}", operator_only(not_found), methods=["GET", "POST"]),
]
