"""Back-office pages (server-rendered; every route: who is asking, one service call, a page)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import problem_answer, validation_problem
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.customers import usage_filter
from simcharge.backoffice.deps import LoginRequired, WebActor, require_web
from simcharge.backoffice.forms import form_error
from simcharge.backoffice.models import Adjustment, AdjustmentState, AuditEntry
from simcharge.backoffice.orders import attention_counts
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.staff import open_sessions
from simcharge.backoffice.web import HEADERS, STATIC, language_of, render
from simcharge.backoffice.words import refusal
from simcharge.errors import SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.schemas import Instant
from simcharge.kit.translations import translate
from simcharge.lines.models import Line
from simcharge.orders.models import Order, Refund
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


AUDIT_PAGE = 100


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(
    request: Request,
    db: DB,
    actor: AuditReader,
    target: Annotated[str | None, Query(max_length=64)] = None,
    who: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    before: Instant | None = None,
    before_id: uuid.UUID | None = None,
) -> HTMLResponse:
    """The audit log, newest first, a page at a time (older pages by the last entry's time and
    id): by who (`staff:<name>`, `apikey:<prefix>`, `cli:<user>`; a bare name is a staff
    member's), action, target id, and days (`from`/`to`, UTC, `to` inclusive). A bad filter
    draws the form again with the error beside it."""
    typed = {
        "who": (who or "").strip(),
        "action": (action or "").strip(),
        "target": (target or "").strip(),
        "from": (start or "").strip(),
        "to": (end or "").strip(),
    }
    name = typed["who"]
    if name and ":" not in name:
        name = f"staff:{name}"
    try:
        period = usage_filter(None, typed["from"] or None, typed["to"] or None)
    except ValidationFailed as exc:
        refused = form_error(request, actor, exc, form="audit", values=typed)
        return render(
            request, "audit.html", actor, status=refused.status, form_error=refused,
            entries=[], links={}, filters=typed, more=None,
        )  # fmt: skip
    cursor = (before, before_id) if before is not None and before_id is not None else None
    async with db.read() as s:
        rows = list(
            await audit.entries(
                s, target_id=typed["target"] or None, actor=name or None,
                action=typed["action"] or None, since=period.since, until=period.until,
                before=cursor, limit=AUDIT_PAGE + 1,
            )
        )  # fmt: skip
        links = await target_links(s, rows[:AUDIT_PAGE])
    last = rows[AUDIT_PAGE - 1] if len(rows) > AUDIT_PAGE else None
    more = (
        urlencode(
            {**{k: v for k, v in typed.items() if v}, "before": last.at.isoformat(),
             "before_id": str(last.id)}
        )
        if last is not None
        else None
    )  # fmt: skip
    return render(
        request, "audit.html", actor, entries=rows[:AUDIT_PAGE], links=links, filters=typed,
        more=more,
    )  # fmt: skip


async def target_links(
    s: AsyncSession, rows: Sequence[AuditEntry]
) -> dict[tuple[str, str], tuple[str, str]]:
    """Each entry's target as a link and its words: an order by its reference to its customer's
    page (at the order), a refund by its reference likewise, a customer, a ticket by its number,
    a line by its number on its customer's page."""

    def ids(kind: str) -> set[uuid.UUID]:
        found = set()
        for r in rows:
            if r.target_type == kind and r.target_id:
                try:
                    found.add(uuid.UUID(r.target_id))
                except ValueError:
                    continue
        return found

    links: dict[tuple[str, str], tuple[str, str]] = {}
    refunds = {
        f.id: f
        for f in (await s.execute(select(Refund).where(Refund.id.in_(ids("refund"))))).scalars()
    }
    order_ids = ids("order") | {f.order_id for f in refunds.values()}
    orders = {
        o.id: o for o in (await s.execute(select(Order).where(Order.id.in_(order_ids)))).scalars()
    }
    for o in orders.values():
        links[("order", str(o.id))] = (
            f"/backoffice/customers/{o.account_id}#order-{o.id}", o.reference
        )
    for f in refunds.values():
        paid = orders.get(f.order_id)
        if paid is not None:
            links[("refund", str(f.id))] = (
                f"/backoffice/customers/{paid.account_id}#order-{paid.id}", f.reference
            )
    for a in ids("account"):
        links[("account", str(a))] = (f"/backoffice/customers/{a}", str(a))
    tickets = (await s.execute(select(Ticket).where(Ticket.id.in_(ids("ticket"))))).scalars()
    for t in tickets:
        links[("ticket", str(t.id))] = (f"/backoffice/tickets/{t.id}", t.number)
    lines = (await s.execute(select(Line).where(Line.id.in_(ids("line"))))).scalars()
    for ln in lines:
        if ln.account_id is not None:
            links[("line", str(ln.id))] = (
                f"/backoffice/customers/{ln.account_id}#line-{ln.id}", ln.msisdn
            )
    return links


def came_from(request: Request) -> str | None:
    """The back-office page the member came from (the `Referer`, when it is this site's and
    another page than this one), for the error page's way back; else None (home)."""
    referer = urlsplit(request.headers.get("referer", ""))
    here = urlsplit(str(request.url))
    if (referer.scheme, referer.netloc) != (here.scheme, here.netloc):
        return None
    path = referer.path
    if not path.startswith("/backoffice") or path.startswith("//") or "\\" in path:
        return None
    if path == here.path and request.method in ("GET", "HEAD"):
        return None  # the refused page itself
    return path + ("?" + referer.query if referer.query else "")


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
        permission = exc.params.get("permission") if exc.params else None
        if isinstance(permission, str) and exc.status == 403:
            # Which roles may, in words (`words.refusal`), not the permission's code.
            role = actor.staff.role if actor is not None and actor.staff is not None else None
            detail = refusal(language, permission, role)
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
            came_from=came_from(request),
        )
