"""The portal's other forms over HTTP: unlocking, two-step off and new recovery codes, ending
one of my sessions, checking and cancelling an order, "not credited?" finding it credited,
the operator's colours and logo, the records' line filter, customer service's answer in my
thread, errors tied to their fields, and what the payment pages may link to."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.auth.client import ClientInfo
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import LineState
from simcharge.lines.service import credit_wallet
from simcharge.orders.models import Order
from tests.conftest import SmtpInbox
from tests.factories import create_line
from tests.portal.helpers import (
    PASSWORD,
    csrf_of,
    new_customer,
    pay_on_sandbox_page,
    portal_order,
    post_form,
    sign_in,
    sign_in_with_second_factor,
    two_step_on,
)

pytestmark = pytest.mark.usefixtures("shop")


async def order_state(db: Database, order_id: uuid.UUID) -> str:
    async with db.read() as s:
        order = await s.get(Order, order_id, populate_existing=True)
        assert order is not None
        return order.state


# --- unlocking ----------------------------------------------------------------------------------


async def test_a_locked_account_is_unlocked_with_the_emailed_code(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox, deliver: Any
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/security", "/account/security/lock", {"confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == "/unlock?locked=1"
    assert (await client.get("/account")).status_code == 303
    r = await post_form(client, "/unlock?locked=1", "/unlock/request",
                        {"login": customer.username, "channel": "email"})
    assert r.status_code == 200
    assert "If this account is locked and has a verified contact there" in r.text
    await deliver()
    code = inbox.last_code(customer.email)
    wrong = "000000" if code != "000000" else "111111"
    r = await client.post("/unlock", data={"csrf": csrf_of(r.text), "login": customer.username,
                                           "code": wrong})
    assert r.status_code in (400, 401, 422) and 'class="alert bad"' in r.text
    assert 'id="e-code"' in r.text or "aria-invalid" in r.text
    r = await client.post("/unlock", data={"csrf": csrf_of(r.text), "login": customer.username,
                                           "code": code})
    assert r.status_code == 303 and r.headers["location"] == "/login?unlocked=1"
    assert "Your account is unlocked." in (await client.get("/login?unlocked=1")).text
    r = await post_form(client, "/login", "/login",
                        {"login": customer.username, "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/account"


async def test_an_unlock_request_for_anyone_answers_alike(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)  # not locked
    known = await post_form(client, "/unlock", "/unlock/request",
                            {"login": customer.username, "channel": "email"})
    unknown = await post_form(client, "/unlock", "/unlock/request",
                              {"login": "nobody-" + uuid.uuid4().hex[:6], "channel": "sms"})
    assert known.status_code == unknown.status_code == 200
    notice = "If this account is locked and has a verified contact there, we have sent it a code."
    assert notice in known.text and notice in unknown.text


# --- two-step verification: new recovery codes, turning it off ------------------------------


async def test_new_recovery_codes_replace_the_old_ones(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    _, old, _ = await two_step_on(client)
    assert len(old) == 10
    r = await post_form(client, "/account/security", "/account/security/recovery-codes",
                        {"password": "not my password"})
    assert r.status_code == 401 and 'class="alert bad"' in r.text
    r = await post_form(client, "/account/security", "/account/security/recovery-codes",
                        {"password": PASSWORD})
    assert r.status_code == 200
    new = re.findall(r"<li>([^<]+)</li>", r.text.split("recovery-codes", 1)[1])
    assert len(new) == 10 and not set(new) & set(old)
    # An old code no longer signs in; a new one does.
    client.cookies.clear()
    for code, status in ((old[0], 401), (new[0], 303)):
        r = await sign_in_with_second_factor(client, customer.username, code)
        assert r.status_code == status, r.text[:500]


async def test_two_step_verification_is_turned_off_with_password_and_code(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    secret, _, _ = await two_step_on(client)
    totp = pyotp.TOTP(secret)
    # The step just used to turn it on cannot be used again; the next one can.
    r = await post_form(client, "/account/security", "/account/security/totp/disable",
                        {"password": PASSWORD, "code": "000000"})
    assert r.status_code in (400, 401, 422) and 'class="alert bad"' in r.text
    assert 'aria-invalid="true"' in r.text
    r = await post_form(client, "/account/security", "/account/security/totp/disable",
                        {"password": PASSWORD, "code": totp.at(utcnow().timestamp() + 30)})
    assert r.status_code == 303 and r.headers["location"] == "/account/security?done=totp_off"
    page = await client.get(r.headers["location"])
    assert "Two-step verification is off." in page.text
    assert 'action="/account/security/totp"' in page.text  # can be set up again
    client.cookies.clear()
    r = await post_form(client, "/login", "/login",
                        {"login": customer.username, "password": PASSWORD})
    assert r.status_code == 303  # no second step any more


# --- sessions ---------------------------------------------------------------------------------


async def test_ending_one_of_my_sessions_leaves_the_others(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)

    async def phone(s: AsyncSession) -> Any:
        return await open_session(
            s, settings.secret_key, account_id=customer.account_id,
            client=ClientInfo(ip="203.0.113.50", user_agent="Mozilla/5.0 (iPhone) Safari/604.1"),
            policy=policy(settings), now=utcnow(),
        )

    other = await db.run(phone)
    sign_in(client, customer)
    page = await client.get("/account/security")
    assert "Safari · iPhone" in page.text
    r = await client.post(f"/account/security/sessions/{other.session.id}/end",
                          data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/account/security?done=session"
    page = await client.get(r.headers["location"])
    assert "The session has ended." in page.text and "Safari · iPhone" not in page.text
    async with httpx.AsyncClient(transport=client._transport,
                                 base_url="http://testserver") as phone_browser:
        phone_browser.cookies.set("sc_session", other.token)
        assert (await phone_browser.get("/account")).status_code == 303
    assert (await client.get("/account")).status_code == 200
    # Ending this very session signs out here.
    mine = re.findall(r'action="/account/security/sessions/([0-9a-f-]{36})/end"', page.text)
    assert len(mine) == 1
    r = await client.post(f"/account/security/sessions/{mine[0]}/end",
                          data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert (await client.get("/account")).status_code == 303


# --- an order's page: check again, cancel, "not credited?" -----------------------------------


async def test_check_again_credits_a_paid_order_and_shows_the_new_balance(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    order_id, pay_url = await portal_order(client, customer.line.id)
    page = f"/account/orders/{order_id}"
    await pay_on_sandbox_page(client, settings, pay_url)
    waiting = await client.get(page)
    assert "We are waiting for the payment service to confirm your payment." in waiting.text
    assert 'data-poll="' in waiting.text
    r = await post_form(client, page, page + "/check", {})
    assert r.status_code == 303 and r.headers["location"] == page
    assert await order_state(db, order_id) == "fulfilled"
    shown = (await client.get(page)).text
    outcome = shown.split('data-testid="outcome"', 1)[1].split("</div>", 1)[0]
    # 1250 cents, 100 min and 2 GB before; traveller-20 adds 250 min, 3 GB and 50 SMS.
    for said in ("Thank you! Your top-up is done.", "Balance: <strong>$12.50</strong>",
                 "Minutes: <strong>350 min</strong>", "Data: <strong>5 GB</strong>",
                 "SMS: <strong>50 SMS</strong>"):
        assert said in outcome, said
    assert "/receipt?lang=en" in shown and 'data-poll="' not in shown


async def test_cancel_closes_a_waiting_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    order_id, _ = await portal_order(client, customer.line.id, plan="starter-10")
    page = f"/account/orders/{order_id}"
    r = await post_form(client, page, page + "/cancel", {})
    assert r.status_code == 303 and r.headers["location"] == page
    assert await order_state(db, order_id) == "cancelled"
    shown = (await client.get(page)).text
    assert "This order was not paid and is closed." in shown
    assert 'href="/account/topup?plan=starter-10"' in shown
    assert 'action="' + page + '/cancel"' not in shown
    # Someone else cannot check or cancel it.
    stranger = await new_customer(db, settings)
    sign_in(client, stranger)
    r = await client.post(page + "/cancel",
                          data={"csrf": csrf_of((await client.get("/account")).text)})
    assert r.status_code == 404


async def test_not_credited_finds_it_paid_and_opens_no_ticket(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    order_id, pay_url = await portal_order(client, customer.line.id)
    await pay_on_sandbox_page(client, settings, pay_url)
    page = f"/account/orders/{order_id}"
    r = await post_form(client, page, page + "/help", {})
    assert r.status_code == 303 and r.headers["location"] == page
    assert await order_state(db, order_id) == "fulfilled"
    assert "Thank you! Your top-up is done." in (await client.get(page)).text
    assert "You have not asked anything yet." in (await client.get("/account/help")).text


async def test_a_payment_taken_and_not_credited_says_finance_has_it_and_offers_no_receipt(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`paid` is never a step on the way: the money arrived and was not credited (another
    amount, say). The page must not promise that it updates by itself, nor link a receipt."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    order_id, _ = await portal_order(client, customer.line.id)

    async def paid_not_credited(s: AsyncSession) -> None:
        await s.execute(update(Order).where(Order.id == order_id).values(
            state="paid", paid_at=utcnow(), paid_amount=1999, attention="amount_mismatch"))

    await db.run(paid_not_credited)
    shown = (await client.get(f"/account/orders/{order_id}")).text
    outcome = shown.split('data-testid="outcome"', 1)[1].split("</div>", 1)[0]
    assert "We received your payment but have not credited it yet" in outcome
    assert "updates by itself" not in shown and 'data-poll="' not in shown
    assert "spinner" not in outcome and "/receipt?lang=" not in shown


# --- the payment pages may only send the payer to a provider ---------------------------------

STRIPE_API = "https://api.stripe.com"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Stripe configured as well (its API answered by respx with Stripe's documented shapes)."""
    return settings.model_copy(update={
        "stripe_secret_key": SecretStr("sk_test_51Portal"),
        "stripe_webhook_secret": SecretStr("whsec_portal_0123456789"),
    })


