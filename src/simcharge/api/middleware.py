"""One pure-ASGI middleware: a request id, an access log line, metrics and security headers —
and the refusal of NUL characters in the query string or a JSON body (PostgreSQL cannot store
one in text: it must be invalid input, not a server error) — except a provider's notification's
body, which its webhook route refuses in the provider's own terms (`WEBHOOKS_PATH`)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simcharge.api.problems import PROBLEM_JSON, problem_body
from simcharge.db import is_unreachable
from simcharge.errors import (
    NUL_REFUSED,
    BodyTooLarge,
    FieldError,
    InternalError,
    ServiceUnavailable,
    SimchargeError,
    ValidationFailed,
)
from simcharge.kit.i18n import pick_language
from simcharge.kit.ids import uuid7
from simcharge.kit.text import first_not_text
from simcharge.kit.translations import N_
from simcharge.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("simcharge.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WEBHOOKS_PATH = "/api/v1/webhooks/"
"""Providers' notifications: their JSON bodies are not read here. A signed one holding a NUL or
a lone surrogate is refused by the webhook route itself (`payments.webhooks`, outcome
`rejected:unstorable`): counted, logged and answered in the provider's own failure shape, as
for a form-encoded or encrypted one — not a problem document the provider cannot read."""


DEFAULT_MAX_BODY = 1_048_576
LARGE_BODY_PATHS = frozenset({"/api/v1/usage"})
"""A batch of up to 10,000 usage records (`charging.batch.MAX_API_RECORDS`)."""
LARGE_BODY_FACTOR = 10
BODY_TOO_LARGE = N_("The request body may hold at most {limit} bytes.")


def _answers_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A JSON or problem+json answer (the API's, the TMF's, the Nchf's, `/openapi.json`)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return False


DATABASE_RETRY_AFTER = "2"
"""Seconds a client is told to wait when the database cannot be reached (a restart)."""


class PageTurns:
    """At most `at_once` pages of the user center (`GET /`, `/account…`) are being built at a
    time in a process; the others wait their turn, first come first served, and a page's turn
    ends when its response starts. Pages are CPU work between short database reads: sixteen at
    once in one process take sixteen times as long each, their reads interleaved, and the
    slowest of them set the p95; in turns each is built in about the time of one, and waiting
    is in arrival order. The API, webhooks, forms and static files never wait here."""

    def __init__(self, app: ASGIApp, *, at_once: int) -> None:
        self.app = app
        self.turns = asyncio.Semaphore(at_once) if at_once > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.turns is None
            or scope["type"] != "http"
            or scope["method"] != "GET"
            or not _is_page(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        turns = self.turns
        await turns.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                turns.release()

        async def send_released(message: Message) -> None:
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_released)
        finally:
            release()


def _is_page(path: str) -> bool:
    return path == "/" or path == "/account" or path.startswith("/account/")


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool = False,
        default_language: str = "en",
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.app = app
        self.hsts = hsts
        self.max_body = max_body
        """`SIMCHARGE_MAX_BODY_BYTES`; `LARGE_BODY_PATHS` may hold `LARGE_BODY_FACTOR` times it."""
        self.default_language = default_language
        """The operator's `SIMCHARGE_DEFAULT_LANGUAGE`, for the problems answered here (a 500,
        a NUL refused), before any endpoint chose a language."""

    def _body_limit(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        return self.max_body * (LARGE_BODY_FACTOR if path in LARGE_BODY_PATHS else 1)

    def _language(self, scope: Scope) -> str:
        """The language the request was answered in so far (a signed-in customer's, once known:
        `request.state.language`), else the caller's `Accept-Language`, else the default."""
        chosen = (scope.get("state") or {}).get("language")
        return pick_language(
            chosen, accept_language=_header(scope, b"accept-language"),
            default=self.default_language,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid7().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", API_CSP))
                if b"content-disposition" not in present and _answers_json(headers):
                    # ASVS 14.4.2: an API answer opened in a browser is a download, never a page.
                    headers.append((b"content-disposition", b'attachment; filename="api.json"'))
                if b"cache-control" not in present:
                    # Answers hold tokens, codes, balances, activation codes: kept by no cache
                    # unless the route says otherwise (the portal's styles and images do).
                    headers.append((b"cache-control", b"no-store"))
                if self.hsts:
                    headers.append(
                        (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
                    )
                message["headers"] = headers
            await send(message)

        try:
            body: tuple[bytes, bool] | None = None
            if scope.get("method") in _BODY_METHODS:
                limit = self._body_limit(scope)
                declared = _header(scope, b"content-length")
                if declared is not None and declared.isdigit():
                    too_large = int(declared) > limit
                else:  # chunked: read up to the limit, no further
                    body = await _read_body(receive, limit)
                    too_large = len(body[0]) > limit
                    receive = _replay(*body, receive)
                if too_large:
                    await self._answer(
                        scope, receive, send_wrapper,
                        BodyTooLarge(BODY_TOO_LARGE, field="body", limit=limit), request_id,
                    )  # fmt: skip
                    return
            # A NUL in the path (`%00` in an id) reaches no route's own checks first: PostgreSQL
            # would refuse it in a query as a server error (the thirteenth round's review).
            field = "path" if "\x00" in str(scope.get("path", "")) else _nul_in_query(scope)
            if (
                field is None
                and scope.get("method") in _BODY_METHODS
                and _is_json(scope)
                and not str(scope.get("path", "")).startswith(WEBHOOKS_PATH)
            ):
                if body is None:
                    body = await _read_body(receive)
                    receive = _replay(*body, receive)
                field = _nul_in_json(body[0])
            if field is not None:
                await self._refuse(scope, receive, send_wrapper, field, request_id)
                return
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Answered here rather than by Starlette's outermost handler, so that the answer
            # still carries the request id and the security headers.
            error: SimchargeError
            if is_unreachable(exc):
                # The database restarts or fails over: nothing was done, try again shortly.
                log.warning("http.database_unreachable", path=scope.get("path"), error=str(exc))
                error = ServiceUnavailable(headers={"Retry-After": DATABASE_RETRY_AFTER})
            else:
                log.error("http.unhandled_error", path=scope.get("path"), exc_info=exc)
                error = InternalError()
            if response_started:
                raise
            await self._answer(scope, receive, send_wrapper, error, request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(elapsed)
            log.info(
                "http.request",
                method=method,
                route=route,
                status=status,
                ms=round(elapsed * 1000, 1),
            )
            structlog.contextvars.unbind_contextvars("request_id")


    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, field: str, request_id: str
    ) -> None:
        error = ValidationFailed(errors=[FieldError(field, NUL_REFUSED)])
        await self._answer(scope, receive, send, error, request_id)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, error: SimchargeError, request_id: str
    ) -> None:
        """The error as the API under this path answers errors: a problem document, or the shape
        an API registered for its paths (`app.state.error_answers`: TMF654's `Error`)."""
        path = str(scope.get("path", ""))
        state = getattr(scope.get("app"), "state", None)
        for prefix, answer in getattr(state, "error_answers", ()):
            if path.startswith(prefix):
                await answer(Request(scope), error)(scope, receive, send)
                return
        body = problem_body(error, self._language(scope), path)
        body["request_id"] = request_id
        await JSONResponse(
            body, status_code=error.status, headers=error.headers, media_type=PROBLEM_JSON
        )(scope, receive, send)


def _nul_in_query(scope: Scope) -> str | None:
    """The first query parameter whose name or value holds a NUL, if any."""
    raw: bytes = scope.get("query_string", b"")
    if b"%00" not in raw and b"\x00" not in raw:
        return None
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "") or "query"
    return None


