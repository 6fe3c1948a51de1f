"""Talking to providers about orders. Every provider call happens outside a database
transaction; what it returns is applied in one (`orders.fulfilment.apply_status`).

- `open_checkout`: after the order is committed, open the provider's checkout (the provider's
  own idempotency key is the order reference, so a retry opens the same one).
- notifications: `payments.webhooks` (verified, stored as delivered, then applied).
- `check_order`: ask the provider now (the payer's return, "my balance has not updated", the
  reconciliation job). The return URL's query string is never trusted; an answer naming another
  merchant is flagged, never credited.
- `cancel_order`: close at the provider first; if it turns out paid, credit it instead.
- `reconcile`: pending payments are asked again with backoff (1, 2, 4 … 30 minutes, never
  later than the order's expiry); an order past its time is closed at the provider and expired;
  a closed order's payment is asked again for `LATE_PAYMENT_WINDOW` after closing; stored
  events whose processing failed are applied again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Conflict, ServiceUnavailable
from simcharge.kit.clock import utcnow
from simcharge.kit.text import text_only
from simcharge.kit.translations import N_
from simcharge.metrics import ORDERS
from simcharge.orders.fulfilment import (
    LATE_CHECK_FIRST,
    LATE_PAYMENT_WINDOW,
    PAID_STATES,
    Outcome,
    apply_status,
    payment_id_holder,
)
from simcharge.orders.models import (
    CLOSED_UNPAID,
    Attention,
    Order,
    OrderState,
    Payment,
    PaymentStatusValue,
    ProviderEvent,
)
from simcharge.orders.refunds import amount_unknown
from simcharge.orders.service import (
    flag_order,
    payment_of,
)
from simcharge.payments.providers import (
    CheckoutRequest,
    PaymentFlow,
    PaymentProvider,
    PaymentState,
    PaymentStatus,
    ProviderError,
)
from simcharge.payments.registry import Providers
from simcharge.payments.webhooks import process_event

log = structlog.get_logger("simcharge.payments")

MAX_CHECK_INTERVAL = timedelta(minutes=30)


class PaymentProviderUnavailable(ServiceUnavailable):
    slug = "payment-provider-unavailable"
    title = N_("The payment service cannot be reached right now; please try again in a moment.")


class OrderAlreadyPaid(Conflict):
    slug = "order-already-paid"
    title = N_("This order has been paid; it cannot be cancelled.")


class OrderNotCancellable(Conflict):
    slug = "order-not-cancellable"
    title = N_("Only an order waiting for payment can be cancelled.")


CLOSED_VALUES = frozenset(state.value for state in CLOSED_UNPAID)


def urls(settings: Settings, order: Order) -> tuple[str, str, str]:
    base = settings.base_url.rstrip("/")
    return (
        f"{base}/api/v1/orders/{order.id}/return",
        f"{base}/api/v1/orders/{order.id}/return?cancelled=1",
        f"{base}/api/v1/webhooks/{order.provider}",
    )


DESCRIPTION_BYTES = 127
"""The longest description every provider takes: WeChat Pay's `description` is 127 bytes of
UTF-8 (PayPal's 127 characters, Alipay's `subject` 256, Stripe's product name more)."""


def description(order: Order) -> str:
    """What the payer reads at the provider (Stripe's product name, PayPal's description,
    Alipay's `subject`, WeChat Pay's `description`): the plan in the order's language and our
    reference (the provider has it already, `out_trade_no` / `client_reference_id`), never the
    number topped up — a gift's is a third party's, and none is the provider's business. Cut
    to `DESCRIPTION_BYTES` bytes at a character's edge, the plan's name first, so that it fits
    every provider and keeps the reference whole."""
    names: dict[str, str] = order.plan_snapshot.get("names", {})
    name = names.get(order.language) or names.get("en") or order.plan_code
    tail = f" — {order.reference}"
    room = DESCRIPTION_BYTES - len(tail.encode())
    cut = name.encode()[: max(room, 0)].decode(errors="ignore").rstrip()
    return f"{cut}{tail}"


async def open_checkout(
    db: Database,
    settings: Settings,
    providers: Providers,
    order_id: uuid.UUID,
    *,
    client_ip: str | None = None,
) -> Payment:
    """Open (or find again) the provider's checkout for an order and remember it."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        payment = await payment_of(s, order.id)
    if payment.redirect_url or payment.qr_payload or order.state != OrderState.pending:
        return payment
    provider = _provider(providers, order.provider)
    return_url, cancel_url, notify_url = urls(settings, order)
    request = CheckoutRequest(
        reference=order.reference,
        amount=order.total,
        currency=order.currency,
        description=description(order),
        return_url=return_url,
        cancel_url=cancel_url,
        notify_url=notify_url,
        expires_at=order.expires_at,
        language=order.language,
        flow=PaymentFlow(payment.flow),
        idempotency_key=order.reference,
        client_ip=client_ip,
        placed_at=order.created_at,
    )
    try:
        checkout = await provider.create_checkout(request)
    except ProviderError as exc:
        log.warning(
            "payments.checkout_failed",
            order=str(order.id),
            provider=order.provider,
            provider_error=exc.code,
            transient=exc.transient,
        )
        if exc.transient:
            raise PaymentProviderUnavailable() from exc
        reason = f"{exc.code}: {exc}"
        await db.run(lambda s: _fail_order(s, order.id, reason))
        raise PaymentProviderUnavailable(
            N_("The payment service refused this payment; choose another method.")
        ) from exc

    async def remember(s: AsyncSession) -> Payment:
        row = await payment_of(s, order.id, lock=True)
        row.provider_ref = checkout.provider_ref
        row.redirect_url, row.qr_payload = checkout.redirect_url, checkout.qr_payload
        row.checkout_expires_at, row.updated_at = checkout.expires_at, utcnow()
        await s.flush()
        return row

    ORDERS.labels(order.method_code, "checkout_opened").inc()
    return await db.run(remember)


async def _fail_order(s: AsyncSession, order_id: uuid.UUID, reason: str) -> None:
    now = utcnow()
    await s.execute(
        update(Order)
        .where(Order.id == order_id, Order.state == OrderState.pending.value)
        .values(state=OrderState.failed.value, closed_at=now)
    )
    await s.execute(
        update(Payment)
        .where(Payment.order_id == order_id, Payment.state == PaymentStatusValue.pending.value)
        .values(
            state=PaymentStatusValue.failed.value,
            last_error=reason,
            updated_at=now,
            next_check_at=None,
        )
    )


def _provider(providers: Providers, name: str) -> PaymentProvider:
    provider = providers.named(name)
    if provider is None:
        raise PaymentProviderUnavailable()
    return provider


def _foreign(providers: Providers, order: Order, status: PaymentStatus) -> str | None:
    """The merchant a provider's answer names, when it is not ours (None: ours, or not named)."""
    expected = providers.merchant_of(order.provider)
    if expected and status.merchant is not None and status.merchant != expected:
        return status.merchant
    return None


async def _flag_foreign(s: AsyncSession, order_id: uuid.UUID, merchant: str, source: str) -> None:
    order = await s.get(Order, order_id, with_for_update=True)
    assert order is not None
    flag_order(
        order,
        Attention.merchant_mismatch,
        f"the provider's answer names merchant {merchant}, not ours: nothing credited ({source})",
    )


def late_window_open(order: Order, now: datetime) -> bool:
    """A closed unpaid order whose payment is still asked about (a payment at the last moment)."""
    return (
        order.state in CLOSED_VALUES
        and order.closed_at is not None
        and now <= order.closed_at + LATE_PAYMENT_WINDOW
    )


def customer_may_ask(order: Order, now: datetime) -> bool:
    """Whether a customer's "check now" asks the provider: a pending order, or a closed unpaid
    one in its late-payment window."""
    return order.state == OrderState.pending or late_window_open(order, now)


async def check_order(
    db: Database, providers: Providers, order_id: uuid.UUID, *, source: str, capture: bool = False
) -> Outcome:
    """Ask the provider where the payment stands and apply the answer (a closed order's too:
    a late payment is credited, `late_success`). The customer's "check now" asks about closed
    orders only in their late-payment window (`late_window_open`); staff, about any."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        payment = await payment_of(s, order.id)
    if payment.state == PaymentStatusValue.succeeded and not (
        amount_unknown(order) or (source == STAFF_CHECK and _held_after_provider_refund(order))
    ):
        return Outcome.already
    pending = order.state == OrderState.pending
    provider = _provider(providers, order.provider)
    try:
        status = await provider.query(order.reference, payment.provider_ref)
        foreign = _foreign(providers, order, status)
        if pending and capture and status.capturable and payment.provider_ref and not foreign:
            capture_fn = getattr(provider, "capture", None)
            if capture_fn is not None:
                status = await capture_fn(payment.provider_ref, capture_request_id(order, payment))
                foreign = _foreign(providers, order, status)
    except ProviderError as exc:
        reason = f"{exc.code}: {exc}"
        await db.run(lambda s: _note_check(s, order.id, reason))
        if exc.transient:
            raise PaymentProviderUnavailable() from exc
        return Outcome.unchanged
    if foreign is not None:
        log.warning("payments.foreign_merchant", order=str(order.id), provider=order.provider)
        await db.run(lambda s: _flag_foreign(s, order.id, foreign, source))
        await db.run(lambda s: _note_check(s, order.id, "answer for another merchant"))
        return Outcome.flagged
    outcome = await db.run(
        lambda s: apply_status(
            s, order.id, status, source=source, now=utcnow(), policy=providers.lifecycle
        )
    )
    if outcome is Outcome.unchanged:
        await db.run(lambda s: _note_answer(s, order.id, payment, status))
    return outcome


async def _note_answer(
    s: AsyncSession, order_id: uuid.UUID, payment: Payment, status: PaymentStatus
) -> None:
    """`_note_check` after an answer that changed nothing, with the reason when it was refused
    for naming another order's payment (`fulfilment.payment_id_holder`)."""
    await _note_check(s, order_id, await _taken_elsewhere(s, payment, status))


async def _taken_elsewhere(s: AsyncSession, payment: Payment, status: PaymentStatus) -> str | None:
    """Why an answer saying `payment` was paid was not applied: the provider's payment id it
    names is another order's payment's (a provider's mix-up, or ours: finance reads it on the
    payment, `last_error`, and the order is listed as pending too long). None otherwise."""
    holder = await payment_id_holder(s, payment.provider, status.payment_id, besides=payment.id)
    if holder is None:
        return None
    named = text_only(status.payment_id or "")[:128]
    return f"the provider's answer names payment {named}, order {holder}'s: nothing credited"


STAFF_CHECK = "staff"
"""The `source` of staff's "check" (the back office's order panel)."""


def _held_after_provider_refund(order: Order) -> bool:
    """Taken, not credited, and refunded at the provider (by an amount it may not have reported
    yet: PayPal lists a refund's amount once it completes): staff's check asks again and records
    what more was refunded (`reversals.note_refunded_status`), never anything twice. (Only
    staff's: reconciliation does not keep asking about a payment it knows was taken.)"""
    return order.fulfilled_at is None and order.attention == Attention.provider_refund.value


def capture_request_id(order: Order, payment: Payment) -> str:
    """The idempotency key of a capture (PayPal's `PayPal-Request-Id`). PayPal answers a request
    id it has seen with that request's answer, so a capture it refused (`INSTRUMENT_DECLINED`:
    the payer then picks another funding source and approves again) is never made under the
    same id: each capture after an earlier check carries that check's count. A capture repeated
    under another id is harmless: PayPal captures an order once (`ORDER_ALREADY_CAPTURED`
    reports the first capture)."""
    base = f"{order.reference}-capture"
    return f"{base}-{payment.checks}" if payment.checks else base


async def _note_check(s: AsyncSession, order_id: uuid.UUID, error: str | None) -> None:
    """When to ask again. Pending: with backoff, never later than the order's expiry (it is
    closed on time). Closed unpaid: with backoff from `LATE_CHECK_FIRST`, until
    `LATE_PAYMENT_WINDOW` after closing; then never."""
    payment = await payment_of(s, order_id, lock=True)
    order = await s.get(Order, order_id)
    assert order is not None
    now = utcnow()
    if payment.state == PaymentStatusValue.pending:
        payment.checks += 1
        interval = min(MAX_CHECK_INTERVAL, timedelta(minutes=2 ** min(payment.checks - 1, 5)))
        due = now + interval
        if order.expires_at > now:
            due = min(due, order.expires_at)
        payment.next_check_at = due
    elif payment.state in CLOSED_VALUES and order.closed_at is not None:
        payment.checks += 1
        end = order.closed_at + LATE_PAYMENT_WINDOW
        interval = min(MAX_CHECK_INTERVAL, LATE_CHECK_FIRST * 2 ** min(payment.checks - 1, 5))
        payment.next_check_at = min(now + interval, end) if now < end else None
    else:
        return
    payment.last_error = error


async def _paid_meanwhile(s: AsyncSession, order_id: uuid.UUID) -> bool:
    """Whether the order is paid for now (credited, flagged paid, refunded since): not one a
    close could have closed."""
    state = (await s.execute(select(Order.state).where(Order.id == order_id))).scalar_one()
    return state not in _NOT_PAID


_NOT_PAID = frozenset(
    {OrderState.pending, OrderState.failed, OrderState.cancelled, OrderState.expired}
)


async def cancel_order(db: Database, providers: Providers, order_id: uuid.UUID) -> Outcome:
    """Cancel a pending order: closed at the provider first. Paid meanwhile: credited instead,
    and `OrderAlreadyPaid` says so."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
    if order.state != OrderState.pending:
        raise OrderNotCancellable(field="order_id")
    return await close_order(db, providers, order_id, PaymentState.cancelled, source="cancel")


async def reconcile(db: Database, providers: Providers, *, limit: int = 100) -> int:
    """Ask again about payments that are due (pending ones; closed ones in their late-payment
    window); expire what is past its time; apply stored events whose processing failed.
    Returns how many orders were looked at."""
    now = utcnow()
    async with db.read() as s:
        due = (
            (
                await s.execute(
                    select(Payment.order_id)
                    .where(Payment.next_check_at <= now)
                    .order_by(Payment.next_check_at)
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
        stale = (
            (
                await s.execute(
                    select(ProviderEvent.id)
                    .where(
                        ProviderEvent.processed_at.is_(None),
                        ProviderEvent.received_at <= now - timedelta(seconds=30),
                    )
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
    for event_id in stale:
        await process_event(db, providers.lifecycle, event_id)
    for order_id in due:
        await reconcile_order(db, providers, order_id)
    return len(due)


async def reconcile_order(db: Database, providers: Providers, order_id: uuid.UUID) -> Outcome:
    """The reconciliation job's pass over one order: expired if past its time (closed at the
    provider first), else asked about; an unreachable provider is asked again next time."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
    try:
        if order.state == OrderState.pending and order.expires_at <= utcnow():
            return await expire_order(db, providers, order_id)
        source = "reconciliation" if order.state == OrderState.pending else "late_check"
        return await check_order(db, providers, order_id, source=source, capture=True)
    except PaymentProviderUnavailable:
        log.warning("payments.reconcile_unreachable", order=str(order_id))
        return Outcome.unchanged


