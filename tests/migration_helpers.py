"""What a test of a data migration does, written once: a database of its own (a copy of the
migrated template, on SQLite and PostgreSQL alike — `Backend.copy`), opened for a while, and
taken down to a revision or up to the latest one, as `simcharge migrate` does (`migrate.upgrade`,
`migrate.downgrade`, with a pool of no connections so none outlives the step).

In a test module: `fresh = fresh_database("label")` makes the fixture `fresh` (the database's
URL, dropped after the test); then `async with opened(fresh) as db`, `await migrate_to(fresh,
"0026_audit_target_index")` and `await migrate_to(fresh)` (the latest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from simcharge import migrate
from simcharge.db import Database, create_engine
from tests.conftest import Backend


def fresh_database(label: str) -> Any:
    """A fixture: the URL of a new database with the migrated schema, named after `label`
    (unique per test module: two modules' copies may exist at once), dropped after the test."""

    @pytest.fixture
    async def fresh(backend: Backend) -> AsyncIterator[str]:
        url = await backend.copy(label)
        try:
            yield url
        finally:
            await backend.discard(url)

    return fresh


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Database]:
    """The application's `Database` on `url`, disposed of on the way out (a migration step
    between two of them finds no connection left open)."""
    db = Database.from_url(url)
    try:
        yield db
    finally:
        await db.dispose()


async def migrate_to(url: str, revision: str | None = None) -> None:
    """Take the database at `url` down to `revision`, or up to the latest one (None)."""
    engine = create_engine(url, null_pool=True)
    try:
        if revision is None:
            await migrate.upgrade(engine)
        else:
            await migrate.downgrade(engine, revision)
    finally:
        await engine.dispose()
