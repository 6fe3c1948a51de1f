"""The customer's journey in a real browser: register, verify by the code that arrived over
SMTP, sign in, add a line, top up with the sandbox, come back, see the credit and the receipt."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from simcharge.notifications.transports import dev_mailbox
from tests.portal.browser.conftest import Live
from tests.portal.browser.helpers import check, email_code, operator_line, sms_code, watch

PASSWORD = "a quiet river at dawn"


async def submit(page: Any, form: str) -> None:
    async with page.expect_navigation():
        await page.click(f"{form} button[type=submit]")


async def register_and_sign_in(live: Live, page: Any, problems: list[str], *, shots: str) -> str:
    name = "u" + uuid.uuid4().hex[:8]
    email = f"{name}@example.com"
    await page.goto(live.base + "/")
    await check(page, f"{shots}home", problems)
    await page.click("main a[href='/register']")
    await check(page, f"{shots}register", problems)
    await page.fill("#f-username", name)
    await page.fill("#f-password", PASSWORD)
    await page.fill("#f-email", email)
    await submit(page, "form[action='/register']")
    assert "/verify" in page.url
    await check(page, f"{shots}verify", problems)
    await page.fill("#f-code", await email_code(live.inbox, email))
    await page.fill("#f-password", PASSWORD)
    await submit(page, "form[action='/verify']")
    assert "/login?verified=1" in page.url, page.url
    await page.fill("#f-login", name)
    await page.fill("#f-password", PASSWORD)
    await check(page, f"{shots}login", problems)
    await submit(page, "form[action='/login']")
    assert page.url.endswith("/account"), page.url
    return name


async def add_line_and_top_up(live: Live, page: Any, problems: list[str], *, shots: str) -> str:
    """Returns what the order's page said once the line was credited."""
    line = await operator_line(live.db)
    await page.click("a[href='/account/lines/add']")
    await page.fill("#f-msisdn", line.msisdn)
    await submit(page, "form[action='/account/lines/add']")
    await page.fill("#f-code", await sms_code(line.msisdn))
    await check(page, f"{shots}add-line", problems)
    await submit(page, "form[action='/account/lines/add']")
    assert page.url.endswith("/account")
    await page.click(f"a[href='/account/topup?line={line.id}']")
    await page.check("input[name=plan][value='traveller-20']")
    await page.check("input[name=method][value='sandbox']")
    await check(page, f"{shots}topup", problems)
    await submit(page, "form[action='/account/topup/review']")
    await check(page, f"{shots}review", problems)
    await submit(page, "form[action='/account/topup']")
    assert "/sandbox/pay/" in page.url
    async with page.expect_navigation():
        await page.click("button.pay")
    assert "/account/orders/" in page.url
    # The page polls by itself until the webhook has credited the line.
    outcome = page.locator("[data-testid=outcome].good")
    await outcome.wait_for(timeout=20000)
    text = await outcome.inner_text()
    assert line.msisdn in text
    await check(page, f"{shots}order", problems)
    receipt = await page.get_attribute("a[href*='/receipt']", "href")
    pdf = await page.request.get(live.base + receipt)
    assert pdf.status == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert (await pdf.body()).startswith(b"%PDF")
    await page.goto(live.base + "/account")
    wallet = await page.inner_text("[data-testid=wallet]")
    assert wallet.strip() and wallet.strip()[-1].isdigit()
    await check(page, f"{shots}account", problems)
    await page.goto(live.base + "/account/records")
    assert await page.locator("a[href*='/receipt']").count() == 1
    await check(page, f"{shots}records", problems)
    await page.goto(live.base + "/account/security")
    await check(page, f"{shots}security", problems)
    return str(text)


async def test_a_new_customer_registers_tops_up_and_keeps_the_receipt(live: Live, context: Any) -> None:
    page = await context.new_page()
    problems = watch(page)
    await register_and_sign_in(live, page, problems, shots="")
    said = await add_line_and_top_up(live, page, problems, shots="")
    assert "Thank you! Your top-up is done." in said


async def test_the_same_journey_in_chinese(live: Live, context: Any) -> None:
    page = await context.new_page()
    problems = watch(page)
    await page.goto(live.base + "/")
    async with page.expect_navigation():
        await page.click("a[hreflang='zh-Hans']")
    assert await page.get_attribute("html", "lang") == "zh-Hans"
    await register_and_sign_in(live, page, problems, shots="zh-")
    said = await add_line_and_top_up(live, page, problems, shots="zh-")
    assert "谢谢！充值已完成。" in said
    assert "充值" in await page.inner_text("header nav")


@pytest.fixture(autouse=True)
def _clear_outbox() -> None:
    dev_mailbox.clear()
