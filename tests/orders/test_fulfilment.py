"""Paying, and being credited exactly once whatever arrives, however often, in whatever order."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import line_balances
from simcharge.notifications.models import Notice
from simcharge.orders.models import Payment, ProviderEvent, SandboxPayment
from simcharge.payments.sandbox import DELIVER_WEBHOOK
from simcharge.payments.service import reconcile
from simcharge.worker.models import OutboxJob
from tests.conftest import SmtpInbox
from tests.orders.helpers import (
    assert_ledger_balanced,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    sandbox_object,
    signed_event,
    transfers_of,
)


async def _balances(db: Database, line_id: Any) -> dict[str, int]:
    async with db.read() as s:
        line = await s.get(Line, line_id)
        assert line is not None
        b = await line_balances(s, line)
    return {u.unit: u.remaining for u in b.units} | {"wallet": b.wallet.available}


async def test_pay_return_and_webhooks_credit_once(app: Any, client: httpx.AsyncClient,
                                                   db: Database, settings: Settings,
                                                   inbox: SmtpInbox) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    paid = await pay_at_sandbox(client, settings, order)
    assert paid.status_code == 303
    assert paid.headers["location"] == f"http://testserver/api/v1/orders/{order['id']}/return"

    # The payer comes back: the provider is asked (the query string is not trusted).
    back = await client.get(f"/api/v1/orders/{order['id']}/return?state=anything",
                            headers=payer.auth)
    assert back.status_code == 303
    assert back.headers["location"] == f"/account/orders/{order['id']}"
    row = await order_row(db, order["id"])
    assert row.state == "fulfilled" and row.receipt_number is None  # numbered when issued

    # Then the webhooks arrive ("processing" and "succeeded"), and the receipt goes out.
    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert row.receipt_number is not None
    detail = (await client.get(f"/api/v1/orders/{order['id']}", headers=payer.auth)).json()
    assert detail["state"] == "fulfilled"
    assert detail["next_action"] == {"type": "none", "url": None, "qr_payload": None,
                                     "qr_svg": None}
    types = sorted(e["type"] for e in detail["events"])
    assert types == ["payment.processing", "payment.succeeded"]
    assert {e["outcome"] for e in detail["events"]} <= {"already", "unchanged"}

    balances = await _balances(db, payer.line.id)
    assert balances["VOICE_S"] == 250 * 60
    assert balances["DATA_B"] == 3 * 1024**3
    assert balances["SMS"] == 50
    money = await transfers_of(db, f"order:{order['id']}")
    assert sum(t.amount for t in money if t.unit == "USD") == 2000
    await assert_ledger_balanced(db)

    mails = inbox.to(payer.email)
    assert len(mails) == 1
    mail = mails[0]
    assert row.receipt_number in mail["Subject"]
    attachments = [p for p in mail.iter_attachments()]
    assert [a.get_filename() for a in attachments] == [f"receipt-{row.receipt_number}.pdf"]
    assert attachments[0].get_content().startswith(b"%PDF")
    async with db.read() as s:
        notices = (await s.execute(select(Notice.template).where(
            Notice.account_id == payer.account_id))).scalars().all()
    assert "order.fulfilled" in notices


async def test_duplicated_and_reordered_webhooks_credit_once(app: Any, client: httpx.AsyncClient,
                                                             db: Database, settings: Settings) -> None:
    noisy = settings.model_copy(update={"sandbox_webhook_copies": 4})
    app.state.settings = noisy
    app.state.providers.settings = noisy
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, noisy, order)
    await run_worker(app, db, noisy)
    row = await order_row(db, order["id"])
    assert row.state == "fulfilled"
    async with db.read() as s:
        events = (await s.execute(select(func.count()).select_from(ProviderEvent).where(
            ProviderEvent.order_id == row.id))).scalar_one()
    assert events == 2  # four copies of each of two events, stored once each
    assert len(await transfers_of(db, f"order:{order['id']}")) == 1 + 3  # the sale, three buckets
    assert (await _balances(db, payer.line.id))["SMS"] == 20


async def test_every_path_at_once_credits_once(app: Any, client: httpx.AsyncClient, db: Database,
                                               settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="explorer-50")
    await pay_at_sandbox(client, settings, order)
    row = await order_row(db, order["id"])
    body, headers = signed_event(settings, "payment.succeeded",
                                 await sandbox_object(db, row.reference))
    providers = app.state.providers
    results = await asyncio.gather(
        client.post("/api/v1/webhooks/sandbox", content=body, headers=headers),
        client.post("/api/v1/webhooks/sandbox", content=body, headers=headers),
        client.get(f"/api/v1/orders/{order['id']}/return", headers=payer.auth),
        client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth),
        reconcile(db, providers),
        run_worker(app, db, settings),
    )
    assert all(r.status_code < 400 for r in results if isinstance(r, httpx.Response))
    await run_worker(app, db, settings)
    balances = await _balances(db, payer.line.id)
    assert balances["wallet"] == 500
    assert balances["SMS"] == 100
    assert len(await transfers_of(db, f"order:{order['id']}")) == 1 + 3 + 1
    assert (await order_row(db, order["id"])).state == "fulfilled"
    await assert_ledger_balanced(db)


async def test_check_now_finds_a_payment_whose_webhook_is_late(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.status_code == 200
    assert r.json()["state"] == "fulfilled"


async def test_a_declined_payment_fails_the_order(app: Any, client: httpx.AsyncClient,
                                                  db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    r = await pay_at_sandbox(client, settings, order, "fail")
    assert r.status_code == 303
    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert row.state == "failed" and row.paid_at is None
    assert await transfers_of(db, f"order:{order['id']}") == []
    # The hosted page no longer takes a payment.
    again = await pay_at_sandbox(client, settings, order)
    assert again.status_code == 303 and "/sandbox/pay/" in again.headers["location"]


async def test_the_sandbox_page_refuses_a_forged_form(client: httpx.AsyncClient, db: Database,
                                                      settings: Settings) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    sid = order["next_action"]["url"].rsplit("/", 1)[-1]
    r = await client.post(f"/sandbox/pay/{sid}", data={"action": "pay", "token": "forged"})
    assert r.status_code == 404
    async with db.read() as s:
        state = (await s.execute(select(SandboxPayment.state).where(
            SandboxPayment.id == sid))).scalar_one()
    assert state == "open"
    assert (await client.get("/sandbox/pay/sbx_nothing")).status_code == 404


async def test_a_gift_is_credited_to_the_friend_and_tells_them(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    friend = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10", msisdn=friend.line.msisdn)
    assert order["gift"] is True
    await pay_at_sandbox(client, settings, order)
    await client.get(f"/api/v1/orders/{order['id']}/return", headers=payer.auth)
    await run_worker(app, db, settings)
    assert (await _balances(db, friend.line.id))["SMS"] == 20
    assert "SMS" not in await _balances(db, payer.line.id)
    async with db.read() as s:
        gifts = (await s.execute(select(Notice.template).where(
            Notice.account_id == friend.account_id))).scalars().all()
    assert "line.gift_received" in gifts
    # The order is the payer's, not the friend's.
    assert (await client.get(f"/api/v1/orders/{order['id']}", headers=friend.auth)).status_code == 404
    mine = (await client.get("/api/v1/orders", headers=payer.auth)).json()["items"]
    assert [o["id"] for o in mine] == [order["id"]]
    assert (await client.get("/api/v1/orders", headers=friend.auth)).json()["items"] == []


async def test_a_top_up_extends_validity_and_reactivates_the_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings, line_state=LineState.grace)
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    async with db.read() as s:
        line = await s.get(Line, payer.line.id)
        assert line is not None
    assert line.state == "active"
    assert line.validity_end is not None
    assert line.validity_end - utcnow() > timedelta(days=29)


async def test_orders_of_others_are_not_found(client: httpx.AsyncClient, db: Database,
                                              settings: Settings) -> None:
    payer = await new_payer(db, settings)
    stranger = await new_payer(db, settings)
    order = await place(client, payer)
    for method, path in [("GET", ""), ("POST", "/cancel"), ("POST", "/check"), ("GET", "/receipt")]:
        r = await client.request(method, f"/api/v1/orders/{order['id']}{path}",
                                 headers=stranger.auth)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["type"].endswith("/order-not-found")
    assert (await order_row(db, order["id"])).state == "pending"


async def test_only_the_payer_coming_back_makes_us_ask_the_provider(
        client: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    payer = await new_payer(db, settings)
    stranger = await new_payer(db, settings)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    # Anyone who knows the order's id lands on its page (which asks them to sign in), but only
    # its payer's return asks the provider: no one else makes us call it.
    for auth in ({}, stranger.auth):
        r = await client.get(f"/api/v1/orders/{order['id']}/return", headers=auth)
        assert r.status_code == 303 and r.headers["location"] == f"/account/orders/{order['id']}"
        row = await order_row(db, order["id"])
        assert row.state == "pending"
        async with db.read() as s:
            checks = (await s.execute(select(Payment.checks).where(
                Payment.order_id == uuid.UUID(order["id"])))).scalar_one()
        assert checks == 0
    r = await client.get(f"/api/v1/orders/{order['id']}/return", headers=payer.auth)
    assert r.status_code == 303
    assert (await order_row(db, order["id"])).state == "fulfilled"


async def test_listing_pages_through_my_orders(client: httpx.AsyncClient, db: Database,
                                               settings: Settings) -> None:
    payer = await new_payer(db, settings)
    ids = []
    for _ in range(3):
        ids.append((await place(client, payer, plan="starter-10"))["id"])
        clock.freeze(utcnow() + timedelta(seconds=1))
    first = (await client.get("/api/v1/orders?limit=2", headers=payer.auth)).json()
    assert [o["id"] for o in first["items"]] == ids[:0:-1]
    rest = (await client.get("/api/v1/orders", headers=payer.auth,
                             params={"limit": 2, "before": first["next_before"]})).json()
    assert [o["id"] for o in rest["items"]] == ids[:1]
    assert rest["next_before"] is None
    pending = (await client.get("/api/v1/orders?state=fulfilled", headers=payer.auth)).json()
    assert pending["items"] == []
    bad = await client.get("/api/v1/orders?limit=0", headers=payer.auth)
    assert bad.status_code == 422


@pytest.mark.parametrize("action", ["fail", "cancel"])
async def test_nothing_is_credited_for_an_unpaid_order(app: Any, client: httpx.AsyncClient,
                                                       db: Database, settings: Settings,
                                                       action: str) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order, action)
    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert row.state == {"fail": "failed", "cancel": "cancelled"}[action]
    assert await transfers_of(db, f"order:{order['id']}") == []


async def test_delayed_and_reordered_webhooks_credit_once(app: Any, client: httpx.AsyncClient,
                                                          db: Database, settings: Settings) -> None:
    """The sandbox sends each webhook twice, each copy after its own delay. Here the network
    delays them so: the success first, then the "processing" sent before it, then the
    success's copy — delivered by the worker, in that order, as time passes."""
    slow = settings.model_copy(update={"sandbox_webhook_copies": 2,
                                       "sandbox_webhook_max_delay_seconds": 120})
    app.state.settings = slow
    app.state.providers.settings = slow
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    start = utcnow()
    clock.freeze(start)
    await pay_at_sandbox(client, slow, order)
    async with db.read() as s:
        jobs = (await s.execute(select(OutboxJob).where(
            OutboxJob.kind == DELIVER_WEBHOOK))).scalars().all()
    kinds = sorted(j.payload["event"]["type"] for j in jobs)
    assert kinds == ["payment.processing"] * 2 + ["payment.succeeded"] * 2
    assert all(start <= j.run_at <= start + timedelta(seconds=120) for j in jobs)
    delays = {"payment.succeeded": [10, 90], "payment.processing": [40, 60]}
    for job in jobs:
        seconds = delays[job.payload["event"]["type"]].pop()
        await db.run(lambda s, j=job.id, d=seconds: s.execute(
            update(OutboxJob).where(OutboxJob.id == j).values(run_at=start + timedelta(seconds=d))))

    seen: list[tuple[str, str | None]] = []
    for second in (10, 40, 60, 90):
        clock.freeze(start + timedelta(seconds=second))
        await run_worker(app, db, slow)
        async with db.read() as s:
            events = (await s.execute(select(ProviderEvent).where(
                ProviderEvent.order_id == uuid.UUID(order["id"])).order_by(
                ProviderEvent.received_at))).scalars().all()
        seen = [(e.event_type, e.outcome) for e in events]
        if second == 10:
            assert seen == [("payment.succeeded", "fulfilled")]
    # The late "processing" changed nothing; the success's copy was a duplicate (not stored).
    assert seen == [("payment.succeeded", "fulfilled"), ("payment.processing", "unchanged")]
    row = await order_row(db, order["id"])
    assert row.state == "fulfilled"
    assert len(await transfers_of(db, f"order:{order['id']}")) == 1 + 3
    assert (await _balances(db, payer.line.id))["SMS"] == 20
    await assert_ledger_balanced(db)
