"""In Chromium: a checkbox sits on one line with its label's words (a full-width field's rule
once put the ticket's "Internal note" box centred on a line of its own above its text, so an
agent could not tell which box it was) — the ticket's internal note, an API key's scopes, the
tickets list's filters."""

from __future__ import annotations

from typing import Any

from tests.backoffice.browser.a11y import sign_in
from tests.backoffice.browser.conftest import Site
from tests.backoffice.browser.seed import a_day
from tests.backoffice.helpers import new_staff

BOX_AND_TEXT = """label => {
  const box = label.querySelector('input').getBoundingClientRect();
  const range = document.createRange();
  range.setStartAfter(label.querySelector('input'));
  range.setEndAfter(label.lastChild);
  const words = [...range.getClientRects()].find(r => r.width > 4);
  return {box: [box.left, box.top, box.width, box.height],
          words: [words.left, words.top, words.width, words.height]};
}"""


def _on_one_line(found: dict[str, Any]) -> None:
    bl, bt, bw, bh = found["box"]
    wl, wt, _ww, wh = found["words"]
    assert bw < 40, found  # the box keeps its own size, never the row's width
    assert wl >= bl + bw and wl - (bl + bw) < 24, found  # the words just right of the box
    # the box's middle within the first line of the words
    assert wt - 2 <= bt + bh / 2 <= wt + wh + 2, found


async def test_checkboxes_sit_beside_their_words(page: Any, site: Site) -> None:
    admin = await new_staff(site.db, site.settings, "admin", enrolled=False)
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    day = await a_day(site, finance, agent)
    await sign_in(page, site, admin)
    for width in (1280, 390):
        await page.set_viewport_size({"width": width, "height": 900})
        await page.goto(f"{site.base}/backoffice/tickets/{day.ticket_id}")
        label = page.locator("label", has=page.locator("#reply-internal"))
        assert "Internal note" in await label.inner_text()
        _on_one_line(await label.evaluate(BOX_AND_TEXT))
        await page.goto(f"{site.base}/backoffice/api-keys")
        scopes = page.locator("label", has=page.locator("input[name=scopes]"))
        assert await scopes.count() > 1
        for i in range(await scopes.count()):
            _on_one_line(await scopes.nth(i).evaluate(BOX_AND_TEXT))
        await page.goto(f"{site.base}/backoffice/tickets")
        mine = page.locator("label", has=page.locator("input[name=mine]"))
        _on_one_line(await mine.evaluate(BOX_AND_TEXT))


async def test_a_decision_is_a_press_of_approve_or_reject_never_enter_in_the_note(
    page: Any, site: Site
) -> None:
    """The adjustments page's note serves both buttons: Enter in it decides nothing; Reject
    without a reason is refused beside the note; with one, the row is rejected."""
    finance = await new_staff(site.db, site.settings, "finance")
    agent = await new_staff(site.db, site.settings, "agent")
    approver = await new_staff(site.db, site.settings, "finance", enrolled=False)
    await a_day(site, finance, agent)
    await sign_in(page, site, approver)
    await page.goto(f"{site.base}/backoffice/adjustments")
    note = page.locator("input[name=note]").first
    await note.fill("looks fine")
    await note.press("Enter")
    await page.wait_for_timeout(300)
    assert page.url.endswith("/backoffice/adjustments")  # nothing sent
    assert await page.locator("input[name=note]").count() >= 1
    form = page.locator("form[action$='/approve']").first
    action = await form.get_attribute("action")
    await note.fill("")
    async with page.expect_navigation():
        await form.get_by_role("button", name="Reject").click()
    assert await page.locator("[id$='-note-error']").count() == 1
    assert "Say why it is rejected." in await page.content()
    await page.locator("input[name=note][aria-invalid=true]").fill("no ticket backs this")
    async with page.expect_navigation():
        await page.locator(f"form[action='{action}']").get_by_role("button", name="Reject").click()
    assert "no ticket backs this" in await page.content()
    assert await page.locator(f"form[action='{action}']").count() == 0