@pytest.fixture
def stripe_api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.route(host="testserver").pass_through()
        yield router


def checkout_session(request: httpx.Request, url: str) -> httpx.Response:
    """A Checkout Session as Stripe's API returns it (`POST /v1/checkout/sessions`)."""
    sent = dict(p.split("=", 1) for p in request.content.decode().split("&"))
    return httpx.Response(200, json={
        "id": "cs_test_portal1", "object": "checkout.session", "mode": "payment",
        "amount_subtotal": 2000, "amount_total": 2000, "currency": "usd",
        "client_reference_id": sent.get("client_reference_id"), "customer": None,
        "created": int(utcnow().timestamp()), "expires_at": int(utcnow().timestamp()) + 1800,
        "livemode": False, "metadata": {}, "payment_intent": None, "payment_status": "unpaid",
        "status": "open", "url": url,
    })


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://checkout.stripe.com/c/pay/cs_test_portal1#fid", True),
    ("https://evil.example/c/pay/cs_test_portal1", False),
    ("http://checkout.stripe.com/c/pay/cs_test_portal1", False),
])
async def test_the_order_page_links_only_to_a_known_providers_page(
    client: httpx.AsyncClient, db: Database, settings: Settings,
    stripe_api: respx.MockRouter, url: str, allowed: bool,
) -> None:
    stripe_api.post(f"{STRIPE_API}/v1/checkout/sessions").mock(
        side_effect=lambda request: checkout_session(request, url))
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    order_id, went = await portal_order(client, customer.line.id, method="card")
    page = (await client.get(f"/account/orders/{order_id}")).text
    host = url.split("/")[2]
    if allowed:
        assert went == url
        assert f'href="{url}"' in page and "Go to the payment page" in page
    else:
        assert went == f"/account/orders/{order_id}"
        assert host not in page and "Go to the payment page" not in page


