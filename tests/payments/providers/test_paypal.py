"""PayPal: OAuth token, orders, capture, refunds, and webhooks verified with a test CA."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from simcharge.kit.clock import clock
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
from simcharge.payments.providers.paypal import (
    PayPalConfig,
    PayPalProvider,
    amount_step,
    to_paypal_value,
)
from simcharge.payments.providers.paypal_certs import (
    cert_url_allowed,
    http_certificate_fetcher,
    system_trust_store,
)
from simcharge.payments.providers.signing import paypal_signed_message

from .certs import Authority, intermediate_ca, leaf, pem, root_ca
from .conftest import NOW

API = "https://api-m.sandbox.paypal.com"
CLIENT_ID = "AVdz-client-id"
CLIENT_SECRET = "EL3-client-secret-do-not-leak"
WEBHOOK_ID = "8PT597110X687430LKGECATA"
CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77"
ORDER_ID = "5O190127TN364715T"
CAPTURE_ID = "3C679366HH908993F"


@pytest.fixture(scope="module")
def root() -> Authority:
    return root_ca()


@pytest.fixture(scope="module")
def intermediate(root: Authority) -> Authority:
    return intermediate_ca(root)


@pytest.fixture(scope="module")
def paypal_key() -> rsa.RSAPrivateKey:
    from .conftest import new_rsa_key

    return new_rsa_key()


@pytest.fixture(scope="module")
def good_pem(intermediate: Authority, paypal_key: rsa.RSAPrivateKey) -> bytes:
    return pem(leaf(intermediate, paypal_key), intermediate.cert)


class Fetcher:
    """Serves certificate PEMs by URL and counts the fetches."""

    def __init__(self, pems: dict[str, bytes]) -> None:
        self.pems = pems
        self.fetched: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.pems[url]


@pytest.fixture
def fetcher(good_pem: bytes) -> Fetcher:
    return Fetcher({CERT_URL: good_pem})


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        router.post("/v1/oauth2/token", name="token").respond(
            200,
            json={
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": "A21AAH-token-1",
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": 32400,
                "nonce": "2026-11-26T10:00:00Z1jWNWxMi",
            },
        )
        yield router


@pytest.fixture
def provider(
    http: httpx.AsyncClient, frozen_now: datetime, root: Authority, fetcher: Fetcher
) -> PayPalProvider:
    config = PayPalConfig(
        CLIENT_ID, SecretStr(CLIENT_SECRET), WEBHOOK_ID, api_base=API, trust_store=(root.cert,)
    )
    return PayPalProvider(config, http, cert_fetcher=fetcher)


def checkout_request(**changes: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "reference": "ord_123456",
        "amount": 1999,
        "currency": "USD",
        "description": "eSIM 5 GB, 30 days",
        "return_url": "https://shop.test/orders/ord_123456/return",
        "cancel_url": "https://shop.test/orders/ord_123456/cancel",
        "notify_url": "https://shop.test/webhooks/paypal",
        "expires_at": NOW + timedelta(hours=2),
        "language": "zh-Hans",
        "flow": PaymentFlow.redirect,
        "idempotency_key": "checkout-ord_123456-1",
    }
    fields.update(changes)
    return CheckoutRequest(**fields)


def capture(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": CAPTURE_ID,
        "status": "COMPLETED",
        "amount": {"currency_code": "USD", "value": "19.99"},
        "final_capture": True,
        "custom_id": "ord_123456",
        "invoice_id": "ord_123456",
        "seller_receivable_breakdown": {
            "gross_amount": {"currency_code": "USD", "value": "19.99"},
            "paypal_fee": {"currency_code": "USD", "value": "0.99"},
            "net_amount": {"currency_code": "USD", "value": "19.00"},
        },
        "create_time": "2026-11-26T09:59:00Z",
        "update_time": "2026-11-26T09:59:00Z",
        "links": [
            {"href": f"{API}/v2/payments/captures/{CAPTURE_ID}", "rel": "self", "method": "GET"},
            {"href": f"{API}/v2/checkout/orders/{ORDER_ID}", "rel": "up", "method": "GET"},
        ],
    }
    body.update(changes)
    return body


def order(status: str, *captures: dict[str, Any]) -> dict[str, Any]:
    unit: dict[str, Any] = {
        "reference_id": "ord_123456",
        "custom_id": "ord_123456",
        "invoice_id": "ord_123456",
        "amount": {"currency_code": "USD", "value": "19.99"},
        "payee": {"email_address": "merchant@example.com", "merchant_id": "MERCHANT7X"},
    }
    if captures:
        unit["payments"] = {"captures": list(captures)}
    return {
        "id": ORDER_ID,
        "intent": "CAPTURE",
        "status": status,
        "purchase_units": [unit],
        "links": [
            {"href": f"{API}/v2/checkout/orders/{ORDER_ID}", "rel": "self", "method": "GET"},
            {"href": f"https://www.sandbox.paypal.com/checkoutnow?token={ORDER_ID}",
             "rel": "payer-action", "method": "GET"},
        ],
    }


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


# --- amounts -----------------------------------------------------------------------------------


def test_amounts_are_decimal_strings_without_decimals_where_paypal_wants_none() -> None:
    assert to_paypal_value(1999, "USD") == "19.99"
    assert to_paypal_value(5, "EUR") == "0.05"
    assert to_paypal_value(500, "JPY") == "500"
    assert to_paypal_value(100000, "HUF") == "1000"
    assert to_paypal_value(2500, "TWD") == "25"


def test_the_declared_amount_rule_is_what_the_conversion_takes() -> None:
    """`amount_step` (what the catalog and the quotes read) and `to_paypal_value` agree."""
    for currency in MINOR_UNITS:
        step = amount_step(currency)
        for multiple in (step, 7 * step):
            to_paypal_value(multiple, currency)
        if step > 1:
            with pytest.raises(LossyConversionError):
                to_paypal_value(step + 1, currency)


# --- token -------------------------------------------------------------------------------------


async def test_the_token_is_fetched_with_basic_auth_and_cached(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(200, json=order("CREATED"))
    await provider.query("ord_123456", ORDER_ID)
    await provider.query("ord_123456", ORDER_ID)

    token_call = mock["token"].calls
    assert token_call.call_count == 1
    request = token_call.last.request
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.content == b"grant_type=client_credentials"
    api_call = mock.calls.last.request
    assert api_call.headers["Authorization"] == "Bearer A21AAH-token-1"


async def test_the_token_is_renewed_before_it_expires(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(200, json=order("CREATED"))
    await provider.query("ord_123456", ORDER_ID)
    clock.advance(seconds=32400 - 59)
    await provider.query("ord_123456", ORDER_ID)
    assert mock["token"].call_count == 2


async def test_a_rejected_token_is_renewed_once(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    route = mock.get(f"/v2/checkout/orders/{ORDER_ID}").mock(
        side_effect=[
            httpx.Response(401, json={"error": "invalid_token", "error_description": "expired"}),
            httpx.Response(200, json=order("CREATED")),
        ]
    )
    status = await provider.query("ord_123456", ORDER_ID)
    assert status.state is PaymentState.pending
    assert route.call_count == 2 and mock["token"].call_count == 2


async def test_bad_client_credentials_are_a_permanent_error(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock["token"].respond(
        401, json={"error": "invalid_client", "error_description": "Client Authentication failed"}
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", ORDER_ID)
    assert (caught.value.code, caught.value.transient, caught.value.status) == ("invalid_client", False, 401)
    assert CLIENT_SECRET not in str(caught.value)


# --- orders ------------------------------------------------------------------------------------


async def test_create_checkout_creates_a_capture_order_and_returns_the_approval_link(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    route = mock.post("/v2/checkout/orders").respond(
        200, json={"id": ORDER_ID, "status": "PAYER_ACTION_REQUIRED", "payment_source": {"paypal": {}},
                   "links": order("CREATED")["links"]},
    )

    checkout = await provider.create_checkout(checkout_request())

    request = route.calls.last.request
    assert request.headers["PayPal-Request-Id"] == "checkout-ord_123456-1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer A21AAH-token-1"
    body = sent_json(request)
    assert body["intent"] == "CAPTURE"
    assert body["purchase_units"] == [
        {
            "reference_id": "ord_123456",
            "custom_id": "ord_123456",
            "invoice_id": "ord_123456",
            "description": "eSIM 5 GB, 30 days",
            "amount": {"currency_code": "USD", "value": "19.99"},
        }
    ]
    context = body["payment_source"]["paypal"]["experience_context"]
    assert context["return_url"] == "https://shop.test/orders/ord_123456/return"
    assert context["cancel_url"] == "https://shop.test/orders/ord_123456/cancel"
    assert context["locale"] == "zh-CN"
    assert context["user_action"] == "PAY_NOW"
    assert checkout.provider_ref == ORDER_ID
    assert checkout.redirect_url == f"https://www.sandbox.paypal.com/checkoutnow?token={ORDER_ID}"
    assert checkout.qr_payload is None


async def test_the_older_approve_link_is_used_too(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.post("/v2/checkout/orders").respond(
        201, json={"id": ORDER_ID, "status": "CREATED", "links": [
            {"href": f"https://www.paypal.com/checkoutnow?token={ORDER_ID}", "rel": "approve",
             "method": "GET"}]},
    )
    checkout = await provider.create_checkout(checkout_request(language="fil"))
    assert checkout.redirect_url == f"https://www.paypal.com/checkoutnow?token={ORDER_ID}"


async def test_an_amount_paypal_cannot_take_is_refused_before_any_call(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    route = mock.post("/v2/checkout/orders")
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request(amount=100050, currency="HUF"))
    assert (caught.value.code, caught.value.transient) == ("DECIMALS_NOT_SUPPORTED", False)
    assert not route.called


async def test_a_duplicate_invoice_is_a_permanent_error_with_the_debug_id(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.post("/v2/checkout/orders").respond(
        422,
        json={
            "name": "UNPROCESSABLE_ENTITY",
            "message": "The requested action could not be performed.",
            "debug_id": "c5a2f0c6bba25",
            "details": [{"issue": "DUPLICATE_INVOICE_ID", "description": "Duplicate Invoice ID"}],
        },
    )
    with pytest.raises(ProviderError) as caught:
        await provider.create_checkout(checkout_request())
    assert (caught.value.code, caught.value.transient, caught.value.status) == (
        "DUPLICATE_INVOICE_ID", False, 422,
    )
    assert "c5a2f0c6bba25" in caught.value.message


@pytest.mark.parametrize("status", [500, 503, 429, 409])
async def test_server_errors_rate_limits_and_conflicts_are_transient(
    provider: PayPalProvider, mock: respx.MockRouter, status: int
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(
        status, json={"name": "INTERNAL_SERVER_ERROR", "message": "x", "debug_id": "d1"}
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", ORDER_ID)
    assert caught.value.transient is True and caught.value.status == status


async def test_a_timeout_is_transient(provider: PayPalProvider, mock: respx.MockRouter) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", ORDER_ID)
    assert (caught.value.code, caught.value.transient) == ("timeout", True)


@pytest.mark.parametrize(
    ("body", "state", "capturable"),
    [
        (order("CREATED"), PaymentState.pending, False),
        (order("PAYER_ACTION_REQUIRED"), PaymentState.pending, False),
        (order("APPROVED"), PaymentState.pending, True),
        (order("VOIDED"), PaymentState.cancelled, False),
        (order("COMPLETED", capture(status="PENDING")), PaymentState.pending, False),
        (order("COMPLETED", capture(status="DECLINED")), PaymentState.failed, False),
        (order("COMPLETED", capture(status="PARTIALLY_REFUNDED")), PaymentState.partially_refunded,
         False),
        (order("COMPLETED", capture(status="REFUNDED")), PaymentState.refunded, False),
    ],
)
async def test_query_only_reports_the_order(
    provider: PayPalProvider,
    mock: respx.MockRouter,
    body: dict[str, Any],
    state: PaymentState,
    capturable: bool,
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(200, json=body)
    status = await provider.query("ord_123456", ORDER_ID)
    assert (status.state, status.capturable) == (state, capturable)
    assert not any(call.request.url.path.endswith("/capture") for call in mock.calls)


async def test_a_captured_order_reports_the_capture(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(200, json=order("COMPLETED", capture()))
    status = await provider.query("ord_123456", ORDER_ID)
    assert status.state is PaymentState.succeeded
    assert (status.reference, status.provider_ref, status.payment_id) == (
        "ord_123456", ORDER_ID, CAPTURE_ID,
    )
    assert (status.amount, status.currency, status.merchant) == (1999, "USD", "MERCHANT7X")
    assert status.paid_at == NOW - timedelta(minutes=1)


async def test_an_unknown_order_is_a_permanent_error(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(
        404, json={"name": "RESOURCE_NOT_FOUND", "message": "not found",
                   "details": [{"issue": "INVALID_RESOURCE_ID"}]},
    )
    with pytest.raises(ProviderError) as caught:
        await provider.query("ord_123456", ORDER_ID)
    assert (caught.value.code, caught.value.transient) == ("INVALID_RESOURCE_ID", False)


# --- capture -----------------------------------------------------------------------------------


async def test_capture_takes_the_money_with_our_request_id(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    route = mock.post(f"/v2/checkout/orders/{ORDER_ID}/capture").respond(
        201, json=order("COMPLETED", capture())
    )
    status = await provider.capture(ORDER_ID, "capture-ord_123456")
    request = route.calls.last.request
    assert request.headers["PayPal-Request-Id"] == "capture-ord_123456"
    assert request.headers["Content-Type"] == "application/json"
    assert sent_json(request) == {}
    assert status.state is PaymentState.succeeded and status.payment_id == CAPTURE_ID


async def test_capturing_twice_reports_the_first_capture(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.post(f"/v2/checkout/orders/{ORDER_ID}/capture").respond(
        422, json={"name": "UNPROCESSABLE_ENTITY", "message": "x",
                   "details": [{"issue": "ORDER_ALREADY_CAPTURED"}]},
    )
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(200, json=order("COMPLETED", capture()))
    status = await provider.capture(ORDER_ID, "capture-ord_123456")
    assert status.state is PaymentState.succeeded


async def test_a_declined_instrument_is_a_permanent_capture_error(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.post(f"/v2/checkout/orders/{ORDER_ID}/capture").respond(
        422, json={"name": "UNPROCESSABLE_ENTITY", "message": "x",
                   "details": [{"issue": "INSTRUMENT_DECLINED"}]},
    )
    with pytest.raises(ProviderError) as caught:
        await provider.capture(ORDER_ID, "capture-ord_123456")
    assert (caught.value.code, caught.value.transient) == ("INSTRUMENT_DECLINED", False)


# --- close -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["CREATED", "APPROVED", "VOIDED"])
async def test_closing_an_uncaptured_order_does_nothing_at_paypal(
    provider: PayPalProvider, mock: respx.MockRouter, status: str
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(200, json=order(status))
    await provider.close("ord_123456", ORDER_ID)
    assert all(call.request.method == "GET" for call in mock.calls if "oauth2" not in str(call.request.url))


async def test_closing_a_captured_order_says_already_paid(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(200, json=order("COMPLETED", capture()))
    with pytest.raises(ProviderError) as caught:
        await provider.close("ord_123456", ORDER_ID)
    assert (caught.value.code, caught.value.transient) == ("already_paid", False)


async def test_closing_an_order_paypal_forgot_is_fine(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"/v2/checkout/orders/{ORDER_ID}").respond(404, json={"name": "RESOURCE_NOT_FOUND"})
    await provider.close("ord_123456", ORDER_ID)


# --- refunds -----------------------------------------------------------------------------------


async def test_refund_refunds_the_capture_with_our_request_id(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    route = mock.post(f"/v2/payments/captures/{CAPTURE_ID}/refund").respond(
        201,
        json={
            "id": "1JU08902781691411",
            "status": "COMPLETED",
            "amount": {"currency_code": "USD", "value": "5.00"},
            "custom_id": "rf_ord_123456_1",
            "links": [
                {"href": f"{API}/v2/payments/refunds/1JU08902781691411", "rel": "self"},
                {"href": f"{API}/v2/payments/captures/{CAPTURE_ID}", "rel": "up"},
            ],
        },
    )
    result = await provider.refund(
        RefundRequest("ord_123456", CAPTURE_ID, "rf_ord_123456_1", 500, 1999, "USD", "not activated")
    )
    request = route.calls.last.request
    assert request.headers["PayPal-Request-Id"] == "rf_ord_123456_1"
    assert sent_json(request) == {
        "amount": {"currency_code": "USD", "value": "5.00"},
        "custom_id": "rf_ord_123456_1",
        "note_to_payer": "not activated",
    }
    assert result.state is RefundState.succeeded
    assert (result.refund_id, result.provider_refund_id) == ("rf_ord_123456_1", "1JU08902781691411")
    assert (result.amount, result.currency, result.payment_id) == (500, "USD", CAPTURE_ID)


async def test_query_refund_reads_the_refund_and_refunds_nothing(
    provider: PayPalProvider, mock: respx.MockRouter
) -> None:
    create = mock.post(f"/v2/payments/captures/{CAPTURE_ID}/refund").respond(201, json={})
    read = mock.get("/v2/payments/refunds/1JU08902781691411").respond(
        200,
        json={
            "id": "1JU08902781691411",
            "status": "PENDING",
            "status_details": {"reason": "ECHECK"},
            "amount": {"currency_code": "USD", "value": "5.00"},
            "custom_id": "rf_ord_123456_1",
            "links": [{"href": f"{API}/v2/payments/captures/{CAPTURE_ID}", "rel": "up"}],
        },
    )
    request = RefundRequest("ord_123456", CAPTURE_ID, "rf_ord_123456_1", 500, 1999, "USD", None)
    result = await provider.query_refund(request, "1JU08902781691411")
    assert read.call_count == 1 and not create.called
    assert "PayPal-Request-Id" not in read.calls.last.request.headers
    assert result.state is RefundState.pending
    assert (result.refund_id, result.provider_refund_id) == ("rf_ord_123456_1", "1JU08902781691411")
    with pytest.raises(ProviderError) as caught:  # without PayPal's id there is nothing to read
        await provider.query_refund(request, None)
    assert (caught.value.code, caught.value.transient) == ("refund_id_unknown", False)
    assert not create.called


# --- webhooks ----------------------------------------------------------------------------------


def webhook_event(event_type: str, resource: dict[str, Any], resource_type: str = "capture") -> bytes:
    return json.dumps(
        {
            "id": "WH-58D329510W468432D-8HN650336L201105X",
            "event_version": "1.0",
            "create_time": "2026-11-26T09:59:58.123Z",
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": "Payment completed for $ 19.99 USD",
            "resource": resource,
            "links": [],
        }
    ).encode()


def paypal_headers(
    body: bytes,
    key: rsa.RSAPrivateKey,
    *,
    at: datetime = NOW,
    webhook_id: str = WEBHOOK_ID,
    cert_url: str = CERT_URL,
    algorithm: str = "SHA256withRSA",
) -> dict[str, str]:
    """What PayPal sends, signed here independently of the code under test."""
    transmission_id = "69cd13f0-d67a-11e5-baa3-778b53f4ae55"
    transmission_time = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    crc = binascii.crc32(body) & 0xFFFFFFFF
    message = f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-TIME": transmission_time,
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-AUTH-ALGO": algorithm,
    }


def completed_capture() -> dict[str, Any]:
    return capture(
        supplementary_data={"related_ids": {"order_id": ORDER_ID}},
        payee={"email_address": "merchant@example.com", "merchant_id": "MERCHANT7X"},
    )


async def test_a_signed_capture_completed_event_is_a_success(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey, fetcher: Fetcher
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    notification = await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert notification.event_id == "WH-58D329510W468432D-8HN650336L201105X"
    assert notification.event_type == "PAYMENT.CAPTURE.COMPLETED"
    status = notification.status
    assert status is not None and status.state is PaymentState.succeeded
    assert (status.reference, status.provider_ref, status.payment_id) == (
        "ord_123456", ORDER_ID, CAPTURE_ID,
    )
    assert (status.amount, status.currency, status.merchant) == (1999, "USD", "MERCHANT7X")
    assert fetcher.fetched == [CERT_URL]


async def test_the_certificate_is_fetched_once(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey, fetcher: Fetcher
) -> None:
    for _ in range(3):
        body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
        await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert fetcher.fetched == [CERT_URL]


async def test_an_approved_order_event_asks_for_a_capture(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey
) -> None:
    body = webhook_event("CHECKOUT.ORDER.APPROVED", order("APPROVED"), "checkout-order")
    notification = await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert notification.status is not None
    assert notification.status.state is PaymentState.pending
    assert notification.status.capturable is True
    assert notification.status.provider_ref == ORDER_ID


@pytest.mark.parametrize("event_type", ["PAYMENT.CAPTURE.DENIED", "PAYMENT.CAPTURE.DECLINED"])
async def test_denied_and_declined_captures_are_failures(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey, event_type: str
) -> None:
    body = webhook_event(event_type, capture(status="DECLINED"))
    notification = await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert notification.status is not None and notification.status.state is PaymentState.failed


async def test_a_refund_event_maps_to_the_capture(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey
) -> None:
    refund = {
        "id": "1JU08902781691411", "status": "COMPLETED", "custom_id": "rf_ord_123456_1",
        "amount": {"currency_code": "USD", "value": "5.00"},
        "links": [{"href": f"https://api.paypal.com/v2/payments/captures/{CAPTURE_ID}", "rel": "up",
                   "method": "GET"}],
    }
    body = webhook_event("PAYMENT.CAPTURE.REFUNDED", refund, "refund")
    notification = await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert notification.status is None and notification.refund is not None
    assert notification.refund.refund_id == "rf_ord_123456_1"
    assert notification.refund.payment_id == CAPTURE_ID
    assert (notification.refund.amount, notification.refund.state) == (500, RefundState.succeeded)


async def test_a_tampered_body_is_rejected(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    headers = paypal_headers(body, paypal_key)
    tampered = body.replace(b'"19.99"', b'"1999.00"')
    assert tampered != body
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, tampered, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_a_signature_by_another_key_is_rejected(
    provider: PayPalProvider, stranger_key: rsa.RSAPrivateKey
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(paypal_headers(body, stranger_key), body, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_an_event_for_another_webhook_is_rejected(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    headers = paypal_headers(body, paypal_key, webhook_id="OTHERWEBHOOK")
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, body, now=NOW)
    assert caught.value.reason == "bad-signature"


async def test_a_weaker_algorithm_is_rejected(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    headers = paypal_headers(body, paypal_key, algorithm="SHA1withRSA")
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, body, now=NOW)
    assert caught.value.reason == "bad-signature"


@pytest.mark.parametrize("skew", [timedelta(seconds=301), timedelta(seconds=-301), timedelta(days=3)])
async def test_old_or_future_transmissions_are_rejected_before_fetching(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey, fetcher: Fetcher, skew: timedelta
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(paypal_headers(body, paypal_key, at=NOW - skew), body, now=NOW)
    assert caught.value.reason == "stale"
    assert fetcher.fetched == []


@pytest.mark.parametrize(
    "url",
    [
        "http://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
        "https://evil.example.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com.evil.example.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com@evil.example.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
        "https://api.paypal.com/v1/notifications/certs/CERT-1?next=https://evil.example.com",
        "https://api.paypal.com/v1/notifications/certs/../../oauth2/token",
        "https://api.paypal.com/v2/other/CERT-1",
        "not a url",
    ],
)
async def test_foreign_certificate_urls_are_never_fetched(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey, fetcher: Fetcher, url: str
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(paypal_headers(body, paypal_key, cert_url=url), body, now=NOW)
    assert caught.value.reason == "bad-certificate"
    assert fetcher.fetched == []


def test_paypal_certificate_hosts_are_allowed() -> None:
    hosts = frozenset({"api.paypal.com", "api-m.sandbox.paypal.com"})
    assert cert_url_allowed("https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2", hosts)
    assert cert_url_allowed("https://api-m.sandbox.paypal.com/v1/notifications/certs/CERT-1", hosts)
    assert not cert_url_allowed("https://api.sandbox.paypal.com/v1/notifications/certs/CERT-1", hosts)


async def _rejected_certificate(
    provider: PayPalProvider, fetcher: Fetcher, pem_bytes: bytes, key: rsa.RSAPrivateKey
) -> NotificationRejected:
    fetcher.pems[CERT_URL] = pem_bytes
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(paypal_headers(body, key), body, now=NOW)
    return caught.value


async def test_a_certificate_from_another_ca_is_rejected(
    provider: PayPalProvider, fetcher: Fetcher, paypal_key: rsa.RSAPrivateKey
) -> None:
    other = root_ca("Attacker Root CA")
    forged = pem(leaf(other, paypal_key))
    assert (await _rejected_certificate(provider, fetcher, forged, paypal_key)).reason == "bad-certificate"


async def test_an_expired_certificate_is_rejected(
    provider: PayPalProvider, fetcher: Fetcher, intermediate: Authority, paypal_key: rsa.RSAPrivateKey
) -> None:
    old = leaf(intermediate, paypal_key, not_before=NOW - timedelta(days=400),
               not_after=NOW - timedelta(days=1))
    rejected = await _rejected_certificate(provider, fetcher, pem(old, intermediate.cert), paypal_key)
    assert rejected.reason == "bad-certificate"


async def test_a_certificate_for_another_name_is_rejected(
    provider: PayPalProvider, fetcher: Fetcher, intermediate: Authority, paypal_key: rsa.RSAPrivateKey
) -> None:
    other = leaf(intermediate, paypal_key, common_name="www.paypal.com.evil.example.com")
    rejected = await _rejected_certificate(provider, fetcher, pem(other, intermediate.cert), paypal_key)
    assert rejected.reason == "bad-certificate"


async def test_a_leaf_without_extensions_and_a_sandbox_name_is_accepted(
    provider: PayPalProvider, fetcher: Fetcher, intermediate: Authority, paypal_key: rsa.RSAPrivateKey
) -> None:
    bare = leaf(
        intermediate, paypal_key, common_name="messageverificationcerts.sandbox.paypal.com", bare=True
    )
    fetcher.pems[CERT_URL] = pem(bare, intermediate.cert)
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    notification = await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert notification.status is not None


async def test_a_rejected_certificate_is_fetched_again_next_time(
    provider: PayPalProvider, fetcher: Fetcher, good_pem: bytes, paypal_key: rsa.RSAPrivateKey
) -> None:
    await _rejected_certificate(provider, fetcher, b"<html>maintenance</html>", paypal_key)
    fetcher.pems[CERT_URL] = good_pem
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert fetcher.fetched == [CERT_URL, CERT_URL]


async def test_the_system_trust_store_does_not_trust_a_test_ca(
    http: httpx.AsyncClient, fetcher: Fetcher, paypal_key: rsa.RSAPrivateKey
) -> None:
    assert len(system_trust_store()) > 50
    provider = PayPalProvider(
        PayPalConfig(CLIENT_ID, SecretStr(CLIENT_SECRET), WEBHOOK_ID, api_base=API), http,
        cert_fetcher=fetcher,
    )
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert caught.value.reason == "bad-certificate"


async def test_the_default_fetcher_uses_our_client_and_fails_transiently(
    http: httpx.AsyncClient, good_pem: bytes
) -> None:
    fetch = http_certificate_fetcher(http)
    with respx.mock() as router:
        router.get(CERT_URL).mock(
            side_effect=[httpx.Response(200, content=good_pem), httpx.Response(503)]
        )
        assert await fetch(CERT_URL) == good_pem
        with pytest.raises(ProviderError) as caught:
            await fetch(CERT_URL)
    assert (caught.value.code, caught.value.transient) == ("certificate_unavailable", True)


@pytest.mark.parametrize(
    "missing",
    ["PAYPAL-TRANSMISSION-ID", "PAYPAL-TRANSMISSION-TIME", "PAYPAL-TRANSMISSION-SIG",
     "PAYPAL-CERT-URL", "PAYPAL-AUTH-ALGO"],
)
async def test_a_missing_header_is_malformed(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey, missing: str
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    headers = paypal_headers(body, paypal_key)
    del headers[missing]
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(headers, body, now=NOW)
    assert caught.value.reason == "malformed"


async def test_headers_are_matched_case_insensitively(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey
) -> None:
    body = webhook_event("PAYMENT.CAPTURE.COMPLETED", completed_capture())
    headers = {k.lower(): v for k, v in paypal_headers(body, paypal_key).items()}
    assert (await provider.parse_notification(headers, body, now=NOW)).status is not None


@pytest.mark.parametrize("body", [b"not json", b'{"id": "WH-1"}', b'{"id": "WH-1", "event_type": "X"}'])
async def test_a_signed_body_that_is_not_an_event_is_malformed(
    provider: PayPalProvider, paypal_key: rsa.RSAPrivateKey, body: bytes
) -> None:
    with pytest.raises(NotificationRejected) as caught:
        await provider.parse_notification(paypal_headers(body, paypal_key), body, now=NOW)
    assert caught.value.reason == "malformed"


def test_the_crc_in_the_signed_message_is_unsigned() -> None:
    body = next(b for b in (f'{{"n": {i}}}'.encode() for i in range(100)) if binascii.crc32(b) >= 2**31)
    message = paypal_signed_message("tid", "2026-11-26T10:00:00Z", "WH", body)
    crc = message.rsplit(b"|", 1)[1]
    assert int(crc) == binascii.crc32(body) and int(crc) >= 2**31 and not crc.startswith(b"-")


def test_replies_are_empty_2xx_or_4xx(provider: PayPalProvider) -> None:
    assert provider.reply(True).status_code == 200
    assert provider.reply(False).status_code == 400
