"""Every back-office screen passes axe-core's WCAG 2.0/2.1/2.2 A and AA rules, in Chromium, at
desktop width and at 390 px, in English and in Simplified Chinese (the back office speaks five
languages; Chinese is the one whose text and line breaking differ most).

The screens are visited in the states staff meet them in a day: signing in (a wrong password,
the authenticator's enrolment, a wrong code); every list empty, then full (tickets, customers,
payments needing attention, adjustments awaiting approval, dead jobs, API keys, staff, audit,
reports, catalog); a customer with a locked account, a frozen line, a refunded order with its
credit note; a ticket about an order; a new API key's one-time page; and the refusals of forms
(an adjustment and a refund refused, a password and a new key refused, a catalog entry that
does not parse, a page that does not exist)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from simcharge.accounts.models import Account
from tests.backoffice.browser.a11y import axe_source, check, sign_in
from tests.backoffice.browser.conftest import Site
from tests.backoffice.browser.seed import a_day
from tests.backoffice.helpers import STAFF_PASSWORD, new_staff

LOCALES = {"en": "en-US", "zh-Hans": "zh-CN"}


async def _submit(page: Any, button: Any) -> None:
    async with page.expect_navigation():
        await button.click()


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
async def test_every_screen_in_every_state_passes_axe(
    chromium: Any, site: Site, language: str
) -> None:
    axe_source()
    base = site.base
    admin = await new_staff(site.db, site.settings, "admin", enrolled=False, language=language)
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    context = await chromium.new_context(
        viewport={"width": 1280, "height": 900}, locale=LOCALES[language]
    )
    page = await context.new_page()
    try:
        # Signing in: the form, a refused password, the enrolment, a refused code.
        await page.goto(f"{base}/backoffice/login")
        assert await page.get_attribute("html", "lang") == language
        await check(page, "sign-in")
        await page.fill("input[name=username]", admin.username)
        await page.fill("input[name=password]", "not the password")
        await _submit(page, page.locator("form button[type=submit]"))
        await check(page, "sign-in refused")
        await page.fill("input[name=username]", admin.username)
        await page.fill("input[name=password]", STAFF_PASSWORD)
        await _submit(page, page.locator("form button[type=submit]"))
        await check(page, "authenticator enrolment")
        await page.fill("input[name=code]", "000000")
        await _submit(page, page.locator("main form button[type=submit]"))
        assert "error=code" in page.url
        await check(page, "authenticator code refused")
        await sign_in(page, site, admin)

        async def visit(path: str, name: str) -> None:
            await page.goto(base + path)
            await check(page, name)

        # Every list empty.
        empty = {
            "/backoffice": "home",
            "/backoffice/tickets": "tickets (none)",
            "/backoffice/customers": "customer search",
            "/backoffice/customers?q=nobody-at-all": "customer search (no match)",
            "/backoffice/attention": "attention (none)",
            "/backoffice/adjustments": "adjustments (none)",
            "/backoffice/jobs": "jobs (none)",
            "/backoffice/api-keys": "API keys (none)",
            "/backoffice/reports": "reports (nothing yet)",
            "/backoffice/password": "change password",
        }
        for path, name in empty.items():
            await visit(path, name)

        day = await a_day(site, finance, agent)
        payer, locked, ticket_id, order_id = day.payer, day.locked, day.ticket_id, day.order_id
        async with site.db.read() as s:
            account = await s.get(Account, payer.account_id)
            assert account is not None
        full = {
            "/backoffice": "home (counts)",
            "/backoffice/tickets": "tickets",
            f"/backoffice/tickets/{ticket_id}": "ticket about an order",
            f"/backoffice/customers?q={account.username}": "customer search (found)",
            f"/backoffice/customers/{payer.account_id}": "customer with a refunded order",
            f"/backoffice/customers/{locked.account_id}": "locked customer, frozen line",
            f"/backoffice/lines/{payer.line.id}/usage": "usage of a line",
            "/backoffice/attention": "attention",
            "/backoffice/attention?flag=chargeback": "attention (one flag)",
            "/backoffice/adjustments": "adjustments",
            "/backoffice/jobs?view=dead": "dead jobs",
            "/backoffice/api-keys": "API keys",
            "/backoffice/staff": "staff",
            "/backoffice/audit": "audit log",
            "/backoffice/reports": "reports",
            "/backoffice/catalog": "catalog",
            "/backoffice/catalog/plans/starter-10": "catalog plan",
            "/backoffice/catalog/new?kind=tariffs&code=voice.europe.EUR": "catalog new tariff",
            f"/backoffice/customers/{uuid.uuid4()}": "not found",
        }
        for path, name in full.items():
            await visit(path, name)

        # Refusals of forms.
        await page.goto(f"{base}/backoffice/customers/{payer.account_id}")
        adjust = page.locator(f"form[action='/backoffice/lines/{payer.line.id}/adjust']")
        await adjust.locator("input[name=amount]").fill("1,2,3")
        await adjust.locator("input[name=reason]").fill("typo")
        await _submit(page, adjust.locator("button[type=submit]"))
        await check(page, "adjustment refused")
        await page.goto(f"{base}/backoffice/customers/{payer.account_id}")
        refund = page.locator(f"form[action='/backoffice/orders/{order_id}/refund']")
        await refund.locator("input[name=amount]").fill("9999")
        await refund.locator("input[name=reason]").fill("too much")
        await _submit(page, refund.locator("button[type=submit]"))
        await check(page, "refund refused")
        await page.goto(f"{base}/backoffice/password")
        await page.fill("#f-current_password", "wrong")
        await page.fill("#f-new_password", "short")
        await page.fill("#f-confirm_password", "other")
        await _submit(page, page.locator("main form button[type=submit]"))
        await check(page, "password refused")
        await page.goto(f"{base}/backoffice/staff")
        other = page.locator(f"form[action='/backoffice/staff/{agent.id}/password']")
        await other.locator("input[name=new_password]").fill("a long enough password 1")
        await other.locator("input[name=confirm_password]").fill("another long password 2")
        await _submit(page, other.locator("button[type=submit]"))
        await check(page, "staff password refused")
        await page.goto(f"{base}/backoffice/api-keys")
        await page.fill("#k-expires_in", "forever")
        await _submit(page, page.locator("form[action='/backoffice/api-keys'] button[type=submit]"))
        await check(page, "API key refused")
        await page.fill("#k-name", "billing export")
        await page.fill("#k-expires_in", "")
        await page.locator("input[name=scopes][value='reports:read']").check()
        await _submit(page, page.locator("form[action='/backoffice/api-keys'] button[type=submit]"))
        assert await page.locator("[data-testid=token]").count() == 1
        await check(page, "new API key")
        await page.goto(f"{base}/backoffice/catalog/plans/starter-10")
        await page.fill("textarea[name=text]", "{not json")
        await _submit(page, page.locator("main form button[type=submit]"))
        await check(page, "catalog entry refused")
    finally:
        await context.close()


async def test_the_check_finds_what_it_should(chromium: Any, site: Site) -> None:
    """The check is not blind: a page with an unlabelled field, an image without text and
    low-contrast text fails it."""
    axe_source()
    context = await chromium.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{site.base}/backoffice/login")
        await page.evaluate(
            """() => { const m = document.querySelector('main');
                m.insertAdjacentHTML('beforeend', '<input name="x"><img src="data:,"><p>faint</p>');
                m.lastElementChild.style.color = '#ddd'; }"""
        )
        with pytest.raises(AssertionError) as failed:
            await check(page, "broken")
        for rule in ("label", "image-alt", "color-contrast"):
            assert re.search(rf"'id': '{rule}'", str(failed.value)), (rule, failed.value)
    finally:
        await context.close()
