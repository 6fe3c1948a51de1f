"""The portal with what customers really type and do: text in any script carried from one form
to the next, a NUL or an endless value in a form, a decimal with the other separator, the
language switched on a page shown after a form, Back then "Pay now" again, and the records of
a line that received a gift."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import LineState
from simcharge.orders.models import Order
from tests.factories import create_line
from tests.portal.helpers import (
    PASSWORD,
    csrf_of,
    new_customer,
    pay_on_sandbox_page,
    portal_order,
    post_form,
    review_form,
    sign_in,
)

pytestmark = pytest.mark.usefixtures("shop")


async def test_text_in_any_script_is_carried_to_the_next_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Registering with a full-width name, asking a reset for an address in Chinese, adding a
    number typed in full-width digits: each hands the next page what was typed (a cookie holds
    ASCII only) — never a 500 after the change was made."""
    r = await post_form(client, "/register", "/register", {
        "username": "ｗｉｄｅｕｓｅｒ", "password": "a quiet river at dawn",
        "email": "用户@example.com", "language": "zh-Hans"})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        assert (await s.execute(select(Account.id).where(Account.username == "wideuser"))).first()
    client.cookies.clear()
    r = await post_form(client, "/forgot", "/forgot", {"login": "用户@example.com",
                                                        "channel": "email"})
    assert r.status_code == 303, r.text
    page = await client.get(r.headers["location"])
    assert page.status_code == 200 and "用户@example.com" in page.text

    customer = await new_customer(db, settings)
    bought = await db.run(lambda s: create_line(s, state=LineState.available))
    wide = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() or c == "+" else c for c in bought.msisdn)
    client.cookies.clear()
    sign_in(client, customer)
    r = await post_form(client, "/account/lines/add", "/account/lines/add", {"msisdn": wide})
    assert r.status_code == 303, r.text


@pytest.mark.parametrize(("page", "action"), [
    ("/login", "/login"), ("/forgot", "/forgot"), ("/verify", "/verify"),
    ("/unlock", "/unlock/request"), ("/unlock", "/unlock"),
])
async def test_a_nul_in_a_signed_out_form_is_refused(
    client: httpx.AsyncClient, page: str, action: str
) -> None:
    r = await post_form(client, page, action, {"login": "someone\x00", "password": "x",
                                               "code": "123456", "channel": "email"})
    assert r.status_code == 422, r.text


async def test_a_nul_or_an_endless_key_in_a_signed_in_form_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    c = await new_customer(db, settings)
    sign_in(client, c)
    q = {"line": str(c.line.id), "msisdn": "", "plan": "traveller-20", "method": "sandbox"}
    review = await client.get("/account/topup/review", params=q)
    r = await client.post("/account/topup", data={**review_form(review.text), **q,
                                                  "idempotency_key": "k\x00"})
    assert r.status_code == 422, r.text
    transfer = f"/account/lines/{c.line.id}/transfer"
    r = await post_form(client, transfer, transfer, {"to": "+14155550100", "what": "monetary",
                                                     "amount": "1", "idempotency_key": "k\x00"})
    assert r.status_code == 422, r.text
    for key in ("k\x00", "k" * 5000):
        r = await post_form(client, "/account/help", "/account/help",
                            {"subject": "Hello", "body": "A question", "idempotency_key": key})
        assert r.status_code in (303, 422), r.text
    async with db.read() as s:
        assert (await s.execute(select(Order.id).where(Order.account_id == c.account_id))).first() \
            is None
    r = await post_form(client, "/account/help", "/account/help",
                        {"subject": "Again", "body": "Another question"})
    ticket = r.headers["location"].removesuffix("?sent=1")
    r = await post_form(client, ticket, ticket + "/reply", {"body": "More",
                                                            "idempotency_key": "k" * 5000})
    assert r.status_code == 303, r.text


@pytest.mark.parametrize(("language", "typed"), [("en", "1,2"), ("es", "1.2")])
async def test_a_decimal_with_the_other_separator_is_not_read_as_ten_times_as_much(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str, typed: str
) -> None:
    me = await new_customer(db, settings, language=language)
    other = await new_customer(db, settings)
    sign_in(client, me)
    r = await client.get(f"/account/lines/{me.line.id}/transfer/review",
                         params={"to": other.line.msisdn, "what": "monetary", "amount": typed})
    assert re.search(r'data-testid="amount">', r.text) is None, r.text
    right = {"en": "1,000.50", "es": "5,50"}[language]
    r = await client.get(f"/account/lines/{me.line.id}/transfer/review",
                         params={"to": other.line.msisdn, "what": "monetary", "amount": right})
    assert re.search(r'data-testid="amount">', r.text) or "between" in r.text, r.text


