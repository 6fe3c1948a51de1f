"""Round 17 at a small phone's size (360 × 740) in Chromium, measured. The security page's
sessions, in all five languages: each session a row of its own — its device, address and when it
was last used, and its "End" button, all on the screen — where four columns scrolled sideways
(an IPv6 address a column of its own, "End" off the screen); on a desktop a table again. The
portal's pages in Filipino and Chinese (traditional): nothing wider than the screen, and a label
not glued to the text above it (the profile's facts then its form, the top-up's lines then the
number). axe-core finds nothing serious; the CSP stays on."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.client import ClientInfo
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.kit.clock import utcnow
from tests.portal.browser.conftest import DESKTOP, Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_round13_layout import BOXES, a_customer_with_records
from tests.portal.helpers import new_customer

SMALL = {"width": 360, "height": 740}
OTHERS = (
    ("2001:db8:85a3::8a2e:370:7334", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
     "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    ("203.0.113.77", "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, "
     "like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36"),
    (None, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"),
)
"""Sessions on other devices: a long IPv6 address, a phone, an address not known."""

OFF_SCREEN = """() => { const w = document.documentElement.clientWidth;
  return [...document.querySelectorAll('main *, header *, footer *')]
    .filter(e => e.getClientRects().length && !e.closest('.vh, .skip, .top .nav'))
    .map(e => [e, e.getBoundingClientRect()])
    .filter(([e, r]) => r.right > w + 0.5 || r.left < -0.5)
    .map(([e, r]) => `${e.tagName}.${e.className} ${Math.round(r.left)}–${Math.round(r.right)} `
                     + e.textContent.trim().slice(0, 40)); }"""
"""Elements (but the hidden texts, the skip link and the menu, which scrolls sideways on its own)
that reach past the screen's edge."""

SCROLLS = """() => [...document.querySelectorAll('main *')]
  .filter(e => e.scrollWidth > e.clientWidth + 1 && !['visible', 'hidden'].includes(
    getComputedStyle(e).overflowX)).map(e => `${e.tagName}.${e.className}`)"""
"""Boxes in the page that scroll sideways."""


async def _with_other_sessions(live: Live, account_id: uuid.UUID) -> None:
    async def run(s: AsyncSession) -> None:
        for minutes, (ip, agent) in enumerate(OTHERS, start=1):
            await open_session(
                s, live.settings.secret_key, account_id=account_id,
                client=ClientInfo(ip=ip, user_agent=agent), policy=policy(live.settings),
                now=utcnow() - timedelta(minutes=minutes),
            )  # fmt: skip

    await live.db.run(run)


async def _open(browser: Any, live: Live, token: str, language: str) -> tuple[Any, Any]:
    context = await browser.new_context(viewport=SMALL, locale="en-US")
    await context.add_cookies([
        {"name": "sc_session", "value": token, "url": live.base},
        {"name": "sc_lang", "value": language, "url": live.base},
    ])
    return context, await context.new_page()


async def _fits(page: Any, where: str) -> None:
    width = await page.evaluate("() => document.documentElement.clientWidth")
    assert width == SMALL["width"]
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= width, where
    assert not await page.evaluate(OFF_SCREEN), f"{where}: {await page.evaluate(OFF_SCREEN)}"
    assert not await page.evaluate(SCROLLS), f"{where}: {await page.evaluate(SCROLLS)}"


