"""Sixteenth round (a new operator's review): the currency a top-up is paid in. A method paid in
the first of its `currencies` the plan has a price in, whatever the line's wallet currency: with
a sandbox method taking ["USD", "PHP"] and a plan priced in both, a PHP line was quoted and
charged USD 10.00 — the PHP price could never be used. Now the line's own currency is chosen when
the method takes it and the plan has a price in it; else the method's first currency with a
price, as before."""

from __future__ import annotations

import base64
import json
import re
import tomllib
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from simcharge.catalog.service import DEMO_CATALOG, load_catalog, validate_catalog
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.money import format_money
from simcharge.lines.models import Line
from simcharge.orders.models import Order
from simcharge.orders.service import payment_currency
from tests.auth.helpers import problem
from tests.orders.helpers import (
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    transfers_of,
)
from tests.portal.helpers import new_customer, sign_in


async def _catalog(db: Database, *, sandbox: list[str], starter: dict[str, str]) -> None:
    """The demo catalog with the sandbox method taking `sandbox` and starter-10 priced also in
    `starter` (`{"PHP": "560.00"}`)."""
    data = tomllib.loads(DEMO_CATALOG.read_text(encoding="utf-8"))
    [method] = [m for m in data["payment_methods"] if m["code"] == "sandbox"]
    method["currencies"] = sandbox
    [plan] = [p for p in data["plans"] if p["code"] == "starter-10"]
    plan["prices"] = {**plan["prices"], **starter}
    catalog = validate_catalog(data, source="test")
    await db.run(lambda s: load_catalog(s, catalog))


async def _quote(client: httpx.AsyncClient, auth: dict[str, str], line_id: Any,
                 method: str = "sandbox", plan: str = "starter-10") -> httpx.Response:
    return await client.post("/api/v1/quotes", headers=auth,
                             json={"plan": plan, "method": method, "line_id": str(line_id)})


