"""The load driver's HTTP client: HTTP/1.1 with keep-alive over asyncio streams, and nothing else.

On two cores the driver shares the machine with the server it measures; httpx spends about a
millisecond of CPU on each request, which capped even the bare `http_baseline` far below what the
server could answer and put the driver's own cost into every latency. This client does what the
entries need (GET and POST, request headers, a JSON or byte body; responses with a
Content-Length or chunked) at a fraction of that, for the baselines and the entries alike.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from typing import Any
from urllib.parse import urlsplit


class Response:
    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.text[:200]}")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        """Send one request, read its response; also whether the connection may be reused."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            return Response(status, headers, body), False
        return Response(status, headers, body), headers.get("connection") != "close"

    def close(self) -> None:
        self.writer.close()


class Client:
    """Up to `connections` kept-alive connections to one server (`base`: `http://host:port`)."""

    def __init__(self, base: str, *, connections: int = 16) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._host_header = f"{self.host}:{self.port}"
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    async def _connection(self) -> _Connection:
        if self._idle:
            return self._idle.pop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = None,
    ) -> Response:
        body = b""
        fields = {"host": self._host_header}
        if json is not None:
            body = jsonlib.dumps(json).encode()
            fields["content-type"] = "application/json"
        elif content is not None:
            body = content.encode() if isinstance(content, str) else content
        for name, value in (headers or {}).items():
            fields[name.lower()] = value
        if body or method != "GET":
            fields["content-length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in fields.items()
        )
        request = head.encode("latin-1") + b"\r\n" + body
        async with self._slots:
            connection = await self._connection()
            try:
                response, reusable = await connection.exchange(request)
            except BaseException:
                connection.close()
                raise
            if reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Response:
        return await self.request("POST", path, **kw)

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
