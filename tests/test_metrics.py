"""The levels read from the database at scrape time follow it down as well as up."""

from __future__ import annotations

import httpx
import pytest

from simcharge import metrics
from simcharge.config import Settings
from simcharge.db import Database
from tests.factories import load_demo_catalog
from tests.orders.helpers import new_payer, place
from tests.orders.test_metrics import sample


async def test_an_order_state_no_order_is_in_any_more_shows_zero(
    client: httpx.AsyncClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "LEVELS_MAX_AGE", 0.0)
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    body = (await client.get("/metrics")).text
    pending = sample(body, "simcharge_orders_by_state", state="pending", method="sandbox")
    assert pending >= 1
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert r.status_code == 200, r.text
    body = (await client.get("/metrics")).text
    # Shown as one fewer (0 when it was the last), not left at its old value: set, not cleared,
    # because clearing labels does nothing in multiprocess mode.
    assert sample(body, "simcharge_orders_by_state", state="pending", method="sandbox") == (
        pending - 1
    )
    assert sample(body, "simcharge_orders_by_state", state="cancelled", method="sandbox") >= 1
