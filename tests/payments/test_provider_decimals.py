"""The payment providers' amount encodings for currencies with 0 or 3 decimals, both ways: what
we send at checkout and refund, and what we read back from webhooks and status queries.

What was wrong (Stripe, docs.stripe.com/currencies, "Special cases"):
- UGX was encoded as a zero-decimal currency: Stripe's special case says "UGX transitioned to a
  zero-decimal currency, but backwards compatibility requires you to represent it as a
  two-decimal value … to charge 5 UGX, provide an amount value of 500". A 5 000 UGX top-up was
  sent as `5000` (50 shillings charged), and a webhook's `amount_total` of `500000` was read as
  500 000 UGX (a hundred times the order: a mismatch, or a refund of that much). Now UGX is sent
  and read as two decimals ending in 00.
- HUF and TWD were taken with any two decimals: Stripe charges them, but pays them out in whole
  units only ("evenly divisible by 100") and rounds the fraction in the balance, so a 12.50 HUF
  charge could never be reconciled or paid out in full. Now Stripe takes whole HUF and TWD only,
  like ISK, and the catalog refuses a price such as 3999.50 HUF for a Stripe method when it is
  loaded (never at checkout).

PayPal (developer.paypal.com, "Currency codes": HUF, JPY, TWD "do not support decimals"), Alipay
and WeChat Pay (CNY only, in yuan strings and fen) already held; they are pinned here for JPY and
a three-decimal currency. respx answers only at each provider's HTTP boundary, in the shapes
they document (Checkout Sessions, Refunds and Events; Orders v2 and captures).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from simcharge.catalog.service import parse_catalog
from simcharge.catalog.steps import payable_step, takes_currency
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.kit.money import LossyConversionError
from simcharge.payments.providers import alipay, wechatpay
from simcharge.payments.providers.base import PaymentState, ProviderError, RefundRequest
from simcharge.payments.providers.paypal import PayPalConfig, PayPalProvider
from simcharge.payments.providers.stripe import (
    StripeConfig,
    StripeProvider,
    amount_step,
    from_stripe_amount,
    to_stripe_amount,
)
from tests.catalog.test_catalog import MINIMAL, problems
from tests.factories import load_demo_catalog
from tests.orders.helpers import assert_ledger_balanced, new_payer, order_row, place
from tests.payments import test_provider_doc_edges as edges
from tests.payments.providers import test_paypal as pp
from tests.payments.providers import test_stripe as st
from tests.payments.providers.conftest import NOW


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    clock.freeze(NOW)
    async with httpx.AsyncClient() as client:
        yield client


# --- Stripe ---------------------------------------------------------------------------------


@pytest.fixture
def stripe_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=st.API, assert_all_called=False) as router:
        yield router


@pytest.fixture
def stripe(http: httpx.AsyncClient) -> StripeProvider:
    config = StripeConfig(SecretStr(st.SECRET_KEY), SecretStr(st.WEBHOOK_SECRET), api_base=st.API)
    return StripeProvider(config, http)


@pytest.mark.parametrize(
    ("minor", "currency", "sent"),
    [(5000, "UGX", 500000), (1000, "JPY", 1000), (50000, "KRW", 50000), (1230, "KWD", 1230),
     (3750, "BHD", 3750), (399900, "HUF", 399900), (50000, "TWD", 50000), (5, "ISK", 500)],
)
async def test_stripe_checkout_sends_its_own_minor_units(
    stripe: StripeProvider, stripe_mock: respx.MockRouter, minor: int, currency: str, sent: int
) -> None:
    route = stripe_mock.post("/v1/checkout/sessions").respond(
        200, json=st.session(currency=currency.lower(), amount_total=sent, amount_subtotal=sent))
    await stripe.create_checkout(st.checkout_request(amount=minor, currency=currency))
    form = st.form(route.calls.last.request)
    assert form["line_items[0][price_data][unit_amount]"] == [str(sent)]
    assert form["line_items[0][price_data][currency]"] == [currency.lower()]


@pytest.mark.parametrize(
    ("minor", "currency"), [(399950, "HUF"), (50050, "TWD"), (1234, "KWD"), (3755, "BHD")]
)
async def test_stripe_refuses_what_it_cannot_take_before_any_call(
    stripe: StripeProvider, stripe_mock: respx.MockRouter, minor: int, currency: str
) -> None:
    route = stripe_mock.post("/v1/checkout/sessions").respond(200, json=st.session())
    with pytest.raises(ProviderError) as caught:
        await stripe.create_checkout(st.checkout_request(amount=minor, currency=currency))
    assert (caught.value.code, caught.value.transient) == ("amount_not_representable", False)
    assert not route.called


@pytest.mark.parametrize(
    ("total", "currency", "minor"),
    [(500000, "ugx", 5000), (1000, "jpy", 1000), (1230, "kwd", 1230), (399900, "huf", 399900)],
)
async def test_a_stripe_webhook_amount_is_read_in_our_minor_units(
    stripe: StripeProvider, total: int, currency: str, minor: int
) -> None:
    body = st.event("checkout.session.completed", st.session(
        status="complete", payment_status="paid", payment_intent="pi_3Qx", currency=currency,
        amount_total=total, amount_subtotal=total))
    notification = await stripe.parse_notification(
        {"stripe-signature": st.sign(body)}, body, now=NOW)
    assert notification.status is not None
    assert notification.status.state is PaymentState.succeeded
    assert (notification.status.amount, notification.status.currency) == (
        minor, currency.upper())


async def test_a_stripe_query_reads_yen_and_their_refund_unscaled(
    stripe: StripeProvider, stripe_mock: respx.MockRouter
) -> None:
    stripe_mock.get("/v1/checkout/sessions/cs_test_a1B2c3").respond(200, json=st.paid_session(
        currency="jpy", amount_total=1500, amount_subtotal=1500,
        charge={"amount": 1500, "amount_refunded": 500, "currency": "jpy"}))
    status = await stripe.query("ord_123456", "cs_test_a1B2c3")
    assert status.state is PaymentState.partially_refunded
    assert (status.amount, status.currency, status.refunded_amount) == (1500, "JPY", 500)


@pytest.mark.parametrize(
    ("minor", "currency", "sent"), [(500, "JPY", 500), (200000, "UGX", 20000000), (120, "BHD", 120)]
)
async def test_a_stripe_refund_is_sent_and_read_back_in_the_right_units(
    stripe: StripeProvider, stripe_mock: respx.MockRouter, minor: int, currency: str, sent: int
) -> None:
    route = stripe_mock.post("/v1/refunds").respond(
        200, json=st.refund_body(amount=sent, currency=currency.lower()))
    result = await stripe.refund(RefundRequest(
        "ord_123456", "pi_3Qx", "rf_ord_123456_1", minor, minor * 2, currency, "not activated"))
    assert st.form(route.calls.last.request)["amount"] == [str(sent)]
    assert (result.amount, result.currency) == (minor, currency)


def test_stripe_s_amount_rule_for_its_special_cases() -> None:
    """What the catalog and the quotes read (`amount_step`), in ISO minor units."""
    assert [amount_step(c) for c in ("UGX", "ISK", "HUF", "TWD", "JPY", "KWD", "USD")] == [
        1, 1, 100, 100, 1, 10, 1]
    assert to_stripe_amount(7, "UGX") == 700
    assert from_stripe_amount(700, "UGX") == 7
    with pytest.raises(LossyConversionError):
        from_stripe_amount(750, "UGX")  # a fraction of a shilling: never credited as such


def test_the_catalog_refuses_decimal_forints_for_stripe_when_loaded() -> None:
    text = MINIMAL.replace('currencies = ["USD"]', 'currencies = ["USD", "HUF"]').replace(
        'prices = { USD = "10.00" }', 'prices = { USD = "10.00", HUF = "3999.50" }')
    found = problems(text)
    assert any("plans[0] (p10): prices.HUF: stripe takes HUF in steps of 1.00 only" in p
               for p in found), found
    whole = text.replace('"3999.50"', '"3999"')
    assert parse_catalog(whole, source="catalog.toml").plans[0].prices["HUF"] == 3999


# --- PayPal ---------------------------------------------------------------------------------


@pytest.fixture
def paypal_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=pp.API, assert_all_called=False) as router:
        router.post("/v1/oauth2/token").respond(200, json={
            "scope": "https://uri.paypal.com/services/payments/payment",
            "access_token": "A21AAH-token-1", "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T", "expires_in": 32400,
            "nonce": "2026-11-26T10:00:00Z1jWNWxMi"})
        yield router


@pytest.fixture
def paypal(http: httpx.AsyncClient) -> PayPalProvider:
    config = PayPalConfig(pp.CLIENT_ID, SecretStr(pp.CLIENT_SECRET), pp.WEBHOOK_ID,
                          api_base=pp.API)
    return PayPalProvider(config, http)


def _yen(value: str) -> dict[str, Any]:
    return {"currency_code": "JPY", "value": value}


async def test_paypal_checkout_sends_whole_yen_and_forints(
    paypal: PayPalProvider, paypal_mock: respx.MockRouter
) -> None:
    route = paypal_mock.post("/v2/checkout/orders").respond(
        200, json={"id": pp.ORDER_ID, "status": "PAYER_ACTION_REQUIRED",
                   "links": pp.order("CREATED")["links"]})
    await paypal.create_checkout(pp.checkout_request(amount=1500, currency="JPY"))
    assert json.loads(route.calls.last.request.content)["purchase_units"][0]["amount"] == _yen(
        "1500")
    await paypal.create_checkout(pp.checkout_request(amount=399900, currency="HUF"))
    assert json.loads(route.calls.last.request.content)["purchase_units"][0]["amount"] == {
        "currency_code": "HUF", "value": "3999"}


async def test_paypal_refuses_decimal_forints_before_any_call(
    paypal: PayPalProvider, paypal_mock: respx.MockRouter
) -> None:
    route = paypal_mock.post("/v2/checkout/orders").respond(200, json={})
    with pytest.raises(ProviderError) as caught:
        await paypal.create_checkout(pp.checkout_request(amount=399950, currency="HUF"))
    assert caught.value.transient is False
    assert not route.called


async def test_a_paypal_capture_in_yen_is_read_unscaled(
    paypal: PayPalProvider, paypal_mock: respx.MockRouter
) -> None:
    body = pp.order("COMPLETED", pp.capture(amount=_yen("1500")))
    body["purchase_units"][0]["amount"] = _yen("1500")
    paypal_mock.get(f"/v2/checkout/orders/{pp.ORDER_ID}").respond(200, json=body)
    status = await paypal.query("ord_123456", pp.ORDER_ID)
    assert status.state is PaymentState.succeeded
    assert (status.amount, status.currency) == (1500, "JPY")


async def test_a_paypal_refund_in_yen_is_sent_and_read_unscaled(
    paypal: PayPalProvider, paypal_mock: respx.MockRouter
) -> None:
    route = paypal_mock.post(f"/v2/payments/captures/{pp.CAPTURE_ID}/refund").respond(
        201, json={"id": "1JU08902781691411", "status": "COMPLETED", "amount": _yen("500"),
                   "custom_id": "rf_ord_123456_1"})
    result = await paypal.refund(RefundRequest(
        "ord_123456", pp.CAPTURE_ID, "rf_ord_123456_1", 500, 1500, "JPY", "not activated"))
    assert json.loads(route.calls.last.request.content)["amount"] == _yen("500")
    assert (result.amount, result.currency) == (500, "JPY")


def test_paypal_takes_no_three_decimal_currency() -> None:
    """PayPal lists none (BHD, KWD…): the catalog refuses them for a PayPal method."""
    assert takes_currency("paypal", "JPY") and takes_currency("paypal", "HUF")
    assert not takes_currency("paypal", "BHD") and not takes_currency("paypal", "KWD")
    assert takes_currency("stripe", "BHD")
    assert payable_step("paypal", "JPY") == 1 and payable_step("paypal", "TWD") == 100


# --- Alipay and WeChat Pay: CNY only --------------------------------------------------------


def test_alipay_and_wechat_pay_take_cny_only() -> None:
    assert alipay.yuan(1999, "CNY") == "19.99"
    with pytest.raises(LossyConversionError):
        alipay.yuan(1000, "JPY")
    for provider in ("alipay", "wechatpay"):
        assert takes_currency(provider, "CNY")
        assert not takes_currency(provider, "JPY") and not takes_currency(provider, "BHD")
    assert wechatpay.CURRENCY == alipay.CURRENCY == "CNY"
    text = MINIMAL.replace('provider = "stripe"', 'provider = "alipay"')
    found = problems(text.replace('currencies = ["USD"]', 'currencies = ["JPY"]'))
    assert any("currencies: alipay takes CNY only, not JPY" in p for p in found), found


def test_an_alipay_yuan_amount_is_read_in_fen() -> None:
    # `_fen` reads Alipay's total_amount ("19.99" yuan) and refund_fee: fen, never yuan × 100.
    assert alipay._fen("19.99") == 1999
    assert alipay._fen("1000") == 100000
    assert alipay._fen("0.001") is None


# --- an amount that cannot be read: no amount, never a 500 ----------------------------------


@pytest.mark.parametrize(
    ("total", "currency"), [(100, "xyz"), (750, "ugx"), (10**30, "jpy"), (-5, "jpy")]
)
async def test_a_stripe_amount_that_cannot_be_read_is_no_amount(
    stripe: StripeProvider, total: int, currency: str
) -> None:
    body = st.event("checkout.session.completed", st.session(
        status="complete", payment_status="paid", payment_intent="pi_3Qx", currency=currency,
        amount_total=total, amount_subtotal=total))
    notification = await stripe.parse_notification(
        {"stripe-signature": st.sign(body)}, body, now=NOW)
    assert notification.status is not None
    assert notification.status.state is PaymentState.succeeded
    assert notification.status.amount is None


async def test_a_paypal_amount_that_cannot_be_read_is_no_amount(
    paypal: PayPalProvider, paypal_mock: respx.MockRouter
) -> None:
    body = pp.order("COMPLETED", pp.capture(amount=_yen("1500.5")))
    paypal_mock.get(f"/v2/checkout/orders/{pp.ORDER_ID}").respond(200, json=body)
    status = await paypal.query("ord_123456", pp.ORDER_ID)
    assert (status.state, status.amount, status.currency) == (PaymentState.succeeded, None, "JPY")
    body = pp.order("COMPLETED", pp.capture(amount={"currency_code": "ABC", "value": "15"}))
    paypal_mock.get(f"/v2/checkout/orders/{pp.ORDER_ID}").respond(200, json=body)
    status = await paypal.query("ord_123456", pp.ORDER_ID)
    assert (status.amount, status.currency) == (None, "ABC")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Stripe configured (the end-to-end test below; the others use no settings)."""
    return settings.model_copy(update={
        "sandbox_stands_in": False,
        "stripe_secret_key": SecretStr("sk_test_" + secrets.token_hex(12)),
        "stripe_webhook_secret": SecretStr(edges.STRIPE_WEBHOOK_SECRET),
    })


