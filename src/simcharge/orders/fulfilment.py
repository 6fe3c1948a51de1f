"""Applying what a provider says about a payment — and crediting a paid order exactly once.

Whatever brings the news (a webhook, the payer's return, "check now", the reconciliation job),
however often and in whatever order, it ends here. One database transaction: the order and its
payment are locked; the payment becomes `succeeded` only if it was not already (the second
arrival stops there); the plan's transfers are posted with ids derived from the order (so even
a second pass could not credit twice); the line's validity is extended and it is reactivated;
the receipt (numbered when it is issued, `issue_receipt_number`) and the notices go to the
outbox. The operator's ledger accounts, shared by every top-up, are touched last (and sharded,
`ledger.chart`), so that concurrent fulfilments hardly wait for each other.

Policy, where the money and the order disagree:
- amount or currency differ from the order's: nothing is credited, the order is `paid` and
  flagged `amount_mismatch` for finance (refund, or credit by hand);
- paid after the order expired or was cancelled: credited anyway (the customer paid) and
  flagged `late_success`;
- the line was terminated meanwhile: nothing is credited, `paid` + `line_unavailable`.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import table_of, upsert_insert
from simcharge.kit.ids import derived_id
from simcharge.ledger import chart
from simcharge.ledger.service import NewTransfer, post_transfers
from simcharge.lifecycle.service import on_topup
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import UnitGrant, open_buckets, wallet_credit
from simcharge.metrics import FULFILMENT_DELAY
from simcharge.notifications.service import notice
from simcharge.orders.models import (
    CLOSED_UNPAID,
    Attention,
    Order,
    OrderState,
    PaymentStatusValue,
    ProviderEvent,
    ReceiptCounter,
    ReceiptDocument,
)
from simcharge.orders.service import LockedOrder, lock_order
from simcharge.payments.providers import PaymentState, PaymentStatus
from simcharge.worker.service import NewJob, enqueue_many

RECEIPT_JOB = "orders.receipt"


class Outcome(StrEnum):
    fulfilled = "fulfilled"
    """This call credited the order."""
    already = "already"
    """It was credited (or otherwise settled) before: nothing done."""
    flagged = "flagged"
    """Paid, but not credited: finance must look (see `Order.attention`)."""
    closed = "closed"
    """The payment failed, was cancelled or expired: the order says so."""
    unchanged = "unchanged"
    """Nothing new (still pending, or news about a settled order)."""


_CLOSING = {
    PaymentState.failed: (OrderState.failed, PaymentStatusValue.failed),
    PaymentState.cancelled: (OrderState.cancelled, PaymentStatusValue.cancelled),
    PaymentState.expired: (OrderState.expired, PaymentStatusValue.expired),
}
PAID_STATES = (PaymentState.succeeded, PaymentState.refunded, PaymentState.partially_refunded)


async def apply_status(
    session: AsyncSession,
    order_id: uuid.UUID,
    status: PaymentStatus,
    *,
    source: str,
    now: datetime,
    locked: LockedOrder | None = None,
    event_id: uuid.UUID | None = None,
) -> Outcome:
    """Apply what the provider says. `locked`: the order, payment and line, already locked by
    the caller (`lock_order`). `event_id`: the stored notification that says it, marked
    processed here."""
    locked = locked or await lock_order(session, order_id=order_id)
    if locked is None:
        outcome = Outcome.unchanged
    else:
        order, payment = locked.order, locked.payment
        if status.state in PAID_STATES:
            return await _paid(session, locked, status, source=source, now=now, event_id=event_id)
        outcome = Outcome.unchanged
        if status.state in _CLOSING and order.state == OrderState.pending:
            order_state, payment_state = _CLOSING[status.state]
            order.state, order.closed_at = order_state.value, now
            payment.state, payment.updated_at = payment_state.value, now
            payment.next_check_at = None
            outcome = Outcome.closed
    await mark_processed(session, event_id, outcome.value, now)
    await session.flush()
    return outcome


async def mark_processed(
    session: AsyncSession, event_id: uuid.UUID | None, outcome: str, now: datetime
) -> None:
    if event_id is not None:
        await session.execute(
            update(ProviderEvent)
            .where(ProviderEvent.id == event_id)
            .values(processed_at=now, outcome=outcome)
        )


async def _paid(
    session: AsyncSession,
    locked: LockedOrder,
    status: PaymentStatus,
    *,
    source: str,
    now: datetime,
    event_id: uuid.UUID | None,
) -> Outcome:
    order, payment = locked.order, locked.payment
    if payment.state == PaymentStatusValue.succeeded:
        await mark_processed(session, event_id, Outcome.already.value, now)
        return Outcome.already
    late = OrderState(order.state) in CLOSED_UNPAID
    mismatch = status.amount != order.total or (status.currency or "").upper() != order.currency
    line = None if mismatch else locked.line
    payment.state, payment.updated_at, payment.next_check_at = (
        PaymentStatusValue.succeeded.value,
        now,
        None,
    )
    payment.payment_id = status.payment_id or payment.payment_id
    payment.provider_ref = payment.provider_ref or status.provider_ref
    order.paid_at = status.paid_at or now
    order.paid_amount, order.paid_currency = status.amount, status.currency
    if line is None or line.state == LineState.terminated:
        order.state = OrderState.paid.value
        if line is None:
            paid = f"{status.amount} {status.currency}"
            note = f"paid {paid} for {order.total} {order.currency} ({source})"
            _flag(order, Attention.amount_mismatch, note)
        else:
            _flag(order, Attention.line_unavailable, f"line {line.msisdn} is terminated ({source})")
        await mark_processed(session, event_id, Outcome.flagged.value, now)
        await session.flush()
        return Outcome.flagged
    # First what touches only this order's rows; last, as briefly as possible before the
    # commit, the operator's ledger accounts (sharded, but shared).
    order.state, order.fulfilled_at = OrderState.fulfilled.value, now
    transfers = await _open_credit(session, order, line, now)
    if late:
        _flag(order, Attention.late_success, f"paid after the order was closed ({source})")
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


def _flag(order: Order, why: Attention, note: str) -> None:
    order.attention, order.attention_note = why.value, note


async def _open_credit(
    session: AsyncSession, order: Order, line: Line, now: datetime
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
    )
    return transfers


async def issue_receipt_number(session: AsyncSession, order_id: uuid.UUID) -> str | None:
    """Number the receipt of a credited order: `R2026-000001`, `R2026-000002` … gapless per
    year of payment, in the order receipts are issued. Once per order (the order is locked and
    keeps its number); None for an order that was not credited.

    Numbering at issue rather than in the crediting transaction keeps the one counter row every
    receipt needs out of the webhook's path; the worker issues the receipt right after the
    credit, and asking for the receipt issues it too."""
    order = await session.get(Order, order_id, with_for_update=True)
    if order is None or order.fulfilled_at is None:
        return None
    if order.receipt_number is not None:
        return order.receipt_number
    year = order.fulfilled_at.year
    counters = table_of(ReceiptCounter)
    value = (
        await session.execute(
            upsert_insert(session, counters)
            .values(name=f"receipt:{year}", value=1)
            .on_conflict_do_update(index_elements=["name"], set_={"value": counters.c.value + 1})
            .returning(counters.c.value)
        )
    ).scalar_one()
    order.receipt_number = f"R{year}-{int(value):06d}"
    await session.flush()
    return order.receipt_number


async def forget_receipts(session: AsyncSession, order_id: uuid.UUID) -> None:
    """The order changed (a refund): rendered receipts must be rendered again."""
    await session.execute(delete(ReceiptDocument).where(ReceiptDocument.order_id == order_id))
