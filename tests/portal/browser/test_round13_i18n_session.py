"""In Chromium (an English browser): a customer who chose Spanish with the footer's switch meets
a Spanish page-not-found; a question typed after the session ended is not sent, the page says
so and its "Sign in" leads back to the help page once signed in. axe-core finds nothing serious
on either page and no CSP rule is broken."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from simcharge.kit.clock import clock, utcnow
from tests.portal.browser.conftest import PHONE, Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_journeys import submit
from tests.portal.browser.test_more_journeys import customer, sign_in
from tests.portal.helpers import PASSWORD


async def test_the_chosen_language_and_a_form_after_the_session_ended(
    live: Live, browser: Any
) -> None:
    context = await browser.new_context(viewport=PHONE, locale="en-US")
    try:
        page = await context.new_page()
        problems = watch(page)
        name, _, _ = await customer(live)
        await sign_in(live, page, name)
        await submit(page, "footer form:has(input[name=code][value=es])")  # "Español"
        await page.goto(live.base + "/account/no-such-page")
        assert await page.get_attribute("html", "lang") == "es"
        assert "No se ha encontrado nada aquí." in await page.locator("main").inner_text()
        await check(page, "not-found-es", problems, desktop=False)

        # The question typed, then the session ends (30 minutes without use) before it is sent.
        await page.goto(live.base + "/account/help")
        await page.fill("#f-subject", "Roaming")
        await page.fill("#f-body", "Does my line work in Tokyo?")
        clock.freeze(utcnow() + timedelta(minutes=live.settings.session_idle_minutes + 5))
        await submit(page, "form[action='/account/help']")
        main = await page.locator("main").inner_text()
        assert "Primero tienes que iniciar sesión." in main  # the title, in Spanish still
        await check(page, "form-after-session-es", problems, desktop=False)
        async with page.expect_navigation():
            await page.click("[data-testid=sign-in-again]")
        assert "/login?next=%2Faccount%2Fhelp" in page.url
        await page.fill("#f-login", name)
        await page.fill("#f-password", PASSWORD)
        await submit(page, "form[action='/login']")
        assert page.url == live.base + "/account/help"
        assert await page.input_value("#f-body") == ""  # what was typed is not kept
        assert not problems
    finally:
        await context.close()
