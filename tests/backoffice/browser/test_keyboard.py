"""The back office by keyboard alone, in Chromium: a skip link first; every link, button and
field of a page reached by Tab, in order, each with a visible focus ring; a ticket answered and
the ledger's transfers opened without a mouse; after a refused submit the error summary has the
focus, links to the fields in error, and each such field names its error (aria-describedby);
every table has a name and header cells.

The back office runs no script (its Content-Security-Policy allows none), so none of this
depends on one: the summary takes the focus with `autofocus`. It has no dialogs either: a
confirmation is a checkbox in the form (revoking an API key), which keeps the focus where it was."""

from __future__ import annotations

import re
from typing import Any

from tests.backoffice.browser.a11y import sign_in
from tests.backoffice.browser.conftest import Site
from tests.backoffice.browser.seed import Day, a_day
from tests.backoffice.helpers import Staff, new_staff

FOCUSABLE = (
    "a[href], button, input:not([type=hidden]), select, textarea, summary, "
    "[tabindex]:not([tabindex='-1'])"
)

FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const style = getComputedStyle(e);
  return {kb: e.dataset.kb ?? null, tag: e.tagName.toLowerCase(), id: e.id,
          name: e.getAttribute('name'), cls: e.className, text: (e.textContent || '').trim(),
          ring: style.outlineStyle !== 'none' ? parseFloat(style.outlineWidth) : 0,
          ringColor: style.outlineColor};
}"""


async def _staff_with_a_day(site: Site) -> tuple[Staff, Day]:
    admin = await new_staff(site.db, site.settings, "admin", enrolled=False)
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    return admin, await a_day(site, finance, agent)


async def _tab_through(page: Any) -> tuple[list[dict[str, Any]], int]:
    """Tab from the top of the page until the focus comes round again: what took the focus,
    in order, and how many elements on the page can take it."""
    count = await page.evaluate(
        """(sel) => { let n = 0;
             document.querySelectorAll(sel).forEach(e => {
               if (!e.disabled && e.checkVisibility({visibilityProperty: true})
                   && !e.closest('details:not([open]) > :not(summary)')) e.dataset.kb = n++; });
             return n; }""",
        FOCUSABLE,
    )
    await page.evaluate("() => { document.activeElement?.blur(); window.scrollTo(0, 0); }")
    seen: list[dict[str, Any]] = []
    for _ in range(3 * count + 5):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(FOCUSED)
        if focused is None or (seen and focused["kb"] == seen[0]["kb"]):
            break
        if seen and focused["kb"] == seen[-1]["kb"]:
            continue  # a date field's day, month and year: one field
        seen.append(focused)
    return seen, count


async def _tab_to(page: Any, selector: str, limit: int = 200) -> None:
    """Press Tab until the element `selector` finds has the focus."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate(
            "(sel) => document.activeElement === document.querySelector(sel)", selector
        ):
            return
    raise AssertionError(f"{selector} is not reached by Tab")


async def test_a_skip_link_then_every_control_in_order_with_a_visible_ring(
    page: Any, site: Site
) -> None:
    admin, day = await _staff_with_a_day(site)
    await sign_in(page, site, admin)
    # The skip link: the first Tab stop, shown when focused, and it lands in the page's content.
    await page.goto(f"{site.base}/backoffice")
    await page.keyboard.press("Tab")
    first = await page.evaluate(FOCUSED)
    assert first["cls"] == "skip" and first["text"] == "Skip to content", first
    box = await page.locator("a.skip").bounding_box()
    assert box["x"] >= 0 and box["y"] >= 0 and box["width"] > 20, box
    await page.keyboard.press("Enter")
    assert await page.evaluate("() => document.activeElement.id") == "main"
    await page.keyboard.press("Tab")
    after = await page.evaluate(FOCUSED)
    assert after["text"].endswith("open tickets"), after  # the first tile, past the menu
    # Every control of the busiest pages, in order, each with a ring of 2 px or more.
    for path in (
        "/backoffice",
        f"/backoffice/customers/{day.payer.account_id}",
        f"/backoffice/tickets/{day.ticket_id}",
        "/backoffice/attention",
        "/backoffice/adjustments",
        "/backoffice/api-keys",
        "/backoffice/staff",
        "/backoffice/jobs?view=dead",
        "/backoffice/reports",
    ):
        await page.goto(site.base + path)
        seen, count = await _tab_through(page)
        order = [int(f["kb"]) for f in seen if f["kb"] is not None]
        assert order == list(range(count)), (path, count, seen)
        unringed = [f for f in seen if f["ring"] < 2]
        assert not unringed, (path, unringed)


async def test_a_ticket_answered_and_transfers_opened_by_keyboard(page: Any, site: Site) -> None:
    admin, day = await _staff_with_a_day(site)
    await sign_in(page, site, admin)
    await page.goto(f"{site.base}/backoffice/tickets/{day.ticket_id}")
    await _tab_to(page, "textarea[name=body]")
    await page.keyboard.type("Only one charge went through; the other was released.")
    await _tab_to(page, "form[action$='/reply'] select[name=status]")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    chosen = await page.eval_on_selector("form[action$='/reply'] select[name=status]", "e => e.value")
    assert chosen, "the status did not change by keyboard"
    await _tab_to(page, "form[action$='/reply'] button[type=submit]")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await page.get_by_text("Your reply was sent to the customer.").wait_for()
    await page.get_by_text("Only one charge went through; the other was released.").wait_for()
    # The ledger's transfers fold open from the keyboard.
    await page.goto(f"{site.base}/backoffice/customers/{day.payer.account_id}")
    await _tab_to(page, "details > summary")
    assert not await page.eval_on_selector("details", "d => d.open")
    await page.keyboard.press("Enter")
    assert await page.eval_on_selector("details", "d => d.open")


