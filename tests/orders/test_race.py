"""The race: 200 paid orders, each told at once by three copies of its webhook, the payer's
return, "check now" and its own pass of the reconciliation job — every one credited exactly
once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerTransfer
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.orders.fulfilment import Outcome, issue_receipt_number
from simcharge.orders.models import Order, Payment, ProviderEvent
from simcharge.payments import sandbox
from simcharge.payments.service import reconcile_order
from tests.factories import load_demo_catalog
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    new_payer,
    sandbox_object,
    signed_event,
)

ORDERS = 200
PAYERS = 40


@pytest.mark.postgres_only
@pytest.mark.slow
async def test_200_orders_told_six_times_at_once_are_credited_once(
    fresh_db: Database, settings: Settings
) -> None:
    db = fresh_db
    await db.run(load_demo_catalog)
    app = create_app(settings, db=db, run_worker=False)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), limits=limits,
                                 base_url="http://testserver") as client:
        payers = [await new_payer(db, settings) for _ in range(PAYERS)]
        orders: list[tuple[Payer, dict[str, Any]]] = []
        for i in range(ORDERS):
            payer = payers[i % PAYERS]
            r = await client.post("/api/v1/orders", headers={
                **payer.auth, "Idempotency-Key": uuid.uuid4().hex}, json={
                "plan": "starter-10", "method": "sandbox", "line_id": str(payer.line.id)})
            assert r.status_code == 201, r.text
            orders.append((payer, r.json()))
        # Paid at the provider; every payment is due for the reconciliation job.
        for _, order in orders:
            await sandbox.act(db, settings, order["next_action"]["url"].rsplit("/", 1)[-1], "pay")
        await db.run(lambda s: s.execute(update(Payment).values(next_check_at=utcnow())))
        webhooks = [signed_event(settings, "payment.succeeded",
                                 await sandbox_object(db, order["reference"]))
                    for _, order in orders]

        gate = asyncio.Semaphore(32)

        async def limited(call: Any) -> Any:
            async with gate:
                return await call

        calls: list[tuple[str, Any]] = []
        for (payer, order), (body, headers) in zip(orders, webhooks, strict=True):
            calls += [(order["id"], client.post("/api/v1/webhooks/sandbox", content=body,
                                                headers=headers)) for _ in range(3)]
            calls.append((order["id"], client.get(f"/api/v1/orders/{order['id']}/return",
                                                  headers=payer.auth)))
            calls.append((order["id"], client.post(f"/api/v1/orders/{order['id']}/check",
                                                   headers=payer.auth)))
            # The reconciliation job's pass over this very order.
            calls.append((order["id"], reconcile_order(db, app.state.providers,
                                                       uuid.UUID(order["id"]))))
        random.Random(7).shuffle(calls)
        results = await asyncio.gather(*(limited(call) for _, call in calls))

    statuses = Counter(r.status_code for r in results if isinstance(r, httpx.Response))
    assert set(statuses) <= {200, 303}, statuses
    # Every order had its reconciliation pass; whoever came first credited it, and only one
    # of the webhooks and the reconciliation says so (the return and "check now" do not say).
    passes = Counter(oid for (oid, _), r in zip(calls, results, strict=True)
                     if isinstance(r, Outcome))
    assert set(passes.values()) == {1} and len(passes) == ORDERS
    assert {r for r in results if isinstance(r, Outcome)} <= {Outcome.fulfilled, Outcome.already}
    credited = Counter(
        oid for (oid, _), r in zip(calls, results, strict=True)
        if r == Outcome.fulfilled
        or (isinstance(r, httpx.Response) and r.headers.get("simcharge-outcome") == "fulfilled")
    )
    assert set(credited.values()) <= {1}

    async with db.read() as s:
        states = Counter((await s.execute(select(Order.state))).scalars())
        assert states == {"fulfilled": ORDERS}
        per_order = Counter((await s.execute(
            select(LedgerTransfer.reference).where(LedgerTransfer.reference.like("order:%"))
        )).scalars())
        assert len(per_order) == ORDERS and set(per_order.values()) == {4}  # sale + 3 buckets
        events = (await s.execute(select(func.count()).select_from(ProviderEvent))).scalar_one()
        assert events == ORDERS  # three copies each, stored once
        for payer in payers:
            line = await s.get(Line, payer.line.id)
            assert line is not None
            balances = await line_balances(s, line)
            sms = next(u for u in balances.units if u.unit == "SMS")
            assert sms.remaining == 20 * (ORDERS // PAYERS)
    await assert_ledger_balanced(db)

    # Receipts numbered concurrently, twice each: gapless, none twice, one per order.
    async with db.read() as s:
        ids = (await s.execute(select(Order.id))).scalars().all()
    await asyncio.gather(*(db.run(lambda s, i=i: issue_receipt_number(s, i)) for i in ids * 2))
    async with db.read() as s:
        numbers = sorted(int(n.rsplit("-", 1)[1]) for n in (await s.execute(
            select(Order.receipt_number))).scalars())
    assert numbers == list(range(1, ORDERS + 1))
