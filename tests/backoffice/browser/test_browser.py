"""In Chromium: a ticket round trip (the customer writes, an agent signs in with the
authenticator for the first time, answers and resolves) and a refund by finance."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pyotp

from simcharge.kit.clock import utcnow
from tests.backoffice.browser.conftest import Site
from tests.backoffice.helpers import STAFF_PASSWORD, new_staff
from tests.orders.helpers import new_payer


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


async def test_a_ticket_round_trip(page: Any, site: Site) -> None:
    payer = await new_payer(site.db, site.settings)
    agent = await new_staff(site.db, site.settings, "agent", enrolled=False)
    async with httpx.AsyncClient(base_url=site.base) as api:
        r = await api.post(
            "/api/v1/me/tickets",
            headers=payer.auth,
            json={
                "subject": "My data does not work",
                "body": "Since this morning, no data.",
                "line_id": str(payer.line.id),
            },
        )
        assert r.status_code == 201
        ticket = r.json()
        await _sign_in(page, site, agent.username)
        await page.get_by_role("link", name="Tickets").first.click()
        await page.get_by_role("link", name=ticket["number"]).click()
        await page.get_by_text("Since this morning, no data.").wait_for()
        await page.get_by_label("Reply").fill("Please restart your phone; data is back.")
        await page.get_by_label("Then set status").select_option("resolved")
        await page.get_by_role("button", name="Send").click()
        await page.get_by_text("Done.").wait_for()
        await page.get_by_text("Please restart your phone; data is back.").wait_for()
        mine = (await api.get(f"/api/v1/me/tickets/{ticket['id']}", headers=payer.auth)).json()
    assert mine["status"] == "resolved"
    assert mine["messages"][-1]["body"] == "Please restart your phone; data is back."


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
    await page.get_by_text("Done.").wait_for()
    # the worker asks the sandbox; the page then shows the refund done
    for _ in range(100):
        await page.reload()
        if await page.locator("span.badge.succeeded").count():
            break
        await page.wait_for_timeout(100)
    assert await page.locator("span.badge.succeeded").count() == 1
    assert "partially_refunded" in await page.content()
