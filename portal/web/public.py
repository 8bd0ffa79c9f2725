"""The person's pages: incident, lookup, sent, link confirmation, results, deletion."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from portal.core import metrics
from portal.core.blind_index import InvalidEmail, normalise
from portal.core.clock import utcnow
from portal.core.tokens import (
    SENT_ADDRESS_MAX_AGE,
    TokenExpired,
    TokenInvalid,
    sent_address_sealer,
)
from portal.incidents import stored
from portal.incidents.file import SLUG
from portal.person import addresses, lookups, sessions
from portal.person.results import ResultsPage, advice_once, read_results
from portal.requests import deletions
from portal.web.csrf import checked_form, rotate_csrf_cookie
from portal.web.pages import client_address, language, render, render_shared, with_db

SESSION_COOKIE = "portal_session"
# After a deletion request, which partner's element says so (a slug or "all"), once.
FLASH_COOKIE = "portal_flash"
# The address just typed, sealed, for the "check your inbox" page alone to show back, once.
SENT_COOKIE = "portal_sent"
SENT_MAX_AGE = SENT_ADDRESS_MAX_AGE


async def home(request: Request) -> Response:
    found = await request.app.state.incidents.incidents()
    if len(found) == 1:
        return await _incident_page(request, found[0])
    return render(request, "incidents.html", lang=language(request, None), incidents=found)


async def incident_without_slash(request: Request) -> Response:
    """`/{incident}` → `/{incident}/`, relative: the Host header never makes the URL."""
    incident = await _incident(request)
    return RedirectResponse(f"/{incident.slug}/", status_code=308)


async def incident_page(request: Request) -> Response:
    return await _incident_page(request, await _incident(request))


async def partner_page(request: Request) -> Response:
    """A partner's entry page: the incident's page, headed with the partner and its intro."""
    incident = await _incident(request)
    partner = await _entry_partner(request, incident, request.path_params["partner"])
    if partner is None:
        raise HTTPException(404)
    return await _incident_page(request, incident, partner=partner)


async def partner_without_slash(request: Request) -> Response:
    incident = await _incident(request)
    partner = await _entry_partner(request, incident, request.path_params["partner"])
    if partner is None:
        raise HTTPException(404)
    return RedirectResponse(f"/{incident.slug}/p/{partner.slug}/", status_code=308)


async def _entry_partner(
    request: Request, incident: stored.Incident, slug: object
) -> stored.Partner | None:
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        return None
    partners = await request.app.state.incidents.partners(incident)
    return lookups.entry_partner(partners, slug)


async def _incident_page(
    request: Request,
    incident: stored.Incident,
    *,
    error: str | None = None,
    typed: str = "",
    partner: stored.Partner | None = None,
) -> Response:
    if error is None and partner is None:
        # The page everyone opens: the same for all but the CSRF token, rendered once.
        lang = language(request, incident)
        return render_shared(request, "incident.html", lang=lang, of=incident, incident=incident)
    return render(
        request,
        "incident.html",
        lang=language(request, incident),
        status=400 if error else 200,
        incident=incident,
        error=error,
        typed=typed,
        partner=partner,
    )


async def lookup(request: Request) -> Response:
    incident = await _incident(request)
    form = await checked_form(request)
    address = form.get("email")
    # Checked after the response, with the rest: an unknown partner is no partner.
    partner = form.get("partner")
    entry = partner if isinstance(partner, str) and SLUG.fullmatch(partner) else None
    try:
        normalised = normalise(address if isinstance(address, str) else "")
    except InvalidEmail as exc:
        # The form keeps what the person typed (escaped), without control characters.
        typed = "".join(ch for ch in str(address or "") if ch.isprintable())[:320]
        shown = await _entry_partner(request, incident, entry)
        return await _incident_page(request, incident, error=exc.code, typed=typed, partner=shown)
    request_ = lookups.LookupRequest(
        incident.slug,
        normalised,
        client_address(request),
        language(request, incident),
        partner=entry,
        session_token=request.cookies.get(SESSION_COOKIE),
    )
    # Hashing, limits and the mail happen in the background (portal.person.lookup_queue); a shed
    # lookup answers the same.
    request.app.state.lookups.submit(request_)
    response = RedirectResponse(f"/{incident.slug}/sent", status_code=303)
    # Every valid address gets this cookie, of one length: known or not, limited or not.
    typed = sent_address_sealer(request.app.state.settings).seal(str(address).strip())
    response.set_cookie(SENT_COOKIE, typed, max_age=SENT_MAX_AGE, **_sent_cookie(request, incident))
    return response


async def sent(request: Request) -> Response:
    """The "check your inbox" page, with the address typed shown back once: a typo shows."""
    incident = await _incident(request)
    minutes = request.app.state.settings.link_ttl // 60
    response = render(
        request,
        "sent.html",
        lang=language(request, incident),
        incident=incident,
        minutes=minutes,
        address=_typed_address(request),
    )
    response.delete_cookie(SENT_COOKIE, **_sent_cookie(request, incident))
    return response


def _typed_address(request: Request) -> str | None:
    cookie = request.cookies.get(SENT_COOKIE)
    if not cookie:
        return None
    try:
        return sent_address_sealer(request.app.state.settings).open(cookie) or None
    except TokenInvalid:
        return None


def _sent_cookie(request: Request, incident: stored.Incident) -> dict[str, Any]:
    """The browser sends it to the "check your inbox" page only."""
    secure = request.app.state.settings.https
    return {"path": f"/{incident.slug}/sent", "httponly": True, "samesite": "lax", "secure": secure}


async def confirm_page(request: Request) -> Response:
    token = request.path_params["token"]
    settings = request.app.state.settings
    try:
        slug = await with_db(request, sessions.peek_link, settings, token)
    except TokenInvalid as exc:
        return await _bad_link(request, exc, token)
    incident = await request.app.state.incidents.incident(slug)
    return render(request, "confirm.html", lang=language(request, incident), incident=incident)


async def confirm(request: Request) -> Response:
    await checked_form(request)
    await within_client_limit(request, "confirm")
    state = request.app.state
    token = request.path_params["token"]
    try:
        cookie, session = await with_db(
            request,
            addresses.confirm,
            state.settings,
            token,
            request.cookies.get(SESSION_COOKIE),
        )
    except TokenInvalid as exc:
        return await _bad_link(request, exc, token)
    except addresses.TooManyAddresses:
        return await _too_many_addresses(request, token)
    # A new session, or the browser's own with the address added: a new cookie either way.
    return to_results(request, session.incident_slug, cookie)


async def within_client_limit(request: Request, limit: str) -> None:
    """Counts the request against the client's `limit`; 429 with Retry-After past it."""
    limiter = request.app.state.limiter
    client = client_address(request)
    if not await limiter.hit(limit, client):
        metrics.rate_limited_total.labels(limit=limit).inc()
        wait = await limiter.retry_after(limit, client)
        raise HTTPException(429, headers={"Retry-After": str(wait)})


