"""An order is never placed for a closed account. Before, a top-up sent while the customer's
closure was committing passed the session check (the session still open), waited for the
closure's lock on the account, and then committed an order — and a payment page — for an account
that no longer existed as a customer."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.accounts.models import Account, AccountStatus
from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import IdempotencyKey, Order
from tests.factories import load_demo_catalog
from tests.orders.helpers import idem, new_payer


def _order_body(line_id: object) -> dict[str, str]:
    return {"plan": "traveller-20", "method": "sandbox", "line_id": str(line_id)}


async def _orders_of(db: Database, account_id: object) -> tuple[int, int]:
    async with db.read() as s:
        orders = await s.scalar(
            select(func.count()).select_from(Order).where(Order.account_id == account_id)
        )
        keys = await s.scalar(
            select(func.count())
            .select_from(IdempotencyKey)
            .where(IdempotencyKey.account_id == account_id)
        )
    return int(orders or 0), int(keys or 0)


@pytest.mark.postgres_only
async def test_an_order_racing_the_accounts_closure_is_refused(
    fresh_db: Database, settings: Settings
) -> None:
    """Real connections and commits: the request's session check reads the account open (the
    closure not committed), then its transaction meets the closure's lock and must see it."""
    db = fresh_db
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    app = create_app(settings, db=db, run_worker=False)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def closure() -> None:
        # What `privacy.close_account` does to the row, in a transaction held open meanwhile.
        async with db.transaction() as s:
            await s.get(Account, payer.account_id, with_for_update=True)
            await s.execute(
                update(Account)
                .where(Account.id == payer.account_id)
                .values(status=AccountStatus.closed.value)
            )
            holding.set()
            await release.wait()

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        closing = asyncio.create_task(closure())
        await holding.wait()
        placing = asyncio.create_task(
            client.post(
                "/api/v1/orders",
                json=_order_body(payer.line.id),
                headers={**payer.auth, **idem()},
            )
        )
        await asyncio.sleep(1.0)
        assert not placing.done()  # past the session check, waiting for the closure's lock
        release.set()
        await closing
        r = await placing
    assert r.status_code == 401, r.text
    assert r.json()["type"] == "/problems/session-ended"
    assert await _orders_of(db, payer.account_id) == (0, 0)


async def test_no_order_for_a_closed_account_even_with_its_session_still_open(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The service's own check, whatever the edge: the account closed under a session that was
    (wrongly) left open is refused, nothing written."""
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)

    async def close(s: object) -> None:
        await s.execute(  # type: ignore[attr-defined]
            update(Account)
            .where(Account.id == payer.account_id)
            .values(status=AccountStatus.closed.value)
        )

    await db.run(close)
    r = await client.post(
        "/api/v1/orders", json=_order_body(payer.line.id), headers={**payer.auth, **idem()}
    )
    assert r.status_code == 401, r.text
    assert r.json()["type"] in {"/problems/session-ended", "/problems/not-authenticated"}
    assert await _orders_of(db, payer.account_id) == (0, 0)
