"""`DriverRead`: the user center's hot SELECTs, run on PostgreSQL straight on asyncpg over the
session's own connection, elsewhere through the session. Both must give the same rows as
SQLAlchemy itself, and a dropped connection must be handled as SQLAlchemy handles it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import bindparam, event, func, inspect, literal_column, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.client import ClientInfo
from simcharge.auth.models import AuthSession
from simcharge.auth.sessions import (
    _SESSION_AND_ACCOUNT,
    ReadsWithSession,
    SessionPolicy,
    find_session,
    open_session,
)
from simcharge.db import RAW_CONNECTION, Database, is_unreachable, table_of
from simcharge.driver_reads import AnyOf, DriverRead, ReadTogether, detached
from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Line
from simcharge.lines.repository import _HOLDINGS, HOLDINGS_OF_ACCOUNT, LINES_OF_ACCOUNT
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from simcharge.notifications.models import Notice
from simcharge.notifications.service import _UNREAD_OF, NOTICES_OF
from simcharge.portal.records import _LATEST, LATEST_OF_ACCOUNT
from tests.factories import create_account, create_line

_HOLDINGS_OF = DriverRead(
    _HOLDINGS.where(LedgerAccount.line_id.in_(bindparam("lines", expanding=True)))
)
"""The holdings of given lines: an `IN` list of any length."""

SECRET = "driver-reads-secret-driver-reads-secret-0123456789"
POLICY = SessionPolicy(idle=timedelta(hours=1), absolute=timedelta(hours=2))


async def _customer(s: AsyncSession, email: str = "dora@example.com") -> dict[str, Any]:
    """An account with two lines, money, buckets (one without an end), notices (read and
    unread, with JSON parameters) and a session."""
    account = await create_account(s, display_name="Dora", email=email)
    lines = [
        await create_line(s, account_id=account.id),
        await create_line(s, account_id=account.id),
    ]
    lines[1].label = "Work"
    for line in lines:
        await credit_wallet(s, line, 1234, source=f"test:{line.id}", code="topup")
        await grant_units(s, line, [UnitGrant("DATA_B", 5 * 1024**2, 30, ("EU",)),
                                    UnitGrant("SMS", 10, None, ())], source=f"test:{line.id}")
    now = utcnow()
    for k in range(3):
        s.add(Notice(account_id=account.id, template="balance.low",
                     params={"msisdn": lines[0].msisdn, "balance": 100 + k, "nested": {"k": [k]}},
                     line_id=lines[0].id if k else None,
                     created_at=now - timedelta(minutes=k), read_at=now if k == 1 else None))
    issued = await open_session(s, SECRET, account_id=account.id,
                                client=ClientInfo(ip="198.51.100.7", user_agent="test"),
                                policy=POLICY, now=now)
    await s.flush()
    wallets = [line.wallet_account_id for line in lines]
    return {"account": account, "lines": lines, "wallets": wallets, "token": issued.token}


async def _both(s: AsyncSession, read: DriverRead, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of `read`, checked against SQLAlchemy's own execution of its statement."""
    ours = await read.all(s, params)
    theirs = (await s.execute(read.statement, params)).all()
    assert [tuple(r) for r in ours] == [tuple(r) for r in theirs]
    assert [r._fields for r in ours[:1]] == [tuple(r._fields) for r in theirs[:1]]
    for mine, sqlalchemy_row in zip(ours, theirs, strict=True):
        for a, b in zip(mine, sqlalchemy_row, strict=True):
            # The same Python types: aware datetimes in UTC, UUIDs, decoded JSON.
            assert isinstance(a, type(b)) or a is None
            if isinstance(a, datetime):
                assert a.tzinfo is not None and a.utcoffset() == timedelta(0)
    return [tuple(r) for r in ours]


