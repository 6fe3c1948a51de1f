"""Round 16's phone and languages review in Chromium (at phone width): a mistyped code while
setting up two-step verification keeps the set-up on screen — the same QR code and key, the
error beside the code field, the summary focused as on every refused form — and the next code
turns it on. The security page's landmarks each have their own name (axe's
`landmark-unique`, a moderate rule the shared check does not fail on), in English and in
Traditional Chinese."""

from __future__ import annotations

from typing import Any

import pyotp

from simcharge.kit.translations import translate
from tests.portal.browser.conftest import AXE, Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_journeys import submit
from tests.portal.browser.test_more_journeys import PASSWORD, customer, sign_in

NOT_RIGHT = "That code is not right. Enter the code your app shows now."


async def _landmarks_named_once(page: Any) -> None:
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(AXE.read_text(encoding="utf-8"))
    found = await page.evaluate(
        "async () => (await axe.run(document, {runOnly: ['landmark-unique', 'region',"
        " 'scrollable-region-focusable'], resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, nodes: v.nodes.map(n => n.target.join(' '))}))"
    )
    assert not found, found


async def test_a_wrong_code_keeps_the_set_up(live: Live, context: Any) -> None:
    name, _, _ = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + "/account/security")
    await _landmarks_named_once(page)
    await page.fill("form[action='/account/security/totp'] #f-password", PASSWORD)
    await submit(page, "form[action='/account/security/totp']")
    key = await page.inner_text("[data-testid=totp-key]")
    qr = await page.get_attribute("img.qr", "src")

    await page.fill("#f-code", "000000")
    await submit(page, "form[action='/account/security/totp/confirm']")
    assert page.url.endswith("/account/security/totp/confirm")
    assert await page.inner_text("h1") == "Set up two-step verification"
    assert await page.inner_text("[data-testid=totp-key]") == key
    assert await page.get_attribute("img.qr", "src") == qr
    assert await page.locator("img.qr").is_visible()
    assert await page.text_content("#e-code") == NOT_RIGHT
    assert await page.get_attribute("#f-code", "aria-invalid") == "true"
    assert "e-code" in (await page.get_attribute("#f-code", "aria-describedby") or "")
    focused = await page.evaluate("document.activeElement.getAttribute('role')")
    assert focused == "alert"  # the summary is read first
    assert await page.inner_text("[role=alert]") == NOT_RIGHT
    assert (await page.title()).startswith("Error")
    await check(page, "totp-wrong-code", problems)

    # The code the app shows now, from the same key: on.
    await page.fill("#f-code", pyotp.TOTP(key.replace(" ", "").strip()).now())
    await submit(page, "form[action='/account/security/totp/confirm']")
    assert await page.locator("[data-testid=recovery-codes]").count() == 1
    await page.goto(live.base + "/account/security")
    await _landmarks_named_once(page)
    # In Traditional Chinese too; the refused attempt reads as one.
    async with page.expect_navigation():
        await page.click("footer button[lang='zh-Hant']")
    await page.goto(live.base + "/account/security")
    assert await page.get_attribute("html", "lang") == "zh-Hant"
    await _landmarks_named_once(page)
    refused = await page.locator("#s-history + ul li strong").all_inner_texts()
    assert refused == [translate("zh-Hant", "Turning on two-step verification refused")]
    done = translate("zh-Hant", "Two-step verification turned on")
    assert f"{done} — " not in await page.inner_text("#s-history + ul")
    await check(page, "zh-security-two-step", problems)
