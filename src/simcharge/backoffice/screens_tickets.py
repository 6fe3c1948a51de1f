"""Ticket pages: the queue, a ticket with its thread, the order it is about, and the actions."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlencode

from babel import Locale, UnknownLocaleError
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.api.deps import DB
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import require_web
from simcharge.backoffice.forms import UUID_PATTERN, Redraw, form_error, in_place, origin
from simcharge.backoffice.links import NO_REFERENCES, after_order_action, references
from simcharge.backoffice.models import StaffUser
from simcharge.backoffice.orders import check_with_provider, order_panel
from simcharge.backoffice.refusal import NO_REFUSAL, FormError
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.web import back, language_of, render
from simcharge.errors import IDEMPOTENCY_KEY_MAX, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.ids import uuid7
from simcharge.kit.schemas import Instant
from simcharge.kit.translations import N_
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.tickets import service
from simcharge.tickets.models import TicketPriority, TicketStatus

router = APIRouter(prefix="/backoffice", include_in_schema=False)
Agent = Annotated[Actor, require_web(Permission.tickets_work)]
Checker = Annotated[Actor, require_web(Permission.orders_check)]
PAGE = 100


async def staff_names(s: AsyncSession) -> dict[uuid.UUID, str]:
    rows = (await s.execute(select(StaffUser.id, StaffUser.username))).all()
    return {r[0]: r[1] for r in rows}


@router.get("/tickets", response_class=HTMLResponse)
async def ticket_queue(
    request: Request,
    db: DB,
    actor: Agent,
    status: str | None = None,
    priority: str | None = None,
    mine: bool = False,
    unassigned: bool = False,
    account_id: uuid.UUID | None = None,
    order: str | None = None,
    before: Instant | None = None,
    before_id: uuid.UUID | None = None,
    after: Instant | None = None,
    after_id: uuid.UUID | None = None,
    after_priority: str | None = None,
) -> HTMLResponse:
    """The queue, a page at a time (`service.QueueOrder`): by default the tickets waiting for
    customer service first, urgent first and then the longest waiting ("Next page": `after`,
    `after_id`, `after_priority` of the last one), then the others, latest activity first
    (`before`, `before_id`); `order=latest`: all latest activity first ("Older"). A status,
    priority or order that is none of the listed ones is refused (422, the page drawn again
    with the filter marked), not read as "no ticket has it". `account_id`: one customer's
    tickets (their page lists the latest 50 and links here)."""
    typed = {"status": status or "", "priority": priority or "", "order": order or ""}
    try:
        _known(status, TicketStatus, "status")
        _known(priority, TicketPriority, "priority")
        _known(order, service.QueueOrder, "order")
        _known(after_priority, TicketPriority, "after_priority")
    except ValidationFailed as exc:
        refused = form_error(request, actor, exc, form="filter", values=typed)
        return render(
            request, "tickets.html", actor, status=refused.status, form_error=refused,
            tickets=[], names={}, owners={}, about=NO_REFERENCES,
            statuses=list(TicketStatus), priorities=list(TicketPriority),
            status_filter=status or "", priority=priority or "", mine=mine,
            unassigned=unassigned, more=None, customer=None, account_id=account_id,
            order=order or "", orders=list(service.QueueOrder),
        )  # fmt: skip
    f = service.TicketFilter(
        status=status or None,
        priority=priority or None,
        assignee_id=actor.staff_id if mine else None,
        unassigned=unassigned,
        account_id=account_id,
    )
    sort = service.QueueOrder(order or service.QueueOrder.waiting)
    waited = (
        service.WaitingAfter(after_priority, after, after_id)
        if after is not None and after_id is not None and after_priority
        else None
    )
    async with db.read() as s:
        found = await service.find_tickets(
            s, f, limit=PAGE + 1, before=before, before_id=before_id, order=sort, after=waited
        )
        tickets = found[:PAGE]
        names = await staff_names(s)
        owners = {
            a.id: a.username
            for a in (
                await s.execute(
                    select(Account).where(Account.id.in_({t.account_id for t in tickets}))
                )
            ).scalars()
        }
        about = await references(
            s, (t.order_id for t in tickets), (t.line_id for t in tickets)
        )
        customer = await s.get(Account, account_id) if account_id is not None else None
    filters = audit.read_details(
        len(tickets), status=status, priority=priority, mine=mine, unassigned=unassigned,
        account_id=account_id, order=order,
    )  # fmt: skip
    await audit.record_read(db, actor, "ticket.list", details=filters)
    last = tickets[-1] if len(found) > PAGE else None
    more = None
    if last is not None:
        # In the `waiting` order a page that ends among the tickets waiting for customer
        # service goes on among them; one that ends among the others, as `latest` does.
        among_waiting = sort is service.QueueOrder.waiting and last.status == TicketStatus.open
        where = (
            {"after_priority": last.priority, "after": last.updated_at.isoformat()}
            | {"after_id": str(last.id)}
            if among_waiting
            else {"before": last.updated_at.isoformat(), "before_id": str(last.id)}
        )
        more = urlencode(
            {
                **{k: v for k, v in (("status", status), ("priority", priority)) if v},
                **{k: "true" for k, v in (("mine", mine), ("unassigned", unassigned)) if v},
                **({"account_id": str(account_id)} if account_id else {}),
                **({"order": order} if order else {}),
                **where,
            }
        )
    return render(
        request,
        "tickets.html",
        actor,
        tickets=tickets,
        names=names,
        owners=owners,
        about=about,
        statuses=list(TicketStatus),
        priorities=list(TicketPriority),
        status_filter=status or "",
        priority=priority or "",
        mine=mine,
        unassigned=unassigned,
        more=more,
        customer=customer,
        account_id=account_id,
        order=sort.value,
        orders=list(service.QueueOrder),
    )


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
async def ticket_page(request: Request, ticket_id: uuid.UUID, db: DB, actor: Agent) -> HTMLResponse:
    return await ticket_view(request, actor, ticket_id)


async def ticket_view(
    request: Request, actor: Actor, ticket_id: uuid.UUID, refused: FormError = NO_REFUSAL
) -> HTMLResponse:
    """A ticket's page; drawn again with a refused form on it, it is a view as any other
    (audited as `ticket.view`)."""
    db = request.app.state.db
    async with db.read() as s:
        ticket = await service.get_ticket(s, ticket_id)
        messages = await service.messages_of(s, ticket.id, internal=True)
        account = await s.get(Account, ticket.account_id)
        panel = await order_panel(s, ticket.order_id) if ticket.order_id else None
        line = await s.get(Line, ticket.line_id) if ticket.line_id else None
        balances = await line_balances(s, line) if line is not None else None
        about = await references(s, [ticket.order_id], [ticket.line_id])
        names = await staff_names(s)
        staff = (
            (await s.execute(select(StaffUser).where(StaffUser.active.is_(True)))).scalars().all()
        )
    await audit.record_read(db, actor, "ticket.view", target_type="ticket", target_id=ticket_id)
    return render(
        request,
        "ticket.html",
        actor,
        status=refused.status if refused.form else 200,
        form_error=refused,
        ticket=ticket,
        messages=messages,
        account=account,
        panel=panel,
        line=line,
        balances=balances,
        about=about,
        customer_language=_language_name(account.language if account else None, request, actor),
        names=names,
        staff=staff,
        statuses=list(TicketStatus),
        priorities=list(TicketPriority),
        idem=uuid7().hex,
    )


@router.post("/tickets/{ticket_id}/reply", response_model=None)
async def ticket_reply(
    request: Request,
    ticket_id: uuid.UUID,
    db: DB,
    actor: Agent,
    body: Annotated[str, Form(max_length=10_000)] = "",
    internal: Annotated[bool, Form()] = False,
    status: Annotated[str, Form(max_length=24)] = "",
    idem: Annotated[str, Form(max_length=IDEMPOTENCY_KEY_MAX)] = "",
) -> Response:
    """The page's one-time key (`idem`, made when the ticket was shown) makes a double click or
    a resent form one reply and one notice."""

    async def act() -> Response:
        await db.run(
            lambda s: service.staff_reply(
                s,
                actor,
                ticket_id,
                body,
                internal=internal,
                status=status or None,
                idempotency_key=idem or None,
                now=utcnow(),
            )
        )
        return back(f"/backoffice/tickets/{ticket_id}", "note_saved" if internal else "reply_sent")

    typed = {"body": body, "internal": internal, "status": status, "idem": idem}
    return await in_place(
        request, actor, act, form="reply", values=typed, redraw=_again(request, actor, ticket_id),
    )  # fmt: skip


@router.post("/tickets/{ticket_id}/update", response_model=None)
async def ticket_update(
    request: Request,
    ticket_id: uuid.UUID,
    db: DB,
    actor: Agent,
    status: Annotated[str, Form(max_length=24)] = "",
    priority: Annotated[str, Form(max_length=8)] = "",
    assignee: Annotated[str, Form(max_length=64)] = "",
    was_status: Annotated[str, Form(max_length=24)] = "",
    was_priority: Annotated[str, Form(max_length=8)] = "",
    was_assignee: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Only what the agent changed on the page (`was_…`: the values it was drawn with) is set:
    a page drawn before the customer's reply or a colleague's assignment does not put back
    what they changed. An empty `assignee` is nobody (an empty form value arrives as the
    default, so "nobody" is the default and "unchanged" is "as it was drawn")."""

    async def act() -> Response:
        await db.run(
            lambda s: service.update_ticket(
                s,
                actor,
                ticket_id,
                status=status if status != was_status else None,
                priority=priority if priority != was_priority else None,
                assignee=assignee if assignee != was_assignee else None,
                now=utcnow(),
            )
        )
        return back(f"/backoffice/tickets/{ticket_id}", "ticket_saved")

    typed = {"status": status, "priority": priority, "assignee": assignee}
    return await in_place(
        request, actor, act, form="update", values=typed,
        redraw=_again(request, actor, ticket_id),
    )  # fmt: skip