async def test_the_user_centers_reads_give_what_sqlalchemy_gives(db: Database) -> None:
    customer = await db.run(_customer)
    account, lines = customer["account"], customer["lines"]
    async with db.read() as s:
        rows = await _both(s, LINES_OF_ACCOUNT, {"account": account.id})
        assert [r[0] for r in rows] == [line.id for line in lines]
        held = await _both(s, _HOLDINGS_OF, {"lines": [line.id for line in lines]})
        # Per line: the wallet and two buckets; the bucket's zones come back as a list.
        assert len(held) == 6
        assert sorted(str(r[8]) for r in held) == sorted(["None", "None", "['EU']", "['EU']",
                                                          "[]", "[]"])
        latest = await _both(s, _LATEST, {"ids": customer["wallets"], "limit": 10})
        assert len(latest) == 2 and {r[6] for r in latest} == {"topup"}
        notices = await _both(s, NOTICES_OF, {"account": account.id, "limit": 5})
        assert [n[3]["nested"] for n in notices] == [{"k": [0]}, {"k": [1]}, {"k": [2]}]
        unread = await _both(s, _UNREAD_OF, {"account": account.id, "limit": 5})
        assert len(unread) == 2
        assert await _both(s, NOTICES_OF, {"account": uuid.uuid4(), "limit": 5}) == []


_USER_CENTER = ReadTogether(LINES_OF_ACCOUNT, HOLDINGS_OF_ACCOUNT, LATEST_OF_ACCOUNT, NOTICES_OF)


def _as_read(reads: list[list[Any]]) -> list[list[tuple[Any, ...]]]:
    """Each read's rows as tuples; the holdings (read without an order) sorted."""
    rows = [[tuple(r) for r in read] for read in reads]
    return [sorted(read, key=str) if k == 1 else read for k, read in enumerate(rows)]


def _user_center(account_id: uuid.UUID, latest: int, notices: int) -> list[dict[str, Any]]:
    return [{"account": account_id}, {"account": account_id},
            {"account": account_id, "limit": latest}, {"account": account_id, "limit": notices}]


async def test_reads_together_give_each_reads_rows_with_their_own_parameters(
    db: Database,
) -> None:
    customer = await db.run(_customer)
    stranger = await db.run(lambda s: _customer(s, "eve@example.com"))  # whose rows never come
    account, lines = customer["account"], customer["lines"]
    # "limit" is a parameter of two reads: each gets its own (1 and 2).
    params = _user_center(account.id, 1, 2)
    async with db.read() as s:
        together = await _USER_CENTER.all(s, params)
        apart = [await _both(s, read, p)
                 for read, p in zip(_USER_CENTER.reads, params, strict=True)]
        assert _as_read(together) == _as_read(apart)
        for rows, read, p in zip(together, _USER_CENTER.reads, params, strict=True):
            assert rows[0]._fields == (await read.all(s, p))[0]._fields
        got_lines, holdings, latest, notices = together
        assert [r.id for r in got_lines] == [line.id for line in lines]
        # Every wallet and bucket of both lines, as the read of the lines' own gives them.
        of_lines = await _HOLDINGS_OF.all(s, {"lines": [line.id for line in lines]})
        assert sorted(map(tuple, holdings)) == sorted(map(tuple, of_lines)) and len(of_lines) == 6
        ids = [r.id for r in holdings]
        assert len(latest) == 1 and latest[0].credit_account_id in ids
        assert [n.params["nested"] for n in notices] == [{"k": [0]}, {"k": [1]}]
        # The latest transfers of the account are those of its lines' ledger accounts: per
        # line a top-up and two grants.
        everything = await _USER_CENTER.all(s, _user_center(account.id, 10, 5))
        assert everything[2] == await _LATEST.all(s, {"ids": ids, "limit": 10})
        assert len(everything[2]) == 6 and len(everything[3]) == 3
        # An account with nothing: four empty lists.
        assert await _USER_CENTER.all(s, _user_center(uuid.uuid4(), 10, 5)) == [[], [], [], []]
        others = await _USER_CENTER.all(s, _user_center(stranger["account"].id, 10, 5))
        assert {r.id for r in others[0]} == {line.id for line in stranger["lines"]}
        assert not {r.id for r in others[1]} & set(ids)
        with pytest.raises(ValueError, match="4 reads, 3 parameters"):
            await _USER_CENTER.all(s, params[:3])


