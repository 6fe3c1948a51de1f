"""Charging marks a line's activity after it has locked the line's accounts; a top-up locks the
line first and then those accounts. The mark therefore skips a line another transaction holds
instead of waiting for it (which would close a deadlock cycle, `charging.repository`)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from simcharge.charging.repository import SET_LAST_ACTIVITY
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from tests.charging.helpers import make_line


async def _mark(db: Database, line_id: object) -> int:
    async def run(s: object) -> int:
        result = await s.execute(SET_LAST_ACTIVITY, {"b_id": line_id, "b_at": utcnow()})  # type: ignore[attr-defined]
        return int(result.rowcount)

    return await db.run(run)  # type: ignore[arg-type]


async def _last_activity(db: Database, line_id: object) -> object:
    async with db.read() as s:
        return (await s.execute(select(Line.last_activity_at).where(Line.id == line_id))).scalar()


async def test_the_mark_writes_a_free_line(fresh_db: Database) -> None:
    t = await make_line(fresh_db)
    assert await _last_activity(fresh_db, t.line.id) is None
    assert await _mark(fresh_db, t.line.id) == 1
    assert await _last_activity(fresh_db, t.line.id) is not None


@pytest.mark.postgres_only("row locks: SQLite has one writer at a time")
async def test_the_mark_skips_a_line_another_transaction_holds_without_waiting(
    fresh_db: Database,
) -> None:
    t = await make_line(fresh_db)
    async with fresh_db.transaction() as holder:
        await holder.execute(
            text("SELECT id FROM lines WHERE id = :id FOR UPDATE"), {"id": t.line.id}
        )
        # Held until this block ends: a mark that waited would never return within the bound.
        assert await asyncio.wait_for(_mark(fresh_db, t.line.id), timeout=10) == 0
    assert await _last_activity(fresh_db, t.line.id) is None
    assert await _mark(fresh_db, t.line.id) == 1
