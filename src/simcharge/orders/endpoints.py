"""`/api/v1/quotes`, `/api/v1/orders`: what a top-up costs, buying it, following it, its receipt."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import API_PREFIX, DB, AppSettings, Language
from simcharge.auth.deps import Client, CurrentCustomer, OptionalCustomer
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Conflict, NotFound, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import normalize_language, pick_text
from simcharge.kit.schemas import Instant, Money
from simcharge.kit.translations import N_
from simcharge.lines.models import Line
from simcharge.orders import receipts, service
from simcharge.orders.fulfilment import issue_receipt_number
from simcharge.orders.models import (
    Order,
    OrderState,
    Payment,
    ProviderEvent,
    Refund,
    RefundState,
)
from simcharge.orders.schemas import (
    CreditNoteOut,
    EventOut,
    NextAction,
    OrderDetailOut,
    OrderIn,
    OrderOut,
    OrdersOut,
    PaymentOut,
    PlanRef,
    QuoteIn,
    QuoteOut,
    ReceiptOut,
    RefundOut,
)
from simcharge.payments import service as payments
from simcharge.payments.registry import Providers
from simcharge.portal.web import provider_url_ok

router = APIRouter(prefix=API_PREFIX, tags=["orders"])


async def get_providers(request: Request) -> Providers:
    providers: Providers = request.app.state.providers
    return providers


ProvidersDep = Annotated[Providers, Depends(get_providers)]


class ReceiptNotReady(NotFound):
    slug = "receipt-not-ready"
    title = N_("This order has no receipt: it has not been paid.")


class ReceiptRefundedUncredited(NotFound):
    """Paid, never credited, and all of it refunded (`refunded` without `fulfilled_at`)."""

    slug = "receipt-refunded-uncredited"
    title = N_("This order has no receipt: your payment was refunded and nothing was credited.")


class RefundNotFound(NotFound):
    slug = "refund-not-found"
    title = N_("There is no such refund of your orders.")


class CreditNoteNotReady(NotFound):
    """A refund still on its way: its credit note is issued once the provider confirms it."""

    slug = "credit-note-not-ready"
    title = N_("This refund is not done yet: its credit note is issued once it is.")


class CreditNoteRefundFailed(NotFound):
    slug = "credit-note-refund-failed"
    title = N_("This refund did not go through, so nothing was refunded and there is no credit note.")


class CreditNoteUncredited(NotFound):
    """A refund of a payment never credited: there is no receipt for a credit note to correct."""

    slug = "credit-note-uncredited"
    title = N_(
        "This order was never credited, so it has no receipt and its refund no credit note: the "
        "refund's notice is its record."
    )


class ReceiptAwaitsCredit(Conflict):
    """Paid and not credited (`paid`: an amount that differs, a line that cannot take it…):
    finance must settle it before there is a receipt."""

    slug = "receipt-awaits-credit"
    title = N_(
        "We received your payment but have not credited it yet, so there is no receipt: our "
        "team is looking into it. Contact customer service if you have a question."
    )


def plan_ref(order: Order, language: str) -> PlanRef:
    names = order.plan_snapshot.get("names", {})
    return PlanRef(
        code=order.plan_code,
        version=order.plan_version,
        name=pick_text(names, language) or order.plan_code,
    )


def next_action(order: Order, payment: Payment) -> NextAction:
    if order.state != "pending":
        return NextAction(type="none")
    if payment.flow == "qr" and payment.qr_payload:
        svg = segno.make(payment.qr_payload, error="m").svg_inline(scale=5, border=2)
        return NextAction(
            type="qr", qr_payload=payment.qr_payload, qr_svg=svg, url=payment.redirect_url
        )
    if payment.redirect_url:
        return NextAction(type="redirect", url=payment.redirect_url)
    return NextAction(type="none")


def order_fields(order: Order, payment: Payment, language: str, *, gift: bool) -> dict[str, Any]:
    c = order.currency
    return {
        "id": order.id,
        "reference": order.reference,
        "state": order.state,
        "msisdn": order.msisdn,
        "gift": gift,
        "plan": plan_ref(order, language),
        "method": order.method_code,
        "price": Money.of(order.price, c),
        "fee": Money.of(order.fee, c),
        "total": Money.of(order.total, c),
        "refunded": Money.of(order.refunded_amount, c),
        "created_at": order.created_at,
        "expires_at": order.expires_at,
        "paid_at": order.paid_at,
        "fulfilled_at": order.fulfilled_at,
        "closed_at": order.closed_at,
        "receipt_number": order.receipt_number,
        "next_action": next_action(order, payment),
        "payment": PaymentOut(
            provider=payment.provider, flow=payment.flow, state=payment.state, checks=payment.checks
        ),
    }


def events_out(events: Sequence[ProviderEvent]) -> list[EventOut]:
    return [
        EventOut(type=e.event_type, received_at=e.received_at, outcome=e.outcome) for e in events
    ]


def refunds_out(rows: Sequence[Refund]) -> list[RefundOut]:
    """Refunds as the payer sees them: without their reason, which staff wrote for each other
    (the back office's form) or `reversals` wrote of a provider's own refund (`admin`)."""
    return [
        RefundOut(
            id=r.id,
            reference=r.reference,
            amount=Money.of(r.amount, r.currency),
            state=r.state,
            created_at=r.created_at,
            completed_at=r.completed_at,
            credit_note_number=r.credit_note_number,
            credit_note_url=credit_note_url(r) if r.credit_note_number else None,
        )
        for r in rows
    ]


def credit_note_url(refund: Refund) -> str:
    return f"{API_PREFIX}/refunds/{refund.id}/credit-note"


async def refunds_of(s: AsyncSession, order_id: uuid.UUID) -> Sequence[Refund]:
    return (
        (
            await s.execute(
                select(Refund).where(Refund.order_id == order_id).order_by(Refund.created_at)
            )
        )
        .scalars()
        .all()
    )


async def line_owners(
    s: AsyncSession, orders: Sequence[Order]
) -> dict[uuid.UUID, uuid.UUID | None]:
    ids = {o.line_id for o in orders}
    rows = await s.execute(select(Line.id, Line.account_id).where(Line.id.in_(ids)))
    return {line_id: owner for line_id, owner in rows.all()}


async def detail_parts(
    s: AsyncSession, order: Order, language: str
) -> tuple[dict[str, Any], Sequence[Refund]]:
    """An order's fields with its payment history, and its refunds (shown to the payer by
    `refunds_out`, to staff with their reasons)."""
    payment = await service.payment_of(s, order.id)
    owner = (await line_owners(s, [order])).get(order.line_id)
    fields = {
        **order_fields(order, payment, language, gift=owner != order.account_id),
        "events": events_out(await service.events_of(s, order.id)),
    }
    return fields, await refunds_of(s, order.id)


async def detail(s: AsyncSession, order: Order, language: str) -> OrderDetailOut:
    """An order with its payment history. `gift`: the line is not the payer's (now). A refund
    that a lost dispute absorbed whole (done, nothing of it paid out by us: the payer had the
    money back through their bank, `refunds._past_what_was_paid`) is staff's, not the payer's."""
    fields, refunds = await detail_parts(s, order, language)
    shown = [r for r in refunds if not (r.state == RefundState.succeeded.value and not r.amount)]
    return OrderDetailOut(**fields, refunds=refunds_out(shown))


@router.post("/quotes", response_model=QuoteOut, summary="What a top-up would cost")
async def create_quote(
    body: QuoteIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    providers: ProvidersDep,
    language: Language,
    client: Client,
) -> QuoteOut:
    async with db.read() as s:
        line = await service.resolve_line(
            s, customer.account.id, line_id=body.line_id, msisdn=body.msisdn
        )
        q = await service.quote(
            s,
            settings,
            providers,
            plan_code=body.plan,
            method_code=body.method,
            line=line,
            now=utcnow(),
        )
        service.check_flow(providers, q, body.flow, user_agent=client.user_agent)
        token = service.sign_quote(settings.secret_key, q, customer.account.id)
        return service.quote_out(q, token, account_id=customer.account.id, language=language)


@router.post(
    "/orders",
    response_model=OrderOut,
    status_code=201,
    summary="Order a top-up (send an Idempotency-Key)",
)
async def create_order(
    body: OrderIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    providers: ProvidersDep,
    language: Language,
    client: Client,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> OrderOut:
    """Creates the order and opens the provider's checkout. With the `quote` of `POST /quotes`,
    only at that quote's total and before it expires: otherwise 409 `quote-changed` or
    `quote-expired`, whose `quote` member is the new quote (nothing is ordered); a `quote` we did
    not sign for this payer, or for another line, package or method, is 422 `quote-invalid`.
    Without `quote`, the order is priced when it is placed. The same `Idempotency-Key` with the
    same request gives the same order again (`Idempotent-Replayed: true`); with another request
    it is refused."""
    account_id = customer.account.id
    placed = await db.run(
        lambda s: service.place_order(
            s,
            settings,
            providers,
            account_id=account_id,
            idempotency_key=idempotency_key,
            plan_code=body.plan,
            method_code=body.method,
            line_id=body.line_id,
            msisdn=body.msisdn,
            flow=body.flow,
            language=language,
            now=utcnow(),
            user_agent=client.user_agent,
            quote_token=body.quote,
        )
    )
    if placed.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    await payments.open_checkout(db, settings, providers, placed.order.id, client_ip=client.ip)
    async with db.read() as s:
        order = await service.own_order(s, account_id, placed.order.id)
        return await detail(s, order, language)


@router.get("/orders", response_model=OrdersOut, summary="My orders, newest first")
async def list_orders(
    customer: CurrentCustomer,
    db: DB,
    language: Language,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[
        Instant | None,
        Query(description="The next page: `next_before` (orders created before this…)"),
    ] = None,
    before_id: Annotated[
        uuid.UUID | None,
        Query(description="… and `next_before_id` (or at that time with a smaller id)"),
    ] = None,
    line_id: uuid.UUID | None = None,
    state: OrderState | None = None,
) -> OrdersOut:
    if before_id is not None and before is None:
        # Alone, it would be ignored: the first page again, for ever.
        raise ValidationFailed(field="before")
    async with db.read() as s:
        rows = await service.orders_of(
            s,
            customer.account.id,
            limit=limit,
            before=before,
            before_id=before_id,
            line_id=line_id,
            state=state.value if state is not None else None,
        )
        payments_by_order = {
            p.order_id: p
            for p in (
                await s.execute(select(Payment).where(Payment.order_id.in_([o.id for o in rows])))
            ).scalars()
        }
        owners = await line_owners(s, rows)
        items = [
            OrderOut(
                **order_fields(
                    o, payments_by_order[o.id], language, gift=owners.get(o.line_id) != o.account_id
                )
            )
            for o in rows
        ]
    more = len(rows) == limit
    return OrdersOut(
        items=items,
        next_before=rows[-1].created_at if more else None,
        next_before_id=rows[-1].id if more else None,
    )


@router.get(
    "/orders/{order_id}",
    response_model=OrderDetailOut,
    summary="One of my orders, with its payment history",
)
async def get_order(
    order_id: uuid.UUID, customer: CurrentCustomer, db: DB, language: Language
) -> OrderDetailOut:
    async with db.read() as s:
        order = await service.own_order(s, customer.account.id, order_id)
        return await detail(s, order, language)


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderDetailOut,
    summary="Cancel an order waiting for payment",
)
async def cancel_order(
    order_id: uuid.UUID,
    customer: CurrentCustomer,
    db: DB,
    providers: ProvidersDep,
    language: Language,
) -> OrderDetailOut:
    async with db.read() as s:
        await service.own_order(s, customer.account.id, order_id)
    await payments.cancel_order(db, providers, order_id)
    async with db.read() as s:
        return await detail(s, await service.own_order(s, customer.account.id, order_id), language)


@router.post(
    "/orders/{order_id}/check",
    response_model=OrderDetailOut,
    summary="Ask the payment provider now",
)
async def check_order(
    order_id: uuid.UUID,
    customer: CurrentCustomer,
    db: DB,
    providers: ProvidersDep,
    language: Language,
) -> OrderDetailOut:
    """A pending order, or one closed unpaid in the last hour (a payment made at the last moment
    whose notification is lost is found and credited: `late_success`)."""
    async with db.read() as s:
        order = await service.own_order(s, customer.account.id, order_id)
    if payments.customer_may_ask(order, utcnow()):
        await payments.check_order(db, providers, order_id, source="customer_check", capture=True)
    async with db.read() as s:
        return await detail(s, await service.own_order(s, customer.account.id, order_id), language)


@router.get(
    "/orders/{order_id}/return",
    summary="Where the payment provider sends the payer back",
    response_class=RedirectResponse,
    status_code=303,
)
async def return_from_provider(
    order_id: uuid.UUID,
    db: DB,
    providers: ProvidersDep,
    settings: AppSettings,
    customer: OptionalCustomer,
    cancelled: Annotated[str | None, Query(description="Set on the provider's cancel URL")] = None,
) -> Response:
    """The query string is never trusted: the provider is asked where the payment stands (and a
    PayPal order the payer approved is captured) — when the payer is signed in and the order is
    theirs: no one else makes us call a provider (the webhook and reconciliation settle it
    anyway). Then the payer goes to the order's page — or, when PayPal declined the funding
    source at capture (`INSTRUMENT_DECLINED`), back to PayPal's approval page to choose another
    one (PayPal's "Handle funding failures": restart the payment), if it is a provider page we
    may send a payer to (`portal.web.provider_url_ok`) and the payer did not come back from it
    by its cancel link (`cancelled`: only where to send them, never what was paid)."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
    owner = customer is not None and order is not None and order.account_id == customer.account.id
    if owner and order is not None and order.state == "pending":
        # Unreachable: the page says "waiting"; the webhook or reconciliation will settle it.
        with contextlib.suppress(payments.PaymentProviderUnavailable):
            await payments.check_order(db, providers, order_id, source="return", capture=True)
            restart = None if cancelled else await _restart_url(db, settings, order_id)
            if restart is not None:
                return RedirectResponse(restart, status_code=303)
    return RedirectResponse(f"/account/orders/{order_id}", status_code=303)


FUNDING_DECLINED = "INSTRUMENT_DECLINED"
"""PayPal's refusal of a capture whose funding source failed: the payer chooses another one on
PayPal's approval page, and the next capture (under a new request id) takes it."""


async def _restart_url(db: Database, settings: Settings, order_id: uuid.UUID) -> str | None:
    """Where to send a payer back whose capture was just declined for its funding source: the
    payment's approval page, while the order still waits for payment."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        payment = await service.payment_of(s, order_id)
    url = payment.redirect_url
    if order is None or order.state != OrderState.pending.value or not url:
        return None
    if not (payment.last_error or "").startswith(FUNDING_DECLINED):
        return None
    return url if provider_url_ok(settings, url) else None


@router.get(
    "/orders/{order_id}/receipt",
    summary="The receipt: PDF, or JSON with Accept",
    responses={200: {"content": {"application/pdf": {}, "application/json": {}}}},
)
async def get_receipt(
    order_id: uuid.UUID,
    request: Request,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    lang: Annotated[
        str | None,
        Query(max_length=16, description="The receipt's language; default: the account's"),
    ] = None,
) -> Response:
    """In the account's language (the one the receipt is e-mailed in), or `?lang=`."""
    language = normalize_language(lang) or customer.account.language
    async with db.read() as s:
        order = await service.own_order(s, customer.account.id, order_id)
    zone = settings.operator_timezone
    if await db.run(lambda s: issue_receipt_number(s, order_id, zone=zone)) is None:
        if order.state == OrderState.paid.value:
            raise ReceiptAwaitsCredit(field="order_id")
        if order.state == OrderState.refunded.value:
            raise ReceiptRefundedUncredited(field="order_id")
        raise ReceiptNotReady(field="order_id")
    async with db.read() as s:
        order = await service.own_order(s, customer.account.id, order_id)
        if "application/json" in request.headers.get("accept", ""):
            facts = await receipts.facts(
                s, order, language, settings.operator_name, settings.operator_timezone
            )
            # What the receipt says was paid: a payment put on the balance is not the order's
            # price and fee.
            paid = await receipts.paid_amounts(s, order)
            body = ReceiptOut(
                number=facts.number,
                issued_at=facts.issued_at,
                order_reference=facts.order_reference,
                operator=facts.operator,
                payer=facts.payer,
                msisdn=facts.msisdn,
                plan=facts.plan,
                includes=facts.grants,
                method=facts.method,
                price=Money.of(paid.price, paid.currency),
                fee=Money.of(paid.fee, paid.currency),
                total=Money.of(paid.total, paid.currency),
                refunded=Money.of(paid.refunded, paid.currency),
                status=facts.status,
                pdf_url=f"{API_PREFIX}/orders/{order.id}/receipt",
            )
            return Response(body.model_dump_json(), media_type="application/json")
    pdf = await receipts.receipt_for(
        db, order.id, language, settings.operator_name, settings.operator_timezone
    )
    assert pdf is not None
    return receipts.pdf_response(pdf, receipts.filename(order))


@router.get(
    "/refunds/{refund_id}/credit-note",
    summary="A refund's credit note: PDF, or JSON with Accept",
    responses={200: {"content": {"application/pdf": {}, "application/json": {}}}},
)
async def get_credit_note(
    refund_id: uuid.UUID,
    request: Request,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    lang: Annotated[
        str | None,
        Query(max_length=16, description="The credit note's language; default: the account's"),
    ] = None,
) -> Response:
    """The document of a done refund of one of my orders (`GET /orders/{id}` lists its refunds
    with their `credit_note_url`), numbered in its own series (`C2026-000001`), naming the
    receipt it corrects; in the account's language (the one it is e-mailed in), or `?lang=`.
    The receipt itself stays as it was issued."""
    language = normalize_language(lang) or customer.account.language
    async with db.read() as s:
        refund = await s.get(Refund, refund_id)
        order = await s.get(Order, refund.order_id) if refund is not None else None
    if refund is None or order is None or order.account_id != customer.account.id:
        raise RefundNotFound(field="refund_id")  # someone else's: as if there were none
    zone = settings.operator_timezone
    if await db.run(lambda s: service.issue_credit_note(s, refund_id, utcnow(), zone=zone)) is None:
        if refund.state == RefundState.pending.value:
            raise CreditNoteNotReady(field="refund_id")
        if refund.state == RefundState.failed.value:
            raise CreditNoteRefundFailed(field="refund_id")
        raise CreditNoteUncredited(field="refund_id")
    async with db.read() as s:
        refund = await s.get(Refund, refund_id)
        order = await s.get(Order, order.id)
        assert refund is not None
        assert order is not None
        if "application/json" in request.headers.get("accept", ""):
            facts = await receipts.credit_note_facts(
                s, order, refund, language, settings.operator_name, settings.operator_timezone
            )
            money = receipts.refunded_amounts(order, refund)
            body = CreditNoteOut(
                number=facts.number,
                issued_at=facts.issued_at,
                receipt_number=facts.receipt_number,
                order_id=order.id,
                order_reference=facts.order_reference,
                refund_reference=facts.refund_reference,
                operator=facts.operator,
                payer=facts.payer,
                msisdn=facts.msisdn,
                plan=facts.plan,
                method=facts.method,
                price=Money.of(money.price, money.currency),
                fee=Money.of(money.fee, money.currency),
                total=Money.of(money.total, money.currency),
                taken_back=facts.taken_back,
                pdf_url=credit_note_url(refund),
            )
            return Response(body.model_dump_json(), media_type="application/json")
    pdf = await receipts.credit_note_for(
        db, refund_id, language, settings.operator_name, settings.operator_timezone
    )
    assert pdf is not None
    return receipts.pdf_response(pdf, receipts.credit_note_filename(refund))
