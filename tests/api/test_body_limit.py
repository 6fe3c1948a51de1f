"""A request body above `SIMCHARGE_MAX_BODY_BYTES` is refused before it is read (ASVS 12.1.1,
13.1.3): `413 request-too-large`, field `body`, in the shape of the API under the path, and
nothing is done — an unauthenticated route (sign-in with a password or a passkey) parses no
64 MiB document and counts no attempt. A usage batch may be ten times as large."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import func, select

from simcharge.app import create_app
from simcharge.auth.models import SecurityEvent
from simcharge.config import Settings
from simcharge.db import Database
from tests.auth.helpers import new_identity, problem, register

MIB = 1_048_576


async def _events(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(SecurityEvent))).scalar_one())


async def test_a_body_above_the_limit_is_refused_before_the_sign_in_reads_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    username, email, phone = new_identity()
    assert (await register(client, username=username, email=email, phone=phone)).status_code == 202
    before = await _events(db)
    padding = "x" * (MIB + 1)
    r = await client.post("/api/v1/auth/login", json={"login": username, "password": padding})
    assert r.status_code == 413, r.text
    body = problem(r)
    assert body["type"].endswith("/request-too-large")
    assert body["field"] == "body"
    assert str(MIB) in body["detail"]
    assert "request_id" in body
    assert await _events(db) == before  # no failed sign-in counted: the body was never read


async def test_a_body_at_the_limit_is_read(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/passkeys/login",
        content=b'{"x": "' + b"y" * (MIB - 20) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code != 413
    assert r.status_code in (400, 401, 422), r.text


async def _chunks(total: int, size: int = 65_536) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b"a" * part


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/api/v1/auth/passkeys/login",
        content=_chunks(3 * MIB),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert problem(r)["type"].endswith("/request-too-large")


async def test_a_chunked_body_under_the_limit_reaches_the_route(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/login",
        content=_chunks(10),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text  # "aaaaaaaaaa" is not JSON: the route read it
    assert problem(r)["type"].endswith("/bad-request")  # the route's "JSON decode error"


async def test_a_usage_batch_may_be_ten_times_as_large(client: httpx.AsyncClient) -> None:
    batch = b"[" + b",".join([b'{"id": "' + b"r" * 100 + b'"}'] * 20_000) + b"]"
    assert MIB < len(batch) < 10 * MIB
    r = await client.post(
        "/api/v1/usage", content=batch, headers={"content-type": "application/json"}
    )
    assert r.status_code == 401, r.text  # past the size check: refused for want of a key
    r = await client.post(
        "/api/v1/usage",
        content=b"x" * (10 * MIB + 1),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text


async def test_tmf654_and_nchf_answer_in_their_own_shapes(client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * (MIB + 1) + b"}"
    json = {"content-type": "application/json"}
    r = await client.post(
        "/tmf-api/prepayBalanceManagement/v4/topupBalance", content=big, headers=json
    )
    assert r.status_code == 413, r.text
    tmf: dict[str, Any] = r.json()
    assert (tmf["@type"], tmf["code"], tmf["field"]) == ("Error", "request-too-large", "body")
    r = await client.post("/nchf-convergedcharging/v3/chargingdata", content=big, headers=json)
    assert r.status_code == 413, r.text
    assert r.json()["type"].endswith("/request-too-large")


async def test_the_limit_is_a_setting(settings: Settings, db: Database) -> None:
    small = settings.model_copy(update={"max_body_bytes": 4096})
    app = create_app(small, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        r = await c.post("/api/v1/auth/login", json={"login": "a" * 5000, "password": "b"})
        assert r.status_code == 413, r.text
        assert "4096" in problem(r)["detail"]
        r = await c.post("/api/v1/auth/login", json={"login": "a" * 100, "password": "b"})
        assert r.status_code != 413
