"""Round 13's walkthrough at phone width (390 × 844) in Chromium, measured: the records and
orders tables fit the screen (their amounts and receipts were off it, Chinese "Kind" broke one
character a line) and stay a table on a desktop; the header is one row of menu under the name
and "Sign out" (it took two rows, "Sign out" alone on the second); a confirmation checkbox sits on
its label's line (it had a text input's width, alone in the middle). axe-core finds nothing
serious on these pages."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.portal.browser.conftest import DESKTOP, PHONE, Live
from tests.portal.browser.helpers import check, watch
from tests.portal.helpers import new_customer, pay_on_sandbox_page, portal_order, post_form

BOXES = """(selector) => [...document.querySelectorAll(selector)]
  .filter(e => e.getClientRects().length)
  .map(e => { const r = e.getBoundingClientRect();
              return {left: r.left, right: r.right, top: r.top, width: r.width, height: r.height,
                      text: e.textContent.trim()}; })"""


async def a_customer_with_records(live: Live, language: str) -> str:
    """A customer with credit, minutes, data and a credited top-up: its session token."""
    customer = await new_customer(live.db, live.settings, language=language)
    async with httpx.AsyncClient(base_url=live.base) as client:
        client.cookies.set("sc_session", customer.token)
        order_id, pay_url = await portal_order(client, customer.line.id)
        await pay_on_sandbox_page(client, live.settings, pay_url)
        page = f"/account/orders/{order_id}"
        r = await post_form(client, page, page + "/check", {})
        assert r.status_code == 303, r.text
    return customer.token


async def open_as(browser: Any, live: Live, token: str, language: str) -> tuple[Any, Any]:
    context = await browser.new_context(viewport=PHONE, locale="en-US")
    await context.add_cookies([
        {"name": "sc_session", "value": token, "url": live.base},
        {"name": "sc_lang", "value": language, "url": live.base},
    ])
    return context, await context.new_page()


@pytest.mark.parametrize("language", ["es", "zh-Hant"])
async def test_records_and_orders_fit_a_phone(live: Live, browser: Any, language: str) -> None:
    token = await a_customer_with_records(live, language)
    context, page = await open_as(browser, live, token, language)
    try:
        problems = watch(page)
        await page.goto(live.base + "/account/records")
        assert await page.get_attribute("html", "lang") == language
        width = await page.evaluate("() => document.documentElement.clientWidth")
        assert width == PHONE["width"]
        cells = await page.evaluate(BOXES, ".table-scroll td")
        assert len(cells) >= 5 * 4, cells  # credit, minutes, data, the top-up's three; an order
        for cell in cells:
            assert cell["right"] <= width, f"{language}: off the screen {cell}"
        # The kind (and the order's state) as wide as the row's first column: not a column a
        # character wide (Chinese "Kind" was 門/號/間/轉/移, a character a line).
        for cell in await page.evaluate(BOXES, ".table-scroll td:nth-child(3)"):
            assert cell["width"] >= width / 2, f"{language}: too narrow {cell}"
        # Nothing scrolls sideways: the page, or the tables' boxes.
        assert await page.evaluate(
            "() => document.documentElement.scrollWidth") <= width
        assert await page.evaluate(
            "() => [...document.querySelectorAll('.table-scroll')]"
            ".every(e => e.scrollWidth <= e.clientWidth)")
        # The amount is on the row's first line, at the right; the receipt is on screen.
        amounts = await page.evaluate(BOXES, "#t-records ~ tbody td:nth-child(4)")
        whens = await page.evaluate(BOXES, "#t-records ~ tbody td:nth-child(1)")
        assert amounts and all(abs(a["top"] - w["top"]) < 4 for a, w in zip(amounts, whens,
                                                                          strict=True))
        receipts = await page.evaluate(BOXES, "#t-orders ~ tbody td:nth-child(5) a")
        assert receipts and all(r["left"] >= 0 and r["right"] <= width for r in receipts)
        await check(page, f"records-{language}", problems, desktop=False)
        # A desktop: a table again, its headers shown, each row's cells on one line.
        await page.set_viewport_size(DESKTOP)
        heads = await page.evaluate(BOXES, "#t-records ~ thead th")
        assert len(heads) == 5 and all(h["height"] > 10 for h in heads)
        row = await page.evaluate(BOXES, "#t-records ~ tbody tr:first-child td")
        assert len({round(c["top"]) for c in row}) == 1, row
    finally:
        await context.close()


@pytest.mark.parametrize("language", ["es", "fil", "zh-Hant"])
async def test_the_phone_header_is_compact(live: Live, browser: Any, language: str) -> None:
    customer = await new_customer(live.db, live.settings, language=language)
    context, page = await open_as(browser, live, customer.token, language)
    try:
        await page.goto(live.base + "/account")
        header = (await page.evaluate(BOXES, "header.top"))[0]
        assert header["height"] <= 100, header  # was about 135 of 844
        items = await page.evaluate(BOXES, ".top .nav li")
        tops = [i["top"] for i in items]
        assert max(tops) - min(tops) < 4, items  # one row of menu
        brand = (await page.evaluate(BOXES, ".top .brand"))[0]
        out = (await page.evaluate(BOXES, "form[action='/logout'] button"))[0]
        assert abs(out["top"] + out["height"] / 2 - (brand["top"] + brand["height"] / 2)) < 8
        assert out["right"] <= PHONE["width"]
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        # The current page's entry is on screen (the menu scrolls sideways when it must).
        await page.goto(live.base + "/account/help")
        await page.locator(".top .nav a[aria-current=page]").scroll_into_view_if_needed()
        current = (await page.evaluate(BOXES, ".top .nav a[aria-current=page]"))[0]
        assert current["left"] >= 0 and current["right"] <= PHONE["width"]
        # A desktop: the name, the menu and "Sign out" on one row.
        await page.set_viewport_size(DESKTOP)
        header = (await page.evaluate(BOXES, "header.top"))[0]
        assert header["height"] <= 70, header
    finally:
        await context.close()


async def test_a_confirmation_checkbox_sits_on_its_labels_line(live: Live, browser: Any) -> None:
    customer = await new_customer(live.db, live.settings, language="es")
    context, page = await open_as(browser, live, customer.token, "es")
    try:
        problems = watch(page)
        await page.goto(live.base + "/account/security")
        box = (await page.evaluate(BOXES, "form[action='/account/security/lock'] input[type=checkbox]"))[0]
        label = (await page.evaluate(BOXES, "form[action='/account/security/lock'] label"))[0]
        assert box["width"] <= 24 and box["height"] <= 24, box
        assert box["left"] - label["left"] < 2, (box, label)  # first on the line, not centred
        # Its words on the same line, beside it (one line of text at 390 px).
        assert label["height"] < 2 * 24 + 4, label
        assert label["text"]
        await check(page, "security-es", problems, desktop=False)
    finally:
        await context.close()
