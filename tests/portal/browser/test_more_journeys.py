"""Forgotten password by e-mail, a declined payment, a gift to another number, locking."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.kit.clock import utcnow
from simcharge.lines.service import line_balances
from tests.factories import create_account
from tests.portal.browser.conftest import Live
from tests.portal.browser.helpers import check, email_code, operator_line, watch
from tests.portal.browser.test_journeys import submit

PASSWORD = "correct horse battery"


async def customer(live: Live, *, with_line: bool = True) -> tuple[str, str, Any]:
    name = "c" + uuid.uuid4().hex[:8]
    email = f"{name}@example.com"

    async def run(s: AsyncSession) -> uuid.UUID:
        account = await create_account(s, username=name, email=email, email_verified_at=utcnow())
        return account.id

    account_id = await live.db.run(run)
    line = await operator_line(live.db, account_id=account_id) if with_line else None
    return name, email, line


async def sign_in(live: Live, page: Any, name: str, password: str = PASSWORD) -> None:
    await page.goto(live.base + "/login")
    await page.fill("#f-login", name)
    await page.fill("#f-password", password)
    await submit(page, "form[action='/login']")


async def start_top_up(live: Live, page: Any, *, query: str) -> None:
    await page.goto(live.base + "/account/topup?" + query)
    await page.check("input[name=method][value='sandbox']")
    await submit(page, "form[action='/account/topup/review']")
    await submit(page, "form[action='/account/topup']")
    assert "/sandbox/pay/" in page.url


async def test_forgot_password_by_email(live: Live, context: Any) -> None:
    name, email, _ = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await page.goto(live.base + "/login")
    await page.click("a[href='/forgot']")
    await check(page, "forgot", problems)
    await page.fill("#f-login", email)
    await page.check("input[name=channel][value=email]")
    await submit(page, "form[action='/forgot']")
    assert "/reset" in page.url
    await check(page, "reset", problems)
    await page.fill("#f-code", await email_code(live.inbox, email))
    await page.fill("#f-new_password", "a brand new secret phrase")
    await page.fill("#f-confirm_password", "a brand new secret phrase")
    await submit(page, "form[action='/reset']")
    assert "/login?reset=1" in page.url
    await sign_in(live, page, name, "a brand new secret phrase")
    assert page.url.endswith("/account")


async def test_a_declined_payment_says_what_to_do_next(live: Live, context: Any) -> None:
    name, _, line = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await start_top_up(live, page, query=f"line={line.id}&plan=starter-10")
    async with page.expect_navigation():
        await page.click("button[value=fail]")
    outcome = page.locator("[data-testid=outcome].bad")
    await outcome.wait_for(timeout=20000)
    assert "No money was taken" in await outcome.inner_text()
    assert await page.locator("a[href^='/account/topup?plan=']").count() == 1
    await check(page, "order-failed", problems)


async def test_a_gift_top_up_to_another_number(live: Live, context: Any) -> None:
    name, _, _ = await customer(live, with_line=False)
    _, _, friends_line = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + "/account/topup")
    await page.check("input[name=line][value=other]")
    await page.fill("#f-msisdn", friends_line.msisdn)
    await page.check("input[name=method][value='sandbox']")
    await submit(page, "form[action='/account/topup/review']")
    assert friends_line.msisdn in await page.inner_text("main")
    await check(page, "review-gift", problems)
    await submit(page, "form[action='/account/topup']")
    async with page.expect_navigation():
        await page.click("button.pay")
    await page.locator("[data-testid=outcome].good").wait_for(timeout=20000)
    async with live.db.read() as s:
        balances = await line_balances(s, friends_line)
    assert balances.wallet.available > 0 or balances.units


async def test_locking_my_account(live: Live, context: Any) -> None:
    name, _, _ = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + "/account/security")
    await page.check("input[name=confirm]")
    await submit(page, "form[action='/account/security/lock']")
    assert "/unlock?locked=1" in page.url
    await check(page, "locked", problems)
    await page.goto(live.base + "/account")
    assert "/login" in page.url
    await sign_in(live, page, name)
    assert "/login" in page.url
    assert await page.locator("[role=alert]").count() == 1


async def test_wechat_pay_shows_a_qr_code_and_the_page_follows_the_payment(
    live: Live, context: Any
) -> None:
    from simcharge.orders.service import payment_of

    name, _, line = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + f"/account/topup?line={line.id}&plan=traveller-20")
    await page.check("input[name=method][value='wechatpay']")
    await submit(page, "form[action='/account/topup/review']")
    assert "¥" in await page.inner_text("[data-testid=total]")
    await submit(page, "form[action='/account/topup']")
    assert "/account/orders/" in page.url
    assert await page.locator(".qr svg").count() == 1
    await check(page, "order-qr", problems)
    order_id = uuid.UUID(page.url.rsplit("/", 1)[-1])
    async with live.db.read() as s:
        payment = await payment_of(s, order_id)
    assert payment.qr_payload
    # The payer's phone opens what the QR code says and pays there; this page is not touched.
    phone = await context.new_page()
    await phone.goto(payment.qr_payload)
    await phone.click("button.pay")
    await page.locator("[data-testid=outcome].good").wait_for(timeout=20000)


async def test_two_step_verification_with_recovery_codes(live: Live, context: Any) -> None:
    import re

    import pyotp

    name, _, _ = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.goto(live.base + "/account/security")
    await page.fill("form[action='/account/security/totp'] #f-password", PASSWORD)
    await submit(page, "form[action='/account/security/totp']")
    await check(page, "totp", problems)
    secret = (await page.inner_text("[data-testid=totp-key]")).replace(" ", "").strip()
    await page.fill("#f-code", pyotp.TOTP(secret).now())
    await submit(page, "form[action='/account/security/totp/confirm']")
    codes = re.findall(r"\S+", await page.inner_text("[data-testid=recovery-codes]"))
    assert len(codes) == 10
    await check(page, "recovery-codes", problems)
    await page.goto(live.base + "/account/security")
    await check(page, "security-two-step", problems)
    async with page.expect_navigation():
        await page.click("header form[action='/logout'] button")
    await sign_in(live, page, name)
    assert await page.locator("#f-second_factor").count() == 1
    await check(page, "login-second-factor", problems)
    await page.fill("#f-second_factor", codes[0])
    await submit(page, "form[action='/login']")
    assert page.url.endswith("/account")
    await page.goto(live.base + f"/account/orders/{uuid.uuid4()}")
    await check(page, "not-found", problems)


async def test_asking_customer_service(live: Live, context: Any) -> None:
    name, _, line = await customer(live)
    page = await context.new_page()
    problems = watch(page)
    await sign_in(live, page, name)
    await page.click("header a[href='/account/help']")
    await check(page, "help", problems)
    await page.fill("#f-subject", "Roaming")
    await page.fill("#f-body", "Does my data work in Tokyo?")
    await page.select_option("#f-line", str(line.id))
    await submit(page, "form[action='/account/help']")
    assert "Does my data work in Tokyo?" in await page.inner_text("[data-testid=thread]")
    await check(page, "ticket", problems)
