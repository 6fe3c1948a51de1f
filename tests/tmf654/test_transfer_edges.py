"""Giving at its edges: a double submit racing at the day's last transfer, the bucket units
come from when one never ends, a line whose validity has ended."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from simcharge.tmf654 import giving
from tests.orders.helpers import idem, new_payer
from tests.tmf654.helpers import MB, totals
from tests.tmf654.test_lock_order import waiting_for


@pytest.mark.postgres_only
async def test_a_double_submit_at_the_daily_limit_is_answered_alike(
    fresh_db: Database, settings: Settings
) -> None:
    """The copy waits for the giver while the first uses the day's last transfer: it is then
    answered as the first one's replay, not refused for the limit the first one reached."""
    settings = settings.model_copy(update={"balance_transfer_daily_count": 1})
    me, friend = await new_payer(fresh_db, settings), await new_payer(fresh_db, settings)
    await fresh_db.run(lambda s: credit_wallet(s, me.line, 2000, source=f"test:{me.line.id}"))
    gift = giving.Gift(to=friend.line.msisdn, usage_type="monetary", amount=500)

    async def give() -> Any:
        return await fresh_db.run(lambda s: giving.give(
            s, settings, account_id=me.account_id, line_id=me.line.id, gift=gift, key="same"))

    async with fresh_db.engine.connect() as gate:
        await gate.execute(text("LOCK TABLE ledger_accounts IN EXCLUSIVE MODE"))
        both = asyncio.gather(give(), give(), return_exceptions=True)
        await waiting_for(fresh_db, "ledger_accounts", 1)
        await asyncio.sleep(1.0)  # the second copy comes to wait for the giver's line
        await gate.rollback()
    results = await asyncio.wait_for(both, 30)
    assert all(isinstance(r, giving.Given) for r in results), results
    assert sorted(r.replayed for r in results) == [False, True]
    assert await totals(fresh_db, me.line.wallet_account_id) == (2000 - 520, 0)


async def test_units_come_from_the_bucket_that_ends_first_not_the_endless_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me, friend = await new_payer(db, settings), await new_payer(db, settings)

    async def fill(s: AsyncSession) -> tuple[Any, Any]:
        await credit_wallet(s, me.line, 2000, source=f"test:{me.line.id}")
        [ending] = await grant_units(s, me.line, [UnitGrant("DATA_B", 300 * MB, 10)],
                                     source=f"test:a:{me.line.id}")
        [endless] = await grant_units(s, me.line, [UnitGrant("DATA_B", 300 * MB, None)],
                                      source=f"test:b:{me.line.id}")
        return ending, endless

    ending, endless = await db.run(fill)
    r = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers",
                          headers={**me.auth, **idem()},
                          json={"to": friend.line.msisdn, "usage_type": "data", "amount": 100})
    assert r.status_code == 201, r.text
    assert await totals(db, ending) == (200 * MB, 0)
    assert await totals(db, endless) == (300 * MB, 0)


async def test_a_line_whose_validity_ended_cannot_give(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Active in name until the next sweep, in grace in fact (as charging reads it)."""
    me, friend = await new_payer(db, settings), await new_payer(db, settings)

    async def fill(s: AsyncSession) -> None:
        await credit_wallet(s, me.line, 2000, source=f"test:{me.line.id}")
        line = await s.get(Line, me.line.id)
        assert line is not None
        line.validity_end = utcnow() - timedelta(days=3)

    await db.run(fill)
    r = await client.post(f"/api/v1/me/lines/{me.line.id}/transfers",
                          headers={**me.auth, **idem()},
                          json={"to": friend.line.msisdn, "usage_type": "monetary", "amount": 500})
    assert (r.status_code, r.json()["type"]) == (409, "/problems/line-not-in-service"), r.text
    assert await totals(db, me.line.wallet_account_id) == (2000, 0)
