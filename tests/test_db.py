"""The database layer under a server that drops connections (a restart, a failover), and
`Database.run` retrying the transactions PostgreSQL refuses (deadlocks, serialization failures)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger.service import NewAccount, create_accounts
from simcharge.metrics import DB_RETRIES


def _retries() -> float:
    return sum(s.value for m in DB_RETRIES.collect() for s in m.samples if s.name.endswith("_total"))


@pytest.mark.postgres_only
async def test_a_connection_the_server_dropped_is_replaced_and_the_transaction_retried(
    fresh_db: Database,
) -> None:
    async def backend_pid(s: object) -> int:
        return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())  # type: ignore[attr-defined]

    pid = await fresh_db.run(backend_pid)  # the pool now holds this connection, idle
    dsn = fresh_db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    before = _retries()
    # The next transaction gets the dead connection first: it must not fail, only retry.
    again = await fresh_db.run(backend_pid)
    assert again != pid
    assert _retries() == before + 1


def _retries_for(reason: str) -> float:
    return sum(
        s.value
        for m in DB_RETRIES.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("error") == reason
    )


class TwoRows:
    """Two accounts' rows in a real table, and what each transaction saw go wrong."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.ids = (uuid7(), uuid7())
        self.failures: list[str] = []

    async def create(self) -> None:
        accounts = [NewAccount("USD", "race", id=i) for i in self.ids]

        async def setup(s: AsyncSession) -> None:
            await create_accounts(s, accounts)

        await self.db.run(setup)

    async def add(self, s: AsyncSession, row: int, amount: int) -> None:
        try:
            await s.execute(
                text("UPDATE ledger_accounts SET credits_posted = credits_posted + :a WHERE id = :i"),
                {"a": amount, "i": self.ids[row]},
            )
        except DBAPIError as exc:
            self.failures.append(str(getattr(exc.orig, "sqlstate", "")))
            raise

    async def totals(self) -> list[int]:
        async with self.db.read() as s:
            rows = await s.execute(
                text("SELECT id, credits_posted FROM ledger_accounts WHERE code = 'race'")
            )
            found = {uuid.UUID(str(r[0])): r[1] for r in rows}
        return [found[i] for i in self.ids]


@pytest.mark.postgres_only
async def test_a_deadlock_is_retried_until_both_transactions_commit(fresh_db: Database) -> None:
    """Two transactions lock two rows in opposite orders, each waiting until the other holds
    its first row: PostgreSQL kills one (40P01); `Database.run` runs it again; both commit."""
    rows = TwoRows(fresh_db)
    await rows.create()
    holding = [asyncio.Event(), asyncio.Event()]
    attempts = [0, 0]

    def crosswise(me: int) -> Any:
        async def fn(s: AsyncSession) -> None:
            attempts[me] += 1
            await rows.add(s, me, 1)
            holding[me].set()
            await holding[1 - me].wait()
            await rows.add(s, 1 - me, 10)

        return fn

    before = _retries_for("deadlock")
    await asyncio.wait_for(
        asyncio.gather(fresh_db.run(crosswise(0)), fresh_db.run(crosswise(1))), timeout=60
    )
    assert rows.failures == ["40P01"]
    assert sorted(attempts) == [1, 2]
    assert _retries_for("deadlock") == before + 1
    assert await rows.totals() == [11, 11]  # each transaction's two updates, once


@pytest.mark.postgres_only
async def test_a_serialization_failure_is_retried_until_both_transactions_commit(
    fresh_db: Database,
) -> None:
    """Write skew under SERIALIZABLE: each transaction reads both rows, then (once the other
    has read them too) writes one, so that no serial order explains both. PostgreSQL refuses
    one (40001); `Database.run` runs it again, now after the other: both commit."""
    rows = TwoRows(fresh_db)
    await rows.create()
    read = [asyncio.Event(), asyncio.Event()]
    attempts = [0, 0]
    seen: list[list[int]] = [[], []]

    def skewed(me: int) -> Any:
        async def fn(s: AsyncSession) -> None:
            attempts[me] += 1
            await s.execute(text("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
            total = await s.execute(
                text("SELECT sum(credits_posted) FROM ledger_accounts WHERE code = 'race'")
            )
            seen[me].append(int(total.scalar_one()))
            read[me].set()
            await read[1 - me].wait()
            await rows.add(s, me, 1)

        return fn

    before = _retries_for("serialization_failure")
    await asyncio.wait_for(
        asyncio.gather(fresh_db.run(skewed(0)), fresh_db.run(skewed(1))), timeout=60
    )
    assert sum(attempts) > 2, "one of them must have been refused"
    assert _retries_for("serialization_failure") - before == sum(attempts) - 2
    # What the committed attempts saw is what a serial order gives: the later one saw the
    # earlier one's write.
    assert sorted(s[-1] for s in seen) == [0, 1]
    assert await rows.totals() == [1, 1]


@pytest.mark.postgres_only
async def test_a_deadlock_between_statements_sent_straight_to_asyncpg_is_retried(
    fresh_db: Database,
) -> None:
    """The same crosswise locking as above, by statements sent straight to the driver in the
    session's transaction (as the ledger and charging do): asyncpg's own DeadlockDetectedError,
    not wrapped by SQLAlchemy, is retried like SQLAlchemy's."""
    from simcharge.ledger.repository import driver_in_transaction

    rows = TwoRows(fresh_db)
    await rows.create()
    holding = [asyncio.Event(), asyncio.Event()]
    attempts = [0, 0]
    failures: list[str] = []
    add = "UPDATE ledger_accounts SET credits_posted = credits_posted + $1 WHERE id = $2"

    def crosswise(me: int) -> Any:
        async def fn(s: AsyncSession) -> None:
            attempts[me] += 1
            driver = await driver_in_transaction(s)
            assert driver is not None
            await driver.execute(add, 1, rows.ids[me])
            holding[me].set()
            await holding[1 - me].wait()
            try:
                await driver.execute(add, 10, rows.ids[1 - me])
            except asyncpg.PostgresError as exc:
                failures.append(exc.sqlstate)
                raise

        return fn

    before = _retries_for("deadlock")
    await asyncio.wait_for(
        asyncio.gather(fresh_db.run(crosswise(0)), fresh_db.run(crosswise(1))), timeout=60
    )
    assert failures == ["40P01"]
    assert sorted(attempts) == [1, 2]
    assert _retries_for("deadlock") == before + 1
    assert await rows.totals() == [11, 11]