async def _summary_has_focus(page: Any) -> dict[str, Any]:
    # `autofocus` applies at the first rendering after the page loads.
    await page.wait_for_function(
        "() => document.activeElement?.classList.contains('error-summary')", timeout=5000
    )
    focused = await page.evaluate(FOCUSED)
    assert focused is not None and "error-summary" in focused["cls"], focused
    assert focused["ring"] >= 2, focused
    return focused


async def _fields_name_their_errors(page: Any, field: str) -> None:
    """The summary links to each field in error (`field` among them); each is marked invalid
    and described by its error, the very words of its link."""
    targets = await page.eval_on_selector_all(
        ".error-summary a", "links => links.map(a => a.getAttribute('href').slice(1))"
    )
    assert field in targets, (field, targets)
    for target in targets:
        described = await page.evaluate(
            """(id) => { const f = document.getElementById(id);
                 const by = f.getAttribute('aria-describedby');
                 return {invalid: f.getAttribute('aria-invalid'),
                         text: by && document.getElementById(by)?.textContent.trim()}; }""",
            target,
        )
        assert described["invalid"] == "true" and described["text"], (target, described)
        link = page.locator(f".error-summary a[href='#{target}']")
        assert (await link.inner_text()).strip() == described["text"], target


async def test_after_a_refused_submit_the_error_summary_has_the_focus(
    page: Any, site: Site
) -> None:
    admin, day = await _staff_with_a_day(site)
    # Signing in: a wrong password.
    await page.goto(f"{site.base}/backoffice/login")
    await page.keyboard.type(admin.username)  # the username field has the focus
    await page.keyboard.press("Tab")
    await page.keyboard.type("not the password")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    focused = await _summary_has_focus(page)
    assert "not correct" in focused["text"], focused
    await sign_in(page, site, admin)
    # A password change refused: the summary, then each field tied to its error.
    await page.goto(f"{site.base}/backoffice/password")
    await page.fill("#f-current_password", "wrong")
    await page.fill("#f-new_password", "a long enough password 1")
    await page.fill("#f-confirm_password", "another long password 2")
    async with page.expect_navigation():
        await page.press("#f-confirm_password", "Enter")
    await _summary_has_focus(page)
    await _fields_name_their_errors(page, "f-confirm_password")
    # A new API key refused.
    await page.goto(f"{site.base}/backoffice/api-keys")
    await page.fill("#k-expires_in", "forever")
    async with page.expect_navigation():
        await page.press("#k-expires_in", "Enter")
    await _summary_has_focus(page)
    await _fields_name_their_errors(page, "k-expires_in")
    # A catalog entry that does not parse: the editor is described by what was wrong.
    await page.goto(f"{site.base}/backoffice/catalog/plans/starter-10")
    await page.fill("textarea[name=text]", "{not json")
    async with page.expect_navigation():
        await page.click("main form button[type=submit]")
    await _summary_has_focus(page)
    assert await page.get_attribute("textarea[name=text]", "aria-describedby") == "c-text-error"
    # An adjustment and a refund refused: the customer's page again, in place, the summary
    # focused, the amount tied to its error, what was typed kept.
    for form, amount, field in (
        (f"form[action='/backoffice/lines/{day.payer.line.id}/adjust']", "1,2,3",
         f"adjust-{day.payer.line.id}-amount"),
        (f"form[action='/backoffice/orders/{day.order_id}/refund']", "9999",
         f"refund-{day.order_id}-amount"),
    ):
        await page.goto(f"{site.base}/backoffice/customers/{day.payer.account_id}")
        await page.fill(f"{form} input[name=amount]", amount)
        await page.fill(f"{form} input[name=reason]", "by keyboard")
        async with page.expect_navigation():
            await page.press(f"{form} input[name=reason]", "Enter")
        focused = await _summary_has_focus(page)
        assert re.search(r"amount|refund", focused["text"], re.I), focused
        await _fields_name_their_errors(page, field)
        assert await page.input_value(f"{form} input[name=reason]") == "by keyboard"


async def test_every_table_has_a_name_and_header_cells(page: Any, site: Site) -> None:
    admin, day = await _staff_with_a_day(site)
    await sign_in(page, site, admin)
    for path in (
        "/backoffice",
        f"/backoffice/customers/{day.payer.account_id}",
        f"/backoffice/tickets/{day.ticket_id}",
        "/backoffice/tickets",
        "/backoffice/attention",
        "/backoffice/adjustments",
        "/backoffice/api-keys",
        "/backoffice/reports",
        "/backoffice/catalog",
        "/backoffice/jobs?view=dead",
        "/backoffice/audit",
        "/backoffice/staff",
    ):
        await page.goto(site.base + path)
        tables = await page.evaluate(
            """() => [...document.querySelectorAll('table')].map(t => {
                 const by = t.getAttribute('aria-labelledby');
                 const name = (t.caption?.textContent
                               || (by && document.getElementById(by)?.textContent) || '').trim();
                 const heads = [...t.querySelectorAll('th')];
                 return {name, heads: heads.length,
                         blank: heads.filter(h => !h.textContent.trim()).length};
               })"""
        )
        assert tables, path
        for t in tables:
            assert t["name"] and t["heads"] and not t["blank"], (path, t, tables)