async def test_the_language_switched_on_a_page_shown_after_a_form_lands_on_a_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    c = await new_customer(db, settings)
    sign_in(client, c)
    shown = await post_form(client, "/account/security", "/account/security/password", {
        "current_password": PASSWORD, "new_password": "a new long passphrase",
        "confirm_password": "not the same one"})
    assert shown.status_code == 422
    back = re.search(r'name="code" value="es"><input type="hidden" name="next" value="([^"]+)"',
                     shown.text)
    assert back is not None and back.group(1) == "/account/security"
    r = await client.post("/language", data={"csrf": csrf_of(shown.text), "code": "es",
                                             "next": back.group(1)})
    page = await client.get(r.headers["location"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")

    client.cookies.clear()
    shown = await post_form(client, "/unlock", "/unlock/request", {"login": "someone",
                                                                   "channel": "email"})
    link = re.search(r'href="(/language/es\?next=[^"]+)"', shown.text)
    assert link is not None
    r = await client.get(link.group(1).replace("&amp;", "&"))
    assert r.headers["location"].endswith("/unlock")
    assert (await client.get(r.headers["location"])).status_code == 200


async def test_pay_now_sent_again_after_paying_goes_to_the_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    c = await new_customer(db, settings)
    sign_in(client, c)
    q = {"line": str(c.line.id), "msisdn": "", "plan": "traveller-20", "method": "sandbox"}
    review = await client.get("/account/topup/review", params=q)
    form = {**review_form(review.text), **q}
    r = await client.post("/account/topup", data=form)
    await pay_on_sandbox_page(client, settings, r.headers["location"])
    async with db.read() as s:
        [order_id] = (await s.execute(select(Order.id).where(
            Order.account_id == c.account_id))).scalars().all()
    page = f"/account/orders/{order_id}"
    await post_form(client, page, page + "/check", {})
    again = await client.post("/account/topup", data=form)
    assert again.headers["location"].endswith(page), again.headers["location"]


async def test_records_link_only_the_viewers_own_orders_and_receipts(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    giver, receiver = await new_customer(db, settings), await new_customer(db, settings)
    sign_in(client, giver)
    order_id, pay_url = await portal_order(client, None, msisdn=receiver.line.msisdn)
    await pay_on_sandbox_page(client, settings, pay_url)
    page = f"/account/orders/{order_id}"
    await post_form(client, page, page + "/check", {})
    assert page in (await client.get("/account/records")).text  # the giver's own
    client.cookies.clear()
    sign_in(client, receiver)
    records = (await client.get("/account/records")).text
    assert "Top-up" in records or "top-up" in records.lower()
    assert page not in records  # the giver's order: not the receiver's to open

    mine, _ = await portal_order(client, receiver.line.id)

    async def paid_not_credited(s: AsyncSession) -> None:
        await s.execute(update(Order).where(Order.id == mine).values(
            state="paid", paid_at=utcnow(), paid_amount=1999, attention="amount_mismatch"))

    await db.run(paid_not_credited)
    records = (await client.get("/account/records")).text
    assert f"/account/orders/{mine}" in records
    assert f"/api/v1/orders/{mine}/receipt" not in records


async def test_a_browser_on_an_address_that_is_no_page_gets_a_page(
    client: httpx.AsyncClient,
) -> None:
    """A mistyped address, or a form's address opened as a page: a page in the reader's
    language, not a JSON document; the API and machine clients keep problem+json."""
    from simcharge.kit.translations import translate

    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8", "accept-language": "es"}
    for path, status in (("/no-such-page", 404), ("/account/security/password", 405)):
        r = await client.get(path, headers=browser)
        assert (r.status_code, r.headers["content-type"].split(";")[0]) == (status, "text/html")
        assert '<html lang="es"' in r.text, r.text[:300]
    said = translate("es", "Nothing was found here.")
    assert said in (await client.get("/no-such-page", headers=browser)).text
    for path, headers in (("/api/v1/nowhere", browser), ("/no-such-page", {})):
        r = await client.get(path, headers=headers)
        assert r.headers["content-type"] == "application/problem+json", path
