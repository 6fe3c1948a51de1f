"""The chaos checker tells the truth: a state that breaks a promise is reported, however
consistent the rest of the books are.

Each test builds the same clean world (one explorer-50 order — wallet credit and three buckets —
paid at the sandbox and credited by its webhook, one starter-10 order placed and never paid),
breaks one promise while every stored balance still equals its transfers and every unit still
sums to zero (so `ledger verify` alone sees nothing), and requires `verify()` to name it. A
failing test is a hole in the checker: `make chaos` would stay green on a build that does this.
(PostgreSQL only: the checker reads the database a chaos run leaves.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from chaos.checks import verify
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger.service import NewTransfer, post_transfers
from simcharge.orders.models import Refund
from tests.factories import load_demo_catalog
from tests.orders.helpers import (
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
)

pytestmark = pytest.mark.postgres_only


@dataclass
class World:
    db: Database
    app: Any
    client: httpx.AsyncClient
    settings: Settings
    paid: str
    unpaid: str
    wallet: uuid.UUID
    line: uuid.UUID


@pytest.fixture
async def world(fresh_db: Database, settings: Settings) -> AsyncIterator[World]:
    await fresh_db.run(load_demo_catalog)
    app: Any = create_app(settings, db=fresh_db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        payer = await new_payer(fresh_db, settings)
        paid = await place(client, payer, plan="explorer-50")
        assert (await pay_at_sandbox(client, settings, paid)).status_code == 303
        unpaid = await place(client, payer, plan="starter-10")
        await run_worker(app, fresh_db, settings)
        assert (await order_row(fresh_db, paid["id"])).state == "fulfilled"
        async with fresh_db.read() as s:
            wallet = (
                await s.execute(
                    text("SELECT id FROM ledger_accounts WHERE line_id = :line AND unit = 'USD'"),
                    {"line": payer.line.id},
                )
            ).scalar_one()
        w = World(fresh_db, app, client, settings, paid["id"], unpaid["id"], wallet,
                  payer.line.id)
        assert (await verify(fresh_db, min_paid=1)).violations == []
        yield w


async def _violations(world: World, **kw: Any) -> list[str]:
    return (await verify(world.db, min_paid=1, **kw)).violations


async def _sql(world: World, statement: str, **params: Any) -> None:
    async def run(s: AsyncSession) -> None:
        await s.execute(text(statement), params)

    await world.db.run(run)


async def _sale(s: AsyncSession, order: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The clearing and sales accounts of an order's sale."""
    clearing, sales = (
        await s.execute(
            text(
                "SELECT debit_account_id, credit_account_id FROM ledger_transfers"
                " WHERE reference = :ref AND code = 'topup'"
                " AND debit_account_id IN (SELECT id FROM ledger_accounts WHERE code = 'clearing')"
            ),
            {"ref": f"order:{order}"},
        )
    ).one()
    return clearing, sales


async def _refund(world: World, amount: int | None) -> None:
    """Finance refunds `amount` (None: all that is left) of the paid order, as in a chaos run."""
    key = await world.db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    body: dict[str, Any] = {"reason": "test"}
    if amount is not None:
        body["amount"] = amount
    r = await world.client.post(
        f"/api/v1/admin/orders/{world.paid}/refunds",
        headers={"Authorization": f"Bearer {key.token}", **idem()}, json=body,
    )
    assert r.status_code == 202, r.text
    await run_worker(world.app, world.db, world.settings)


async def test_refunds_done_right_are_not_violations(world: World) -> None:
    """Requirement: a correct refund — part, then the rest, each posted as the provider
    refunded it — leaves the checker silent (no false alarm on refunded orders)."""
    await _refund(world, 100)
    assert await _violations(world) == []
    await _refund(world, None)
    assert (await order_row(world.db, world.paid)).state == "refunded"
    assert await _violations(world) == []


