"""Choosing a time zone in Chromium: on an account without one, the portal's own script (no
inline script: the CSP stays on) preselects the browser's zone and says so; saved, the page's
time moves from the operator's zone (UTC) to the chosen one. axe-core finds nothing serious on
the page."""

from __future__ import annotations

from typing import Any

from tests.portal.browser.conftest import PHONE, Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_journeys import submit
from tests.portal.browser.test_more_journeys import customer, sign_in


async def test_choosing_a_zone_moves_the_time(live: Live, browser: Any) -> None:
    context = await browser.new_context(viewport=PHONE, locale="en-US", timezone_id="Asia/Manila")
    try:
        page = await context.new_page()
        problems = watch(page)
        name, _, _ = await customer(live)
        await sign_in(live, page, name)
        await page.click("a[href='/account/profile']")
        await check(page, "profile", problems)
        before = await page.text_content("[data-testid=now]")
        assert before is not None and "UTC" in before
        # The browser's zone is chosen for the customer to confirm, and the page says so.
        assert await page.input_value("#f-time_zone") == "Asia/Manila"
        assert await page.is_visible("[data-zone-suggested]")
        await submit(page, "form[action='/account/profile']")
        assert page.url.endswith("/account/profile?saved=1")
        after = await page.text_content("[data-testid=now]")
        assert after is not None and after.rstrip().endswith("M UTC+08:00")  # was "… PM UTC"
        assert await page.input_value("#f-time_zone") == "Asia/Manila"
        assert not await page.is_visible("[data-zone-suggested]")  # its own now: no suggestion
        await page.goto(live.base + "/account")
        assert await page.text_content("[data-testid=time-zone]") is not None
        assert "Asia/Manila" in (await page.text_content("[data-testid=time-zone]") or "")
        assert not problems
    finally:
        await context.close()