@pytest.mark.postgres_only
async def test_on_postgresql_reads_together_are_one_statement_also_through_sqlalchemy(
    db: Database,
) -> None:
    customer = await db.run(_customer)
    account_id = customer["account"].id
    heard: list[str] = []

    def listen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        heard.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", listen)
    try:
        async with db.read() as s:
            together = await _USER_CENTER.all(s, _user_center(account_id, 10, 5))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listen)
    [statement] = [st for st in heard if st.startswith("SELECT")]
    assert statement.startswith("SELECT ARRAY((SELECT row(lines.id,")
    assert statement.count("ARRAY((SELECT row(") == 4
    # Run by SQLAlchemy (as after a dropped connection), the rows are the same.
    combined = {f"r{i}_{k}": v
                for i, p in enumerate(_user_center(account_id, 10, 5)) for k, v in p.items()}
    async with db.read() as s:
        row = (await s.execute(_USER_CENTER._combined.statement, combined)).one()
    assert _as_read(list(row)) == _as_read(together)
    assert [len(rows) for rows in together] == [2, 6, 6, 3]


async def test_a_pages_reads_with_the_session_check_are_the_session_accounts_own(
    db: Database,
) -> None:
    dora = await db.run(_customer)
    eve = await db.run(lambda s: _customer(s, "eve@example.com"))
    reads = ReadsWithSession(_USER_CENTER.reads, ({}, {}, {"limit": 10}, {"limit": 5}))
    # The reads' `account` is the session's: the statements ask for the token's hash instead.
    assert all("account" not in r.parameters() for r in reads.together.reads)
    assert all("hash" in r.parameters() for r in reads.together.reads)
    now = utcnow()
    async with db.read() as s:
        for customer in (dora, eve):
            found = await find_session(s, SECRET, customer["token"], policy=POLICY, now=now,
                                       reads=reads)
            assert found is not None and found.account.id == customer["account"].id
            assert found.read is not None
            assert _as_read(found.read) == _as_read(await _USER_CENTER.all(
                s, _user_center(customer["account"].id, 10, 5)))
            assert [r.id for r in found.read[0]] == [line.id for line in customer["lines"]]
        # Without reads nothing else is read.
        plain = await find_session(s, SECRET, dora["token"], policy=POLICY, now=now)
        assert plain is not None and plain.read is None
        assert await find_session(s, SECRET, "not-a-token", policy=POLICY, now=now,
                                  reads=reads) is None

    async def sign_out(s: AsyncSession) -> None:
        await s.execute(update(AuthSession).where(AuthSession.account_id == dora["account"].id)
                        .values(revoked_at=now, revoked_reason="logout"))

    await db.run(sign_out)
    async with db.read() as s:
        assert await find_session(s, SECRET, dora["token"], policy=POLICY, now=now,
                                  reads=reads) is None


def test_any_of_is_an_in_subquery_written_for_the_index_on_postgresql() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    t = table_of(LedgerTransfer)
    clause = AnyOf(t.c.credit_account_id, select(Notice.id).where(Notice.template == "x"))
    on_pg = str(clause.compile(dialect=postgresql.dialect()))
    assert on_pg.startswith("ledger_transfers.credit_account_id = ANY(ARRAY((SELECT notices.id")
    on_sqlite = str(clause.compile(dialect=sqlite.dialect()))
    assert on_sqlite.startswith("ledger_transfers.credit_account_id IN (SELECT notices.id")


