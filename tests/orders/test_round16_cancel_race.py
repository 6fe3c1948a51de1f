"""Sixteenth round (adversarial money review): a payment notification that credits an order
while its cancel is closing it at the provider — after the provider was asked, before the cancel's
own transaction. The order is credited once, and the cancel says `409 order-already-paid`, as when
the provider's answer says it; until then it answered 200 for an order it had not cancelled."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simcharge.config import Settings
from simcharge.db import Database
from tests.auth.helpers import problem
from tests.orders.helpers import (
    assert_ledger_balanced,
    new_payer,
    order_row,
    place,
    sandbox_object,
    signed_event,
    transfers_of,
)


async def test_a_cancel_that_loses_to_a_notification_says_paid(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    sandbox = app.state.providers.named("sandbox")
    really_close = sandbox.close
    delivered: list[int] = []

    async def close(reference: str, provider_ref: str | None) -> None:
        # The payer paid and the notification arrived while the cancel was on its way.
        body, headers = signed_event(
            settings, "payment.succeeded", await sandbox_object(db, reference)
        )
        answer = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
        delivered.append(answer.status_code)
        await really_close(reference, provider_ref)

    monkeypatch.setattr(sandbox, "close", close)
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert delivered == [200]
    assert r.status_code == 409, r.text
    assert problem(r)["type"].endswith("/order-already-paid")
    assert problem(r).get("field") == "order_id"
    after = await order_row(db, order["id"])
    assert after.state == "fulfilled"
    credited = await transfers_of(db, f"order:{order['id']}")
    money = [t for t in credited if t.unit == "USD"]
    assert money and sum(t.amount for t in money) == row.price
    await assert_ledger_balanced(db)
    twice = await client.post(
        "/api/v1/webhooks/sandbox",
        **dict(zip(("content", "headers"), signed_event(
            settings, "payment.succeeded", await sandbox_object(db, row.reference)
        ), strict=True)),
    )
    assert twice.status_code == 200
    assert [t.id for t in await transfers_of(db, f"order:{order['id']}")] == [
        t.id for t in credited
    ]

    # Cancelled again: not cancellable (it is paid), nothing moves.
    again = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert again.status_code == 409
    assert problem(again)["type"].endswith("/order-not-cancellable")
