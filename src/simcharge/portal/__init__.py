"""The customer portal: server-rendered pages (Jinja2) over the same services as the JSON API.

`install(app)` adds its routes, its static files and the page that answers its errors."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from simcharge.errors import NotAuthenticated, SimchargeError
from simcharge.kit.translations import translate
from simcharge.portal.account import retry_at
from simcharge.portal.account import router as account_router
from simcharge.portal.help import router as help_router
from simcharge.portal.profile import router as profile_router
from simcharge.portal.public import router as public_router
from simcharge.portal.security import router as security_router
from simcharge.portal.transfers import router as transfers_router
from simcharge.portal.web import STATIC, Visitor, redirect, render, safe_next

ROUTERS = (
    public_router, account_router, security_router, help_router, transfers_router, profile_router
)


def problem_page(request: Request, exc: SimchargeError) -> Response:
    """An expected failure on a portal page: sign in first, or a page that says what happened."""
    page: Visitor | None = getattr(request.state, "visitor", None)
    if isinstance(exc, NotAuthenticated) and request.method == "GET":
        query = request.url.query
        here = request.url.path + (f"?{query}" if query else "")
        return redirect("/login?" + urlencode({"next": safe_next(here)}))
    if page is None:  # failed while finding out who it is (the database): the operator's zone
        page = Visitor(
            getattr(request.state, "language", "en"), None, "",
            zone=request.app.state.settings.operator_timezone,
        )  # fmt: skip
    return render(
        request,
        page,
        "error.html",
        status=exc.status,
        headers=exc.headers,
        retry_at=retry_at(exc),
        title=translate(page.language, exc.title),
        detail=translate(page.language, exc.detail_template).format(**exc.params)
        if exc.params
        else translate(page.language, exc.detail_template),
        request_id=getattr(request.state, "request_id", None),
    )


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.router.routes.extend(router.routes)
    app.mount("/static/portal", StaticFiles(directory=STATIC), name="portal-static")
    app.state.html_problem = problem_page
