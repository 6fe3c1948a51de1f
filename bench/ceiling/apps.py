"""The two ceiling operations behind HTTP: `stack` (simcharge's application, uvicorn factory)
and `bare` (a bare ASGI endpoint, as `http_baseline`'s). Both answer `POST /ceiling/fulfil`
(a signed sandbox webhook; `Simcharge-Outcome` says what became of it) and
`POST /ceiling/nchf/{ref}` (an Nchf update; the answer names the granted units)."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import uuid
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response

from bench.bare_app import PooledLifespan, read_body
from simcharge.app import serve_app
from simcharge.payments.providers.signing import stripe_signature

DSN = os.environ.get("CEILING_DSN", "postgresql://postgres@127.0.0.1:5432/simcharge_bench")
SECRET = os.environ.get("CEILING_SANDBOX_SECRET", "bench-sandbox-secret")
POOL_SIZE = int(os.environ.get("CEILING_POOL", "16"))
_FULFIL = "SELECT ceiling_fulfil($1, $2, $3, now())"
_NCHF = "SELECT ceiling_nchf($1, $2, $3, $4, now())"


def _signed(header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return False
    return hmac.compare_digest(stripe_signature(SECRET, int(parts["t"]), body), parts["v1"])


async def fulfil(pool: Any, signature: str, body: bytes) -> tuple[int, str]:
    if not _signed(signature, body):
        return 400, "rejected"
    event = json.loads(body)
    async with pool.acquire() as c, c.transaction():
        outcome = await c.fetchval(
            _FULFIL, event["data"]["object"]["reference"], event["id"], body.decode()
        )
    return 200, str(outcome)


async def nchf(pool: Any, ref: str, authorization: str, body: bytes) -> tuple[int, bytes]:
    if not authorization.startswith("Bearer "):
        return 401, b""
    doc = json.loads(body)
    unit = doc["multipleUnitUsage"][0]
    used = unit["usedUnitContainer"][0]["totalVolume"]
    wanted = unit["requestedUnit"]["totalVolume"]
    seq = doc["invocationSequenceNumber"]
    async with pool.acquire() as c, c.transaction():
        granted = await c.fetchval(_NCHF, uuid.UUID(ref), seq, used, wanted)
    answer = {
        "invocationTimeStamp": doc["invocationTimeStamp"],
        "invocationSequenceNumber": seq,
        "multipleUnitInformation": [
            {
                "resultCode": "SUCCESS",
                "ratingGroup": unit["ratingGroup"],
                "grantedUnit": {"totalVolume": granted},
                "validityTime": 3600,
            }
        ],
    }
    return 200, json.dumps(answer).encode()


def stack() -> FastAPI:
    """simcharge's application with the two routes first (as `arrange_routes` puts the real
    ones), their pool made at the first request."""
    app = serve_app()
    pool: list[Any] = []
    made = asyncio.Lock()

    async def the_pool() -> Any:
        async with made:
            if not pool:
                pool.append(await asyncpg.create_pool(DSN, min_size=POOL_SIZE, max_size=POOL_SIZE))
        return pool[0]

    @app.post("/ceiling/fulfil", include_in_schema=False)
    async def ceiling_fulfil(request: Request) -> Response:
        status, outcome = await fulfil(
            await the_pool(), request.headers.get("sandbox-signature", ""), await request.body()
        )
        return Response(b"{}", status, media_type="application/json",
                        headers={"Simcharge-Outcome": outcome})  # fmt: skip

    @app.post("/ceiling/nchf/{ref}", include_in_schema=False)
    async def ceiling_nchf(ref: str, request: Request) -> Response:
        status, answer = await nchf(
            await the_pool(), ref, request.headers.get("authorization", ""), await request.body()
        )
        return Response(answer, status, media_type="application/json")

    app.router.routes[:0] = [app.router.routes.pop(), app.router.routes.pop()]
    return app


_bare = PooledLifespan(DSN, POOL_SIZE)


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same two routes with nothing in the way, as `bench.bare_app`."""
    if scope["type"] == "lifespan":
        await _bare.serve(receive, send)
        return
    body = await read_body(receive)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    path = scope["path"]
    answer, extra = b"{}", []
    if scope["method"] != "POST":  # the readiness probe
        status = 204
        answer = b""
    elif path == "/ceiling/fulfil":
        status, outcome = await fulfil(_bare.pool, headers.get("sandbox-signature", ""), body)
        extra = [(b"simcharge-outcome", outcome.encode())]
    elif path.startswith("/ceiling/nchf/"):
        status, answer = await nchf(
            _bare.pool, path.rsplit("/", 1)[1], headers.get("authorization", ""), body
        )
    else:
        status = 404
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *extra]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})
