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
_FULFIL_MANY = (
    "SELECT ceiling_fulfil(r, e, b, now()) FROM unnest($1::text[], $2::text[], $3::text[])"
    " WITH ORDINALITY AS u(r, e, b, n) ORDER BY n"
)


class _Grouped:
    """Webhooks that arrive while a batch is in the database wait, and go together in the next
    batch: one transaction and one statement for all of them (group commit at its most
    optimistic: no failure of one item to isolate, no per-item statements). One batch at a time:
    two at once lock the shards' accounts in no common order and deadlock."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, str, str, asyncio.Future[str]]] = []
        self.running = False

    async def fulfil(self, pool: Any, signature: str, body: bytes) -> tuple[int, str]:
        if not _signed(signature, body):
            return 400, "rejected"
        event = json.loads(body)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting.append((event["data"]["object"]["reference"], event["id"], body.decode(), done))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._flush(pool))
        return 200, await done

    async def _flush(self, pool: Any) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    async with pool.acquire() as c, c.transaction():
                        rows = await c.fetch(_FULFIL_MANY, [b[0] for b in batch],
                                             [b[1] for b in batch], [b[2] for b in batch])  # fmt: skip
                except Exception as e:  # noqa: BLE001 - every waiter hears of any failure
                    for b in batch:
                        b[3].set_exception(e)
                    continue
                for b, row in zip(batch, rows, strict=True):
                    b[3].set_result(str(row[0]))
        finally:
            self.running = False


_grouped = _Grouped()


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
    elif path == "/ceiling/fulfil-grouped":
        status, outcome = await _grouped.fulfil(_bare.pool, headers.get("sandbox-signature", ""), body)
        extra = [(b"simcharge-outcome", outcome.encode())]
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
