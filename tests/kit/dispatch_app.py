"""A bare ASGI application for tests/kit/test_dispatch.py, served by simcharge.kit.dispatch in a
real process tree: it answers with its process id (`/slow` after 2 s). Its startup fails when
DISPATCH_TEST_FAIL_START is set; with DISPATCH_TEST_SLOW_FIRST naming a file, the first
process to create that file takes 3 s to start."""

from __future__ import annotations

import asyncio
import os
from typing import Any


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("DISPATCH_TEST_FAIL_START"):
                await send({"type": "lifespan.startup.failed", "message": "told to fail"})
                return
            marker = os.environ.get("DISPATCH_TEST_SLOW_FIRST")
            if marker:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    await asyncio.sleep(3)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2)
    body = f"{os.getpid()} {scope['client'][0]}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
