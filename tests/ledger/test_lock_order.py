"""The ledger's one lock order: a line's accounts before the operator's, whatever their ids.

Charging locks a line's pots first and then, through the ledger, the operator account it pays
into. A transfer between the same two accounts elsewhere (a TMF654 reservation, a reservation's
expiry) used to lock them by id alone, so it took an operator account with the smaller id first:
each transaction held what the other waited for, and PostgreSQL killed one (40P01)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.consumption import lock_pots
from simcharge.charging.nchf import create_charging_data
from simcharge.charging.rating import load_rating_table
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.models import TransferKind
from simcharge.ledger.repository import LedgerRepository
from simcharge.ledger.service import (
    NewAccount,
    NewTransfer,
    create_transfers,
    ensure_accounts,
    post_transfers,
    release_timed_out,
)
from simcharge.lifecycle.service import sweep
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import UnitGrant, line_balances
from tests.charging.helpers import body, make_line, rg
from tests.lifecycle.test_lifecycle import DAY, T, policy

HOUR = timedelta(hours=1)


def _deadlocked(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, asyncpg.DeadlockDetectedError) or (
            isinstance(seen, DBAPIError) and "deadlock" in str(seen).lower()
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@pytest.mark.postgres_only
@pytest.mark.parametrize("others", [1, 2], ids=["one-statement", "batch"])
async def test_charging_and_a_transfer_to_a_smaller_operator_id_do_not_deadlock(
    fresh_db: Database, others: int
) -> None:
    db = fresh_db
    t = await make_line(db, money=10_000)
    wallet = t.line.wallet_account_id
    # An operator account whose id sorts before every line's: by id alone it was locked first.
    sink = NewAccount(unit="USD", code="revenue", id=uuid.UUID(int=uuid7().int % 2**64),
                      key=f"test-sink:{uuid.uuid4()}")  # fmt: skip
    assert sink.id < wallet
    await db.run(lambda s: ensure_accounts(s, [sink]))
    pots_held = asyncio.Event()

    def hold(amount: int) -> NewTransfer:
        return NewTransfer(id=uuid7(), amount=amount, unit="USD", debit_account_id=wallet,
                           credit_account_id=sink.id, kind=TransferKind.pending, code="quota",
                           reference="test:lock-order")  # fmt: skip

    async def charging() -> None:
        # As an Nchf update: the line's pots first, its rating, then the ledger batch.
        async with db.transaction() as s:
            await lock_pots(s, [t.line.id])
            pots_held.set()
            await asyncio.sleep(0.3)
            await create_transfers(s, [hold(100)])

    async def reservation() -> None:
        # As a TMF654 reservation on the same wallet (others=2: the ledger's general path).
        await pots_held.wait()
        async with db.transaction() as s:
            await create_transfers(s, [hold(10) for _ in range(others)])

    results = await asyncio.gather(charging(), reservation(), return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException) and _deadlocked(r)], results
    assert results == [None, None]


@pytest.mark.postgres_only
async def test_termination_and_the_timeout_sweep_lock_a_hold_before_the_pots(
    fresh_db: Database, settings: Settings
) -> None:
    """Termination (`lifecycle._forfeit`) ends the line's charging sessions, which locks its
    pots, and releases its other holds (a TMF654 reservation). The ledger's timeout sweep locks
    such a hold and then its accounts — the pots. Termination used to void the hold after
    locking the pots, so the two waited crosswise (40P01). Now termination locks the holds the
    sweep may take first: while the sweep holds one, termination waits holding no pot."""
    db = fresh_db
    t = await make_line(db, money=1000, grants=[UnitGrant("DATA_B", 5000, 30)])
    wallet = t.line.wallet_account_id
    async with db.read() as s:
        table = await load_rating_table(s)
    body_of = json.dumps(body(t.supi, 0, [rg(200, requested={"totalVolume": 3000})])).encode()
    await db.run(lambda s: create_charging_data(s, settings, table, client="smf", body=body_of))
    sink = chart.consumption("USD")
    hold = uuid7()

    async def prepare(s: AsyncSession) -> None:
        await ensure_accounts(s, [sink])
        await post_transfers(s, [NewTransfer(
            id=hold, amount=300, unit="USD", debit_account_id=wallet, credit_account_id=sink.id,
            kind=TransferKind.pending, timeout_s=60, code="reservation", reference="test")],
            now=T - HOUR)
        line = await s.get(Line, t.line.id)
        assert line is not None
        line.state, line.state_changed_at = LineState.frozen.value, T - 366 * DAY

    await db.run(prepare)
    terminating: asyncio.Task[Any] | None = None
    async with db.transaction() as swept:
        # The ledger's sweep, as `expire_pending_transfers` runs it: the hold first…
        assert await LedgerRepository(swept).due_pending_ids(T, 10) == [hold]
        terminating = asyncio.create_task(sweep(db, policy(settings), now=T))
        await _until_one_waits(db)
        # … while termination waits for the hold, no pot of the line is locked:
        async with db.transaction() as probe:
            await probe.execute(
                text("SELECT id FROM ledger_accounts WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": wallet},
            )
        # … and the sweep takes them and releases the hold.
        assert await release_timed_out(swept, [hold], now=T) == 1
    await asyncio.wait_for(terminating, 30)
    async with db.read() as s:
        line = await s.get(Line, t.line.id)
        assert line is not None and line.state == LineState.terminated.value
        view = await line_balances(s, line, now=T)
        assert (view.wallet.available, view.wallet.reserved) == (0, 0)
        assert (await verify_ledger(s, now=T)).ok


async def _until_one_waits(db: Database) -> None:
    """Until a transaction of this database waits for a row lock."""
    for _ in range(200):
        async with db.read() as s:
            waiting = (await s.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"))).scalar_one()
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("nothing waited for the hold")
