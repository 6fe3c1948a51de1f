"""Applying what a provider says about a payment — and crediting a paid order exactly once.

Whatever brings the news (a webhook, the payer's return, "check now", the reconciliation job),
however often and in whatever order, it ends here. One database transaction: the order, its
payment and its line are locked (in one statement, always in the same order); the payment
becomes `succeeded` by a conditional update (`… WHERE state <> 'succeeded' RETURNING`), which
only the first arrival wins — a second one changes no row and stops there; the plan's transfers
are posted with ids derived from the order (so even a second pass could not credit twice); the
line's validity is extended and it is reactivated; the receipt job (the receipt is numbered when
it is issued, `issue_receipt_number`) and the notices go to the outbox. The operator's ledger
accounts, shared by every top-up, are touched last (and sharded, `ledger.chart`), so that
concurrent fulfilments hardly wait for each other.

Policy, where the money and the order disagree. Money taken and not credited stays in the
ledger: clearing → `unapplied` (`refunds.received_unapplied`), until finance refunds it.
- amount or currency differ from the order's: nothing is credited, the order is `paid` and
  flagged `amount_mismatch` for finance (refund, or credit by hand); a success naming no amount
  posts nothing (nothing can be refunded, `refunds.PaidAmountUnknown`) until a later answer —
  a webhook, or staff's "check" — names it (`_learn_amount`);
- paid after the order expired or was cancelled: credited anyway (the customer paid) and
  flagged `late_success`;
- the line was terminated meanwhile: nothing is credited, `paid` + `line_unavailable`;
- refunded or reversed at the provider before we heard of the payment (a refunded status, or
  a refund reported first): nothing is credited, `paid` (`refunded` when all of it went back)
  + `provider_refund`, the refund recorded;
- refunded at the provider after it was credited: recorded as a refund, its money posted back,
  nothing taken from the line, flagged `provider_refund` (`reversals.note_refunded_status`);
- naming a provider's payment id another order's payment holds (`payment_id_holder`): not this
  order's money — nothing recorded, nothing credited; a notification saying it is kept
  `unmatched` for finance (`backoffice.provider_events`), an answer to our question is noted on
  the payment (`payments.service`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

import structlog
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from simcharge.db import table_of
from simcharge.kit.ids import derived_id
from simcharge.kit.text import text_only
from simcharge.ledger import chart
from simcharge.ledger.service import NewTransfer, post_transfers
from simcharge.lifecycle.service import Policy, on_topup
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import UnitGrant, open_buckets, wallet_credit
from simcharge.metrics import FULFILMENT_DELAY
from simcharge.notifications.service import notice
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
from simcharge.orders.refunds import amount_unknown, received_unapplied, shown
from simcharge.orders.reversals import (
    REFUNDED_STATES,
    apply_refund_news,
    note_refunded_status,
    settle_provider_refunds,
)
from simcharge.orders.service import LockedOrder, flag_order, lock_order
from simcharge.orders.service import issue_receipt_number as issue_receipt_number
from simcharge.payments.codec import status_from_json
from simcharge.payments.providers import PaymentState, PaymentStatus
from simcharge.worker.service import NewJob, enqueue_many

log = structlog.get_logger("simcharge.payments")

RECEIPT_JOB = "orders.receipt"
UNMATCHED = "unmatched"
"""The outcome of an event finance must settle by hand (`backoffice.provider_events`): here, a
payment status naming a payment id another order's payment holds."""
LATE_PAYMENT_WINDOW = timedelta(hours=1)
"""How long after an order is closed unpaid (expired, cancelled, failed) its payment is still
asked about: a payment made at the last moment, whose webhook is lost, is found and credited."""
LATE_CHECK_FIRST = timedelta(minutes=5)
"""The first such check after closing; then with the usual backoff, until the window ends."""


class Outcome(StrEnum):
    fulfilled = "fulfilled"
    """This call credited the order."""
    already = "already"
    """It was credited (or otherwise settled) before: nothing done."""
    flagged = "flagged"
    """Paid, but not credited, or news finance must see (see `Order.attention`)."""
    closed = "closed"
    """The payment failed, was cancelled or expired: the order says so."""
    unchanged = "unchanged"
    """Nothing new (still pending, or news about a settled order)."""


_CLOSING = {
    PaymentState.failed: (OrderState.failed, PaymentStatusValue.failed),
    PaymentState.cancelled: (OrderState.cancelled, PaymentStatusValue.cancelled),
    PaymentState.expired: (OrderState.expired, PaymentStatusValue.expired),
}
PAID_STATES = (PaymentState.succeeded, *REFUNDED_STATES)