@pytest.mark.parametrize(("currency", "total"), [("xyz", None), ("usd", 10**30)])
async def test_a_signed_payment_whose_amount_cannot_be_read_is_flagged_not_a_500(
    client: httpx.AsyncClient, db: Database, settings: Settings, currency: str,
    total: int | None,
) -> None:
    """A signed `checkout.session.completed` in a currency ISO 4217 does not list, or for more
    than any amount: `from_stripe_amount` raised out of the webhook (a 500, Stripe retrying for
    days, the payment never recorded), or the amount was stored beyond a BIGINT. Now the payment
    is recorded as taken with no amount known: not credited, flagged for finance (the policy
    for a provider naming no amount)."""
    clock.freeze(utcnow())
    await db.run(load_demo_catalog)

    def create(request: httpx.Request) -> httpx.Response:
        sent = parse_qs(request.content.decode())
        return httpx.Response(200, json=edges._stripe_session(
            sent["client_reference_id"][0],
            int(sent["line_items[0][price_data][unit_amount]"][0]),
            sent["line_items[0][price_data][currency]"][0]))

    with respx.mock(assert_all_called=False) as router:
        router.post(f"{edges.STRIPE_API}/v1/checkout/sessions").mock(side_effect=create)
        payer = await new_payer(db, settings)
        order = await order_row(db, (await place(client, payer, method="card"))["id"])
    paid = edges._stripe_session(
        order.reference, total if total is not None else order.total, currency,
        status="complete", payment_status="paid", payment_intent=f"pi_3{order.reference}")
    body, headers = edges._stripe_event("checkout.session.completed", paid)
    r = await client.post("/api/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    row = await order_row(db, order.id)
    assert row.fulfilled_at is None, "an amount that could not be read was credited"
    assert row.paid_amount is None
    assert row.attention == "amount_mismatch", row.attention_note
    await assert_ledger_balanced(db)
