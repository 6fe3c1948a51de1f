"""The ledger's journal and the unmatched payment notifications, read through their indexes
(sixteenth round), and who reads the unmatched ones.

What was wrong:
- `GET /api/v1/admin/ledger/transfers` paged a period of `ledger_transfers` by `(created_at,
  id)` with no index on `created_at`: every page, CSV chunk and count read the whole ledger.
- The unmatched notifications' list (`/backoffice/attention/unmatched`,
  `GET /api/v1/admin/provider-events`) filtered `outcome` and ordered by `received_at` with no
  index on either: it read every notification ever received, to find a few.
- An API key `orders:read` (a tool reconciling orders with the provider's settlements) could
  not read them: only `reports.read` did, which is every report.

Migration `0028_journal_indexes` adds, on PostgreSQL, `ix_ledger_transfers_created_brin` (BRIN
on `created_at`: a period is a few ranges of pages; no order for a planner to walk — a btree
there, this round's first form, made the user center scan the recent ledger for one customer's
latest transfers and halved its speed) and, on both, the partial `ix_provider_events_unmatched`
(`outcome`, `received_at`, `id` for the two unmatched outcomes), whose condition the queries
write as literals, so PostgreSQL's generic plan of a prepared statement can use it too. The
statements the endpoints really execute are captured and explained, after a few thousand rows
and ANALYZE. Reading the unmatched ones is now `unmatched.read`: finance, admins, and the keys
`orders:read` and `reports:read`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import Index, event, insert, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from simcharge.auth.apikeys import SCOPES, create_api_key
from simcharge.backoffice import journal
from simcharge.backoffice.provider_events import find_unmatched
from simcharge.backoffice.reports import MOVED
from simcharge.backoffice.roles import ROLE_PERMISSIONS, SCOPE_PERMISSIONS, Permission
from simcharge.config import Settings
from simcharge.db import Database, create_engine, dialect_name
from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerTransfer
from simcharge.models import metadata
from simcharge.orders.models import ProviderEvent
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.migration_helpers import fresh_database, migrate_to, opened

JOURNAL = "/api/v1/admin/ledger/transfers"
EVENTS = "/api/v1/admin/provider-events"
PAGE = "/backoffice/attention/unmatched"
DAYS = 400
PER_DAY = 20
KINDS = ("posted", "posted", "post_pending", "pending", "void_pending")
"""Two in five hold or release (no entry in the index), as charging's reservations do."""


