"""Round 13 in Chromium: a customer who registered with an e-mail address only adds a phone
number from "My details" (in the menu): a wrong password is said beside its field and changes
nothing; the right one sends a code to the number, entered on the code's page; the number is
then verified. axe-core finds nothing serious on the pages, in their refused states too; the
CSP stays on."""

from __future__ import annotations

from typing import Any

from simcharge.accounts.models import Account
from tests.conftest import last_sms_code
from tests.portal.browser.conftest import Live
from tests.portal.browser.helpers import check, watch
from tests.portal.browser.test_journeys import submit
from tests.portal.browser.test_more_journeys import customer, sign_in

PHONE_NUMBER = "+14155550143"


async def _account(live: Live, name: str) -> Account:
    from sqlalchemy import select

    async with live.db.read() as s:
        found = await s.scalar(select(Account).where(Account.username == name))
    assert found is not None
    return found


async def test_adding_a_phone_from_my_details(live: Live, context: Any) -> None:
    name, email, _ = await customer(live, with_line=False)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    # No line yet: adding one is the first thing offered.
    assert await page.get_attribute("[data-testid=no-line] a.btn", "href") == "/account/lines/add"
    await page.click("nav a[href='/account/profile']")
    assert page.url.endswith("/account/profile")
    assert await page.text_content("h1") == "My details, time zone and formats"
    phone_state = await page.text_content("[data-testid=contact-sms]")
    assert phone_state is not None and phone_state.strip() == "—"
    await check(page, "profile-details", problems)

    await page.fill("#f-display_name", "Maria Santos")
    await page.fill("#f-phone", PHONE_NUMBER)
    await page.fill("#f-current_password", "not my password")
    await submit(page, "form[action='/account/profile/details']")
    assert await page.text_content("#e-current_password") == "The current password is wrong."
    assert await page.get_attribute("#f-current_password", "aria-invalid") == "true"
    assert await page.input_value("#f-phone") == PHONE_NUMBER  # kept as typed
    focused = await page.evaluate("document.activeElement.getAttribute('role')")
    assert focused == "alert"  # the summary is read first
    await check(page, "profile-details-refused", problems)
    account = await _account(live, name)
    assert account.phone_pending is None and account.display_name is None

    await page.fill("#f-current_password", "correct horse battery")
    await submit(page, "form[action='/account/profile/details']")
    assert "/verify" in page.url
    sent = await page.text_content("[data-testid=sent-sms]")
    assert sent is not None and PHONE_NUMBER in sent
    # The channel the change fixed, not asked (round 17).
    assert await page.locator("input[type=radio][name=channel]").count() == 0
    assert await page.get_attribute("form[action='/verify'] input[name=channel]", "value") == "sms"
    await check(page, "verify-new-contact", problems)

    code = ""
    for _ in range(50):  # the live server's worker sends it
        try:
            code = last_sms_code(PHONE_NUMBER)
            break
        except AssertionError:
            await page.wait_for_timeout(100)
    assert code
    await page.fill("#f-code", code)
    await submit(page, "form[action='/verify']")
    assert page.url.endswith("/account?verified=1")
    phone_row = await page.text_content("section[aria-labelledby=me] dl")
    assert phone_row is not None and PHONE_NUMBER in phone_row
    account = await _account(live, name)
    assert account.phone == PHONE_NUMBER and account.display_name == "Maria Santos"
    assert email == account.email
    assert not problems
