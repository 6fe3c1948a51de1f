"""Migration `0032_customer_search_fold`: every account's name written before it gets its
folded form (`display_name_folded`), by Python's `fold` — the function that folds names written
since and what staff type, so the search finds old and new names alike — in batches of
`BATCH`; an account without a name gets none. Downgrade drops the column. Run on a database
taken back to 0031, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from sqlalchemy import inspect

from simcharge.accounts.models import Account
from simcharge.backoffice.customers import find_customers
from simcharge.db import UTCDateTime, create_engine
from simcharge.kit.clock import utcnow
from simcharge.kit.fold import fold
from simcharge.kit.ids import uuid7
from tests.backoffice.test_round17_search_fold import NAMES, _sample
from tests.migration_helpers import fresh_database, migrate_to, opened

fresh = fresh_database("searchfold")

_MIGRATION = importlib.import_module(
    "simcharge.migrations.versions.2026-12-12-0920_customer_search_fold"
)
_BEFORE = "0031_receipt_issued_at"
_accounts = sa.table(  # as 0031 left it: no folded name
    "accounts",
    sa.column("id", sa.Uuid()),
    sa.column("username", sa.String()),
    sa.column("display_name", sa.String()),
    sa.column("password_hash", sa.String()),
    sa.column("language", sa.String()),
    sa.column("status", sa.String()),
    sa.column("created_at", UTCDateTime(timezone=True)),
    sa.column("updated_at", UTCDateTime(timezone=True)),
)


async def _columns(url: str) -> set[str]:
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            found = await conn.run_sync(lambda c: inspect(c).get_columns("accounts"))
        return {c["name"] for c in found}
    finally:
        await engine.dispose()


async def test_names_written_before_get_their_fold_in_batches(fresh: str) -> None:
    await migrate_to(fresh, _BEFORE)
    assert "display_name_folded" not in await _columns(fresh)
    names = [*NAMES.values(), *_sample(), "김" * 120 + "Straße", "", None]
    count = _MIGRATION.BATCH * 2 + 7  # three batches, the last one short
    written = {uuid7(): names[i % len(names)] for i in range(count)}
    rows = [
        {"id": i, "username": f"old{n}", "display_name": name, "password_hash": "!",
         "language": "en", "status": "active", "created_at": utcnow(), "updated_at": utcnow()}
        for n, (i, name) in enumerate(written.items())
    ]  # fmt: skip
    engine = create_engine(fresh, null_pool=True)
    try:
        async with engine.begin() as conn:  # no ORM: as the rows were written before 0032
            await conn.execute(sa.insert(_accounts), rows)
    finally:
        await engine.dispose()

    await migrate_to(fresh)

    async with opened(fresh) as db, db.read() as s:
        stored = await s.execute(
            sa.select(Account.id, Account.display_name, Account.display_name_folded).where(
                Account.username.like("old%")
            )
        )
        got = {i: (name, folded) for i, name, folded in stored}
        found = await find_customers(s, "garcia")
    assert len(got) == count
    for i, name in written.items():
        assert got[i] == (name, fold(name) if name is not None else None), name
    assert {a.display_name for a in found.accounts} == {"María García", "Maria Garcia"}


async def test_downgrade_drops_the_column_and_upgrade_fills_it_again(fresh: str) -> None:
    async with opened(fresh) as db, db.transaction() as s:
        s.add(Account(id=uuid7(), username="zoe", display_name="Zoë", password_hash="!"))
    await migrate_to(fresh, _BEFORE)
    assert "display_name_folded" not in await _columns(fresh)
    await migrate_to(fresh)
    assert "display_name_folded" in await _columns(fresh)
    async with opened(fresh) as db, db.read() as s:
        assert [a.username for a in (await find_customers(s, "ZOE")).accounts] == ["zoe"]
