"""Tickets: the customer opens one (optionally about one of their orders or lines) and replies;
staff reply, add internal notes, assign, set status and priority. The customer is told of each
staff reply and resolution by e-mail and in the portal.

Ownership: every customer-side function takes the account and treats anyone else's ticket,
order or line as "not found". Staff-side functions take the acting `Actor` and write the audit
entry in the same transaction."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.service import own_line
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.models import StaffUser
from simcharge.errors import Conflict, IdempotencyKeyReused, NotFound, ValidationFailed
from simcharge.kit.translations import N_
from simcharge.notifications.service import notify
from simcharge.orders.service import own_order
from simcharge.tickets.models import Ticket, TicketMessage, TicketPriority, TicketStatus

SUBJECT_MAX = 200
BODY_MAX = 10_000
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class TicketNotFound(NotFound):
    slug = "ticket-not-found"
    title = N_("There is no such ticket.")


class TicketClosed(Conflict):
    slug = "ticket-closed"
    title = N_("This ticket is closed; please open a new one.")


class StaffNotFound(NotFound):
    slug = "staff-not-found"
    title = N_("There is no such staff member.")


def _text(value: str, field: str, limit: int) -> str:
    text = value.strip()
    if "\x00" in text:
        raise ValidationFailed(
            N_("This text contains a character that is not allowed."), field=field
        )
    if not text:
        raise ValidationFailed(N_("This field is required."), field=field)
    if len(text) > limit:
        raise ValidationFailed(N_("At most {max} characters."), field=field, max=limit)
    return text


def _number() -> str:
    return "T-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


def summary(ticket: Ticket) -> dict[str, Any]:
    return {
        "status": ticket.status,
        "priority": ticket.priority,
        "assignee_id": str(ticket.assignee_id) if ticket.assignee_id else None,
    }


# --- the customer's side ------------------------------------------------------------------


async def ticket_of_key(
    session: AsyncSession, account_id: uuid.UUID, idempotency_key: str
) -> Ticket | None:
    """The customer's ticket opened with `idempotency_key`, if any."""
    stmt = select(Ticket).where(Ticket.request_key == f"{account_id}:{idempotency_key}")
    return (await session.execute(stmt)).scalar_one_or_none()


