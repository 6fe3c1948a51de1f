"""`/readyz`: ready while the database answers; otherwise a 503 problem document."""

from __future__ import annotations

import httpx

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database


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
