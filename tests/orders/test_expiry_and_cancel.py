"""Orders that are not paid: cancelled by the payer or expired — closed at the provider first."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.orders.fulfilment import LATE_CHECK_FIRST, LATE_PAYMENT_WINDOW, Outcome
from simcharge.orders.models import Order, Payment, SandboxPayment
from simcharge.payments.service import check_order, reconcile
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


async def _payment(db: Database, order_id: Any) -> Payment:
    async with db.read() as s:
        return (await s.execute(select(Payment).where(Payment.order_id == order_id))).scalar_one()


async def _paid_at_the_provider_after_all(db: Database, reference: str) -> None:
    """The provider took the payment although we had closed it (a payment at the last moment,
    a close that did not hold); its webhook is lost."""
    await db.run(lambda s: s.execute(update(SandboxPayment).where(
        SandboxPayment.reference == reference).values(state="paid", paid_at=utcnow())))


async def test_the_next_check_is_never_later_than_the_expiry(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The backoff would ask again after the order's time: it asks at its expiry instead, and
    the order is closed at the provider and expired on time."""
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    # Asked four times already: the next wait would be 16 minutes, 10 are left.
    await db.run(lambda s: s.execute(update(Payment).where(Payment.order_id == row.id)
                                     .values(checks=4)))
    clock.freeze(row.expires_at - timedelta(minutes=10))
    await db.run(lambda s: s.execute(update(Payment).where(Payment.order_id == row.id)
                                     .values(next_check_at=utcnow())))
    assert await reconcile(db, app.state.providers) == 1
    assert (await _payment(db, row.id)).next_check_at == row.expires_at
    clock.freeze(row.expires_at)
    assert await reconcile(db, app.state.providers) == 1
    expired = await order_row(db, row.id)
    assert expired.state == "expired" and expired.closed_at == row.expires_at
    assert await _sandbox_state(db, row.reference) == "cancelled"


async def test_a_payment_found_after_expiry_is_credited_and_flagged(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The webhook is lost; reconciliation asks again after closing and finds the payment."""
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    clock.freeze(row.expires_at)
    await reconcile(db, app.state.providers)
    assert (await order_row(db, row.id)).state == "expired"
    assert (await _payment(db, row.id)).next_check_at == row.expires_at + LATE_CHECK_FIRST
    await _paid_at_the_provider_after_all(db, row.reference)
    clock.freeze(row.expires_at + LATE_CHECK_FIRST)
    assert await reconcile(db, app.state.providers) == 1
    late = await order_row(db, row.id)
    assert (late.state, late.attention) == ("fulfilled", "late_success")
    assert "late_check" in (late.attention_note or "")
    assert len(await transfers_of(db, f"order:{row.id}")) == 4
    assert (await _payment(db, row.id)).next_check_at is None


async def test_check_now_finds_a_payment_made_just_before_cancelling(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert r.json()["state"] == "cancelled"
    await _paid_at_the_provider_after_all(db, order["reference"])
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.status_code == 200 and r.json()["state"] == "fulfilled"
    assert (await order_row(db, order["id"])).attention == "late_success"


async def test_closed_orders_are_asked_about_for_an_hour_then_never(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    row = await order_row(db, order["id"])
    clock.freeze(row.expires_at)
    await reconcile(db, app.state.providers)
    closed_at = (await order_row(db, row.id)).closed_at
    assert closed_at is not None
    end = closed_at + LATE_PAYMENT_WINDOW
    seen = []
    for _ in range(10):
        due = (await _payment(db, row.id)).next_check_at
        if due is None:
            break
        assert due <= end
        seen.append(due)
        clock.freeze(due)
        assert await reconcile(db, app.state.providers) == 1
    assert seen[0] == closed_at + LATE_CHECK_FIRST and seen[-1] == end
    assert len(seen) <= 6 and (await _payment(db, row.id)).next_check_at is None
    clock.freeze(end + timedelta(days=1))
    assert await reconcile(db, app.state.providers) == 0


async def test_after_the_hour_only_staff_ask_about_a_closed_order(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    r = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=payer.auth)
    assert r.json()["state"] == "cancelled"
    long_ago = utcnow() - LATE_PAYMENT_WINDOW - timedelta(minutes=1)
    await db.run(lambda s: s.execute(update(Order).where(Order.reference == order["reference"])
                                     .values(closed_at=long_ago)))
    await _paid_at_the_provider_after_all(db, order["reference"])
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"  # not asked
    # Staff's "check with provider" asks about any order, and finds it.
    outcome = await check_order(db, app.state.providers, uuid.UUID(order["id"]), source="staff")
    assert outcome is Outcome.fulfilled
    late = await order_row(db, order["id"])
    assert (late.state, late.attention) == ("fulfilled", "late_success")


async def test_the_portals_buttons_find_a_payment_made_just_before_cancelling(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """"Check again" and "Paid but not credited?" on the order's page ask the provider within
    the late-payment window too, as the API's check does: no ticket needed."""
    from tests.portal.helpers import new_customer, portal_order, post_form, sign_in

    customer = await new_customer(db, settings)
    sign_in(client, customer)
    for button in ("check", "help"):
        order_id, _ = await portal_order(client, customer.line.id, plan="starter-10")
        page = f"/account/orders/{order_id}"
        r = await post_form(client, page, f"{page}/cancel", {})
        assert (await order_row(db, str(order_id))).state == "cancelled"
        reference = (await order_row(db, str(order_id))).reference
        await _paid_at_the_provider_after_all(db, reference)
        r = await post_form(client, page, f"{page}/{button}", {})
        assert r.status_code == 303 and r.headers["location"] == page, button
        late = await order_row(db, str(order_id))
        assert (late.state, late.attention) == ("fulfilled", "late_success"), button
