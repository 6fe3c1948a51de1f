""""Pay now" pays the total the review page showed, or shows the new one and asks again."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.orders.models import Order, Payment
from tests.orders.helpers import change_plan
from tests.portal.helpers import Customer, new_customer, review_form, sign_in

pytestmark = pytest.mark.usefixtures("shop")

_TOTAL = re.compile(r'data-testid="total">([^<]+)<')


def _choice(customer: Customer, plan: str = "traveller-20") -> dict[str, str]:
    return {"line": str(customer.line.id), "msisdn": "", "plan": plan, "method": "paypal"}


async def _review(client: httpx.AsyncClient, customer: Customer) -> httpx.Response:
    r = await client.get("/account/topup/review", params=_choice(customer))
    assert r.status_code == 200, r.text
    return r


async def _pay_now(
    client: httpx.AsyncClient, customer: Customer, review: httpx.Response, **override: str
) -> httpx.Response:
    return await client.post(
        "/account/topup", data={**review_form(review.text), **_choice(customer), **override}
    )


def _total(page: httpx.Response) -> str:
    found = _TOTAL.search(page.text)
    assert found, page.text[:2000]
    return found.group(1)


async def _orders(db: Database, customer: Customer) -> list[Order]:
    async with db.read() as s:
        rows = await s.execute(select(Order).where(Order.account_id == customer.account_id))
        return list(rows.scalars())


async def test_a_price_raised_before_pay_now_is_shown_and_nothing_is_charged(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    review = await _review(client, customer)
    assert _total(review) == "$21.19" and "Pay $21.19 now" in review.text
    await change_plan(db, "traveller-20", prices={"USD": "45.00"})

    again = await _pay_now(client, customer, review)
    assert again.status_code == 409, again.text[:2000]
    assert "The price changed since you looked: here is the new total. Pay now?" in again.text
    assert _total(again) == "$47.06" and "Pay $47.06 now" in again.text
    assert await _orders(db, customer) == []
    async with db.read() as s:
        assert (await s.execute(select(Payment))).first() is None

    # "Pay now" on the new page: the order is at the price it shows.
    r = await _pay_now(client, customer, again)
    assert r.status_code == 303, r.text[:2000]
    [order] = await _orders(db, customer)
    assert (order.price, order.fee, order.total) == (4500, 206, 4706)
    # A second click of the same page is the same order.
    assert (await _pay_now(client, customer, again)).status_code == 303
    assert len(await _orders(db, customer)) == 1


async def test_the_new_total_is_said_in_the_customers_language(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="zh-Hans")
    sign_in(client, customer)
    review = await _review(client, customer)
    await change_plan(db, "traveller-20", prices={"USD": "45.00"})
    again = await _pay_now(client, customer, review)
    assert again.status_code == 409
    assert "价格在您查看后已变动：以下是新的总额。现在付款吗？" in again.text
    assert "47.06" in _total(again)
    assert await _orders(db, customer) == []


async def test_a_package_changed_at_the_same_price_is_shown_again(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    review = await _review(client, customer)
    await change_plan(db, "traveller-20", validity_days=20)
    again = await _pay_now(client, customer, review)
    assert again.status_code == 409
    assert "This package changed since you looked: check it again. Pay now?" in again.text
    assert _total(again) == "$21.19"
    assert await _orders(db, customer) == []
    assert (await _pay_now(client, customer, again)).status_code == 303
    [order] = await _orders(db, customer)
    assert order.plan_snapshot["validity_days"] == 20


async def test_an_expired_review_is_shown_again_before_paying(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    review = await _review(client, customer)
    clock.freeze(utcnow() + timedelta(minutes=settings.quote_ttl_minutes, seconds=1))
    again = await _pay_now(client, customer, review)
    assert again.status_code == 409
    assert "The price you were shown is no longer held: here is the total now." in again.text
    assert _total(again) == "$21.19"
    assert await _orders(db, customer) == []
    assert (await _pay_now(client, customer, again)).status_code == 303
    assert len(await _orders(db, customer)) == 1


async def test_pay_now_without_the_reviews_quote_orders_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The portal always holds the payer to the review's total: a form without its quote, with
    one tampered with, or with another package than the quote's is shown the review again."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    review = await _review(client, customer)
    quote = review_form(review.text)["quote"]
    for override in ({"quote": ""}, {"quote": quote[:-4] + "0000"},
                     {"plan": "starter-10"}):
        r = await _pay_now(client, customer, review, **override)
        assert r.status_code == 422, (override, r.text[:2000])
        assert "Check the total before paying: here it is now. Pay now?" in r.text
        # The review of what the form asked for, with a quote of its own and a new key.
        assert review_form(r.text)["idempotency_key"] != review_form(review.text)["idempotency_key"]
    assert await _orders(db, customer) == []