def _facts(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    facts: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return facts


@pytest.mark.parametrize(
    ("method", "prices", "line", "chosen"),
    [
        (["USD", "PHP"], {"USD": 1000, "PHP": 56000}, "PHP", "PHP"),  # the defect
        (["USD", "PHP"], {"USD": 1000, "PHP": 56000}, "USD", "USD"),
        (["CNY", "USD"], {"USD": 1000, "CNY": 6800}, "USD", "USD"),  # the line's, not first
        (["USD", "PHP"], {"USD": 1000}, "PHP", "USD"),  # no PHP price: the method's first
        (["CNY", "USD"], {"USD": 1000, "CNY": 6800}, "JPY", "CNY"),  # not taken: first priced
        (["PHP", "USD"], {"USD": 1000}, "PHP", "USD"),  # taken, not priced: first priced
        (["PHP"], {"USD": 1000}, "PHP", None),  # nothing the method takes is priced
    ],
)
def test_the_payment_currency(method: list[str], prices: dict[str, int], line: str,
                              chosen: str | None) -> None:
    assert payment_currency(method, prices, line) == chosen


async def test_a_peso_line_pays_the_peso_price(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The reported case, end to end: quoted in PHP, placed with that quote, paid at the sandbox
    in PHP, credited; a dollar line at the same method still pays the dollar price."""
    await _catalog(db, sandbox=["USD", "PHP"], starter={"PHP": "560.00"})
    peso, dollar = (await new_payer(db, settings, currency="PHP"), await new_payer(db, settings))
    r = await _quote(client, peso.auth, peso.line.id)
    assert r.status_code == 200, r.text
    q = r.json()
    assert (q["price"], q["total"]) == (
        {"currency": "PHP", "minor": 56000, "value": "560.00"},
        {"currency": "PHP", "minor": 56000, "value": "560.00"},
    )
    assert _facts(q["quote"])["c"] == "PHP"
    r = await client.post("/api/v1/orders", headers={**peso.auth, **idem()}, json={
        "plan": "starter-10", "method": "sandbox", "line_id": str(peso.line.id),
        "quote": q["quote"]})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["total"] == {"currency": "PHP", "minor": 56000, "value": "560.00"}
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=peso.auth)
    assert r.json()["state"] == "fulfilled", r.text
    row = await order_row(db, order["id"])
    assert (row.currency, row.total, row.paid_currency or row.currency) == ("PHP", 56000, "PHP")
    money = [t for t in await transfers_of(db, f"order:{order['id']}") if t.unit == "PHP"]
    assert money and sum(t.amount for t in money) == 56000
    await assert_ledger_balanced(db)

    r = await _quote(client, dollar.auth, dollar.line.id)
    assert r.json()["total"] == {"currency": "USD", "minor": 1000, "value": "10.00"}


async def test_the_demo_sandbox_quotes_a_yuan_line_in_yuan(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The demo catalog's sandbox takes ["USD", "CNY"]: a yuan line pays 68.00 CNY for
    starter-10 (it paid 10.00 USD); a gift to it is priced in yuan too (the line's currency,
    not the payer's); a line in a currency the method does not take pays the method's first."""
    yuan, dollar = (await new_payer(db, settings, currency="CNY"), await new_payer(db, settings))
    r = await _quote(client, yuan.auth, yuan.line.id)
    assert r.json()["total"] == {"currency": "CNY", "minor": 6800, "value": "68.00"}
    r = await client.post("/api/v1/quotes", headers=dollar.auth, json={
        "plan": "starter-10", "method": "sandbox", "msisdn": yuan.line.msisdn})
    assert r.status_code == 200, r.text
    assert (r.json()["total"]["currency"], r.json()["gift"]) == ("CNY", True)
    # PayPal takes USD only: a yuan line pays dollars there, as before.
    r = await _quote(client, yuan.auth, yuan.line.id, method="paypal")
    assert r.json()["price"] == {"currency": "USD", "minor": 1000, "value": "10.00"}
    peso = await new_payer(db, settings, currency="PHP")
    r = await _quote(client, peso.auth, peso.line.id)
    assert r.json()["total"]["currency"] == "USD"
    # A package with wallet credit in dollars only is still refused for a yuan wallet.
    r = await _quote(client, yuan.auth, yuan.line.id, plan="explorer-50")
    assert r.status_code == 404 and problem(r)["type"].endswith("/plan-unavailable")
    assert problem(r)["field"] == "plan"


async def test_the_review_page_shows_the_lines_currency(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The portal's review (one service behind it and the API) shows price, fee and total in
    pesos, and signs pesos into the form's quote; "Pay now" places the order in pesos."""
    await _catalog(db, sandbox=["USD", "PHP"], starter={"PHP": "560.00"})
    customer = await new_customer(db, settings, language="en")
    await db.run(lambda s: s.execute(
        update(Line).where(Line.id == customer.line.id).values(currency="PHP")))
    sign_in(client, customer)
    r = await client.get("/account/topup/review", params={
        "line": str(customer.line.id), "plan": "starter-10", "method": "sandbox"})
    assert r.status_code == 200, r.text
    peso = format_money(56000, "PHP", "en")
    for field in ("price", "total"):
        found = re.search(rf'data-testid="{field}">([^<]+)<', r.text)
        assert found and found.group(1) == peso, (field, found and found.group(1))
    token = re.search(r'name="quote" value="([^"]+)"', r.text)
    assert token and _facts(token.group(1))["c"] == "PHP"
    form = {name: value for name, value in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', r.text)}
    r = await client.post("/account/topup", data=form)
    assert r.status_code in (302, 303), r.text
    async with db.read() as s:
        placed = (await s.execute(select(Order).where(
            Order.line_id == customer.line.id))).scalars().all()
    assert [(o.currency, o.total) for o in placed] == [("PHP", 56000)]
