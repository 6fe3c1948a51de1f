"""What the catalog refuses beyond the shape of its fields: fees and limits below zero, amounts
too large to be money (or to be computed with at all), buckets no ledger amount holds — each
named by entry and field; and the quote's own guard against a fee no payment can carry."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select, update

from simcharge.catalog.models import PaymentMethod
from simcharge.catalog.schemas import BUCKET_MAX, MIB, MONEY_BOUND
from simcharge.catalog.service import FeeUnusable, fee_for, parse_catalog
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger.service import MAX_AMOUNT
from simcharge.orders.models import Order
from tests.catalog.test_catalog import MINIMAL, names, problems
from tests.factories import load_demo_catalog
from tests.orders.helpers import idem, new_payer

METHOD = 'currencies = ["USD"]'
PLAN = "validity_days = 30"

WITH_TARIFF = (
    MINIMAL
    + f"""
[[zones]]
code = "home"
countries = ["US"]
names = {names("Home")}

[[tariffs]]
service = "voice"
zone = "home"
currency = "USD"
price = "0.10"
per = "minute"
"""
)


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        # fees and limits: never below zero
        (METHOD, METHOD + '\nfee_fixed = { USD = "-9.00" }',
         "payment_methods[0] (card): fee_fixed.USD: must be at least zero"),
        (METHOD, METHOD + '\nlimits = { USD = { min = "-5.00", max = "-1.00" } }',
         "payment_methods[0] (card): limits.USD.min: Input should be greater than 0"),
        (METHOD, METHOD + '\nlimits = { USD = { min = "-5.00", max = "-1.00" } }',
         "payment_methods[0] (card): limits.USD.max: Input should be greater than 0"),
        (METHOD, METHOD + '\nlimits = { USD = { max = "0" } }',
         "limits.USD.max: Input should be greater than 0"),
        (METHOD, METHOD + '\nlimits = { USD = { min = "9.00", max = "5.00" } }',
         "payment_methods[0] (card): limits.USD: min is above max"),
        # amounts: at most MONEY_BOUND minor units, whatever their notation
        ('USD = "10.00"', 'USD = "100000000000000000000"',
         "plans[0] (p10): prices.USD: at most 10000000000.00 USD"),
        ('USD = "10.00"', 'USD = "10000000000.01"', "prices.USD: at most 10000000000.00 USD"),
        ('USD = "10.00"', 'USD = "1e999999999"', "plans[0] (p10): prices.USD: at most"),
        ('USD = "10.00"', 'USD = "1e-999999999"',
         "plans[0] (p10): prices.USD: 1E-999999999 has more decimals than USD allows (2)"),
        (PLAN, PLAN + '\nwallet_credit = { USD = "1e999999999" }',
         "plans[0] (p10): wallet_credit.USD: at most"),
        (METHOD, METHOD + '\nfee_fixed = { USD = "1e999999999" }',
         "payment_methods[0] (card): fee_fixed.USD: at most"),
        (METHOD, METHOD + '\nlimits = { USD = { max = "1e999999999" } }',
         "payment_methods[0] (card): limits.USD.max: at most"),
        # buckets: what one ledger amount holds, and then some sense
        (PLAN, PLAN + "\nbuckets = [{ gigabytes = 1000000000000 }]",
         f"plans[0] (p10): buckets[0].gigabytes: Input should be less than or equal to "
         f"{BUCKET_MAX['gigabytes']}"),
        (PLAN, PLAN + f"\nbuckets = [{{ megabytes = {BUCKET_MAX['megabytes'] + 1} }}]",
         "plans[0] (p10): buckets[0].megabytes: Input should be less than or equal to"),
        (PLAN, PLAN + f"\nbuckets = [{{ minutes = {BUCKET_MAX['minutes'] + 1} }}]",
         "plans[0] (p10): buckets[0].minutes: Input should be less than or equal to"),
        (PLAN, PLAN + f"\nbuckets = [{{ sms = {BUCKET_MAX['sms'] + 1} }}]",
         "plans[0] (p10): buckets[0].sms: Input should be less than or equal to"),
        # a number of thousands of digits is no TOML simcharge reads
        (PLAN, "validity_days = " + "9" * 5000, "not valid TOML"),
    ],
)
def test_fees_limits_amounts_and_buckets_are_bounded(replace: str, by: str, expected: str) -> None:
    assert replace in MINIMAL
    found = problems(MINIMAL.replace(replace, by, 1))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("field", "value"),
    [("price", "100000000000000000000"), ("price", "1e999999999"), ("minimum", "1e999999999")],
)
def test_a_tariff_s_amounts_are_bounded(field: str, value: str) -> None:
    text = WITH_TARIFF.replace('per = "minute"', f'per = "minute"\n{field} = "{value}"')
    if field == "price":
        text = WITH_TARIFF.replace('price = "0.10"', f'price = "{value}"')
    found = problems(text)
    assert any(f"tariffs[0]: {field}: at most 10000000000.00 USD" in p for p in found), found


def test_the_largest_amounts_and_buckets_still_fit() -> None:
    """At the bounds: accepted, and what they come to fits a ledger amount."""
    largest = MINIMAL.replace('USD = "10.00"', 'USD = "10000000000.00"').replace(
        PLAN,
        PLAN + '\nwallet_credit = { USD = "10000000000.00" }\nbuckets = ['
        + ", ".join(f"{{ {unit} = {most} }}" for unit, most in BUCKET_MAX.items()) + "]",
    ).replace(METHOD, METHOD + '\nfee_fixed = { USD = "10000000000.00" }\n'
              'limits = { USD = { min = "0.01", max = "10000000000.00" } }')
    catalog = parse_catalog(largest, source="catalog.toml")
    [plan] = catalog.plans
    grants = [b.as_grant()["amount"] for b in plan.buckets]
    assert max(grants) == BUCKET_MAX["gigabytes"] * 1024 * MIB == BUCKET_MAX["megabytes"] * MIB
    # a line may buy the largest data bucket tens of thousands of times over
    assert max(grants) * 50_000 < MAX_AMOUNT
    assert MONEY_BOUND * 3 < MAX_AMOUNT  # price + fixed fee + a percentage of up to 100 %


def test_a_fee_no_payment_can_carry_is_refused_when_quoting() -> None:
    method = PaymentMethod(
        code="odd", provider="sandbox", currencies=["USD"], fee_percent_bp=0,
        fee_fixed={"USD": -900},
    )
    with pytest.raises(FeeUnusable) as info:
        fee_for(method, 1000, "USD")  # a negative fee
    assert info.value.field == "method" and info.value.status == 422
    method.fee_fixed = {"USD": -1500}
    with pytest.raises(FeeUnusable):
        fee_for(method, 1000, "USD")  # a total below zero
    method.fee_fixed = {"USD": 0}
    assert fee_for(method, 1000, "USD") == 0


async def test_a_stored_negative_fee_gives_a_problem_not_an_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The catalog refuses a negative fee; a row holding one all the same (changed in the
    database) makes the method unusable for quotes and orders, with a problem, never a 500."""
    await db.run(load_demo_catalog)
    await db.run(lambda s: s.execute(
        update(PaymentMethod).where(PaymentMethod.code == "sandbox")
        .values(fee_fixed={"USD": -1500})))  # fmt: skip
    payer = await new_payer(db, settings)
    body = {"plan": "starter-10", "method": "sandbox", "line_id": str(payer.line.id)}
    for r in (
        await client.post("/api/v1/quotes", json=body, headers=payer.auth),
        await client.post("/api/v1/orders", json=body, headers={**payer.auth, **idem()}),
    ):
        assert r.status_code == 422, r.text
        assert r.json()["type"] == "/problems/payment-method-unavailable"
        assert r.json()["field"] == "method"
    async with db.read() as s:
        assert (await s.execute(select(Order).where(Order.account_id == payer.account_id))
                ).first() is None  # fmt: skip
