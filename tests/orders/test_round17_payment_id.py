"""A provider's payment id names one payment (round 17).

What was wrong: nothing stopped two of our payments from holding the same provider payment id
(`payments.payment_id`). A signed success naming order A's reference and order B's payment id
credited A and wrote B's id on A's payment: a later refund or dispute of B's payment could be
booked on either. Now the database refuses it (`uq_payments_provider_payment_id`, migration
0030, partial: where the id is set) and the code never gets that far: a status naming another
order's payment id changes nothing — no credit, no id written, no refund recorded — and its
notification is kept `unmatched` for finance (the "Matching no order" list), answered 200 with
`Simcharge-Outcome: unmatched`. A provider's answer to our own question naming one (the check,
reconciliation, expiry) leaves the order pending, the reason on the payment (`last_error`),
asked again with backoff. A migration over rows that already break it stops and names them.

Real databases (both), the sandbox provider and its signed webhooks.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.models import Plan
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerTransfer
from simcharge.lifecycle.service import Policy
from simcharge.orders.fulfilment import Outcome, apply_status
from simcharge.orders.models import Order, Payment, ProviderEvent, Refund
from simcharge.payments.providers import PaymentState, PaymentStatus
from simcharge.payments.service import expire_order
from tests.factories import create_account, create_line, load_demo_catalog
from tests.migration_helpers import fresh_database, migrate_to, opened
from tests.orders.helpers import (
    assert_ledger_balanced,
    fulfilled,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    sandbox_id,
    sandbox_object,
    signed_event,
)

BEFORE = "0029_usage_detail_retention"
fresh = fresh_database("payidunique")


async def _payment(db: Database, order_id: str | uuid.UUID) -> Payment:
    async with db.read() as s:
        return (
            await s.execute(select(Payment).where(Payment.order_id == uuid.UUID(str(order_id))))
        ).scalar_one()


async def _event(db: Database, event_id: str) -> ProviderEvent:
    async with db.read() as s:
        return (
            await s.execute(select(ProviderEvent).where(ProviderEvent.event_id == event_id))
        ).scalar_one()


async def _transfers(db: Database) -> int:
    async with db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(LedgerTransfer)) or 0)


async def _deliver(
    client: httpx.AsyncClient, settings: Settings, obj: dict[str, Any]
) -> tuple[httpx.Response, str]:
    body, headers = signed_event(settings, "payment.succeeded", obj)
    event_id = str(json.loads(body)["id"])
    return await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers), event_id


async def test_a_success_naming_another_orders_payment_id_credits_nothing_and_is_unmatched(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    other = await fulfilled(client, settings, payer)  # B: paid, its payment id recorded
    taken = (await _payment(db, other["id"])).payment_id
    assert taken is not None
    order = await place(client, payer)  # A: pending
    row = await order_row(db, order["id"])
    obj = await sandbox_object(db, row.reference, id=taken)  # A's reference, B's payment id
    before = await _transfers(db)

    r, event_id = await _deliver(client, settings, obj)
    assert r.status_code == 200, r.text
    assert r.headers["simcharge-outcome"] == "unmatched"
    row = await order_row(db, order["id"])
    assert (row.state, row.paid_at, row.attention) == ("pending", None, None)
    payment = await _payment(db, order["id"])
    assert (payment.state, payment.payment_id) == ("pending", None)
    assert await _transfers(db) == before  # nothing credited
    event = await _event(db, event_id)
    assert event.outcome == "unmatched" and event.processed_at is not None
    # Finance sees it in the list of notifications matching no order.
    r = await client.get(
        "/api/v1/admin/provider-events", headers=await _finance(db),
    )
    assert r.status_code == 200, r.text
    assert event_id in r.text

    # Delivered again: a duplicate, nothing more.
    body, headers = signed_event(settings, "payment.succeeded", obj, event_id=event_id)
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["simcharge-outcome"] == "duplicate"
    # A's own payment still arrives and is credited as usual.
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    assert (await _payment(db, order["id"])).payment_id == sandbox_id(order)
    assert (await _payment(db, other["id"])).payment_id == taken
    await assert_ledger_balanced(db)


async def _finance(db: Database) -> dict[str, str]:
    from simcharge.auth.apikeys import create_api_key

    issued = await db.run(lambda s: create_api_key(s, "finance", ["reports:read"]))
    return {"Authorization": f"Bearer {issued.token}"}


async def test_news_naming_another_orders_payment_id_never_touches_a_paid_order(
    client: httpx.AsyncClient, db: Database, settings: Settings, app: Any
) -> None:
    """A paid order's status naming B's payment id — a success, or "refunded" — records
    nothing on it (no refund taken from B's news, no id overwritten)."""
    payer = await new_payer(db, settings)
    mine, theirs = [await fulfilled(client, settings, payer) for _ in range(2)]
    taken = (await _payment(db, theirs["id"])).payment_id
    own = (await _payment(db, mine["id"])).payment_id
    assert own is not None and taken is not None and own != taken
    row = await order_row(db, mine["id"])
    r, event_id = await _deliver(
        client, settings, await sandbox_object(db, row.reference, id=taken)
    )
    assert r.status_code == 200 and r.headers["simcharge-outcome"] == "unmatched"
    assert (await _event(db, event_id)).outcome == "unmatched"
    before = await _transfers(db)
    refunded = PaymentStatus(
        PaymentState.refunded, row.reference, taken, taken, row.total, "USD", None, utcnow(),
        {}, refunded_amount=row.total,
    )  # fmt: skip
    policy: Policy = app.state.providers.lifecycle
    outcome = await db.run(
        lambda s: apply_status(
            s, row.id, refunded, source="test", now=utcnow(), policy=policy
        )
    )
    assert outcome is Outcome.unchanged
    after = await order_row(db, mine["id"])
    assert (after.state, after.refunded_amount, after.attention) == ("fulfilled", 0, None)
    assert (await _payment(db, mine["id"])).payment_id == own
    async with db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Refund)) == 0
    assert await _transfers(db) == before
    await assert_ledger_balanced(db)


