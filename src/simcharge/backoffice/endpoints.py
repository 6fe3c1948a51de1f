"""`/api/v1/admin/…`: the back office's actions for the operator's own tools — a staff bearer
token (`POST /admin/session`, password + authenticator code) or an API key with scopes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import api_actor, require
from simcharge.backoffice.orders import check_with_provider
from simcharge.backoffice.roles import Permission, permissions_of
from simcharge.backoffice.schemas import AuditEntryOut, CheckOut, StaffLoginIn, StaffTokenOut
from simcharge.backoffice.screens_tickets import staff_names
from simcharge.backoffice.staff import StaffLoginFailed, end_session, sign_in
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Order
from simcharge.tickets import service as tickets
from simcharge.tickets.endpoints import ticket_out
from simcharge.tickets.models import Ticket
from simcharge.tickets.schemas import (
    StaffMessageOut,
    StaffReplyIn,
    StaffTicketDetailOut,
    StaffTicketOut,
    TicketUpdateIn,
)

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])
AuditReader = Annotated[Actor, require(Permission.audit_read)]


@router.post("/session", response_model=StaffTokenOut, summary="Staff sign-in (token)")
async def staff_session(
    body: StaffLoginIn, request: Request, db: DB, settings: AppSettings
) -> StaffTokenOut:
    """Password and authenticator code at once (a staff member enrols at `/backoffice` first)."""
    ip = request.client.host if request.client else None
    ua = request.headers.get("user-agent")
    now = utcnow()

    async def attempt(s: AsyncSession) -> StaffTokenOut | None:
        found = await sign_in(
            s,
            settings,
            username=body.username,
            password=body.password,
            code=body.code,
            ip=ip,
            user_agent=ua,
            now=now,
        )
        if found is None:
            await audit.record(
                s,
                Actor(
                    name=f"staff:{body.username.strip().casefold()[:60]}",
                    permissions=frozenset(),
                    ip=ip,
                    user_agent=ua,
                ),
                "staff.login_failed",
                details={"via": "api"},
            )
            return None
        staff, issued = found
        actor = Actor(
            name=f"staff:{staff.username}",
            permissions=frozenset(),
            staff=staff,
            ip=ip,
            user_agent=ua,
        )
        await audit.record(
            s, actor, "staff.login", target_type="staff", target_id=staff.id, details={"via": "api"}
        )
        return StaffTokenOut(
            token=issued.token,
            expires_at=issued.row.expires_at,
            username=staff.username,
            role=staff.role,
            permissions=sorted(p.value for p in permissions_of(staff.role)),
        )

    out = await db.run(attempt)
    if out is None:
        raise StaffLoginFailed()
    return out


@router.delete("/session", status_code=204, summary="End this staff token")
async def end_staff_session(db: DB, actor: Annotated[Actor, Depends(api_actor)]) -> None:
    if actor.session_id is None:
        return
    sid = actor.session_id

    async def end(s: AsyncSession) -> None:
        await end_session(s, sid, utcnow())
        await audit.record(
            s,
            actor,
            "staff.logout",
            target_type="staff",
            target_id=actor.staff_id,
            details={"via": "api"},
        )

    await db.run(end)


@router.get("/audit", response_model=list[AuditEntryOut], summary="The audit log, newest first")
async def audit_log(
    actor: AuditReader,
    db: DB,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    who: Annotated[str | None, Query(max_length=80, description="`staff:<name>`…")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditEntryOut]:
    async with db.read() as s:
        rows = await audit.entries(
            s,
            target_type=target_type,
            target_id=target_id,
            actor=who,
            action=action,
            limit=limit,
        )
    return [AuditEntryOut.model_validate(r) for r in rows]


# --- tickets ------------------------------------------------------------------------------

TicketWorker = Annotated[Actor, require(Permission.tickets_work)]
OrderChecker = Annotated[Actor, require(Permission.orders_check)]


async def _staff_ticket(s: AsyncSession, ticket: Ticket, *, with_messages: bool) -> Any:
    names = await staff_names(s)
    base = StaffTicketOut(
        **ticket_out(ticket).model_dump(),
        account_id=ticket.account_id,
        priority=ticket.priority,
        assignee=names.get(ticket.assignee_id) if ticket.assignee_id else None,
    )
    if not with_messages:
        return base
    messages = await tickets.messages_of(s, ticket.id, internal=True)
    return StaffTicketDetailOut(
        **base.model_dump(),
        messages=[
            StaffMessageOut(
                id=m.id,
                author=m.author,
                body=m.body,
                created_at=m.created_at,
                internal=m.internal,
                staff=names.get(m.staff_id) if m.staff_id else None,
            )
            for m in messages
        ],
    )


@router.get("/tickets", response_model=list[StaffTicketOut], summary="Tickets, latest first")
async def list_tickets(
    actor: TicketWorker,
    db: DB,
    status: Annotated[str | None, Query(max_length=24)] = None,
    priority: Annotated[str | None, Query(max_length=8)] = None,
    assignee: Annotated[str | None, Query(max_length=64, description="A staff username")] = None,
    account_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[StaffTicketOut]:
    async with db.read() as s:
        assignee_id = None
        if assignee:
            names = {v: k for k, v in (await staff_names(s)).items()}
            assignee_id = names.get(assignee.casefold(), uuid.UUID(int=0))
        rows = await tickets.find_tickets(
            s,
            tickets.TicketFilter(
                status=status,
                priority=priority,
                assignee_id=assignee_id,
                account_id=account_id,
                order_id=order_id,
            ),
            limit=limit,
        )
        return [await _staff_ticket(s, t, with_messages=False) for t in rows]


@router.get("/tickets/{ticket_id}", response_model=StaffTicketDetailOut, summary="One ticket")
async def get_ticket(ticket_id: uuid.UUID, actor: TicketWorker, db: DB) -> StaffTicketDetailOut:
    async with db.read() as s:
        out: StaffTicketDetailOut = await _staff_ticket(
            s, await tickets.get_ticket(s, ticket_id), with_messages=True
        )
        return out


@router.post(
    "/tickets/{ticket_id}/messages",
    response_model=StaffTicketDetailOut,
    status_code=201,
    summary="Reply (the customer is told) or add an internal note",
)
async def reply_ticket(
    ticket_id: uuid.UUID, body: StaffReplyIn, actor: TicketWorker, db: DB
) -> StaffTicketDetailOut:
    async def run(s: AsyncSession) -> StaffTicketDetailOut:
        await tickets.staff_reply(
            s,
            actor,
            ticket_id,
            body.body,
            internal=body.internal,
            status=body.status,
            now=utcnow(),
        )
        out: StaffTicketDetailOut = await _staff_ticket(
            s, await tickets.get_ticket(s, ticket_id), with_messages=True
        )
        return out

    return await db.run(run)


@router.patch(
    "/tickets/{ticket_id}", response_model=StaffTicketOut, summary="Status, priority, assignee"
)
async def update_ticket(
    ticket_id: uuid.UUID, body: TicketUpdateIn, actor: TicketWorker, db: DB
) -> StaffTicketOut:
    async def run(s: AsyncSession) -> StaffTicketOut:
        ticket = await tickets.update_ticket(
            s,
            actor,
            ticket_id,
            status=body.status,
            priority=body.priority,
            assignee=body.assignee,
            now=utcnow(),
        )
        out: StaffTicketOut = await _staff_ticket(s, ticket, with_messages=False)
        return out

    return await db.run(run)


# --- orders -------------------------------------------------------------------------------


@router.post(
    "/orders/{order_id}/check",
    response_model=CheckOut,
    summary="Ask the provider where the payment stands (credits it if paid)",
)
async def check_order_now(
    order_id: uuid.UUID, request: Request, actor: OrderChecker, db: DB
) -> CheckOut:
    outcome = await check_with_provider(db, request.app.state.providers, actor, order_id)
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        return CheckOut(outcome=outcome.value, state=order.state, attention=order.attention)
