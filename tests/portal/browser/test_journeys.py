"""The customer's journey in a real browser: register, verify by the code that arrived over
SMTP, sign in, add a line, top up with the sandbox, come back, see the credit and the receipt."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import pytest
from pypdf import PdfReader

from simcharge.catalog.service import list_plans
from simcharge.kit.money import format_money
from simcharge.kit.translations import translate
from simcharge.kit.units import locale_of, units_text
from simcharge.notifications.transports import dev_mailbox
from simcharge.orders.models import Order
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


async def granted(live: Live, language: str, plan_code: str) -> tuple[str, list[str]]:
    """What `plan_code` puts on a new line in USD, as the pages of `language` write it: the
    balance, and each unit's amount."""
    async with live.db.read() as s:
        plan = next(p for p in await list_plans(s, language) if p.code == plan_code)
    credit = sum(m.minor for m in plan.wallet_credit if m.currency == "USD")
    return (format_money(credit, "USD", locale_of(language)),
            [units_text(language, g.amount, g.unit) for g in plan.grants])


async def add_line_and_top_up(
    live: Live, page: Any, problems: list[str], *, shots: str, language: str = "en"
) -> tuple[str, str]:
    """Returns what the order's page said once the line was credited, and the order's id."""
    line = await operator_line(live.db)
    await page.click("a[href='/account/lines/add']")
    await page.fill("#f-msisdn", line.msisdn)
    await submit(page, "form[action='/account/lines/add']")
    await page.fill("#f-code", await sms_code(line.msisdn))
    await check(page, f"{shots}add-line", problems)
    await submit(page, "form[action='/account/lines/add']")
    assert page.url.endswith("/account?added=1")  # "The line is added to your account."
    await page.click(f"a[href='/account/topup?line={line.id}']")
    await page.check("input[name=plan][value='traveller-20']")
    await page.check("input[name=method][value='sandbox']")
    await check(page, f"{shots}topup", problems)
    await submit(page, "form[action='/account/topup/review']")
    await check(page, f"{shots}review", problems)
    await submit(page, "form[action='/account/topup']")
    assert "/sandbox/pay/" in page.url
    await check(page, f"{shots}sandbox", problems)
    async with page.expect_navigation():
        await page.click("button.pay")
    assert "/account/orders/" in page.url
    order_id = page.url.rsplit("/", 1)[-1]
    # The page polls by itself until the webhook has credited the line.
    outcome = page.locator("[data-testid=outcome].good")
    await outcome.wait_for(timeout=20000)
    text = await outcome.inner_text()
    assert line.msisdn in text
    # Exactly what the package grants, on a line that had nothing.
    balance, units = await granted(live, language, "traveller-20")
    assert balance in text and all(u in text for u in units), (text, balance, units)
    await check(page, f"{shots}order", problems)
    receipt = await page.get_attribute("a[href*='/receipt']", "href")
    pdf = await page.request.get(live.base + receipt)
    assert pdf.status == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert (await pdf.body()).startswith(b"%PDF")
    await page.goto(live.base + "/account")
    card = page.locator("section.card", has=page.locator(f"h2:text-is('{line.msisdn}')"))
    assert (await card.locator("[data-testid=wallet]").inner_text()).strip() == balance
    bars = await card.locator(".bucket").all_inner_texts()
    for amount in units:
        left = translate(language, "%(left)s left of %(total)s") % {"left": amount, "total": amount}
        assert any(left in b for b in bars), (left, bars)
    await check(page, f"{shots}account", problems)
    await page.goto(live.base + "/account/records")
    assert await page.locator("a[href*='/receipt']").count() == 1
    await check(page, f"{shots}records", problems)
    await page.goto(live.base + "/account/security")
    await check(page, f"{shots}security", problems)
    return str(text), order_id


async def receipt_mail(live: Live, address: str, receipt: str) -> Any:
    """The receipt's e-mail (the worker sends it once the number is issued)."""
    for _ in range(400):
        for mail in live.inbox.to(address):
            if receipt in str(mail["Subject"]):
                return mail
        await asyncio.sleep(0.05)
    raise AssertionError(f"no receipt {receipt} e-mailed to {address}")


async def test_a_new_customer_registers_tops_up_and_keeps_the_receipt(live: Live, context: Any) -> None:
    page = await context.new_page()
    problems = watch(page)
    await register_and_sign_in(live, page, problems, shots="")
    said, _ = await add_line_and_top_up(live, page, problems, shots="")
    assert "Thank you! Your top-up is done." in said


async def test_the_same_journey_in_chinese(live: Live, context: Any) -> None:
    page = await context.new_page()
    problems = watch(page)
    await page.goto(live.base + "/")
    async with page.expect_navigation():
        await page.click("a[hreflang='zh-Hans']")
    assert await page.get_attribute("html", "lang") == "zh-Hans"
    name = await register_and_sign_in(live, page, problems, shots="zh-")
    said, order_id = await add_line_and_top_up(live, page, problems, shots="zh-",
                                               language="zh-Hans")
    assert "谢谢！充值已完成。" in said
    assert "充值" in await page.inner_text("header nav")
    # The receipt, by e-mail and as the PDF, is in Chinese too.
    async with live.db.read() as s:
        order = await s.get(Order, uuid.UUID(order_id))
        assert order is not None and order.receipt_number
    mail = await receipt_mail(live, f"{name}@example.com", order.receipt_number)
    assert mail["Subject"] == translate("zh-Hans", "Your receipt %(receipt)s") % {
        "receipt": order.receipt_number}
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None and "感谢" in body.get_content()
    attached = [part for part in mail.iter_attachments()
                if part.get_content_type() == "application/pdf"]
    assert len(attached) == 1
    pdf = PdfReader(io.BytesIO(attached[0].get_content()))
    # The CID font's text comes out as UTF-16 code units: drop the zero bytes.
    text = "".join(p.extract_text() for p in pdf.pages).replace("\x00", "")
    assert "收据" in text and "感谢您的购买" in text and order.receipt_number in text, text


@pytest.fixture(autouse=True)
def _clear_outbox() -> None:
    dev_mailbox.clear()
