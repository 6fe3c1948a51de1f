"""A database that does not answer: a PostgreSQL server that accepts the connection and never
says a word (a hung server, a half-open network path), or a statement that runs too long.
The web answers 503 `service-unavailable` with `Retry-After` within the timeouts, changes
nothing and does not retry; a command says so in one line. The command line and
`simcharge worker` have no statement limit (migrations, imports, sweeps run long)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database, Timeouts, is_unreachable, retry_reason
from tests.conftest import Backend

SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))


@pytest.fixture
async def hung_url() -> AsyncIterator[str]:
    """A PostgreSQL URL on a real TCP listener that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # kept open, never written to

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"postgresql+asyncpg://simcharge:secret-pw@127.0.0.1:{port}/simcharge"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_request_to_a_hung_database_gets_503_with_retry_after_within_the_timeout(
    settings: Settings, hung_url: str
) -> None:
    db = Database.from_url(hung_url, timeouts=Timeouts(connect=0.5, statement=0.5))
    app = create_app(settings, db=db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.get("/api/v1/plans", headers={"X-Request-Id": "req-db-hung-1"})
    finally:
        await db.dispose()
    elapsed = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/problems/service-unavailable")
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-request-id"] == "req-db-hung-1"
    assert elapsed < 3, elapsed  # one connect timeout, not retried (nor asyncpg's 60 s)
    assert "secret-pw" not in r.text


async def test_the_web_processes_connect_timeout_comes_from_the_settings(
    settings: Settings, hung_url: str
) -> None:
    limits = Timeouts.for_web(settings.model_copy(update={"db_connect_timeout_seconds": 0.4}))
    assert limits == Timeouts(connect=0.4, statement=30.0)
    db = Database.from_url(hung_url, timeouts=limits)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError) as caught:
            await db.ping()
    finally:
        await db.dispose()
    assert time.monotonic() - started < 2
    assert is_unreachable(caught.value) and retry_reason(caught.value) is None


def test_the_defaults_and_the_command_lines_choice(settings: Settings) -> None:
    assert Timeouts.for_web(settings) == Timeouts(connect=5.0, statement=30.0)
    no_limit = settings.model_copy(update={"db_statement_timeout_seconds": 0})
    assert Timeouts.for_web(no_limit) == Timeouts(connect=5.0, statement=None)
    assert Timeouts.for_commands(settings) == Timeouts(connect=5.0, statement=None)


def test_bad_timeouts_are_refused_naming_the_setting() -> None:
    from pydantic import ValidationError

    for name, value in (("db_connect_timeout_seconds", 0), ("db_statement_timeout_seconds", -1)):
        with pytest.raises(ValidationError) as caught:
            Settings(_env_file=None, **{name: value})  # type: ignore[call-arg]
        assert caught.value.errors()[0]["loc"] == (name,)


@pytest.mark.postgres_only
async def test_a_statement_past_its_limit_is_cancelled_rolled_back_and_not_retried(
    backend: Backend,
) -> None:
    url = await backend.copy("t" + uuid.uuid4().hex[:10])
    db = Database.from_url(url, timeouts=Timeouts(connect=5, statement=0.5))
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE r15_probe (n int)"))
        calls = 0

        async def slow(s: object) -> None:
            nonlocal calls
            calls += 1
            await s.execute(text("INSERT INTO r15_probe VALUES (1)"))  # type: ignore[attr-defined]
            await s.execute(text("SELECT pg_sleep(3)"))  # type: ignore[attr-defined]

        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            await db.run(slow)
        assert time.monotonic() - started < 2.5 and calls == 1  # not retried
        assert is_unreachable(caught.value)
        # Nothing written, and the pool still serves.
        async with db.read() as s:
            assert (await s.execute(text("SELECT count(*) FROM r15_probe"))).scalar() == 0
        # The server was told to cancel it: no statement of ours sleeps on.
        async with db.read() as s:
            sleeping = (await s.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3)'"
                " AND state = 'active'"
            ))).scalar()
        assert sleeping == 0
    finally:
        await db.dispose()
        await backend.discard(url)


@pytest.mark.postgres_only
async def test_the_web_has_a_statement_limit_the_command_line_has_none(
    backend: Backend, settings: Settings
) -> None:
    from simcharge import cli
    from simcharge.app import create_app

    url = await backend.copy("t" + uuid.uuid4().hex[:10])
    on_url = settings.model_copy(update={"database_url": url})
    web = create_app(on_url, run_worker=False).state.db  # the web process's own database
    command = cli._database(on_url)
    try:
        for db, expected in ((web, 30.0), (command, None)):
            async with db.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                assert raw.driver_connection._config.command_timeout == expected
    finally:
        await web.dispose()
        await command.dispose()
        await backend.discard(url)


@pytest.mark.postgres_only
async def test_a_statement_the_server_cancels_is_a_503_too(backend: Backend) -> None:
    """A role's own `statement_timeout` (SQLSTATE 57014): unreachable for now, not retried."""
    from sqlalchemy.exc import DBAPIError

    url = await backend.copy("t" + uuid.uuid4().hex[:10])
    db = Database.from_url(url, timeouts=Timeouts(connect=5))
    try:
        async def cancelled(s: object) -> None:
            await s.execute(text("SET LOCAL statement_timeout = 200"))  # type: ignore[attr-defined]
            await s.execute(text("SELECT pg_sleep(2)"))  # type: ignore[attr-defined]

        with pytest.raises(DBAPIError) as caught:
            await db.run(cancelled)
        assert is_unreachable(caught.value) and retry_reason(caught.value) is None
    finally:
        await db.dispose()
        await backend.discard(url)


async def test_a_command_on_a_hung_database_says_so_in_one_line(hung_url: str) -> None:
    env = {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": hung_url,
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_DB_CONNECT_TIMEOUT_SECONDS": "0.5",
    }
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        SIMCHARGE, "db", "current", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1, (out, err)
    lines = err.decode().strip().splitlines()
    assert lines == [
        "simcharge: the database did not answer in time (SIMCHARGE_DB_CONNECT_TIMEOUT_SECONDS)"
    ], err
    assert "secret-pw" not in (out + err).decode()
    assert time.monotonic() - started < 30