async def expire_order(db: Database, providers: Providers, order_id: uuid.UUID) -> Outcome:
    """Close at the provider, then expire — unless it turns out paid (then it is credited)."""
    try:
        return await close_order(db, providers, order_id, PaymentState.expired, source="expiry")
    except OrderAlreadyPaid:
        return Outcome.fulfilled


async def close_order(
    db: Database, providers: Providers, order_id: uuid.UUID, state: PaymentState, *, source: str
) -> Outcome:
    """Close a pending order at the provider, then mark it `state` (cancelled or expired). If
    the provider says it was paid, it is credited and `OrderAlreadyPaid` raised.

    A close the provider refuses for good (not a transient error, not "already paid") does not
    keep the order open: it is closed here anyway, the refusal is kept in the payment's
    `last_error`, and the payment is asked about for the late-payment window like any closed
    one — a payment still made on the provider's side is found and credited (`late_success`).
    So is an order whose provider answers about another merchant's payment (flagged
    `merchant_mismatch`).
    """
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        payment = await payment_of(s, order.id)
    if order.state != OrderState.pending:
        return Outcome.unchanged
    provider = _provider(providers, order.provider)
    refused: str | None = None
    try:
        status = await provider.query(order.reference, payment.provider_ref)
        foreign = _foreign(providers, order, status)
        if foreign is not None:
            # Not an answer about our payment: flagged, and the order closed here (nothing of
            # ours was paid; the provider is not asked to close what it says is someone else's).
            await db.run(lambda s: _flag_foreign(s, order.id, foreign, source))
            refused = f"not closed at the provider: its answer names merchant {foreign}"
        elif status.state in PAID_STATES:
            outcome = await db.run(
                lambda s: apply_status(
                    s, order.id, status, source=source, now=utcnow(), policy=providers.lifecycle
                )
            )
            if outcome is Outcome.unchanged:
                # Refused (another order's payment id): still pending, asked again with backoff
                # rather than at every pass of reconciliation, the reason on the payment.
                await db.run(lambda s: _note_answer(s, order.id, payment, status))
            raise OrderAlreadyPaid(field="order_id")
        else:
            await provider.close(order.reference, payment.provider_ref)
    except ProviderError as exc:
        if exc.code == "already_paid":
            await check_order(db, providers, order.id, source=source)
            raise OrderAlreadyPaid(field="order_id") from exc
        if exc.transient:
            raise PaymentProviderUnavailable() from exc
        refused = f"close refused: {exc.code}: {exc.message}"[:500]
        log.warning(
            "payments.close_refused", order=str(order.id), provider=order.provider,
            provider_error=exc.code,
        )
    closing = PaymentStatus(
        state=state,
        reference=order.reference,
        provider_ref=payment.provider_ref,
        payment_id=None,
        amount=None,
        currency=None,
        merchant=None,
        paid_at=None,
        raw={},
    )

    async def close(s: AsyncSession) -> Outcome:
        outcome = await apply_status(
            s, order.id, closing, source=source, now=utcnow(), policy=providers.lifecycle
        )
        if outcome is Outcome.unchanged and await _paid_meanwhile(s, order.id):
            # A notification credited it while it was being closed (after the provider was
            # asked, before this transaction): paid, not cancelled — the payer is told so, as
            # when the provider's answer says it (sixteenth round: until then a 200).
            raise OrderAlreadyPaid(field="order_id")
        if refused is not None:
            (await payment_of(s, order.id, lock=True)).last_error = refused
        return outcome

    return await db.run(close)