# --- the operator's colours and logo ------------------------------------------------------------


async def test_the_operators_colours_and_logo_come_from_settings(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>')
    branded = settings.model_copy(update={
        "brand_color": "#123456", "brand_accent": "#abcdef", "operator_logo": logo,
        "operator_name": "Acme Mobile"})
    app = create_app(branded, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as c:
        css = await c.get("/assets/theme.css")
        assert css.headers["content-type"].startswith("text/css")
        assert "--brand:#123456" in css.text and "--tint:#abcdef" in css.text
        image = await c.get("/assets/logo")
        assert image.status_code == 200 and image.headers["content-type"] == "image/svg+xml"
        assert image.content == logo.read_bytes()
        home = (await c.get("/")).text
        assert '<img src="/assets/logo" alt="">' in home and "Acme Mobile" in home
        assert 'href="/assets/theme.css"' in home


async def test_without_a_logo_the_initial_stands_in(client: httpx.AsyncClient) -> None:
    assert (await client.get("/assets/logo")).status_code == 404
    home = (await client.get("/")).text
    assert '<span class="mark" aria-hidden="true">S</span>' in home
    assert "--brand:#0b6e4f" in (await client.get("/assets/theme.css")).text


# --- records by line ------------------------------------------------------------------------------


async def test_records_of_one_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    stranger = await new_customer(db, settings)

    async def second_line(s: AsyncSession) -> Any:
        line = await create_line(s, account_id=customer.account_id)
        await credit_wallet(s, line, 777, source=f"test:{line.id}", code="adjustment")
        return line

    other = await db.run(second_line)
    sign_in(client, customer)
    everything = (await client.get("/account/records")).text
    assert customer.line.msisdn in everything and other.msisdn in everything
    only = (await client.get("/account/records", params={"line": str(other.id)})).text
    rows = only.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert other.msisdn in rows and customer.line.msisdn not in rows
    assert "$7.77" in rows
    assert f'<option value="{other.id}" selected>' in only
    csv = (await client.get("/account/records.csv", params={"line": str(other.id)})).text
    assert [row.split(",")[1] for row in csv.strip().splitlines()[1:]] == [other.msisdn]
    # Someone else's line is no filter into their records.
    theirs = (await client.get("/account/records", params={"line": str(stranger.line.id)})).text
    assert "No records for these filters." in theirs and stranger.line.msisdn not in theirs


async def test_records_filters_submit_only_when_asked() -> None:
    from simcharge.portal.web import STATIC, TEMPLATES

    assert "data-autosubmit" not in (TEMPLATES / "records.html").read_text()
    assert ".submit()" not in (STATIC / "portal.js").read_text()


# --- customer service answers in my thread; errors tied to their fields -----------------------


async def test_customer_services_answer_shows_in_my_thread(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    from tests.backoffice.helpers import new_staff

    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/help", "/account/help", {
        "subject": "Roaming", "body": "Does my data work in Tokyo?"})
    ticket_page = r.headers["location"].removesuffix("?sent=1")  # "We received your question"
    ticket_id = ticket_page.rsplit("/", 1)[-1]
    agent = await new_staff(db, settings, "agent")
    url = f"/api/v1/admin/tickets/{ticket_id}/messages"
    assert (await client.post(url, headers=agent.auth, json={
        "body": "Checking with the network team.", "internal": True})).status_code == 201
    assert (await client.post(url, headers=agent.auth, json={
        "body": "Yes: Japan is in zone 2, your package covers it."})).status_code == 201
    thread = (await client.get(ticket_page)).text
    answer = thread.split('data-testid="thread"', 1)[1].split("</ol>", 1)[0]
    assert "Customer service" in answer and "Japan is in zone 2" in answer
    assert "network team" not in thread
    assert "Waiting for your answer" in thread


async def test_an_empty_answer_is_marked_on_its_field(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/help", "/account/help", {
        "subject": "Roaming", "body": "Tokyo?"})
    ticket_page = r.headers["location"].removesuffix("?sent=1")
    r = await post_form(client, ticket_page, ticket_page + "/reply", {"body": "  "})
    assert r.status_code == 422
    textarea = re.search(r"<textarea[^>]*>", r.text)
    assert textarea and 'aria-invalid="true"' in textarea.group(0)
    assert 'aria-describedby="e-body"' in textarea.group(0)
    assert re.search(r'<p class="error" id="e-body">[^<]+</p>', r.text)