async def test_wallet_and_buckets_credited_twice_is_reported(world: World) -> None:
    """Requirement (promise 1, exactly once): every transfer naming a credited order matches its
    plan snapshot — one wallet credit and one grant per bucket, of the plan's amounts — and no
    line account receives an order's credit twice. Here the customer's side (wallet and every
    bucket) is posted twice, the sale once: balanced, balances consistent, yet two top-ups."""

    async def again(s: AsyncSession) -> int:
        rows = (
            await s.execute(
                text(
                    "SELECT t.amount, t.unit, t.debit_account_id, t.credit_account_id, t.code,"
                    " t.reference FROM ledger_transfers t"
                    " JOIN ledger_accounts a ON a.id = t.credit_account_id"
                    " WHERE t.reference = :ref AND a.line_id IS NOT NULL"
                ),
                {"ref": f"order:{world.paid}"},
            )
        ).all()
        await post_transfers(
            s,
            [
                NewTransfer(uuid7(), amount, unit, debit, credit, code=code, reference=ref)
                for amount, unit, debit, credit, code, ref in rows
            ],
        )
        return len(rows)

    assert await world.db.run(again) >= 4  # wallet + voice + data + sms
    found = await _violations(world)
    assert f"line account {world.wallet} credited 2 times" in " ".join(found), found
    assert any(v.startswith(f"order {world.paid}: wallet credited [") for v in found), found
    assert any(v.startswith(f"order {world.paid}: buckets granted [") for v in found), found


async def test_credit_with_no_provider_record_is_reported(world: World) -> None:
    """Requirement (no credit without capture): an order the provider has no payment for at all
    is unpaid, and any booking or credit of it is a violation — it must not drop out of the
    check (the provider's table is LEFT JOINed)."""

    async def credit_unpaid(s: AsyncSession) -> None:
        ref, price, currency = (
            await s.execute(
                text("SELECT reference, price, currency FROM orders WHERE id = :id"),
                {"id": uuid.UUID(world.unpaid)},
            )
        ).one()
        await s.execute(text("DELETE FROM sandbox_payments WHERE reference = :r"), {"r": ref})
        await s.execute(
            text("UPDATE orders SET state = 'fulfilled' WHERE id = :id"),
            {"id": uuid.UUID(world.unpaid)},
        )
        clearing, sales = await _sale(s, world.paid)
        await post_transfers(
            s,
            [NewTransfer(uuid7(), price, currency, clearing, sales, code="topup",
                         reference=f"order:{world.unpaid}")],
        )

    await world.db.run(credit_unpaid)
    found = await _violations(world)
    assert f"order {world.unpaid}: no payment at the provider but fulfilled" in found, found
    assert f"order {world.unpaid}: not paid but booked 1 time(s)" in found, found


async def test_refunds_exceeding_the_capture_are_reported(world: World) -> None:
    """Requirement (refunds never exceed captures): per order, the refund money the ledger
    posted equals what the provider refunded, and the order says the same; a ledger transfer
    for a refund that does not exist is a violation. Here the ledger gives back three times
    the sale and the order says so, while the provider refunded nothing."""
    bogus = uuid.uuid4()

    async def over_refund(s: AsyncSession) -> None:
        price, total = (
            await s.execute(
                text("SELECT price, total FROM orders WHERE id = :id"),
                {"id": uuid.UUID(world.paid)},
            )
        ).one()
        clearing, sales = await _sale(s, world.paid)
        await post_transfers(
            s,
            [NewTransfer(uuid7(), 3 * price, "USD", sales, clearing, code="sale",
                         reference=f"refund:{bogus}")],
        )
        await s.execute(
            text("UPDATE orders SET state = 'refunded', refunded_amount = :r WHERE id = :id"),
            {"r": 3 * total, "id": uuid.UUID(world.paid)},
        )

    await world.db.run(over_refund)
    found = await _violations(world)
    assert f"ledger: 1 transfer(s) for refund {bogus}, which does not exist" in found, found
    assert any(
        v.startswith(f"order {world.paid}: says ") and v.endswith("the provider refunded 0")
        for v in found
    ), found


async def test_a_refund_posted_but_not_made_at_the_provider_is_reported(world: World) -> None:
    """Requirement: the ledger's posted refund money for an order equals what the sandbox
    refunded. Here a real refund completes, then the provider's record forgets it."""
    await _refund(world, 100)
    await _sql(
        world,
        "UPDATE sandbox_payments SET refunded = 0, refunds = '{}' WHERE reference ="
        " (SELECT reference FROM orders WHERE id = :id)",
        id=uuid.UUID(world.paid),
    )
    found = await _violations(world)
    assert f"order {world.paid}: the ledger gave back 100, the provider refunded 0" in found


