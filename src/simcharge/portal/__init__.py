"""The customer portal: server-rendered pages (Jinja2) over the same services as the JSON API.

`install(app)` adds its routes, its static files and the page that answers its errors."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from simcharge.auth.deps import session_cookie
from simcharge.config import Settings
from simcharge.errors import NotAuthenticated, SimchargeError
from simcharge.kit.translations import N_, translate
from simcharge.portal.account import retry_at
from simcharge.portal.account import router as account_router
from simcharge.portal.help import router as help_router
from simcharge.portal.profile import router as profile_router
from simcharge.portal.public import router as public_router
from simcharge.portal.security import router as security_router
from simcharge.portal.transfers import router as transfers_router
from simcharge.portal.web import (
    STATIC,
    Visitor,
    _here,
    choose_language,
    redirect,
    render,
    safe_next,
    visitor,
)

log = structlog.get_logger(__name__)

FORM_NOT_SENT = N_(
    "The form was not sent because you are not signed in (a session ends after some time "
    "without use). Sign in to return to the form and send it again."
)

ROUTERS = (
    public_router, account_router, security_router, help_router, transfers_router, profile_router
)


def form_page(request: Request) -> str:
    """The page a form was sent from, to come back to after signing in: the browser's
    `Referer` when it is a page of this site (with its query: the top-up review's choices),
    else the nearest page above the form's address (`/account/help/{id}/reply` →
    `/account/help/{id}`). Always a path on this site (`safe_next`)."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.scheme in ("http", "https") and referer.netloc == request.url.netloc:
        path = referer.path + (f"?{referer.query}" if referer.query else "")
        if path.startswith("/") and not path.startswith(("/login", "/logout")):
            return safe_next(path, _here(request))
    return safe_next(_here(request))


def problem_page(request: Request, exc: SimchargeError) -> Response:
    """An expected failure on a portal page: sign in first, or a page that says what happened.
    A form sent after the session ended: the page says so and offers to sign in, back to the
    form's page (what was typed is not kept)."""
    page: Visitor | None = getattr(request.state, "visitor", None)
    settings: Settings = request.app.state.settings
    sign_in_next, detail, params = None, exc.detail_template, exc.params
    if isinstance(exc, NotAuthenticated):
        if request.method in ("GET", "HEAD"):
            query = request.url.query
            here = request.url.path + (f"?{query}" if query else "")
            return redirect("/login?" + urlencode({"next": safe_next(here)}))
        sign_in_next = "/login?" + urlencode({"next": form_page(request)})
        detail, params = FORM_NOT_SENT, {}
    if page is None:  # failed while finding out who it is (the database): the operator's zone,
        # the portal's language rule without the account (the switch's cookie, the browser's)
        page = Visitor(
            getattr(request.state, "language", None) or choose_language(request, settings, None),
            None, "", zone=settings.operator_timezone,
        )  # fmt: skip
    return render(
        request,
        page,
        "error.html",
        status=exc.status,
        headers=exc.headers,
        retry_at=retry_at(exc),
        title=translate(page.language, exc.title),
        detail=translate(page.language, detail).format(**params)
        if params
        else translate(page.language, detail),
        request_id=getattr(request.state, "request_id", None),
        sign_in_next=sign_in_next,
    )


async def problem_visitor(request: Request) -> None:
    """Who reads a page no route answered (a mistyped address, a form's address opened as a
    page: no `visitor` ran), so that it speaks the portal's language. With a session cookie,
    the visitor as every page finds it: one read, for the account's language, its zone and the
    signed-in header. Without one (most such requests: robots, old links), no read: the
    switch's cookie, else the browser's language, else the operator's."""
    settings: Settings = request.app.state.settings
    if request.cookies.get(session_cookie(settings)):
        try:
            await visitor(request)
            return
        except Exception:  # the database failing: the page answers without it
            log.warning("portal.problem_visitor_failed", path=request.url.path, exc_info=True)
    request.state.language = choose_language(request, settings, None)


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.router.routes.extend(router.routes)
    app.mount("/static/portal", StaticFiles(directory=STATIC), name="portal-static")
    app.state.html_problem = problem_page
    app.state.html_visitor = problem_visitor
