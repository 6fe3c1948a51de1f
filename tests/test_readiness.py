"""`/readyz`: ready while the database answers, and Redis when it holds the rate limits;
otherwise a 503 problem document naming what does not answer."""

from __future__ import annotations

import os
import socket

import httpx
import pytest

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database

REDIS_URL = os.environ.get("SIMCHARGE_TEST_REDIS_URL")


async def test_ready_while_the_database_answers(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


async def test_not_ready_is_a_problem_with_a_stable_type(settings: Settings) -> None:
    broken = Database.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/nothing", null_pool=True)
    app = create_app(settings, db=broken, run_worker=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            r = await c.get("/readyz", headers={"accept-language": "es"})
            documented = await c.get("/problems/not-ready")
    finally:
        await broken.dispose()
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "/problems/not-ready"
    assert body["status"] == 503
    assert body["database"] == "unreachable"
    assert body["instance"] == "/readyz"
    assert body["title"] == "El servicio no está disponible temporalmente."
    # The type documents itself, like every other problem type.
    assert documented.status_code == 200
    assert documented.json()["type"] == "/problems/not-ready"


async def _readyz(settings: Settings, db: Database, redis_url: str) -> httpx.Response:
    app = create_app(settings.model_copy(update={"redis_url": redis_url}), db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.get("/readyz")


@pytest.mark.skipif(not REDIS_URL, reason="SIMCHARGE_TEST_REDIS_URL is not set")
async def test_ready_names_redis_when_it_holds_the_rate_limits(
    settings: Settings, db: Database
) -> None:
    assert REDIS_URL
    r = await _readyz(settings, db, REDIS_URL)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_not_ready_while_redis_is_unreachable(settings: Settings, db: Database) -> None:
    """Every sign-in would be refused (the rate limits fail closed): send traffic elsewhere."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = await _readyz(settings, db, f"redis://127.0.0.1:{port}/0")
    assert r.status_code == 503
    body = r.json()
    assert body["type"] == "/problems/not-ready"
    assert body["redis"] == "unreachable"
    assert body["database"] == "ok"