@pytest.mark.postgres_only
async def test_the_latest_activity_of_an_account_is_found_by_index_not_by_a_scan(
    db: Database,
) -> None:
    """With `IN (subquery) OR IN (subquery)` PostgreSQL can only filter every transfer (a scan,
    even when scans are discouraged); with `= ANY(ARRAY(subquery))` it looks the accounts up
    first, then their transfers in the indexes."""
    from simcharge.driver_reads import _driver_of

    customer = await db.run(_customer)
    t = table_of(LedgerTransfer)
    accounts = (select(LedgerAccount.id).join(Line, Line.id == LedgerAccount.line_id)
                .where(Line.account_id == bindparam("account")))
    scanned = DriverRead(
        select(t.c.id)
        .where(t.c.credit_account_id.in_(accounts) | t.c.debit_account_id.in_(accounts))
        .order_by(t.c.created_at.desc()).limit(10)
    )
    async with db.read() as s:
        found = await _driver_of(s)
        assert found is not None
        conn = found[0]
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + LATEST_OF_ACCOUNT.sql_for(kind_1=2),
                customer["account"].id, "posted", "post_pending", 10))
            worse = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + scanned.sql, customer["account"].id, 10))
    assert "Seq Scan on ledger_transfers" not in plan
    assert "ix_ledger_transfers_credit_account_id" in plan
    assert "ix_ledger_transfers_debit_account_id" in plan
    assert "Seq Scan on ledger_transfers" in worse


async def test_in_lists_of_any_length_not_in_and_values_bound_in_the_statement(
    db: Database,
) -> None:
    customer = await db.run(_customer)
    t = table_of(LedgerTransfer)
    not_in = DriverRead(
        select(t.c.id, t.c.code)
        .where(t.c.credit_account_id.in_(bindparam("ids", expanding=True)),
               t.c.code.not_in(bindparam("codes", expanding=True)),
               t.c.unit.in_(["USD", "EUR"]))
        .order_by(t.c.id)
    )
    async with db.read() as s:
        both = await _both(s, not_in, {"ids": customer["wallets"], "codes": ["grant"]})
        assert len(both) == 2
        assert await _both(s, not_in, {"ids": customer["wallets"][:1], "codes": ["grant"]})
        assert await _both(s, not_in, {"ids": customer["wallets"], "codes": ["topup"]}) == []
        assert await _both(s, not_in, {"ids": [], "codes": ["grant"]}) == []
        # Across the sizes lists are sent as (1, 2, 4, … 64 parameters, then one array): the
        # customer's wallets among strangers, in any position; a code list of 0 to 70.
        strangers = [uuid.uuid4() for _ in range(80)]
        for length in (1, 2, 3, 4, 5, 8, 9, 63, 64, 65, 80):
            ids = [*strangers[:length - 2], *customer["wallets"]][-length:]
            rows = await _both(s, not_in, {"ids": ids, "codes": ["grant"]})
            assert len(rows) == len(set(ids) & set(customer["wallets"]))
            codes = [f"code-{k}" for k in range(length - 1)] + ["topup"]
            assert await _both(s, not_in, {"ids": customer["wallets"], "codes": codes}) == []
        assert len(await _both(s, not_in, {"ids": customer["wallets"], "codes": []})) == 2


def test_in_lists_are_sent_as_parameters_padded_to_a_power_of_two_or_as_one_array() -> None:
    from simcharge.driver_reads import _list_size

    assert [_list_size(n) for n in (0, 1, 2, 3, 4, 5, 8, 9, 33, 64, 65, 1000)] == [
        0, 1, 2, 4, 4, 8, 8, 16, 64, 64, 0, 0]
    t = table_of(LedgerTransfer)
    read = DriverRead(
        select(t.c.id).where(t.c.credit_account_id.in_(bindparam("ids", expanding=True))
                             | t.c.debit_account_id.in_(bindparam("ids", expanding=True)),
                             t.c.code.not_in(bindparam("codes", expanding=True)),
                             t.c.amount > bindparam("least"))
    )
    three = read.sql_for(ids=3, codes=1)
    # One name, one set of parameters, wherever it is used; then the next names in order.
    assert "credit_account_id IN ($1, $2, $3, $4) OR " in three
    assert "debit_account_id IN ($1, $2, $3, $4)" in three
    assert "code NOT IN ($5)" in three and "amount > $6" in three
    many = read.sql_for(ids=65, codes=0)
    assert "credit_account_id = ANY($1)" in many and "code <> ALL($2)" in many
    assert "amount > $3" in many and read.sql == many