async def open_ticket(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    subject: str,
    body: str,
    order_id: uuid.UUID | None = None,
    line_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    now: datetime,
) -> tuple[Ticket, bool]:
    """Open a ticket; returns it and whether it was an earlier one (a retry with the same key)."""
    subject = _text(subject, "subject", SUBJECT_MAX)
    body = _text(body, "body", BODY_MAX)
    request_key = f"{account_id}:{idempotency_key}" if idempotency_key else None
    if idempotency_key:
        earlier = await ticket_of_key(session, account_id, idempotency_key)
        if earlier is not None:
            if (earlier.subject, earlier.order_id, earlier.line_id) != (subject, order_id, line_id):
                raise IdempotencyKeyReused(field="Idempotency-Key")
            return earlier, True
    # The line must be the customer's own even with an order: an order may be a gift to someone
    # else's number, whose line is not theirs to name (nor to learn about by guessing its id).
    if line_id is not None:
        await own_line(session, account_id, line_id)
    if order_id is not None:
        order = await own_order(session, account_id, order_id)
        if line_id is not None and order.line_id != line_id:
            raise ValidationFailed(N_("The order is not for this line."), field="line_id")
    ticket = Ticket(
        number=_number(),
        account_id=account_id,
        subject=subject,
        status=TicketStatus.open.value,
        priority=TicketPriority.normal.value,
        order_id=order_id,
        line_id=line_id,
        request_key=request_key,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    await session.flush()
    session.add(TicketMessage(ticket_id=ticket.id, author="customer", body=body, created_at=now))
    await session.flush()
    await notify(
        session,
        account_id=account_id,
        template="ticket.opened",
        params={"ticket": ticket.number, "subject": ticket.subject},
        channels=("email", "portal"),
        dedupe_key=f"ticket.opened:{ticket.id}",
    )
    return ticket, False


async def own_ticket(
    session: AsyncSession, account_id: uuid.UUID, ticket_id: uuid.UUID, *, lock: bool = False
) -> Ticket:
    ticket = await session.get(Ticket, ticket_id, with_for_update=lock)
    if ticket is None or ticket.account_id != account_id:
        raise TicketNotFound(field="ticket_id")
    return ticket


async def tickets_of(session: AsyncSession, account_id: uuid.UUID) -> Sequence[Ticket]:
    return (
        (
            await session.execute(
                select(Ticket)
                .where(Ticket.account_id == account_id)
                .order_by(Ticket.updated_at.desc(), Ticket.id.desc())
                .limit(200)
            )
        )
        .scalars()
        .all()
    )


async def messages_of(
    session: AsyncSession, ticket_id: uuid.UUID, *, internal: bool
) -> Sequence[TicketMessage]:
    """The thread, oldest first; staff notes only when `internal`."""
    stmt = select(TicketMessage).where(TicketMessage.ticket_id == ticket_id)
    if not internal:
        stmt = stmt.where(TicketMessage.internal.is_(False))
    return (
        (await session.execute(stmt.order_by(TicketMessage.created_at, TicketMessage.id)))
        .scalars()
        .all()
    )


async def customer_reply(
    session: AsyncSession,
    account_id: uuid.UUID,
    ticket_id: uuid.UUID,
    body: str,
    *,
    idempotency_key: str | None = None,
    now: datetime,
) -> TicketMessage:
    """The customer writes again: the ticket is back with customer service (unless closed)."""
    body = _text(body, "body", BODY_MAX)
    ticket = await own_ticket(session, account_id, ticket_id, lock=True)
    request_key = f"{account_id}:{idempotency_key}" if idempotency_key else None
    if request_key is not None:
        earlier = (
            await session.execute(
                select(TicketMessage).where(TicketMessage.request_key == request_key)
            )
        ).scalar_one_or_none()
        if earlier is not None:
            if earlier.ticket_id != ticket_id or earlier.body != body:
                raise IdempotencyKeyReused(field="Idempotency-Key")
            return earlier
    if ticket.status == TicketStatus.closed:
        raise TicketClosed(field="ticket_id")
    message = TicketMessage(
        ticket_id=ticket.id,
        author="customer",
        body=body,
        request_key=request_key,
        created_at=now,
    )
    session.add(message)
    ticket.status = TicketStatus.open.value
    ticket.updated_at = now
    await session.flush()
    return message


# --- the staff's side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketFilter:
    status: str | None = None
    assignee_id: uuid.UUID | None = None
    unassigned: bool = False
    priority: str | None = None
    account_id: uuid.UUID | None = None
    order_id: uuid.UUID | None = None


async def find_tickets(
    session: AsyncSession, f: TicketFilter, *, limit: int = 100
) -> Sequence[Ticket]:
    stmt = select(Ticket)
    if f.status:
        stmt = stmt.where(Ticket.status == f.status)
    if f.assignee_id:
        stmt = stmt.where(Ticket.assignee_id == f.assignee_id)
    if f.unassigned:
        stmt = stmt.where(Ticket.assignee_id.is_(None))
    if f.priority:
        stmt = stmt.where(Ticket.priority == f.priority)
    if f.account_id:
        stmt = stmt.where(Ticket.account_id == f.account_id)
    if f.order_id:
        stmt = stmt.where(Ticket.order_id == f.order_id)
    order = (Ticket.updated_at.desc(), Ticket.id.desc())
    return (await session.execute(stmt.order_by(*order).limit(limit))).scalars().all()


async def get_ticket(session: AsyncSession, ticket_id: uuid.UUID, *, lock: bool = False) -> Ticket:
    ticket = await session.get(Ticket, ticket_id, with_for_update=lock)
    if ticket is None:
        raise TicketNotFound(field="ticket_id")
    return ticket


async def ticket_by_number(session: AsyncSession, number: str) -> Ticket | None:
    return (
        await session.execute(select(Ticket).where(Ticket.number == number.strip().upper()))
    ).scalar_one_or_none()


async def staff_reply(
    session: AsyncSession,
    actor: Actor,
    ticket_id: uuid.UUID,
    body: str,
    *,
    internal: bool = False,
    status: str | None = None,
    now: datetime,
) -> TicketMessage:
    """A reply (the customer is told) or an internal note (they are not, but of the ticket
    resolved by it they are). A reply leaves the ticket waiting on the customer unless another
    status is given."""
    body = _text(body, "body", BODY_MAX)
    ticket = await get_ticket(session, ticket_id, lock=True)
    if ticket.status == TicketStatus.closed and not internal:
        raise TicketClosed(field="ticket_id")
    new_status = _status(status) if status else None
    before = summary(ticket)
    message = TicketMessage(
        ticket_id=ticket.id,
        author="staff",
        staff_id=actor.staff_id,
        body=body,
        internal=internal,
        created_at=now,
    )
    session.add(message)
    if not internal:
        ticket.status = (new_status or TicketStatus.waiting_on_customer).value
        if ticket.assignee_id is None and actor.staff_id is not None:
            ticket.assignee_id = actor.staff_id
    elif new_status is not None:
        ticket.status = new_status.value
    ticket.updated_at = now
    await session.flush()
    await audit.record(
        session,
        actor,
        "ticket.note" if internal else "ticket.reply",
        target_type="ticket",
        target_id=ticket.id,
        before=before,
        after=summary(ticket),
        details={"message_id": str(message.id), "length": len(body)},
        now=now,
    )
    if not internal:
        await notify(
            session,
            account_id=ticket.account_id,
            template="ticket.resolved"
            if ticket.status == TicketStatus.resolved
            else "ticket.replied",
            params={"ticket": ticket.number, "subject": ticket.subject},
            channels=("email", "portal"),
            dedupe_key=f"ticket.reply:{message.id}",
        )
    elif new_status is TicketStatus.resolved and before["status"] != TicketStatus.resolved:
        # A note is not shown to the customer, but the resolution it makes is, as any other.
        await _tell_resolved(session, ticket, now)
    return message


async def _tell_resolved(session: AsyncSession, ticket: Ticket, now: datetime) -> None:
    """The customer is told of every resolution, whichever way staff made it (a reply tells
    with its own notice, `ticket.resolved` as well)."""
    await notify(
        session,
        account_id=ticket.account_id,
        template="ticket.resolved",
        params={"ticket": ticket.number, "subject": ticket.subject},
        channels=("email", "portal"),
        dedupe_key=f"ticket.resolved:{ticket.id}:{now.isoformat()}",
    )


def _status(value: str) -> TicketStatus:
    try:
        return TicketStatus(value)
    except ValueError:
        raise ValidationFailed(N_("Unknown status."), field="status") from None


async def update_ticket(
    session: AsyncSession,
    actor: Actor,
    ticket_id: uuid.UUID,
    *,
    status: str | None = None,
    priority: str | None = None,
    assignee: str | None = None,
    now: datetime,
) -> Ticket:
    """Set status, priority and/or assignee (`assignee`: a staff username, or "" for nobody)."""
    new_status = _status(status) if status else None
    try:
        new_priority = TicketPriority(priority) if priority else None
    except ValueError:
        raise ValidationFailed(N_("Unknown priority."), field="priority") from None
    assignee_id: uuid.UUID | None = None
    if assignee and "\x00" in assignee:
        raise StaffNotFound(field="assignee")
    if assignee:
        staff = (
            await session.execute(
                select(StaffUser).where(
                    StaffUser.username == assignee.strip().casefold(),
                    StaffUser.active.is_(True),
                )
            )
        ).scalar_one_or_none()
        if staff is None:
            raise StaffNotFound(field="assignee")
        assignee_id = staff.id
    ticket = await get_ticket(session, ticket_id, lock=True)
    before = summary(ticket)
    if new_status is not None:
        ticket.status = new_status.value
    if new_priority is not None:
        ticket.priority = new_priority.value
    if assignee is not None:
        ticket.assignee_id = assignee_id
    if summary(ticket) == before:
        return ticket
    ticket.updated_at = now
    await session.flush()
    await audit.record(
        session,
        actor,
        "ticket.update",
        target_type="ticket",
        target_id=ticket.id,
        before=before,
        after=summary(ticket),
        now=now,
    )
    if new_status is TicketStatus.resolved and before["status"] != TicketStatus.resolved:
        await _tell_resolved(session, ticket, now)
    return ticket
