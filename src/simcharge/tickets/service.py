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
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.accounts.service import own_line
from simcharge.auth.throttle import RateLimits
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.db import older_than, table_of
from simcharge.errors import Conflict, IdempotencyKeyReused, NotFound, ValidationFailed
from simcharge.kit.ids import uuid7
from simcharge.kit.translations import N_, translate
from simcharge.notifications.service import notify
from simcharge.orders.service import own_order
from simcharge.tickets.models import Ticket, TicketMessage, TicketPriority, TicketStatus

SUBJECT_MAX = 200
BODY_MAX = 10_000
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_tickets = table_of(Ticket)


class TicketNotFound(NotFound):
    slug = "ticket-not-found"
    title = N_("There is no such ticket.")


class TicketClosed(Conflict):
    slug = "ticket-closed"
    title = N_("This ticket is closed; please open a new one.")


class TicketRedacted(Conflict):
    slug = "ticket-redacted"
    title = N_(
        "This ticket's text was removed under the retention policy; nothing more can be added."
    )


class TooManyOpenTickets(Conflict):
    slug = "too-many-open-tickets"
    title = N_("You have reached the limit of open requests.")


TOO_MANY_OPEN = N_(
    "Your open requests have reached the limit ({count}): add to one of them, or wait for an "
    "answer."
)

OPEN_STATUSES = (TicketStatus.open.value, TicketStatus.waiting_on_customer.value)
"""What counts against `SIMCHARGE_TICKETS_MAX_OPEN`: a ticket with customer service, or waiting
for the customer's answer (a resolved one is done unless they write again; a closed one is
over)."""

RATE = "account-tickets"
"""The `RateLimits` action counting a customer's new tickets and answers (per account)."""


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


async def count_attempt(limits: RateLimits, account_id: uuid.UUID) -> None:
    """Count one new ticket or answer of the account's (`TooManyAttempts` past 10 a minute or
    60 an hour): before the transaction, so that a burst is refused without touching it."""
    await limits.hit(RATE, str(account_id))


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
    max_open: int | None = None,
    now: datetime,
) -> tuple[Ticket, bool]:
    """Open a ticket; returns it and whether it was an earlier one (a retry with the same key:
    the same subject, first message, order and line; anything else under the key is
    `IdempotencyKeyReused`). With `max_open` (`SIMCHARGE_TICKETS_MAX_OPEN`), a customer who
    has that many tickets open or waiting for their answer is refused (`TooManyOpenTickets`;
    a retry of one of them is still answered it)."""
    subject = _text(subject, "subject", SUBJECT_MAX)
    body = _text(body, "body", BODY_MAX)
    request = (subject, body, order_id, line_id)
    request_key = f"{account_id}:{idempotency_key}" if idempotency_key else None
    if idempotency_key:
        earlier = await ticket_of_key(session, account_id, idempotency_key)
        if earlier is not None:
            return await _opened_alike(session, earlier, request), True
    # The line must be the customer's own even with an order: an order may be a gift to someone
    # else's number, whose line is not theirs to name (nor to learn about by guessing its id).
    if line_id is not None:
        await own_line(session, account_id, line_id)
    if order_id is not None:
        order = await own_order(session, account_id, order_id)
        if line_id is not None and order.line_id != line_id:
            raise ValidationFailed(N_("The order is not for this line."), field="line_id")
    if max_open is not None:
        await _lock_account(session, account_id)
        if idempotency_key:
            # A double tap waited here for the first to commit: it is answered that ticket,
            # not refused for the one it opened.
            earlier = await ticket_of_key(session, account_id, idempotency_key)
            if earlier is not None:
                return await _opened_alike(session, earlier, request), True
        count = await open_count(session, account_id)
        if count >= max_open:
            raise TooManyOpenTickets(TOO_MANY_OPEN, count=count)
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
    try:
        async with session.begin_nested():
            session.add(ticket)
            await session.flush()
    except IntegrityError:
        # The same key opened a ticket a moment ago in another request (a double tap; "not
        # credited?" pressed twice): this insert waited on its unique key until it committed.
        earlier = (
            await ticket_of_key(session, account_id, idempotency_key) if idempotency_key else None
        )
        if earlier is None:
            raise
        return await _opened_alike(session, earlier, request), True
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


