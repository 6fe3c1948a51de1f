"""Seventeenth round (a finance auditor): an order refunded in parts gives back exactly its
price and exactly its fee, whatever the parts' sizes and whether the earlier parts are still
held at the provider or done. Before, a part's rounded fee share could leave less sale to give
back than the part itself (five parts of 8 took no fee, then 2,078 of 2,119 took 117 of the fee
and 1,961 of a sale of which 1,960 were left): the last cent was then refused (a sale of −1)
while the parts were held, and once done, revenue gave back 2,001 of a 2,000 sale."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from simcharge.orders.models import Refund
from tests.orders.helpers import (
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
)

# traveller-20 by PayPal: a price of 2,000 and a fee of 119 (2,119 paid)
SEQUENCES = [
    [8, 8, 8, 8, 8, 2078, 1],  # the auditor's case, scaled to this order
    [1] * 10 + [2108, 1],  # many parts with no fee share, then the rest
    [2118, 1],  # a last cent that must be sale or fee, never both
    [1, 2118],
    [1000, 1000, 119],
    [119, 2000],
    [2000, 119],
    [700, 700, 719],
]


async def _revenue(db: Database, key: str) -> int:
    async with db.read() as s:
        rows = (await s.execute(select(LedgerAccount).where(
            LedgerAccount.key.in_(chart.keys(key))))).scalars().all()
        return sum(a.credits_posted - a.debits_posted for a in rows)


@pytest.mark.parametrize("held", [True, False], ids=["parts-held", "parts-done"])
@pytest.mark.parametrize("parts", SEQUENCES, ids=["-".join(map(str, p))[:40] for p in SEQUENCES])
async def test_parts_give_back_the_price_and_the_fee_exactly(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, parts: list[int],
    held: bool,
) -> None:
    issued = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    staff = {"Authorization": f"Bearer {issued.token}"}
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20", method="paypal")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    row = await order_row(db, order["id"])
    assert (row.price, row.fee, row.total) == (2000, 119, 2119)
    fees, sales = await _revenue(db, "revenue:fees:USD"), await _revenue(db, "revenue:sales:USD")

    for amount in parts:
        r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                              headers={**staff, **idem()}, json={"amount": amount, "reason": "t"})
        assert r.status_code == 202, (amount, r.text)
        if not held:
            await run_worker(app, db, settings)
    await run_worker(app, db, settings)

    done = await order_row(db, order["id"])
    assert (done.state, done.refunded_amount) == ("refunded", 2119)
    async with db.read() as s:
        refunds = (await s.execute(select(Refund).where(Refund.order_id == done.id))).scalars().all()
    assert sorted(x.amount for x in refunds) == sorted(parts)
    assert {x.state for x in refunds} == {"succeeded"}
    # each part's fee is within the part, and the parts' fees are the order's fee
    part_fees = [int((x.plan or {}).get("fee", 0)) for x in refunds]
    assert all(0 <= f <= x.amount for f, x in zip(part_fees, refunds, strict=True))
    assert sum(part_fees) == 119
    assert fees - await _revenue(db, "revenue:fees:USD") == 119
    assert sales - await _revenue(db, "revenue:sales:USD") == 2000
    await assert_ledger_balanced(db)
