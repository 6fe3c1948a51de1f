"""Talking to providers about orders. Every provider call happens outside a database
transaction; what it returns is applied in one (`orders.fulfilment.apply_status`).

- `open_checkout`: after the order is committed, open the provider's checkout (the provider's
  own idempotency key is the order reference, so a retry opens the same one).
- `receive_notification`: verify; store the event raw under a unique (provider, event id) — a
  duplicate stops there; then apply it. An event whose processing failed stays unprocessed and
  the reconciliation job applies it again.
- `check_order`: ask the provider now (the payer's return, "my balance has not updated", the
  reconciliation job). The return URL's query string is never trusted.
- `cancel_order`: close at the provider first; if it turns out paid, credit it instead.
- `reconcile`: pending payments are asked again with backoff (1, 2, 4 … 30 minutes); an order
  past its time is closed at the provider and expired.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database, table_of, upsert_insert
from simcharge.errors import Conflict, ServiceUnavailable
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.translations import N_
from simcharge.metrics import ORDERS, WEBHOOK_FAILURES, WEBHOOKS
from simcharge.orders.fulfilment import PAID_STATES, Outcome, apply_status
from simcharge.orders.models import (
    Order,
    OrderState,
    Payment,
    PaymentStatusValue,
    ProviderEvent,
    Refund,
)
from simcharge.orders.refunds import complete_refund
from simcharge.orders.service import LockedOrder, lock_order, order_by_reference, payment_of
from simcharge.payments.codec import (
    refund_from_json,
    refund_to_json,
    status_from_json,
    status_to_json,
)
from simcharge.payments.providers import (
    CheckoutRequest,
    Notification,
    NotificationRejected,
    PaymentFlow,
    PaymentProvider,
    PaymentState,
    PaymentStatus,
    ProviderError,
    WebhookReply,
)
from simcharge.payments.registry import Providers
from simcharge.worker.service import enqueue

log = structlog.get_logger("simcharge.payments")

MAX_CHECK_INTERVAL = timedelta(minutes=30)
CAPTURE_JOB = "payments.capture"


class PaymentProviderUnavailable(ServiceUnavailable):
    slug = "payment-provider-unavailable"
    title = N_("The payment service cannot be reached right now; please try again in a moment.")


class OrderAlreadyPaid(Conflict):
    slug = "order-already-paid"
    title = N_("This order has been paid; it cannot be cancelled.")


class OrderNotCancellable(Conflict):
    slug = "order-not-cancellable"
    title = N_("Only an order waiting for payment can be cancelled.")


class UnknownProvider(Exception):
    """A webhook for a provider this process does not serve."""


def urls(settings: Settings, order: Order) -> tuple[str, str, str]:
    base = settings.base_url.rstrip("/")
    return (
        f"{base}/api/v1/orders/{order.id}/return",
        f"{base}/api/v1/orders/{order.id}/return?cancelled=1",
        f"{base}/api/v1/webhooks/{order.provider}",
    )


def description(order: Order) -> str:
    names: dict[str, str] = order.plan_snapshot.get("names", {})
    name = names.get(order.language) or names.get("en") or order.plan_code
    return f"{name} — {order.msisdn}"


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
    )
    try:
        checkout = await provider.create_checkout(request)
    except ProviderError as exc:
        log.warning(
            "payments.checkout_failed",
            order=str(order.id),
            provider=order.provider,
            code=exc.code,
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


@dataclass(frozen=True, slots=True)
class Received:
    reply: WebhookReply
    duplicate: bool
    outcome: str | None


async def receive_notification(
    db: Database, providers: Providers, provider_name: str, headers: Mapping[str, str], body: bytes
) -> Received:
    provider = providers.named(provider_name)
    if provider is None:
        raise UnknownProvider(provider_name)
    now = utcnow()
    try:
        notification = await provider.parse_notification(headers, body, now=now)
    except NotificationRejected as exc:
        WEBHOOKS.labels(provider_name, f"rejected:{exc.reason}").inc()
        WEBHOOK_FAILURES.labels(provider_name, exc.reason).inc()
        log.warning(
            "payments.webhook_rejected",
            provider=provider_name,
            reason=exc.reason,
            detail=exc.detail,
        )
        return Received(provider.reply(False), duplicate=False, outcome=f"rejected:{exc.reason}")
    expected = providers.merchant_of(provider_name)
    if expected and notification.status and notification.status.merchant not in (None, expected):
        WEBHOOKS.labels(provider_name, "rejected:foreign").inc()
        WEBHOOK_FAILURES.labels(provider_name, "foreign").inc()
        log.warning("payments.webhook_foreign_merchant", provider=provider_name)
        return Received(provider.reply(False), duplicate=False, outcome="rejected:foreign")

    async def store_and_apply(s: AsyncSession) -> str | None:
        """Lock the order, apply the news, store the event (already processed). A copy of an
        event waits for the order's lock, finds the news applied ("already"), and its insert
        finds the event stored: it is a duplicate."""
        locked = await _locked_order(s, provider_name, notification)
        if locked is None or notification.status is None:
            event_id = await _store(s, provider_name, notification, now)
            return None if event_id is None else await _apply_event(s, event_id)
        order_id = locked.order.id
        if notification.status.capturable:
            # Approved, not yet paid (PayPal): capture now, not when the payer comes back.
            await enqueue(
                s, CAPTURE_JOB, {"order_id": str(order_id)}, dedupe_key=f"{CAPTURE_JOB}:{order_id}"
            )
        source = f"webhook:{notification.event_id}"
        outcome = await apply_status(
            s, order_id, notification.status, source=source, now=now, locked=locked
        )
        stored = await _store(
            s, provider_name, notification, now, order_id, processed=outcome.value
        )
        return None if stored is None else outcome.value

    try:
        # Usually one transaction: the event is stored and applied together.
        outcome = await db.run(store_and_apply)
    except Exception:
        # Applying failed: keep the event, unprocessed; the reconciliation job applies it again.
        log.exception("payments.webhook_processing_failed", provider=provider_name)
        WEBHOOKS.labels(provider_name, "processing_failed").inc()
        WEBHOOK_FAILURES.labels(provider_name, "processing_failed").inc()
        stored = await db.run(lambda s: _store(s, provider_name, notification, now))
        return Received(provider.reply(True), duplicate=stored is None, outcome="stored")
    if outcome is None:
        WEBHOOKS.labels(provider_name, "duplicate").inc()
        return Received(provider.reply(True), duplicate=True, outcome="duplicate")
    WEBHOOKS.labels(provider_name, outcome).inc()
    return Received(provider.reply(True), duplicate=False, outcome=outcome)


async def _locked_order(s: AsyncSession, provider: str, n: Notification) -> LockedOrder | None:
    """The order a notification is about, locked with its payment and line."""
    if n.status is not None and n.status.reference:
        locked = await lock_order(s, reference=n.status.reference)
        if locked is not None:
            return locked
    order_id = await _order_id_of(s, provider, n)
    return await lock_order(s, order_id=order_id) if order_id else None


async def _order_id_of(s: AsyncSession, provider: str, n: Notification) -> uuid.UUID | None:
    """The order a notification is about: by our reference, the provider's, or the refund's."""
    reference = (n.status.reference if n.status else None) or (
        n.refund.reference if n.refund else None
    )
    if reference:
        order = await order_by_reference(s, reference)
        if order is not None:
            return order.id
    if n.refund is not None:
        found = (
            await s.execute(select(Refund.order_id).where(Refund.reference == n.refund.refund_id))
        ).scalar_one_or_none()
        if found is not None:
            return found
    ref = (n.status.provider_ref if n.status else None) or (
        n.refund.payment_id if n.refund else None
    )
    if ref:
        return (
            await s.execute(
                select(Payment.order_id)
                .where(
                    Payment.provider == provider,
                    (Payment.provider_ref == ref) | (Payment.payment_id == ref),
                )
                .limit(1)
            )
        ).scalar_one_or_none()
    return None


async def _store(
    s: AsyncSession,
    provider: str,
    n: Notification,
    now: datetime,
    order_id: uuid.UUID | None = None,
    *,
    processed: str | None = None,
) -> uuid.UUID | None:
    """Store a notification once per (provider, event id); None if it was stored before.
    `processed`: the outcome, when it was applied in this transaction."""
    order_id = order_id or await _order_id_of(s, provider, n)
    events = table_of(ProviderEvent)
    return (
        await s.execute(
            upsert_insert(s, events)
            .values(
                id=uuid7(),
                provider=provider,
                event_id=n.event_id,
                event_type=n.event_type,
                order_id=order_id,
                payload=_jsonable(n.raw),
                status=status_to_json(n.status) if n.status else None,
                refund=refund_to_json(n.refund) if n.refund else None,
                received_at=now,
                processed_at=now if processed else None,
                outcome=processed,
            )
            .on_conflict_do_nothing(index_elements=["provider", "event_id"])
            .returning(events.c.id)
        )
    ).scalar_one_or_none()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


async def process_event(db: Database, providers: Providers, event_id: uuid.UUID) -> str:
    """Apply a stored event (once: it is marked processed in the same transaction)."""
    return await db.run(lambda s: _apply_event(s, event_id))


async def _apply_event(s: AsyncSession, event_id: uuid.UUID) -> str:
    event = await s.get(ProviderEvent, event_id, with_for_update=True)
    if event is None or event.processed_at is not None:
        return "already"
    outcome = "ignored"
    if event.order_id is not None and event.status is not None:
        status = status_from_json(event.status)
        source = f"webhook:{event.event_id}"
        return (
            await apply_status(
                s, event.order_id, status, source=source, now=utcnow(), event_id=event.id
            )
        ).value
    elif event.order_id is not None and event.refund is not None:
        outcome = await complete_refund(s, event.order_id, refund_from_json(event.refund), utcnow())
    event.processed_at, event.outcome = utcnow(), outcome
    return outcome


async def check_order(
    db: Database, providers: Providers, order_id: uuid.UUID, *, source: str, capture: bool = False
) -> Outcome:
    """Ask the provider where the payment stands and apply the answer."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        payment = await payment_of(s, order.id)
    if payment.state == PaymentStatusValue.succeeded:
        return Outcome.already
    provider = _provider(providers, order.provider)
    try:
        status = await provider.query(order.reference, payment.provider_ref)
        if capture and status.capturable and payment.provider_ref:
            capture_fn = getattr(provider, "capture", None)
            if capture_fn is not None:
                status = await capture_fn(payment.provider_ref, f"{order.reference}-capture")
    except ProviderError as exc:
        reason = f"{exc.code}: {exc}"
        await db.run(lambda s: _note_check(s, order.id, reason))
        if exc.transient:
            raise PaymentProviderUnavailable() from exc
        return Outcome.unchanged
    outcome = await db.run(lambda s: apply_status(s, order.id, status, source=source, now=utcnow()))
    if outcome is Outcome.unchanged and status.state is PaymentState.pending:
        await db.run(lambda s: _note_check(s, order.id, None))
    return outcome


