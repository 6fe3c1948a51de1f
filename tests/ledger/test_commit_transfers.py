"""`commit_transfers`: the ledger used on its own, each batch committed in a transaction of its
own. On PostgreSQL a lone transfer is one statement committed by itself (`Database.autocommit_
driver`), which must do all of its work or none of it; everything else takes `create_transfers`
in `Database.run`. Both databases, real commits (`fresh_db`)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger.models import TransferKind
from simcharge.ledger.repository import LedgerRepository
from simcharge.ledger.service import (
    NewTransfer,
    TransferResult,
    commit_transfers,
    post_transfers,
)
from tests.factories import create_ledger_account, ledger_account, transfer_count
from tests.ledger.test_properties import check_invariants
from tests.ledger.test_service import funded, t

R = TransferResult


async def _accounts(db: Database, funding: int = 100) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A source, a wallet holding `funding` (bounded by its credits) and an unbounded sink."""

    async def setup(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        source, wallet = await funded(s, funding)
        return source, wallet, await create_ledger_account(s)

    return await db.run(setup)


async def _state(db: Database, *ids: uuid.UUID) -> tuple[Any, ...]:
    """Each account's four totals, and how many transfers exist."""
    async with db.read() as s:
        totals = []
        for i in ids:
            a = await ledger_account(s, i)
            totals.append((a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted))
        return (*totals, await transfer_count(s))


def _counting_runs(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the transactions `db.run` opens from now on."""
    runs: list[int] = []
    real = db.run

    async def run(fn: Callable[[AsyncSession], Awaitable[Any]], **kw: Any) -> Any:
        runs.append(1)
        return await real(fn, **kw)

    monkeypatch.setattr(db, "run", run)
    return runs


async def test_a_lone_transfer_is_committed_once_and_a_replay_is_exists(
    fresh_db: Database,
) -> None:
    _, wallet, sink = await _accounts(fresh_db, 100)
    transfer = t(wallet, sink, 40, code="move", reference="r1")
    assert [o.result for o in await commit_transfers(fresh_db, [transfer])] == [R.ok]
    after = await _state(fresh_db, wallet, sink)
    assert after[0] == (0, 40, 0, 100) and after[1] == (0, 0, 0, 40)
    async with fresh_db.read() as s:
        [stored] = (await LedgerRepository(s).get_transfers([transfer.id])).values()
    assert (stored["amount"], stored["code"], stored["reference"]) == (40, "move", "r1")
    # The same request again (a retry after a lost answer): recognised, nothing moves twice.
    assert [o.result for o in await commit_transfers(fresh_db, [transfer])] == [R.exists]
    assert await _state(fresh_db, wallet, sink) == after


@pytest.mark.parametrize(
    "case", ["exceeds", "unit", "different_fields", "zero_id", "timeout_too_large"]
)
async def test_a_refused_transfer_says_why_and_writes_nothing(
    fresh_db: Database, case: str
) -> None:
    """Refusals of every kind leave both accounts and the transfers as they were — also on
    PostgreSQL, where the one statement may already have updated one account when the other
    refuses, and must then be undone as a whole."""
    _, wallet, sink = await _accounts(fresh_db, 100)
    other_unit = await fresh_db.run(lambda s: create_ledger_account(s, "CNY"))
    taken = t(wallet, sink, 10)
    await commit_transfers(fresh_db, [taken])
    transfer, expected = {
        "exceeds": (t(wallet, sink, 91), R.exceeds_credits),
        # The sink is updated first or second (id order); either way the wallet's unit refuses.
        "unit": (t(wallet, other_unit, 5), R.accounts_must_have_the_same_unit),
        "different_fields": (t(wallet, sink, 11, id=taken.id), R.exists_with_different_fields),
        "zero_id": (t(wallet, sink, 5, id=uuid.UUID(int=0)), R.id_must_not_be_zero),
        # 31,700 years: its end is no date (an OverflowError on either path, it was).
        "timeout_too_large": (
            t(wallet, sink, 5, kind=TransferKind.pending, timeout_s=10**12),
            R.timeout_too_large,
        ),
    }[case]
    before = await _state(fresh_db, wallet, sink, other_unit)
    assert [o.result for o in await commit_transfers(fresh_db, [transfer])] == [expected]
    assert await _state(fresh_db, wallet, sink, other_unit) == before


async def test_a_linked_chain_is_all_or_nothing(fresh_db: Database) -> None:
    _, wallet, sink = await _accounts(fresh_db, 100)
    chain = [t(wallet, sink, 60, linked=True), t(wallet, sink, 60)]
    before = await _state(fresh_db, wallet, sink)
    results = [o.result for o in await commit_transfers(fresh_db, chain)]
    assert results == [R.linked_event_failed, R.exceeds_credits]
    assert await _state(fresh_db, wallet, sink) == before
    chain = [t(wallet, sink, 30, linked=True), t(wallet, sink, 30)]
    assert [o.result for o in await commit_transfers(fresh_db, chain)] == [R.ok, R.ok]
    assert (await _state(fresh_db, wallet))[0] == (0, 60, 0, 100)
    assert await commit_transfers(fresh_db, []) == []


async def test_a_reservation_made_alone_is_posted_later(fresh_db: Database) -> None:
    _, wallet, sink = await _accounts(fresh_db, 100)
    hold = t(wallet, sink, 70, kind=TransferKind.pending, timeout_s=60)
    assert [o.result for o in await commit_transfers(fresh_db, [hold])] == [R.ok]
    assert (await _state(fresh_db, wallet))[0] == (70, 0, 0, 100)
    assert [o.result for o in await commit_transfers(fresh_db, [t(wallet, sink, 40)])] == [
        R.exceeds_credits
    ]
    post = NewTransfer(uuid7(), 50, kind=TransferKind.post_pending, pending_id=hold.id)
    assert [o.result for o in await commit_transfers(fresh_db, [post])] == [R.ok]
    assert (await _state(fresh_db, wallet))[0] == (0, 50, 0, 100)


@pytest.mark.postgres_only("the one-statement path and its autocommit are PostgreSQL's")
async def test_on_postgres_a_lone_transfer_opens_no_transaction(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken: no `db.run` (no session, no BEGIN or COMMIT) for a transfer that is written; one
    for a refused transfer, which the general path explains."""
    _, wallet, sink = await _accounts(fresh_db, 100)
    runs = _counting_runs(fresh_db, monkeypatch)
    assert [o.result for o in await commit_transfers(fresh_db, [t(wallet, sink, 30)])] == [R.ok]
    assert runs == []
    assert [o.result for o in await commit_transfers(fresh_db, [t(wallet, sink, 80)])] == [
        R.exceeds_credits
    ]
    assert runs == [1]
    assert fresh_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.postgres_only("a bound database and SQLite have no autocommit driver connection")
async def test_autocommit_driver_gives_back_or_throws_away_its_connection(
    fresh_db: Database,
) -> None:
    pool: Any = fresh_db.engine.pool
    async with fresh_db.autocommit_driver() as driver:
        assert driver is not None and not driver.is_in_transaction()
        pid = await driver.fetchval("SELECT pg_backend_pid()")
    assert pool.checkedout() == 0
    # A statement the server refused: the connection is sound and goes back to the pool.
    with pytest.raises(Exception, match="division by zero"):
        async with fresh_db.autocommit_driver() as driver:
            await driver.fetchval("SELECT 1 / 0")
    async with fresh_db.autocommit_driver() as driver:
        assert await driver.fetchval("SELECT pg_backend_pid()") == pid
    # A statement cut off by cancellation: the connection may be mid-protocol, so it is closed.
    task_started = asyncio.Event()

    async def sleeper() -> None:
        async with fresh_db.autocommit_driver() as driver:
            task_started.set()
            await driver.fetchval("SELECT pg_sleep(30)")

    task = asyncio.create_task(sleeper())
    await task_started.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.checkedout() == 0
    async with fresh_db.autocommit_driver() as driver:
        assert await driver.fetchval("SELECT 1") == 1


async def test_autocommit_driver_is_none_where_there_is_none(db: Database) -> None:
    """A database bound to a test's transaction (and SQLite) has none: `commit_transfers`
    then takes `db.run`, as every other caller does."""
    async with db.autocommit_driver() as driver:
        assert driver is None
    source = await db.run(lambda s: create_ledger_account(s))
    sink = await db.run(lambda s: create_ledger_account(s))
    assert [o.result for o in await commit_transfers(db, [t(source, sink, 5)])] == [R.ok]


async def test_concurrent_lone_transfers_on_hot_accounts_lose_nothing(fresh_db: Database) -> None:
    """32 tasks moving money among four bounded wallets, each transfer alone: on PostgreSQL
    each one statement racing the others for the same rows; refusals among them."""
    hot, funding = 4, 100

    async def setup(s: AsyncSession) -> list[uuid.UUID]:
        source = await create_ledger_account(s)
        wallets = [await create_ledger_account(s, bounded="debits") for _ in range(hot)]
        for w in wallets:
            await post_transfers(s, [t(source, w, funding)])
        return wallets

    wallets = await fresh_db.run(setup)
    results: list[TransferResult] = []

    async def mover(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            debit, credit = rng.sample(wallets, 2)
            [outcome] = await commit_transfers(fresh_db, [t(debit, credit, rng.randint(1, 60))])
            results.append(outcome.result)

    await asyncio.gather(*(mover(seed) for seed in range(32)))
    ok = results.count(R.ok)
    assert ok + results.count(R.exceeds_credits) == len(results)
    assert ok > 0 and results.count(R.exceeds_credits) > 0, "both moves and refusals expected"
    async with fresh_db.read() as s:
        await check_invariants(s)
        held = (
            await s.execute(
                text("SELECT SUM(credits_posted - debits_posted) FROM ledger_accounts "
                     "WHERE debits_must_not_exceed_credits")
            )
        ).scalar_one()
        assert held == funding * hot
        assert await transfer_count(s) == ok + hot