async def test_the_provider_refunding_more_than_it_captured_is_reported(world: World) -> None:
    """Requirement: what the provider refunded never exceeds what it captured."""
    await _sql(
        world,
        "UPDATE sandbox_payments SET refunded = amount + 1 WHERE reference ="
        " (SELECT reference FROM orders WHERE id = :id)",
        id=uuid.UUID(world.paid),
    )
    found = await _violations(world)
    assert any(
        v.startswith(f"order {world.paid}: the provider refunded ") and v.endswith(" captured")
        for v in found
    ), found


async def test_a_failed_refund_is_reported(world: World) -> None:
    """Requirement: a refund in state `failed` is a violation (sandbox refunds never fail)."""
    refund_id = uuid7()

    async def failed(s: AsyncSession) -> None:
        s.add(Refund(id=refund_id, order_id=uuid.UUID(world.paid), reference="RFTEST",
                     amount=100, currency="USD", state="failed", requested_by="test"))

    await world.db.run(failed)
    found = await _violations(world)
    assert (
        f"order {world.paid}: refund {refund_id} failed (sandbox refunds never fail)" in found
    ), found


async def test_booked_amount_differs_from_captured_amount_is_reported(world: World) -> None:
    """Requirement: the provider captured the order's total in its currency, and what left the
    provider's clearing account for the order equals what was captured. Here the sandbox took
    1 cent and the order was credited in full (the amount-mismatch policy bypassed)."""
    await _sql(
        world,
        "UPDATE sandbox_payments SET amount = 1 WHERE reference ="
        " (SELECT reference FROM orders WHERE id = :id)",
        id=uuid.UUID(world.paid),
    )
    found = await _violations(world)
    assert any(v.startswith(f"order {world.paid}: the provider captured 1 USD") for v in found)
    assert any(v.endswith("from the provider's clearing account for 1 captured") for v in found)


async def test_negative_customer_wallet_without_its_bound_flag_is_reported(world: World) -> None:
    """Requirement (no negative customer balance): the check does not trust the account's own
    flag — every account a line holds (wallet, bucket) must carry the bound and respect it
    (debits posted + pending <= credits posted). Here a wallet opened without the flag spends
    past zero."""

    async def overspend(s: AsyncSession) -> None:
        await s.execute(
            text("UPDATE ledger_accounts SET debits_must_not_exceed_credits = false WHERE id = :w"),
            {"w": world.wallet},
        )
        funding = (
            await s.execute(
                text("SELECT debit_account_id FROM ledger_transfers WHERE credit_account_id = :w"),
                {"w": world.wallet},
            )
        ).scalars().first()
        balance = (
            await s.execute(
                text("SELECT credits_posted - debits_posted FROM ledger_accounts WHERE id = :w"),
                {"w": world.wallet},
            )
        ).scalar_one()
        await post_transfers(
            s,
            [NewTransfer(uuid7(), balance + 10_000, "USD", world.wallet, funding,
                         code="usage", reference="review")],
        )

    await world.db.run(overspend)
    found = await _violations(world)
    assert f"line account {world.wallet} (wallet): overdrawn by 10000" in found, found
    assert (
        f"line account {world.wallet} (wallet): debits may exceed credits (no bound)" in found
    ), found


async def test_a_line_account_without_its_bound_is_reported(world: World) -> None:
    """Requirement: a customer's account without the bound is a violation even before it is
    overdrawn (nothing would stop it)."""
    await _sql(
        world,
        "UPDATE ledger_accounts SET debits_must_not_exceed_credits = false WHERE id = :w",
        w=world.wallet,
    )
    assert await _violations(world) == [
        f"line account {world.wallet} (wallet): debits may exceed credits (no bound)"
    ]


async def test_an_order_whose_webhooks_were_lost_must_be_credited(world: World) -> None:
    """Requirement (fault coverage): an order paid while every webhook of it was dropped is
    credited by the end all the same (return, "check now", reconciliation), exactly once; the
    checker counts such orders and names one left uncredited."""
    verdict = await verify(world.db, min_paid=1, dropped={world.paid})
    assert verdict.violations == []
    assert verdict.facts["orders whose webhooks were all dropped"] == {
        "placed": 1, "paid": 1, "credited": 1,
    }
    await _sql(
        world,
        "UPDATE sandbox_payments SET state = 'paid' WHERE reference ="
        " (SELECT reference FROM orders WHERE id = :id)",
        id=uuid.UUID(world.unpaid),
    )
    found = await _violations(world, dropped={world.unpaid})
    assert (
        f"order {world.unpaid}: paid, every webhook dropped, and not credited (pending)" in found
    ), found