def to_results(request: Request, slug: str, cookie: str) -> Response:
    """303 to the incident's results page, holding the session `cookie` (and a new CSRF
    cookie: the session changed)."""
    settings = request.app.state.settings
    response = RedirectResponse(f"/{slug}/results", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=settings.session_ttl,
        httponly=True,
        samesite="lax",
        secure=settings.https,
        path="/",
    )
    rotate_csrf_cookie(request, response)
    return response


async def _too_many_addresses(request: Request, token: str) -> Response:
    """The 11th address: said plainly, the link left unused for another browser."""
    try:  # used meanwhile (another tab): said as for any used link
        slug = await with_db(request, sessions.peek_link, request.app.state.settings, token)
    except TokenInvalid as exc:
        return await _bad_link(request, exc, token)
    incident = await with_db(request, stored.get_incident, slug)
    return render(
        request,
        "too_many_addresses.html",
        lang=language(request, incident),
        status=409,
        incident=incident,
        most=addresses.MAX_ADDRESSES,
    )


async def _bad_link(request: Request, exc: TokenInvalid, token: str) -> Response:
    if isinstance(exc, sessions.NoticeLinkUsed):
        reason, status = "notice_used", 410
    elif isinstance(exc, sessions.NoticeLinkExpired):
        reason, status = "notice_expired", 410
    elif isinstance(exc, sessions.LinkUsed):
        reason, status = "link_used", 410
    elif isinstance(exc, TokenExpired):
        reason, status = "link_expired", 410
    else:
        reason, status = "link_invalid", 400
    genuine = sessions.genuine_link(request.app.state.settings, token)
    origin = await with_db(request, sessions.link_origin, *genuine) if genuine else None
    incident = await _incident_of(request, origin)
    return render(
        request,
        "link_invalid.html",
        lang=language(request, incident, carried=origin.lang if origin else None),
        status=status,
        reason=reason,
        incident=incident,
    )


async def _incident_of(
    request: Request, origin: sessions.LinkOrigin | None
) -> stored.Incident | None:
    """The incident a dead link was for; for a link not ours, the only incident if one."""
    cache = request.app.state.incidents
    if origin is not None:
        found: stored.Incident | None = await cache.incident(origin.incident)
        return found
    every = await cache.incidents()
    return every[0] if len(every) == 1 else None


async def results(request: Request) -> Response:
    incident = await _incident(request)
    page = await _results_page(request, incident)
    if page is None:
        return RedirectResponse(f"/{incident.slug}/", status_code=303)
    lang = language(request, incident, carried=page.session.lang)
    flash = request.cookies.get(FLASH_COOKIE)
    today = utcnow()
    layout = page.layout()
    if flash is None and layout is not None:
        # Most pages on notice day: one of a few layouts, rendered once, the addresses and
        # the CSRF token filled in.
        response = render_shared(
            request,
            "results.html",
            lang=lang,
            of=incident,
            # A letter's code session shows no address and offers one for the answers.
            shape=("results", today.date(), page.session.sealed_email is None, layout),
            values=[each.view.address for each in page.addresses],
            context=lambda shown: _results_context(request, incident, page, shown, today, None),
        )
    else:
        shown = [each.view.address for each in page.addresses]
        context = _results_context(request, incident, page, shown, today, flash)
        response = render(request, "results.html", lang=lang, **context)
    if flash is not None:  # shown once
        response.delete_cookie(FLASH_COOKIE, path=f"/{incident.slug}/")
    return response


