"""Edges of the rate limits (README, "The security model" and "Running in production"):
what they count, by which key, before what, and how they answer — also while Redis cannot
count. Each test's docstring states the requirement, then what was wrong before (the review of
2026-12-06)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth import throttle
from simcharge.auth.client import ClientInfo
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.auth.throttle import LIMITS, REDIS_RETRY_AFTER, REDIS_TIMEOUT_SECONDS, RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import ServiceUnavailable
from simcharge.kit.clock import utcnow
from simcharge.lines.models import LineState
from simcharge.worker import service as outbox
from tests.auth.helpers import argon2_work_of
from tests.factories import create_account, create_line
from tests.portal.helpers import post_form

REDIS_URL = os.environ.get("SIMCHARGE_TEST_REDIS_URL")
PASSWORD = "violet-harbour-7421"


@asynccontextmanager
async def http(app: Any, ip: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def exhaust(limits: RateLimits, action: str, who: str) -> None:
    for _ in range(LIMITS[action][0].amount):
        await limits.hit(action, who)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A Redis host that drops connection attempts (down, or behind a firewall that drops rather
    than rejects): a listening socket whose accept queue is full and never drained, so further
    SYNs go unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        with suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    yield f"redis://127.0.0.1:{port}/0"
    for s in fillers:
        s.close()
    listener.close()


# --- /auth/verify signed out is a sign-in, as far as the address goes --------------------------


async def test_password_checks_through_verify_count_against_the_sign_in_limit(
    settings: Settings, db: Database
) -> None:
    """`POST /auth/verify` signed out checks a login and password (`check_credentials`, an
    argon2id verification), so it counts against the address's `login` limit too: past it, the
    answer is 429 and no password is checked. Before, it counted only against `verify` (30/min,
    no hourly cap): an address out of sign-ins kept guessing passwords there, 1,800 an hour
    instead of 300."""
    app = create_app(settings, db=db, run_worker=False)
    ip = "198.51.100.21"
    await exhaust(app.state.rate_limits, "login", ip)
    async with http(app, ip) as c:
        r = await c.post("/api/v1/auth/login", json={"login": "nobody1", "password": "x" * 12})
        assert r.status_code == 429
        r, work = await argon2_work_of(
            c.post(
                "/api/v1/auth/verify",
                json={"channel": "email", "code": "123456", "login": "nobody1",
                      "password": "wrong-pw-123"},
            )
        )
    assert work["verify"] == 0, "a password was checked past the address's sign-in limit"
    assert r.status_code == 429, r.text


# --- an IPv6 client is counted by its /64 ---------------------------------------------------------


async def test_addresses_of_one_ipv6_subnet_share_a_limit(settings: Settings, db: Database) -> None:
    """The per-address limits count an IPv6 client by its /64 (`throttle.address_key`): 11 code
    sends from 11 addresses of one /64 meet the 10-a-minute `codes` limit. Before, each limit
    was keyed on the full address, and a host holding a /64 (2^64 addresses to send from) was
    not bounded at all."""
    app = create_app(settings, db=db, run_worker=False)
    statuses = []
    for i in range(LIMITS["codes"][0].amount + 1):
        async with http(app, f"2001:db8:77:1::{i + 1:x}") as c:
            r = await c.post(
                "/api/v1/auth/password/forgot", json={"login": "nobody2", "channel": "email"}
            )
            statuses.append(r.status_code)
    assert statuses[:-1] == [202] * LIMITS["codes"][0].amount
    assert statuses[-1] == 429, statuses


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:77:1:aaaa:bbbb:cccc:dddd", "2001:db8:77:1::/64"),
        ("2001:DB8:77:1::1", "2001:db8:77:1::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("testclient", "testclient"),
    ],
)
def test_the_key_of_a_client_address(ip: str, key: str) -> None:
    """One helper turns a client address into its per-address limit key, for every caller
    (`RateLimits.hit` applies it to the per-address actions): IPv4 as it is, IPv6 by its /64,
    an IPv4-mapped IPv6 address as the IPv4 one, anything else unchanged."""
    assert throttle.address_key(ip) == key


# --- the portal's and back office's refusals say when to retry ------------------------------------


async def test_portal_sign_in_refused_by_the_limit_says_when_to_retry(
    settings: Settings, db: Database
) -> None:
    """A portal form refused by a limit answers 429 with the error's `Retry-After`, as the JSON
    API does. Before, `portal.web.render` dropped the exception's headers."""
    app = create_app(settings, db=db, run_worker=False)
    async with http(app) as c:
        page = await c.get("/login")
        assert page.status_code == 200
        await exhaust(app.state.rate_limits, "login", "127.0.0.1")
        r = await post_form(c, "/login", "/login", {"login": "nobody3", "password": "x" * 12})
    assert r.status_code == 429
    assert int(r.headers.get("retry-after", "0")) >= 1, dict(r.headers)


