"""The thirteenth round's re-authentication in a real browser (Chromium's virtual authenticator,
through the shared passkeys.js; served at `http://localhost:<port>` as `test_passkeys` explains):
removing a passkey asks the password (a wrong one told at the field of that passkey's form);
with two-step sign-in with a passkey on, the last passkey is kept (no removal form offered for
it), and closing the account asks
the passkey too — the close form's `data-confirm` gets one of the holder's passkeys to answer the
confirm options, its answer sent with the form — and leads to the closed page."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.auth.models import SecurityEvent
from tests.portal.browser.conftest import PHONE, Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_passkeys import (  # noqa: F401 - the fixture
    PASSWORD,
    on_localhost,
    register_and_sign_in,
    submit,
)


async def add_passkey(page: Any, live: Live, name: str) -> None:
    await page.goto(live.base + "/account/security")
    await page.locator("#passkey-add").wait_for(state="visible")
    await page.fill("#f-pk-password", PASSWORD)
    await page.fill("#f-pk-name", name)
    async with page.expect_navigation(url="**/account/security?done=passkey_added"):
        await page.click("#passkey-add button[type=submit]")


async def test_removing_asks_the_password_and_closing_asks_the_passkey(
    on_localhost: Live, browser: Any  # noqa: F811
) -> None:
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
        await register_and_sign_in(live, page)
        await add_passkey(page, live, "Test phone")

        # Removing it: the form behind "Remove" asks the password; a wrong one is told there.
        remove = page.locator("form[action$='/remove']")
        await page.locator("details.remove summary").click()
        await remove.locator("input[name=password]").fill("not my password")
        await submit(page, "form[action$='/remove']")
        assert await page.locator("details.remove[open]").count() == 1
        assert await remove.locator("input[name=password]").get_attribute("aria-invalid") == "true"
        await check(page, "security-passkey-remove-error", problems, desktop=False)
        assert "Test phone" in await page.locator("section[aria-labelledby=s-passkeys]").inner_text()
        await remove.locator("input[name=password]").fill(PASSWORD)
        await submit(page, "form[action$='/remove']")
        assert "You have no passkey yet." in await page.locator("main").inner_text()
        await cdp.send("WebAuthn.clearCredentials", {"authenticatorId": added["authenticatorId"]})

        # A passkey again, and two-step sign-in with it.
        await add_passkey(page, live, "New phone")
        await page.fill("#f-pk-on-password", PASSWORD)
        await submit(page, "form[action='/account/security/passkeys/two-step']")
        await page.goto(live.base + "/account/security")

        # The last passkey is kept while two-step asks for it: no removal form, which would ask
        # the passkey only to be refused (fourteenth round) — the reason in its place.
        assert await page.locator("details.remove").count() == 0
        assert await page.locator("form[action$='/remove']").count() == 0
        kept = page.locator("[id^=passkey-last-]")
        assert (await kept.inner_text()).startswith("This is your last passkey")

        # Closing: the password, then the passkey through passkeys.js (no code typed).
        close = page.locator("#passkey-close")
        assert await close.get_attribute("data-confirm") == "/api/v1/me/passkeys/confirm/options"
        await check(page, "security-close-passkey", problems, desktop=False)
        await close.locator("input[name=password]").fill(PASSWORD)
        await close.locator("input[name=confirm]").check()
        async with page.expect_navigation(url="**/account/closed"):
            await page.click("#passkey-close button[type=submit]")
        async with live.db.read() as s:
            statuses = (await s.execute(select(Account.status))).scalars().all()
            closed = (await s.execute(
                select(SecurityEvent.success).where(SecurityEvent.kind == "account_closed")
            )).scalars().all()
        assert statuses == ["closed"]
        assert closed == [True]
        assert not problems
    finally:
        await context.close()
