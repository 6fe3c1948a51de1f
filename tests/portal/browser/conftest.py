"""A real server (uvicorn, in the test's event loop, with its outbox worker), a real SMTP
server (aiosmtpd) and Debian's Chromium driven by Playwright, with axe-core injected.

Without Chromium or axe-core (`make install` runs `npm ci`) these tests are skipped, unless
`SIMCHARGE_REQUIRE_BROWSER=1` (CI) makes that a failure. They run on SQLite only: the services
they drive are tested on both databases elsewhere. `SIMCHARGE_SCREENSHOTS=docs/screenshots`
saves the main pages at phone and desktop width."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from simcharge.app import create_app
from simcharge.auth.throttle import RateLimits
from simcharge.config import Environment, Settings
from simcharge.db import Database
from tests.conftest import TEST_SECRET, Backend, SmtpInbox
from tests.factories import load_demo_catalog

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing"
    if not AXE.exists():
        return "axe-core is missing (npm ci)"
    return None


@pytest.fixture(scope="session")
def _browser_ready() -> None:
    why = _missing()
    if why:
        if os.environ.get("SIMCHARGE_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)


def _fontconfig(tmp: Path) -> dict[str, str]:
    """Chromium finds the CJK font that ships with mplfonts (the receipts use it too), so that
    the Chinese pages render their characters on a machine without CJK fonts."""
    import mplfonts

    fonts = Path(mplfonts.__file__).parent / "fonts"
    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        '<include ignore_missing="yes">/etc/fonts/fonts.conf</include>'
        f"<dir>{fonts}</dir><cachedir>{tmp / 'cache'}</cachedir></fontconfig>",
        encoding="utf-8",
    )
    return {**os.environ, "FONTCONFIG_FILE": str(conf)}


@pytest.fixture(scope="session")
async def browser(_browser_ready: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage"],
            env=_fontconfig(tmp_path_factory.mktemp("fonts")),
        )
        yield b
        await b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    base: str
    settings: Settings
    db: Database
    inbox: SmtpInbox
    limits: RateLimits
    """The server's rate-limit counts (in memory)."""


@pytest.fixture
def _sqlite_only(backend: Backend) -> None:
    if backend.is_postgres:
        pytest.skip("browser journeys run on SQLite (the services run on both elsewhere)")


@asynccontextmanager
async def serve(
    database: Database, inbox: SmtpInbox, smtp_port: int, *, host: str = "127.0.0.1"
) -> AsyncIterator[Live]:
    """simcharge on a free port (uvicorn, its outbox worker in process) over `database`, with
    the demo catalog, e-mail to the test's SMTP server. `host`: the name the browser uses for it
    (`localhost` for passkeys, which need a domain; it listens on 127.0.0.1 either way)."""
    port = _free_port()
    base = f"http://{host}:{port}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env=Environment.test,
        secret_key=TEST_SECRET,
        database_url="sqlite+aiosqlite:///unused.db",
        base_url=base,
        worker_in_process=True,
        worker_poll_seconds=0.1,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_tls="none",
        smtp_from="simcharge <no-reply@simcharge.test>",
        auth_min_response_ms=0,
    )
    await database.run(load_demo_catalog)
    app = create_app(settings, db=database)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    try:
        yield Live(base, settings, database, inbox, app.state.rate_limits)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def live(
    _browser_ready: None, _sqlite_only: None, fresh_db: Database,
    smtp_server: tuple[SmtpInbox, int],
) -> AsyncIterator[Live]:
    inbox, smtp_port = smtp_server
    inbox.messages.clear()
    async with serve(fresh_db, inbox, smtp_port) as running:
        yield running


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    ctx = await browser.new_context(viewport=PHONE, locale="en-US")
    yield ctx
    await ctx.close()
