"""Every page renders, in every language, with the security headers and no inline script or
style; the home page shows each package's price in every currency; the review page shows the
exact price, fee and total of each way to pay."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.service import DEMO_CATALOG, read_catalog_file
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import LANGUAGES
from simcharge.kit.money import format_money, to_minor
from simcharge.kit.units import locale_of
from simcharge.tickets import service as tickets
from tests.portal.helpers import new_customer, portal_order, sign_in

pytestmark = pytest.mark.usefixtures("shop")

PUBLIC = ["/", "/register", "/login", "/forgot", "/reset?channel=sms", "/verify?sent=1", "/unlock",
          "/unlock?locked=1"]
_INLINE = [
    (re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<style", re.I), "a <style> element"),
    (re.compile(r"\sstyle\s*=", re.I), "a style attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an event handler attribute"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
    (re.compile(r"""\ssrc=["']https?://|<link[^>]*\shref=["']https?://""", re.I),
     "an asset from another site"),
]


def assert_nothing_inline(path: str, html: str) -> None:
    """The CSP allows no inline script or style: none is written either."""
    for pattern, what in _INLINE:
        found = pattern.search(html)
        assert found is None, f"{path}: {what}: {html[max(0, found.start() - 80):found.end() + 80]}"


async def private_pages(client: httpx.AsyncClient, db: Database, settings: Settings) -> list[str]:
    """Every signed-in page of a customer with a line, a ticket, an order and a friend."""
    customer = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)

    async def ask(s: AsyncSession) -> uuid.UUID:
        ticket, _ = await tickets.open_ticket(
            s, customer.account_id, subject="Roaming", body="Tokyo?", order_id=None,
            line_id=customer.line.id, idempotency_key=None, now=utcnow())
        return ticket.id

    ticket_id = await db.run(ask)
    sign_in(client, customer)
    order_id, _ = await portal_order(client, customer.line.id)
    line = customer.line.id
    return [
        "/account", "/account/topup", "/account/records", "/account/security", "/account/help",
        f"/account/help/{ticket_id}", "/account/lines/add",
        "/account/lines/add?sent=1",
        f"/account/topup/review?line={line}&plan=traveller-20&method=paypal",
        "/account/topup/review?" + urlencode({"line": "other", "msisdn": friend.line.msisdn,
                                              "plan": "starter-10", "method": "sandbox"}),
        f"/account/orders/{order_id}", f"/account/lines/{line}/transfer",
        f"/account/lines/{line}/transfer/review?"
        + urlencode({"to": friend.line.msisdn, "what": "monetary", "amount": "2"}),
        "/verify",
    ]


@pytest.mark.parametrize("language", LANGUAGES)
async def test_every_page_renders_in_every_language(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    client.cookies.set("sc_lang", language)
    for path in PUBLIC:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:2000])
        assert f'<html lang="{language}">' in r.text
        assert "Content-Security-Policy" in r.headers
        assert_nothing_inline(path, r.text)
    pages = await private_pages(client, db, settings)
    for path in pages:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:2000])
        assert f'<html lang="{language}">' in r.text, path
        assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
        assert_nothing_inline(path, r.text)
    # The error page, as a signed-in customer meets it.
    r = await client.get(f"/account/orders/{uuid.uuid4()}")
    assert r.status_code == 404 and f'<html lang="{language}">' in r.text
    assert_nothing_inline("error page", r.text)


async def test_the_home_page_shows_each_packages_price_in_every_currency(
    client: httpx.AsyncClient,
) -> None:
    catalog = read_catalog_file(DEMO_CATALOG)
    for language in LANGUAGES:
        client.cookies.set("sc_lang", language)
        html = (await client.get("/")).text
        for plan in catalog.plans:
            if not plan.active:
                continue
            card = html.split(f'aria-labelledby="plan-{plan.code}"', 1)[1].split("</article>")[0]
            price = card.split('<p class="price">', 1)[1].split("</p>", 1)[0]
            for currency, amount in plan.prices.items():
                shown = format_money(to_minor(Decimal(amount), currency), currency,
                                     locale_of(language))
                assert shown in price, (language, plan.code, shown, price)
            assert price.count(" · ") == len(plan.prices) - 1


# Price, fee and total of traveller-20 (USD 20.00, CNY 135.00) by each way to pay, from the
# demo catalog: PayPal takes 3.49 % (69.8 → 70 cents, half up) + 0.49.
REVIEWS = [
    ("card", "en", "$20.00", "$0.00", "$20.00"),
    ("paypal", "en", "$20.00", "$1.19", "$21.19"),
    ("paypal", "es", "20,00\xa0US$", "1,19\xa0US$", "21,19\xa0US$"),
    ("alipay", "zh-Hans", "¥135.00", "¥0.00", "¥135.00"),
    ("wechatpay", "zh-Hant", "CN¥135.00", "CN¥0.00", "CN¥135.00"),
    ("sandbox", "fil", "$20.00", "$0.00", "$20.00"),
]


@pytest.mark.parametrize(("method", "language", "price", "fee", "total"), REVIEWS)
async def test_the_review_shows_the_exact_price_fee_and_total(
    client: httpx.AsyncClient, db: Database, settings: Settings,
    method: str, language: str, price: str, fee: str, total: str,
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    client.cookies.set("sc_lang", language)
    r = await client.get("/account/topup/review", params={
        "line": str(customer.line.id), "plan": "traveller-20", "method": method})
    assert r.status_code == 200, r.text
    shown = {k: re.search(rf'data-testid="{k}">([^<]+)<', r.text) for k in
             ("price", "fee", "total")}
    assert {k: m.group(1) if m else None for k, m in shown.items()} == {
        "price": price, "fee": fee, "total": total}
    # The same numbers as the API's quote (one service behind both).
    api = await client.post("/api/v1/quotes", headers={"Authorization": f"Bearer {customer.token}"},
                            json={"plan": "traveller-20", "method": method,
                                  "line_id": str(customer.line.id)})
    assert api.status_code == 200, api.text
    q = api.json()
    loc = locale_of(language)
    assert [format_money(q[k]["minor"], q[k]["currency"], loc) for k in ("price", "fee", "total")] \
        == [price, fee, total]
    assert f"Pay {total} now" in r.text or total in r.text.split('type="submit"', 2)[-1]
