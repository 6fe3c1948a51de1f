"""Staff passkeys in a real browser: Chromium's virtual authenticator (DevTools protocol, ctap2,
internal, resident keys, user verification) makes a passkey on the member's settings page and
signs in with it from the back office's sign-in page, through `backoffice/static/passkeys.js`
under the back office's strict Content-Security-Policy (a script file, no inline script; any
CSP violation fails the test). A wrong password is told in the form's status message and marks
the field. Without JavaScript the sign-in page shows no passkey button. WebAuthn needs a domain
for its relying party: the site is served at `http://localhost:<port>` (a secure context)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from simcharge.app import create_app
from simcharge.backoffice.models import AuditEntry, StaffPasskey
from simcharge.config import Environment, Settings
from simcharge.db import Database
from tests.backoffice.browser.a11y import check
from tests.backoffice.browser.conftest import Site
from tests.backoffice.helpers import STAFF_PASSWORD, Staff, code_for, new_staff
from tests.conftest import TEST_SECRET, Backend


@pytest.fixture
async def on_localhost(backend: Backend, fresh_db: Database) -> AsyncIterator[Site]:
    """The back office on a free port at `http://localhost:<port>`: passkeys on."""
    if backend.is_postgres:
        pytest.skip("browser journeys run on SQLite only; the services run on both elsewhere")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    base = f"http://localhost:{port}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, env=Environment.test, secret_key=TEST_SECRET,
        database_url="sqlite+aiosqlite:///unused.db", base_url=base, worker_in_process=False,
        auth_min_response_ms=0,
    )  # fmt: skip
    assert settings.passkey_rp == "localhost"
    app = create_app(settings, db=fresh_db, run_worker=False)
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


async def sign_in_with_password(site: Site, page: Any, staff: Staff) -> None:
    await page.goto(site.base + "/backoffice/login")
    await page.fill("input[name=username]", staff.username)
    await page.fill("input[name=password]", STAFF_PASSWORD)
    async with page.expect_navigation():
        await page.click("form[action='/backoffice/login'] button[type=submit]")
    assert staff.secret is not None
    await page.fill("input[name=code]", code_for(staff.secret))
    async with page.expect_navigation():
        await page.click("form[action='/backoffice/login/code'] button[type=submit]")
    assert page.url.endswith("/backoffice"), page.url


async def test_add_a_passkey_then_sign_in_with_it(
    on_localhost: Site, chromium: Any, page: Any
) -> None:
    site = on_localhost
    staff = await new_staff(site.db, site.settings, "agent")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }})  # fmt: skip
    await sign_in_with_password(site, page, staff)
    async with page.expect_navigation():
        await page.click("nav a[href='/backoffice/account']")
    form = page.locator("#passkey-add")
    await form.wait_for(state="visible")
    await check(page, "my settings (no passkey)")

    # A wrong password: said in the form's status message, the field marked, nothing made.
    await page.fill("#add-password", "not my password")
    await page.fill("#add-code", code_for(staff.secret or "", 1))
    await page.click("#passkey-add button[type=submit]")
    await page.wait_for_function(
        "() => document.getElementById('passkey-add-status').textContent.length > 0"
    )
    assert "password" in (await page.locator("#passkey-add-status").inner_text()).lower()
    assert await page.get_attribute("#add-password", "aria-invalid") == "true"
    assert await page.evaluate("() => document.activeElement.id") == "add-password"
    await check(page, "my settings (passkey refused)")

    await page.fill("#add-password", STAFF_PASSWORD)
    await page.fill("#add-name", "Desk laptop")
    async with page.expect_navigation(url="**/backoffice/account?done=passkey_added"):
        await page.click("#passkey-add button[type=submit]")
    section = page.locator("section[aria-labelledby=s-passkeys]")
    assert "Desk laptop" in await section.inner_text()
    await check(page, "my settings (a passkey)")
    held = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": added["authenticatorId"]})
    assert len(held["credentials"]) == 1 and held["credentials"][0]["isResidentCredential"]

    # Signed out, the passkey alone signs in: no username, no password, no code.
    async with page.expect_navigation():
        await page.click("header form[action='/backoffice/logout'] button[type=submit]")
    await page.goto(site.base + "/backoffice/login")
    button = page.locator("#passkey-login button")
    await button.wait_for(state="visible")
    await check(page, "sign-in with a passkey")
    async with page.expect_navigation(url="**/backoffice"):
        await button.focus()
        await page.keyboard.press("Enter")
    assert "Where you are signed in" in await page.locator("main").inner_text()
    async with site.db.read() as s:
        logins = (await s.execute(
            select(AuditEntry.details).where(AuditEntry.action == "staff.login")
        )).scalars().all()  # fmt: skip
        [passkey] = (await s.execute(select(StaffPasskey))).scalars().all()
    assert [d.get("method") for d in logins] == ["password+totp", "passkey"]
    assert passkey.last_used_at is not None and passkey.name == "Desk laptop"


async def test_without_javascript_the_sign_in_page_offers_no_passkey(
    on_localhost: Site, chromium: Any
) -> None:
    context = await chromium.new_context(java_script_enabled=False)
    try:
        page = await context.new_page()
        await page.goto(on_localhost.base + "/backoffice/login")
        assert await page.locator("#passkey-login").count() == 1
        assert not await page.locator("#passkey-login button").is_visible()
    finally:
        await context.close()