def _is_json(scope: Scope) -> bool:
    kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


async def _read_body(receive: Receive, limit: int | None = None) -> tuple[bytes, bool]:
    """The request body, or its first `limit` + 1 bytes and more (then it is refused, never
    replayed); the flag is false when the client went away before sending it all."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False) or (limit is not None and size > limit):
            return b"".join(chunks), not message.get("more_body", False)


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if complete:
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}
        return await receive()

    return replayed


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""`\\uD800`…`\\uDFFF` in a JSON text: a surrogate, which a pair makes a character and one
alone leaves a string that is no text (not encodable as UTF-8)."""


def _nul_in_json(body: bytes) -> str | None:
    """The dotted path of the first string (or key) in a JSON body that holds a NUL or a lone
    surrogate (Python's JSON reads `"\\ud800"`; no database or answer can carry it), if any."""
    if b"\\u0000" not in body and _SURROGATE_ESCAPE.search(body) is None:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None  # not JSON: the endpoint refuses it as such
    return first_not_text(document)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


def _route_template(scope: Scope) -> str:
    """The matched route's full path template (`/api/v1/lines/{line_id}`), never the raw path,
    so metrics keep a bounded set of labels. FastAPI leaves the matched route in the scope; only
    what it did not route (mounted apps, not found) is matched again here."""
    matched = scope.get("route")
    if matched is not None and isinstance(getattr(matched, "path", None), str):
        return str(matched.path)
    app: Any = scope.get("app")
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"
