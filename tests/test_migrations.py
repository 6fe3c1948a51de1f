"""Migrations are the only way the schema is made, and they match the models."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from simcharge import migrate
from simcharge.db import Database, create_engine
from simcharge.models import metadata
from tests.conftest import Backend, _pg_create, _pg_drop, _pg_url


def _diff(connection: Any) -> list[Any]:
    dialect = connection.dialect.name

    def made_here(obj: Any, *_: Any) -> bool:
        # An index the models make on one database only (`Index.ddl_if(dialect=…)`, e.g. the
        # ledger's BRIN index on PostgreSQL): not expected on the other.
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect is None or only.dialect == dialect

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": made_here}
    )
    return list(compare_metadata(context, metadata))


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


def _sql(clause: Any) -> str:
    """A CHECK or WHERE text as the database keeps it, without what it adds on its own:
    parentheses, casts of literals, letter case and spacing (PostgreSQL deparses
    `a >= 0 AND b >= 0` as `((a >= 0) AND (b >= 0))`; SQLite keeps the text as written)."""
    text_ = str(clause if not hasattr(clause, "text") else clause.text)
    text_ = re.sub(r"::[a-z ]+(\[\])?", "", text_.lower())
    text_ = text_.replace("(", " ").replace(")", " ")
    return " ".join(text_.split())


def _guards(connection: Any) -> dict[str, Any]:
    """What `compare_metadata` does not compare: each table's CHECK constraints (name and
    condition), its indexes with their partial-index conditions, and its storage options."""
    inspector = inspect(connection)
    shape: dict[str, Any] = {}
    for table in sorted(metadata.tables):
        checks = {c["name"]: _sql(c["sqltext"]) for c in inspector.get_check_constraints(table)}
        indexes = {}
        for index in inspector.get_indexes(table):
            options = index.get("dialect_options", {})
            where = options.get("postgresql_where") or options.get("sqlite_where")
            indexes[index["name"]] = (
                tuple(index["column_names"]),
                bool(index["unique"]),
                _sql(where) if where is not None else None,
            )
        shape[table] = {"checks": checks, "indexes": indexes}
        if connection.dialect.name == "postgresql":
            shape[table]["reloptions"] = connection.execute(
                text("SELECT reloptions FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": table},
            ).scalar_one()
    return shape


async def test_constraints_and_partial_indexes_agree(engine: AsyncEngine, backend: Backend) -> None:
    """The models' CHECK constraints, partial indexes and fillfactor against the migrations':
    the models' schema is made in an empty scratch database (for this comparison only; the
    schema simcharge runs on is only ever made by the migrations) and both are read back."""
    label = "ref" + uuid.uuid4().hex[:8]
    if backend.is_postgres:
        name = f"simcharge_{label}_{backend.worker}"
        await _pg_create(name)
        url = _pg_url(name)
    else:
        url = f"sqlite+aiosqlite:///{backend.tmp / label}.db"
    reference = create_engine(url, null_pool=True)
    try:
        async with reference.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with reference.connect() as conn:
            expected = await conn.run_sync(_guards)
        async with engine.connect() as conn:
            migrated = await conn.run_sync(_guards)
    finally:
        await reference.dispose()
        if backend.is_postgres:
            await _pg_drop(name)
        else:
            await backend.discard(url)
    checks = sum(len(t["checks"]) for t in migrated.values())
    partial = sum(1 for t in migrated.values() for i in t["indexes"].values() if i[2])
    assert checks >= 9 and partial >= 9, "the comparison must see the constraints"
    for table in expected:
        assert migrated[table] == expected[table], table


async def test_database_is_at_head(engine: AsyncEngine) -> None:
    assert await migrate.current_revision(engine) == migrate.head_revision()


async def test_downgrade_to_nothing_and_up_again(backend: Backend) -> None:
    url = await backend.copy("updown")
    engine = create_engine(url, null_pool=True)
    try:
        await migrate.downgrade(engine, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert set(tables) <= {"alembic_version"}
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
        await backend.discard(url)


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(backend: Backend) -> None:
    if backend.is_postgres:
        pytest.skip("SQLite pragmas")
    url = await backend.copy("pragmas")
    db = Database.from_url(url)
    try:
        async with db.read() as session:
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await session.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await db.dispose()
        await backend.discard(url)
