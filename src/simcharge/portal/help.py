"""Help: the customer's tickets with customer service (the tickets service), and "not credited?"
from an order's page: ask the provider again, and if still nothing, a ticket with the order."""

from __future__ import annotations

import contextlib
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import service as accounts
from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import error_texts
from simcharge.auth.deps import Limits
from simcharge.errors import IdempotencyKeyReused, SimchargeError
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import N_, translate
from simcharge.orders import service as orders
from simcharge.payments import service as payments
from simcharge.portal.account import _providers, _uuid, require
from simcharge.portal.web import Page, Visitor, form_of, redirect, render
from simcharge.tickets import service as tickets

router = APIRouter(include_in_schema=False)

TICKET_STATES: dict[str, str] = {
    "open": N_("With customer service"),
    "waiting_on_customer": N_("Waiting for your answer"),
    "resolved": N_("Resolved"),
    "closed": N_("Closed"),
}


async def _help_page(
    request: Request, page: Visitor, db: DB, *, status: int = 200, values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None, error: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    account_id = require(page)
    async with db.read() as s:
        mine = await tickets.tickets_of(s, account_id)
        lines = await accounts.own_lines(s, account_id)
        recent = list(await orders.orders_of(s, account_id, limit=20))
        # An order's page links here with it chosen (`?order=`): an older order than the list's
        # is added to it, so that it stays chosen. Another's, or no order, is not.
        chosen = (values or {}).get("order", "")
        if chosen and all(str(o.id) != chosen for o in recent):
            with contextlib.suppress(SimchargeError, ValueError):
                recent.append(await orders.own_order(s, account_id, uuid.UUID(chosen)))
    return render(
        request, page, "help.html", status=status, tickets=mine, lines=lines, orders=recent,
        ticket_states=TICKET_STATES, values=values or {}, errors=errors or {}, error=error,
        idempotency_key=uuid.uuid4().hex, headers=headers,
    )


@router.get("/account/help")
async def help_page(request: Request, page: Page, db: DB, order: str = "") -> Response:
    return await _help_page(request, page, db, values={"order": order})


CARRIED = N_(
    "This question is closed, so your answer was not sent. It is below as a new question: "
    "check it and send it."
)
"""Said above the new-question form an answer to a closed question is carried into."""


@router.post("/account/help")
async def open_ticket(
    request: Request, page: Page, db: DB, limits: Limits, settings: AppSettings
) -> Response:
    """A new question; refused past `SIMCHARGE_TICKETS_MAX_OPEN` open ones or too many at once
    (the refusal beside the form, what was typed kept in it)."""
    account_id = require(page)
    form = await form_of(request, page)
    values = {k: form.get(k, "") for k in ("subject", "body", "order", "line")}
    try:
        await tickets.count_attempt(limits, account_id)
        order_id = _uuid(values["order"], "order_id") if values["order"] else None
        line_id = _uuid(values["line"], "line_id") if values["line"] else None

        async def run(s: AsyncSession) -> uuid.UUID:
            ticket, _ = await tickets.open_ticket(
                s, account_id, subject=values["subject"], body=values["body"],
                order_id=order_id, line_id=line_id,
                idempotency_key=form.get("idempotency_key", "")[:128] or None,
                max_open=settings.tickets_max_open, now=utcnow(),
            )
            return ticket.id

        ticket_id = await db.run(run)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _help_page(
            request, page, db, status=exc.status, values=values, errors=errors, error=summary,
            headers=exc.headers,
        )
    return redirect(f"/account/help/{ticket_id}?sent=1")


@router.get("/account/help/{ticket_id}")
async def ticket_page(ticket_id: str, request: Request, page: Page, db: DB) -> Response:
    account_id = require(page)
    async with db.read() as s:
        ticket = await tickets.own_ticket(s, account_id, _uuid(ticket_id, "ticket_id"))
        thread = await tickets.messages_of(s, ticket.id, internal=False)
        order = await orders.own_order(s, account_id, ticket.order_id) if ticket.order_id else None
    return render(
        request, page, "ticket.html", ticket=ticket, thread=thread, order=order,
        ticket_states=TICKET_STATES, errors={}, error=None, idempotency_key=uuid.uuid4().hex,
        sent=request.query_params.get("sent") == "1",
        replied=request.query_params.get("replied") == "1",
    )


@router.post("/account/help/{ticket_id}/reply")
async def reply(ticket_id: str, request: Request, page: Page, db: DB, limits: Limits) -> Response:
    """An answer. Refused, the page is drawn again with what was typed; refused because the
    question was closed meanwhile, what was typed becomes a new question's, on the Help page
    (the subject and the order or line the closed one was about chosen), for the customer to
    check and send."""
    account_id = require(page)
    form = await form_of(request, page)
    tid = _uuid(ticket_id, "ticket_id")
    typed = form.get("body", "")
    try:
        await tickets.count_attempt(limits, account_id)
        await db.run(
            lambda s: tickets.customer_reply(
                s, account_id, tid, form.get("body", ""),
                idempotency_key=form.get("idempotency_key", "")[:128] or None, now=utcnow(),
            )
        )
    except SimchargeError as exc:
        summary, _ = error_texts(exc, page.language)
        async with db.read() as s:
            ticket = await tickets.own_ticket(s, account_id, tid)
            thread = await tickets.messages_of(s, ticket.id, internal=False)
            order = (
                await orders.own_order(s, account_id, ticket.order_id) if ticket.order_id else None
            )
        if isinstance(exc, tickets.TicketClosed) and typed.strip():
            carried = {
                "subject": ticket.subject, "body": typed,
                "order": str(ticket.order_id or ""), "line": str(ticket.line_id or ""),
            }
            return await _help_page(
                request, page, db, status=exc.status, values=carried,
                error=translate(page.language, CARRIED),
            )
        return render(
            request, page, "ticket.html", status=exc.status, ticket=ticket, thread=thread,
            order=order, ticket_states=TICKET_STATES, errors={"body": summary}, error=summary,
            idempotency_key=uuid.uuid4().hex, values={"body": typed}, headers=exc.headers,
        )
    return redirect(f"/account/help/{tid}?replied=1")


@router.post("/account/orders/{order_id}/help")
async def order_not_credited(order_id: str, request: Request, page: Page, db: DB) -> Response:
    """One button: the provider is asked again; credited now, the order's page says so; still
    not, a ticket with the order attached goes to customer service."""
    account_id = require(page)
    await form_of(request, page)
    oid = _uuid(order_id)
    async with db.read() as s:
        order = await orders.own_order(s, account_id, oid)
    if payments.customer_may_ask(order, utcnow()):
        with contextlib.suppress(payments.PaymentProviderUnavailable):
            await payments.check_order(
                db, _providers(request), oid, source="customer_check", capture=True
            )
    async with db.read() as s:
        order = await orders.own_order(s, account_id, oid)
    if order.state == "fulfilled":
        return redirect(f"/account/orders/{oid}")
    subject = translate(page.language, N_("Order %(reference)s is not credited")) % {
        "reference": order.reference
    }
    body = translate(
        page.language,
        N_("I paid for this order but my line has not been credited. Please check it."),
    )

    async def run(s: AsyncSession) -> uuid.UUID:
        # One such ticket per order, whatever language it was asked in (its subject is the
        # asker's language): asked again, the customer goes to the one there is.
        key = f"not-credited:{oid}"
        earlier = await tickets.ticket_of_key(s, account_id, key)
        if earlier is not None:
            return earlier.id
        try:
            ticket, _ = await tickets.open_ticket(
                s, account_id, subject=subject, body=body, order_id=oid, idempotency_key=key,
                now=utcnow(),
            )
        except IdempotencyKeyReused:
            # Pressed at the same moment in another language: that press opened the one there
            # is (a press in the same language is answered that ticket by `open_ticket`).
            earlier = await tickets.ticket_of_key(s, account_id, key)
            if earlier is None:
                raise
            return earlier.id
        return ticket.id

    return redirect(f"/account/help/{await db.run(run)}")
