"""Passkeys in a real browser: Chromium's virtual authenticator (DevTools protocol, ctap2,
internal, resident keys, user verification) makes a passkey on the security page and signs in
with it from the login page, through passkeys.js; a wrong password is told in the form's status
message; renaming and removing work as plain forms. Without JavaScript, the login page shows no
passkey button. WebAuthn needs a secure context and a domain for its relying party: the site is
served at `http://localhost:<port>` (a secure context in every browser), not 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from simcharge.auth.models import SecurityEvent
from simcharge.db import Database
from tests.conftest import SmtpInbox
from tests.portal.browser.conftest import PHONE, Live, serve
from tests.portal.browser.helpers import check, email_code, watch

PASSWORD = "a quiet river at dawn"


@pytest.fixture
async def on_localhost(
    _browser_ready: None, _sqlite_only: None, fresh_db: Database,
    smtp_server: tuple[SmtpInbox, int],
) -> AsyncIterator[Live]:
    """The live server of `conftest.serve`, at `http://localhost:<port>`: passkeys on."""
    inbox, smtp_port = smtp_server
    inbox.messages.clear()
    async with serve(fresh_db, inbox, smtp_port, host="localhost") as running:
        assert running.settings.passkey_rp == "localhost"
        yield running


async def submit(page: Any, form: str) -> None:
    async with page.expect_navigation():
        await page.click(f"{form} button[type=submit]")


async def register_and_sign_in(live: Live, page: Any) -> str:
    name = "pk" + uuid.uuid4().hex[:8]
    email = f"{name}@example.com"
    await page.goto(live.base + "/register")
    await page.fill("#f-username", name)
    await page.fill("#f-password", PASSWORD)
    await page.fill("#f-email", email)
    await submit(page, "form[action='/register']")
    await page.fill("#f-code", await email_code(live.inbox, email))
    await page.fill("#f-password", PASSWORD)
    await submit(page, "form[action='/verify']")
    await page.fill("#f-login", name)
    await page.fill("#f-password", PASSWORD)
    await submit(page, "form[action='/login']")
    assert page.url.endswith("/account"), page.url
    return email


async def test_add_a_passkey_then_sign_in_with_it(on_localhost: Live, browser: Any) -> None:
    live = on_localhost
    context = await browser.new_context(viewport=PHONE, locale="en-US")
    try:
        page = await context.new_page()
        problems = watch(page)
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }})
        email = await register_and_sign_in(live, page)

        await page.goto(live.base + "/account/security")
        form = page.locator("#passkey-add")
        await form.wait_for(state="visible")
        await check(page, "security-passkeys", problems, desktop=False)
        # A wrong password: said in the form's status message, the field marked, nothing made.
        await page.fill("#f-pk-password", "not my password")
        await page.click("#passkey-add button[type=submit]")
        status = page.locator("#passkey-add-status")
        await page.wait_for_function(
            "() => document.getElementById('passkey-add-status').textContent.length > 0"
        )
        assert "password" in (await status.inner_text()).lower()
        assert await page.get_attribute("#f-pk-password", "aria-invalid") == "true"
        assert await page.evaluate("() => document.activeElement.id") == "f-pk-password"

        await page.fill("#f-pk-password", PASSWORD)
        await page.fill("#f-pk-name", "Test phone")
        async with page.expect_navigation(url="**/account/security?done=passkey_added"):
            await page.click("#passkey-add button[type=submit]")
        assert "Test phone" in await page.locator("section[aria-labelledby=s-passkeys]").inner_text()
        await check(page, "security-passkey-added", problems, desktop=False)
        held = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": added["authenticatorId"]})
        assert len(held["credentials"]) == 1 and held["credentials"][0]["isResidentCredential"]

        # Signed out, the passkey alone signs in (no login name, no password, no code).
        await submit(page, "form[action='/logout']")
        await page.goto(live.base + "/login?next=/account/security")
        button = page.locator("#passkey-login button")
        await button.wait_for(state="visible")
        await check(page, "login-passkey", problems, desktop=False)
        async with page.expect_navigation(url="**/account/security"):
            await button.focus()
            await page.keyboard.press("Enter")
        text = await page.locator("main").inner_text()
        assert "Test phone" in text
        async with live.db.read() as s:
            logins = (await s.execute(
                select(SecurityEvent.details).where(SecurityEvent.kind == "login")
            )).scalars().all()
        assert [d["mfa"] for d in logins if d.get("method") == "passkey"] == [True]

        # Renamed and removed as plain forms.
        rename = page.locator("form[action$='/rename']")
        await rename.locator("input[name=name]").fill("Old phone")
        await submit(page, "form[action$='/rename']")
        assert "Old phone" in await page.locator("section[aria-labelledby=s-passkeys]").inner_text()
        await rename.locator("input[name=name]").fill("   ")
        await submit(page, "form[action$='/rename']")
        assert await page.locator("form[action$='/rename'] [aria-invalid=true]").count() == 1
        await check(page, "security-passkey-rename-error", problems, desktop=False)
        # Removing asks the password again (thirteenth round), in the form behind "Remove".
        await page.locator("details.remove summary").click()
        await page.locator("form[action$='/remove'] input[name=password]").fill(PASSWORD)
        await submit(page, "form[action$='/remove']")
        assert "You have no passkey yet." in await page.locator("main").inner_text()
        subjects = [m["Subject"] for m in live.inbox.to(email)]
        for _ in range(100):
            subjects = [m["Subject"] for m in live.inbox.to(email)]
            if "A passkey was removed from your account" in subjects:
                break
            await asyncio.sleep(0.05)
        assert "A passkey was added to your account" in subjects
        assert "A passkey was removed from your account" in subjects
    finally:
        await context.close()


async def test_without_javascript_the_login_page_offers_no_passkey(
    on_localhost: Live, browser: Any
) -> None:
    context = await browser.new_context(viewport=PHONE, locale="en-US", java_script_enabled=False)
    try:
        page = await context.new_page()
        await page.goto(on_localhost.base + "/login")
        assert await page.locator("#passkey-login").count() == 1
        assert not await page.locator("#passkey-login button").is_visible()
    finally:
        await context.close()
