"""The back office on a phone (390×844), in Chromium: the page fits the screen, and a wide table
scrolls sideways inside its own region instead of the whole page.

What was missing: a wide table (a customer's transfers, the API keys, the staff list) made the
whole page scroll sideways at 390 px, the menu and the forms with it.

Now every data table is inside a region (`role="region"`, `tabindex="0"`, named by the table's
heading or caption through `aria-labelledby`, with the focus ring) that scrolls by itself: the
document is never wider than the viewport, the region is reached by Tab (so the keyboard scrolls
it too), and a refused form's screen fits and passes axe as well."""

from __future__ import annotations

from typing import Any

from tests.backoffice.browser.a11y import PHONE, check, sign_in
from tests.backoffice.browser.conftest import Site
from tests.backoffice.browser.seed import a_day
from tests.backoffice.browser.test_keyboard import FOCUSED, _tab_to
from tests.backoffice.helpers import new_staff

WIDTHS = """() => ({doc: document.documentElement.scrollWidth, view: window.innerWidth,
  wider: [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5
                 && !e.parentElement.closest('.table-scroll') && !e.closest('.sr-only, .skip'))
    .slice(-5).map(e => e.tagName + '.' + e.className + '#' + e.id + ' '
                        + Math.round(e.getBoundingClientRect().right))})"""
REGIONS = """() => [...document.querySelectorAll('table')].map(t => {
  const r = t.parentElement.closest('.table-scroll');
  if (!r) return {wrapped: false, table: t.outerHTML.slice(0, 80)};
  const by = r.getAttribute('aria-labelledby');
  return {wrapped: true, role: r.getAttribute('role'), tabindex: r.getAttribute('tabindex'),
          name: ((by && document.getElementById(by)?.textContent) || '').trim(),
          scrolls: r.scrollWidth > r.clientWidth};
})"""


async def _fits(page: Any, path: str) -> list[dict[str, Any]]:
    widths = await page.evaluate(WIDTHS)
    assert widths["doc"] <= widths["view"], (path, widths)
    regions: list[dict[str, Any]] = await page.evaluate(REGIONS)
    for r in regions:
        assert r["wrapped"] and r["role"] == "region" and r["tabindex"] == "0", (path, r)
        assert r["name"], (path, r)
    return regions


async def test_the_main_screens_fit_a_phone_and_tables_scroll_in_their_region(
    page: Any, site: Site
) -> None:
    admin = await new_staff(site.db, site.settings, "admin", enrolled=False)
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    day = await a_day(site, finance, agent)
    await page.set_viewport_size(PHONE)
    await sign_in(page, site, admin)
    scrolling = 0
    for path in (
        "/backoffice",
        "/backoffice/tickets",
        f"/backoffice/tickets/{day.ticket_id}",
        f"/backoffice/customers/{day.payer.account_id}",
        f"/backoffice/customers/{day.locked.account_id}",
        f"/backoffice/lines/{day.payer.line.id}/usage",
        "/backoffice/attention",
        "/backoffice/adjustments",
        "/backoffice/jobs?view=dead",
        "/backoffice/api-keys",
        "/backoffice/staff",
        "/backoffice/audit",
        "/backoffice/reports",
        "/backoffice/catalog",
        "/backoffice/catalog/plans/starter-10",
    ):
        await page.goto(site.base + path)
        regions = await _fits(page, path)
        scrolling += sum(r["scrolls"] for r in regions)
    # Not blind: at 390 px some tables are wider than the screen, and scroll in their region.
    assert scrolling >= 3, scrolling

    # The region is a Tab stop with a visible ring, and the keyboard scrolls it.
    await page.goto(f"{site.base}/backoffice/staff")
    await _tab_to(page, ".table-scroll")
    focused = await page.evaluate(FOCUSED)
    assert focused["ring"] >= 2, focused
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("ArrowRight")
    moved = await page.eval_on_selector(".table-scroll", "r => r.scrollLeft")
    assert moved > 0, moved
    await check(page, "staff at 390 px")


async def test_a_refused_form_on_a_phone_fits_and_passes_axe(page: Any, site: Site) -> None:
    admin = await new_staff(site.db, site.settings, "admin", enrolled=False)
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    day = await a_day(site, finance, agent)
    await page.set_viewport_size(PHONE)
    await sign_in(page, site, admin)
    await page.goto(f"{site.base}/backoffice/customers/{day.payer.account_id}")
    adjust = page.locator(f"form[action='/backoffice/lines/{day.payer.line.id}/adjust']")
    await adjust.locator("input[name=amount]").fill("1,2,3")
    await adjust.locator("input[name=reason]").fill("typed on a phone")
    async with page.expect_navigation():
        await adjust.locator("button[type=submit]").click()
    # the same page, the summary focused, what was typed kept
    await page.wait_for_function(
        "() => document.activeElement?.classList.contains('error-summary')", timeout=5000
    )
    assert await adjust.locator("input[name=reason]").input_value() == "typed on a phone"
    assert await adjust.locator("input[name=amount]").get_attribute("aria-invalid") == "true"
    await _fits(page, "adjustment refused")
    await check(page, "adjustment refused, in place")
    # a ticket reply refused (empty)
    await page.goto(f"{site.base}/backoffice/tickets/{day.ticket_id}")
    async with page.expect_navigation():
        await page.locator("form[action$='/reply'] button[type=submit]").click()
    await page.wait_for_function(
        "() => document.activeElement?.classList.contains('error-summary')", timeout=5000
    )
    assert await page.get_attribute("#reply-body", "aria-invalid") == "true"
    await page.set_viewport_size(PHONE)
    await _fits(page, "reply refused")
    await check(page, "reply refused, in place")
