"""`Database.read()`: a session that cannot write, and on PostgreSQL one that runs its statements
without a transaction (autocommit on the writer's own pool)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert, select, text, update

from simcharge.accounts.models import Account
from simcharge.db import Database, ReadOnlySession, table_of
from simcharge.kit.ids import uuid7


async def _an_account(db: Database) -> Account:
    account = Account(id=uuid7(), username=f"reader-{uuid7().hex[:8]}", password_hash="!")

    async def add(s: object) -> None:
        s.add(account)  # type: ignore[attr-defined]

    await db.run(add)
    return account


async def _usernames(db: Database) -> set[str]:
    async with db.read() as s:
        return set((await s.execute(select(Account.username))).scalars())


async def test_a_read_session_refuses_an_orm_write_and_nothing_is_written(db: Database) -> None:
    before = await _usernames(db)
    async with db.read() as s:
        s.add(Account(id=uuid7(), username="never-written", password_hash="!"))
        with pytest.raises(ReadOnlySession):
            await s.flush()
    assert await _usernames(db) == before


async def test_a_read_session_refuses_a_changed_object_it_loaded(db: Database) -> None:
    account = await _an_account(db)
    async with db.read() as s:
        loaded = await s.get(Account, account.id)
        assert loaded is not None
        loaded.username = "renamed-in-a-read"
        # The next query would autoflush the change: refused instead.
        with pytest.raises(ReadOnlySession):
            await s.execute(select(Account.id))
    assert "renamed-in-a-read" not in await _usernames(db)


async def test_a_read_session_refuses_insert_update_and_delete_statements(db: Database) -> None:
    account = await _an_account(db)
    accounts = table_of(Account)
    statements = [
        insert(accounts).values(id=uuid7(), username="inserted-in-a-read", password_hash="!"),
        update(Account).where(Account.id == account.id).values(username="updated-in-a-read"),
        accounts.delete().where(accounts.c.id == account.id),
    ]
    for statement in statements:
        async with db.read() as s:
            with pytest.raises(ReadOnlySession):
                await s.execute(statement)
    names = await _usernames(db)
    assert account.username in names
    assert not {"inserted-in-a-read", "updated-in-a-read"} & names


async def test_writes_still_go_through_run(db: Database) -> None:
    account = await _an_account(db)
    assert account.username in await _usernames(db)


@pytest.mark.postgres_only
async def test_on_postgresql_a_read_runs_each_statement_outside_a_transaction(
    fresh_db: Database,
) -> None:
    async with fresh_db.read() as s:
        # In a transaction now() would stay the start of it; outside one, each statement is its
        # own transaction with its own start.
        first = (await s.execute(text("SELECT now()"))).scalar_one()
        await asyncio.sleep(0.02)
        second = (await s.execute(text("SELECT now()"))).scalar_one()
    assert second > first

    # A write transaction still holds its statements together.
    async def two_nows(s: object) -> tuple[object, object]:
        a = (await s.execute(text("SELECT now()"))).scalar_one()  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)
        b = (await s.execute(text("SELECT now()"))).scalar_one()  # type: ignore[attr-defined]
        return a, b

    a, b = await fresh_db.run(two_nows)
    assert a == b


@pytest.mark.postgres_only
async def test_on_postgresql_reads_share_the_writers_pool_and_see_what_was_committed(
    fresh_db: Database,
) -> None:
    account = await _an_account(fresh_db)
    assert account.username in await _usernames(fresh_db)
    pool = fresh_db.engine.pool
    checked_out = pool.checkedout()  # type: ignore[attr-defined]
    async with fresh_db.read() as s:
        await s.execute(select(Account.id).limit(1))
        assert pool.checkedout() == checked_out + 1  # type: ignore[attr-defined]
    assert pool.checkedout() == checked_out  # type: ignore[attr-defined]


async def test_a_read_session_is_used_again_clean_and_still_read_only(
    fresh_db: Database,
) -> None:
    """Reads keep their closed sessions for the next read, as writes do: what the first read
    loaded is detached, the next read starts empty and still cannot write."""
    account = await _an_account(fresh_db)
    async with fresh_db.read() as s:
        first = s
        loaded = await s.get(Account, account.id)
        assert loaded is not None and loaded in s
    assert loaded.username == account.username  # still readable once detached
    async with fresh_db.read() as s:
        assert s is first
        assert loaded not in s and not list(s.identity_map.values())
        s.add(Account(id=uuid7(), username="never-written-either", password_hash="!"))
        with pytest.raises(ReadOnlySession):
            await s.flush()
    # A read inside a read takes a session of its own.
    async with fresh_db.read() as outer, fresh_db.read() as inner:
        assert outer is not inner
    assert "never-written-either" not in await _usernames(fresh_db)
