"""In Chromium: after "Check with provider" on a long customer page, the browser opens at the
order's panel, not at the top; the screens round 13 added (a ticket about a line, a refused
queue filter, a search listing what matched) pass axe."""

from __future__ import annotations

from typing import Any

import httpx

from simcharge.accounts.models import Account
from tests.backoffice.browser.a11y import axe_source, check, sign_in
from tests.backoffice.browser.conftest import Site
from tests.backoffice.browser.seed import a_day
from tests.backoffice.helpers import new_staff
from tests.orders.helpers import idem

IN_VIEW = """el => { const r = el.getBoundingClientRect();
  return r.top >= -2 && r.top < window.innerHeight && window.scrollY > 0; }"""


async def test_an_action_lands_on_what_it_acted_on(page: Any, site: Site) -> None:
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    day = await a_day(site, finance, agent)
    await sign_in(page, site, agent)
    await page.set_viewport_size({"width": 1280, "height": 700})
    await page.goto(f"{site.base}/backoffice/customers/{day.payer.account_id}")
    check_form = page.locator(f"form[action='/backoffice/orders/{day.order_id}/check']")
    async with page.expect_navigation():
        await check_form.locator("button[type=submit]").click()
    assert page.url.endswith(f"#order-{day.order_id}")
    panel = page.locator(f"#order-{day.order_id}")
    assert await panel.evaluate(IN_VIEW), "the page did not open at the order's panel"


async def test_the_new_screens_pass_axe(page: Any, site: Site) -> None:
    axe_source()
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    day = await a_day(site, finance, agent)
    async with httpx.AsyncClient(base_url=site.base) as api:
        r = await api.post(
            "/api/v1/me/tickets",
            headers={**day.payer.auth, **idem()},
            json={"subject": "No data", "body": "Since noon.", "line_id": str(day.payer.line.id)},
        )
        assert r.status_code == 201, r.text
        ticket = r.json()
    async with site.db.read() as s:
        account = await s.get(Account, day.payer.account_id)
        assert account is not None
    await sign_in(page, site, agent)
    for path, name in {
        f"/backoffice/tickets/{ticket['id']}": "ticket about a line",
        "/backoffice/tickets?status=any": "tickets, refused filter",
        f"/backoffice/customers?q={ticket['number']}": "search by ticket number",
        f"/backoffice/customers?q={day.payer.line.msisdn}": "search by number",
    }.items():
        await page.goto(site.base + path)
        await check(page, name)
    assert await page.locator("[data-testid=matches] a").count() >= 1
