"""The database layer under a server that drops connections (a restart, a failover)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from simcharge.db import Database
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