async def test_the_session_and_its_account_are_detached_objects_as_the_orm_loads_them(
    db: Database,
) -> None:
    customer = await db.run(_customer)
    now = utcnow()
    async with db.read() as s:
        found = await find_session(s, SECRET, customer["token"], policy=POLICY, now=now)
        loaded = await s.get(Account, customer["account"].id)
    assert found is not None and loaded is not None
    assert found.account.id == customer["account"].id and not found.stale
    for attribute in inspect(Account).column_attrs:
        assert getattr(found.account, attribute.key) == getattr(loaded, attribute.key)
    state = inspect(found.account)
    assert state.detached and not state.modified and state.key is not None
    assert inspect(found.session).detached and found.session.account_id == found.account.id

    # Like any detached object it can join a write session: a change is an UPDATE of that row.
    async def rename(s: AsyncSession) -> None:
        account = await s.merge(found.account)
        account.display_name = "Dora B."

    await db.run(rename)
    async with db.read() as s:
        again = await _SESSION_AND_ACCOUNT.first(s, {"hash": found.session.token_hash})
        count = (await s.execute(select(Account.id).where(Account.username ==
                                                          found.account.username))).all()
    assert again is not None and again.a_display_name == "Dora B." and len(count) == 1
    assert detached(Account, again, "a_").display_name == "Dora B."
    assert await _SESSION_AND_ACCOUNT.first(s, {"hash": "no-such-hash"}) is None


@pytest.mark.postgres_only
async def test_on_postgresql_the_statement_goes_to_asyncpg_and_listeners_hear_it(
    db: Database,
) -> None:
    customer = await db.run(_customer)
    heard: list[tuple[str, Any]] = []

    def listen(_conn: object, _cursor: object, statement: str, params: Any, *_: object) -> None:
        heard.append((statement, params))

    event.listen(db.engine.sync_engine, "before_cursor_execute", listen)
    try:
        async with db.read() as s:
            rows = await _LATEST.all(s, {"ids": customer["wallets"], "limit": 10})
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listen)
    assert len(rows) == 2
    # One statement (the tests' sessions are savepoints, SQLAlchemy's own), with the IN list as
    # one array parameter: the same prepared statement serves one line or five.
    [(statement, params)] = [(st, p) for st, p in heard if st.startswith("SELECT")]
    assert statement == _LATEST.sql_for(ids=2, kind_1=2)
    assert ("credit_account_id IN ($1, $2) OR ledger_transfers.debit_account_id IN ($1, $2)"
            in statement)
    # The statement's own list (the posted kinds) is a parameter too.
    assert "kind IN ($3, $4)" in statement and params[2:4] == ("posted", "post_pending")
    assert list(params[:2]) == customer["wallets"] and params[4] == 10
    assert _LATEST.parameters() == ("ids", "kind_1", "limit")


@pytest.mark.postgres_only
async def test_postgresql_keeps_one_plan_for_a_statement_with_an_in_list(db: Database) -> None:
    """With the list as one array PostgreSQL plans the statement again on every execution;
    as parameters it settles on a generic plan after five."""
    from simcharge.driver_reads import _driver_of

    customer = await db.run(_customer)
    ids = [line.id for line in customer["lines"]]
    async with db.read() as s:
        for k in range(12):
            others = [uuid.uuid4()] if k % 2 else []
            assert len(await _HOLDINGS_OF.all(s, {"lines": [*others, *ids][:2]})) in (3, 6)
        found = await _driver_of(s)
        assert found is not None
        [plans] = await found[0].fetch(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            _HOLDINGS_OF.sql_for(lines=2),
        )
    assert plans["generic_plans"] >= 6 and plans["custom_plans"] <= 5


_PID = DriverRead(select(func.pg_backend_pid().label("pid")))


