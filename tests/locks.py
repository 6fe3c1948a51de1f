"""Two transactions at once, for tests of lock order on PostgreSQL: a third transaction holds a
row, the requests under test line up behind it (`until_waiting`), and `deadlocks` counts the
deadlocks `Database.run` retried meanwhile (none, when the order is right)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.metrics import DB_RETRIES


def deadlocks() -> float:
    """Deadlocks retried so far by `Database.run` (compare before and after)."""
    return sum(
        s.value
        for m in DB_RETRIES.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("error") == "deadlock"
    )


async def until_waiting(db: Database, count: int) -> None:
    """Until `count` transactions of this database wait for a lock."""
    for _ in range(500):
        async with db.read() as s:
            waiting = (
                await s.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} transactions never waited for a lock")


def app_client(db: Database, settings: Settings) -> httpx.AsyncClient:
    """A client of an app of its own on `db` (no worker): each such client's requests run
    concurrently with the test's own transactions."""
    app = create_app(settings, db=db, run_worker=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
