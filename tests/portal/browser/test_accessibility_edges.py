"""The customer portal at 320 px (a small phone, or 1280 px at 400 % zoom) and with the
keyboard, in Chromium (WCAG 2.2 AA): nothing makes the page scroll sideways, tables that
scroll can be reached from the keyboard, a refused form's summary has the focus. Each test's
docstring names the requirement, its success criterion and what was wrong before; what the
HTML says is `tests/portal/test_accessibility_edges.py`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from tests.portal.browser.conftest import Live
from tests.portal.browser.helpers import _axe, operator_line
from tests.portal.helpers import new_customer, pay_on_sandbox_page, portal_order, post_form

NARROW = {"width": 320, "height": 640}

_OVERFLOW = """() => {
  // The page's width, and what sticks out (outside the tables' own scrolling boxes).
  const w = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.table-scroll')) continue;
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    const spills = el.scrollWidth > el.clientWidth + 1 && cs.overflowX === 'visible'
      && cs.display !== 'inline';
    if ((r.width && r.right > w + 0.5) || spills) {
      out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
        + (el.className ? '.' + el.className : '') + ' right=' + Math.round(r.right)
        + ' sw=' + el.scrollWidth + '/' + el.clientWidth
        + ' "' + (el.textContent || '').trim().slice(0, 40) + '"');
    }
  }
  for (const el of document.querySelectorAll('.vh')) {
    const r = el.getBoundingClientRect();
    if (r.right > w) out.push('.vh "' + el.textContent.trim() + '" at x=' + Math.round(r.left));
  }
  return {scroll: document.documentElement.scrollWidth, width: w, out: out.slice(0, 8)};
}"""


async def fits(page: Any, name: str) -> None:
    """The page shown is no wider than the screen (WCAG 1.4.10 Reflow)."""
    found = await page.evaluate(_OVERFLOW)
    assert found["scroll"] <= found["width"], (
        f"{name} at 320 px is {found['scroll']} px wide: {found['out']}")


@asynccontextmanager
async def narrow(live: Live, browser: Any, token: str) -> AsyncIterator[Any]:
    """A page at 320 px signed in with the session `token`."""
    ctx = await browser.new_context(viewport=NARROW, locale="en-US")
    await ctx.add_cookies([{"name": "sc_session", "value": token, "url": live.base}])
    try:
        yield await ctx.new_page()
    finally:
        await ctx.close()


@asynccontextmanager
async def as_customer(live: Live, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The live server over HTTP, signed in (for what the pages need to show first)."""
    async with httpx.AsyncClient(base_url=live.base, cookies={"sc_session": token}) as client:
        yield client


async def credited_order(live: Live, client: httpx.AsyncClient, line_id: uuid.UUID) -> uuid.UUID:
    order_id, pay_url = await portal_order(client, line_id)
    await pay_on_sandbox_page(client, live.settings, pay_url)
    page = f"/account/orders/{order_id}"
    assert (await post_form(client, page, page + "/check", {})).status_code == 303
    assert "Thank you! Your top-up is done." in (await client.get(page)).text
    return order_id


async def customer_named(live: Live, username: str) -> tuple[uuid.UUID, str]:
    """An account with this username, its e-mail verified, and a session's token."""
    from simcharge.auth.client import ClientInfo
    from simcharge.auth.service import policy
    from simcharge.auth.sessions import open_session
    from simcharge.kit.clock import utcnow
    from tests.factories import create_account

    async def run(s: AsyncSession) -> tuple[uuid.UUID, str]:
        account = await create_account(s, username=username, email=f"{username}@example.com",
                                       email_verified_at=utcnow())
        issued = await open_session(
            s, live.settings.secret_key, account_id=account.id,
            client=ClientInfo(ip="198.51.100.9", user_agent="Mozilla/5.0 (Linux; Android 14)"),
            policy=policy(live.settings), now=utcnow())
        return account.id, issued.token

    return await live.db.run(run)


# --- 1.4.10 Reflow --------------------------------------------------------------------------------


