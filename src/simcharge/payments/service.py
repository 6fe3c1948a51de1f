"""Talking to providers about orders. Every provider call happens outside a database
transaction; what it returns is applied in one (`orders.fulfilment.apply_status`).

- `open_checkout`: after the order is committed, open the provider's checkout (the provider's
  own idempotency key is the order reference, so a retry opens the same one).
- `receive_notification`: verify; store the event as delivered under a unique (provider, event
  id) — a duplicate stops there; then apply it, in the same transaction. An event whose
  processing failed is stored unprocessed, alone, and the reconciliation job applies it again.
- `check_order`: ask the provider now (the payer's return, "my balance has not updated", the
  reconciliation job). The return URL's query string is never trusted; an answer naming another
  merchant is flagged, never credited.
- `cancel_order`: close at the provider first; if it turns out paid, credit it instead.
- `reconcile`: pending payments are asked again with backoff (1, 2, 4 … 30 minutes, never
  later than the order's expiry); an order past its time is closed at the provider and expired;
  a closed order's payment is asked again for `LATE_PAYMENT_WINDOW` after closing.
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
from simcharge.orders.fulfilment import (
    LATE_CHECK_FIRST,
    LATE_PAYMENT_WINDOW,
    PAID_STATES,
    Outcome,
    apply_status,
    mark_processed,
)
from simcharge.orders.models import (
    CLOSED_UNPAID,
    Attention,
    Order,
    OrderState,
    Payment,
    PaymentStatusValue,
    ProviderEvent,
    Refund,
)
from simcharge.orders.refunds import apply_refund_news
from simcharge.orders.service import (
    LockedOrder,
    flag_order,
    lock_order,
    order_by_reference,
    payment_of,
)
from simcharge.payments.codec import (
    dispute_from_json,
    dispute_to_json,
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


class NotificationUnverifiable(PaymentProviderUnavailable):
    """A notification that cannot be verified now (PayPal's certificate cannot be fetched):
    the provider delivers it again after `Retry-After`."""

    slug = "notification-unverifiable"


UNMATCHED_PATIENCE = timedelta(days=1)
"""How long a refund or dispute whose payment is not known yet is tried again (a refund
reported before its payment), before it is given up as `unmatched` (and logged)."""
UNVERIFIABLE_RETRY_AFTER = 60
"""Seconds a provider is asked to wait before delivering an unverifiable notification again."""
CLOSED_VALUES = frozenset(state.value for state in CLOSED_UNPAID)


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
    """What became of it: `Outcome`'s values, `duplicate`, `stored` (kept to be applied later),
    or `rejected:<reason>`."""


async def receive_notification(
    db: Database, providers: Providers, provider_name: str, headers: Mapping[str, str], body: bytes
) -> Received:
    """Verify a notification, store it as delivered, apply it. Raises `NotificationUnverifiable`
    when it cannot be verified now (PayPal's certificate cannot be fetched): the provider is
    asked to deliver it again."""
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
    except ProviderError as exc:
        WEBHOOKS.labels(provider_name, "unverifiable").inc()
        WEBHOOK_FAILURES.labels(provider_name, "unverifiable").inc()
        log.warning("payments.webhook_unverifiable", provider=provider_name, code=exc.code)
        raise NotificationUnverifiable(
            headers={"Retry-After": str(UNVERIFIABLE_RETRY_AFTER)}
        ) from exc
    expected = providers.merchant_of(provider_name)
    if expected and notification.status and notification.status.merchant not in (None, expected):
        WEBHOOKS.labels(provider_name, "rejected:foreign").inc()
        WEBHOOK_FAILURES.labels(provider_name, "foreign").inc()
        log.warning("payments.webhook_foreign_merchant", provider=provider_name)
        return Received(provider.reply(False), duplicate=False, outcome="rejected:foreign")

    async def store_and_apply(s: AsyncSession) -> str | None:
        """Lock the order, store the event (a copy of it stops here: a duplicate), then apply
        it. A copy waits for the order's lock, and its insert then finds the event stored."""
        locked = await _locked_order(s, provider_name, notification)
        order_id = locked.order.id if locked is not None else None
        event_id = await _store(s, provider_name, notification, now, order_id)
        if event_id is None:
            return None
        if locked is None or notification.status is None:
            return await _apply_event(s, event_id)
        if notification.status.capturable:
            # Approved, not yet paid (PayPal): capture now, not when the payer comes back.
            await enqueue(
                s,
                CAPTURE_JOB,
                {"order_id": str(locked.order.id)},
                dedupe_key=f"{CAPTURE_JOB}:{locked.order.id}",
            )
        source = f"webhook:{notification.event_id}"
        outcome = await apply_status(
            s,
            locked.order.id,
            notification.status,
            source=source,
            now=now,
            locked=locked,
            event_id=event_id,
        )
        return outcome.value

    try:
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
    """The order a payment status is about, locked with its payment and line."""
    if n.status is None:
        return None
    if n.status.reference:
        locked = await lock_order(s, reference=n.status.reference)
        if locked is not None:
            return locked
    order_id = await _order_id_of(s, provider, n)
    return await lock_order(s, order_id=order_id) if order_id else None


async def _order_id_of(s: AsyncSession, provider: str, n: Notification) -> uuid.UUID | None:
    """The order a notification is about: by our reference, the refund's, or the provider's ids
    of the payment."""
    about = [x for x in (n.status, n.refund, n.dispute) if x is not None]
    for reference in dict.fromkeys(x.reference for x in about if x.reference):
        order = await order_by_reference(s, reference)
        if order is not None:
            return order.id
    if n.refund is not None:
        found = (
            await s.execute(select(Refund.order_id).where(Refund.reference == n.refund.refund_id))
        ).scalar_one_or_none()
        if found is not None:
            return found
    refs = {
        ref
        for ref in (
            n.status.provider_ref if n.status else None,
            n.status.payment_id if n.status else None,
            n.refund.payment_id if n.refund else None,
            n.dispute.payment_id if n.dispute else None,
        )
        if ref
    }
    if refs:
        return (
            await s.execute(
                select(Payment.order_id)
                .where(
                    Payment.provider == provider,
                    Payment.provider_ref.in_(refs) | Payment.payment_id.in_(refs),
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
) -> uuid.UUID | None:
    """Store a notification, unprocessed, once per (provider, event id); None if it was stored
    before."""
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
                body=n.body,
                headers=dict(n.headers),
                payload=_jsonable(n.raw),
                status=status_to_json(n.status) if n.status else None,
                refund=refund_to_json(n.refund) if n.refund else None,
                dispute=dispute_to_json(n.dispute) if n.dispute else None,
                received_at=now,
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
    now, source = utcnow(), f"webhook:{event.event_id}"
    if event.order_id is not None and event.status is not None:
        status = status_from_json(event.status)
        return (
            await apply_status(s, event.order_id, status, source=source, now=now, event_id=event.id)
        ).value
    news = event.refund is not None or event.dispute is not None
    if news and event.order_id is None:
        event.order_id = await _order_id_of(s, event.provider, _stored(event))
        if event.order_id is None:
            if now - event.received_at < UNMATCHED_PATIENCE:
                # Its payment is not known yet: left unprocessed, tried again by reconciliation
                # (and applied when the payment is reported: `fulfilment._adopt_early_news`).
                return "unmatched"
            log.warning("payments.unmatched_event", provider=event.provider, event=event.event_id)
    outcome = "unmatched" if news and event.order_id is None else "ignored"
    if news and event.order_id is not None:
        outcome = await apply_refund_news(s, event, now)
    await mark_processed(s, event.id, outcome, now)
    return outcome


def _stored(event: ProviderEvent) -> Notification:
    """What a stored event names, to find its order again."""
    return Notification(
        event.provider,
        event.event_id,
        event.event_type,
        status_from_json(event.status) if event.status else None,
        refund_from_json(event.refund) if event.refund else None,
        {},
        dispute=dispute_from_json(event.dispute) if event.dispute else None,
    )


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


def _late_window_open(order: Order, now: datetime) -> bool:
    """A closed unpaid order whose payment is still asked about (a payment at the last moment)."""
    return (
        order.state in CLOSED_VALUES
        and order.closed_at is not None
        and now <= order.closed_at + LATE_PAYMENT_WINDOW
    )


async def check_order(
    db: Database, providers: Providers, order_id: uuid.UUID, *, source: str, capture: bool = False
) -> Outcome:
    """Ask the provider where the payment stands and apply the answer — for a pending order, or
    one closed unpaid less than `LATE_PAYMENT_WINDOW` ago."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        payment = await payment_of(s, order.id)
    if payment.state == PaymentStatusValue.succeeded:
        return Outcome.already
    pending = order.state == OrderState.pending
    if not pending and not _late_window_open(order, utcnow()):
        await db.run(lambda s: _note_check(s, order.id, None))
        return Outcome.unchanged
    provider = _provider(providers, order.provider)
    try:
        status = await provider.query(order.reference, payment.provider_ref)
        foreign = _foreign(providers, order, status)
        if pending and capture and status.capturable and payment.provider_ref and not foreign:
            capture_fn = getattr(provider, "capture", None)
            if capture_fn is not None:
                status = await capture_fn(payment.provider_ref, f"{order.reference}-capture")
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
    outcome = await db.run(lambda s: apply_status(s, order.id, status, source=source, now=utcnow()))
    if outcome is Outcome.unchanged:
        await db.run(lambda s: _note_check(s, order.id, None))
    return outcome


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
        await process_event(db, providers, event_id)
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
            await db.run(lambda s: _flag_foreign(s, order.id, foreign, source))
            await db.run(lambda s: _note_check(s, order.id, "answer for another merchant"))
            return Outcome.flagged
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
        refused = f"close refused: {exc.code}: {exc.message}"[:500]
        log.warning(
            "payments.close_refused", order=str(order.id), provider=order.provider, code=exc.code
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
        outcome = await apply_status(s, order.id, closing, source=source, now=utcnow())
        if refused is not None:
            (await payment_of(s, order.id, lock=True)).last_error = refused
        return outcome

    return await db.run(close)