async def test_portal_sign_in_while_redis_is_down_says_when_to_retry(
    settings: Settings, db: Database
) -> None:
    """While Redis cannot count, a portal form it guards answers 503 with `Retry-After: 5`
    (README), as the JSON API does. Before, the page came without it."""
    app = create_app(settings, db=db, run_worker=False)
    async with http(app) as c:
        page = await c.get("/login")
        assert page.status_code == 200
        app.state.rate_limits = RateLimits(f"redis://127.0.0.1:{closed_port()}/0")
        r = await post_form(c, "/login", "/login", {"login": "nobody4", "password": "x" * 12})
    assert r.status_code == 503
    assert r.headers.get("retry-after") == REDIS_RETRY_AFTER, dict(r.headers)


async def test_back_office_sign_in_refused_by_the_limit_says_when_to_retry(
    settings: Settings, db: Database
) -> None:
    """`/backoffice/login` past the address's limit answers 429 with `Retry-After`. Before, the
    page was rendered without it."""
    app = create_app(settings, db=db, run_worker=False)
    async with http(app) as c:
        page = await c.get("/backoffice/login")
        assert page.status_code == 200
        await exhaust(app.state.rate_limits, "login", "127.0.0.1")
        r = await post_form(
            c, "/backoffice/login", "/backoffice/login", {"username": "x", "password": "y" * 12}
        )
    assert r.status_code == 429
    assert int(r.headers.get("retry-after", "0")) >= 1, dict(r.headers)


# --- a black-holed Redis refuses within about a second ----------------------------------------


