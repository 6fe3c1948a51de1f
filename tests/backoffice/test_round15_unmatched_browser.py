"""In Chromium: the "Payments matching no order" tab passes axe-core's WCAG 2.0/2.1/2.2 A and AA
rules (desktop and 390 px, English and Simplified Chinese) listed, with its settle form refused
(the note marked) and once settled (empty); and it is reached from the attention page's tabs.

The notifications are delivered to the served app's real webhook, signed as the sandbox signs
them. Runs on SQLite only, as every back-office browser test (`tests/backoffice/browser`)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from simcharge.kit.clock import utcnow
from tests.backoffice.browser.a11y import axe_source, check, sign_in
from tests.backoffice.browser.conftest import Site, chromium, site  # noqa: F401
from tests.backoffice.helpers import new_staff
from tests.orders.helpers import signed_event

LOCALES = {"en": "en-US", "zh-Hans": "zh-CN"}


async def _unmatched(site: Site) -> str:  # noqa: F811
    reference = f"T{uuid.uuid4().hex[:12].upper()}"
    obj = {"id": f"sbx_{uuid.uuid4().hex[:16]}", "reference": reference, "amount": 2000,
           "currency": "USD", "state": "paid", "refunded": 0, "merchant": "sandbox-merchant",
           "paid_at": utcnow().isoformat()}
    body, headers = signed_event(site.settings, "payment.succeeded", obj)
    async with httpx.AsyncClient(base_url=site.base) as http:
        r = await http.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["simcharge-outcome"] == "unmatched", r.text
    return reference


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
async def test_the_unmatched_tab_passes_axe_listed_refused_and_settled(
    chromium: Any, site: Site, language: str  # noqa: F811
) -> None:
    axe_source()
    reference = await _unmatched(site)
    finance = await new_staff(site.db, site.settings, "finance", enrolled=False,
                              language=language)
    context = await chromium.new_context(
        viewport={"width": 1280, "height": 900}, locale=LOCALES[language]
    )
    page = await context.new_page()
    try:
        await sign_in(page, site, finance)
        await page.goto(f"{site.base}/backoffice/attention")
        async with page.expect_navigation():
            await page.click('nav.tabs a[href="/backoffice/attention/unmatched"]')
        assert reference in await page.content()
        await check(page, "payments matching no order")

        # the note left empty: the page again, the note marked, the summary focused
        async with page.expect_navigation():
            await page.click("table form button[type=submit]")
        assert await page.get_attribute("table input[name=note]", "aria-invalid") == "true"
        await check(page, "settling refused")

        await page.fill("table input[name=note]", "Refunded at the provider")
        async with page.expect_navigation():
            await page.click("table form button[type=submit]")
        assert page.url.endswith("/backoffice/attention/unmatched?done=resolved")
        assert reference not in await page.content()
        await check(page, "payments matching no order, none left")
    finally:
        await context.close()
