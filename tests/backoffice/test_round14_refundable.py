"""`refundable` in the admin API (fourteenth round): the back office's refund form showed what
is left to refund, the API's order (`GET /admin/orders/{id}`, the list) and order panels (a
customer's full view, the attention list) did not."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Order
from tests.backoffice.helpers import new_staff
from tests.orders.helpers import fulfilled, idem, new_payer, place, run_worker


async def test_the_admin_order_says_what_is_left_to_refund(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    finance = await new_staff(db, settings, "finance")
    url = f"/api/v1/admin/orders/{order['id']}"
    total = order["total"]["minor"]
    got = (await client.get(url, headers=finance.auth)).json()
    assert got["refundable"] == {**got["refundable"], "minor": total,
                                 "currency": order["total"]["currency"]}
    # A refund on its way is no longer refundable; nor once done.
    r = await client.post(f"{url}/refunds", headers={**finance.auth, **idem()},
                          json={"amount": 400, "reason": "test"})
    assert r.status_code == 202, r.text
    got = (await client.get(url, headers=finance.auth)).json()
    assert got["refundable"]["minor"] == total - 400
    await run_worker(app, db, settings)
    listed = (await client.get("/api/v1/admin/orders", headers=finance.auth)).json()
    [mine] = [o for o in listed if o["id"] == order["id"]]
    assert mine["refundable"]["minor"] == total - 400
    # The panel of a customer's full view says the same, in minor units of the currency paid.
    view = (await client.get(f"/api/v1/admin/customers/{mine['account_id']}",
                             headers=finance.auth)).json()
    [panel] = [o for o in view["orders"] if o["id"] == order["id"]]
    assert (panel["refundable"], panel["refundable_currency"]) == (total - 400, "USD")
    # Refund the rest: nothing left.
    r = await client.post(f"{url}/refunds", headers={**finance.auth, **idem()}, json={"reason": "test"})
    assert r.status_code == 202, r.text
    assert (await client.get(url, headers=finance.auth)).json()["refundable"]["minor"] == 0
    # More than is left is refused, nothing changed.
    r = await client.post(f"{url}/refunds", headers={**finance.auth, **idem()},
                          json={"amount": 1, "reason": "test"})
    assert r.status_code in (409, 422), r.text
    assert (await client.get(url, headers=finance.auth)).json()["refundable"]["minor"] == 0


async def test_the_attention_panel_has_refundable_too(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    pending = await place(client, payer, plan="starter-10")
    finance = await new_staff(db, settings, "finance")
    # Still pending: not on the list yet (not pending long enough), and the order answers its
    # total as refundable before the payment is known.
    got = (await client.get(f"/api/v1/admin/orders/{pending['id']}", headers=finance.auth))
    assert got.json()["refundable"]["minor"] == pending["total"]["minor"]
    async def age(s: AsyncSession) -> None:
        await s.execute(update(Order).where(Order.id == uuid.UUID(pending["id"]))
                        .values(created_at=utcnow() - timedelta(days=1)))

    await db.run(age)
    r = await client.get("/api/v1/admin/attention", headers=finance.auth)
    assert r.status_code == 200, r.text
    [panel] = [p for p in r.json() if p["id"] == pending["id"]]
    assert (panel["refundable"], panel["refundable_currency"]) == (
        pending["total"]["minor"], pending["total"]["currency"])
