"""axe-core on every page in every state it can be in, in all five languages: the order page
waiting, left, paid, credited, failed, cancelled, expired, refunded and as a gift; forms with
their errors; the user center with and without lines, with lines in grace or frozen, unread
notices and a contact to verify; adding a line, unlocking, the signed-in verify page, the
sandbox's payment page, help and tickets, giving credit. One server and one browser page per
language serve every state (the world below is built once)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.models import LoginThrottle
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import LANGUAGES
from simcharge.lines.models import Line, LineState
from simcharge.notifications.models import Notice
from simcharge.orders.models import Order
from tests.conftest import Backend, SmtpInbox
from tests.factories import create_line
from tests.portal.browser.conftest import PHONE, Live, serve
from tests.portal.browser.helpers import check, watch
from tests.portal.helpers import (
    PASSWORD,
    Customer,
    new_customer,
    pay_on_sandbox_page,
    portal_order,
    post_form,
    two_step_on,
)

DAY = timedelta(days=1)


@dataclass
class World:
    live: Live
    full: Customer
    """Lines active (ending soon), in grace and frozen; orders in every state; notices unread;
    a phone number to verify; a ticket answered by customer service; a transfer given."""
    empty: Customer
    """No line at all."""
    two_step: Customer
    """Two-step verification on."""
    friend: Customer
    orders: dict[str, uuid.UUID] = field(default_factory=dict)
    sandbox: dict[str, str] = field(default_factory=dict)
    ticket: str = ""
    transfer: str = ""


async def _client(live: Live, who: Customer) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=live.base, timeout=30)
    c.cookies.set("sc_session", who.token)
    return c


async def _until(db: Database, order_id: uuid.UUID, state: str) -> None:
    for _ in range(400):
        async with db.read() as s:
            order = await s.get(Order, order_id, populate_existing=True)
            if order is not None and order.state == state:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never became {state}")


async def _set_order(db: Database, order_id: uuid.UUID, state: str) -> None:
    await db.run(lambda s: s.execute(update(Order).where(Order.id == order_id).values(state=state)))


async def _build(live: Live) -> World:
    db, settings = live.db, live.settings
    full = await new_customer(db, settings)
    world = World(live, full, await new_customer(db, settings, with_units=False),
                  await new_customer(db, settings), await new_customer(db, settings))
    now = utcnow()

    async def shape(s: AsyncSession) -> None:
        line = await s.get(Line, full.line.id)
        assert line is not None
        line.last_activity_at = now
        grace = await create_line(s, account_id=full.account_id, state=LineState.grace)
        grace.validity_end = grace.state_changed_at = grace.last_activity_at = now - 3 * DAY
        frozen = await create_line(s, account_id=full.account_id, state=LineState.frozen)
        frozen.state_changed_at = now - 10 * DAY
        account = await s.get(Account, full.account_id)
        assert account is not None
        account.phone_pending = "+14155550188"
        for template in ("account.welcome", "security.new_device"):
            s.add(Notice(account_id=full.account_id, template=template, params={
                "username": full.username, "device": "Firefox", "ip": "203.0.113.9",
                "time": now.isoformat()}))
        empty_line = await s.get(Line, world.empty.line.id)
        assert empty_line is not None
        empty_line.account_id = None

    await db.run(shape)
    async with await _client(live, full) as c:
        # Orders: waiting (redirect and QR), credited, failed, cancelled, then states set.
        # (Orders paid but not shown as credited go to the friend's line, so that this
        # customer's own line keeps the few buckets the user center's screenshot shows.)
        friend = world.friend.line.msisdn
        for name, method, gift in (
            ("pending", "sandbox", False), ("qr", "wechatpay", False),
            ("fulfilled", "sandbox", False), ("failed", "sandbox", False),
            ("cancelled", "sandbox", False), ("paid", "sandbox", False),
            ("expired", "sandbox", False), ("refunded", "sandbox", True),
        ):
            order_id, went = await portal_order(
                c, None if gift else full.line.id, msisdn=friend if gift else "",
                method=method, plan="starter-10")
            world.orders[name] = order_id
            world.sandbox[name] = went
        # The sandbox's page speaks the language the order was placed in: one of each.
        for language in LANGUAGES:
            c.cookies.set("sc_lang", language)
            _, world.sandbox[f"open:{language}"] = await portal_order(c, full.line.id)
            _, closed = await portal_order(c, None, msisdn=friend)
            await pay_on_sandbox_page(c, settings, closed)
            world.sandbox[f"closed:{language}"] = closed
        c.cookies.delete("sc_lang")
        await pay_on_sandbox_page(c, settings, world.sandbox["fulfilled"])
        await pay_on_sandbox_page(c, settings, world.sandbox["refunded"])
        await pay_on_sandbox_page(c, settings, world.sandbox["failed"], "fail")
        page = f"/account/orders/{world.orders['cancelled']}"
        await post_form(c, page, page + "/cancel", {})
        gift_id, gift_pay = await portal_order(c, None, msisdn=world.friend.line.msisdn,
                                               plan="starter-10")
        world.orders["gift"] = gift_id
        await pay_on_sandbox_page(c, settings, gift_pay)
        for name in ("fulfilled", "refunded", "gift"):
            await _until(db, world.orders[name], "fulfilled")
        await _until(db, world.orders["failed"], "failed")
        await _set_order(db, world.orders["paid"], "paid")
        await _set_order(db, world.orders["expired"], "expired")
        await _set_order(db, world.orders["refunded"], "refunded")

        async def ending_soon(s: AsyncSession) -> None:
            line = await s.get(Line, full.line.id)
            assert line is not None
            line.validity_end = utcnow() + 10 * DAY  # the top-up above extended it

        await db.run(ending_soon)
        # A question answered by customer service.
        r = await post_form(c, "/account/help", "/account/help", {
            "subject": "Roaming in Japan", "body": "Does my data work in Tokyo?",
            "line": str(full.line.id)})
        world.ticket = r.headers["location"].removesuffix("?sent=1")
        from tests.backoffice.helpers import new_staff

        agent = await new_staff(db, settings, "agent")
        r = await c.post(f"/api/v1/admin/tickets/{world.ticket.rsplit('/', 1)[-1]}/messages",
                         headers=agent.auth, json={"body": "Yes: Japan is in your zone."})
        assert r.status_code == 201, r.text
        # A transfer given to the friend.
        review = await c.get(f"/account/lines/{full.line.id}/transfer/review", params={
            "to": world.friend.line.msisdn, "what": "monetary", "amount": "1"})
        form = review.text.split(f'action="/account/lines/{full.line.id}/transfer"', 1)[1]
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.split("</form>")[0]))
        r = await c.post(f"/account/lines/{full.line.id}/transfer", data=fields)
        assert r.status_code == 303, r.text
        world.transfer = r.headers["location"]
    async with await _client(live, world.two_step) as c:
        _, _, token = await two_step_on(c)
        world.two_step = replace(world.two_step, token=token)
    return world


@pytest.fixture(scope="module")
async def world(
    _browser_ready: None, backend: Backend, smtp_server: tuple[SmtpInbox, int]
) -> AsyncIterator[World]:
    if backend.is_postgres:
        pytest.skip("browser journeys run on SQLite (the services run on both elsewhere)")
    url = await backend.copy("states" + uuid.uuid4().hex[:8])
    database = Database.from_url(url, pool_size=40)
    inbox, port = smtp_server
    try:
        async with serve(database, inbox, port) as live:
            yield await _build(live)
    finally:
        await database.dispose()
        await backend.discard(url)


class Tab:
    """One browser page per language, reused by every state."""

    def __init__(self, context: Any, page: Any) -> None:
        self.context, self.page = context, page
        self.problems = watch(page)


@pytest.fixture(scope="module")
async def tabs(browser: Any) -> AsyncIterator[dict[str, Tab]]:
    opened: dict[str, Tab] = {}
    yield opened
    for tab in opened.values():
        await tab.context.close()


async def tab_for(tabs: dict[str, Tab], browser: Any, language: str) -> Tab:
    if language not in tabs:
        context = await browser.new_context(viewport=PHONE, locale="en-US")
        tabs[language] = Tab(context, await context.new_page())
    return tabs[language]


Step = Callable[[Any, World, str], Awaitable[None]]


async def _submit(page: Any, selector: str) -> None:
    async with page.expect_navigation():
        await page.click(f"{selector} button[type=submit]")


def go(path: str | Callable[[World], str]) -> Step:
    async def step(page: Any, world: World, language: str) -> None:
        target = path(world) if callable(path) else path
        await page.goto(world.live.base + target)

    return step


def sandbox(which: str) -> Step:
    async def step(page: Any, world: World, language: str) -> None:
        await page.goto(world.sandbox[f"{which}:{language}"])

    return step


def order(name: str, suffix: str = "") -> Step:
    return go(lambda w: f"/account/orders/{w.orders[name]}{suffix}")


async def register_errors(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/register")
    await page.fill("#f-username", "x")
    await page.fill("#f-password", "short")
    await page.fill("#f-email", "not-an-address")
    await _submit(page, "form[action='/register']")


async def login_failed(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/login")
    await page.fill("#f-login", f"nobody-{language}-{uuid.uuid4().hex[:6]}")
    await page.fill("#f-password", "not the password")
    await _submit(page, "form[action='/login']")


async def second_factor(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/login")
    await page.fill("#f-login", world.two_step.username)
    await page.fill("#f-password", PASSWORD)
    await _submit(page, "form[action='/login']")
    assert await page.locator("#f-second_factor").count() == 1


async def forgot_error(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/forgot")
    await _submit(page, "form[action='/forgot']")


async def reset_errors(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/reset")
    await page.fill("#f-login", "someone")
    await page.fill("#f-code", "123")
    await page.fill("#f-new_password", "one long phrase")
    await page.fill("#f-confirm_password", "another long phrase")
    await _submit(page, "form[action='/reset']")


async def verify_error(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/verify")
    await page.fill("#f-code", "000000")
    await page.fill("#f-login", "someone")
    await page.fill("#f-password", "not the password")
    await _submit(page, "form[action='/verify']")


async def unlock_sent(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/unlock")
    await page.fill("#f-login", world.friend.username)
    await _submit(page, "form[action='/unlock/request']")


async def unlock_error(page: Any, world: World, language: str) -> None:
    await unlock_sent(page, world, language)
    await page.fill("#f-code", "000000")
    await _submit(page, "form[action='/unlock']")


async def add_line_error(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/account/lines/add?sent=1")
    await page.fill("#f-msisdn", world.friend.line.msisdn)
    await page.fill("#f-code", "000000")
    await _submit(page, "form[action='/account/lines/add']")


async def help_error(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/account/help")
    await _submit(page, "form[action='/account/help']")


async def ticket_error(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + world.ticket)
    await _submit(page, f"form[action='{world.ticket}/reply']")


async def security_error(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/account/security")
    await page.fill("#f-current_password", "not my password")
    await page.fill("#f-new_password", "a new long phrase")
    await page.fill("#f-confirm_password", "a new long phrase")
    await _submit(page, "form[action='/account/security/password']")


async def lock_error(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/account/security")
    # The browser would stop an unticked required box: the server's answer is what is checked.
    await page.eval_on_selector("form[action='/account/security/lock']", "f => f.noValidate = true")
    await _submit(page, "form[action='/account/security/lock']")


async def totp_setup(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/account/security")
    await page.fill("form[action='/account/security/totp'] #f-password", PASSWORD)
    await _submit(page, "form[action='/account/security/totp']")


async def recovery_codes(page: Any, world: World, language: str) -> None:
    await page.goto(world.live.base + "/account/security")
    await page.fill("#f-rc-password", PASSWORD)
    await _submit(page, "form[action='/account/security/recovery-codes']")


def transfer(suffix: str = "", **query: str) -> Step:
    def path(w: World) -> str:
        values = {k: (w.friend.line.msisdn if v == "friend" else v) for k, v in query.items()}
        return f"/account/lines/{w.full.line.id}/transfer{suffix}" + (
            "?" + urlencode(values) if values else "")

    return go(path)


# (state, who is signed in, how to reach it). Screenshots: the README's pages.
STATES: list[tuple[str, str | None, Step]] = [
    ("home", None, go("/")),
    ("register", None, go("/register")),
    ("register-errors", None, register_errors),
    ("login", None, go("/login")),
    ("login-failed", None, login_failed),
    ("login-second-factor", None, second_factor),
    ("forgot", None, go("/forgot")),
    ("forgot-error", None, forgot_error),
    ("reset", None, go("/reset")),
    ("reset-errors", None, reset_errors),
    ("verify", None, go("/verify?sent=1")),
    ("verify-error", None, verify_error),
    ("unlock", None, go("/unlock")),
    ("unlock-locked", None, go("/unlock?locked=1")),
    ("unlock-sent", None, unlock_sent),
    ("unlock-error", None, unlock_error),
    ("sandbox-open", None, sandbox("open")),
    ("sandbox-closed", None, sandbox("closed")),
    ("dashboard", "full", go("/account")),
    ("dashboard-no-lines", "empty", go("/account")),
    ("verify-signed-in", "full", go("/verify")),
    ("add-line", "full", go("/account/lines/add")),
    ("add-line-code", "full", go("/account/lines/add?sent=1")),
    ("add-line-error", "full", add_line_error),
    ("topup", "full", go("/account/topup")),
    ("topup-error", "full", go("/account/topup/review?" + urlencode(
        {"line": "other", "msisdn": "+19999999999", "plan": "starter-10", "method": "sandbox"}))),
    ("review", "full", go(lambda w: "/account/topup/review?" + urlencode(
        {"line": str(w.full.line.id), "plan": "traveller-20", "method": "paypal"}))),
    ("review-gift", "full", go(lambda w: "/account/topup/review?" + urlencode(
        {"line": "other", "msisdn": w.friend.line.msisdn, "plan": "starter-10",
         "method": "sandbox"}))),
    ("order-pending", "full", order("pending")),
    ("order-left", "full", order("pending", "?cancelled=1")),
    ("order-qr", "full", order("qr")),
    ("order-paid", "full", order("paid")),
    ("order-credited", "full", order("fulfilled")),
    ("order-gift", "full", order("gift")),
    ("order-failed", "full", order("failed")),
    ("order-cancelled", "full", order("cancelled")),
    ("order-expired", "full", order("expired")),
    ("order-refunded", "full", order("refunded")),
    ("records", "full", go("/account/records?kind=package")),
    ("security", "full", go("/account/security")),
    ("security-error", "full", security_error),
    ("lock-error", "full", lock_error),
    ("totp", "full", totp_setup),
    ("security-two-step", "two_step", go("/account/security")),
    ("recovery-codes", "two_step", recovery_codes),
    ("help", "full", go("/account/help")),
    ("help-error", "full", help_error),
    ("ticket", "full", go(lambda w: w.ticket)),
    ("ticket-error", "full", ticket_error),
    ("transfer", "full", transfer()),
    ("transfer-review", "full", transfer("/review", to="friend", what="monetary", amount="2")),
    ("transfer-error", "full", transfer("/review", to="friend", what="monetary", amount="900")),
    ("transfer-done", "full", go(lambda w: w.transfer)),
    ("not-found", "full", go(f"/account/orders/{uuid.uuid4()}")),
]


# What shows that a state is the one it claims to be.
SEEN: dict[str, str] = {
    "register-errors": "[aria-invalid=true]", "login-failed": ".alert.bad",
    "login-second-factor": "#f-second_factor", "forgot-error": "[aria-invalid=true]",
    "reset-errors": ".alert.bad", "verify": ".alert[role=status]", "verify-error": ".alert.bad",
    "unlock-locked": ".alert.good", "unlock-sent": ".alert[role=status]",
    "unlock-error": ".alert.bad", "sandbox-open": "button.pay", "sandbox-closed": "[role=status]",
    "dashboard": "[data-testid=freeze] >> nth=0", "dashboard-no-lines": "a[href='/account/topup?line=other']",
    "verify-signed-in": "form[action='/verify/resend']", "add-line-code": "#f-code",
    "add-line-error": ".alert.bad", "topup-error": "#e-msisdn", "review": "[data-testid=total]",
    "review-gift": "[data-testid=total]", "order-pending": "a.btn[href*='/sandbox/pay/']",
    "order-left": ".spinner", "order-qr": ".qr svg",
    "order-paid": "[data-testid=outcome]:not(:has(.spinner))",
    "order-credited": "[data-testid=outcome].good ul", "order-gift": "[data-testid=outcome].good",
    "order-failed": "[data-testid=outcome].bad", "order-cancelled": "[data-testid=outcome].bad",
    "order-expired": "[data-testid=outcome].bad", "order-refunded": "[data-testid=outcome]",
    "security-error": ".alert.bad", "lock-error": "#e-confirm",
    "totp": "[data-testid=totp-key]", "security-two-step": "#f-rc-password",
    "recovery-codes": "[data-testid=recovery-codes]", "help-error": ".alert.bad",
    "ticket": "[data-testid=thread] li >> nth=1", "ticket-error": "#e-body",
    "transfer": "[data-testid=terms]", "transfer-review": "[data-testid=fee]",
    "transfer-error": "#e-amount", "transfer-done": "[data-testid=given]",
}
DASHBOARD = (".state.grace", ".state.frozen", "[data-testid=termination]", ".state.pending",
             ".alert.warn a[href='/verify']")


def _shot(state: str, language: str) -> str | None:
    if language == "en":
        return f"state-{state}"
    return f"zh-state-{state}" if language == "zh-Hans" else None


@pytest.mark.parametrize(
    ("language", "state"),
    [(lang, name) for lang in LANGUAGES for name, _, _ in STATES],
)
async def test_no_accessibility_violation_in_any_state(
    world: World, tabs: dict[str, Tab], browser: Any, language: str, state: str
) -> None:
    _, who, reach = next(s for s in STATES if s[0] == state)
    tab = await tab_for(tabs, browser, language)
    await tab.context.clear_cookies()
    cookies = [{"name": "sc_lang", "value": language, "url": world.live.base}]
    if who is not None:
        customer: Customer = getattr(world, who)
        cookies.append({"name": "sc_session", "value": customer.token, "url": world.live.base})
    await tab.context.add_cookies(cookies)
    tab.problems.clear()
    # Each state is reached afresh: one customer re-enters its password (rightly and, in the error
    # states, wrongly) in several states and five languages within a minute, as no person would;
    # the per-account limits and the lock-out's growing delay would refuse it.
    await world.live.limits.reset()
    await world.live.db.run(lambda s: s.execute(delete(LoginThrottle)))
    await reach(tab.page, world, language)
    assert await tab.page.get_attribute("html", "lang") == language, state
    if who is not None:
        assert "/login" not in tab.page.url, f"{state}: signed out ({tab.page.url})"
    for selector in ([SEEN[state]] if state in SEEN else []) + (
        list(DASHBOARD) if state == "dashboard" else []
    ):
        assert await tab.page.locator(selector).count() >= 1, f"{state}: no {selector}"
    # Both widths in English and Chinese (the layouts and the scripts that differ most); the
    # phone's alone in the other three, to keep the run short.
    await check(tab.page, f"{language}:{state}", tab.problems, shot=_shot(state, language),
                desktop=language in ("en", "zh-Hans"))