async def _terminate(db: Database, pids: list[int]) -> None:
    url = db.engine.url.set(drivername="postgresql")
    admin = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


@pytest.mark.postgres_only
async def test_a_read_on_a_connection_the_server_dropped_is_read_again_on_another(
    fresh_db: Database,
) -> None:
    customer = await fresh_db.run(_customer)
    account_id = customer["account"].id
    # A read takes a pooled connection of its own (not the session's).
    async with fresh_db.read() as s:
        dropped = (await _PID.first(s, {})).pid
        assert RAW_CONNECTION in s.info and not s.in_transaction()
    await _terminate(fresh_db, [dropped])  # as a restart of that one backend would
    # The pool hands out its connections in turn: one of the next reads gets the dropped one,
    # which is thrown away; the statement is answered on another.
    seen = set()
    for _ in range(fresh_db.engine.pool.size() + 2):  # type: ignore[attr-defined]
        async with fresh_db.read() as s:
            assert len(await LINES_OF_ACCOUNT.all(s, {"account": account_id})) == 2
            seen.add((await _PID.first(s, {})).pid)
    assert dropped not in seen


@pytest.mark.postgres_only
async def test_when_every_connection_was_dropped_a_read_fails_as_sqlalchemy_does_then_recovers(
    fresh_db: Database,
) -> None:
    customer = await fresh_db.run(_customer)
    account_id = customer["account"].id

    async def held_read() -> int:
        async with fresh_db.read() as s:
            pid = (await _PID.first(s, {})).pid
            await asyncio.sleep(0.05)  # three at once: three connections in the pool
            return int(pid)

    pids = await asyncio.gather(held_read(), held_read(), held_read())
    assert len(set(pids)) == 3
    await _terminate(fresh_db, pids)  # a restart of the server
    with pytest.raises(DBAPIError) as failed:
        async with fresh_db.read() as s:
            await LINES_OF_ACCOUNT.all(s, {"account": account_id})
    # Answered 503 by the API, as any query on a dropped connection; SQLAlchemy has then
    # replaced every older connection of the pool.
    assert failed.value.connection_invalidated and is_unreachable(failed.value)
    async with fresh_db.read() as s:
        assert len(await LINES_OF_ACCOUNT.all(s, {"account": account_id})) == 2


@pytest.mark.postgres_only
async def test_a_read_that_also_goes_through_sqlalchemy_holds_one_connection_at_a_time(
    fresh_db: Database,
) -> None:
    customer = await fresh_db.run(_customer)
    async with fresh_db.read() as s:
        mine = (await _PID.first(s, {})).pid
        assert RAW_CONNECTION in s.info
        # A statement through the session: it takes its own connection and the read's goes
        # back to the pool at once; the next DriverRead runs on the session's.
        through = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert RAW_CONNECTION not in s.info
        assert (await _PID.first(s, {})).pid == through
        rows = await LINES_OF_ACCOUNT.all(s, {"account": customer["account"].id})
        assert len(rows) == 2
    assert fresh_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert mine is not None


@pytest.mark.postgres_only
async def test_a_session_that_commits_reads_on_its_next_connection(fresh_db: Database) -> None:
    customer = await fresh_db.run(_customer)
    account_id = customer["account"].id
    async with fresh_db.transaction() as s:
        assert len(await LINES_OF_ACCOUNT.all(s, {"account": account_id})) == 2
        await s.commit()
        # The connection went back to the pool; the next read takes one again.
        assert len(await LINES_OF_ACCOUNT.all(s, {"account": account_id})) == 2


def test_a_statement_with_a_literal_percent_sign_is_refused_when_built() -> None:
    t = table_of(LedgerTransfer)
    with pytest.raises(ValueError, match="literal %"):
        DriverRead(select(t.c.id).where(t.c.code.like(literal_column("'top%'"))))
    # A pattern given as a parameter is fine.
    read = DriverRead(select(t.c.id).where(t.c.code.like(bindparam("pattern"))))
    assert read.parameters() == ("pattern",) and "LIKE $1" in read.sql