@contextmanager
def _captured(connection: AsyncConnection, table: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements reading `table` executed on the test's connection, with their
    parameters, exactly as sent to the driver."""
    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
             many: bool) -> None:  # fmt: skip
        if f"FROM {table}" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    target = connection.sync_connection
    assert target is not None
    event.listen(target, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(target, "before_cursor_execute", keep)


def _pg_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "NULL"}[value]
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def _pg_plans(s: AsyncSession, statement: str, params: dict[str, Any]) -> tuple[str, str]:
    """The plan PostgreSQL makes for the statement with these values (a custom plan), and the
    generic plan a prepared statement falls back to (parameters unknown at planning)."""
    given: list[Any] = []
    if isinstance(params, dict):  # psycopg: `%(name)s`

        def number(m: re.Match[str]) -> str:
            given.append(params[m.group(1)])
            return f"${len(given)}"

        prepared = re.sub(r"%\(([^)]+)\)s", number, statement)
    else:  # asyncpg: `$1`… already, in order
        prepared, given = statement, list(params or ())
    name = f"q_{uuid.uuid4().hex[:8]}"
    await s.execute(text(f"PREPARE {name} AS {prepared}".replace(":", r"\:")))
    values = ", ".join(_pg_value(v) for v in given)
    run = f"EXPLAIN EXECUTE {name}({values})" if given else f"EXPLAIN EXECUTE {name}"
    plans = []
    for mode in ("force_custom_plan", "force_generic_plan"):
        await s.execute(text(f"SET LOCAL plan_cache_mode = {mode}"))
        plans.append("\n".join(r[0] for r in await s.execute(text(run.replace(":", r"\:")))))
    await s.execute(text(f"DEALLOCATE {name}"))
    await s.execute(text("SET LOCAL plan_cache_mode = auto"))
    return plans[0], plans[1]


async def _sqlite_plan(connection: AsyncConnection, statement: str, params: Any) -> str:
    rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
    return "\n".join(str(r[-1]) for r in rows)


async def _fill_ledger(db: Database, now: datetime) -> None:
    rows = []
    for n in range(DAYS * PER_DAY):
        kind = KINDS[n % len(KINDS)]
        rows.append({
            "id": uuid.uuid4(), "debit_account_id": uuid.uuid4(),
            "credit_account_id": uuid.uuid4(), "amount": 100 + n, "unit": "USD", "kind": kind,
            "pending_id": uuid.uuid4() if kind in ("post_pending", "void_pending") else None,
            "pending_status": "posted" if kind == "pending" else None, "timeout_at": None,
            "code": "topup", "reference": f"order:{uuid.uuid4()}",
            "created_at": now - timedelta(days=DAYS) + timedelta(seconds=n * 86400 // PER_DAY),
        })  # fmt: skip

    async def write(s: AsyncSession) -> None:
        await s.execute(insert(LedgerTransfer), rows)

    await db.run(write)


async def _fill_events(db: Database, now: datetime) -> list[uuid.UUID]:
    """Thousands of notifications that found their order, and a few that matched none (waiting,
    and settled by hand); returns the waiting ones' ids, newest first."""
    rows: list[dict[str, Any]] = []
    waiting: list[uuid.UUID] = []
    for n in range(4000):
        at = now - timedelta(minutes=4000 - n)
        outcome = "applied" if n % 100 else ("unmatched" if n % 200 else "unmatched_settled")
        some = uuid.uuid4()
        row = {
            "id": some, "provider": "stripe" if n % 3 else "sandbox",
            "event_id": f"evt_{n}_{uuid.uuid4().hex[:8]}", "event_type": "payment.succeeded",
            "payload": {}, "status": {"reference": f"T{n}", "amount": 2000, "currency": "USD"},
            "received_at": at, "processed_at": at, "outcome": outcome,
        }  # fmt: skip
        rows.append(row)
        if outcome == "unmatched":
            waiting.append(some)

    async def write(s: AsyncSession) -> None:
        await s.execute(insert(ProviderEvent), rows)

    await db.run(write)
    return waiting[::-1]


async def _analyze(db: Database) -> None:
    async with db.read() as s:
        await s.execute(text("ANALYZE ledger_transfers"))
        await s.execute(text("ANALYZE provider_events"))


async def _assert_indexed(
    db: Database, connection: AsyncConnection, statements: list[tuple[str, Any]], table: str,
    index: str, *, usable: bool = False,
) -> None:  # fmt: skip
    """`usable`: the index can serve the statements (sequential scans off: a table of a few
    thousand rows is a handful of BRIN ranges, which a planner rightly reads whole)."""
    assert statements, "the endpoint read the table"
    async with db.read() as s:
        dialect = dialect_name(s)
        if usable and dialect == "postgresql":
            await s.execute(text("SET LOCAL enable_seqscan = off"))
        for statement, params in statements:
            if dialect == "postgresql":
                custom, generic = await _pg_plans(s, statement, params)
                for plan in (custom, generic):
                    assert index in plan, (statement, plan)
                    assert f"Seq Scan on {table}" not in plan, (statement, plan)
            else:
                plan = await _sqlite_plan(connection, statement, params)
                assert f"INDEX {index}" in plan, (statement, plan)
                assert not re.search(rf"SCAN {table}\b(?! USING)", plan), (statement, plan)


async def test_the_journal_reads_a_period_through_its_index(
    client: httpx.AsyncClient, db: Database, connection: AsyncConnection, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    now = utcnow()
    await _fill_ledger(db, now)
    await _analyze(db)
    finance = await new_staff(db, settings, "finance")
    start, end = (now - timedelta(days=60)).date(), (now - timedelta(days=54)).date()
    period = {"from": start.isoformat(), "to": end.isoformat()}
    monkeypatch.setattr(journal, "CHUNK", 50)  # the CSV's keyset chunks: several
    with _captured(connection, "ledger_transfers") as seen:
        page = await client.get(JOURNAL, headers=finance.auth, params={**period, "limit": 100})
        assert page.status_code == 200, page.text
        later = await client.get(
            JOURNAL, headers=finance.auth, params={**period, "limit": 100, "offset": 100}
        )
        sheet = await client.get(JOURNAL, headers=finance.auth, params={**period, "format": "csv"})
    assert sheet.status_code == 200 and later.status_code == 200
    total = int(page.headers["X-Total-Count"])
    # seven days of twenty a day, three in five of them moved money (± the edges' clock)
    assert 70 <= total <= 100, total
    assert len(page.json()) + len(later.json()) == total
    assert {e["kind"] for e in page.json()} <= set(MOVED)
    assert len(sheet.text.splitlines()) == total + 1
    keyset = [q for q in seen if " > " in q[0]]
    assert len(seen) >= 6 and keyset, [q[0] for q in seen]  # count, pages, chunks after rows
    if connection.dialect.name == "postgresql":  # SQLite (small installations): a scan
        await _assert_indexed(
            db, connection, seen, "ledger_transfers", BRIN, usable=True
        )


async def test_no_btree_orders_the_ledger_by_time(db: Database) -> None:
    """No btree index on `ledger_transfers` leads with `created_at`: with one, PostgreSQL answers
    the user center's "latest transfers of these accounts" (`LATEST_OF_ACCOUNT`) by walking the
    whole ledger's recent transfers newest first (this round's first form of the journal's
    index: the user center at half its speed in the bench)."""
    async with db.read() as s:
        conn = await s.connection()
        found = await conn.run_sync(lambda c: inspect(c).get_indexes("ledger_transfers"))
        leading = [i["name"] for i in found if i["column_names"][:1] == ["created_at"]]
        if conn.dialect.name == "postgresql":
            kinds = dict((await s.execute(text(
                "SELECT c.relname, am.amname FROM pg_index x JOIN pg_class c ON c.oid = "
                "x.indexrelid JOIN pg_am am ON am.oid = c.relam WHERE x.indrelid = "
                "'ledger_transfers'::regclass"
            ))).all())  # fmt: skip
            assert kinds.get(BRIN) == "brin", kinds
            assert [n for n in leading if kinds.get(n) != "brin"] == [], kinds
        else:
            assert leading == []


async def test_the_unmatched_list_reads_through_its_index(
    client: httpx.AsyncClient, db: Database, connection: AsyncConnection, settings: Settings
) -> None:
    waiting = await _fill_events(db, utcnow())
    await _analyze(db)
    finance = await new_staff(db, settings, "finance")
    with _captured(connection, "provider_events") as seen:
        r = await client.get(EVENTS, headers=finance.auth, params={"limit": 10})
        assert r.status_code == 200, r.text
        assert r.headers["X-Total-Count"] == str(len(waiting)) == "20"
        assert [e["id"] for e in r.json()] == [str(i) for i in waiting[:10]]
        settled = {"outcome": "unmatched_settled", "provider": "sandbox"}
        r = await client.get(EVENTS, headers=finance.auth, params=settled)
        assert r.status_code == 200 and r.json(), r.text
        assert {(e["outcome"], e["provider"]) for e in r.json()} == {tuple(settled.values())}
        await web_sign_in(client, finance)
        page = await client.get(PAGE)
        assert page.status_code == 200 and "(20)" in page.text
    await _assert_indexed(db, connection, seen, "provider_events", "ix_provider_events_unmatched")


async def test_only_the_two_unmatched_outcomes_are_listed(db: Database) -> None:
    async with db.read() as s:
        with pytest.raises(ValueError, match="applied"):
            await find_unmatched(s, outcome="applied' OR '1'='1")


def _index(table: str, name: str) -> Index:
    return next(i for i in metadata.tables[table].indexes if i.name == name)


def test_the_indexes_conditions_are_what_the_queries_write() -> None:
    """The two unmatched outcomes are the partial index's condition: one changed without the
    other, the plans above fall back to reading every row; the journal's is a BRIN index."""
    brin = _index("ledger_transfers", BRIN)
    assert brin.dialect_options["postgresql"]["using"] == "brin"
    assert [c.name for c in brin.columns] == ["created_at"]
    unmatched = _index("provider_events", "ix_provider_events_unmatched")
    where = str(unmatched.dialect_options["sqlite"]["where"])
    assert where == "outcome = 'unmatched' OR outcome = 'unmatched_settled'"


fresh = fresh_database("journalidx")
BRIN = "ix_ledger_transfers_created_brin"


async def _indexes(db: Database) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The migration's indexes on this database (the BRIN one on PostgreSQL only), and the
    indexes each table has."""
    async with db.read() as s:
        conn = await s.connection()
        wanted = {"provider_events": "ix_provider_events_unmatched"}
        if conn.dialect.name == "postgresql":
            wanted["ledger_transfers"] = BRIN
        found = await conn.run_sync(
            lambda c: {t: {str(i["name"]) for i in inspect(c).get_indexes(t)}
                       for t in ("ledger_transfers", "provider_events")}
        )  # fmt: skip
        return wanted, found


async def test_the_migration_goes_down_and_up_keeping_the_rows(fresh: str) -> None:
    async with opened(fresh) as db:
        now = utcnow()
        await _fill_ledger(db, now)
        waiting = await _fill_events(db, now)
        wanted, found = await _indexes(db)
        assert all(wanted[t] in found[t] for t in wanted), found
    await migrate_to(fresh, "0027_api_key_client")
    async with opened(fresh) as db:
        _, found = await _indexes(db)
        assert not any(wanted[t] in found[t] for t in wanted), found
        assert "ix_provider_events_unprocessed" in found["provider_events"]  # others kept
    # An operator with a very large ledger builds one beforehand, without the upgrade's lock
    # (PostgreSQL: CONCURRENTLY, outside a transaction); the upgrade finds it made.
    engine = create_engine(fresh, null_pool=True)
    try:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if conn.dialect.name == "postgresql":
                await auto.exec_driver_sql(
                    f"CREATE INDEX CONCURRENTLY {BRIN} ON ledger_transfers USING brin (created_at)"
                )
            else:
                await auto.exec_driver_sql(
                    "CREATE INDEX ix_provider_events_unmatched ON provider_events "
                    "(outcome, received_at, id) "
                    "WHERE outcome = 'unmatched' OR outcome = 'unmatched_settled'"
                )
    finally:
        await engine.dispose()
    await migrate_to(fresh)
    async with opened(fresh) as db:
        wanted, found = await _indexes(db)
        assert all(wanted[t] in found[t] for t in wanted), found
        async with db.read() as s:
            total, rows = await find_unmatched(s, limit=5)
            moved_now = text(f"SELECT count(*) FROM ledger_transfers WHERE kind IN {MOVED}")
            moved = (await s.execute(moved_now)).scalar_one()
        assert total == len(waiting) and [r.id for r in rows] == waiting[:5]
        assert moved == DAYS * PER_DAY * 3 // 5


# --- who reads the unmatched ones ---------------------------------------------------------------


async def test_unmatched_read_is_finances_and_the_reconciling_keys(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await _fill_events(db, utcnow())
    for role, status in (("agent", 403), ("finance", 200), ("admin", 200)):
        staff = await new_staff(db, settings, role)
        r = await client.get(EVENTS, headers=staff.auth)
        assert r.status_code == status, (role, r.text)
        if status == 403:
            assert r.json()["type"] == "/problems/forbidden"
        else:
            assert r.headers["X-Total-Count"] == "20"
        csrf = await web_sign_in(client, staff)
        page = await client.get(PAGE)
        assert page.status_code == status, role
        attention = await client.get("/backoffice/attention")
        assert (f'href="{PAGE}"' in attention.text) is (status == 200), role
        await client.post("/backoffice/logout", data={"csrf": csrf})
    readers = {s for s, held in SCOPE_PERMISSIONS.items() if Permission.unmatched_read in held}
    assert readers == {"orders:read", "reports:read"}
    for scope in sorted(SCOPE_PERMISSIONS):
        issued = await db.run(partial(create_api_key, name="tool", scopes=[scope]))
        key = {"Authorization": f"Bearer {issued.token}"}
        r = await client.get(EVENTS, headers=key)
        assert r.status_code == (200 if scope in readers else 403), (scope, r.text)
        # settling is a person's: no key settles, not even a reader
        some = uuid.uuid4()
        r = await client.post(f"{EVENTS}/{some}/settle", headers=key, json={"note": "x"})
        assert r.status_code == 403, scope
    # `orders:read` opens no report with it, nor the ledger
    orders = await db.run(lambda s: create_api_key(s, "orders", ["orders:read"]))
    key = {"Authorization": f"Bearer {orders.token}"}
    for path in ("/api/v1/admin/reports/topups", "/api/v1/admin/reports/trial-balance", JOURNAL):
        assert (await client.get(path, headers=key)).status_code == 403, path
    assert "matched no order" in SCOPES["orders:read"]
    people = {r.value for r, held in ROLE_PERMISSIONS.items() if Permission.unmatched_read in held}
    assert people == {"finance", "admin"}