async def open_count(session: AsyncSession, account_id: uuid.UUID) -> int:
    """How many of the account's tickets count against `SIMCHARGE_TICKETS_MAX_OPEN`."""
    stmt = select(func.count()).where(
        Ticket.account_id == account_id, Ticket.status.in_(OPEN_STATUSES)
    )
    return int((await session.execute(stmt)).scalar_one())


async def _lock_account(session: AsyncSession, account_id: uuid.UUID) -> None:
    """The account's row, locked until the transaction ends: 130 new tickets at once for one
    account are counted one after another, not each against its own snapshot."""
    await session.execute(select(Account.id).where(Account.id == account_id).with_for_update())


async def _opened_alike(
    session: AsyncSession,
    earlier: Ticket,
    request: tuple[str, str, uuid.UUID | None, uuid.UUID | None],
) -> Ticket:
    """`earlier`, if it was opened by this very request (subject, first message, order, line);
    else the key is being reused for another one."""
    first = (
        await session.execute(
            select(TicketMessage.body)
            .where(TicketMessage.ticket_id == earlier.id, TicketMessage.author == "customer")
            .order_by(TicketMessage.created_at, TicketMessage.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    if (earlier.subject, first, earlier.order_id, earlier.line_id) != request:
        raise IdempotencyKeyReused(field="Idempotency-Key")
    return earlier


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
    """Nobody's: no assignee, or a staff member since switched off (`change_staff` releases
    their tickets; this covers those switched off before it did)."""
    priority: str | None = None
    account_id: uuid.UUID | None = None
    order_id: uuid.UUID | None = None


class QueueOrder(StrEnum):
    waiting = "waiting"
    """The back-office queue's: the tickets waiting for customer service (`open`) first —
    urgent, high, normal, low, each the longest waiting first (since `updated_at`: the
    customer's last message, or staff putting it back to `open`) — then all the others,
    latest activity first."""
    latest = "latest"
    """Latest activity first (`updated_at`), whatever the status (the admin API's)."""


PRIORITY_RANK = {p.value: i for i, p in enumerate(reversed(TicketPriority))}
"""urgent 0, high 1, normal 2, low 3."""
_rank = case(PRIORITY_RANK, value=Ticket.priority, else_=len(PRIORITY_RANK))


@dataclass(frozen=True, slots=True)
class WaitingAfter:
    """Where a page of the `waiting` order ended among the tickets waiting for customer
    service: the last one's priority, `updated_at` and id."""

    priority: str
    at: datetime
    id: uuid.UUID


def _filtered(stmt: Any, f: TicketFilter) -> Any:
    if f.status:
        stmt = stmt.where(Ticket.status == f.status)
    if f.assignee_id:
        stmt = stmt.where(Ticket.assignee_id == f.assignee_id)
    if f.unassigned:
        switched_off = select(StaffUser.id).where(StaffUser.active.is_(False))
        stmt = stmt.where(or_(Ticket.assignee_id.is_(None), Ticket.assignee_id.in_(switched_off)))
    if f.priority:
        stmt = stmt.where(Ticket.priority == f.priority)
    if f.account_id:
        stmt = stmt.where(Ticket.account_id == f.account_id)
    if f.order_id:
        stmt = stmt.where(Ticket.order_id == f.order_id)
    return stmt


async def find_tickets(
    session: AsyncSession,
    f: TicketFilter,
    *,
    limit: int = 100,
    before: datetime | None = None,
    before_id: uuid.UUID | None = None,
    order: QueueOrder = QueueOrder.latest,
    after: WaitingAfter | None = None,
) -> Sequence[Ticket]:
    """A page of tickets in `order` (keyset: the queue has no end the staff cannot reach).
    `latest`: `before`, `before_id` are the `updated_at` and id of the last ticket of a page,
    for the next one. `waiting`: `after` is where the page ended among the tickets waiting for
    customer service (the next page goes on among them, then on to the others); `before`,
    `before_id` where it ended among the others (latest first, as `latest`)."""
    if order is QueueOrder.latest:
        return await _latest(session, f, limit, before, before_id, waiting=None)
    found: list[Ticket] = []
    if before is None and f.status in (None, TicketStatus.open.value):
        stmt = _filtered(select(Ticket), f).where(Ticket.status == TicketStatus.open.value)
        if after is not None:
            rank = PRIORITY_RANK.get(after.priority, len(PRIORITY_RANK))
            stmt = stmt.where(
                or_(
                    _rank > rank,
                    and_(
                        _rank == rank,
                        or_(
                            Ticket.updated_at > after.at,
                            and_(Ticket.updated_at == after.at, Ticket.id > after.id),
                        ),
                    ),
                )
            )
        stmt = stmt.order_by(_rank, Ticket.updated_at, Ticket.id).limit(limit)
        found += (await session.execute(stmt)).scalars().all()
    if len(found) < limit and f.status != TicketStatus.open.value:
        found += await _latest(
            session, f, limit - len(found), before, before_id, waiting=False
        )
    return found


async def _latest(
    session: AsyncSession,
    f: TicketFilter,
    limit: int,
    before: datetime | None,
    before_id: uuid.UUID | None,
    *,
    waiting: bool | None,
) -> Sequence[Ticket]:
    """Latest activity first; `waiting=False`: only the tickets not waiting for customer
    service (the rest of the `waiting` order)."""
    stmt = _filtered(select(Ticket), f)
    if waiting is False and not f.status:
        stmt = stmt.where(Ticket.status != TicketStatus.open.value)
    if before is not None:
        stmt = stmt.where(older_than(Ticket.updated_at, Ticket.id, before, before_id))
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


def _staff_request_key(actor: Actor, idempotency_key: str | None) -> str | None:
    """Whose key it is: a staff member's (by id), or an API key's."""
    if not idempotency_key:
        return None
    who = f"staff:{actor.staff_id}" if actor.staff_id is not None else actor.name
    return f"{who}:{idempotency_key}"


async def _replied_alike(
    session: AsyncSession,
    earlier: TicketMessage,
    request: tuple[uuid.UUID, str, bool, str | None],
) -> TicketMessage:
    """`earlier`, if it was written by this very request (ticket, text, note or reply, the
    status asked for — kept in its audit entry); else the key is being reused for another."""
    asked: object = None
    if earlier.ticket_id == request[0]:
        entries = await session.execute(
            select(AuditEntry.details).where(
                AuditEntry.target_type == "ticket",
                AuditEntry.target_id == str(earlier.ticket_id),
                AuditEntry.action.in_(("ticket.reply", "ticket.note")),
            )
        )
        for details in entries.scalars():
            if details.get("message_id") == str(earlier.id):
                asked = details.get("status")
    if (earlier.ticket_id, earlier.body, earlier.internal, asked) != request:
        raise IdempotencyKeyReused(field="Idempotency-Key")
    return earlier


async def staff_reply(
    session: AsyncSession,
    actor: Actor,
    ticket_id: uuid.UUID,
    body: str,
    *,
    internal: bool = False,
    status: str | None = None,
    idempotency_key: str | None = None,
    now: datetime,
) -> TicketMessage:
    """A reply (the customer is told) or an internal note (they are not, but of the ticket
    resolved by it they are). A reply leaves the ticket waiting on the customer unless another
    status is given. With `idempotency_key`, the same request again answers the message it
    wrote (nothing is written or sent twice); another request under the key is
    `IdempotencyKeyReused`."""
    body = _text(body, "body", BODY_MAX)
    new_status = _status(status) if status else None
    request = (ticket_id, body, internal, new_status.value if new_status else None)
    request_key = _staff_request_key(actor, idempotency_key)
    ticket = await get_ticket(session, ticket_id, lock=True)
    if request_key is not None:
        # After the lock: a retry of the same reply waits for the first to commit, then finds it.
        earlier = await _staff_message_of_key(session, request_key)
        if earlier is not None:
            return await _replied_alike(session, earlier, request)
    if ticket.status == TicketStatus.closed and not internal:
        raise TicketClosed(field="ticket_id")
    if ticket.redacted_at is not None:  # a note would be the only text left, and kept
        raise TicketRedacted(field="ticket_id")
    before = summary(ticket)
    message = TicketMessage(
        ticket_id=ticket.id,
        author="staff",
        staff_id=actor.staff_id,
        body=body,
        internal=internal,
        request_key=request_key,
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(message)
            await session.flush()
    except IntegrityError:
        # The same key used at this moment on another ticket (whose lock is not this one's).
        earlier = await _staff_message_of_key(session, request_key) if request_key else None
        if earlier is None:
            raise
        return await _replied_alike(session, earlier, request)
    if not internal:
        ticket.status = (new_status or TicketStatus.waiting_on_customer).value
        if ticket.assignee_id is None and actor.staff_id is not None:
            ticket.assignee_id = actor.staff_id
    elif new_status is not None:
        ticket.status = new_status.value
    if not internal or ticket.status != before["status"]:
        # The customer's view of the ticket moves only with what they can see: a reply or a new
        # status; a note does not show (nor, by the ticket's time, that one was written).
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
        details={"message_id": str(message.id), "length": len(body), "status": request[3]},
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


async def _staff_message_of_key(session: AsyncSession, request_key: str) -> TicketMessage | None:
    stmt = select(TicketMessage).where(TicketMessage.request_key == request_key)
    return (await session.execute(stmt)).scalar_one_or_none()


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
    if ticket.status != before["status"]:
        # Priority and assignee are customer service's own business: the customer's view of
        # the ticket (its time) does not move with them.
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


# --- a staff member switched off -------------------------------------------------------------


async def release_of(
    session: AsyncSession, staff: StaffUser, actor: Actor, *, now: datetime
) -> int:
    """Unassign every ticket not closed of `staff`, switched off (`backoffice.staff.
    change_staff`, in its transaction): they are nobody's again, under "unassigned", rather
    than waiting on someone who can no longer sign in. Each is audited (`ticket.update`, the
    assignee before and after, `reason: assignee_switched_off`); the customer's view does not
    move (an assignee is customer service's own business). A closed ticket keeps who handled
    it. Returns how many were released."""
    held = (
        (
            await session.execute(
                select(Ticket)
                .where(
                    Ticket.assignee_id == staff.id,
                    Ticket.status != TicketStatus.closed.value,
                )
                .order_by(Ticket.id)
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    for ticket in held:
        before = summary(ticket)
        ticket.assignee_id = None
        await audit.record(
            session,
            actor,
            "ticket.update",
            target_type="ticket",
            target_id=ticket.id,
            before=before,
            after=summary(ticket),
            details={"reason": "assignee_switched_off", "staff": staff.username},
            now=now,
        )
    return len(held)


# --- the customer closes their account ------------------------------------------------------

CLOSED_WITH_ACCOUNT = N_("Closed: the customer closed their account.")
"""The internal note on each ticket closed with its account, in the operator's language."""


async def close_with_account(
    session: AsyncSession, account_id: uuid.UUID, *, language: str, now: datetime
) -> int:
    """Close every ticket of an account its holder is closing (`accounts.privacy`), each with an
    internal note saying why: no one can answer or reopen it any more. The customer is not
    told (the closure's confirmation says it all). Returns how many were closed."""
    closed = (
        await session.execute(
            update(_tickets)
            .where(
                _tickets.c.account_id == account_id,
                _tickets.c.status != TicketStatus.closed.value,
            )
            .values(status=TicketStatus.closed.value, updated_at=now)
            .returning(_tickets.c.id)
        )
    ).scalars().all()
    if closed:
        note = translate(language, CLOSED_WITH_ACCOUNT)
        await session.execute(
            insert(table_of(TicketMessage)),
            [
                {
                    "id": uuid7(),
                    "ticket_id": ticket_id,
                    "author": "staff",
                    "body": note,
                    "internal": True,
                    "created_at": now,
                }
                for ticket_id in closed
            ],
        )
    return len(closed)
