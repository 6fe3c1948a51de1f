"""In Chromium: a ticket round trip (the customer asks in the portal, an agent signs in with the
authenticator for the first time, answers and resolves in the back office, the customer reads
the answer in the portal) and a refund by finance."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pyotp

from simcharge.accounts.models import Account
from simcharge.kit.clock import utcnow
from tests.backoffice.browser.conftest import Site
from tests.backoffice.helpers import STAFF_PASSWORD, new_staff
from tests.orders.helpers import new_payer

CUSTOMER_PASSWORD = "correct horse battery"
"""What `tests.factories.create_account` gives every account."""


async def _sign_in(page: Any, site: Site, username: str) -> None:
    await page.goto(f"{site.base}/backoffice")
    assert page.url.endswith("/backoffice/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(STAFF_PASSWORD)
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url(re.compile(r"/backoffice/login/code"))
    secret = (await page.locator("code.secret").inner_text()).strip()
    assert await page.locator("img.qr").is_visible()
    await page.get_by_label("Code").fill(pyotp.TOTP(secret).at(utcnow()))
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(r"/backoffice$"))


async def _submit(page: Any, form: str) -> None:
    async with page.expect_navigation():
        await page.click(f"{form} button[type=submit]")


async def test_a_ticket_round_trip(page: Any, chromium: Any, site: Site) -> None:
    """The customer asks in the portal; an agent (first sign-in: enrols the authenticator)
    answers and resolves it in the back office; the customer reads the answer in the portal."""
    payer = await new_payer(site.db, site.settings)
    agent = await new_staff(site.db, site.settings, "agent", enrolled=False)
    async with site.db.read() as s:
        account = await s.get(Account, payer.account_id)
        assert account is not None
        username = account.username
    # the customer, in a browser of their own
    customer_context = await chromium.new_context(locale="en-US")
    customer = await customer_context.new_page()
    try:
        await customer.goto(f"{site.base}/login")
        await customer.fill("#f-login", username)
        await customer.fill("#f-password", CUSTOMER_PASSWORD)
        await _submit(customer, "form[action='/login']")
        await customer.click("header a[href='/account/help']")
        await customer.fill("#f-subject", "My data does not work")
        await customer.fill("#f-body", "Since this morning, no data.")
        await customer.select_option("#f-line", str(payer.line.id))
        await _submit(customer, "form[action='/account/help']")
        thread = customer.locator("[data-testid=thread]")
        assert "Since this morning, no data." in await thread.inner_text()
        ticket_url = customer.url
        number = (await customer.locator("p.muted").first.inner_text()).split(" ")[0]
        assert number.startswith("T"), number
        # the agent, in the back office
        await _sign_in(page, site, agent.username)
        await page.get_by_role("link", name="Tickets").first.click()
        await page.get_by_role("link", name=number).click()
        await page.get_by_text("Since this morning, no data.").wait_for()
        await page.get_by_label("Reply").fill("Please restart your phone; data is back.")
        await page.get_by_label("Then set status").select_option("resolved")
        await page.get_by_role("button", name="Send").click()
        await page.get_by_text("Your reply was sent to the customer.").wait_for()
        await page.get_by_text("Please restart your phone; data is back.").wait_for()
        # the customer sees the answer and that it is resolved, in the portal
        await customer.goto(ticket_url)
        messages = await thread.locator("li").all_inner_texts()
        assert len(messages) == 2
        assert messages[0].startswith("You") and "Since this morning" in messages[0]
        assert messages[1].startswith("Customer service")
        assert "Please restart your phone; data is back." in messages[1]
        assert (await customer.locator("span.state").first.inner_text()).strip() == "Resolved"
    finally:
        await customer_context.close()


async def test_finance_refunds_an_order(page: Any, site: Site) -> None:
    payer = await new_payer(site.db, site.settings)
    finance = await new_staff(site.db, site.settings, "finance", enrolled=False)
    async with httpx.AsyncClient(base_url=site.base) as api:
        r = await api.post(
            "/api/v1/orders",
            headers={**payer.auth, "Idempotency-Key": "b1"},
            json={"plan": "starter-10", "method": "sandbox", "line_id": str(payer.line.id)},
        )
        order = r.json()
        from simcharge.payments.sandbox import page_token

        sid = order["next_action"]["url"].rsplit("/", 1)[-1]
        await api.post(
            f"/sandbox/pay/{sid}", data={"action": "pay", "token": page_token(site.settings, sid)}
        )
        r = await api.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
        assert r.json()["state"] == "fulfilled"
    await _sign_in(page, site, finance.username)
    await page.get_by_label("Find a customer").fill(payer.line.msisdn)
    await page.get_by_role("button", name="Search").click()
    await page.locator("table a").first.click()
    await page.get_by_text(order["reference"]).first.wait_for()
    await page.get_by_label(re.compile("Refund amount")).fill("4.00")
    await page.get_by_label("Reason").last.fill("customer asked")
    await page.get_by_role("button", name="Refund").click()
    await page.get_by_text("The refund was asked of the provider").wait_for()
    # the worker asks the sandbox; the page then shows the refund done
    for _ in range(100):
        await page.reload()
        if await page.locator("span.badge.succeeded").count():
            break
        await page.wait_for_timeout(100)
    assert await page.locator("span.badge.succeeded").count() == 1
    assert "partially_refunded" in await page.content()
