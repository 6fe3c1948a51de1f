"""Notifications from payment providers: verified, stored as delivered under a unique
(provider, event id) — a duplicate stops there — then applied, in the same transaction. An
event whose processing failed is stored unprocessed, alone, and the reconciliation job applies
it again (`process_event`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database, insert_if_absent, table_of
from simcharge.errors import ServiceUnavailable
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.text import first_not_text, text_only
from simcharge.kit.translations import N_
from simcharge.lifecycle.service import Policy
from simcharge.metrics import WEBHOOK_FAILURES, WEBHOOKS
from simcharge.orders.fulfilment import (
    PAID_STATES,
    UNMATCHED,
    Outcome,
    apply_status,
    mark_processed,
    payment_id_holder,
)
from simcharge.orders.models import Order, Payment, ProviderEvent, Refund
from simcharge.orders.reversals import REFUNDED_STATES, apply_refund_news
from simcharge.orders.service import LockedOrder, lock_order, order_by_reference
from simcharge.payments.codec import (
    dispute_from_json,
    dispute_to_json,
    refund_from_json,
    refund_to_json,
    status_from_json,
    status_to_json,
)
from simcharge.payments.providers import (
    Notification,
    NotificationRejected,
    PaymentState,
    PaymentStatus,
    ProviderError,
    WebhookReply,
)
from simcharge.payments.registry import Providers
from simcharge.worker.service import enqueue

log = structlog.get_logger("simcharge.payments")

CAPTURE_JOB = "payments.capture"
UNMATCHED_PATIENCE = timedelta(days=1)
"""How long a refund or dispute whose payment is not known yet is tried again (a refund
reported before its payment), before it is given up as `unmatched` (and logged)."""
UNVERIFIABLE_RETRY_AFTER = 60
"""Seconds a provider is asked to wait before delivering an unverifiable notification again."""


class NotificationUnverifiable(ServiceUnavailable):
    """A notification that cannot be verified now (PayPal's certificate cannot be fetched):
    the provider delivers it again after `Retry-After`."""

    slug = "notification-unverifiable"
    title = N_("The payment service cannot be reached right now; please try again in a moment.")


class UnknownProvider(Exception):
    """A webhook for a provider this process does not serve."""


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
    try:
        notification = await provider.parse_notification(headers, body, now=utcnow())
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
        log.warning("payments.webhook_unverifiable", provider=provider_name, provider_error=exc.code)
        raise NotificationUnverifiable(
            headers={"Retry-After": str(UNVERIFIABLE_RETRY_AFTER)}
        ) from exc
    unstorable = _unstorable(notification)
    if unstorable is not None:
        # Signed, but no database stores it (PostgreSQL refuses a NUL in text and JSON, and a
        # lone surrogate is no text): refused rather than answered 500 on every retry, and not
        # cleaned — the body is kept as delivered, to be verified again.
        WEBHOOKS.labels(provider_name, "rejected:unstorable").inc()
        WEBHOOK_FAILURES.labels(provider_name, "unstorable").inc()
        log.warning(
            "payments.webhook_unstorable", provider=provider_name,
            event_id=text_only(notification.event_id), field=unstorable,
        )  # fmt: skip
        return Received(provider.reply(False), duplicate=False, outcome="rejected:unstorable")
    expected = providers.merchant_of(provider_name)
    if expected and notification.status and notification.status.merchant not in (None, expected):
        WEBHOOKS.labels(provider_name, "rejected:foreign").inc()
        WEBHOOK_FAILURES.labels(provider_name, "foreign").inc()
        log.warning("payments.webhook_foreign_merchant", provider=provider_name)
        return Received(provider.reply(False), duplicate=False, outcome="rejected:foreign")

    async def store_and_apply(s: AsyncSession) -> str | None:
        """Lock the order, store the event (a copy of it stops here: a duplicate), then apply
        it. A copy waits for the order's lock, and its insert then finds the event stored.

        The time is this attempt's, read here: verifying may have fetched a certificate, and
        `Database.run` may run this again (a deadlock, a serialization failure). Stamped with
        an earlier time, the ledger's rows could predate their commit by seconds — across
        midnight, missed by the report of the day just closed."""
        now = utcnow()
        locked = await _locked_order(s, provider_name, notification)
        order_id = locked.order.id if locked is not None else None
        event_id = await _store(s, provider_name, notification, now, order_id)
        if event_id is None:
            return None
        if locked is None or notification.status is None:
            return await _apply_event(s, providers.lifecycle, event_id)
        if notification.status.capturable:
            # Approved, not yet paid (PayPal): capture now, not when the payer comes back.
            await enqueue(
                s,
                CAPTURE_JOB,
                {"order_id": str(locked.order.id)},
                dedupe_key=f"{CAPTURE_JOB}:{locked.order.id}",
            )
        if locked.unmatched_news:
            await _apply_early_refunds(s, providers.lifecycle, locked, notification.status, now)
        source = f"webhook:{notification.event_id}"
        outcome = await apply_status(
            s,
            locked.order.id,
            notification.status,
            source=source,
            now=now,
            policy=providers.lifecycle,
            locked=locked,
            event_id=event_id,
        )
        return _said(outcome, notification.status)

    try:
        outcome = await db.run(store_and_apply)
    except Exception:
        # Applying failed: keep the event, unprocessed; the reconciliation job applies it again.
        log.exception("payments.webhook_processing_failed", provider=provider_name)
        WEBHOOKS.labels(provider_name, "processing_failed").inc()
        WEBHOOK_FAILURES.labels(provider_name, "processing_failed").inc()
        stored = await db.run(lambda s: _store(s, provider_name, notification, utcnow()))
        return Received(provider.reply(True), duplicate=stored is None, outcome="stored")
    if outcome is None:
        WEBHOOKS.labels(provider_name, "duplicate").inc()
        return Received(provider.reply(True), duplicate=True, outcome="duplicate")
    WEBHOOKS.labels(provider_name, outcome).inc()
    return Received(provider.reply(True), duplicate=False, outcome=outcome)


async def _apply_early_refunds(
    s: AsyncSession, policy: Policy, locked: LockedOrder, status: PaymentStatus, now: datetime
) -> None:
    """A payment's refunded statuses stored before the payment was known — Stripe's
    `charge.refunded` names only the payment intent, which the payment's own success reports —
    are applied first: the payment is then recorded as refunded at the provider, never credited
    (a refund reported first), whatever order the provider delivered them in."""
    if status.state not in PAID_STATES or not status.payment_id:
        return
    payment = locked.payment
    if await payment_id_holder(s, payment.provider, status.payment_id, besides=payment.id):
        return  # another order's payment id: refused by `apply_status`, nothing adopted
    waiting = (
        await s.execute(
            select(ProviderEvent)
            .where(
                ProviderEvent.processed_at.is_(None),
                ProviderEvent.order_id.is_(None),
                ProviderEvent.provider == locked.order.provider,
            )
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    for event in waiting:
        if not event.status:  # a refund or a dispute: `fulfilment._adopt_early_news`
            continue
        early = status_from_json(event.status)
        if early.payment_id != status.payment_id or early.state not in REFUNDED_STATES:
            continue
        event.order_id = locked.order.id
        await apply_status(
            s, locked.order.id, early, source=f"webhook:{event.event_id}", now=now,
            policy=policy, locked=locked, event_id=event.id,
        )  # fmt: skip


async def _locked_order(s: AsyncSession, provider: str, n: Notification) -> LockedOrder | None:
    """The order a payment status is about, locked with its payment and line — only an order
    that `provider` serves: a notification verified with one provider's secret never speaks for
    an order paid through another (a forged sandbox event naming a card order's reference)."""
    if n.status is None:
        return None
    if n.status.reference:
        locked = await lock_order(s, reference=n.status.reference)
        if locked is not None:
            # Another provider's order: nothing here (`_store` logs it, by `_order_id_of`).
            return locked if locked.order.provider == provider else None
    order_id = await _order_id_of(s, provider, n)
    return await lock_order(s, order_id=order_id) if order_id else None


def _served_by(order: Order, provider: str) -> bool:
    if order.provider == provider:
        return True
    WEBHOOK_FAILURES.labels(provider, "other_provider").inc()
    log.warning(
        "payments.webhook_other_provider", provider=provider, order=str(order.id),
        serves=order.provider,
    )  # fmt: skip
    return False


async def _order_id_of(s: AsyncSession, provider: str, n: Notification) -> uuid.UUID | None:
    """The order a notification is about: by our reference, the refund's, or the provider's ids
    of the payment; always an order that `provider` serves."""
    about = [x for x in (n.status, n.refund, n.dispute) if x is not None]
    for reference in dict.fromkeys(x.reference for x in about if x.reference):
        order = await order_by_reference(s, reference)
        if order is not None:
            return order.id if _served_by(order, provider) else None
    if n.refund is not None:
        found = (
            await s.execute(
                select(Refund.order_id)
                .join(Order, Order.id == Refund.order_id)
                .where(Refund.reference == n.refund.refund_id, Order.provider == provider)
            )
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


_events = table_of(ProviderEvent)


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
    values = {
        "id": uuid7(),
        "provider": provider,
        "event_id": n.event_id,
        "event_type": n.event_type,
        "order_id": order_id,
        "body": n.body,
        "headers": dict(n.headers),
        "payload": _jsonable(n.raw),
        "status": status_to_json(n.status) if n.status else None,
        "refund": refund_to_json(n.refund) if n.refund else None,
        "dispute": dispute_to_json(n.dispute) if n.dispute else None,
        "received_at": now,
    }
    stored = insert_if_absent(s, _events, "provider", "event_id", returning=("id",))
    return (await s.execute(stored, values)).scalar_one_or_none()


def _unstorable(n: Notification) -> str | None:
    """Where a notification holds a string no database stores — a NUL or a lone surrogate (a
    form's `%00`, a decrypted resource's `\\u0000`; the middleware refuses them in JSON bodies
    only) — as a dotted path (`payload.subject`), if anywhere."""
    kept = {
        "event_id": n.event_id,
        "event_type": n.event_type,
        "body": n.body,
        "headers": dict(n.headers),
        "payload": _jsonable(n.raw),
        "status": status_to_json(n.status) if n.status else None,
        "refund": refund_to_json(n.refund) if n.refund else None,
        "dispute": dispute_to_json(n.dispute) if n.dispute else None,
    }
    return first_not_text(kept)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


async def process_event(db: Database, policy: Policy, event_id: uuid.UUID) -> str:
    """Apply a stored event (once: it is marked processed in the same transaction). `policy`:
    the lifecycle's, for a line a credit brings back."""
    return await db.run(lambda s: _apply_event(s, policy, event_id))


async def _apply_event(s: AsyncSession, policy: Policy, event_id: uuid.UUID) -> str:
    event = await s.get(ProviderEvent, event_id, with_for_update=True)
    if event is None or event.processed_at is not None:
        return "already"
    now, source = utcnow(), f"webhook:{event.event_id}"
    status = status_from_json(event.status) if event.status is not None else None
    # Money gone back (Stripe's `charge.refunded`: a charge names only its payment intent,
    # learnt with the payment) may arrive before the payment: kept for it, as a refund is.
    refunded = status is not None and status.state in REFUNDED_STATES
    news = event.refund is not None or event.dispute is not None or refunded
    if news and event.order_id is None:
        event.order_id = await _order_id_of(s, event.provider, _stored(event))
        if event.order_id is None:
            if now - event.received_at < UNMATCHED_PATIENCE:
                # Its payment is not known yet: left unprocessed, tried again by reconciliation
                # (and applied when the payment is reported: `fulfilment._adopt_early_news`).
                return "unmatched"
            log.warning(
                "payments.unmatched_event", provider=event.provider,
                event_id=text_only(event.event_id),
            )  # fmt: skip
    if event.order_id is not None and status is not None:
        applied = await apply_status(
            s, event.order_id, status, source=source, now=now, policy=policy, event_id=event.id
        )
        return _said(applied, status)
    unmatched = news and event.order_id is None
    if not news and event.order_id is None and await _unknown_success(s, status):
        # Money taken for a reference we do not know (an order placed after the backup the
        # database was restored from, or another installation's): kept for finance, never
        # `ignored` — the provider stops delivering it once answered.
        assert status is not None
        unmatched = True
        log.warning(
            "payments.unmatched_event", provider=event.provider,
            event_id=text_only(event.event_id),
            reference=text_only(status.reference or ""),
            provider_ref=text_only(status.provider_ref or status.payment_id or ""),
        )  # fmt: skip
    outcome = "unmatched" if unmatched else "ignored"
    if news and event.order_id is not None:
        outcome = await apply_refund_news(s, event, now, zone=policy.settings.operator_timezone)
    await mark_processed(s, event.id, outcome, now)
    return outcome


def _said(outcome: Outcome, status: PaymentStatus) -> str:
    """What applying a status came to, as counted and answered: a payment taken that changed
    nothing was refused for naming another order's payment id — kept `unmatched` for finance
    (`fulfilment._paid`), and said so."""
    if outcome is Outcome.unchanged and status.state in PAID_STATES:
        return UNMATCHED
    return outcome.value


async def _unknown_success(s: AsyncSession, status: PaymentStatus | None) -> bool:
    """A payment taken (paid, succeeded, captured) that names a reference no order has. A
    reference that is another provider's order's is not unknown: `_served_by` logged it and it
    is ignored (a forged sandbox event naming a card order's reference). A success naming no
    reference at all (another shop's payment on a shared provider account) is not ours."""
    if status is None or status.state is not PaymentState.succeeded or not status.reference:
        return False
    return await order_by_reference(s, status.reference) is None


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