async def apply_status(
    session: AsyncSession,
    order_id: uuid.UUID,
    status: PaymentStatus,
    *,
    source: str,
    now: datetime,
    policy: Policy,
    locked: LockedOrder | None = None,
    event_id: uuid.UUID | None = None,
) -> Outcome:
    """Apply what the provider says. `policy`: the lifecycle's, for the line a credit brings
    back (`lifecycle.on_topup`). `locked`: the order, payment and line, already locked by the
    caller (`lock_order`). `event_id`: the stored notification that says it, marked processed
    here."""
    locked = locked or await lock_order(session, order_id=order_id)
    if locked is None:
        outcome = Outcome.unchanged
    else:
        order, payment = locked.order, locked.payment
        if status.state in PAID_STATES:
            return await _paid(
                session, locked, status, source=source, now=now, policy=policy, event_id=event_id
            )
        outcome = Outcome.unchanged
        if status.state in _CLOSING and order.state == OrderState.pending:
            order_state, payment_state = _CLOSING[status.state]
            order.state, order.closed_at = order_state.value, now
            payment.state, payment.updated_at = payment_state.value, now
            # Still asked about for a while: a payment made at the last moment is found.
            payment.checks, payment.next_check_at = 0, now + LATE_CHECK_FIRST
            outcome = Outcome.closed
    await mark_processed(session, event_id, outcome.value, now)
    await session.flush()
    return outcome


_events = table_of(ProviderEvent)
_payments = table_of(Payment)
# Built once, with bind parameters (Core, not the ORM's bulk UPDATE): building them cost each
# webhook more Python than running them (README "Performance").
_MARK_PROCESSED = (
    update(_events)
    .where(_events.c.id == bindparam("p_event"))
    .values(processed_at=bindparam("p_now"), outcome=bindparam("p_outcome"))
)
_MARK_SUCCEEDED = (
    update(_payments)
    .where(
        _payments.c.id == bindparam("p_payment"),
        _payments.c.state != PaymentStatusValue.succeeded.value,
    )
    .values(
        state=PaymentStatusValue.succeeded.value,
        updated_at=bindparam("p_now"),
        next_check_at=None,
        payment_id=bindparam("p_payment_id"),
        provider_ref=bindparam("p_provider_ref"),
    )
    .returning(_payments.c.id)
)


async def mark_processed(
    session: AsyncSession, event_id: uuid.UUID | None, outcome: str, now: datetime
) -> None:
    if event_id is not None:
        await session.execute(
            _MARK_PROCESSED, {"p_event": event_id, "p_now": now, "p_outcome": outcome}
        )


async def _paid(
    session: AsyncSession,
    locked: LockedOrder,
    status: PaymentStatus,
    *,
    source: str,
    now: datetime,
    policy: Policy,
    event_id: uuid.UUID | None,
) -> Outcome:
    order, payment, line = locked.order, locked.payment, locked.line
    holder = await payment_id_holder(
        session, payment.provider, status.payment_id, besides=payment.id
    )
    if holder is not None:
        # Another order's payment (a signed event naming it, or an answer about it): not this
        # order's money — nothing recorded, nothing credited; an event is kept for finance.
        log.warning(
            "payments.payment_id_taken", provider=payment.provider, order=str(order.id),
            holder=str(holder), payment_id=text_only(status.payment_id or ""), source=source,
        )  # fmt: skip
        await mark_processed(session, event_id, UNMATCHED, now)
        return Outcome.unchanged
    # The operator's time zone, whose year numbers the credit notes issued here.
    zone = policy.settings.operator_timezone
    if not await _mark_succeeded(session, payment, status, now):
        # Known to be paid: only the amount of a payment taken without one, or a refund at the
        # provider, can be news.
        learnt = await _learn_amount(session, order, status, source=source, now=now, zone=zone)
        news = await note_refunded_status(
            session, order, status, source=source, now=now, zone=zone
        )
        outcome = Outcome.flagged if news or learnt else Outcome.already
        await mark_processed(session, event_id, outcome.value, now)
        return outcome
    late = OrderState(order.state) in CLOSED_UNPAID
    if locked.unmatched_news:
        await _adopt_early_news(session, order, payment.payment_id, now, zone=zone)
    order.paid_at = status.paid_at or now
    order.paid_amount, order.paid_currency = status.amount, status.currency
    why = await _not_credited(session, order, line, status, source)
    if why is not None:
        order.state = OrderState.paid.value
        flag_order(order, *why)
        await received_unapplied(session, order, now)
        await note_refunded_status(session, order, status, source=source, now=now, zone=zone)
        await settle_provider_refunds(session, order, now, zone=zone)
        await mark_processed(session, event_id, Outcome.flagged.value, now)
        await session.flush()
        return Outcome.flagged
    # First what touches only this order's rows; last, as briefly as possible before the
    # commit, the operator's ledger accounts (sharded, but shared).
    order.state, order.fulfilled_at = OrderState.fulfilled.value, now
    transfers = await _open_credit(session, order, line, now, policy)
    if late:
        flag_order(order, Attention.late_success, f"paid after the order was closed ({source})")
    jobs = [
        NewJob(RECEIPT_JOB, {"order_id": str(order.id)}, dedupe_key=f"{RECEIPT_JOB}:{order.id}"),
        notice(
            account_id=order.account_id,
            template="order.fulfilled",
            params={
                "msisdn": order.msisdn,
                "plan": order.plan_snapshot.get("names", {}),
                "total": order.total,
                "currency": order.currency,
                "order_id": str(order.id),
            },
            channels=["portal", "sms"],
            line_id=order.line_id,
        ),
    ]
    if line.account_id is not None and line.account_id != order.account_id:
        jobs.append(
            notice(
                account_id=line.account_id,
                template="line.gift_received",
                params={"msisdn": line.msisdn},
                line_id=line.id,
            )
        )
    await enqueue_many(session, jobs)
    await mark_processed(session, event_id, Outcome.fulfilled.value, now)
    await session.flush()
    await post_transfers(session, transfers, now=now)
    FULFILMENT_DELAY.labels(order.provider).observe((now - order.created_at).total_seconds())
    return Outcome.fulfilled


