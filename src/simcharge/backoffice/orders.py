"""Orders as staff see them (every provider event, refunds), and asking the provider again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.fulfilment import Outcome
from simcharge.orders.models import Order, Payment, ProviderEvent, Refund
from simcharge.orders.service import OrderNotFound
from simcharge.payments.registry import Providers
from simcharge.payments.service import check_order


@dataclass(frozen=True, slots=True)
class OrderPanel:
    order: Order
    payment: Payment | None
    events: list[ProviderEvent]
    refunds: list[Refund]


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
    return OrderPanel(order, payment, list(events), list(refunds))


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
    every other path does: a payment found paid is credited); audited with before/after."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        if order is None:
            raise OrderNotFound(field="order_id")
        before = order_facts(order)
    outcome = await check_order(db, providers, order_id, source="staff", capture=True)

    async def note(s: AsyncSession) -> None:
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
            details={"outcome": outcome.value},
            now=utcnow(),
        )

    await db.run(note)
    return outcome