async def test_the_greeting_of_a_long_username_fits_a_320px_screen(
    live: Live, browser: Any
) -> None:
    """"Hello, <username>" wraps inside the screen however long the name (headings have
    `overflow-wrap: anywhere`). Before, a 32-character name of '_' and '.' (no place to break)
    ran ~170 px past a 320 px screen and the whole user center scrolled sideways.
    WCAG 1.4.10 Reflow, level AA."""
    name = ("maria_fernanda_dela_cruz_" + uuid.uuid4().hex)[:32]
    account_id, token = await customer_named(live, name)
    await operator_line(live.db, account_id=account_id)
    async with narrow(live, browser, token) as page:
        await page.goto(live.base + "/account")
        assert name in (await page.inner_text("h1")).replace("\n", "")
        await fits(page, "the user center")


async def test_hidden_text_in_tables_does_not_widen_the_page(live: Live, browser: Any) -> None:
    """The visually hidden text of table cells ("End <device> <time>", "Order <reference>",
    "PDF <reference>") stays inside its table's scrolling box: `.table-scroll` is positioned
    and `.vh` is the usual clipped 1 px box. Before, `.vh` was `position: absolute` with no
    positioned ancestor: at 320 px it sat where its column would be, outside the box, and
    made the security page ~75 px and the records with an order ~160 px wider than the
    screen. WCAG 1.4.10 Reflow, level AA."""
    customer = await new_customer(live.db, live.settings)
    async with as_customer(live, customer.token) as client:
        await credited_order(live, client, customer.line.id)
    async with narrow(live, browser, customer.token) as page:
        for path in ("/account/security", "/account/records"):
            await page.goto(live.base + path)
            assert await page.locator(".table-scroll .vh").count() >= 1, path
            await fits(page, path)


async def test_the_two_step_key_fits_a_320px_screen(live: Live, browser: Any) -> None:
    """The key to type into the authenticator app (the way for someone who cannot scan the QR
    code) wraps inside the card (`code` has `overflow-wrap: anywhere`). Before, the
    32-character key ran off a 320 px screen, its end hidden unless one scrolled sideways.
    WCAG 1.4.10 Reflow, level AA."""
    customer = await new_customer(live.db, live.settings)
    async with narrow(live, browser, customer.token) as page:
        await page.goto(live.base + "/account/security")
        await page.fill("#f-password", "correct horse battery")
        async with page.expect_navigation():
            await page.click("form[action='/account/security/totp'] button[type=submit]")
        key = await page.inner_text("[data-testid=totp-key]")
        assert len(key.replace("\n", "").replace(" ", "").strip()) == 32, key
        await fits(page, "/account/security/totp")


async def test_account_facts_keep_their_words_whole_at_320px(live: Live, browser: Any) -> None:
    """Below 40rem the user center's facts stack each label over its value, so a value has the
    card's width: "English" on one line. Before, the labels' column took the width of
    "Language of messages" and left the values ~50 px in which they broke mid-word
    ("Englis/h", "Dec 6,/2026", the "verif/ied" badge). Usability; WCAG 1.4.10 Reflow."""
    customer = await new_customer(live.db, live.settings)
    async with narrow(live, browser, customer.token) as page:
        await page.goto(live.base + "/account")
        lines = await page.evaluate(
            "() => [...document.querySelectorAll('dl.facts dd')].map(d =>"
            " [d.textContent.trim(), Math.round(d.getBoundingClientRect().height"
            " / parseFloat(getComputedStyle(d).lineHeight))])")
        assert ["English", 1] in lines, lines
        # The e-mail address (the badge may go below it, at the space) is on one line.
        address = await page.evaluate(
            "() => { const r = document.createRange();"
            " const dd = [...document.querySelectorAll('dl.facts dd')]"
            ".find(d => d.textContent.includes('@'));"
            " r.selectNodeContents(dd.firstChild);"
            " return [dd.firstChild.textContent, new Set([...r.getClientRects()]"
            ".map(x => Math.round(x.top))).size]; }")
        assert address[0].strip() == customer.email, address
        assert address[1] == 1, address
        await fits(page, "/account")