async def payment_id_holder(
    session: AsyncSession, provider: str, payment_id: str | None, *, besides: uuid.UUID
) -> uuid.UUID | None:
    """The order whose payment, other than `besides`, holds the provider's `payment_id`, if
    one does. A provider's payment id is one payment's (`uq_payments_provider_payment_id`): a
    report about one order naming another's is not about this order's money. Refused before
    anything is written (`_paid`), rather than by the database at the update: that would fail
    the whole transaction, and the event with it, on every retry."""
    if not payment_id:
        return None
    found = await session.execute(
        select(Payment.order_id)
        .where(
            Payment.provider == provider,
            Payment.payment_id == payment_id,
            Payment.id != besides,
        )
        .limit(1)
    )
    return found.scalar_one_or_none()


async def _mark_succeeded(
    session: AsyncSession, payment: Payment, status: PaymentStatus, now: datetime
) -> bool:
    """The payment becomes `succeeded` by a conditional update, which only the first of several
    arrivals wins (the others find no row to change). The winner's loaded `payment` is given the
    values written, as loaded from the database (nothing left for a flush to write)."""
    values = {
        "state": PaymentStatusValue.succeeded.value,
        "updated_at": now,
        "next_check_at": None,
        "payment_id": status.payment_id or payment.payment_id,
        "provider_ref": payment.provider_ref or status.provider_ref,
    }
    won = (
        await session.execute(
            _MARK_SUCCEEDED,
            {
                "p_payment": payment.id,
                "p_now": now,
                "p_payment_id": values["payment_id"],
                "p_provider_ref": values["provider_ref"],
            },
        )
    ).first()
    if won is None:
        return False
    for key, value in values.items():
        set_committed_value(payment, key, value)
    return True


