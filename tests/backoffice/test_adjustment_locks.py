"""An adjustment locks the line and then the customer's row; placing an order holds a foreign
key's share of the customer's row (its idempotency key) and then asks one of the line's (the
order). The adjustment's locks are FOR NO KEY UPDATE, which no foreign key's share waits for:
the two at once never deadlock."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from simcharge.accounts.models import Account
from simcharge.backoffice.models import Adjustment
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import Order
from tests.backoffice.helpers import new_staff
from tests.factories import load_demo_catalog
from tests.locks import app_client, deadlocks, until_waiting
from tests.orders.helpers import new_payer


@pytest.mark.postgres_only("row locks: SQLite has one writer at a time")
async def test_an_order_and_an_adjustment_of_the_same_customer_at_once_do_not_deadlock(
    fresh_db: Database, settings: Settings
) -> None:
    db = fresh_db
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    before = deadlocks()
    async with app_client(db, settings) as client:
        # The customer's row held by a third transaction lines the two up: the order waits for
        # it with its idempotency key written, the adjustment with the line locked.
        async with db.transaction() as holder:
            await holder.execute(
                select(Account.id).where(Account.id == payer.account_id).with_for_update()
            )
            order = asyncio.create_task(
                client.post(
                    "/api/v1/orders",
                    headers={**payer.auth, "Idempotency-Key": uuid.uuid4().hex},
                    json={"plan": "traveller-20", "method": "sandbox",
                          "line_id": str(payer.line.id)},
                )
            )
            await until_waiting(db, 1)
            adjustment = asyncio.create_task(
                client.post(
                    f"/api/v1/admin/lines/{payer.line.id}/adjustments",
                    headers={**agent.auth, "Idempotency-Key": uuid.uuid4().hex},
                    json={"amount": 300, "reason": "goodwill"},
                )
            )
            await until_waiting(db, 2)
        placed, adjusted = await asyncio.wait_for(asyncio.gather(order, adjustment), 60)
    assert placed.status_code == 201, placed.text
    assert adjusted.status_code == 201, adjusted.text
    assert adjusted.json()["state"] == "applied"
    assert deadlocks() == before
    async with db.read() as s:
        orders = await s.execute(
            select(func.count()).select_from(Order).where(Order.account_id == payer.account_id)
        )
        adjustments = await s.execute(
            select(func.count()).select_from(Adjustment).where(
                Adjustment.line_id == payer.line.id
            )
        )
        assert (orders.scalar_one(), adjustments.scalar_one()) == (1, 1)