async def _note_check(s: AsyncSession, order_id: uuid.UUID, error: str | None) -> None:
    payment = await payment_of(s, order_id, lock=True)
    if payment.state != PaymentStatusValue.pending:
        return
    payment.checks += 1
    interval = min(MAX_CHECK_INTERVAL, timedelta(minutes=2 ** min(payment.checks - 1, 5)))
    payment.next_check_at = utcnow() + interval
    payment.last_error = error


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
    """Ask again about pending payments that are due; expire what is past its time; apply
    stored events whose processing failed. Returns how many orders were looked at."""
    now = utcnow()
    async with db.read() as s:
        due = (
            await s.execute(
                select(Order.id, Order.expires_at)
                .join(Payment, Payment.order_id == Order.id)
                .where(
                    Payment.state == PaymentStatusValue.pending.value, Payment.next_check_at <= now
                )
                .order_by(Payment.next_check_at)
                .limit(limit)
            )
        ).all()
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
        await process_event(db, providers, event_id)
    for order_id, expires_at in due:
        try:
            if expires_at <= now:
                await expire_order(db, providers, order_id)
            else:
                await check_order(db, providers, order_id, source="reconciliation", capture=True)
        except PaymentProviderUnavailable:
            log.warning("payments.reconcile_unreachable", order=str(order_id))
    return len(due)


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
    the provider says it was paid, it is credited and `OrderAlreadyPaid` raised."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        payment = await payment_of(s, order.id)
    if order.state != OrderState.pending:
        return Outcome.unchanged
    provider = _provider(providers, order.provider)
    try:
        status = await provider.query(order.reference, payment.provider_ref)
        if status.state in PAID_STATES:
            await db.run(lambda s: apply_status(s, order.id, status, source=source, now=utcnow()))
            raise OrderAlreadyPaid(field="order_id")
        await provider.close(order.reference, payment.provider_ref)
    except ProviderError as exc:
        if exc.code == "already_paid":
            await check_order(db, providers, order.id, source=source)
            raise OrderAlreadyPaid(field="order_id") from exc
        if exc.transient:
            raise PaymentProviderUnavailable() from exc
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
    return await db.run(lambda s: apply_status(s, order.id, closing, source=source, now=utcnow()))