@pytest.mark.parametrize("language", ["en", "es", "fil", "zh-Hans", "zh-Hant"])
async def test_the_sessions_fit_a_small_phone(live: Live, browser: Any, language: str) -> None:
    customer = await new_customer(live.db, live.settings, language=language, with_units=False)
    await _with_other_sessions(live, customer.account_id)
    context, page = await _open(browser, live, customer.token, language)
    try:
        problems = watch(page)
        await page.goto(live.base + "/account/security")
        assert await page.get_attribute("html", "lang") == language
        await _fits(page, f"security {language}")
        rows = page.locator(".sessions tbody tr")
        assert await rows.count() == 1 + len(OTHERS)
        for i in range(await rows.count()):
            row = rows.nth(i)
            cells = await row.evaluate(
                "r => [...r.cells].map(c => { const b = c.getBoundingClientRect();"
                " return {left: b.left, right: b.right, top: b.top, bottom: b.bottom,"
                " text: c.innerText.trim()}; })"
            )
            device, address, seen, end = cells
            for cell in cells:  # each on the screen, with something to read
                assert cell["left"] >= 0 and cell["right"] <= SMALL["width"], cell
                assert cell["text"], cells
            # The device first, then the address, then when, each on its own line; "End"
            # beside them, at the right.
            assert device["bottom"] <= address["top"] + 1 and address["bottom"] <= seen["top"] + 1
            assert end["left"] >= device["right"] - 1, cells
            button = row.locator("button[type=submit]")
            assert await button.is_visible()
            box = await button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= SMALL["width"], box
        # The column's name before the address (shown, not read: the headers name the cells).
        labels = await page.evaluate(
            "() => [...document.querySelectorAll('.sessions td[data-label]')].map("
            "c => getComputedStyle(c, '::before').content)"
        )
        # Every "last used", and every address known ("address unknown" says what it is).
        assert len(labels) == 2 * (1 + len(OTHERS)) - 1 and "none" not in labels
        # The name on one line ("位址" broke a character a line beside a long IPv6 address).
        names = await page.evaluate(
            "() => [...document.querySelectorAll('.sessions td[data-label]')].map("
            "c => getComputedStyle(c, '::before').whiteSpace)"
        )
        assert set(names) == {"nowrap"}
        ipv6 = await page.locator(".sessions td", has_text="2001:db8:85a3").count()
        assert ipv6 == 1
        await check(page, f"security-sessions-{language}", problems, desktop=False)

        # A desktop: a table again, its headers shown, each session on one line.
        await page.set_viewport_size(DESKTOP)
        heads = await page.evaluate(BOXES, "#t-sessions ~ thead th")
        assert len(heads) == 4 and all(h["height"] > 10 for h in heads[:3])
        first = await page.evaluate(BOXES, ".sessions tbody tr:first-child td")
        assert len({round(c["top"]) for c in first}) == 1, first
        assert not problems
    finally:
        await context.close()


@pytest.mark.parametrize("language", ["fil", "zh-Hant"])
async def test_the_portal_fits_a_small_phone(live: Live, browser: Any, language: str) -> None:
    token = await a_customer_with_records(live, language)
    context, page = await _open(browser, live, token, language)
    try:
        problems = watch(page)
        async with httpx.AsyncClient(base_url=live.base) as client:
            client.cookies.set("sc_session", token)
            account = (await client.get("/account")).text
            records = (await client.get("/account/records")).text
        line = re.search(r"/account/lines/([0-9a-f-]+)/transfer", account)
        order = re.search(r"/account/orders/([0-9a-f-]+)", records)
        assert line and order
        pages = [
            "/account", "/account/topup", "/account/records", "/account/security",
            "/account/profile", "/account/help", "/account/lines/add", "/verify",
            f"/account/lines/{line.group(1)}/transfer", f"/account/orders/{order.group(1)}",
        ]
        for path in pages:
            await page.goto(live.base + path)
            await _fits(page, f"{path} {language}")
        assert not problems

        # A label is not glued to the text above it.
        await page.goto(live.base + "/account/profile")
        facts = (await page.evaluate(BOXES, "[data-testid=contacts]"))[0]
        label = (await page.evaluate(BOXES, "label[for=f-display_name]"))[0]
        assert label["top"] - (facts["top"] + facts["height"]) >= 12, (facts, label)
        await page.goto(live.base + "/account/topup")
        choices = (await page.evaluate(BOXES, "form .choices"))[0]
        label = (await page.evaluate(BOXES, "label[for=f-msisdn]"))[0]
        assert label["top"] - (choices["top"] + choices["height"]) >= 12, (choices, label)
        await check(page, f"topup-small-{language}", problems, desktop=False)
    finally:
        await context.close()
