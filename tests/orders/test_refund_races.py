"""Refunds interleaved with each other on PostgreSQL: what a refund may still take is counted from
the order as it is once locked, never from a copy read before another refund committed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lifecycle.service import Policy
from simcharge.orders.models import Order, Refund
from simcharge.orders.refunds import complete_refund, request_refund
from simcharge.orders.service import order_by_reference
from simcharge.payments.providers import Notification, RefundResult, RefundState
from simcharge.payments.sandbox import NAME as SANDBOX
from simcharge.payments.webhooks import _apply_event, _store
from tests.factories import load_demo_catalog
from tests.orders.helpers import assert_ledger_balanced, new_payer, pay_at_sandbox, place

pytestmark = pytest.mark.postgres_only


async def _credited(db: Database, settings: Settings) -> dict[str, Any]:
    """A traveller-20 order (20.00 USD), paid at the sandbox and credited."""
    await db.run(load_demo_catalog)
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        payer = await new_payer(db, settings)
        order = await place(client, payer, plan="traveller-20")
        await pay_at_sandbox(client, settings, order)
        r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
        assert r.json()["state"] == "fulfilled", r.text
    return order


def _succeeded(refund: Refund) -> RefundResult:
    return RefundResult(refund_id=refund.reference, provider_refund_id=f"rf_{refund.reference}",
                        state=RefundState.succeeded, amount=refund.amount, currency="USD", raw={})


async def _refunds(db: Database, order_id: uuid.UUID) -> tuple[Order, list[tuple[int, str]]]:
    async with db.read() as s:
        rows = (await s.execute(select(Refund.amount, Refund.state).where(
            Refund.order_id == order_id))).all()
        order = await s.get(Order, order_id)
        assert order is not None
    return order, [(int(a), str(st)) for a, st in rows]


async def test_a_refund_asked_from_an_order_read_before_another_completed_takes_only_whats_left(
    fresh_db: Database, settings: Settings
) -> None:
    """Staff open the order (read, unlocked) while a full refund is pending; it completes; then
    they ask for "everything left". Nothing is left: refused, not a second full refund."""
    db = fresh_db
    order = await _credited(db, settings)
    oid = uuid.UUID(order["id"])
    first = await db.run(lambda s: request_refund(
        s, oid, amount=None, reason="a", requested_by="staff:a", now=utcnow(),
        idempotency_key="k1"))
    read, completed = asyncio.Event(), asyncio.Event()

    async def second(s: AsyncSession) -> Refund:
        await s.get(Order, oid)  # the back office's page, before it asks (orders/admin.py)
        read.set()
        await completed.wait()
        return await request_refund(s, oid, amount=None, reason="b", requested_by="staff:b",
                                    now=utcnow(), idempotency_key="k2")

    async def provider_confirms() -> None:
        await read.wait()
        await db.run(lambda s: complete_refund(s, oid, _succeeded(first), utcnow()))
        completed.set()

    outcome, _ = await asyncio.gather(db.run(second), provider_confirms(),
                                      return_exceptions=True)
    assert isinstance(outcome, Exception), outcome  # nothing left to refund
    found, refunds = await _refunds(db, oid)
    assert (found.state, found.refunded_amount, refunds) == ("refunded", 2000,
                                                             [(2000, "succeeded")])
    await assert_ledger_balanced(db)


async def test_two_refunds_completing_at_once_both_count(
    fresh_db: Database, settings: Settings
) -> None:
    """A provider's notification of one refund (its order read first, unlocked) and the worker's
    answer for another commit interleaved: the order counts both, and "everything left" is what
    is really left."""
    db = fresh_db
    order = await _credited(db, settings)
    oid = uuid.UUID(order["id"])
    r1 = await db.run(lambda s: request_refund(
        s, oid, amount=500, reason="a", requested_by="staff:a", now=utcnow(),
        idempotency_key="k1"))
    r2 = await db.run(lambda s: request_refund(
        s, oid, amount=700, reason="b", requested_by="staff:a", now=utcnow(),
        idempotency_key="k2"))
    news = Notification(provider=SANDBOX, event_id="evt_r1", event_type="refund.succeeded",
                        status=None, refund=RefundResult(
                            refund_id=r1.reference, provider_refund_id=f"rf_{r1.reference}",
                            state=RefundState.succeeded, amount=500, currency="USD", raw={},
                            reference=order["reference"]), raw={})
    read, completed = asyncio.Event(), asyncio.Event()

    async def webhook(s: AsyncSession) -> str:
        found = await order_by_reference(s, order["reference"])  # as `_order_id_of` does
        assert found is not None
        read.set()
        await completed.wait()
        event_id = await _store(s, SANDBOX, news, utcnow(), found.id)
        assert event_id is not None
        return await _apply_event(s, Policy.of(settings), event_id)

    async def worker() -> None:
        await read.wait()
        await db.run(lambda s: complete_refund(s, oid, _succeeded(r2), utcnow()))
        completed.set()

    await asyncio.gather(db.run(webhook), worker())
    found, _ = await _refunds(db, oid)
    assert (found.state, found.refunded_amount) == ("partially_refunded", 1200)
    rest = await db.run(lambda s: request_refund(
        s, oid, amount=None, reason="c", requested_by="staff:a", now=utcnow(),
        idempotency_key="k3"))
    assert rest.amount == 800
    await db.run(lambda s: complete_refund(s, oid, _succeeded(rest), utcnow()))
    found, refunds = await _refunds(db, oid)
    assert found.refunded_amount == sum(a for a, _ in refunds) == 2000
    await assert_ledger_balanced(db)