async def test_the_lock_box_is_marked_when_not_ticked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/security", "/account/security/lock", {})
    assert r.status_code == 422
    box = re.search(r'<input type="checkbox" name="confirm"[^>]*>', r.text)
    assert box and 'aria-invalid="true"' in box.group(0)
    assert 'aria-describedby="e-confirm"' in box.group(0)
    assert ('<p class="error" id="e-confirm">Tick the box to confirm that you want to lock your '
            "account.</p>") in r.text
    fresh = (await client.get("/account/security")).text
    assert 'aria-invalid="true"' not in fresh


# --- the sandbox's page -----------------------------------------------------------------------


async def test_the_sandbox_page_has_no_inline_style(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    _, pay_url = await portal_order(client, customer.line.id)
    page = await client.get(pay_url)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "style-src 'self'" in csp and "sha256" not in csp and "unsafe-inline" not in csp
    assert "<style" not in page.text and "style=" not in page.text and "<script" not in page.text
    assert '<link rel="stylesheet" href="/sandbox/sandbox.css">' in page.text
    css = await client.get("/sandbox/sandbox.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "button.pay" in css.text


# --- adding a line; signing out ------------------------------------------------------------------


async def test_a_line_is_added_with_the_code_sent_to_it(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    from tests.conftest import last_sms_code

    customer = await new_customer(db, settings)
    bought = await db.run(lambda s: create_line(s, state=LineState.available))
    sign_in(client, customer)
    r = await post_form(client, "/account/lines/add", "/account/lines/add",
                        {"msisdn": bought.msisdn})
    assert r.status_code == 303
    # The number is not in the URL (history, proxies, logs): step two has it from a cookie.
    assert r.headers["location"] == "/account/lines/add?sent=1"
    step_two = await client.get(r.headers["location"])
    assert "We have sent a code by SMS to this line." in step_two.text
    assert f'value="{bought.msisdn}"' in step_two.text
    await deliver()
    code = last_sms_code(bought.msisdn)
    wrong = "000000" if code != "000000" else "111111"
    r = await client.post("/account/lines/add", data={
        "csrf": csrf_of(step_two.text), "msisdn": bought.msisdn, "code": wrong})
    assert r.status_code in (400, 401, 409, 422) and 'class="alert bad"' in r.text
    assert 'id="f-code"' in r.text  # still on the second step
    r = await client.post("/account/lines/add", data={
        "csrf": csrf_of(step_two.text), "msisdn": bought.msisdn, "code": code})
    assert r.status_code == 303 and r.headers["location"] == "/account?added=1"
    assert bought.msisdn in (await client.get("/account")).text
    assert bought.msisdn not in (await client.get("/account/lines/add?sent=1")).text
    # Not one of the operator's numbers: said by its field.
    r = await post_form(client, "/account/lines/add", "/account/lines/add",
                        {"msisdn": "+14155559999"})
    assert r.status_code == 404 and 'id="e-msisdn"' in r.text


async def test_signing_out_ends_the_session(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account", "/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "sc_session" in r.headers.get("set-cookie", "")
    again = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with again:
        again.cookies.set("sc_session", customer.token)
        assert (await again.get("/account")).status_code == 303
