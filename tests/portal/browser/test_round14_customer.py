"""The customer side's fourteenth round in a real browser: a transfer's GB/MB choice shows only
while data is chosen (portal.js), and an answer on a ticket is confirmed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.lines.service import UnitGrant, credit_wallet, grant_units, line_balances
from tests.portal.browser.conftest import Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_journeys import submit
from tests.portal.browser.test_more_journeys import customer, sign_in


async def test_the_data_unit_shows_only_while_data_is_chosen(live: Live, context: Any) -> None:
    name, _, line = await customer(live)
    _, _, friends = await customer(live)

    async def fund(s: AsyncSession) -> None:
        await credit_wallet(s, line, 1500, source=f"test:{line.id}", code="adjustment")
        await grant_units(s, line, [UnitGrant("DATA_B", 2 * 1024**3, 30, ())],
                          source=f"test:{line.id}")

    await live.db.run(fund)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + f"/account/lines/{line.id}/transfer")
    unit = page.locator("#field-data_unit")
    assert await page.is_checked("input[name=what][value=monetary]")
    assert not await unit.is_visible()
    await page.check("input[name=what][value=data]")
    assert await unit.is_visible() and await page.is_enabled("#f-data_unit")
    await check(page, "transfer-data-unit", problems)
    await page.check("input[name=what][value=monetary]")
    assert not await unit.is_visible()
    # Credit: the unit is not sent at all.
    await page.fill("#f-to", friends.msisdn)
    await page.fill("#f-amount", "2")
    await submit(page, f"form[action='/account/lines/{line.id}/transfer/review']")
    assert "data_unit" not in page.url and "what=monetary" in page.url
    # Back to the form for data: the choice is there again, in GB as chosen.
    await page.goto(live.base + f"/account/lines/{line.id}/transfer")
    await page.check("input[name=what][value=data]")
    await page.fill("#f-to", friends.msisdn)
    await page.fill("#f-amount", "1.5")
    await page.select_option("#f-data_unit", "GB")
    await submit(page, f"form[action='/account/lines/{line.id}/transfer/review']")
    assert "data_unit=GB" in page.url
    assert (await page.inner_text("[data-testid=amount]")).strip() == "1.5 GB"
    await submit(page, f"form[action='/account/lines/{line.id}/transfer']")
    async with live.db.read() as s:
        theirs = await line_balances(s, friends)
    assert [(u.unit, u.remaining) for u in theirs.units] == [("DATA_B", 1536 * 1024**2)]
    assert not problems


async def test_an_answer_on_a_ticket_is_confirmed(live: Live, context: Any) -> None:
    name, _, _ = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + "/account/help")
    await page.fill("#f-subject", "Roaming")
    await page.fill("#f-body", "Does my data work abroad?")
    await submit(page, "form[action='/account/help']")
    assert page.url.endswith("?sent=1")
    ticket = page.url.removesuffix("?sent=1").removeprefix(live.base)
    await page.fill("#f-body", "And in Japan?")
    await submit(page, f"form[action='{ticket}/reply']")
    assert page.url.endswith(f"{ticket}?replied=1")
    said = await page.inner_text(".alert.good[role=status]")
    assert said.startswith("We received your answer.")
    assert "And in Japan?" in await page.inner_text("[data-testid=thread]")
    await check(page, "ticket-replied", problems)