def _results_context(
    request: Request,
    incident: stored.Incident,
    page: ResultsPage,
    shown: list[str | None],
    today: datetime,
    flash: str | None,
) -> dict[str, Any]:
    """What results.html shows, each address as `shown` says (itself, or a stand-in)."""
    each_address = page.with_addresses(shown)
    return {
        "incident": incident,
        "addresses": each_address,
        "advice": advice_once(each.view for each in each_address),
        "most": addresses.MAX_ADDRESSES,
        "flash": flash,
        "minutes": request.app.state.settings.session_ttl // 60,
        "today": today,
        "by_code": page.session.sealed_email is None,  # a letter's code: no address
    }


async def confirm_all(request: Request) -> Response:
    """Asking every organisation at once is asked again first (no JavaScript needed)."""
    incident = await _incident(request)
    page = await _results_page(request, incident)
    if page is None:
        return RedirectResponse(f"/{incident.slug}/", status_code=303)
    session = page.session
    shown = page.addresses
    if not any(a.view.without_request for a in shown):
        return RedirectResponse(f"/{incident.slug}/results", status_code=303)
    return render(
        request,
        "confirm_all.html",
        lang=language(request, incident, carried=session.lang),
        incident=incident,
        addresses=shown,
    )


async def deletion(request: Request) -> Response:
    incident = await _incident(request)
    form = await checked_form(request)
    session = await _session(request, incident)
    if session is None:
        return RedirectResponse(f"/{incident.slug}/", status_code=303)
    partner = form.get("partner")
    if not isinstance(partner, str) or not partner:
        raise HTTPException(400)
    address = form.get("address")
    state = request.app.state
    try:
        index = await with_db(
            request,
            addresses.request_deletion,
            state.settings,
            session,
            partner=partner,
            address=address if isinstance(address, str) else None,
            renderer=state.renderer,
        )
    except deletions.PartnerNotFound:
        raise HTTPException(404) from None
    if state.mail_worker is not None:
        state.mail_worker.wake()
    # Back where the person was, with the message there: that partner's element (of that
    # address: the first address's elements keep the plain id).
    key = partner if partner == "all" or index <= 1 else f"{partner}-{index}"
    anchor = "requests" if partner == "all" else f"partner-{key}"
    response = RedirectResponse(f"/{incident.slug}/results#{anchor}", status_code=303)
    response.set_cookie(
        FLASH_COOKIE,
        key,
        max_age=300,
        httponly=True,
        samesite="lax",
        secure=state.settings.https,
        path=f"/{incident.slug}/",
    )
    return response


async def _results_page(request: Request, incident: stored.Incident) -> ResultsPage | None:
    """The session and the results of its every address in one query (one thread hop)."""
    partners = await request.app.state.incidents.partners(incident)
    return await with_db(
        request,
        read_results,
        request.app.state.settings,
        request.cookies.get(SESSION_COOKIE),
        incident=incident,
        partners=partners,
    )


async def _incident(request: Request) -> stored.Incident:
    slug = request.path_params["incident"]
    # No incident has another slug; and PostgreSQL refuses a NUL in a query's text (a 500).
    if not SLUG.fullmatch(slug):
        raise HTTPException(404)
    incident: stored.Incident | None = await request.app.state.incidents.incident(slug)
    if incident is None:
        raise HTTPException(404)
    return incident


async def _session(request: Request, incident: stored.Incident) -> sessions.VerifiedSession | None:
    settings = request.app.state.settings
    cookie = request.cookies.get(SESSION_COOKIE)
    session = await with_db(request, sessions.load_session, settings, cookie)
    if session is None or session.incident_id != incident.id:
        return None
    return session


routes = [
    Route("/", home, methods=["GET"]),
    Route("/v/{token}", confirm_page, methods=["GET"]),
    Route("/v/{token}", confirm, methods=["POST"]),
    Route("/{incident}", incident_without_slash, methods=["GET"]),
    Route("/{incident}/", incident_page, methods=["GET"]),
    Route("/{incident}/p/{partner}", partner_without_slash, methods=["GET"]),
    Route("/{incident}/p/{partner}/", partner_page, methods=["GET"]),
    Route("/{incident}/lookup", lookup, methods=["POST"]),
    Route("/{incident}/sent", sent, methods=["GET"]),
    Route("/{incident}/results", results, methods=["GET"]),
    Route("/{incident}/deletion", deletion, methods=["POST"]),
    Route("/{incident}/deletion/all", confirm_all, methods=["GET"]),
]
