"""Prices list the customer's likely currency first.

What was wrong (the walkthrough): every package read "68,00 CNY · 10,00 US$" for everyone — the
catalog's order (alphabetical) — on the home page and the top-up page. Now: the signed-in
customer's lines' currencies first (the top-up page), then the currency of the reader's region
(their number format's: Simplified Chinese → CNY, `es-MX` → MXN), then the operator's
`SIMCHARGE_DEFAULT_CURRENCY`; the others after, in the catalog's order."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import httpx
import pytest
from httpx import ASGITransport
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.money import format_money
from simcharge.kit.units import locale_of
from simcharge.lines.models import Line
from simcharge.portal.web import likely_currencies, likely_first
from tests.factories import create_line
from tests.portal.helpers import new_customer, sign_in

pytestmark = pytest.mark.usefixtures("shop")

STARTER = {"USD": 1000, "CNY": 6800}  # the demo catalog's starter-10


def _home_prices(html: str) -> str:
    card = html.split('aria-labelledby="plan-starter-10"', 1)[1].split("</article>")[0]
    return card.split('<p class="price">', 1)[1].split("</p>", 1)[0]


def _topup_prices(html: str) -> str:
    found = re.search(r'value="starter-10"[^>]*>\s*<span><strong>[^<]+</strong> — (.*?)<br>', html)
    assert found, html
    return found.group(1)


def _shown(language: str, *currencies: str, locale: str | None = None) -> str:
    loc = locale or locale_of(language)
    return " · ".join(format_money(STARTER[c], c, loc) for c in currencies)


@pytest.mark.parametrize(
    ("language", "order"),
    [
        ("en", ("USD", "CNY")),  # the US: dollars
        ("zh-Hans", ("CNY", "USD")),  # China: yuan
        ("zh-Hant", ("USD", "CNY")),  # Taiwan dollars are not sold: the operator's
        ("fil", ("USD", "CNY")),  # pesos are not sold: the operator's
        ("es", ("USD", "CNY")),  # euros are not sold: the operator's
    ],
)
async def test_the_home_page_lists_the_readers_likely_currency_first(
    client: httpx.AsyncClient, language: str, order: tuple[str, ...]
) -> None:
    client.cookies.set("sc_lang", language)
    r = await client.get("/")
    assert r.status_code == 200
    assert _home_prices(r.text) == _shown(language, *order)


async def test_the_operators_default_currency_comes_before_the_others(
    db: Database, settings: Settings
) -> None:
    app = create_app(settings.model_copy(update={"default_currency": "CNY"}), db=db,
                     run_worker=False)
    async with httpx.AsyncClient(transport=ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        client.cookies.set("sc_lang", "es")
        r = await client.get("/")
        assert _home_prices(r.text) == _shown("es", "CNY", "USD")
        client.cookies.set("sc_lang", "en")  # the reader's region still comes first
        r = await client.get("/")
        assert _home_prices(r.text) == _shown("en", "USD", "CNY")


async def test_the_top_up_page_lists_the_lines_currency_first(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """An English-speaking customer whose line is in yuan: yuan first, although their region's
    (and the operator's) currency is the dollar."""
    customer = await new_customer(db, settings, language="en", with_units=False)

    async def yuan_line(s: AsyncSession) -> None:
        await create_line(s, account_id=customer.account_id, currency="CNY")

    sign_in(client, customer)
    r = await client.get("/account/topup")
    assert r.status_code == 200
    # Its one line is in dollars (the helper's): dollars first.
    assert _topup_prices(r.text) == _shown("en", "USD", "CNY")
    await db.run(lambda s: _only_yuan(s, customer.account_id))
    await db.run(yuan_line)  # now its one line is in yuan
    r = await client.get("/account/topup")
    assert _topup_prices(r.text) == _shown("en", "CNY", "USD")


async def _only_yuan(s: AsyncSession, account_id: uuid.UUID) -> None:
    """The customer's dollar line leaves the account (detached, as a line given away is)."""
    await s.execute(update(Line).where(Line.account_id == account_id).values(account_id=None))


async def test_the_top_up_page_of_a_chinese_reader_with_a_dollar_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="zh-Hans", with_units=False)
    sign_in(client, customer)
    r = await client.get("/account/topup")
    assert _topup_prices(r.text) == _shown("zh-Hans", "USD", "CNY")


async def test_the_top_up_page_shown_again_with_an_error_keeps_the_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The review refused (an unknown package): the form again, prices in the same order."""
    customer = await new_customer(db, settings, language="zh-Hans", with_units=False)
    sign_in(client, customer)
    r = await client.get("/account/topup/review", params={
        "line": str(customer.line.id), "plan": "no-such-plan", "method": "sandbox"})
    assert r.status_code in (404, 422) and "starter-10" in r.text
    assert _topup_prices(r.text) == _shown("zh-Hans", "USD", "CNY")


def test_likely_currencies() -> None:
    assert likely_currencies("en", None, "USD") == ("USD",)
    assert likely_currencies("zh-Hans", None, "USD") == ("CNY", "USD")
    assert likely_currencies("zh-Hant", None, "USD") == ("TWD", "USD")
    assert likely_currencies("es", None, "USD") == ("EUR", "USD")
    assert likely_currencies("es", "es_MX", "USD") == ("MXN", "USD")
    assert likely_currencies("fil", None, "PHP") == ("PHP",)


def test_likely_first_keeps_the_others_in_their_order() -> None:
    prices = [SimpleNamespace(currency=c) for c in ("CNY", "EUR", "PHP", "USD")]
    assert [p.currency for p in likely_first(prices, ["USD", "PHP", "USD"])] == [
        "USD", "PHP", "CNY", "EUR"]
    assert [p.currency for p in likely_first(prices, [])] == ["CNY", "EUR", "PHP", "USD"]
    assert [p.currency for p in likely_first(prices, ["GBP", "EUR"])] == [
        "EUR", "CNY", "PHP", "USD"]
