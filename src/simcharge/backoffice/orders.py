"""Orders as staff see them (every provider event, refunds), and asking the provider again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.fulfilment import Outcome
from simcharge.orders.models import Attention, Order, OrderState, Payment, ProviderEvent, Refund
from simcharge.orders.refunds import applied_to_wallet, refundable
from simcharge.orders.service import OrderNotFound
from simcharge.payments.registry import Providers
from simcharge.payments.service import check_order


@dataclass(frozen=True, slots=True)
class OrderPanel:
    order: Order
    payment: Payment | None
    events: list[ProviderEvent]
    refunds: list[Refund]
    applied: int = 0
    """What of an uncredited payment finance put on the line's wallet."""
    refundable: int = 0
    """What can still be refunded (`orders.refunds.refundable`), in what was paid."""

    @property
    def may_apply(self) -> bool:
        """Whether money taken and not credited is there to put on the line's wallet."""
        o = self.order
        return (
            o.state == OrderState.paid.value and o.fulfilled_at is None and bool(o.paid_amount)
            and not self.applied
        )


async def order_panel(s: AsyncSession, order_id: uuid.UUID) -> OrderPanel:
    order = await s.get(Order, order_id)
    if order is None:
        raise OrderNotFound(field="order_id")
    payment = (
        await s.execute(select(Payment).where(Payment.order_id == order_id))
    ).scalar_one_or_none()
    events = (
        await s.execute(
            select(ProviderEvent)
            .where(ProviderEvent.order_id == order_id)
            .order_by(ProviderEvent.received_at, ProviderEvent.id)
        )
    ).scalars()
    refunds = (
        await s.execute(
            select(Refund).where(Refund.order_id == order_id).order_by(Refund.created_at)
        )
    ).scalars()
    applied = await applied_to_wallet(s, order) if order.fulfilled_at is None else 0
    left = await refundable(s, order)
    return OrderPanel(order, payment, list(events), list(refunds), applied, left)


def order_facts(order: Order) -> dict[str, Any]:
    return {
        "state": order.state,
        "attention": order.attention,
        "paid_amount": order.paid_amount,
        "refunded_amount": order.refunded_amount,
    }


async def check_with_provider(
    db: Database, providers: Providers, actor: Actor, order_id: uuid.UUID
) -> Outcome:
    """Ask the provider where the payment stands now and apply the answer (exactly once, as
    every other path does: a payment found paid is credited); audited with before/after.

    The asking is audited before the provider is called (`order.check.asked`, committed): the
    call may capture a payment, and a process that dies during it must still leave who asked.
    The answer is audited after (`order.check`), also when the provider could not be reached."""

    async def asked(s: AsyncSession) -> dict[str, Any]:
        order = await s.get(Order, order_id)
        if order is None:
            raise OrderNotFound(field="order_id")
        facts = order_facts(order)
        await audit.record(
            s, actor, "order.check.asked", target_type="order", target_id=order_id,
            before=facts, after=facts, details={"capture": True}, now=utcnow(),
        )  # fmt: skip
        return facts

    before = await db.run(asked)

    async def note(s: AsyncSession, details: dict[str, Any]) -> None:
        after = await s.get(Order, order_id)
        assert after is not None
        await audit.record(
            s,
            actor,
            "order.check",
            target_type="order",
            target_id=order_id,
            before=before,
            after=order_facts(after),
            details=details,
            now=utcnow(),
        )

    try:
        outcome = await check_order(db, providers, order_id, source="staff", capture=True)
    except Exception as exc:
        failed = {"outcome": "failed", "error": type(exc).__name__}
        await db.run(lambda s: note(s, failed))
        raise
    await db.run(lambda s: note(s, {"outcome": outcome.value}))
    return outcome


PENDING_TOO_LONG = Attention.stuck_pending.value
"""The flag under which orders pending longer than expected are listed (they carry none)."""


def _stuck(pending_minutes: int) -> Any:
    cutoff = utcnow() - timedelta(minutes=pending_minutes)
    return (Order.state == OrderState.pending.value) & (Order.created_at < cutoff)


async def attention_orders(
    s: AsyncSession, pending_minutes: int, *, flag: str | None = None, limit: int = 200
) -> list[uuid.UUID]:
    """Orders needing attention, oldest first: every flagged order (whatever the flag: a kind
    added later is listed too) and those pending longer than expected; or only those of `flag`
    (`stuck_pending` for the orders pending too long)."""
    flagged = select(Order.id).where(
        Order.attention.is_not(None) if flag is None else Order.attention == flag
    )
    found = list((await s.execute(flagged.order_by(Order.created_at).limit(limit))).scalars())
    if flag in (None, PENDING_TOO_LONG):
        stuck = select(Order.id).where(_stuck(pending_minutes), Order.attention.is_(None))
        found += (await s.execute(stuck.order_by(Order.created_at).limit(limit))).scalars()
    return list(dict.fromkeys(found))


async def attention_counts(s: AsyncSession, pending_minutes: int) -> dict[str, int]:
    """How many orders each flag holds (pending too long under `stuck_pending`)."""
    rows = await s.execute(
        select(Order.attention, func.count())
        .where(Order.attention.is_not(None))
        .group_by(Order.attention)
    )
    counts = {str(flag): int(n) for flag, n in rows}
    stuck = await s.execute(
        select(func.count())
        .select_from(Order)
        .where(_stuck(pending_minutes), Order.attention.is_(None))
    )
    if n := int(stuck.scalar_one()):
        counts[PENDING_TOO_LONG] = counts.get(PENDING_TOO_LONG, 0) + n
    return dict(sorted(counts.items()))
