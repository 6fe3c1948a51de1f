"""Per-address rate limits, in memory and in Redis (shared by every process); a Redis that
cannot count refuses (fails closed) within its timeout."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth import throttle
from simcharge.auth.throttle import LIMITS, REDIS_RETRY_AFTER, REDIS_TIMEOUT_SECONDS, RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import TooManyAttempts
from simcharge.worker import service as outbox
from tests.factories import create_account

REDIS_URL = os.environ.get("SIMCHARGE_TEST_REDIS_URL")


async def exhaust(limits: RateLimits, who: str) -> TooManyAttempts:
    allowed = LIMITS["register"][0].amount
    for _ in range(allowed):
        await limits.hit("register", who)
    with pytest.raises(TooManyAttempts) as info:
        await limits.hit("register", who)
    return info.value


async def test_memory_limits() -> None:
    limits = RateLimits()
    refused = await exhaust(limits, "198.51.100.7")
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    await limits.hit("register", "198.51.100.8")  # another address is unaffected
    await limits.hit("register", None)  # no address known: not counted


@pytest.mark.skipif(not REDIS_URL, reason="SIMCHARGE_TEST_REDIS_URL is not set")
async def test_redis_limits_are_shared_between_processes() -> None:
    assert REDIS_URL
    who = f"203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    first, second = RateLimits(REDIS_URL), RateLimits(REDIS_URL)  # two processes' views
    allowed = LIMITS["register"][0].amount
    for i in range(allowed):
        await (first if i % 2 else second).hit("register", who)
    with pytest.raises(TooManyAttempts):
        await first.hit("register", who)
    with pytest.raises(TooManyAttempts):
        await second.hit("register", who)


# --- when Redis cannot count: refused at once (fail closed), said in the logs -------------------


class Recorder:
    """Stands in for a module's structlog logger (structlog caches the bound logger of a module
    on first use, so `capture_logs` would not see it)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A Redis that accepts connections and never answers (hung, or behind a black hole)."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_silent_redis_refuses_a_sign_in_within_seconds(
    settings: Settings, db: Database, silent_redis: str
) -> None:
    app = create_app(settings, db=db, run_worker=False)
    app.state.rate_limits = RateLimits(silent_redis)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        started = time.monotonic()
        r = await asyncio.wait_for(
            c.post("/api/v1/auth/login", json={"login": "nobody", "password": "wrong-pw-123"}), 10
        )
    assert r.status_code == 503
    assert r.json()["type"] == "/problems/service-unavailable"
    assert r.headers["retry-after"] == REDIS_RETRY_AFTER
    assert time.monotonic() - started < 2 * REDIS_TIMEOUT_SECONDS + 1


async def test_a_silent_redis_holds_no_row_while_a_reauthentication_waits_for_it(
    fresh_db: Database, settings: Settings, silent_redis: str
) -> None:
    """A re-entered password is counted against its limits before the transaction that locks
    the account: while a hung Redis keeps the count waiting, the account's row (and, on SQLite,
    the database) stays free for others, and the customer gets a 503 within the timeout."""
    account_id = (
        await fresh_db.run(lambda s: create_account(s, password="violet-harbour-7421"))
    ).id
    app = create_app(settings, db=fresh_db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        account = await fresh_db.run(lambda s: s.get(Account, account_id))
        assert account is not None
        r = await c.post(
            "/api/v1/auth/login",
            json={"login": account.username, "password": "violet-harbour-7421"},
        )
        assert r.status_code == 200, r.text
        bearer = {"Authorization": f"Bearer {r.json()['token']}"}
        app.state.rate_limits = RateLimits(silent_redis)
        started = time.monotonic()
        change = asyncio.create_task(
            c.post(
                "/api/v1/me/password",
                json={"current_password": "violet-harbour-7421", "new_password": "amber-coast-9183"},
                headers=bearer,
            )
        )
        await asyncio.sleep(0.3)
        assert not change.done()

        async def lock_account_at_once(s: AsyncSession) -> None:
            if s.bind.dialect.name == "postgresql":
                await s.execute(text("SET LOCAL lock_timeout = '100ms'"))
            assert await s.get(Account, account_id, with_for_update=True) is not None
            await outbox.enqueue(s, "x.unrelated", {})

        # While the count waits: the row is not held (on SQLite: no write transaction is open).
        await asyncio.wait_for(fresh_db.run(lock_account_at_once), 0.5)
        r = await asyncio.wait_for(change, 8)
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "/problems/service-unavailable"
    assert time.monotonic() - started < 2 * REDIS_TIMEOUT_SECONDS + 1
    # Nothing changed: the old password still signs in.
    after = await fresh_db.run(lambda s: s.get(Account, account_id))
    assert after is not None and after.password_hash == account.password_hash


async def test_an_unreachable_redis_refuses_and_says_so_without_its_password(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = Recorder()
    monkeypatch.setattr(throttle, "log", logged)
    port = closed_port()
    app = create_app(settings, db=db, run_worker=False)
    app.state.rate_limits = RateLimits(f"redis://:redis-pass-123@127.0.0.1:{port}/0")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        login = await c.post("/api/v1/auth/login", json={"login": "nobody", "password": "x" * 12})
        register = await c.post(
            "/api/v1/auth/register",
            json={"username": "zzredis", "password": "violet-harbour-7421", "email": "zz@example.com"},
        )
    for r in (login, register):
        assert r.status_code == 503, r.text
        assert r.json()["type"] == "/problems/service-unavailable"
    assert [event for event, _ in logged.events] == ["ratelimit.storage_unreachable"] * 2
    details = logged.events[0][1]
    assert details["action"] == "login"
    assert details["redis"] == f"redis://127.0.0.1:{port}/0"
    assert details["error"] == "ConnectionError"
    assert "redis-pass-123" not in repr(logged.events)

