"""A customer's transfer racing their account's closure (review round 11).

What was wrong: a transfer sent while the customer's closure was committing passed the session
check (the session still open) and the line's ownership check (read before the closure's
update of the line committed), waited for the line the closure was detaching, then gave the
line's money to another number from a line that no longer was the account's, for an account
that no longer existed as a customer. An order in the same race was already refused
(`orders.service.refuse_closed_payer`); now a transfer is too, the same way: it waits for the
closure's lock on the account, sees it, and is refused `401 session-ended`, nothing written.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select, update

from simcharge.accounts.models import Account, AccountStatus
from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line
from simcharge.tmf654.models import BalanceAction
from tests.factories import load_demo_catalog
from tests.orders.helpers import idem, new_payer
from tests.tmf654.helpers import totals
from tests.tmf654.test_customer_transfers import funded


async def _actions(db: Database) -> int:
    async with db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(BalanceAction)) or 0)


@pytest.mark.postgres_only
async def test_a_transfer_racing_the_accounts_closure_is_refused(
    fresh_db: Database, settings: Settings
) -> None:
    """Real connections and commits: the closure holds the account and detaches the line in a
    transaction held open; the transfer, past its session check, must wait and then see it."""
    db = fresh_db
    await db.run(load_demo_catalog)
    me, friend = await funded(db, settings), await new_payer(db, settings)
    app = create_app(settings, db=db, run_worker=False)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def closure() -> None:
        # What `privacy.close_account` does to these rows, in a transaction held open meanwhile.
        async with db.transaction() as s:
            await s.get(Account, me.account_id, with_for_update=True)
            await s.execute(
                update(Line).where(Line.account_id == me.account_id).values(account_id=None)
            )
            await s.execute(
                update(Account)
                .where(Account.id == me.account_id)
                .values(status=AccountStatus.closed.value)
            )
            holding.set()
            await release.wait()

    body = {"to": friend.line.msisdn, "usage_type": "monetary", "amount": 500}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        closing = asyncio.create_task(closure())
        await holding.wait()
        giving = asyncio.create_task(
            client.post(
                f"/api/v1/me/lines/{me.line.id}/transfers",
                json=body,
                headers={**me.auth, **idem()},
            )
        )
        await asyncio.sleep(1.0)
        assert not giving.done()  # past the session check, waiting for the closure
        release.set()
        await closing
        r = await giving
    assert r.status_code == 401, r.text
    assert r.json()["type"].endswith("/session-ended")
    assert await _actions(db) == 0
    assert await totals(db, me.line.wallet_account_id) == (2000, 0)
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)


async def test_no_transfer_from_a_closed_account_even_with_its_session_still_open(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The account closed under a session left open: refused, nothing given (by the session
    check, or by the transfer's own; a guard on both databases beside the race above)."""
    me, friend = await funded(db, settings), await new_payer(db, settings)

    async def close(s: object) -> None:
        await s.execute(  # type: ignore[attr-defined]
            update(Account)
            .where(Account.id == me.account_id)
            .values(status=AccountStatus.closed.value)
        )

    await db.run(close)  # type: ignore[arg-type]
    r = await client.post(
        f"/api/v1/me/lines/{me.line.id}/transfers",
        json={"to": friend.line.msisdn, "usage_type": "monetary", "amount": 500},
        headers={**me.auth, **idem()},
    )
    assert r.status_code == 401, r.text
    assert await _actions(db) == 0
    assert await totals(db, me.line.wallet_account_id) == (2000, 0)
