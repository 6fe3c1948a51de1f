"""Help: questions to customer service, and "paid but not credited" from an order's page."""

from __future__ import annotations

import re

import httpx
import pytest

from simcharge.config import Settings
from simcharge.db import Database
from tests.portal.helpers import csrf_of, new_customer, post_form, review_form, sign_in

pytestmark = pytest.mark.usefixtures("shop")


async def test_ask_read_the_thread_and_answer(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/help", "/account/help", {"subject": "", "body": ""})
    assert r.status_code == 422 and 'class="alert bad"' in r.text
    r = await post_form(client, "/account/help", "/account/help", {
        "subject": "Roaming in Japan", "body": "Does my data work in Tokyo?",
        "line": str(customer.line.id)})
    assert r.status_code == 303
    page = await client.get(r.headers["location"])
    assert "Does my data work in Tokyo?" in page.text and "With customer service" in page.text
    assert r.headers["location"].endswith("?sent=1")  # "We received your question"
    r = await client.post(r.headers["location"].removesuffix("?sent=1") + "/reply",
                          data={"csrf": csrf_of(page.text), "body": "Also in Osaka?"})
    assert r.status_code == 303
    assert r.headers["location"].endswith("?replied=1")  # "We received your answer"
    answered = await client.get(r.headers["location"])
    assert "Also in Osaka?" in answered.text
    assert 'class="alert good" role="status">We received your answer.' in answered.text
    assert "We received your question." not in answered.text
    assert "Roaming in Japan" in (await client.get("/account/help")).text


async def test_paid_but_not_credited_opens_one_ticket_with_the_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    review = await client.get("/account/topup/review", params={
        "line": str(customer.line.id), "plan": "starter-10", "method": "sandbox"})
    r = await client.post("/account/topup", data={
        **review_form(review.text),
        "line": str(customer.line.id), "msisdn": "", "plan": "starter-10", "method": "sandbox"})
    assert r.status_code == 303 and "/sandbox/pay/" in r.headers["location"]
    orders = await client.get("/account/records")
    order_id = re.search(r'href="/account/orders/([0-9a-f-]{36})"', orders.text)
    assert order_id
    order_page = f"/account/orders/{order_id.group(1)}"
    r = await post_form(client, order_page, order_page + "/help", {})
    assert r.status_code == 303 and r.headers["location"].startswith("/account/help/")
    ticket = await client.get(r.headers["location"])
    assert "is not credited" in ticket.text and order_page in ticket.text
    again = await post_form(client, order_page, order_page + "/help", {})
    assert again.headers["location"] == r.headers["location"]
    # Asked again in another language (the subject would be Spanish): the same ticket.
    assert (await client.get("/language/es", params={"next": order_page})).status_code == 303
    again = await post_form(client, order_page, order_page + "/help", {})
    assert again.status_code == 303 and again.headers["location"] == r.headers["location"]
    listed = (await client.get("/account/help")).text
    assert listed.count('href="/account/help/') == 1


async def test_a_refused_answer_gets_no_confirmation_and_sends_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/help", "/account/help", {
        "subject": "Roaming", "body": "Does my data work abroad?"})
    ticket = r.headers["location"].removesuffix("?sent=1")
    r = await post_form(client, ticket, ticket + "/reply", {"body": "   "})
    assert r.status_code == 422 and 'class="alert bad"' in r.text
    assert "We received your answer." not in r.text
    plain = await client.get(ticket)
    assert "We received" not in plain.text and plain.text.count('class="card"><p class="small') == 1
    # Someone else's ticket: not found, and no confirmation either.
    other = await new_customer(db, settings)
    sign_in(client, other)
    r = await post_form(client, "/account/help", "/account/help", {"body": "x"})
    r = await client.post(ticket + "/reply", data={"csrf": csrf_of(r.text), "body": "Mine?"})
    assert r.status_code == 404 and "We received your answer." not in r.text
