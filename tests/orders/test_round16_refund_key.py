"""Sixteenth round (adversarial money review): a refund's `Idempotency-Key` reused with another
body. It was refused only when the later request named an amount other than the refund's: with
no amount ("all that is left") or another reason it was replayed — nine concurrent requests with
one key (three asking 300, three 500, three "all") got six 202s for the 300 refund, the "all"
callers told 202 for a partial refund.

Now the refund keeps what it was asked (the amount, or "all", and the reason) in its `plan`, and
a request with the same key is the same refund only if it asks the same: anything else is
`422 idempotency-key-reused` (field `Idempotency-Key`), nothing held, asked or audited. The order
row is locked before the key is looked up, and on PostgreSQL the key itself (an advisory lock),
so the same key sent at once for two orders makes one refund and one 422, never a 500.

Real databases (both; the concurrent cases on PostgreSQL), the sandbox provider.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import IdempotencyKeyReused
from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerTransfer
from simcharge.orders.models import Order, Refund
from simcharge.orders.refunds import ask_for_refund
from simcharge.worker.models import OutboxJob
from tests.auth.helpers import problem
from tests.factories import load_demo_catalog
from tests.orders.helpers import (
    assert_ledger_balanced,
    fulfilled,
    idem,
    new_payer,
    pay_at_sandbox,
    place,
)
from tests.orders.test_round15_refund_disputes import _answer, _lost


async def _finance(db: Database) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    return {"Authorization": f"Bearer {issued.token}"}


async def _held(db: Database) -> tuple[int, int, int, int]:
    """Refunds, ledger transfers, outbox jobs and audit entries: what a refund asked adds to."""
    counts = []
    async with db.read() as s:
        for model in (Refund, LedgerTransfer, OutboxJob, AuditEntry):
            counts.append(int((await s.execute(
                select(func.count()).select_from(model))).scalar_one()))
    return counts[0], counts[1], counts[2], counts[3]


def _reused(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    assert problem(r)["type"].endswith("/idempotency-key-reused")
    assert problem(r)["field"] == "Idempotency-Key"


async def test_all_that_is_left_then_another_body_with_the_same_key_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await _finance(db)
    order = await fulfilled(client, settings, await new_payer(db, settings))
    url, key = f"/api/v1/admin/orders/{order['id']}/refunds", idem()
    first = await client.post(url, headers={**staff, **key}, json={"reason": "ported out"})
    assert first.status_code == 202, first.text
    assert first.json()["amount"]["minor"] == order["total"]["minor"]
    before = await _held(db)
    # The same body: the same refund.
    again = await client.post(url, headers={**staff, **key}, json={"reason": "ported out"})
    assert again.status_code == 202 and again.json()["reference"] == first.json()["reference"]
    # Another body: the amount "all" came to, named; a part; another reason.
    for body in ({"amount": order["total"]["minor"], "reason": "ported out"},
                 {"amount": 100, "reason": "ported out"},
                 {"reason": "asked twice"}):
        _reused(await client.post(url, headers={**staff, **key}, json=body))
    assert await _held(db) == before
    await assert_ledger_balanced(db)


async def test_an_amount_then_all_or_another_reason_with_the_same_key_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await _finance(db)
    order = await fulfilled(client, settings, await new_payer(db, settings))
    url, key = f"/api/v1/admin/orders/{order['id']}/refunds", idem()
    first = await client.post(url, headers={**staff, **key},
                              json={"amount": 300, "reason": "goodwill"})
    assert first.status_code == 202, first.text
    before = await _held(db)
    for body in ({"reason": "goodwill"},  # "all that is left": not the 300 refund
                 {"amount": 300, "reason": "goodwill, again"},
                 {"amount": 500, "reason": "goodwill"}):
        _reused(await client.post(url, headers={**staff, **key}, json=body))
    assert await _held(db) == before
    again = await client.post(url, headers={**staff, **key},
                              json={"amount": 300, "reason": "goodwill"})
    assert again.status_code == 202 and again.json()["reference"] == first.json()["reference"]
    # Another order with the same key: refused too (a key names one refund).
    other = await fulfilled(client, settings, await new_payer(db, settings))
    before = await _held(db)
    _reused(await client.post(f"/api/v1/admin/orders/{other['id']}/refunds",
                              headers={**staff, **key}, json={"amount": 300, "reason": "goodwill"}))
    assert await _held(db) == before


async def test_a_refund_asked_before_the_request_was_kept(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A refund made before this round has no request in its plan: its reason and its amount
    decide (an amount asked must be its amount; "all" cannot be told from it and is replayed)."""
    staff = await _finance(db)
    order = await fulfilled(client, settings, await new_payer(db, settings))
    url, key = f"/api/v1/admin/orders/{order['id']}/refunds", idem()
    first = await client.post(url, headers={**staff, **key}, json={"amount": 300, "reason": "old"})
    assert first.status_code == 202, first.text
    async with db.read() as s:
        row = (await s.execute(select(Refund).where(
            Refund.reference == first.json()["reference"]))).scalar_one()
    assert row.plan["request"] == {"amount": 300, "reason": "old"}
    plan = {k: v for k, v in row.plan.items() if k != "request"}
    await db.run(lambda s: s.execute(update(Refund).where(Refund.id == row.id).values(plan=plan)))
    for body in ({"amount": 300, "reason": "old"}, {"reason": "old"}):
        r = await client.post(url, headers={**staff, **key}, json=body)
        assert r.status_code == 202 and r.json()["reference"] == first.json()["reference"]
    for body in ({"amount": 300, "reason": "new"}, {"amount": 400, "reason": "old"}):
        _reused(await client.post(url, headers={**staff, **key}, json=body))


