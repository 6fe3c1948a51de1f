"""Back-office pages (server-rendered; every route: who is asking, one service call, a page)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import problem_answer, validation_problem
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import LoginRequired, WebActor, require_web
from simcharge.backoffice.models import Adjustment, AdjustmentState
from simcharge.backoffice.orders import attention_counts
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.staff import open_sessions
from simcharge.backoffice.web import HEADERS, STATIC, language_of, render
from simcharge.errors import SimchargeError
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import translate
from simcharge.tickets.models import Ticket, TicketStatus

router = APIRouter(prefix="/backoffice", include_in_schema=False)
AuditReader = Annotated[Actor, require_web(Permission.audit_read)]


@router.get("", response_class=HTMLResponse)
async def home(request: Request, db: DB, settings: AppSettings, actor: WebActor) -> HTMLResponse:
    async with db.read() as s:
        open_tickets = (
            await s.execute(
                select(func.count())
                .select_from(Ticket)
                .where(Ticket.status == TicketStatus.open.value)
            )
        ).scalar_one()
        mine = (
            await s.execute(
                select(func.count())
                .select_from(Ticket)
                .where(
                    Ticket.assignee_id == actor.staff_id,
                    Ticket.status.in_(
                        [TicketStatus.open.value, TicketStatus.waiting_on_customer.value]
                    ),
                )
            )
        ).scalar_one()
        attention = sum(
            (await attention_counts(s, settings.order_pending_alert_minutes)).values()
        )
        approvals = (
            await s.execute(
                select(func.count())
                .select_from(Adjustment)
                .where(Adjustment.state == AdjustmentState.awaiting_approval.value)
            )
        ).scalar_one()
        assert actor.staff_id is not None
        sessions = await open_sessions(s, settings, actor.staff_id, utcnow())
    counts = {
        "open_tickets": open_tickets,
        "my_tickets": mine,
        "attention": attention,
        "approvals": approvals,
    }
    return render(
        request, "home.html", actor, counts=counts, sessions=sessions, current=actor.session_id
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(
    request: Request,
    db: DB,
    actor: AuditReader,
    target: str | None = None,
    who: str | None = None,
) -> HTMLResponse:
    async with db.read() as s:
        rows = await audit.entries(s, target_id=target, actor=who, limit=300)
    return render(request, "audit.html", actor, entries=rows)


def install_backoffice(app: FastAPI) -> None:
    """Static files, and errors on back-office pages shown as pages (the API keeps
    problem+json)."""
    app.mount("/backoffice/static", StaticFiles(directory=STATIC), name="backoffice-static")

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(exc.to, status_code=303, headers=HEADERS)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return await _expected(request, validation_problem(exc))

    @app.exception_handler(SimchargeError)
    async def _expected(request: Request, exc: SimchargeError) -> Response:
        if not request.url.path.startswith("/backoffice"):
            # The API's problem document, or the portal's page on a portal page.
            return problem_answer(request, exc)
        actor = getattr(request.state, "actor", None)
        language = language_of(request, actor)  # the page's own: its words and its frame agree
        detail = translate(language, exc.detail_template)
        if exc.params:
            detail = detail.format(**exc.params)
        if exc.errors:
            detail = "; ".join(
                f"{e.field}: "
                + (
                    translate(language, e.detail).format(**e.params)
                    if e.params
                    else translate(language, e.detail)
                )
                for e in exc.errors
            )
        return render(
            request,
            "error.html",
            actor,
            status=exc.status,
            title=translate(language, exc.title),
            detail=detail,
        )
