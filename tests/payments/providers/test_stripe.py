"""Stripe: Checkout Sessions through the SDK over our httpx client, refunds, signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
import stripe
from pydantic import SecretStr

from simcharge.kit.iso4217 import MINOR_UNITS
from simcharge.kit.money import LossyConversionError
from simcharge.payments.providers.base import (
    CheckoutRequest,
    NotificationRejected,
    PaymentFlow,
    PaymentState,
    ProviderError,
    RefundRequest,
    RefundState,
)
from simcharge.payments.providers.stripe import (
    StripeConfig,
    StripeProvider,
    amount_step,
    from_stripe_amount,
    success_url,
    to_stripe_amount,
)

from .conftest import NOW

API = "https://stripe.test"
SECRET_KEY = "sk_test_51Abc"
WEBHOOK_SECRET = "whsec_test_secret_0123456789"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


@pytest.fixture
def provider(http: httpx.AsyncClient, frozen_now: datetime) -> StripeProvider:
    config = StripeConfig(SecretStr(SECRET_KEY), SecretStr(WEBHOOK_SECRET), api_base=API)
    return StripeProvider(config, http)


def checkout_request(**changes: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "reference": "ord_123456",
        "amount": 1999,
        "currency": "USD",
        "description": "eSIM 5 GB, 30 days",
        "return_url": "https://shop.test/orders/ord_123456/return",
        "cancel_url": "https://shop.test/orders/ord_123456/cancel",
        "notify_url": "https://shop.test/webhooks/stripe",
        "expires_at": NOW + timedelta(hours=2),
        "language": "zh-Hant",
        "flow": PaymentFlow.redirect,
        "idempotency_key": "checkout-ord_123456-1",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def session(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "cs_test_a1B2c3",
        "object": "checkout.session",
        "amount_subtotal": 1999,
        "amount_total": 1999,
        "cancel_url": "https://shop.test/orders/ord_123456/cancel",
        "client_reference_id": "ord_123456",
        "client_secret": None,
        "created": int(NOW.timestamp()),
        "currency": "usd",
        "expires_at": int((NOW + timedelta(hours=2)).timestamp()),
        "livemode": False,
        "metadata": {"reference": "ord_123456"},
        "mode": "payment",
        "payment_intent": None,
        "payment_status": "unpaid",
        "status": "open",
        "url": "https://checkout.stripe.com/c/pay/cs_test_a1B2c3",
    }
    body.update(changes)
    return body


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode(), keep_blank_values=True)


# --- amounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "stripe_amount"),
    [(1999, "USD", 1999), (500, "JPY", 500), (1230, "KWD", 1230), (500, "ISK", 50000), (7, "EUR", 7)],
)
def test_amounts_convert_exactly_both_ways(minor: int, currency: str, stripe_amount: int) -> None:
    assert to_stripe_amount(minor, currency) == stripe_amount
    assert from_stripe_amount(stripe_amount, currency) == minor


def test_the_declared_amount_rule_is_what_the_conversion_takes() -> None:
    """`amount_step` (what the catalog and the quotes read) and `to_stripe_amount` agree."""
    for currency in MINOR_UNITS:
        step = amount_step(currency)
        for multiple in (step, 7 * step):
            assert from_stripe_amount(to_stripe_amount(multiple, currency), currency) == multiple
        if step > 1:
            with pytest.raises(LossyConversionError):
                to_stripe_amount(step + 1, currency)


def test_success_url_gets_the_session_placeholder_unencoded() -> None:
    assert success_url("https://a.test/r") == "https://a.test/r?session_id={CHECKOUT_SESSION_ID}"
    assert (
        success_url("https://a.test/r?x=1#top")
        == "https://a.test/r?x=1&session_id={CHECKOUT_SESSION_ID}#top"
    )
    kept = "https://a.test/r?s={CHECKOUT_SESSION_ID}"
    assert success_url(kept) == kept


# --- checkout ----------------------------------------------------------------------------------


async def test_create_checkout_sends_a_payment_session_with_our_keys(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/checkout/sessions").respond(
        200, json=session(client_secret="cs_test_secret_should_not_leak")
    )

    checkout = await provider.create_checkout(checkout_request())

    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert request.headers["Idempotency-Key"] == "checkout-ord_123456-1"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    sent = form(request)
    assert sent["mode"] == ["payment"]
    assert sent["line_items[0][quantity]"] == ["1"]
    assert sent["line_items[0][price_data][currency]"] == ["usd"]
    assert sent["line_items[0][price_data][unit_amount]"] == ["1999"]
    assert sent["line_items[0][price_data][product_data][name]"] == ["eSIM 5 GB, 30 days"]
    assert sent["client_reference_id"] == ["ord_123456"]
    assert sent["metadata[reference]"] == ["ord_123456"]
    assert sent["payment_intent_data[metadata][reference]"] == ["ord_123456"]
    assert sent["success_url"] == [
        "https://shop.test/orders/ord_123456/return?session_id={CHECKOUT_SESSION_ID}"
    ]
    assert sent["cancel_url"] == ["https://shop.test/orders/ord_123456/cancel"]
    assert sent["expires_at"] == [str(int((NOW + timedelta(hours=2)).timestamp()))]
    assert sent["locale"] == ["zh-TW"]

    assert checkout.provider_ref == "cs_test_a1B2c3"
    assert checkout.redirect_url == "https://checkout.stripe.com/c/pay/cs_test_a1B2c3"
    assert checkout.qr_payload is None
    assert checkout.expires_at == NOW + timedelta(hours=2)
    assert "client_secret" not in checkout.raw
    assert "cs_test_secret_should_not_leak" not in json.dumps(checkout.raw)


@pytest.mark.parametrize(
    ("wanted", "sent"),
    [
        (timedelta(minutes=10), timedelta(minutes=35)),
        (timedelta(days=3), timedelta(hours=24) - timedelta(minutes=5)),
    ],
)
async def test_expiry_is_kept_within_what_stripe_accepts(
    provider: StripeProvider, mock: respx.MockRouter, wanted: timedelta, sent: timedelta
) -> None:
    route = mock.post("/v1/checkout/sessions").respond(200, json=session())
    await provider.create_checkout(checkout_request(expires_at=NOW + wanted))
    assert form(route.calls.last.request)["expires_at"] == [str(int((NOW + sent).timestamp()))]


async def test_a_retry_soon_after_placing_sends_the_same_expiry(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    """Stripe refuses an idempotency key reused with other parameters: the expiry's bounds
    count from when the order was placed, so a retry minutes later sends the same request —
    until Stripe would no longer take that expiry, then from the clock."""
    from simcharge.kit.clock import clock

    route = mock.post("/v1/checkout/sessions").respond(200, json=session())
    wanted = NOW + timedelta(minutes=10)  # sooner than Stripe allows: bounded
    sent = []
    for later in (timedelta(0), timedelta(seconds=5), timedelta(minutes=3)):
        clock.freeze(NOW + later)
        await provider.create_checkout(checkout_request(expires_at=wanted, placed_at=NOW))
        sent.append(form(route.calls.last.request)["expires_at"])
    assert sent == [[str(int((NOW + timedelta(minutes=35)).timestamp()))]] * 3
    clock.freeze(NOW + timedelta(minutes=10))  # too late for that one: from the clock
    await provider.create_checkout(checkout_request(expires_at=wanted, placed_at=NOW))
    assert form(route.calls.last.request)["expires_at"] == [
        str(int((NOW + timedelta(minutes=45)).timestamp()))]


async def test_a_zero_decimal_currency_is_not_multiplied(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/checkout/sessions").respond(200, json=session(currency="jpy"))
    await provider.create_checkout(checkout_request(amount=500, currency="JPY", language="es"))
    sent = form(route.calls.last.request)
    assert sent["line_items[0][price_data][unit_amount]"] == ["500"]
    assert sent["line_items[0][price_data][currency]"] == ["jpy"]
    assert sent["locale"] == ["es"]


async def test_an_amount_stripe_cannot_take_is_refused_before_any_call(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/checkout/sessions").respond(200, json=session())
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(amount=1234, currency="KWD"))
    assert caught.value.code == "amount_not_representable"
    assert caught.value.transient is False
    assert not route.called


async def test_a_qr_flow_is_not_offered(provider: StripeProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(flow=PaymentFlow.qr))
    assert caught.value.code == "unsupported_flow"


# --- errors ------------------------------------------------------------------------------------


def stripe_error(kind: str, code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message, "param": "id"}}


@pytest.mark.parametrize(
    ("status", "body", "code", "transient"),
    [
        (400, stripe_error("invalid_request_error", "parameter_invalid_integer", "Bad amount"),
         "parameter_invalid_integer", False),
        (401, stripe_error("invalid_request_error", "api_key_invalid", "Invalid API Key"),
         "api_key_invalid", False),
        (429, stripe_error("invalid_request_error", "rate_limit", "Too many requests"),
         "rate_limit", True),
        (500, stripe_error("api_error", "", "Something went wrong"), "api_error", True),
        (409, stripe_error("idempotency_error", "", "Concurrent request"), "idempotency_error", True),
    ],
)
async def test_http_errors_become_provider_errors(
    provider: StripeProvider,
    mock: respx.MockRouter,
    status: int,
    body: dict[str, Any],
    code: str,
    transient: bool,
) -> None:
    mock.post("/v1/checkout/sessions").respond(status, json=body)
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request())
    assert caught.value.provider_name == "stripe"
    assert caught.value.code == code
    assert caught.value.transient is transient
    assert caught.value.status == status
    assert SECRET_KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "code"),
    [(httpx.ConnectTimeout("slow"), "timeout"), (httpx.ConnectError("no"), "network_error")],
)
async def test_network_failures_are_transient(
    provider: StripeProvider, mock: respx.MockRouter, error: Exception, code: str
) -> None:
    mock.get("/v1/checkout/sessions/cs_1").mock(side_effect=error)
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", "cs_1")
    assert (caught.value.code, caught.value.transient, caught.value.status) == (code, True, None)


async def test_the_sdk_retries_through_our_client_when_asked(
    http: httpx.AsyncClient, mock: respx.MockRouter, frozen_now: datetime
) -> None:
    config = StripeConfig(
        SecretStr(SECRET_KEY), SecretStr(WEBHOOK_SECRET), api_base=API, max_network_retries=1
    )
    provider = StripeProvider(config, http)
    failure = httpx.Response(500, json=stripe_error("api_error", "", "x"))
    route = mock.post("/v1/checkout/sessions").mock(
        side_effect=[failure, httpx.Response(200, json=session())]
    )
    checkout = await provider.create_checkout(checkout_request())
    assert checkout.provider_ref == "cs_test_a1B2c3"
    keys = {call.request.headers["Idempotency-Key"] for call in route.calls}
    assert route.call_count == 2 and keys == {"checkout-ord_123456-1"}


# --- query -------------------------------------------------------------------------------------


def paid_session(**changes: Any) -> dict[str, Any]:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 1999,
        "amount_refunded": 0,
        "refunded": False,
        "created": int(NOW.timestamp()) - 60,
        "currency": "usd",
    }
    charge.update(changes.pop("charge", {}))
    intent = {"id": "pi_3Qx", "object": "payment_intent", "status": "succeeded", "latest_charge": charge}
    intent.update(changes.pop("intent", {}))
    return session(status="complete", payment_status="paid", payment_intent=intent, **changes)


async def test_query_reads_the_session_with_its_payment(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    route = mock.get("/v1/checkout/sessions/cs_test_a1B2c3").respond(200, json=paid_session())

    status = await provider.query("ord_123456", "cs_test_a1B2c3")

    request = route.calls.last.request
    assert request.url.params["expand[0]"] == "payment_intent"
    assert request.url.params["expand[1]"] == "payment_intent.latest_charge"
    assert "Idempotency-Key" not in request.headers
    assert status.state is PaymentState.succeeded
    assert status.reference == "ord_123456"
    assert status.provider_ref == "cs_test_a1B2c3"
    assert status.payment_id == "pi_3Qx"
    assert (status.amount, status.currency) == (1999, "USD")
    assert status.paid_at == NOW - timedelta(seconds=60)


@pytest.mark.parametrize(
    ("body", "state"),
    [
        (session(), PaymentState.pending),
        (session(status="expired", url=None), PaymentState.expired),
        (session(status="complete", payment_status="unpaid",
                 payment_intent={"id": "pi_1", "status": "processing"}), PaymentState.pending),
        (session(status="complete", payment_status="unpaid",
                 payment_intent={"id": "pi_1", "status": "requires_payment_method"}), PaymentState.failed),
        (paid_session(charge={"amount_refunded": 500}), PaymentState.partially_refunded),
        (paid_session(charge={"amount_refunded": 1999, "refunded": True}), PaymentState.refunded),
    ],
)
async def test_query_maps_every_session_state(
    provider: StripeProvider, mock: respx.MockRouter, body: dict[str, Any], state: PaymentState
) -> None:
    mock.get("/v1/checkout/sessions/cs_test_a1B2c3").respond(200, json=body)
    status = await provider.query("ord_123456", "cs_test_a1B2c3")
    assert status.state is state
    if state is PaymentState.partially_refunded:
        assert status.refunded_amount == 500


async def test_query_without_a_session_is_pending_and_calls_nothing(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    status = await provider.query("ord_123456", None)
    assert status.state is PaymentState.pending and status.provider_ref is None
    assert not mock.calls


async def test_query_of_an_unknown_session_is_a_permanent_error(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    mock.get("/v1/checkout/sessions/cs_nope").respond(
        404, json=stripe_error("invalid_request_error", "resource_missing", "No such checkout.session")
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", "cs_nope")
    assert (caught.value.code, caught.value.transient) == ("resource_missing", False)


# --- close -------------------------------------------------------------------------------------


async def test_close_expires_the_session(provider: StripeProvider, mock: respx.MockRouter) -> None:
    route = mock.post("/v1/checkout/sessions/cs_test_a1B2c3/expire").respond(
        200, json=session(status="expired")
    )
    await provider.close("ord_123456", "cs_test_a1B2c3")
    assert route.called


async def test_closing_an_expired_session_is_fine(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    mock.post("/v1/checkout/sessions/cs_test_a1B2c3/expire").respond(
        400, json=stripe_error("invalid_request_error", "", "Only open sessions can be expired")
    )
    mock.get("/v1/checkout/sessions/cs_test_a1B2c3").respond(200, json=session(status="expired"))
    await provider.close("ord_123456", "cs_test_a1B2c3")


async def test_closing_a_paid_session_says_already_paid(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    mock.post("/v1/checkout/sessions/cs_test_a1B2c3/expire").respond(
        400, json=stripe_error("invalid_request_error", "", "Only open sessions can be expired")
    )
    mock.get("/v1/checkout/sessions/cs_test_a1B2c3").respond(200, json=paid_session())
    with pytest.raises(ProviderError) as caught:
        await provider.close("ord_123456", "cs_test_a1B2c3")
    assert (caught.value.code, caught.value.transient) == ("already_paid", False)


async def test_closing_without_a_session_does_nothing(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    await provider.close("ord_123456", None)
    assert not mock.calls


# --- refunds -----------------------------------------------------------------------------------


def refund_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "re_1",
        "object": "refund",
        "amount": 500,
        "currency": "usd",
        "payment_intent": "pi_3Qx",
        "status": "succeeded",
        "metadata": {"reference": "ord_123456", "refund_id": "rf_ord_123456_1"},
    }
    body.update(changes)
    return body


async def test_refund_sends_the_payment_intent_amount_and_our_key(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/refunds").respond(200, json=refund_body(status="pending"))
    result = await provider.refund(
        RefundRequest("ord_123456", "pi_3Qx", "rf_ord_123456_1", 500, 1999, "USD", "not activated")
    )
    request = route.calls.last.request
    assert request.headers["Idempotency-Key"] == "rf_ord_123456_1"
    sent = form(request)
    assert sent["payment_intent"] == ["pi_3Qx"]
    assert sent["amount"] == ["500"]
    assert sent["metadata[refund_id]"] == ["rf_ord_123456_1"]
    assert sent["metadata[reason]"] == ["not activated"]
    assert "reason" not in sent
    assert result.state is RefundState.pending
    assert (result.refund_id, result.provider_refund_id) == ("rf_ord_123456_1", "re_1")
    assert (result.amount, result.currency, result.payment_id) == (500, "USD", "pi_3Qx")


async def test_a_refund_reason_stripe_knows_is_sent_as_such(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/refunds").respond(200, json=refund_body())
    result = await provider.refund(
        RefundRequest("ord_123456", "pi_3Qx", "rf_2", 500, 1999, "USD", "requested_by_customer")
    )
    assert form(route.calls.last.request)["reason"] == ["requested_by_customer"]
    assert result.state is RefundState.succeeded


async def test_query_refund_reads_the_refund_by_stripes_id_and_creates_nothing(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    create = mock.post("/v1/refunds").respond(200, json=refund_body())
    read = mock.get("/v1/refunds/re_1").respond(200, json=refund_body(status="pending"))
    request = RefundRequest("ord_123456", "pi_3Qx", "rf_ord_123456_1", 500, 1999, "USD", None)
    result = await provider.query_refund(request, "re_1")
    assert read.call_count == 1 and not create.called
    assert result.state is RefundState.pending
    assert (result.refund_id, result.provider_refund_id) == ("rf_ord_123456_1", "re_1")


async def test_query_refund_without_stripes_id_finds_ours_among_the_payments_refunds(
    provider: StripeProvider, mock: respx.MockRouter
) -> None:
    listed = {
        "object": "list",
        "url": "/v1/refunds",
        "has_more": False,
        "data": [
            refund_body(id="re_2", metadata={"refund_id": "rf_dashboard"}),
            refund_body(),
        ],
    }
    route = mock.get("/v1/refunds").respond(200, json=listed)
    request = RefundRequest("ord_123456", "pi_3Qx", "rf_ord_123456_1", 500, 1999, "USD", None)
    result = await provider.query_refund(request, None)
    assert route.calls.last.request.url.params["payment_intent"] == "pi_3Qx"
    assert (result.refund_id, result.provider_refund_id) == ("rf_ord_123456_1", "re_1")
    assert result.state is RefundState.succeeded
    other = RefundRequest("ord_123456", "pi_3Qx", "rf_unknown", 500, 1999, "USD", None)
    with pytest.raises(ProviderError) as caught:
        await provider.query_refund(other, None)
    assert (caught.value.code, caught.value.transient) == ("refund_not_found", False)


# --- webhooks ----------------------------------------------------------------------------------


def event(event_type: str, obj: dict[str, Any], **changes: Any) -> bytes:
    body = {
        "id": "evt_1Qx",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(NOW.timestamp()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    body.update(changes)
    return json.dumps(body).encode()


def sign(body: bytes, *, at: datetime = NOW, secret: str = WEBHOOK_SECRET) -> str:
    """What Stripe sends: HMAC-SHA256 of "{t}.{body}", computed here independently."""
    t = int(at.timestamp())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"


async def test_a_signed_completed_session_is_a_success(provider: StripeProvider) -> None:
    body = event(
        "checkout.session.completed",
        session(status="complete", payment_status="paid", payment_intent="pi_3Qx"),
    )
    notification = await provider.parse_notification(
        {"stripe-signature": sign(body)}, body, now=NOW
    )
    assert (notification.provider, notification.event_id) == ("stripe", "evt_1Qx")
    assert notification.event_type == "checkout.session.completed"
    assert notification.status is not None
    assert notification.status.state is PaymentState.succeeded
    assert notification.status.payment_id == "pi_3Qx"
    assert notification.status.reference == "ord_123456"
    assert notification.status.paid_at == NOW
    assert notification.refund is None


def test_our_verification_agrees_with_the_sdk() -> None:
    body = event("checkout.session.completed", session())
    header = sign(body, at=datetime.now(UTC))
    stripe.WebhookSignature.verify_header(body, header, WEBHOOK_SECRET, tolerance=300)
    sdk_header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), WEBHOOK_SECRET, timestamp=int(NOW.timestamp())
    )
    assert sdk_header == sign(body).rsplit(",v0=", 1)[0]


@pytest.mark.parametrize(
    ("event_type", "obj", "state"),
    [
        ("checkout.session.completed", session(status="complete", payment_status="unpaid"),
         PaymentState.pending),
        ("checkout.session.async_payment_succeeded",
         session(status="complete", payment_status="paid"), PaymentState.succeeded),
        ("checkout.session.async_payment_failed",
         session(status="complete", payment_status="unpaid"), PaymentState.failed),
        ("checkout.session.expired", session(status="expired"), PaymentState.expired),
    ],
)
async def test_session_events_map_to_states(
    provider: StripeProvider, event_type: str, obj: dict[str, Any], state: PaymentState
) -> None:
    body = event(event_type, obj)
    notification = await provider.parse_notification({"Stripe-Signature": sign(body)}, body, now=NOW)
    assert notification.status is not None and notification.status.state is state


async def test_a_refunded_charge_reports_the_payment_intent(provider: StripeProvider) -> None:
    charge = {
        "id": "ch_1", "object": "charge", "amount": 1999, "amount_captured": 1999,
        "amount_refunded": 500, "refunded": False, "paid": True, "currency": "usd",
        "payment_intent": "pi_3Qx", "metadata": {}, "status": "succeeded",
    }
    body = event("charge.refunded", charge)
    notification = await provider.parse_notification({"Stripe-Signature": sign(body)}, body, now=NOW)
    assert notification.status is not None
    assert notification.status.state is PaymentState.partially_refunded
    assert notification.status.payment_id == "pi_3Qx"
    assert notification.status.refunded_amount == 500


async def test_a_refund_event_reports_our_refund_id(provider: StripeProvider) -> None:
    body = event("refund.updated", refund_body(status="failed"))
    notification = await provider.parse_notification({"Stripe-Signature": sign(body)}, body, now=NOW)
    assert notification.status is None
    assert notification.refund is not None
    assert notification.refund.refund_id == "rf_ord_123456_1"
    assert notification.refund.state is RefundState.failed
    assert notification.refund.reference == "ord_123456"


async def test_other_events_are_verified_but_carry_nothing(provider: StripeProvider) -> None:
    body = event("customer.created", {"id": "cus_1", "object": "customer"})
    notification = await provider.parse_notification({"Stripe-Signature": sign(body)}, body, now=NOW)
    assert notification.status is None and notification.refund is None
    assert notification.event_type == "customer.created"


async def test_any_of_several_v1_signatures_may_match(provider: StripeProvider) -> None:
    body = event("checkout.session.expired", session(status="expired"))
    old = sign(body, secret="whsec_old").split(",")[1]
    header = f"{sign(body).split(',')[0]},{old},{sign(body).split(',')[1]}"
    notification = await provider.parse_notification({"Stripe-Signature": header}, body, now=NOW)
    assert notification.event_id == "evt_1Qx"


@pytest.mark.parametrize("skew", [timedelta(seconds=299), timedelta(seconds=-299)])
async def test_timestamps_within_the_tolerance_pass(provider: StripeProvider, skew: timedelta) -> None:
    body = event("checkout.session.expired", session(status="expired"))
    header = sign(body, at=NOW + skew)
    assert (await provider.parse_notification({"Stripe-Signature": header}, body, now=NOW)).event_id


@pytest.mark.parametrize("skew", [timedelta(seconds=301), timedelta(seconds=-301), timedelta(days=2)])
async def test_stale_or_future_timestamps_are_rejected(provider: StripeProvider, skew: timedelta) -> None:
    body = event("checkout.session.completed", session())
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification({"Stripe-Signature": sign(body, at=NOW - skew)}, body, now=NOW)
    assert caught.value.reason == "stale"


async def test_a_tampered_body_is_rejected(provider: StripeProvider) -> None:
    body = event("checkout.session.completed", session(amount_total=1999))
    header = sign(body)
    tampered = body.replace(b'"amount_total": 1999', b'"amount_total": 19')
    assert tampered != body
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification({"Stripe-Signature": header}, tampered, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_a_body_signed_with_another_secret_is_rejected(provider: StripeProvider) -> None:
    body = event("checkout.session.completed", session())
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(
            {"Stripe-Signature": sign(body, secret="whsec_attacker")}, body, now=NOW
        )
    assert caught.value.reason == "bad-signature"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Stripe-Signature": "garbage"},
        {"Stripe-Signature": "t=1,v0=abc"},
        {"Stripe-Signature": "t=x,v1=ab"},
    ],
)
async def test_missing_or_unreadable_signature_headers_are_malformed(
    provider: StripeProvider, headers: dict[str, str]
) -> None:
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, b"{}", now=NOW)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"id": "evt_1"}'])
async def test_signed_bodies_that_are_not_events_are_malformed(
    provider: StripeProvider, body: bytes
) -> None:
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification({"Stripe-Signature": sign(body)}, body, now=NOW)
    assert caught.value.reason == "malformed"


def test_replies(provider: StripeProvider) -> None:
    assert provider.reply(True).status_code == 200
    assert provider.reply(False).status_code == 400
