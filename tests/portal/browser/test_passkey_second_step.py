"""Two-step sign-in with a passkey in a real browser: Chromium's virtual authenticator makes a
passkey on the security page, the holder turns two-step sign-in with a passkey on there (the
password again, a wrong one told in the form; the recovery codes shown once), and the next sign-in
with the password asks for the passkey, which the shared passkeys.js gets from the authenticator
for this sign-in only; turning it off asks the passkey again. Served at
`http://localhost:<port>` as `test_passkeys` explains."""

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


async def test_a_passkey_as_the_second_step(on_localhost: Live, browser: Any) -> None:  # noqa: F811
    live = on_localhost
    context = await browser.new_context(viewport=PHONE, locale="en-US")
    try:
        page = await context.new_page()
        problems = watch(page)
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }})
        await register_and_sign_in(live, page)
        await page.goto(live.base + "/account/security")
        await page.locator("#passkey-add").wait_for(state="visible")
        await page.fill("#f-pk-password", PASSWORD)
        await page.fill("#f-pk-name", "Test phone")
        async with page.expect_navigation(url="**/account/security?done=passkey_added"):
            await page.click("#passkey-add button[type=submit]")

        # Turning it on asks the password again: a wrong one is told at the field.
        on = "form[action='/account/security/passkeys/two-step']"
        await page.fill("#f-pk-on-password", "not my password")
        await submit(page, on)
        assert await page.get_attribute("#f-pk-on-password", "aria-invalid") == "true"
        await page.fill("#f-pk-on-password", PASSWORD)
        await submit(page, on)
        codes = await page.locator("main").inner_text()
        assert "recovery" in codes.lower(), codes
        await page.goto(live.base + "/account/security")
        section = await page.locator("section[aria-labelledby=s-passkeys]").inner_text()
        assert "After your password, signing in asks for one of your passkeys" in section
        await check(page, "security-passkey-two-step", problems, desktop=False)

        # Signed out: the password, then the passkey.
        await submit(page, "form[action='/logout']")
        await page.goto(live.base + "/login?next=/account/security")
        async with live.db.read() as s:
            [who] = (await s.execute(select(Account.username))).scalars().all()
        await page.fill("#f-login", who)
        await page.fill("#f-password", PASSWORD)
        await submit(page, "form[action='/login']")
        assert "/login" in page.url
        assert "Confirm with one of your passkeys, or enter a recovery code." in (
            await page.locator("main").inner_text()
        )
        button = page.locator("#passkey-second-step button")
        await button.wait_for(state="visible")
        await check(page, "login-passkey-second-step", problems, desktop=False)
        async with page.expect_navigation(url="**/account/security"):
            await button.focus()
            await page.keyboard.press("Enter")
        async with live.db.read() as s:
            logins = (await s.execute(
                select(SecurityEvent.details).where(
                    SecurityEvent.kind == "login", SecurityEvent.success.is_(True)
                )
            )).scalars().all()
        assert [d["mfa"] for d in logins if d.get("method") == "password+passkey"] == [True]

        # Turning it off asks the password and the passkey again (passkeys.js gets its answer to
        # the confirm options and sends it with the form), as the app's code is asked.
        await page.goto(live.base + "/account/security")
        await page.fill("#f-pk-off-password", PASSWORD)
        async with page.expect_navigation(url="**/account/security?done=passkey_two_step_off"):
            await page.click("#passkey-confirm button[type=submit]")
        assert "Two-step sign-in with a passkey is off." in await page.locator("main").inner_text()
        assert not problems
    finally:
        await context.close()