async def test_a_black_holed_redis_refuses_within_about_a_second(
    black_hole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis host that drops connection attempts gets a guarded attempt refused (503) within
    about a second (README): `RateLimits.hit` has one deadline in all, `REDIS_TIMEOUT_SECONDS`.
    Before, coredis reported the connect timeout as a dropped connection and tried again: 2 s
    per attempt, 3 s for a process's first."""
    monkeypatch.setattr(throttle, "log", _Quiet())
    limits = RateLimits(black_hole)
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(limits.hit("login", "198.51.100.30"), 10)
        took = time.monotonic() - started
        assert took < REDIS_TIMEOUT_SECONDS + 0.5, f"refused after {took:.2f} s"


class _Quiet:
    def warning(self, event: str, **kw: Any) -> None:
        pass


# --- the per-account code counts come before the transaction -------------------------------------


@asynccontextmanager
async def redis_hanging_on(marker: bytes) -> AsyncIterator[str]:
    """A proxy to the test Redis that forwards everything until a command naming `marker`, then
    forwards nothing more on that connection (Redis hangs for that command)."""
    assert REDIS_URL
    from urllib.parse import urlsplit

    target = urlsplit(REDIS_URL)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(target.hostname, target.port or 6379)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, inspect: bool) -> None:
            try:
                while data := await src.read(65536):
                    if inspect and marker in data:
                        await asyncio.sleep(3600)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass

        tasks = [
            asyncio.create_task(pump(reader, up_w, True)),
            asyncio.create_task(pump(up_r, writer, False)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            up_w.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}{target.path or '/0'}"
    finally:
        server.close()


async def _held_write(db: Database, account_id: uuid.UUID) -> str | None:
    """Whether a write taking the account's row (and, on SQLite, the write lock) at once is held
    up, and for how long; None when it went through within half a second."""

    async def write_at_once(s: AsyncSession) -> None:
        if s.get_bind().dialect.name == "postgresql":
            await s.execute(text("SET LOCAL lock_timeout = '100ms'"))
        assert await s.get(Account, account_id, with_for_update=True) is not None
        await outbox.enqueue(s, "x.unrelated", {})

    started = time.monotonic()
    try:
        await asyncio.wait_for(db.run(write_at_once), 0.5)
    except (TimeoutError, DBAPIError) as exc:
        return f"{type(exc).__name__} after {time.monotonic() - started:.2f} s"
    return None


@pytest.mark.skipif(not REDIS_URL, reason="SIMCHARGE_TEST_REDIS_URL is not set")
async def test_a_hung_redis_holds_no_account_row_while_a_code_send_is_counted(
    fresh_db: Database, settings: Settings
) -> None:
    """The per-account code limits (`account-code-sends`, `account-code-checks`) are counted
    before the transaction that holds the account (`codes.count_send`, `codes.count_check`, as
    `count_reauthentication` does for re-entered passwords): while Redis hangs on that count,
    the account's row (on SQLite, the write lock) is free, and the attempt ends 503. Before,
    they were counted inside it, after the row was taken `FOR UPDATE`."""
    now = utcnow()

    async def make(s: AsyncSession) -> tuple[uuid.UUID, str]:
        account = await create_account(
            s, password=PASSWORD, email_pending=f"p{uuid.uuid4().hex[:8]}@example.com"
        )
        issued = await open_session(
            s, settings.secret_key, account_id=account.id,
            client=ClientInfo(ip="198.51.100.9", user_agent="pytest"),
            policy=policy(settings), now=now,
        )
        return account.id, issued.token

    account_id, token = await fresh_db.run(make)
    app = create_app(settings, db=fresh_db, run_worker=False)
    async with redis_hanging_on(b"account-code-sends") as url:
        app.state.rate_limits = RateLimits(url)
        ip = f"198.51.100.{uuid.uuid4().int % 200 + 20}"
        async with http(app, ip) as c:
            resend = asyncio.create_task(
                c.post(
                    "/api/v1/auth/verify/resend",
                    json={"channel": "email"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            await asyncio.sleep(0.4)
            assert not resend.done(), (await resend).text

            held = await _held_write(fresh_db, account_id)
            r = await asyncio.wait_for(resend, 8)
    # The send was waiting on the per-account count: it ends as the README says (503)...
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "/problems/service-unavailable"
    # ...but meanwhile the account's row was held by a transaction waiting for Redis.
    assert held is None, f"the account row was held while Redis hung: {held}"


@pytest.mark.skipif(not REDIS_URL, reason="SIMCHARGE_TEST_REDIS_URL is not set")
@pytest.mark.parametrize("step", ["send", "check"])
async def test_a_hung_redis_holds_no_write_while_adding_a_line_is_counted(
    fresh_db: Database, settings: Settings, step: str
) -> None:
    """Adding a line counts its code send and its code check against the account before the
    transaction (`accounts.count_line_attach`, `codes.count_check`), as every other code does:
    while Redis hangs on that count no write is held (on SQLite, the database's one write lock),
    and the attempt ends 503. Before, both were counted inside their transaction — the send
    after reading the line, so with SQLite's write lock taken."""
    now = utcnow()

    async def make(s: AsyncSession) -> tuple[uuid.UUID, str, str]:
        account = await create_account(s, password=PASSWORD)
        line = await create_line(s, state=LineState.available)
        issued = await open_session(
            s, settings.secret_key, account_id=account.id,
            client=ClientInfo(ip="198.51.100.9", user_agent="pytest"),
            policy=policy(settings), now=now,
        )
        return account.id, issued.token, line.msisdn

    account_id, token, msisdn = await fresh_db.run(make)
    app = create_app(settings, db=fresh_db, run_worker=False)
    key = b"account-code-sends" if step == "send" else b"account-code-checks"
    path = "/api/v1/me/lines" if step == "send" else "/api/v1/me/lines/verify"
    body = {"msisdn": msisdn} if step == "send" else {"msisdn": msisdn, "code": "123456"}
    async with redis_hanging_on(key) as url:
        app.state.rate_limits = RateLimits(url)
        ip = f"198.51.100.{uuid.uuid4().int % 200 + 20}"
        async with http(app, ip) as c:
            asked = asyncio.create_task(
                c.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
            )
            await asyncio.sleep(0.4)
            assert not asked.done(), (await asked).text

            held = await _held_write(fresh_db, account_id)
            r = await asyncio.wait_for(asked, 8)
    assert r.status_code == 503, r.text
    assert held is None, f"a write was held while Redis hung: {held}"


# --- bad input uses up no limit -------------------------------------------------------------------


async def test_an_invalid_profile_change_does_not_use_up_the_code_sends(
    settings: Settings, db: Database
) -> None:
    """`PATCH /me` refuses a contact change without `current_password` (422) before it counts
    a code send: ten such requests leave the next, valid one its code (promise 3: bad input
    changes nothing). Before, each used up one of the address's 10 code sends a minute."""
    now = utcnow()

    async def make(s: AsyncSession) -> str:
        account = await create_account(s, password=PASSWORD)
        issued = await open_session(
            s, settings.secret_key, account_id=account.id,
            client=ClientInfo(ip="198.51.100.9", user_agent="pytest"),
            policy=policy(settings), now=now,
        )
        return issued.token

    token = await db.run(make)
    bearer = {"Authorization": f"Bearer {token}"}
    app = create_app(settings, db=db, run_worker=False)
    async with http(app, "198.51.100.44") as c:
        for _ in range(LIMITS["codes"][0].amount):
            r = await c.patch("/api/v1/me", json={"email": "new@example.com"}, headers=bearer)
            assert r.status_code == 422, r.text
        r = await c.patch(
            "/api/v1/me",
            json={"email": "new@example.com", "current_password": PASSWORD},
            headers=bearer,
        )
    assert r.status_code == 200, r.text


async def test_an_invalid_registration_does_not_use_up_the_registrations(
    settings: Settings, db: Database
) -> None:
    """`POST /auth/register` checks the body's rules that need no account (`check_registration`)
    before it counts one of the address's 10 registrations an hour: ten forms refused 422 leave
    the next, valid one through. Before, they locked the address (on a carrier-grade NAT,
    everyone behind it) out of registering for an hour."""
    app = create_app(settings, db=db, run_worker=False)
    async with http(app, "198.51.100.45") as c:
        for i in range(LIMITS["register"][0].amount):
            r = await c.post(
                "/api/v1/auth/register",
                json={"username": f"zzbad{i}", "password": "short", "email": "not-an-address"},
            )
            assert r.status_code == 422, r.text
        r = await c.post(
            "/api/v1/auth/register",
            json={"username": f"zzok{uuid.uuid4().hex[:6]}", "password": PASSWORD,
                  "email": f"ok{uuid.uuid4().hex[:6]}@example.com"},
        )
    assert r.status_code == 202, r.text


# --- in-memory limits and several web processes -------------------------------------------------


def _serve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, env: dict[str, str], *args: str
) -> tuple[Any, list[Any]]:
    """`simcharge serve *args` with `env`, stopped before it would listen: its result and logs."""
    import uvicorn
    from structlog.testing import capture_logs
    from typer.testing import CliRunner

    import simcharge.kit.dispatch as dispatch
    import simcharge.kit.logging as kit_logging
    import simcharge.metrics as metrics
    from simcharge.cli import app as cli_app
    from simcharge.config import get_settings

    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/x.db")
    monkeypatch.delenv("SIMCHARGE_REDIS_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(dispatch, "serve", lambda *a, **k: 0)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr(kit_logging, "configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(metrics, "prepare_multiprocess", lambda *a, **k: None)
    get_settings.cache_clear()
    try:
        with capture_logs() as logs:
            result = CliRunner().invoke(cli_app, ["serve", *args])
    finally:
        get_settings.cache_clear()
    return result, logs


def test_serving_several_processes_without_redis_is_not_silent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """`simcharge serve --workers 4` without `SIMCHARGE_REDIS_URL` (each process counting the
    limits on its own: every limit times 4) says so at start
    (`config.memory_rate_limits_with_workers`); one process does not. Before, it was silent."""
    result, logs = _serve(monkeypatch, tmp_path, {"SIMCHARGE_ENV": "test"}, "--workers", "4")
    assert result.exit_code == 0, result.output
    warned = [e for e in logs if e["event"] == "config.memory_rate_limits_with_workers"]
    assert len(warned) == 1 and warned[0]["workers"] == 4, logs
    result, logs = _serve(monkeypatch, tmp_path, {"SIMCHARGE_ENV": "test"}, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert not [e for e in logs if e["event"] == "config.memory_rate_limits_with_workers"]


def test_production_refuses_several_processes_without_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """In production, where the limits are a security control, `serve --workers 2` without
    `SIMCHARGE_REDIS_URL` is refused at start (exit 2, one line naming the setting); one
    process is served. Before, it served with every limit doubled."""
    env = {
        "SIMCHARGE_ENV": "production",
        "SIMCHARGE_SECRET_KEY": "k" * 48,
        "SIMCHARGE_BASE_URL": "https://top.example",
        "SIMCHARGE_SANDBOX_ENABLED": "false",
    }
    result, _ = _serve(monkeypatch, tmp_path, env, "--workers", "2")
    assert result.exit_code == 2, result.output
    assert "SIMCHARGE_REDIS_URL" in result.output
    result, _ = _serve(monkeypatch, tmp_path, env, "--workers", "1")
    assert result.exit_code == 0, result.output
