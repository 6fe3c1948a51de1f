"""Orders that are not paid: cancelled by the payer or expired — closed at the provider first."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.orders.models import Payment, SandboxPayment
from simcharge.payments.service import reconcile
from tests.auth.helpers import problem
from tests.orders.helpers import (
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    transfers_of,
)


async def _sandbox_state(db: Database, reference: str) -> str:
    async with db.read() as s:
        return str((await s.execute(select(SandboxPayment.state).where(
            SandboxPayment.reference == reference))).scalar_one())


async def test_cancel_closes_at_the_provider_first(client: httpx.AsyncClient, db: Database,
                                                   settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert r.status_code == 200
    assert r.json()["state"] == "cancelled"
    row = await order_row(db, order["id"])
    assert await _sandbox_state(db, row.reference) == "cancelled"
    # Nothing left to pay on the hosted page.
    paid = await pay_at_sandbox(client, settings, order)
    assert "/sandbox/pay/" in paid.headers["location"]
    again = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert again.status_code == 409
    assert problem(again)["type"].endswith("/order-not-cancellable")


async def test_cancelling_an_order_paid_meanwhile_credits_it(client: httpx.AsyncClient,
                                                             db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)  # no webhook has arrived yet
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert r.status_code == 409
    assert problem(r)["type"].endswith("/order-already-paid")
    assert (await order_row(db, order["id"])).state == "fulfilled"


async def test_reconciliation_expires_overdue_orders_after_closing_them(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    clock.freeze(utcnow() + timedelta(minutes=settings.order_ttl_minutes + 1))
    assert await reconcile(db, app.state.providers) == 1
    row = await order_row(db, order["id"])
    assert row.state == "expired" and row.closed_at is not None
    assert await _sandbox_state(db, row.reference) == "cancelled"
    assert await transfers_of(db, f"order:{row.id}") == []


async def test_an_overdue_order_that_was_paid_is_credited_not_expired(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)  # the webhook is lost
    clock.freeze(utcnow() + timedelta(minutes=settings.order_ttl_minutes + 1))
    await reconcile(db, app.state.providers)
    row = await order_row(db, order["id"])
    assert row.state == "fulfilled" and row.attention is None


async def test_reconciliation_asks_again_with_backoff(app: Any, client: httpx.AsyncClient,
                                                      db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    seen = []
    for minutes in (2, 4, 8, 16):
        clock.freeze(row.created_at + timedelta(minutes=minutes))
        await reconcile(db, app.state.providers)
        async with db.read() as s:
            payment = (await s.execute(select(Payment).where(Payment.order_id == row.id))).scalar_one()
        seen.append((payment.checks, payment.next_check_at))
    checks = [c for c, _ in seen]
    assert checks == sorted(checks) and checks[-1] >= 3
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(seen) if a and b]
    assert all(g >= timedelta(minutes=1) for g in gaps)
    # Paid now: the next due check finds it.
    await pay_at_sandbox(client, settings, order)
    clock.freeze(utcnow() + timedelta(hours=1))
    await reconcile(db, app.state.providers)
    assert (await order_row(db, order["id"])).state == "fulfilled"


async def test_the_worker_runs_reconciliation(app: Any, client: httpx.AsyncClient, db: Database,
                                              settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    clock.freeze(utcnow() + timedelta(hours=2))
    from simcharge.payments.jobs import reconcile_payments  # noqa: F401 - registered

    worker_app = app
    from tests.orders.helpers import worker_for

    worker = worker_for(worker_app, db, settings, concurrency=8)
    try:
        await worker.run_once()
        await worker.drain()
    finally:
        await worker.http.aclose()
        await worker.close()
    assert (await order_row(db, order["id"])).state == "expired"
    await run_worker(app, db, settings)