async def test_a_question_about_an_order_fits_a_320px_screen(live: Live, browser: Any) -> None:
    """A question's page names its order ("Order SC…", 28 characters with no place to break)
    within the screen. Before, the link had no `overflow-wrap` and could run past a narrow
    screen. WCAG 1.4.10 Reflow, level AA."""
    customer = await new_customer(live.db, live.settings)
    async with as_customer(live, customer.token) as client:
        order_id, _ = await portal_order(client, customer.line.id)
        order = f"/account/orders/{order_id}"
        r = await post_form(client, order, order + "/help", {})
        assert r.status_code == 303, r.text
        ticket = r.headers["location"]
    async with narrow(live, browser, customer.token) as page:
        await page.goto(live.base + ticket)
        assert await page.locator(f"a[href='{order}']").count() == 1
        await fits(page, ticket)


# --- 2.1.1 Keyboard -------------------------------------------------------------------------------


async def test_a_table_box_is_a_named_region_the_keyboard_reaches(
    live: Live, browser: Any
) -> None:
    """A table's box is a named, focusable region (`tabindex="0" role="region"
    aria-labelledby` its caption): at 320 px Tab reaches the records' box even when nothing
    in it can take the focus. axe-core finds nothing serious there. Before the eleventh round
    the box had no tabindex, role or name: in a browser that does not make scrollers
    focusable by itself (Safari, older Chromium) the Amount and Order columns, off to the
    right, were out of a keyboard user's reach (axe `scrollable-region-focusable`). Since the
    thirteenth round the records and orders are stacked rows on a phone: nothing is off to
    the side any more, so there is nothing to scroll. WCAG 2.1.1 Keyboard, level A; 1.4.10
    Reflow."""
    customer = await new_customer(live.db, live.settings)  # movements, no order: no link
    async with narrow(live, browser, customer.token) as page:
        await page.goto(live.base + "/account/records")
        regions = await page.evaluate(
            "() => [...document.querySelectorAll('.table-scroll')].map(e => [e.tabIndex,"
            " e.getAttribute('role'), document.getElementById(e.getAttribute('aria-labelledby'))"
            "?.textContent, e.scrollWidth > e.clientWidth, e.querySelectorAll('a,button').length])")
        assert [r[:3] for r in regions] == [[0, "region", "Records"], [0, "region", "My orders"]]
        assert not regions[0][3] and not regions[0][4], regions  # fits the screen, no link
        await _axe(page, "records at 320 px")
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await page.evaluate("() => document.activeElement.matches("
                                   "'.table-scroll[aria-labelledby=t-records]')"):
                break
        else:
            raise AssertionError("Tab never reached the records' table")


# --- 3.3.1 Error Identification / 4.1.3 Status Messages -----------------------------------------


async def test_a_refused_form_puts_the_focus_on_what_went_wrong(live: Live, browser: Any) -> None:
    """Sent empty, the forgotten-password form comes back with "Error:" in its title and its
    summary focused, so a screen reader reads it first; the page still passes axe-core.
    Before, the page came back with the same title, the focus at the top and no summary at
    all, only the field's message further down. WCAG 3.3.1 Error Identification and 4.1.3
    Status Messages."""
    ctx = await browser.new_context(viewport=NARROW, locale="en-US")
    try:
        page = await ctx.new_page()
        await page.goto(live.base + "/forgot")
        async with page.expect_navigation():
            await page.click("form[action='/forgot'] button[type=submit]")
        assert (await page.title()).startswith("Error: ")
        focused = await page.evaluate(
            "() => [document.activeElement.getAttribute('role'), document.activeElement.textContent]")
        assert focused == ["alert", "Some input is not valid."], focused
        assert await page.get_attribute("#f-login", "aria-invalid") == "true"
        await _axe(page, "forgot, refused, at 320 px")
    finally:
        await ctx.close()
