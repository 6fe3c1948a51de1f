"""Two transactions creating the same operator account at the same moment (an operator shard's
first transfers): both go on, one account is made — never a unique violation."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from simcharge.db import Database
from simcharge.ledger.models import LedgerAccount
from simcharge.ledger.service import ensure_accounts, system_account


@pytest.mark.postgres_only
async def test_the_same_new_account_made_twice_at_once_is_made_once(fresh_db: Database) -> None:
    for _ in range(60):
        new = system_account(f"fees:race-{uuid.uuid4().hex}", "USD", "fees")
        start = asyncio.Event()

        async def make(new=new, start=start) -> None:  # type: ignore[no-untyped-def]
            async with fresh_db.transaction() as s:
                await start.wait()
                await ensure_accounts(s, [new])

        both = asyncio.gather(make(), make(), make(), return_exceptions=True)
        await asyncio.sleep(0)
        start.set()
        results = await both
        assert results == [None, None, None], results
        async with fresh_db.read() as s:
            made = (await s.execute(select(func.count()).select_from(LedgerAccount).where(
                LedgerAccount.key == new.key))).scalar_one()
        assert made == 1
