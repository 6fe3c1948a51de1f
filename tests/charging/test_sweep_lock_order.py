"""The sweep of abandoned sessions locks as a live update does: a line's pots before the
operator accounts. Session by session it held the shard's operator account (posted for the
first line) while waiting for the pots of the next line, which a live update held while waiting
for that account: a deadlock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import pytest

from simcharge.app import create_app
from simcharge.charging.consumption import lock_pots
from simcharge.charging.nchf import expire_abandoned_sessions
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.models import TransferKind
from simcharge.ledger.service import NewTransfer, create_transfers
from simcharge.lines.service import UnitGrant
from tests.charging.helpers import (
    MIB,
    assert_ledger_balanced,
    body,
    make_line,
    nchf,
    open_reservations,
    rg,
)

if TYPE_CHECKING:  # (imported by name, pytest would take the class for a test)
    from tests.charging.helpers import TestLine

DATA = 200


async def _two_lines_of_one_shard(db: Database) -> tuple[TestLine, TestLine, int]:
    seen: dict[int, TestLine] = {}
    while True:
        t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
        shard = chart.shard_of(t.line.id)
        if shard in seen:
            return seen[shard], t, shard
        seen[shard] = t


@pytest.mark.postgres_only
async def test_the_sweep_and_a_live_update_do_not_deadlock(
    fresh_db: Database, settings: Settings
) -> None:
    db = fresh_db
    first, second, shard = await _two_lines_of_one_shard(db)
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:  # fmt: skip
        api = await nchf(client, db)
        for t in (first, second):  # the first line's session is the first past its deadline
            r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": MIB})]))
            assert r.status_code == 201
            await asyncio.sleep(0.01)
    assert await open_reservations(db) == 2
    later = utcnow() + timedelta(
        seconds=settings.charging_validity_seconds + settings.charging_session_grace_seconds + 1
    )
    pots_held = asyncio.Event()

    async def live_update() -> None:
        # A live update on the second line: its pots, its rating, then the shard's account.
        async with db.transaction() as s:
            pots = (await lock_pots(s, [second.line.id]))[second.line.id]
            pots_held.set()
            await asyncio.sleep(0.5)  # the sweep has started meanwhile
            await create_transfers(s, [NewTransfer(
                id=uuid7(), amount=MIB, unit="DATA_B", debit_account_id=pots.buckets[0].account_id,
                credit_account_id=chart.consumption("DATA_B", shard).id,
                kind=TransferKind.pending, code="quota", reference="test:live")])  # fmt: skip

    async def sweep() -> int:
        await pots_held.wait()
        async with db.transaction() as s:
            return await expire_abandoned_sessions(s, settings, now=later)

    results = await asyncio.gather(live_update(), sweep(), return_exceptions=True)
    assert results == [None, 2], results
    assert await open_reservations(db) == 1  # the live update's own
    await assert_ledger_balanced(db)


async def test_a_line_with_several_abandoned_sessions_gets_all_back(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The sweep's sessions share their line's pots: each sees what the one before freed."""
    lines = [await make_line(db, money=1_000, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
             for _ in range(2)]  # fmt: skip
    api = await nchf(client, db)
    for t in (lines[0], lines[0], lines[1]):
        r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB}),
                                              rg(100, requested={"time": 60})]))  # fmt: skip
        assert r.status_code == 201
    assert await open_reservations(db) > 3
    later = utcnow() + timedelta(
        seconds=settings.charging_validity_seconds + settings.charging_session_grace_seconds + 1
    )
    assert await db.run(lambda s: expire_abandoned_sessions(s, settings, now=later)) == 3
    assert await open_reservations(db) == 0
    await assert_ledger_balanced(db)