async def test_an_answer_naming_another_orders_payment_id_leaves_the_order_pending(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Our own data holding the id on another order's payment (written before the index, or
    by hand): the provider's answer about A is not applied — the check answers 200, pending,
    the reason on A's payment — and expiry does not ask again at every pass."""
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    holder = await place(client, payer)
    paid_as = sandbox_id(order)
    await db.run(
        lambda s: s.execute(
            update(Payment)
            .where(Payment.order_id == uuid.UUID(holder["id"]))
            .values(payment_id=paid_as)
        )
    )
    await pay_at_sandbox(client, settings, order)  # the webhook is lost
    before = await _transfers(db)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "pending"
    payment = await _payment(db, order["id"])
    assert payment.state == "pending" and payment.payment_id is None
    assert payment.last_error is not None
    assert paid_as in payment.last_error and holder["id"] in payment.last_error
    assert payment.next_check_at is not None and payment.next_check_at > utcnow()
    assert await _transfers(db) == before

    # Past its time: expiry finds it paid (not closed), refused again, asked later.
    clock.freeze(utcnow() + timedelta(minutes=settings.order_ttl_minutes + 1))
    await expire_order(db, app.state.providers, uuid.UUID(order["id"]))
    row = await order_row(db, order["id"])
    assert (row.state, row.paid_at) == ("pending", None)
    payment = await _payment(db, order["id"])
    assert payment.next_check_at is not None and payment.next_check_at > utcnow()
    assert paid_as in (payment.last_error or "")
    assert await _transfers(db) == before
    await assert_ledger_balanced(db)


async def test_the_database_refuses_a_second_payment_with_the_same_id(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    one, two = [await place(client, payer) for _ in range(2)]

    async def both(s: AsyncSession) -> None:
        await s.execute(
            update(Payment)
            .where(Payment.order_id.in_([uuid.UUID(one["id"]), uuid.UUID(two["id"])]))
            .values(payment_id="pi_same")
        )

    with pytest.raises(IntegrityError):
        await db.run(both)
    # Unset, as many pending payments are: no conflict.
    async with db.read() as s:
        unset = await s.scalar(
            select(func.count()).select_from(Payment).where(Payment.payment_id.is_(None))
        )
    assert unset == 2


async def _two_orders(url: str) -> list[uuid.UUID]:
    """Two orders with payments, their payment ids `pi_one` and `pi_two`."""
    async with opened(url) as db:

        async def run(s: AsyncSession) -> list[uuid.UUID]:
            await load_demo_catalog(s)
            account = await create_account(s)
            line = await create_line(s, account_id=account.id)
            plan = (await s.execute(select(Plan).limit(1))).scalar_one()
            ids = []
            for n in ("one", "two"):
                order = Order(
                    reference=f"T{uuid.uuid4().hex[:12].upper()}", account_id=account.id,
                    line_id=line.id, msisdn=line.msisdn, plan_id=plan.id, plan_code=plan.code,
                    plan_version=1, plan_snapshot={}, method_code="sandbox", provider="sandbox",
                    currency="USD", price=1000, fee=0, total=1000,
                    expires_at=utcnow() + timedelta(minutes=30),
                )  # fmt: skip
                s.add(order)
                await s.flush()
                s.add(Payment(order_id=order.id, provider="sandbox", flow="redirect",
                              provider_ref=f"sbx_{n}", payment_id=f"pi_{n}"))
                ids.append(order.id)
            await s.flush()
            return ids

        return await db.run(run)


async def test_the_migration_names_existing_duplicates_and_then_makes_the_index(
    fresh: str,
) -> None:
    one, two = await _two_orders(fresh)
    await migrate_to(fresh, BEFORE)
    async with opened(fresh) as db:
        await db.run(
            lambda s: s.execute(
                update(Payment).where(Payment.order_id == two).values(payment_id="pi_one")
            )
        )
    with pytest.raises(RuntimeError) as refused:
        await migrate_to(fresh)
    message = str(refused.value)
    assert "sandbox pi_one (2 payments)" in message and "docstring" in message
    # Settled by hand as the message says: the upgrade goes through.
    async with opened(fresh) as db:
        await db.run(
            lambda s: s.execute(
                update(Payment).where(Payment.order_id == two).values(payment_id=None)
            )
        )
    await migrate_to(fresh)
    async with opened(fresh) as db:
        with pytest.raises(IntegrityError):
            await db.run(
                lambda s: s.execute(
                    update(Payment).where(Payment.order_id == two).values(payment_id="pi_one")
                )
            )
    # And down again: the index goes, the rows stay.
    await migrate_to(fresh, BEFORE)
    async with opened(fresh) as db:
        await db.run(
            lambda s: s.execute(
                update(Payment).where(Payment.order_id == two).values(payment_id="pi_one")
            )
        )
        async with db.read() as s:
            same = await s.scalar(
                select(func.count()).select_from(Payment).where(Payment.payment_id == "pi_one")
            )
    assert same == 2 and one != two