async def _adopt_early_news(
    session: AsyncSession, order: Order, payment_id: str | None, now: datetime, *, zone: str
) -> None:
    """Refunds and disputes reported before their payment was known — they name it only by the
    provider's payment id (PayPal's capture, Stripe's payment intent), learnt with the payment —
    were stored unmatched: now they are this order's, applied before it is credited. So are
    refunded statuses (Stripe's `charge.refunded`): recorded as refunded at the provider, so the
    payment is not credited — however its success arrived (a webhook applies them first,
    `webhooks._apply_early_refunds`; "check now", the return, reconciliation come here). (Events
    another transaction is applying are left to it.)"""
    if not payment_id:
        return
    waiting = (
        await session.execute(
            select(ProviderEvent)
            .where(
                ProviderEvent.processed_at.is_(None),
                ProviderEvent.order_id.is_(None),
                ProviderEvent.provider == order.provider,
            )
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    for event in waiting:
        if event.status is not None:
            early = status_from_json(event.status)
            if early.payment_id != payment_id or early.state not in REFUNDED_STATES:
                continue
            event.order_id = order.id
            await note_refunded_status(
                session, order, early, source=f"webhook:{event.event_id}", now=now, zone=zone
            )
            event.processed_at, event.outcome = now, Outcome.flagged.value
            continue
        named = [x.get("payment_id") for x in (event.refund, event.dispute) if x is not None]
        if payment_id in named:
            event.order_id = order.id
            outcome = await apply_refund_news(session, event, now, zone=zone)
            event.processed_at, event.outcome = now, outcome


async def _learn_amount(
    session: AsyncSession,
    order: Order,
    status: PaymentStatus,
    *,
    source: str,
    now: datetime,
    zone: str,
) -> bool:
    """A later answer naming the amount of a payment taken without one: recorded, and its money
    posted to `unapplied` (it stays uncredited and flagged: finance refunds or applies it)."""
    if not amount_unknown(order) or not status.amount or status.amount <= 0:
        return False
    if not status.currency:
        return False
    order.paid_amount, order.paid_currency = status.amount, status.currency.upper()
    flag_order(
        order,
        Attention.amount_mismatch,
        f"paid {shown(status.amount, order.paid_currency)}, reported later ({source})",
    )
    await received_unapplied(session, order, now)
    await settle_provider_refunds(session, order, now, zone=zone)
    return True


async def _not_credited(
    session: AsyncSession, order: Order, line: Line, status: PaymentStatus, source: str
) -> tuple[Attention, str] | None:
    """Why a payment just taken must not be credited (see the module's policy), or None."""
    if status.amount != order.total or (status.currency or "").upper() != order.currency:
        paid = shown(status.amount, status.currency) if status.amount is not None else "?"
        return (
            Attention.amount_mismatch,
            f"paid {paid} for {shown(order.total, order.currency)} ({source})",
        )
    # A refund reported before its payment was recorded, and flagged (`record_provider_refund`):
    # the flag spares every other payment the look for one.
    if status.state in REFUNDED_STATES or (
        order.attention is not None
        and (
            await session.execute(select(Refund.id).where(Refund.order_id == order.id).limit(1))
        ).first()
    ):
        word = status.provider_state or status.state.value
        return (
            Attention.provider_refund,
            f"{word}: refunded at the provider before it was credited ({source})",
        )
    if line.state == LineState.terminated:
        return Attention.line_unavailable, f"line {line.msisdn} is terminated ({source})"
    return None


async def _open_credit(
    session: AsyncSession, order: Order, line: Line, now: datetime, policy: Policy
) -> list[NewTransfer]:
    """Open what the plan grants (buckets, validity, the line's state) and return every ledger
    transfer of the order, for one batch. Every transfer id derives from the order: a second
    pass would find them all `exists` and change nothing."""
    source, shard = f"order:{order.id}", chart.shard_of(order.id)
    clearing = chart.clearing(order.provider, order.currency, shard)
    sales, fees = chart.sales(order.currency, shard), chart.fees(order.currency, shard)
    accounts = [clearing, sales, fees]
    transfers = [
        NewTransfer(
            id=derived_id(source, "sale"),
            amount=order.price,
            unit=order.currency,
            debit_account_id=clearing.id,
            credit_account_id=sales.id,
            code="topup",
            reference=source,
        )
    ]
    if order.fee:
        transfers.append(
            NewTransfer(
                id=derived_id(source, "fee"),
                amount=order.fee,
                unit=order.currency,
                debit_account_id=clearing.id,
                credit_account_id=fees.id,
                code="fee",
                reference=source,
            )
        )
    snapshot = order.plan_snapshot
    wallet = int(snapshot.get("wallet_credit", {}).get(line.currency, 0))
    if wallet:
        origin = chart.funding(line.currency, shard)
        origin, credit = wallet_credit(
            line, wallet, source=source, code="topup", from_account=origin
        )
        accounts.append(origin)
        transfers.append(credit)
    grants = [
        UnitGrant(g["unit"], int(g["amount"]), g.get("validity_days"), tuple(g.get("zones") or ()))
        for g in snapshot.get("buckets", [])
    ]
    transfers += await open_buckets(
        session, line, grants, source=source, now=now, also=accounts, shard=shard
    )
    days = int(snapshot.get("validity_days") or 0)
    if days:
        start = max(now, line.validity_end) if line.validity_end else now
        line.validity_end = start + timedelta(days=days)
    on_topup(
        session,
        line,
        now=now,
        actor=f"order:{order.id}",
        by_owner=line.account_id is not None and line.account_id == order.account_id,
        policy=policy,
    )
    return transfers
