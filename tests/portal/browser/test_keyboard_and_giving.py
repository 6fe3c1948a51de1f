"""With the keyboard alone: sign in and reach the top-up review; filters that do not move on
by themselves. And giving credit to another number, from the user center to the receipt of
the transfer."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.lines.service import credit_wallet, line_balances
from tests.portal.browser.conftest import Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_journeys import submit
from tests.portal.browser.test_more_journeys import PASSWORD, customer, sign_in


async def tab_to(page: Any, selector: str, *, limit: int = 60) -> None:
    """Press Tab until `selector` has the focus; it must show that it has it."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("s => document.activeElement.matches(s)", selector):
            outline = await page.evaluate(
                "() => { const s = getComputedStyle(document.activeElement);"
                " return [s.outlineStyle, s.outlineWidth, s.boxShadow]; }")
            assert outline[0] != "none" or outline[2] != "none", (selector, outline)
            return
    raise AssertionError(f"Tab never reached {selector}")


async def test_sign_in_and_reach_the_review_with_the_keyboard_alone(
    live: Live, context: Any
) -> None:
    name, _, line = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await page.goto(live.base + "/")
    await tab_to(page, "a.skip")  # the first stop: skip to the content
    await tab_to(page, "header a[href='/login']")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await tab_to(page, "#f-login")
    await page.keyboard.type(name)
    await tab_to(page, "#f-password", limit=1)
    await page.keyboard.type(PASSWORD)
    await tab_to(page, "form[action='/login'] button[type=submit]", limit=1)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url.endswith("/account")
    await tab_to(page, f"a[href='/account/topup?line={line.id}']")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    # Radio groups take one Tab each; arrow keys change the choice.
    await tab_to(page, "input[name=plan]:checked")
    await page.keyboard.press("ArrowDown")
    chosen = await page.evaluate("() => document.activeElement.value")
    await tab_to(page, "input[name=method]:checked")
    await tab_to(page, "form[action='/account/topup/review'] button[type=submit]")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert "/account/topup/review" in page.url and f"plan={chosen}" in page.url
    assert await page.locator("[data-testid=total]").count() == 1
    await check(page, "keyboard-review", problems)
    await tab_to(page, "form[action='/account/topup'] button[type=submit]")


async def test_choosing_a_filter_does_not_leave_the_page(live: Live, context: Any) -> None:
    name, _, _ = await customer(live)
    page = await context.new_page()
    await sign_in(live, page, name)
    await page.goto(live.base + "/account/records")
    here = page.url
    await tab_to(page, "#f-kind")
    for _ in range(3):
        await page.keyboard.press("ArrowDown")  # in Chromium this changes the value
    await page.wait_for_timeout(300)
    assert page.url == here and await page.evaluate("() => document.activeElement.id") == "f-kind"
    kind = await page.input_value("#f-kind")
    assert kind
    await tab_to(page, "form.filters button[type=submit]")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert f"kind={kind}" in page.url


async def test_giving_credit_to_another_number(live: Live, context: Any) -> None:
    name, _, line = await customer(live)
    _, _, friends = await customer(live)

    async def fund(s: AsyncSession) -> None:
        await credit_wallet(s, line, 1500, source=f"test:{line.id}", code="adjustment")

    await live.db.run(fund)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    async with page.expect_navigation():
        await page.click(f"a[href='/account/lines/{line.id}/transfer']")
    await check(page, "transfer", problems)
    assert "Nothing given yet." in await page.inner_text("main")
    await page.fill("#f-to", friends.msisdn)
    await page.check("input[name=what][value=monetary]")
    await page.fill("#f-amount", "60")
    await submit(page, f"form[action='/account/lines/{line.id}/transfer/review']")
    said = await page.inner_text("#e-amount")
    assert said == "Give between $1.00 and $50.00 of credit at a time."
    await check(page, "transfer-error", problems)
    await page.fill("#f-amount", "2.50")
    await submit(page, f"form[action='/account/lines/{line.id}/transfer/review']")
    assert (await page.inner_text("[data-testid=amount]")).strip() == "$2.50"
    assert (await page.inner_text("[data-testid=fee]")).strip() == "$0.00"
    await check(page, "transfer-review", problems)
    await submit(page, f"form[action='/account/lines/{line.id}/transfer']")
    given = await page.inner_text("[data-testid=given]")
    assert f"$2.50 went to {friends.msisdn}" in given
    await check(page, "transfer-done", problems)
    async with live.db.read() as s:
        theirs, mine = await line_balances(s, friends), await line_balances(s, line)
    assert theirs.wallet.available == 250 and mine.wallet.available == 1500 - 250