async def test_a_refund_cut_down_to_what_was_left_is_still_the_one_its_key_asked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Asked 1500 of 2000; the payer's dispute of everything lost; the provider confirms the
    1500: the refund counts 0 (`_past_what_was_paid`). The same request sent again is that
    refund — it was refused, its stored amount no longer what was asked — and another is not."""
    payer = await new_payer(db, settings)
    placed = await place(client, payer, plan="traveller-20", method="paypal")
    await pay_at_sandbox(client, settings, placed)
    r = await client.post(f"/api/v1/orders/{placed['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    oid = uuid.UUID(placed["id"])

    async def ask(amount: int | None, reason: str = "asked by the payer") -> tuple[Refund, bool]:
        async def run(s: AsyncSession) -> tuple[Refund, bool]:
            return await ask_for_refund(s, oid, amount=amount, reason=reason,
                                        requested_by="staff:test", now=utcnow(),
                                        idempotency_key="k-cut")
        return await db.run(run)

    async with db.read() as s:
        order = await s.get(Order, oid)
    assert order is not None
    asked = order.total * 3 // 4
    refund, made = await ask(asked)
    assert made
    await _lost(db, order, order.total, "dp_key")
    await _answer(db, oid, refund.reference, asked, ok=True)
    again, made = await ask(asked)
    assert (again.id, again.amount, made) == (refund.id, 0, False)
    assert again.plan["request"] == {"amount": asked, "reason": "asked by the payer"}
    with pytest.raises(IdempotencyKeyReused):
        await ask(None)
    with pytest.raises(IdempotencyKeyReused):
        await ask(asked, reason="another")


# --- at once, on PostgreSQL -----------------------------------------------------------------


async def _shop(db: Database, settings: Settings) -> tuple[Any, list[dict[str, Any]]]:
    await db.run(load_demo_catalog)
    app = create_app(settings, db=db, run_worker=False)
    orders = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        for _ in range(2):
            orders.append(await fulfilled(client, settings, await new_payer(db, settings)))
    return app, orders


@pytest.mark.postgres_only
async def test_nine_at_once_with_one_key_make_one_refund_and_tell_the_others(
    fresh_db: Database, settings: Settings
) -> None:
    """The reviewer's nine: whichever body wins, its three callers get 202 with the one refund,
    the six others 422."""
    db = fresh_db
    app, [order, _] = await _shop(db, settings)
    staff = await _finance(db)
    key = idem()
    url = f"/api/v1/admin/orders/{order['id']}/refunds"
    bodies: list[dict[str, Any]] = (
        [{"amount": 300, "reason": "r"}] * 3 + [{"amount": 500, "reason": "r"}] * 3
        + [{"reason": "r"}] * 3
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        answers = await asyncio.gather(*(
            client.post(url, headers={**staff, **key}, json=body) for body in bodies))
    by_body = [
        Counter(a.status_code for a in answers[i:i + 3]) for i in range(0, 9, 3)
    ]
    assert sorted(by_body, key=lambda c: c[202]) == [Counter({422: 3})] * 2 + [Counter({202: 3})]
    won = next(i for i in range(0, 9, 3) if answers[i].status_code == 202)
    assert len({a.json()["reference"] for a in answers[won:won + 3]}) == 1
    for lost in answers:
        if lost.status_code == 422:
            _reused(lost)
    async with db.read() as s:
        refunds = (await s.execute(select(Refund))).scalars().all()
    assert len(refunds) == 1
    wanted = bodies[won].get("amount", order["total"]["minor"])
    assert refunds[0].amount == wanted
    assert refunds[0].plan["request"] == {"amount": bodies[won].get("amount"), "reason": "r"}
    await assert_ledger_balanced(db)


@pytest.mark.postgres_only
async def test_one_key_for_two_orders_at_once_makes_one_refund(
    fresh_db: Database, settings: Settings
) -> None:
    """Each request holds its own order's row: the key's advisory lock makes the second wait
    and find the first's refund (422), not fail on the unique key (500)."""
    db = fresh_db
    app, orders = await _shop(db, settings)
    staff = await _finance(db)
    key = idem()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        answers = await asyncio.gather(*(
            client.post(f"/api/v1/admin/orders/{o['id']}/refunds", headers={**staff, **key},
                        json={"amount": 300, "reason": "r"})
            for o in orders for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [202] * 3 + [422] * 3, [
        (a.status_code, a.text) for a in answers]
    async with db.read() as s:
        assert len((await s.execute(select(Refund))).scalars().all()) == 1
    await assert_ledger_balanced(db)
