"""The back office in a real browser: uvicorn serving the app in the test's event loop (with
its outbox worker) on a database of its own, and Debian's Chromium driven by Playwright.

Without Playwright or Chromium these tests fail when `SIMCHARGE_REQUIRE_BROWSER=1` (CI sets it)
and are otherwise skipped with a reason that says what is missing and how to require them. They
run on SQLite; on the PostgreSQL run they are skipped, saying so: the services these pages call
are tested on both databases elsewhere."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from simcharge.app import create_app
from simcharge.config import Environment, Settings
from simcharge.db import Database
from tests.conftest import TEST_SECRET, Backend, SmtpInbox

CHROMIUM = Path("/usr/bin/chromium")


def _why_not() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing"
    return None


def browser_required() -> bool:
    return os.environ.get("SIMCHARGE_REQUIRE_BROWSER") == "1"


def _unavailable(why: str) -> None:
    if browser_required():
        pytest.fail(f"the browser is required (SIMCHARGE_REQUIRE_BROWSER=1) but {why}")
    pytest.skip(
        f"back-office browser test not run: {why} "
        "(set SIMCHARGE_REQUIRE_BROWSER=1 to make this a failure)"
    )


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    why = _why_not()
    if why:
        _unavailable(why)
    from playwright.async_api import Error, async_playwright

    async with async_playwright() as p:
        try:
            browser = await p.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except Error as exc:
            _unavailable(f"Chromium does not start ({str(exc).splitlines()[0]})")
        yield browser
        await browser.close()


@dataclass
class Site:
    base: str
    settings: Settings
    db: Database
    app: Any


@pytest.fixture
async def site(
    backend: Backend, fresh_db: Database, smtp_server: tuple[SmtpInbox, int]
) -> AsyncIterator[Site]:
    if backend.is_postgres:
        pytest.skip(
            "browser journeys run on SQLite only; the services their pages call run on "
            "PostgreSQL in the other back-office tests"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env=Environment.test,
        secret_key=TEST_SECRET,
        database_url="sqlite+aiosqlite:///unused.db",
        base_url=base,
        worker_in_process=True,
        worker_poll_seconds=0.1,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server[1],
        smtp_tls="none",
        auth_min_response_ms=0,
    )
    from tests.factories import load_demo_catalog

    await fresh_db.run(load_demo_catalog)
    app = create_app(settings, db=fresh_db)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    yield Site(base, settings, fresh_db, app)
    server.should_exit = True
    await task


@pytest.fixture
async def page(chromium: Any) -> AsyncIterator[Any]:
    context = await chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    await context.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