def _known(value: str | None, choices: type[StrEnum], field: str) -> None:
    if value and value not in {c.value for c in choices}:
        raise ValidationFailed(N_("Choose one of the listed values."), field=field)


def _language_name(code: str | None, request: Request, actor: Actor) -> str:
    """The customer's language named in the staff member's ("Spanish (es)", "西班牙语 (es)"):
    the language to answer in."""
    if not code:
        return "—"
    staff_locale = BABEL_LOCALES.get(language_of(request, actor), "en")
    try:
        name = Locale.parse(code.replace("-", "_")).get_display_name(staff_locale)
    except (ValueError, TypeError, UnknownLocaleError):
        name = None
    return f"{name} ({code})" if name else code


def _again(request: Request, actor: Actor, ticket_id: uuid.UUID) -> Redraw:
    async def redraw(refused: FormError) -> HTMLResponse:
        return await ticket_view(request, actor, ticket_id, refused)

    return redraw


@origin(rf"/backoffice/tickets/(?P<ticket_id>{UUID_PATTERN})", Permission.tickets_work)
async def _ticket_again(
    request: Request, actor: Actor, at: dict[str, str], refused: FormError
) -> HTMLResponse:
    return await ticket_view(request, actor, uuid.UUID(at["ticket_id"]), refused)


@router.post("/orders/{order_id}/check", response_model=None)
async def order_check(
    request: Request,
    order_id: uuid.UUID,
    db: DB,
    actor: Checker,
    then: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    outcome = await check_with_provider(db, request.app.state.providers, actor, order_id)
    # What the provider's answer did, as words (`words.DONE`: checked_<outcome>).
    return back(await after_order_action(db, actor, then, order_id), f"checked_{outcome.value}")
