"""`/api/v1/admin/orders`: the staff's view of orders, and refunds (a staff bearer token or an
API key with scopes; the back office adds its screens on top). Refunds are audited, and so are
reads (personal data seen by staff)."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Sequence
from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import API_PREFIX, DB, Language
from simcharge.api.idempotency import IdempotencyKeyHeader
from simcharge.auth.service import normalize_phone
from simcharge.backoffice import audit, money
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import require
from simcharge.backoffice.orders import order_facts
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.schemas import NoteIn
from simcharge.db import older_than
from simcharge.errors import Forbidden, ValidationFailed, required_idempotency_key
from simcharge.kit.clock import utcnow
from simcharge.kit.schemas import Instant, Money
from simcharge.kit.translations import N_
from simcharge.lines.models import Line
from simcharge.orders.endpoints import detail_parts, refunds_out
from simcharge.orders.models import Order, OrderState, Refund
from simcharge.orders.refunds import ask_for_refund, refundable
from simcharge.orders.schemas import RefundIn, StaffOrderOut, StaffRefundOut
from simcharge.orders.service import OrderNotFound

router = APIRouter(prefix=f"{API_PREFIX}/admin/orders", tags=["admin"])
log = structlog.get_logger("simcharge.audit")

ReadOrders = Annotated[Actor, require(Permission.customers_read)]
WriteRefunds = Annotated[Actor, require(Permission.refunds_create)]


class ApplyNeedsAPerson(Forbidden):
    slug = "apply-needs-a-person"
    title = N_(
        "Putting a payment on the line's balance settles a payment that needs attention, which "
        "a staff member decides (an API key has no one behind it)."
    )


def staff_refunds_out(rows: Sequence[Refund]) -> list[StaffRefundOut]:
    """Refunds as staff see them: with the reason they wrote (the payer's view has none)."""
    return [
        StaffRefundOut(**out.model_dump(), reason=row.reason)
        for out, row in zip(refunds_out(rows), rows, strict=True)
    ]


async def staff_view(s: AsyncSession, order: Order, language: str) -> StaffOrderOut:
    fields, refunds = await detail_parts(s, order, language)
    paid = (
        Money.of(order.paid_amount, order.paid_currency or order.currency)
        if order.paid_amount is not None
        else None
    )
    return StaffOrderOut(
        **fields,
        refunds=staff_refunds_out(refunds),
        account_id=order.account_id,
        attention=order.attention,
        attention_note=order.attention_note,
        paid=paid,
        refundable=Money.of(await refundable(s, order), order.paid_currency or order.currency),
    )


def number_searched(raw: str) -> str:
    """The E.164 number of `?msisdn=` as orders store it (`kit.phone`): written with spaces or
    punctuation, without its `+` or with `00` for it, or with a `+` sent unencoded (a space in
    a query string); 422 on `msisdn` for one that is no number."""
    text = unicodedata.normalize("NFKC", raw).strip()
    if text.startswith("00"):
        text = text[2:]
    return normalize_phone(text if text.startswith("+") else f"+{text}", field="msisdn")


@router.get("", response_model=list[StaffOrderOut], summary="Orders, newest first")
async def list_orders(
    actor: ReadOrders,
    db: DB,
    language: Language,
    attention: Annotated[bool, Query(description="Only orders finance must look at")] = False,
    state: OrderState | None = None,
    msisdn: Annotated[
        str | None,
        Query(
            max_length=32,
            description="The line's number, in any usual writing: spaces, without `+`, `00` "
            "for `+` (422 for one that is no number)",
        ),
    ] = None,
    before: Annotated[
        Instant | None, Query(description="The next page: the last order's `created_at`…")
    ] = None,
    before_id: Annotated[
        uuid.UUID | None, Query(description="… and its `id` (orders created at the same time)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[StaffOrderOut]:
    if before_id is not None and before is None:
        raise ValidationFailed(field="before")  # alone, it would be ignored: the first page
    msisdn = number_searched(msisdn) if msisdn else None
    stmt = select(Order)
    if attention:
        stmt = stmt.where(Order.attention.is_not(None))
    if state:
        stmt = stmt.where(Order.state == state)
    if msisdn:
        stmt = stmt.where(Order.msisdn == msisdn)
    if before:
        stmt = stmt.where(older_than(Order.created_at, Order.id, before, before_id))
    stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    async with db.read() as s:
        found = [await staff_view(s, o, language) for o in (await s.execute(stmt)).scalars()]
        # The audit is kept for ever: the line searched for by id, never its number (a number
        # of no line: only that one was typed).
        line_id = (
            (await s.execute(select(Line.id).where(Line.msisdn == msisdn))).scalar_one_or_none()
            if msisdn
            else None
        )
    filters = audit.read_details(
        len(found),
        attention=attention,
        state=state.value if state is not None else None,
        line=str(line_id) if line_id is not None else None,
        number=bool(msisdn) and line_id is None,
        before=before,
    )
    await audit.record_read(db, actor, "order.list", details=filters)
    return found


@router.get("/{order_id}", response_model=StaffOrderOut, summary="One order, all it went through")
async def get_order(
    order_id: uuid.UUID, actor: ReadOrders, db: DB, language: Language
) -> StaffOrderOut:
    async with db.read() as s:
        order = await s.get(Order, order_id)
        if order is None:
            raise OrderNotFound(field="order_id")
        out = await staff_view(s, order, language)
    await audit.record_read(db, actor, "order.view", target_type="order", target_id=order_id)
    return out


@router.post(
    "/{order_id}/refunds",
    response_model=StaffRefundOut,
    status_code=202,
    summary="Refund an order, wholly or in part",
)
async def refund_order(
    order_id: uuid.UUID,
    body: RefundIn,
    key: WriteRefunds,
    db: DB,
    idempotency_key: IdempotencyKeyHeader = None,
) -> StaffRefundOut:
    """Accepted: the provider is asked by the worker; until it confirms, what the refund takes
    back is held (pending). The policy is in the README ("Refunds")."""
    idempotency_key = required_idempotency_key(idempotency_key)
    requested_by = key.name

    async def run(s: AsyncSession) -> Refund:
        order = await s.get(Order, order_id)
        before = order_facts(order) if order is not None else None
        refund, made = await ask_for_refund(
            s,
            order_id,
            amount=body.amount,
            reason=body.reason,
            requested_by=requested_by,
            now=utcnow(),
            idempotency_key=idempotency_key,
        )
        assert order is not None
        if not made:
            return refund  # a retry: one refund, one entry in the audit log
        await audit.record(
            s, key, "order.refund", target_type="order", target_id=order_id, before=before,
            after={**order_facts(order), "refund": refund.reference},
            details={"amount": refund.amount, "currency": refund.currency,
                     "reason": body.reason},
        )
        return refund

    refund = await db.run(run)
    log.info(
        "refund.requested",
        order=str(order_id),
        refund=refund.reference,
        amount=refund.amount,
        currency=refund.currency,
        by=requested_by,
    )
    async with db.read() as s:
        row = await s.get(Refund, refund.id)
        assert row is not None
        return staff_refunds_out([row])[0]


@router.post(
    "/{order_id}/apply-to-wallet",
    response_model=StaffOrderOut,
    summary="Put an uncredited payment's money on the line's wallet",
)
async def apply_to_wallet(
    order_id: uuid.UUID,
    body: NoteIn,
    key: WriteRefunds,
    db: DB,
    language: Language,
    request: Request,
) -> StaffOrderOut:
    """For an order `paid` but not credited (another amount or currency, an unusable line…):
    what is left of its money moves from `unapplied` to the line's wallet, once, in the wallet's
    currency (another currency: `wallet-currency-differs`, refund it instead). What is applied
    can no longer be refunded. The attention flag is resolved with the note; audited.

    A staff member's action: it settles a payment that needed attention, which an API key never
    does (`403 apply-needs-a-person`, audited as a refusal; `refunds:write` refunds only)."""
    if key.staff_id is None:
        path = request.url.path
        await db.run(
            lambda s: audit.record(
                s,
                key,
                "access.denied",
                target_type="order",
                target_id=order_id,
                details={
                    "permission": Permission.refunds_create.value,
                    "path": path,
                    "reason": "a person only",
                },
            )
        )
        raise ApplyNeedsAPerson()

    async def run(s: AsyncSession) -> StaffOrderOut:
        order = await money.apply_payment_to_wallet(s, key, order_id, body.note, utcnow())
        return await staff_view(s, order, language)

    return await db.run(run)

