"""Round 15's security review in Chromium: "Your details" asks, with two-step on, the second
factor before a contact changes, as the close-account form does. With the app: the code field,
a wrong code told beside it (nothing changed), a recovery code on to the new contact's code. With
two-step sign-in with a passkey (Chromium's virtual authenticator, through the shared
passkeys.js; served at `http://localhost:<port>` as `test_passkeys` explains): the form's
`data-confirm` gets one of the holder's passkeys to answer, its answer sent with the form.
axe-core finds nothing serious on the form's states; the CSP stays on."""

from __future__ import annotations

import re
from typing import Any

import pyotp
from sqlalchemy import select

from simcharge.accounts.models import Account
from tests.portal.browser.conftest import PHONE, Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_more_journeys import PASSWORD as JOURNEY_PASSWORD
from tests.portal.browser.test_more_journeys import customer, sign_in
from tests.portal.browser.test_passkeys import (  # noqa: F401 - the fixture
    PASSWORD,
    on_localhost,
    register_and_sign_in,
    submit,
)
from tests.portal.browser.test_round13_reauthentication import add_passkey

NEW_PHONE = "+14155550151"


async def _account(live: Live, name: str | None = None) -> Account:
    async with live.db.read() as s:
        query = select(Account)
        if name is not None:
            query = query.where(Account.username == name)
        found = (await s.execute(query)).scalars().one()
    return found


async def test_with_the_app_on_a_new_number_asks_the_code(live: Live, context: Any) -> None:
    name, _, _ = await customer(live, with_line=False)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + "/account/security")
    await page.fill("form[action='/account/security/totp'] #f-password", JOURNEY_PASSWORD)
    await submit(page, "form[action='/account/security/totp']")
    secret = (await page.inner_text("[data-testid=totp-key]")).replace(" ", "").strip()
    await page.fill("#f-code", pyotp.TOTP(secret).now())
    await submit(page, "form[action='/account/security/totp/confirm']")
    recovery = re.findall(r"\S+", await page.inner_text("[data-testid=recovery-codes]"))

    await page.goto(live.base + "/account/profile")
    assert await page.locator("#f-code").count() == 1
    assert await page.get_attribute("#f-code", "autocomplete") == "one-time-code"
    await check(page, "profile-details-two-step", problems)
    await page.fill("#f-phone", NEW_PHONE)
    await page.fill("#f-current_password", JOURNEY_PASSWORD)
    await submit(page, "form[action='/account/profile/details']")
    assert await page.text_content("#e-code") == "This field is required."
    await page.fill("#f-current_password", JOURNEY_PASSWORD)
    await page.fill("#f-code", "000000")
    await submit(page, "form[action='/account/profile/details']")
    assert await page.text_content("#e-code") == "The authenticator or recovery code is wrong."
    assert await page.get_attribute("#f-code", "aria-invalid") == "true"
    assert await page.input_value("#f-phone") == NEW_PHONE  # kept as typed
    await check(page, "profile-details-two-step-refused", problems)
    assert (await _account(live, name)).phone_pending is None

    # A recovery code (the app's code of this half-minute confirmed the app).
    await page.fill("#f-current_password", JOURNEY_PASSWORD)
    await page.fill("#f-code", recovery[0])
    await submit(page, "form[action='/account/profile/details']")
    assert "/verify" in page.url, await page.inner_text("main")
    assert (await _account(live, name)).phone_pending == NEW_PHONE
    assert not problems


async def test_with_two_step_sign_in_with_a_passkey_the_form_asks_a_passkey(
    on_localhost: Live, browser: Any  # noqa: F811
) -> None:
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
        await add_passkey(page, live, "Test phone")
        await page.fill("#f-pk-on-password", PASSWORD)
        await submit(page, "form[action='/account/security/passkeys/two-step']")

        await page.goto(live.base + "/account/profile")
        form = page.locator("#profile-details")
        assert await form.get_attribute("data-confirm") == "/api/v1/me/passkeys/confirm/options"
        await check(page, "profile-details-passkey", problems, desktop=False)
        # The password, then the passkey through passkeys.js (no recovery code typed).
        await page.fill("#f-phone", NEW_PHONE)
        await page.fill("#f-current_password", PASSWORD)
        async with page.expect_navigation(url="**/verify?sent=1"):
            await page.click("#profile-details button[type=submit]")
        account = await _account(live)
        assert account.phone_pending == NEW_PHONE
        assert not problems
    finally:
        await context.close()


async def test_a_display_name_alone_asks_no_passkey(
    on_localhost: Live, browser: Any  # noqa: F811
) -> None:
    """Sixteenth round: with two-step sign-in with a passkey, a save that changes no contact
    (the form's values are those `data-held` lists) asks no passkey — the server asks nothing
    for it — and one that does still asks it."""
    live = on_localhost
    context = await browser.new_context(viewport=PHONE, locale="en-US")
    try:
        page = await context.new_page()
        problems = watch(page)
        asked: list[str] = []
        page.on(
            "request",
            lambda r: asked.append(r.url) if "/passkeys/confirm/options" in r.url else None,
        )
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }})
        await register_and_sign_in(live, page)
        await add_passkey(page, live, "Test phone")
        await page.fill("#f-pk-on-password", PASSWORD)
        await submit(page, "form[action='/account/security/passkeys/two-step']")
        before = await _account(live)

        await page.goto(live.base + "/account/profile")
        held = await page.get_attribute("#profile-details", "data-held")
        assert held is not None and before.email is not None and before.email in held
        await page.fill("#f-display_name", "Ana Reyes")
        async with page.expect_navigation(url="**/account/profile?saved=details"):
            await page.click("#profile-details button[type=submit]")
        assert asked == []
        assert (await _account(live)).display_name == "Ana Reyes"

        # The same address typed again with spaces around it is no change either.
        await page.fill("#f-email", f"  {before.email} ")
        async with page.expect_navigation(url="**/account/profile?saved=details"):
            await page.click("#profile-details button[type=submit]")
        assert asked == []

        await page.fill("#f-phone", NEW_PHONE)
        await page.fill("#f-current_password", PASSWORD)
        async with page.expect_navigation(url="**/verify?sent=1"):
            await page.click("#profile-details button[type=submit]")
        assert len(asked) == 1
        assert (await _account(live)).phone_pending == NEW_PHONE
        assert not problems
    finally:
        await context.close()
