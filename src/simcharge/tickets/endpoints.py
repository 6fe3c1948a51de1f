"""`/api/v1/me/tickets`: a customer's own tickets (anyone else's are "not found")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Header, Response
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.auth.deps import CurrentCustomer, Limits
from simcharge.kit.clock import utcnow
from simcharge.tickets import service
from simcharge.tickets.models import Ticket, TicketMessage
from simcharge.tickets.schemas import (
    MessageIn,
    MessageOut,
    TicketDetailOut,
    TicketIn,
    TicketOut,
)

router = APIRouter(prefix=f"{API_PREFIX}/me/tickets", tags=["me"])
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]


def ticket_out(t: Ticket) -> TicketOut:
    return TicketOut(
        id=t.id,
        number=t.number,
        subject=t.subject,
        status=t.status,
        order_id=t.order_id,
        line_id=t.line_id,
        created_at=t.created_at,
        updated_at=t.updated_at,
    )


def message_out(m: TicketMessage) -> MessageOut:
    return MessageOut(id=m.id, author=m.author, body=m.body, created_at=m.created_at)


def detail_out(t: Ticket, messages: Sequence[TicketMessage]) -> TicketDetailOut:
    return TicketDetailOut(
        **ticket_out(t).model_dump(), messages=[message_out(m) for m in messages]
    )


@router.get("", response_model=list[TicketOut], summary="My tickets, latest activity first")
async def my_tickets(customer: CurrentCustomer, db: DB) -> list[TicketOut]:
    async with db.read() as s:
        return [ticket_out(t) for t in await service.tickets_of(s, customer.account.id)]


@router.post("", response_model=TicketDetailOut, status_code=201, summary="Open a ticket")
async def open_ticket(
    body: TicketIn,
    customer: CurrentCustomer,
    db: DB,
    response: Response,
    limits: Limits,
    settings: AppSettings,
    idempotency_key: IdemKey = None,
) -> TicketDetailOut:
    """Optionally about one of my orders (its payment is attached for customer service) or one
    of my lines. With an `Idempotency-Key`, a retry answers the same ticket. At most
    `SIMCHARGE_TICKETS_MAX_OPEN` open at once (`409 too-many-open-tickets`); new tickets and
    answers together at most 10 a minute and 60 an hour (`429 too-many-attempts`)."""
    account_id = customer.account.id
    await service.count_attempt(limits, account_id)

    async def run(s: AsyncSession) -> TicketDetailOut:
        ticket, replayed = await service.open_ticket(
            s,
            account_id,
            subject=body.subject,
            body=body.body,
            order_id=body.order_id,
            line_id=body.line_id,
            idempotency_key=idempotency_key,
            max_open=settings.tickets_max_open,
            now=utcnow(),
        )
        if replayed:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
        return detail_out(ticket, await service.messages_of(s, ticket.id, internal=False))

    return await db.run(run)


@router.get("/{ticket_id}", response_model=TicketDetailOut, summary="One of my tickets")
async def my_ticket(ticket_id: uuid.UUID, customer: CurrentCustomer, db: DB) -> TicketDetailOut:
    async with db.read() as s:
        ticket = await service.own_ticket(s, customer.account.id, ticket_id)
        return detail_out(ticket, await service.messages_of(s, ticket.id, internal=False))


@router.post(
    "/{ticket_id}/messages",
    response_model=TicketDetailOut,
    status_code=201,
    summary="Reply on one of my tickets",
)
async def reply(
    ticket_id: uuid.UUID,
    body: MessageIn,
    customer: CurrentCustomer,
    db: DB,
    limits: Limits,
    idempotency_key: IdemKey = None,
) -> TicketDetailOut:
    """Puts the ticket back with customer service; a closed one is `409 ticket-closed` (open a
    new one). Counted with new tickets (`429 too-many-attempts`)."""
    account_id = customer.account.id
    await service.count_attempt(limits, account_id)

    async def run(s: AsyncSession) -> TicketDetailOut:
        await service.customer_reply(
            s, account_id, ticket_id, body.body, idempotency_key=idempotency_key, now=utcnow()
        )
        ticket = await service.own_ticket(s, account_id, ticket_id)
        return detail_out(ticket, await service.messages_of(s, ticket.id, internal=False))

    return await db.run(run)
