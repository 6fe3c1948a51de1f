"""`http_baseline`: a bare ASGI endpoint doing the same database work as `db_baseline`.

Served by uvicorn exactly as `simcharge serve` serves simcharge; nothing else in the way."""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg

DSN = os.environ.get("BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/simcharge_bench")
POOL_SIZE = int(os.environ.get("BENCH_POOL", "16"))


class PooledLifespan:
    """An asyncpg pool opened and closed with uvicorn's lifespan messages (`serve`)."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn, self.size = dsn, size
        self.pool: Any = None

    async def serve(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = await asyncpg.create_pool(
                    self.dsn, min_size=self.size, max_size=self.size
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


_db = PooledLifespan(DSN, POOL_SIZE)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _db.serve(receive, send)
        return
    body = await read_body(receive)
    if scope["method"] != "POST":  # the readiness probe
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    data = json.loads(body or b"{}")
    account, amount = int(data["account"]), int(data["amount"])
    async with _db.pool.acquire() as conn, conn.transaction():
        balance = await conn.fetchval(
            "UPDATE bench_accounts SET balance = balance + $1 WHERE id = $2 RETURNING balance",
            amount,
            account,
        )
        await conn.execute(
            "INSERT INTO bench_log (account_id, amount) VALUES ($1, $2)", account, amount
        )
    payload = json.dumps({"balance": balance}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
