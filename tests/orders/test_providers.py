"""Orders end to end with each real provider: Stripe, PayPal, Alipay, WeChat Pay.

The app runs with test-time credentials (RSA keys, webhook secrets, a PayPal certificate chain
made here); respx answers at the providers' HTTP boundary with the shapes they document, and
every notification is really signed (and, for WeChat Pay, encrypted) here, independently of the
code under test. What each test proves is written in its name.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlparse
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from sqlalchemy import func, select

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.metrics import WEBHOOKS
from simcharge.notifications.models import Notice
from simcharge.orders.fulfilment import LATE_CHECK_FIRST
from simcharge.orders.models import Order, Payment, ProviderEvent, Refund
from simcharge.orders.refunds import REFUND_JOB
from simcharge.payments.jobs import (
    REFUND_FOLLOW_UP_SPAN,
    REFUND_FOLLOW_UPS,
    refund_follow_up_delay,
)
from simcharge.payments.providers.paypal import PayPalProvider
from simcharge.payments.service import reconcile
from simcharge.worker.models import OutboxJob
from simcharge.worker.runner import Worker
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    place,
    signed_event,
    transfers_of,
)
from tests.payments.providers.certs import intermediate_ca, leaf, pem, root_ca

STRIPE_API = "https://api.stripe.com"
PAYPAL_API = "https://api-m.paypal.com"
ALIPAY_GATEWAY = "https://openapi.alipay.com/gateway.do"
WECHAT_API = "https://api.mch.weixin.qq.com"

PAYPAL_MERCHANT = "7MZV6QG4EXAMP"
PAYPAL_WEBHOOK_ID = "1JE4291016473214C"
PAYPAL_CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-7a8ba0d6"
ALIPAY_APP_ID = "2021004100000001"
WECHAT_MCHID = "1900000109"
WECHAT_APPID = "wx8888888888888888"
WECHAT_MERCHANT_SERIAL = "444F4864EA9B34415A8B2BF8D8A4D9A3E1F2C3D4"
WECHAT_PUB_KEY_ID = "PUB_KEY_ID_0119000001092025110600000000000001"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _rsa_verify(key: rsa.RSAPrivateKey, message: bytes, signature: str) -> None:
    key.public_key().verify(
        base64.b64decode(signature), message, padding.PKCS1v15(), hashes.SHA256()
    )


@dataclasses.dataclass
class Keys:
    """Everything secret, made at test time: ours and the providers'."""

    stripe_webhook_secret: str
    alipay_app: rsa.RSAPrivateKey
    alipay_platform: rsa.RSAPrivateKey
    wechat_merchant: rsa.RSAPrivateKey
    wechat_platform: rsa.RSAPrivateKey
    wechat_apiv3: str
    paypal_signing: rsa.RSAPrivateKey
    paypal_chain: bytes
    paypal_root: Any
    stranger: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    root = root_ca("Test Global Root")
    middle = intermediate_ca(root, "Test EV RSA CA")
    signing = _rsa()
    # The test CA's validity is centred on a fixed day; the leaf must be valid today.
    now = datetime.now(UTC)
    cert = leaf(
        middle, signing, not_before=now - timedelta(days=30), not_after=now + timedelta(days=300)
    )
    return Keys(
        stripe_webhook_secret="whsec_" + secrets.token_hex(16),
        alipay_app=_rsa(),
        alipay_platform=_rsa(),
        wechat_merchant=_rsa(),
        wechat_platform=_rsa(),
        wechat_apiv3=secrets.token_hex(16),
        paypal_signing=signing,
        paypal_chain=pem(cert, middle.cert),
        paypal_root=root.cert,
        stranger=_rsa(),
    )


@pytest.fixture
def settings(settings: Settings, keys: Keys) -> Settings:
    """Every real provider configured; the sandbox does not stand in for any of them."""
    return settings.model_copy(
        update={
            "sandbox_stands_in": False,
            "stripe_secret_key": SecretStr("sk_test_" + secrets.token_hex(12)),
            "stripe_webhook_secret": SecretStr(keys.stripe_webhook_secret),
            "paypal_client_id": "AaZ-test-client",
            "paypal_client_secret": SecretStr("EE-test-secret-" + secrets.token_hex(8)),
            "paypal_webhook_id": PAYPAL_WEBHOOK_ID,
            "paypal_merchant_id": PAYPAL_MERCHANT,
            "alipay_app_id": ALIPAY_APP_ID,
            "alipay_private_key": SecretStr(_private_pem(keys.alipay_app)),
            "alipay_public_key": _public_pem(keys.alipay_platform),
            "wechatpay_mchid": WECHAT_MCHID,
            "wechatpay_appid": WECHAT_APPID,
            "wechatpay_serial_no": WECHAT_MERCHANT_SERIAL,
            "wechatpay_private_key": SecretStr(_private_pem(keys.wechat_merchant)),
            "wechatpay_apiv3_key": SecretStr(keys.wechat_apiv3),
            "wechatpay_platform_keys": {WECHAT_PUB_KEY_ID: _public_pem(keys.wechat_platform)},
        }
    )


@pytest.fixture
def shop(app: Any, keys: Keys) -> Any:
    """The app, with PayPal's signing certificates trusted from the test CA (in production:
    the certifi bundle). The certificate itself is still fetched over HTTP (respx)."""
    providers = app.state.providers
    paypal = providers.by_name["paypal"]
    config = dataclasses.replace(paypal.config, trust_store=(keys.paypal_root,))
    providers.by_name["paypal"] = PayPalProvider(config, app.state.http)
    return app


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def _form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True))


def _now() -> int:
    """Now, as the providers sign it: the app's clock (which a test may freeze)."""
    return int(utcnow().timestamp())


# --- the providers, as they answer and notify ---------------------------------------------------


@dataclasses.dataclass
class PendingAtProvider:
    """One of our refunds at a provider that answers it as pending: how often it was asked to
    make it and to report it, and whether it is done (the test says when)."""

    settled: bool = False
    refused_reads: int = 0
    """Reads still to be refused (404: the provider does not find it), before they answer."""
    created: int = 0
    read: int = 0


class Stripe:
    name, method, currency = "stripe", "card", "USD"
    merchant_checked = False

    def __init__(self, keys: Keys, router: respx.MockRouter) -> None:
        self.keys, self.router = keys, router

    @staticmethod
    def session_id(order: Order) -> str:
        return f"cs_test_a1{order.reference}"

    def session(
        self,
        order: Order,
        *,
        status: str = "open",
        payment_status: str = "unpaid",
        intent: Any = None,
    ) -> dict[str, Any]:
        sid = self.session_id(order)
        return {
            "id": sid,
            "object": "checkout.session",
            "amount_subtotal": order.total,
            "amount_total": order.total,
            "cancel_url": "http://testserver/cancel",
            "client_reference_id": order.reference,
            "created": _now(),
            "currency": order.currency.lower(),
            "customer": None,
            "expires_at": _now() + 3600,
            "livemode": False,
            "metadata": {"reference": order.reference},
            "mode": "payment",
            "payment_intent": intent,
            "payment_status": payment_status,
            "status": status,
            "success_url": "http://testserver/return?session_id={CHECKOUT_SESSION_ID}",
            "url": f"https://checkout.stripe.com/c/pay/{sid}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
        }

    def expect_checkout(self) -> respx.Route:
        def create(request: httpx.Request) -> httpx.Response:
            sent = parse_qs(request.content.decode())
            reference = sent["client_reference_id"][0]
            order = Order(
                reference=reference,
                total=int(sent["line_items[0][price_data][unit_amount]"][0]),
                currency=sent["line_items[0][price_data][currency]"][0].upper(),
            )
            return httpx.Response(200, json=self.session(order))

        return self.router.post(f"{STRIPE_API}/v1/checkout/sessions").mock(side_effect=create)

    def check_checkout(self, route: respx.Route, order: Order, body: dict[str, Any]) -> None:
        request = route.calls.last.request
        assert request.headers["Idempotency-Key"] == order.reference
        sent = parse_qs(request.content.decode())
        assert sent["mode"] == ["payment"]
        assert sent["line_items[0][price_data][unit_amount]"] == [str(order.total)]
        assert sent["metadata[reference]"] == [order.reference]
        assert sent["success_url"][0].endswith(
            f"/api/v1/orders/{order.id}/return?session_id={{CHECKOUT_SESSION_ID}}"
        )
        assert body["next_action"]["url"].startswith("https://checkout.stripe.com/c/pay/")

    def paid_intent(self, order: Order, *, refunded: int = 0) -> dict[str, Any]:
        return {
            "id": f"pi_3{order.reference}",
            "object": "payment_intent",
            "amount": order.total,
            "currency": order.currency.lower(),
            "status": "succeeded",
            "metadata": {"reference": order.reference},
            "latest_charge": {
                "id": f"ch_3{order.reference}",
                "object": "charge",
                "amount": order.total,
                "amount_captured": order.total,
                "amount_refunded": refunded,
                "currency": order.currency.lower(),
                "paid": True,
                "refunded": False,
                "status": "succeeded",
                "created": _now() - 5,
            },
        }

    def paid_webhook(self, order: Order, **change: Any) -> tuple[bytes, dict[str, str]]:
        session = self.session(
            order, status="complete", payment_status="paid", intent=f"pi_3{order.reference}"
        )
        return self._event("checkout.session.completed", {**session, **change})

    def _event(
        self, kind: str, obj: dict[str, Any], *, secret: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        event = {
            "id": f"evt_1{uuid.uuid4().hex[:22]}",
            "object": "event",
            "api_version": "2025-10-29.clover",
            "created": _now(),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
            "data": {"object": obj},
        }
        body = json.dumps(event).encode()
        return body, self.headers(body, secret=secret)

    def headers(self, body: bytes, *, secret: str | None = None) -> dict[str, str]:
        t = _now()
        key = (secret or self.keys.stripe_webhook_secret).encode()
        v1 = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {"content-type": "application/json", "stripe-signature": f"t={t},v1={v1}"}

    def forged_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        session = self.session(
            order, status="complete", payment_status="paid", intent=f"pi_3{order.reference}"
        )
        return self._event(
            "checkout.session.completed", session, secret="whsec_" + secrets.token_hex(16)
        )

    def foreign_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError  # Stripe signs per account: there is no merchant to compare

    def expect_paid_on_query(self, order: Order) -> list[respx.Route]:
        session = self.session(
            order, status="complete", payment_status="paid", intent=self.paid_intent(order)
        )
        return [
            self.router.get(f"{STRIPE_API}/v1/checkout/sessions/{self.session_id(order)}").respond(
                200, json=session
            )
        ]

    def expect_close(self, order: Order) -> list[respx.Route]:
        sid = self.session_id(order)
        query = self.router.get(f"{STRIPE_API}/v1/checkout/sessions/{sid}").respond(
            200, json=self.session(order)
        )
        expire = self.router.post(f"{STRIPE_API}/v1/checkout/sessions/{sid}/expire").respond(
            200, json=self.session(order, status="expired")
        )
        return [query, expire]

    def expect_refund(self, order: Order) -> respx.Route:
        def refund(request: httpx.Request) -> httpx.Response:
            sent = _form(request)
            assert sent["payment_intent"] == f"pi_3{order.reference}"
            assert request.headers["Idempotency-Key"] == sent["metadata[refund_id]"]
            return httpx.Response(
                200,
                json={
                    "id": "re_3" + uuid.uuid4().hex[:20],
                    "object": "refund",
                    "amount": int(sent["amount"]),
                    "balance_transaction": "txn_1",
                    "charge": f"ch_3{order.reference}",
                    "created": _now(),
                    "currency": order.currency.lower(),
                    "destination_details": {"type": "card"},
                    "metadata": {
                        "reference": sent["metadata[reference]"],
                        "refund_id": sent["metadata[refund_id]"],
                    },
                    "payment_intent": sent["payment_intent"],
                    "reason": None,
                    "status": "succeeded",
                },
            )

        return self.router.post(f"{STRIPE_API}/v1/refunds").mock(side_effect=refund)

    async def confirm_refund(self, client: httpx.AsyncClient, order: Order, refund: Refund) -> None:
        """Stripe answered `succeeded` at once: nothing more comes."""

    def expect_pending_refund(self, order: Order, at: PendingAtProvider) -> None:
        """`POST /v1/refunds` answers `pending` (Stripe replays that answer to the same key);
        `GET /v1/refunds/{id}` reports it, `succeeded` once it is done."""
        rid = "re_3" + uuid.uuid4().hex[:20]
        sent: dict[str, str] = {}

        def refund(status: str) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "refund",
                "amount": int(sent["amount"]),
                "balance_transaction": "txn_1" if status == "succeeded" else None,
                "charge": f"ch_3{order.reference}",
                "created": _now(),
                "currency": order.currency.lower(),
                "metadata": {
                    "reference": sent["metadata[reference]"],
                    "refund_id": sent["metadata[refund_id]"],
                },
                "payment_intent": sent["payment_intent"],
                "reason": None,
                "status": status,
            }

        def create(request: httpx.Request) -> httpx.Response:
            sent.update(_form(request))
            assert request.headers["Idempotency-Key"] == sent["metadata[refund_id]"]
            at.created += 1
            return httpx.Response(200, json=refund("pending"))

        def read(request: httpx.Request) -> httpx.Response:
            assert not request.content
            at.read += 1
            if at.refused_reads:
                at.refused_reads -= 1
                return httpx.Response(
                    404,
                    json={
                        "error": {
                            "code": "resource_missing",
                            "message": f"No such refund: '{rid}'",
                            "param": "id",
                            "type": "invalid_request_error",
                        }
                    },
                )
            return httpx.Response(200, json=refund("succeeded" if at.settled else "pending"))

        self.router.post(f"{STRIPE_API}/v1/refunds").mock(side_effect=create)
        self.router.get(f"{STRIPE_API}/v1/refunds/{rid}").mock(side_effect=read)

    def refunded_webhook(self, order: Order, refunded: int) -> tuple[bytes, dict[str, str]]:
        """`charge.refunded`: the charge, with everything refunded of it so far (ours or made in
        Stripe's dashboard). A charge carries none of the session's metadata: only its
        payment intent names the payment."""
        charge = {
            "id": f"ch_3{order.reference}",
            "object": "charge",
            "amount": order.total,
            "amount_captured": order.total,
            "amount_refunded": refunded,
            "captured": True,
            "currency": order.currency.lower(),
            "metadata": {},
            "paid": True,
            "payment_intent": f"pi_3{order.reference}",
            "refunded": refunded >= order.total,
            "status": "succeeded",
            "created": _now() - 60,
        }
        return self._event("charge.refunded", charge)

    def external_refund(self, order: Order, amount: int) -> tuple[bytes, dict[str, str]]:
        return self.refunded_webhook(order, amount)

    def dispute_webhook(
        self,
        order: Order,
        *,
        status: str = "needs_response",
        event: str = "charge.dispute.created",
        dispute_id: str | None = None,
        amount: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """`charge.dispute.*` with its Dispute object; `charge.dispute.closed` carries the
        decision in `status` (`won`, `lost`, `warning_closed`)."""
        dispute = {
            "id": dispute_id or "du_1" + uuid.uuid4().hex[:20],
            "object": "dispute",
            "amount": order.total,
            "charge": f"ch_3{order.reference}",
            "currency": order.currency.lower(),
            "created": _now(),
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": {},
            "payment_intent": f"pi_3{order.reference}",
            "reason": "fraudulent",
            "status": status,
        }
        if amount is not None:
            dispute["amount"] = amount
        return self._event(event, dispute)


class PayPal:
    name, method, currency = "paypal", "paypal", "USD"
    merchant_checked = True

    def __init__(self, keys: Keys, router: respx.MockRouter) -> None:
        self.keys, self.router = keys, router
        router.post(f"{PAYPAL_API}/v1/oauth2/token").respond(
            200,
            json={
                "scope": "https://uri.paypal.com/services/payments/payment",
                "nonce": "2026-11-25T",
                "access_token": "A21AAL-test-token",
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": 32400,
            },
        )
        router.get(PAYPAL_CERT_URL).respond(
            200, content=keys.paypal_chain, headers={"content-type": "text/plain"}
        )

    @staticmethod
    def order_id(order: Order) -> str:
        return "5O" + hashlib.sha256(order.reference.encode()).hexdigest()[:15].upper()

    @staticmethod
    def capture_id(order: Order) -> str:
        return "3C" + hashlib.sha256(order.reference.encode()).hexdigest()[-15:].upper()

    @staticmethod
    def _money(order: Order) -> dict[str, str]:
        return {"currency_code": order.currency, "value": f"{order.total / 100:.2f}"}

    def capture(self, order: Order, *, merchant: str = PAYPAL_MERCHANT) -> dict[str, Any]:
        return {
            "id": self.capture_id(order),
            "status": "COMPLETED",
            "amount": self._money(order),
            "final_capture": True,
            "custom_id": order.reference,
            "invoice_id": order.reference,
            "seller_protection": {"status": "ELIGIBLE"},
            "seller_receivable_breakdown": {"gross_amount": self._money(order)},
            "payee": {"email_address": "shop@example.com", "merchant_id": merchant},
            "supplementary_data": {"related_ids": {"order_id": self.order_id(order)}},
            "create_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "update_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "links": [
                {
                    "href": f"{PAYPAL_API}/v2/payments/captures/{self.capture_id(order)}",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }

    def order(self, order: Order, status: str, *, captured: bool = False) -> dict[str, Any]:
        unit: dict[str, Any] = {
            "reference_id": order.reference,
            "custom_id": order.reference,
            "invoice_id": order.reference,
            "amount": self._money(order),
            "payee": {"email_address": "shop@example.com", "merchant_id": PAYPAL_MERCHANT},
        }
        if captured:
            unit["payments"] = {"captures": [self.capture(order)]}
        oid = self.order_id(order)
        body: dict[str, Any] = {
            "id": oid,
            "intent": "CAPTURE",
            "status": status,
            "purchase_units": [unit],
            "links": [
                {"href": f"{PAYPAL_API}/v2/checkout/orders/{oid}", "rel": "self", "method": "GET"},
                {
                    "href": f"https://www.paypal.com/checkoutnow?token={oid}",
                    "rel": "payer-action",
                    "method": "GET",
                },
            ],
        }
        if status != "PAYER_ACTION_REQUIRED":
            body["payer"] = {
                "payer_id": "QYR5Z8XDVJNXQ",
                "email_address": "buyer@example.com",
                "name": {"given_name": "Ana", "surname": "Cruz"},
            }
        return body

    def expect_checkout(self) -> respx.Route:
        def create(request: httpx.Request) -> httpx.Response:
            unit = json.loads(request.content)["purchase_units"][0]
            order = Order(
                reference=unit["custom_id"],
                currency=unit["amount"]["currency_code"],
                total=round(float(unit["amount"]["value"]) * 100),
            )
            body = self.order(order, "PAYER_ACTION_REQUIRED")
            body["payment_source"] = {"paypal": {}}
            del body["purchase_units"]
            return httpx.Response(200, json=body)

        return self.router.post(f"{PAYPAL_API}/v2/checkout/orders").mock(side_effect=create)

    def check_checkout(self, route: respx.Route, order: Order, body: dict[str, Any]) -> None:
        request = route.calls.last.request
        assert request.headers["Authorization"] == "Bearer A21AAL-test-token"
        assert request.headers["PayPal-Request-Id"] == order.reference
        sent = json.loads(request.content)
        assert sent["intent"] == "CAPTURE"
        assert sent["purchase_units"][0]["amount"] == self._money(order)
        context = sent["payment_source"]["paypal"]["experience_context"]
        assert context["return_url"].endswith(f"/api/v1/orders/{order.id}/return")
        assert body["next_action"]["url"] == (
            f"https://www.paypal.com/checkoutnow?token={self.order_id(order)}"
        )

    def _webhook(
        self, kind: str, resource: dict[str, Any], *, key: rsa.RSAPrivateKey | None = None
    ) -> tuple[bytes, dict[str, str]]:
        event = {
            "id": "WH-" + uuid.uuid4().hex[:17].upper() + "-" + uuid.uuid4().hex[:17].upper(),
            "event_version": "1.0",
            "create_time": datetime.now(UTC).isoformat(),
            "resource_type": "capture",
            "resource_version": "2.0",
            "event_type": kind,
            "summary": "Payment completed",
            "resource": resource,
            "links": [],
        }
        body = json.dumps(event).encode()
        transmission_id = str(uuid.uuid4())
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        crc = binascii.crc32(body) & 0xFFFFFFFF
        message = f"{transmission_id}|{at}|{PAYPAL_WEBHOOK_ID}|{crc}".encode()
        return body, {
            "content-type": "application/json",
            "paypal-transmission-id": transmission_id,
            "paypal-transmission-time": at,
            "paypal-transmission-sig": _rsa_sign(key or self.keys.paypal_signing, message),
            "paypal-cert-url": PAYPAL_CERT_URL,
            "paypal-auth-algo": "SHA256withRSA",
        }

    def paid_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._webhook("PAYMENT.CAPTURE.COMPLETED", self.capture(order))

    def forged_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._webhook(
            "PAYMENT.CAPTURE.COMPLETED", self.capture(order), key=self.keys.stranger
        )

    def foreign_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._webhook(
            "PAYMENT.CAPTURE.COMPLETED", self.capture(order, merchant="FOREIGNMERCH1")
        )

    def approved_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        resource = self.order(order, "APPROVED")
        return self._webhook("CHECKOUT.ORDER.APPROVED", resource)

    def expect_paid_on_query(self, order: Order) -> list[respx.Route]:
        """Approved by the payer: paid once we capture."""
        oid = self.order_id(order)
        query = self.router.get(f"{PAYPAL_API}/v2/checkout/orders/{oid}").respond(
            200, json=self.order(order, "APPROVED")
        )
        capture = self.router.post(f"{PAYPAL_API}/v2/checkout/orders/{oid}/capture").respond(
            201, json=self.order(order, "COMPLETED", captured=True)
        )
        return [query, capture]

    def expect_close(self, order: Order) -> list[respx.Route]:
        """PayPal cannot void a CAPTURE order: closing it means asking, then never capturing."""
        oid = self.order_id(order)
        return [
            self.router.get(f"{PAYPAL_API}/v2/checkout/orders/{oid}").respond(
                200, json=self.order(order, "PAYER_ACTION_REQUIRED")
            )
        ]

    def expect_refund(self, order: Order) -> respx.Route:
        cid = self.capture_id(order)

        def refund(request: httpx.Request) -> httpx.Response:
            sent = json.loads(request.content)
            assert request.headers["PayPal-Request-Id"] == sent["custom_id"]
            rid = "1JU" + uuid.uuid4().hex[:14].upper()
            return httpx.Response(
                201,
                json={
                    "id": rid,
                    "status": "COMPLETED",
                    "amount": sent["amount"],
                    "custom_id": sent["custom_id"],
                    "seller_payable_breakdown": {"gross_amount": sent["amount"]},
                    "create_time": datetime.now(UTC).isoformat(),
                    "links": [
                        {
                            "href": f"{PAYPAL_API}/v2/payments/refunds/{rid}",
                            "rel": "self",
                            "method": "GET",
                        },
                        {
                            "href": f"{PAYPAL_API}/v2/payments/captures/{cid}",
                            "rel": "up",
                            "method": "GET",
                        },
                    ],
                },
            )

        return self.router.post(f"{PAYPAL_API}/v2/payments/captures/{cid}/refund").mock(
            side_effect=refund
        )

    async def confirm_refund(self, client: httpx.AsyncClient, order: Order, refund: Refund) -> None:
        """PayPal answered COMPLETED at once."""

    def expect_pending_refund(self, order: Order, at: PendingAtProvider) -> None:
        """The refund call answers `PENDING` (an eCheck's); `GET /v2/payments/refunds/{id}`
        reports it, `COMPLETED` once it is done."""
        cid, rid = self.capture_id(order), "1JU" + uuid.uuid4().hex[:14].upper()
        sent: dict[str, Any] = {}

        def refund(status: str) -> dict[str, Any]:
            found = {
                "id": rid,
                "status": status,
                "amount": sent["amount"],
                "custom_id": sent["custom_id"],
                "seller_payable_breakdown": {"gross_amount": sent["amount"]},
                "create_time": datetime.now(UTC).isoformat(),
                "update_time": datetime.now(UTC).isoformat(),
                "links": [
                    {"href": f"{PAYPAL_API}/v2/payments/refunds/{rid}", "rel": "self",
                     "method": "GET"},
                    {"href": f"{PAYPAL_API}/v2/payments/captures/{cid}", "rel": "up",
                     "method": "GET"},
                ],
            }
            if status == "PENDING":
                found["status_details"] = {"reason": "ECHECK"}
            return found

        def create(request: httpx.Request) -> httpx.Response:
            sent.update(json.loads(request.content))
            assert request.headers["PayPal-Request-Id"] == sent["custom_id"]
            at.created += 1
            return httpx.Response(201, json=refund("PENDING"))

        def read(request: httpx.Request) -> httpx.Response:
            assert request.headers["Authorization"] == "Bearer A21AAL-test-token"
            assert not request.content
            at.read += 1
            return httpx.Response(200, json=refund("COMPLETED" if at.settled else "PENDING"))

        self.router.post(f"{PAYPAL_API}/v2/payments/captures/{cid}/refund").mock(side_effect=create)
        self.router.get(f"{PAYPAL_API}/v2/payments/refunds/{rid}").mock(side_effect=read)

    def refund_webhook(
        self, order: Order, amount: int, kind: str = "PAYMENT.CAPTURE.REFUNDED"
    ) -> tuple[bytes, dict[str, str]]:
        """A refund resource that is not ours (no `custom_id` of ours): made in PayPal's
        dashboard, or — `PAYMENT.CAPTURE.REVERSED` — a reversal PayPal made."""
        rid = "8RU" + uuid.uuid4().hex[:14].upper()
        value = {"currency_code": order.currency, "value": f"{amount / 100:.2f}"}
        resource = {
            "id": rid,
            "amount": value,
            "note_to_payer": "Payment reversed" if kind.endswith("REVERSED") else "Refund",
            "seller_payable_breakdown": {"gross_amount": value, "net_amount": value},
            "status": "COMPLETED",
            "create_time": datetime.now(UTC).isoformat(),
            "update_time": datetime.now(UTC).isoformat(),
            "links": [
                {"href": f"{PAYPAL_API}/v2/payments/refunds/{rid}", "rel": "self", "method": "GET"},
                {
                    "href": f"{PAYPAL_API}/v2/payments/captures/{self.capture_id(order)}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
        }
        return self._webhook(kind, resource)

    def external_refund(self, order: Order, amount: int) -> tuple[bytes, dict[str, str]]:
        return self.refund_webhook(order, amount)

    def foreign_on_query(self, order: Order) -> list[respx.Route]:
        """Approved; the capture's answer names another payee."""
        oid = self.order_id(order)
        captured = self.order(order, "COMPLETED", captured=True)
        captured["purchase_units"][0]["payee"]["merchant_id"] = "FOREIGNMERCH1"
        return [
            self.router.get(f"{PAYPAL_API}/v2/checkout/orders/{oid}").respond(
                200, json=self.order(order, "APPROVED")
            ),
            self.router.post(f"{PAYPAL_API}/v2/checkout/orders/{oid}/capture").respond(
                201, json=captured
            ),
        ]


class Alipay:
    name, method, currency = "alipay", "alipay", "CNY"
    merchant_checked = True

    def __init__(self, keys: Keys, router: respx.MockRouter) -> None:
        self.keys, self.router = keys, router
        self.answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.gateway = router.post(ALIPAY_GATEWAY).mock(side_effect=self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        sent = _form(request)
        assert request.headers["content-type"] == "application/x-www-form-urlencoded;charset=utf-8"
        sign = sent.pop("sign")
        content = "&".join(f"{k}={v}" for k, v in sorted(sent.items()) if v).encode()
        _rsa_verify(self.keys.alipay_app, content, sign)  # Alipay checks the app's signature
        assert sent["app_id"] == ALIPAY_APP_ID and sent["sign_type"] == "RSA2"
        method, biz = sent["method"], json.loads(sent["biz_content"])
        self.calls.append((method, biz))
        found = self.answers[method](biz)
        inner = json.dumps(found, ensure_ascii=False, separators=(",", ":"))
        name = method.replace(".", "_") + "_response"
        signature = _rsa_sign(self.keys.alipay_platform, inner.encode())
        return httpx.Response(
            200,
            content=f'{{"{name}":{inner},"sign":"{signature}"}}'.encode(),
            headers={"content-type": "text/html;charset=utf-8"},
        )

    @staticmethod
    def trade_no(order: Order) -> str:
        return (
            "2026112522001"
            + str(int(hashlib.sha256(order.reference.encode()).hexdigest(), 16))[:15]
        )

    def expect_checkout(self) -> respx.Route:
        return self.gateway  # page.pay is the payer's browser, not a server call

    def check_checkout(self, route: respx.Route, order: Order, body: dict[str, Any]) -> None:
        assert not self.calls
        url = urlparse(body["next_action"]["url"])
        assert f"{url.scheme}://{url.netloc}{url.path}" == ALIPAY_GATEWAY
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        sign = params.pop("sign")
        content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if v).encode()
        _rsa_verify(self.keys.alipay_app, content, sign)
        assert params["method"] == "alipay.trade.page.pay"
        assert params["notify_url"] == "http://testserver/api/v1/webhooks/alipay"
        biz = json.loads(params["biz_content"])
        assert biz["out_trade_no"] == order.reference
        assert biz["total_amount"] == f"{order.total / 100:.2f}"
        assert biz["product_code"] == "FAST_INSTANT_TRADE_PAY"

    def _trade(self, order: Order, status: str) -> dict[str, Any]:
        found: dict[str, Any] = {
            "code": "10000",
            "msg": "Success",
            "trade_no": self.trade_no(order),
            "out_trade_no": order.reference,
            "buyer_logon_id": "159****5620",
            "trade_status": status,
            "total_amount": f"{order.total / 100:.2f}",
            "buyer_user_type": "PRIVATE",
        }
        if status == "TRADE_SUCCESS":
            found |= {
                "buyer_pay_amount": found["total_amount"],
                "receipt_amount": found["total_amount"],
                "send_pay_date": datetime.now(UTC)
                .astimezone(SHANGHAI)
                .strftime("%Y-%m-%d %H:%M:%S"),
            }
        return found

    def _notify(
        self, order: Order, *, key: rsa.RSAPrivateKey | None = None, **change: str
    ) -> tuple[bytes, dict[str, str]]:
        now = datetime.now(UTC) + timedelta(hours=8)
        params = {
            "gmt_create": now.strftime("%Y-%m-%d %H:%M:%S"),
            "charset": "utf-8",
            "seller_email": "shop@example.com",
            "subject": "eSIM top-up",
            "sign_type": "RSA2",
            "buyer_id": "2088102177846880",
            "invoice_amount": f"{order.total / 100:.2f}",
            "notify_id": "2026112500222" + uuid.uuid4().hex[:20],
            "fund_bill_list": json.dumps(
                [{"amount": f"{order.total / 100:.2f}", "fundChannel": "ALIPAYACCOUNT"}]
            ),
            "notify_type": "trade_status_sync",
            "trade_status": "TRADE_SUCCESS",
            "receipt_amount": f"{order.total / 100:.2f}",
            "app_id": ALIPAY_APP_ID,
            "buyer_pay_amount": f"{order.total / 100:.2f}",
            "seller_id": "2088621959000001",
            "gmt_payment": now.strftime("%Y-%m-%d %H:%M:%S"),
            "notify_time": now.strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "out_trade_no": order.reference,
            "total_amount": f"{order.total / 100:.2f}",
            "trade_no": self.trade_no(order),
            "auth_app_id": ALIPAY_APP_ID,
            "buyer_logon_id": "159****5620",
            "point_amount": "0.00",
        }
        params.update(change)
        content = "&".join(
            f"{k}={v}" for k, v in sorted(params.items()) if k not in ("sign", "sign_type")
        ).encode()
        params["sign"] = _rsa_sign(key or self.keys.alipay_platform, content)
        return urlencode(params).encode(), {
            "content-type": "application/x-www-form-urlencoded; charset=utf-8"
        }

    def paid_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._notify(order)

    def forged_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._notify(order, key=self.keys.stranger)

    def foreign_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        # Alipay signs every merchant's notifications with the same key: only app_id tells.
        return self._notify(order, app_id="2021009999999999", auth_app_id="2021009999999999")

    def expect_paid_on_query(self, order: Order) -> list[respx.Route]:
        self.answers["alipay.trade.query"] = lambda biz: self._trade(order, "TRADE_SUCCESS")
        return [self.gateway]

    def expect_close(self, order: Order) -> list[respx.Route]:
        self.answers["alipay.trade.query"] = lambda biz: self._trade(order, "WAIT_BUYER_PAY")
        self.answers["alipay.trade.close"] = lambda biz: {
            "code": "10000",
            "msg": "Success",
            "trade_no": self.trade_no(order),
            "out_trade_no": biz["out_trade_no"],
        }
        return [self.gateway]

    def closed_at_provider(self, order: Order) -> bool:
        return ("alipay.trade.close", {"out_trade_no": order.reference}) in self.calls

    def expect_refund(self, order: Order) -> respx.Route:
        def refund(biz: dict[str, Any]) -> dict[str, Any]:
            assert biz["trade_no"] == self.trade_no(order)
            assert biz["out_request_no"].startswith("RF")
            return {
                "code": "10000",
                "msg": "Success",
                "trade_no": self.trade_no(order),
                "out_trade_no": biz["out_trade_no"],
                "buyer_logon_id": "159****5620",
                "fund_change": "Y",
                "refund_fee": biz["refund_amount"],
                "gmt_refund_pay": "2026-11-25 12:00:00",
                "buyer_user_id": "2088102177846880",
            }

        self.answers["alipay.trade.refund"] = refund
        return self.gateway

    async def confirm_refund(self, client: httpx.AsyncClient, order: Order, refund: Refund) -> None:
        """`fund_change: Y`: the money moved."""

    def expect_pending_refund(self, order: Order, at: PendingAtProvider) -> None:
        """`alipay.trade.refund` accepts without moving the money yet (`fund_change: N`);
        `alipay.trade.fastpay.refund.query` answers without `refund_status` until the refund
        is done, then `REFUND_SUCCESS`."""
        asked: dict[str, Any] = {}

        def refund(biz: dict[str, Any]) -> dict[str, Any]:
            assert biz["trade_no"] == self.trade_no(order)
            asked.update(biz)
            at.created += 1
            return {
                "code": "10000",
                "msg": "Success",
                "trade_no": self.trade_no(order),
                "out_trade_no": biz["out_trade_no"],
                "buyer_logon_id": "159****5620",
                "fund_change": "N",
                "refund_fee": "0.00",
                "buyer_user_id": "2088102177846880",
            }

        def query(biz: dict[str, Any]) -> dict[str, Any]:
            assert biz == {
                "out_trade_no": order.reference,
                "out_request_no": asked["out_request_no"],
            }
            at.read += 1
            found = {
                "code": "10000",
                "msg": "Success",
                "trade_no": self.trade_no(order),
                "out_trade_no": order.reference,
                "out_request_no": biz["out_request_no"],
            }
            if at.settled:
                found |= {
                    "total_amount": f"{order.total / 100:.2f}",
                    "refund_amount": asked["refund_amount"],
                    "refund_status": "REFUND_SUCCESS",
                }
            return found

        self.answers["alipay.trade.refund"] = refund
        self.answers["alipay.trade.fastpay.refund.query"] = query

    def refunded_notify(
        self, order: Order, refunded: int, *, closed: bool = False
    ) -> tuple[bytes, dict[str, str]]:
        """A notification of the trade after a refund: `refund_fee` is everything refunded so
        far; refunded in full, the trade is `TRADE_CLOSED`."""
        now = datetime.now(UTC).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
        return self._notify(
            order,
            trade_status="TRADE_CLOSED" if closed else "TRADE_SUCCESS",
            refund_fee=f"{refunded / 100:.2f}",
            gmt_refund=now,
            **({"gmt_close": now} if closed else {}),
        )

    def external_refund(self, order: Order, amount: int) -> tuple[bytes, dict[str, str]]:
        return self.refunded_notify(order, amount)


class WeChatPay:
    name, method, currency = "wechatpay", "wechatpay", "CNY"
    merchant_checked = True

    def __init__(self, keys: Keys, router: respx.MockRouter) -> None:
        self.keys, self.router = keys, router

    def signed(self, status: int, payload: dict[str, Any] | None) -> httpx.Response:
        body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else b""
        return httpx.Response(status, content=body, headers=self.headers(body))

    def headers(self, body: bytes, *, key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        timestamp, nonce = str(_now()), secrets.token_hex(16)
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        return {
            "content-type": "application/json",
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": _rsa_sign(key or self.keys.wechat_platform, message),
            "Wechatpay-Serial": WECHAT_PUB_KEY_ID,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Request-ID": "08F78BB5AF0610D302100018901AA20D",
        }

    def check_request(self, request: httpx.Request) -> None:
        """As WeChat Pay checks our Authorization header."""
        scheme, _, rest = request.headers["Authorization"].partition(" ")
        assert scheme == "WECHATPAY2-SHA256-RSA2048"
        fields = dict(part.split("=", 1) for part in rest.split(","))
        fields = {k: v.strip('"') for k, v in fields.items()}
        assert fields["mchid"] == WECHAT_MCHID
        assert fields["serial_no"] == WECHAT_MERCHANT_SERIAL
        message = (
            (
                f"{request.method}\n{request.url.raw_path.decode()}\n{fields['timestamp']}\n"
                f"{fields['nonce_str']}\n"
            ).encode()
            + request.content
            + b"\n"
        )
        _rsa_verify(self.keys.wechat_merchant, message, fields["signature"])

    @staticmethod
    def transaction_id(order: Order) -> str:
        return "4200002" + str(int(hashlib.sha256(order.reference.encode()).hexdigest(), 16))[:21]

    def transaction(self, order: Order, state: str, *, mchid: str = WECHAT_MCHID) -> dict[str, Any]:
        found: dict[str, Any] = {
            "appid": WECHAT_APPID,
            "mchid": mchid,
            "out_trade_no": order.reference,
            "trade_type": "NATIVE",
            "trade_state": state,
            "attach": "",
            "trade_state_desc": {"SUCCESS": "支付成功", "NOTPAY": "未支付"}.get(state, state),
            "amount": {"total": order.total, "currency": "CNY"},
        }
        if state in ("SUCCESS", "REFUND"):  # paid (and then refunded, in part or whole)
            found |= {
                "transaction_id": self.transaction_id(order),
                "bank_type": "OTHERS",
                "success_time": datetime.now(UTC)
                .astimezone(SHANGHAI)
                .isoformat(timespec="seconds"),
                "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
                "amount": {
                    "total": order.total,
                    "payer_total": order.total,
                    "currency": "CNY",
                    "payer_currency": "CNY",
                },
            }
        return found

    def expect_checkout(self) -> respx.Route:
        def create(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            return self.signed(200, {"code_url": "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"})

        return self.router.post(f"{WECHAT_API}/v3/pay/transactions/native").mock(side_effect=create)

    def check_checkout(self, route: respx.Route, order: Order, body: dict[str, Any]) -> None:
        sent = json.loads(route.calls.last.request.content)
        assert sent["mchid"] == WECHAT_MCHID and sent["appid"] == WECHAT_APPID
        assert sent["out_trade_no"] == order.reference
        assert sent["amount"] == {"total": order.total, "currency": "CNY"}
        assert sent["notify_url"] == "http://testserver/api/v1/webhooks/wechatpay"
        assert body["next_action"]["type"] == "qr"
        assert body["next_action"]["qr_payload"] == "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"
        assert body["next_action"]["qr_svg"].startswith("<svg")

    def _callback(
        self,
        kind: str,
        original_type: str,
        resource: dict[str, Any],
        *,
        key: rsa.RSAPrivateKey | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        nonce = secrets.token_hex(6)
        plaintext = json.dumps(resource, ensure_ascii=False).encode()
        sealed = AESGCM(self.keys.wechat_apiv3.encode()).encrypt(
            nonce.encode(), plaintext, original_type.encode()
        )
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": datetime.now(UTC).isoformat(),
            "resource_type": "encrypt-resource",
            "event_type": kind,
            "summary": "支付成功" if kind.startswith("TRANSACTION") else "退款成功",
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        body = json.dumps(envelope, ensure_ascii=False).encode()
        return body, self.headers(body, key=key)

    def paid_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._callback(
            "TRANSACTION.SUCCESS", "transaction", self.transaction(order, "SUCCESS")
        )

    def forged_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._callback(
            "TRANSACTION.SUCCESS",
            "transaction",
            self.transaction(order, "SUCCESS"),
            key=self.keys.stranger,
        )

    def foreign_webhook(self, order: Order) -> tuple[bytes, dict[str, str]]:
        return self._callback(
            "TRANSACTION.SUCCESS",
            "transaction",
            self.transaction(order, "SUCCESS", mchid="1900009999"),
        )

    def _query_route(self, order: Order, state: str) -> respx.Route:
        def query(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            assert request.url.params["mchid"] == WECHAT_MCHID
            return self.signed(200, self.transaction(order, state))

        return self.router.get(
            f"{WECHAT_API}/v3/pay/transactions/out-trade-no/{order.reference}"
        ).mock(side_effect=query)

    def expect_paid_on_query(self, order: Order) -> list[respx.Route]:
        return [self._query_route(order, "SUCCESS")]

    def expect_close(self, order: Order) -> list[respx.Route]:
        def close(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            assert json.loads(request.content) == {"mchid": WECHAT_MCHID}
            return self.signed(204, None)

        return [
            self._query_route(order, "NOTPAY"),
            self.router.post(
                f"{WECHAT_API}/v3/pay/transactions/out-trade-no/{order.reference}/close"
            ).mock(side_effect=close),
        ]

    def expect_refund(self, order: Order) -> respx.Route:
        def refund(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            sent = json.loads(request.content)
            assert sent["transaction_id"] == self.transaction_id(order)
            assert sent["notify_url"] == "http://testserver/api/v1/webhooks/wechatpay"
            return self.signed(
                200,
                self._refund(order, sent["out_refund_no"], sent["amount"]["refund"], "PROCESSING"),
            )

        return self.router.post(f"{WECHAT_API}/v3/refund/domestic/refunds").mock(side_effect=refund)

    def _refund(self, order: Order, out_refund_no: str, amount: int, status: str) -> dict[str, Any]:
        return {
            "refund_id": "50000000382019052709732678859",
            "out_refund_no": out_refund_no,
            "transaction_id": self.transaction_id(order),
            "out_trade_no": order.reference,
            "channel": "ORIGINAL",
            "user_received_account": "招商银行信用卡0403",
            "create_time": datetime.now(UTC).isoformat(),
            "status": status,
            "amount": {
                "total": order.total,
                "refund": amount,
                "payer_total": order.total,
                "payer_refund": amount,
                "settlement_refund": amount,
                "settlement_total": order.total,
                "discount_refund": 0,
                "currency": "CNY",
            },
        }

    async def confirm_refund(self, client: httpx.AsyncClient, order: Order, refund: Refund) -> None:
        """WeChat Pay answers PROCESSING, then notifies `REFUND.SUCCESS` (signed, encrypted)."""
        resource = self._refund(order, refund.reference, refund.amount, "SUCCESS")
        resource["refund_status"] = resource.pop("status")
        resource["mchid"] = WECHAT_MCHID
        body, headers = self._callback("REFUND.SUCCESS", "refund", resource)
        r = await client.post("/api/v1/webhooks/wechatpay", content=body, headers=headers)
        assert r.status_code == 204, r.text

    def expect_pending_refund(self, order: Order, at: PendingAtProvider) -> None:
        """The refund call answers `PROCESSING`; `GET /v3/refund/domestic/refunds/
        {out_refund_no}` (signed, as every answer) reports it, `SUCCESS` once it is done."""
        sent: dict[str, Any] = {}
        path = "/v3/refund/domestic/refunds"

        def create(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            sent.update(json.loads(request.content))
            at.created += 1
            return self.signed(
                200,
                self._refund(order, sent["out_refund_no"], sent["amount"]["refund"], "PROCESSING"),
            )

        def read(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            assert request.url.path == f"{path}/{sent['out_refund_no']}"
            assert not request.url.query and not request.content
            at.read += 1
            status = "SUCCESS" if at.settled else "PROCESSING"
            return self.signed(
                200, self._refund(order, sent["out_refund_no"], sent["amount"]["refund"], status)
            )

        self.router.post(f"{WECHAT_API}{path}").mock(side_effect=create)
        self.router.get(url__startswith=f"{WECHAT_API}{path}/").mock(side_effect=read)

    def refund_callback(
        self, order: Order, amount: int, out_refund_no: str
    ) -> tuple[bytes, dict[str, str]]:
        resource = self._refund(order, out_refund_no, amount, "SUCCESS")
        resource["refund_status"] = resource.pop("status")
        resource["refund_id"] = "5030" + str(uuid.uuid4().int)[:25]
        resource["mchid"] = WECHAT_MCHID
        return self._callback("REFUND.SUCCESS", "refund", resource)

    def external_refund(self, order: Order, amount: int) -> tuple[bytes, dict[str, str]]:
        """A refund made in the merchant platform: its `out_refund_no` is not one of ours."""
        return self.refund_callback(order, amount, "MP" + uuid.uuid4().hex[:20].upper())

    def foreign_on_query(self, order: Order) -> list[respx.Route]:
        def query(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            return self.signed(200, self.transaction(order, "SUCCESS", mchid="1900009999"))

        return [
            self.router.get(
                f"{WECHAT_API}/v3/pay/transactions/out-trade-no/{order.reference}"
            ).mock(side_effect=query)
        ]

    def expect_h5_checkout(self) -> respx.Route:
        def create(request: httpx.Request) -> httpx.Response:
            self.check_request(request)
            return self.signed(
                200,
                {
                    "h5_url": "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb"
                    "?prepay_id=wx2016121516420242444321ca0631331346&package=1405458241"
                },
            )

        return self.router.post(f"{WECHAT_API}/v3/pay/transactions/h5").mock(side_effect=create)


PROVIDERS = [Stripe, PayPal, Alipay, WeChatPay]
Harness = Stripe | PayPal | Alipay | WeChatPay


@pytest.fixture(params=PROVIDERS, ids=lambda p: p.name)
def provider(request: pytest.FixtureRequest, keys: Keys, mock: respx.MockRouter) -> Harness:
    harness: Harness = request.param(keys, mock)
    return harness


# --- helpers ------------------------------------------------------------------------------------


async def _placed(
    client: httpx.AsyncClient, db: Database, settings: Settings, p: Harness
) -> tuple[Payer, dict[str, Any], Order]:
    payer = await new_payer(db, settings)
    route = p.expect_checkout()
    body = await place(client, payer, method=p.method)
    order = await order_row(db, body["id"])
    assert order.currency == p.currency
    p.check_checkout(route, order, body)
    return payer, body, order


async def _deliver(
    client: httpx.AsyncClient, p: Harness, signed: tuple[bytes, dict[str, str]]
) -> httpx.Response:
    body, headers = signed
    return await client.post(f"/api/v1/webhooks/{p.name}", content=body, headers=headers)


async def _events(db: Database, order: Order) -> int:
    async with db.read() as s:
        return int(
            (
                await s.execute(
                    select(func.count())
                    .select_from(ProviderEvent)
                    .where(ProviderEvent.order_id == order.id)
                )
            ).scalar_one()
        )


async def _payment(db: Database, order: Order) -> Payment:
    async with db.read() as s:
        return (await s.execute(select(Payment).where(Payment.order_id == order.id))).scalar_one()


async def _unchanged(db: Database, order: Order) -> None:
    row = await order_row(db, order.id)
    assert row.state == "pending" and row.paid_at is None and row.attention is None
    assert (await _payment(db, order)).state == "pending"
    assert not await transfers_of(db, f"order:{order.id}")


def _ok(p: Harness, r: httpx.Response) -> None:
    assert r.status_code == (204 if p.name == "wechatpay" else 200), r.text
    if p.name == "alipay":
        assert r.text == "success"


def _refused(p: Harness, r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    if p.name == "alipay":
        assert r.text == "failure"


async def _worker(app: Any, db: Database, settings: Settings) -> int:
    """The outbox worker, using the app's providers; its HTTP goes to respx."""
    worker = Worker(db, settings, concurrency=2)
    worker.shared["providers"] = app.state.providers
    try:
        return await worker.drain()
    finally:
        await worker.close()


# --- the tests ----------------------------------------------------------------------------------


async def test_checkout_opens_the_payment_at_the_provider(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    _, body, order = await _placed(client, db, settings, provider)
    assert body["state"] == "pending"
    assert body["payment"]["provider"] == provider.name
    payment = await _payment(db, order)
    assert payment.redirect_url or payment.qr_payload


async def test_a_signed_notification_credits_the_line_exactly_once(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    payer, _, order = await _placed(client, db, settings, provider)
    signed = provider.paid_webhook(order)

    first = await _deliver(client, provider, signed)
    _ok(provider, first)
    row = await order_row(db, order.id)
    assert row.state == "fulfilled" and row.attention is None
    assert row.paid_amount == order.total and row.paid_currency == order.currency
    transfers = await transfers_of(db, f"order:{order.id}")
    assert transfers

    again = await _deliver(client, provider, signed)  # the provider delivers it again
    _ok(provider, again)
    assert len(await transfers_of(db, f"order:{order.id}")) == len(transfers)
    assert await _events(db, order) == 1
    r = await client.get(f"/api/v1/orders/{order.id}", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    assert [e["outcome"] for e in r.json()["events"]] == ["fulfilled"]
    await assert_ledger_balanced(db)


async def test_the_payers_return_asks_the_provider_and_credits(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    """The return URL's query string is not trusted: the provider is asked (PayPal: the
    approved order is captured)."""
    payer, _, order = await _placed(client, db, settings, provider)
    routes = provider.expect_paid_on_query(order)
    r = await client.get(f"/api/v1/orders/{order.id}/return?paid=forged", headers=payer.auth)
    assert r.status_code == 303
    assert all(route.called for route in routes)
    assert (await order_row(db, order.id)).state == "fulfilled"
    # The webhook that follows changes nothing.
    credited = len(await transfers_of(db, f"order:{order.id}"))
    _ok(provider, await _deliver(client, provider, provider.paid_webhook(order)))
    assert len(await transfers_of(db, f"order:{order.id}")) == credited
    await assert_ledger_balanced(db)


async def test_check_now_asks_the_provider_and_credits(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    """"Check now" (`POST /orders/{id}/check`) asks each provider as the return does (PayPal:
    the approved order is captured) and credits once; asking again changes nothing."""
    payer, _, order = await _placed(client, db, settings, provider)
    routes = provider.expect_paid_on_query(order)
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "fulfilled"
    assert all(route.called for route in routes)
    credited = len(await transfers_of(db, f"order:{order.id}"))
    assert credited
    again = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert again.status_code == 200 and again.json()["state"] == "fulfilled"
    assert len(await transfers_of(db, f"order:{order.id}")) == credited
    await assert_ledger_balanced(db)


async def test_paypal_approval_webhook_captures_in_the_worker(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    paypal = PayPal(keys, mock)
    _, _, order = await _placed(client, db, settings, paypal)
    _ok(paypal, await _deliver(client, paypal, paypal.approved_webhook(order)))
    assert (await order_row(db, order.id)).state == "pending"  # approved is not paid
    _query, capture = paypal.expect_paid_on_query(order)
    await _worker(shop, db, settings)
    assert capture.call_count == 1
    request = capture.calls.last.request
    assert request.headers["PayPal-Request-Id"] == f"{order.reference}-capture"
    assert (await order_row(db, order.id)).state == "fulfilled"
    # PayPal then announces the capture: already credited.
    _ok(paypal, await _deliver(client, paypal, paypal.paid_webhook(order)))
    assert (await _payment(db, order)).payment_id == paypal.capture_id(order)
    await assert_ledger_balanced(db)


async def test_a_notification_for_another_merchant_is_rejected_and_changes_nothing(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    if not provider.merchant_checked:
        pytest.skip("Stripe signs with the account's own secret: no merchant id to compare")
    _, _, order = await _placed(client, db, settings, provider)
    flagged = WEBHOOKS.labels(provider.name, "rejected:foreign")
    before = flagged._value.get()
    r = await _deliver(client, provider, provider.foreign_webhook(order))
    _refused(provider, r)
    assert flagged._value.get() == before + 1
    await _unchanged(db, order)
    assert await _events(db, order) == 0
    # Ours still counts afterwards.
    _ok(provider, await _deliver(client, provider, provider.paid_webhook(order)))
    assert (await order_row(db, order.id)).state == "fulfilled"


async def test_a_bad_signature_is_refused_and_changes_nothing(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    _, _, order = await _placed(client, db, settings, provider)
    r = await _deliver(client, provider, provider.forged_webhook(order))
    _refused(provider, r)
    await _unchanged(db, order)
    assert await _events(db, order) == 0
    # A genuine notification whose body was altered after signing: refused too.
    body, headers = provider.paid_webhook(order)
    tampered = (
        body.replace(b"TRADE_SUCCESS", b"TRADE_FINISHED")
        if provider.name == "alipay"
        else body[:-1] + b" }"
        if body.endswith(b"}")
        else body + b" "
    )
    _refused(provider, await _deliver(client, provider, (tampered, headers)))
    await _unchanged(db, order)


async def test_cancel_closes_at_the_provider_first(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    payer, _, order = await _placed(client, db, settings, provider)
    routes = provider.expect_close(order)
    r = await client.post(f"/api/v1/orders/{order.id}/cancel", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled"
    assert all(route.called for route in routes)
    if isinstance(provider, Alipay):
        assert provider.closed_at_provider(order)
    if isinstance(provider, Stripe):
        assert routes[1].call_count == 1  # the session was expired
    assert not await transfers_of(db, f"order:{order.id}")


async def test_a_refund_is_made_at_the_provider_and_settles_the_ledger(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    payer, _, order = await _placed(client, db, settings, provider)
    _ok(provider, await _deliver(client, provider, provider.paid_webhook(order)))
    issued = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write", "orders:read"]))
    staff = {"Authorization": f"Bearer {issued.token}"}
    part = order.total // 4
    r = await client.post(
        f"/api/v1/admin/orders/{order.id}/refunds",
        headers={**staff, **idem()},
        json={"amount": part, "reason": "unused"},
    )
    assert r.status_code == 202, r.text
    route = provider.expect_refund(order)
    await _worker(shop, db, settings)
    assert route.called
    # Staff's reason is their own note: PayPal (`note_to_payer`), WeChat Pay and Alipay would show
    # it to the payer, so it is never sent.
    assert all(b"unused" not in call.request.content for call in route.calls)
    async with db.read() as s:
        refund = (await s.execute(select(Refund).where(Refund.order_id == order.id))).scalar_one()
    await provider.confirm_refund(client, order, refund)
    async with db.read() as s:
        refund = (await s.execute(select(Refund).where(Refund.order_id == order.id))).scalar_one()
    assert refund.state == "succeeded", refund.error
    row = await order_row(db, order.id)
    assert row.state == "partially_refunded" and row.refunded_amount == part
    assert row.attention is None
    posted = await transfers_of(db, f"refund:{refund.id}")
    assert posted and all(t.kind in ("pending", "post_pending") for t in posted)
    assert {t.kind for t in posted} == {"pending", "post_pending"}
    await assert_ledger_balanced(db)
    r = await client.get(f"/api/v1/orders/{order.id}", headers=payer.auth)
    assert r.json()["refunds"][0]["state"] == "succeeded"



# --- merchants, refunds and chargebacks at the provider, deliveries kept as they came ---------


async def _staff(db: Database) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write", "orders:read"]))
    return {"Authorization": f"Bearer {issued.token}"}


async def _refunds(db: Database, order: Order) -> list[Refund]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(Refund).where(Refund.order_id == order.id).order_by(Refund.created_at)
                )
            ).scalars()
        )


async def _holdings(db: Database, payer: Payer) -> tuple[int, list[tuple[str, int]]]:
    """The line's money and what is left of each unit."""
    async with db.read() as s:
        line = await s.get(Line, payer.line.id)
        assert line is not None
        balances = await line_balances(s, line)
    return balances.wallet.available, sorted((u.unit, u.remaining) for u in balances.units)


async def _sms(db: Database, payer: Payer) -> int:
    async with db.read() as s:
        line = await s.get(Line, payer.line.id)
        assert line is not None
        balances = await line_balances(s, line)
    return sum(u.remaining for u in balances.units if u.unit == "SMS")


@pytest.mark.parametrize("harness", [PayPal, WeChatPay], ids=["paypal", "wechatpay"])
async def test_an_answer_naming_another_merchant_is_flagged_and_not_credited(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    harness: type[PayPal] | type[WeChatPay],
) -> None:
    """The payer's return and "check now" ask the provider; an answer about a payment to
    another merchant (PayPal payee, WeChat Pay mchid) is never credited: finance is told."""
    p = harness(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    routes = p.foreign_on_query(order)
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert all(route.called for route in routes)
    row = await order_row(db, order.id)
    assert row.state == "pending" and row.paid_at is None
    assert row.attention == "merchant_mismatch"
    assert "FOREIGNMERCH1" in (row.attention_note or "") or "1900009999" in (
        row.attention_note or ""
    )
    assert not await transfers_of(db, f"order:{order.id}")
    payment = await _payment(db, order)
    assert payment.state == "pending" and payment.next_check_at is not None
    # The return asks again: still nothing credited.
    await client.get(f"/api/v1/orders/{order.id}/return", headers=payer.auth)
    assert (await order_row(db, order.id)).state == "pending"
    # It still expires on time, credited nothing (WeChat Pay is not asked to close a payment it
    # says is another merchant's).
    clock.freeze(order.expires_at)
    await reconcile(db, shop.state.providers)
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.paid_at) == ("expired", "merchant_mismatch", None)
    assert not await transfers_of(db, f"order:{order.id}")
    if isinstance(p, WeChatPay):
        assert "1900009999" in ((await _payment(db, order)).last_error or "")


async def test_a_refund_made_at_the_provider_is_recorded_and_flagged(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    """A refund nobody asked simcharge for (the provider's dashboard): the money going back is
    recorded as a refund and posted to the ledger; nothing is taken from the line; finance sees
    it among the payments needing attention. Delivered twice, recorded once."""
    payer, _, order = await _placed(client, db, settings, provider)
    _ok(provider, await _deliver(client, provider, provider.paid_webhook(order)))
    sms = await _sms(db, payer)
    part = order.total // 4
    signed = provider.external_refund(order, part)
    r = await _deliver(client, provider, signed)
    _ok(provider, r)
    assert r.headers["simcharge-outcome"] == ("flagged" if provider.name in ("stripe", "alipay")
                                              else "provider_refund")
    _ok(provider, await _deliver(client, provider, signed))
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount) == ("partially_refunded", part)
    assert row.attention == "provider_refund"
    [refund] = await _refunds(db, order)
    assert (refund.state, refund.amount, refund.requested_by) == (
        "succeeded", part, f"provider:{provider.name}")
    money = await transfers_of(db, f"refund:{refund.id}")
    assert sum(t.amount for t in money) == part and {t.kind for t in money} == {"posted"}
    assert await _sms(db, payer) == sms  # nothing taken back from the line
    await assert_ledger_balanced(db)
    staff = await _staff(db)
    flagged = (await client.get("/api/v1/admin/orders?attention=true", headers=staff)).json()
    assert [o["id"] for o in flagged] == [str(order.id)]
    mine = (await client.get(f"/api/v1/orders/{order.id}", headers=payer.auth)).json()
    assert mine["refunded"]["minor"] == part


@pytest.mark.parametrize("harness", [Stripe, Alipay], ids=["stripe", "alipay"])
async def test_our_own_refund_reported_back_is_not_news(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    harness: type[Stripe] | type[Alipay],
) -> None:
    """Stripe's `charge.refunded` and Alipay's notification after a refund report everything
    refunded so far: a refund simcharge made is not mistaken for one made at the provider."""
    p = harness(keys, mock)
    _, _, order = await _placed(client, db, settings, p)
    _ok(p, await _deliver(client, p, p.paid_webhook(order)))
    part = order.total // 4
    r = await client.post(
        f"/api/v1/admin/orders/{order.id}/refunds",
        headers={**await _staff(db), **idem()},
        json={"amount": part, "reason": "test"},
    )
    assert r.status_code == 202
    p.expect_refund(order)
    await _worker(shop, db, settings)
    reported = p.external_refund(order, part)
    r = await _deliver(client, p, reported)
    _ok(p, r)
    assert r.headers["simcharge-outcome"] == "already"
    row = await order_row(db, order.id)
    assert (row.refunded_amount, row.attention) == (part, None)
    assert len(await _refunds(db, order)) == 1
    # A second refund, made in the provider's dashboard: only that one is news.
    r = await _deliver(client, p, p.external_refund(order, part + 100))
    assert r.headers["simcharge-outcome"] == "flagged"
    row = await order_row(db, order.id)
    assert (row.refunded_amount, row.attention) == (part + 100, "provider_refund")
    assert [x.amount for x in await _refunds(db, order)] == [part, 100]
    await assert_ledger_balanced(db)


async def test_a_paypal_reversal_after_crediting_is_recorded_and_flagged(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    paypal = PayPal(keys, mock)
    _payer, _, order = await _placed(client, db, settings, paypal)
    _ok(paypal, await _deliver(client, paypal, paypal.paid_webhook(order)))
    signed = paypal.refund_webhook(order, order.total, "PAYMENT.CAPTURE.REVERSED")
    _ok(paypal, await _deliver(client, paypal, signed))
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.attention) == (
        "refunded", order.total, "provider_refund")
    assert "PAYMENT.CAPTURE.REVERSED" in (row.attention_note or "")
    [refund] = await _refunds(db, order)
    assert refund.reason == "PAYMENT.CAPTURE.REVERSED"
    await assert_ledger_balanced(db)


async def _paid_by_card(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> tuple[Stripe, Payer, Order]:
    """An order placed and paid by card, its payment webhook delivered: what a chargeback
    test starts from."""
    stripe_ = Stripe(keys, mock)
    payer, _, order = await _placed(client, db, settings, stripe_)
    _ok(stripe_, await _deliver(client, stripe_, stripe_.paid_webhook(order)))
    return stripe_, payer, order


async def test_a_chargeback_is_flagged_for_finance_and_moves_nothing(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    stripe_, _payer, order = await _paid_by_card(client, db, settings, keys, mock)
    credited = len(await transfers_of(db, f"order:{order.id}"))
    r = await _deliver(client, stripe_, stripe_.dispute_webhook(order))
    _ok(stripe_, r)
    assert r.headers["simcharge-outcome"] == "flagged"
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.attention) == ("fulfilled", 0, "chargeback")
    assert "fraudulent" in (row.attention_note or "")
    assert await _refunds(db, order) == []
    assert len(await transfers_of(db, f"order:{order.id}")) == credited


async def test_a_lost_chargeback_is_a_refund_by_the_provider_recorded_once(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Stripe's `charge.dispute.closed` with `status: lost`: the disputed money went back to
    the payer through their bank. Before, nothing moved — the books said the operator still
    had money its Stripe balance had lost, and no credit note documented it. Now it is recorded
    once (the same news again, and `charge.dispute.updated` after it, change nothing), posted
    back from revenue, the order flagged `chargeback` with the whole story; the payer gets no
    "your refund" notice (they took it back), and the line keeps its units."""
    stripe_, payer, order = await _paid_by_card(client, db, settings, keys, mock)
    held = await _holdings(db, payer)
    opened = stripe_.dispute_webhook(order, dispute_id="du_1lost")
    _ok(stripe_, await _deliver(client, stripe_, opened))
    lost = stripe_.dispute_webhook(
        order, status="lost", event="charge.dispute.closed", dispute_id="du_1lost",
        amount=order.total - 500,
    )
    r = await _deliver(client, stripe_, lost)
    _ok(stripe_, r)
    again = stripe_.dispute_webhook(
        order, status="lost", event="charge.dispute.updated", dispute_id="du_1lost",
        amount=order.total - 500,
    )
    _ok(stripe_, await _deliver(client, stripe_, again))
    _ok(stripe_, await _deliver(client, stripe_, lost))  # a redelivery
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.attention) == (
        "partially_refunded", order.total - 500, "chargeback")
    assert "du_1lost lost" in (row.attention_note or "")
    assert "fraudulent" in (row.attention_note or "")
    [refund] = await _refunds(db, order)
    assert (refund.amount, refund.state, refund.provider_refund_id) == (
        order.total - 500, "succeeded", "du_1lost")
    assert refund.requested_by == "provider:stripe"
    [back] = await transfers_of(db, f"refund:{refund.id}")
    assert back.amount == order.total - 500
    await assert_ledger_balanced(db)
    assert await _holdings(db, payer) == held
    async with db.read() as s:
        told = await s.scalar(
            select(func.count()).select_from(Notice).where(
                Notice.account_id == payer.account_id, Notice.template == "order.refunded"
            )
        )
    assert told == 0


@pytest.mark.parametrize("decided", ["won", "warning_closed", "under_review"])
async def test_a_chargeback_not_lost_moves_nothing(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    decided: str,
) -> None:
    stripe_, _payer, order = await _paid_by_card(client, db, settings, keys, mock)
    credited = len(await transfers_of(db, f"order:{order.id}"))
    closed = stripe_.dispute_webhook(order, status=decided, event="charge.dispute.closed")
    _ok(stripe_, await _deliver(client, stripe_, closed))
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.attention) == ("fulfilled", 0, "chargeback")
    assert await _refunds(db, order) == []
    assert len(await transfers_of(db, f"order:{order.id}")) == credited


async def test_a_lost_chargeback_without_its_amount_is_left_to_finance(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    stripe_, _payer, order = await _paid_by_card(client, db, settings, keys, mock)
    body, _ = stripe_.dispute_webhook(
        order, status="lost", event="charge.dispute.closed", dispute_id="du_1noamount"
    )
    event = json.loads(body)
    del event["data"]["object"]["amount"]
    cut = json.dumps(event).encode()
    _ok(stripe_, await _deliver(client, stripe_, (cut, stripe_.headers(cut))))
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.attention) == ("fulfilled", 0, "chargeback")
    assert "du_1noamount lost: amount not reported" in (row.attention_note or "")
    assert await _refunds(db, order) == []
    await assert_ledger_balanced(db)


async def test_a_refunded_status_before_the_payment_credits_nothing(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Alipay's `TRADE_CLOSED` (paid, then refunded in full) arrives before its
    `TRADE_SUCCESS`: the payment is recorded, not credited; the money in and out is in the
    ledger; the success that follows changes nothing."""
    alipay = Alipay(keys, mock)
    payer, _, order = await _placed(client, db, settings, alipay)
    r = await _deliver(client, alipay, alipay.refunded_notify(order, order.total, closed=True))
    _ok(alipay, r)
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.refunded_amount) == (
        "refunded", "provider_refund", order.total)  # paid, refunded whole: awaits no credit
    assert row.fulfilled_at is None
    [held] = await transfers_of(db, f"order:{order.id}")
    assert (held.code, held.amount) == ("unapplied", order.total)
    [refund] = await _refunds(db, order)
    [back] = await transfers_of(db, f"refund:{refund.id}")
    assert (back.debit_account_id, back.credit_account_id) == (
        held.credit_account_id, held.debit_account_id)
    _ok(alipay, await _deliver(client, alipay, alipay.paid_webhook(order)))
    row = await order_row(db, order.id)
    assert (row.state, row.fulfilled_at) == ("refunded", None)
    assert await _sms(db, payer) == 0
    await assert_ledger_balanced(db)


@pytest.mark.parametrize("harness", [WeChatPay, PayPal], ids=["wechatpay", "paypal"])
async def test_a_refund_reported_before_its_payment_credits_nothing(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    harness: type[WeChatPay] | type[PayPal],
) -> None:
    """Reordered notifications: the refund (WeChat Pay `REFUND.SUCCESS`, naming our order;
    PayPal's reversal, naming only the capture, stored until the capture is known) comes before
    the payment's. The payment is then recorded, not credited in full."""
    p = harness(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    _ok(p, await _deliver(client, p, p.external_refund(order, order.total)))
    assert (await order_row(db, order.id)).state == "pending"
    r = await _deliver(client, p, p.paid_webhook(order))
    _ok(p, r)
    assert r.headers["simcharge-outcome"] == "flagged"
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.refunded_amount) == (
        "refunded", "provider_refund", order.total)
    assert await _sms(db, payer) == 0
    [refund] = await _refunds(db, order)
    assert refund.requested_by == f"provider:{p.name}"
    assert [t.code for t in await transfers_of(db, f"order:{order.id}")] == ["unapplied"]
    async with db.read() as s:
        events = (
            await s.execute(select(ProviderEvent).where(ProviderEvent.order_id == order.id))
        ).scalars().all()
    assert len(events) == 2 and all(e.processed_at is not None for e in events)
    await assert_ledger_balanced(db)


async def test_a_wechat_pay_query_answering_refund_records_no_amount_it_does_not_report(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """The payment's notification is lost and "check now" finds `trade_state` `REFUND` ("转入退款"):
    paid, then refunded in the merchant platform — a quarter of it, which the query does not
    say (any refund, a partial one too, turns the state to `REFUND`). The payment is recorded,
    not credited, and flagged; nothing is recorded as refunded until the refund's own
    `REFUND.SUCCESS` says how much: that much, and the rest stays held for the payer."""
    p = WeChatPay(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    p._query_route(order, "REFUND")
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.refunded_amount, row.fulfilled_at) == (
        "paid", "provider_refund", 0, None)
    assert "amount not reported" in (row.attention_note or "")
    assert [t.code for t in await transfers_of(db, f"order:{order.id}")] == ["unapplied"]
    assert await _refunds(db, order) == []
    part = order.total // 4
    _ok(p, await _deliver(client, p, p.external_refund(order, part)))
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.refunded_amount) == ("paid", "provider_refund", part)
    [refund] = await _refunds(db, order)
    assert (refund.amount, refund.requested_by) == (part, "provider:wechatpay")
    assert await _sms(db, payer) == 0
    await assert_ledger_balanced(db)


async def test_paypals_certificate_out_of_reach_is_a_503_to_retry(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """The notification cannot be verified now: PayPal is told to deliver it again later
    (problem+json, `Retry-After`); nothing is stored. The next delivery is applied."""
    paypal = PayPal(keys, mock)
    _, _, order = await _placed(client, db, settings, paypal)
    signed = paypal.paid_webhook(order)
    mock.get(PAYPAL_CERT_URL).respond(503)
    r = await _deliver(client, paypal, signed)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] == "60"
    assert r.json()["type"].endswith("/notification-unverifiable")
    await _unchanged(db, order)
    assert await _events(db, order) == 0
    mock.get(PAYPAL_CERT_URL).mock(side_effect=httpx.ConnectTimeout("no route"))
    assert (await _deliver(client, paypal, signed)).status_code == 503
    mock.get(PAYPAL_CERT_URL).respond(200, content=keys.paypal_chain)
    _ok(paypal, await _deliver(client, paypal, signed))
    assert (await order_row(db, order.id)).state == "fulfilled"


MALFORMED_BODY = json.dumps({"id": "x", "event_type": "TRANSACTION.SUCCESS", "resource": {}})


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        # Read before the signature is checked (the serial is public): 400 digits, a superscript
        ("wechatpay", {"wechatpay-timestamp": "1" + "0" * 400}),
        ("wechatpay", {"wechatpay-timestamp": "\u00b2"}),
        # A transmission time whose offset takes it past the calendar's end in UTC
        ("paypal", {"paypal-transmission-time": "9999-12-31T23:59:59-23:59"}),
        # A non-ASCII signature, which `hmac.compare_digest` refuses to compare as a str
        ("stripe", {"stripe-signature": "t=1700000000,v1=\u00e9"}),
        ("sandbox", {"sandbox-signature": "t=1700000000,v1=\u00e9"}),
        ("stripe", {"stripe-signature": "t=\u00b2,v1=00"}),
    ],
    ids=["wechat-long", "wechat-superscript", "paypal-time", "stripe-e", "sandbox-e", "stripe-t"],
)
async def test_a_malformed_notification_is_refused_as_the_provider_expects(
    shop: Any, client: httpx.AsyncClient, db: Database, name: str, headers: dict[str, str]
) -> None:
    """Headers an attacker controls, read before any signature is verified, are refused with the
    provider's own failure answer (and counted), never a 500; nothing is stored."""
    full = {
        "wechatpay": {"wechatpay-serial": WECHAT_PUB_KEY_ID, "wechatpay-nonce": "n",
                      "wechatpay-signature": "AAAA"},
        "paypal": {"paypal-transmission-id": "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
                   "paypal-transmission-sig": "AAAA", "paypal-cert-url": PAYPAL_CERT_URL,
                   "paypal-auth-algo": "SHA256withRSA"},
    }.get(name, {}) | headers
    raw = [(k.encode(), v.encode("latin-1")) for k, v in full.items()]
    r = await client.post(f"/api/v1/webhooks/{name}", content=MALFORMED_BODY.encode(),
                          headers=[(b"content-type", b"application/json"), *raw])
    assert r.status_code == 400, r.text
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(ProviderEvent))).scalar_one() == 0


def test_times_at_the_calendars_edges_are_no_times() -> None:
    from simcharge.payments.providers._common import (
        epoch_seconds,
        parse_china_time,
        parse_rfc3339,
    )

    assert parse_rfc3339("9999-12-31T23:59:59-23:59") is None
    assert parse_rfc3339("0001-01-01T00:00:00+23:59") is None
    assert parse_rfc3339("2025-01-01T18:05:12+08:00") == datetime(2025, 1, 1, 10, 5, 12, tzinfo=UTC)
    assert parse_china_time("0001-01-01 00:00:00") is None
    assert parse_china_time("2025-01-01 18:05:12") == datetime(2025, 1, 1, 10, 5, 12, tzinfo=UTC)
    assert [epoch_seconds(v) for v in ("1700000000", "\u00b2", "1" * 13, "", "-1")] == [
        1700000000, None, None, None, None]


async def test_a_sandbox_notification_never_speaks_for_another_providers_order(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    """The sandbox's secret signs only the sandbox's own payments: a `payment.succeeded` or a
    refund signed with it, naming an order paid through a real provider by its reference (the
    payer sees it) and its very amount, is stored, answered 200 (the sandbox would deliver it
    again otherwise) and applied to nothing."""
    _, _, order = await _placed(client, db, settings, provider)
    obj = {"id": "sbx_forged", "reference": order.reference, "amount": order.total,
           "currency": order.currency, "state": "paid", "merchant": "sandbox-merchant",
           "paid_at": utcnow().isoformat(), "refund_id": "rf-forged", "refund_amount": 1}
    for kind in ("payment.succeeded", "refund.succeeded"):
        body, headers = signed_event(settings, kind, obj)
        r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
        assert r.status_code == 200, r.text
    await _unchanged(db, order)
    assert await _events(db, order) == 0  # stored, about no order
    async with db.read() as s:
        stored = (
            await s.execute(select(ProviderEvent).where(ProviderEvent.provider == "sandbox"))
        ).scalars().all()
    # The payment is ignored; the refund waits, unprocessed, for a sandbox payment it could be
    # about (as refund news arriving before its payment does), and is never applied to this one.
    assert {(e.event_type, e.order_id, e.outcome) for e in stored} == {
        ("payment.succeeded", None, "ignored"), ("refund.succeeded", None, None)}
    await assert_ledger_balanced(db)


async def test_a_staff_check_is_audited_before_the_provider_is_asked_and_after(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Staff's "check with provider" may capture a PayPal payment: who asked is committed to the
    audit log before PayPal is called (`order.check.asked`), and the answer after
    (`order.check`), also when PayPal could not be reached (503, nothing captured)."""
    from simcharge.backoffice.models import AuditEntry
    from tests.backoffice.helpers import new_staff

    paypal = PayPal(keys, mock)
    _, _, order = await _placed(client, db, settings, paypal)
    agent = await new_staff(db, settings, "agent")
    oid = paypal.order_id(order)
    query = mock.get(f"{PAYPAL_API}/v2/checkout/orders/{oid}").respond(503, json={})
    url = f"/api/v1/admin/orders/{order.id}/check"
    r = await client.post(url, headers=agent.auth)
    assert r.status_code == 503, r.text
    assert query.called
    await _unchanged(db, order)

    async def audited() -> list[tuple[str, Any]]:
        async with db.read() as s:
            rows = (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.target_id == str(order.id))
                    .order_by(AuditEntry.at, AuditEntry.id)
                )
            ).scalars()
            return [(e.action, (e.details or {}).get("outcome")) for e in rows]

    assert await audited() == [("order.check.asked", None), ("order.check", "failed")]
    routes = paypal.expect_paid_on_query(order)
    r = await client.post(url, headers=agent.auth)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "fulfilled" and r.json()["state"] == "fulfilled"
    query_again, capture = routes
    assert query_again.called and capture.call_count == 1
    assert await audited() == [
        ("order.check.asked", None), ("order.check", "failed"),
        ("order.check.asked", None), ("order.check", "fulfilled"),
    ]  # fmt: skip
    await assert_ledger_balanced(db)


SIGNED_HEADERS = {
    "stripe": {"stripe-signature"},
    "paypal": {
        "paypal-transmission-id",
        "paypal-transmission-time",
        "paypal-transmission-sig",
        "paypal-cert-url",
        "paypal-auth-algo",
    },
    "alipay": set(),
    "wechatpay": {
        "wechatpay-timestamp",
        "wechatpay-nonce",
        "wechatpay-signature",
        "wechatpay-serial",
        "wechatpay-signature-type",
    },
}


async def test_a_notification_is_kept_as_delivered(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    """The body as delivered and the headers its signature depends on, so that it can be
    verified again; WeChat Pay's resource kept encrypted, and decrypted beside it."""
    _, _, order = await _placed(client, db, settings, provider)
    body, headers = provider.paid_webhook(order)
    _ok(provider, await _deliver(client, provider, (body, headers)))
    async with db.read() as s:
        event = (
            await s.execute(select(ProviderEvent).where(ProviderEvent.order_id == order.id))
        ).scalar_one()
    assert event.body == body.decode()
    sent = {k.lower(): v for k, v in headers.items()}
    assert event.headers == {
        name: sent[name] for name in SIGNED_HEADERS[provider.name] | {"content-type"}
    }
    if isinstance(provider, WeChatPay):
        assert "ciphertext" in event.body and order.reference not in event.body
        assert event.payload["resource"]["out_trade_no"] == order.reference


async def test_stripes_client_secret_is_not_kept(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """The one secret a provider puts in a notification: blanked in the stored body (the rest
    of it byte for byte) and in the decoded payload."""
    stripe_ = Stripe(keys, mock)
    _, _, order = await _placed(client, db, settings, stripe_)
    secret = f"cs_test_a1{order.reference}_secret_" + secrets.token_hex(8)
    body, headers = stripe_.paid_webhook(order, client_secret=secret)
    _ok(stripe_, await _deliver(client, stripe_, (body, headers)))
    async with db.read() as s:
        event = (
            await s.execute(select(ProviderEvent).where(ProviderEvent.order_id == order.id))
        ).scalar_one()
    assert secret not in (event.body or "") and secret not in json.dumps(event.payload)
    assert event.body == body.decode().replace(secret, "[removed]")
    assert (await order_row(db, order.id)).state == "fulfilled"


@pytest.mark.parametrize(
    ("how", "agent"),
    [
        ("flow", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148"),
    ],
)
async def test_alipay_on_a_phone_opens_the_mobile_page(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    how: str,
    agent: str,
) -> None:
    """`wap.pay` — asked for with `flow`, or chosen for a phone's browser."""
    alipay = Alipay(keys, mock)
    payer = await new_payer(db, settings)
    extra = {"flow": "wap"} if how == "flow" else {}
    client.headers["User-Agent"] = agent
    body = await place(client, payer, method="alipay", **extra)
    assert body["payment"]["flow"] == "wap"
    url = urlparse(body["next_action"]["url"])
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    sign = params.pop("sign")
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if v).encode()
    _rsa_verify(keys.alipay_app, content, sign)
    assert params["method"] == "alipay.trade.wap.pay"
    biz = json.loads(params["biz_content"])
    assert biz["product_code"] == "QUICK_WAP_WAY"
    assert biz["quit_url"].endswith(f"/api/v1/orders/{body['id']}/return?cancelled=1")
    assert not alipay.calls


@pytest.mark.parametrize(
    ("how", "agent"),
    [
        ("flow", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"),
        ("agent", "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36"),
    ],
)
async def test_wechatpay_on_a_phone_opens_h5_with_the_payers_ip(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    how: str,
    agent: str,
) -> None:
    wechat = WeChatPay(keys, mock)
    route = wechat.expect_h5_checkout()
    payer = await new_payer(db, settings)
    extra = {"flow": "wap"} if how == "flow" else {}
    client.headers["User-Agent"] = agent
    body = await place(client, payer, method="wechatpay", **extra)
    assert route.call_count == 1
    sent = json.loads(route.calls.last.request.content)
    assert sent["scene_info"] == {
        "payer_client_ip": "127.0.0.1",
        "h5_info": {"type": "Wap"},
    }
    assert body["payment"]["flow"] == "wap"
    assert body["next_action"]["type"] == "redirect"
    assert body["next_action"]["url"].startswith("https://wx.tenpay.com/cgi-bin/mmpayweb-bin/")
    assert "redirect_url=http%3A%2F%2Ftestserver%2Fapi%2Fv1%2Forders%2F" in body["next_action"]["url"]


async def test_wechatpay_inside_wechat_gets_the_qr_code(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """WeChat's own browser refuses H5 payments: a QR code it can recognise instead."""
    wechat = WeChatPay(keys, mock)
    route = wechat.expect_checkout()
    payer = await new_payer(db, settings)
    client.headers["User-Agent"] = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148 MicroMessenger/8.0.50"
    )
    body = await place(client, payer, method="wechatpay")
    assert route.call_count == 1
    assert body["payment"]["flow"] == "qr" and body["next_action"]["type"] == "qr"


async def test_a_close_refused_for_good_still_expires_and_a_late_payment_is_found(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Alipay refuses to close the trade for a reason that will not change: the order expires
    on time anyway (the refusal is kept). The page stayed open and the payer paid; the
    notification is lost: the reconciliation job's later look finds it."""
    alipay = Alipay(keys, mock)
    _, _, order = await _placed(client, db, settings, alipay)
    alipay.answers["alipay.trade.query"] = lambda biz: alipay._trade(order, "WAIT_BUYER_PAY")
    alipay.answers["alipay.trade.close"] = lambda biz: {
        "code": "40004",
        "msg": "Business Failed",
        "sub_code": "ACQ.INVALID_PARAMETER",
        "sub_msg": "参数无效",
    }
    clock.freeze(order.expires_at)
    assert await reconcile(db, shop.state.providers) == 1
    assert alipay.closed_at_provider(order)
    expired = await order_row(db, order.id)
    assert (expired.state, expired.closed_at) == ("expired", order.expires_at)
    payment = await _payment(db, order)
    assert "ACQ.INVALID_PARAMETER" in (payment.last_error or "")
    assert payment.next_check_at == order.expires_at + LATE_CHECK_FIRST

    alipay.answers["alipay.trade.query"] = lambda biz: alipay._trade(order, "TRADE_SUCCESS")
    clock.freeze(order.expires_at + LATE_CHECK_FIRST)
    assert await reconcile(db, shop.state.providers) == 1
    late = await order_row(db, order.id)
    assert (late.state, late.attention) == ("fulfilled", "late_success")
    assert await transfers_of(db, f"order:{order.id}")
    await assert_ledger_balanced(db)


async def test_an_alipay_trade_closed_after_its_payment_is_a_full_refund(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """`TRADE_CLOSED` of a paid trade: refunded in full at Alipay (not a cancellation)."""
    alipay = Alipay(keys, mock)
    payer, _, order = await _placed(client, db, settings, alipay)
    _ok(alipay, await _deliver(client, alipay, alipay.paid_webhook(order)))
    sms = await _sms(db, payer)
    r = await _deliver(client, alipay, alipay.refunded_notify(order, order.total, closed=True))
    _ok(alipay, r)
    assert r.headers["simcharge-outcome"] == "flagged"
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.attention) == (
        "refunded", order.total, "provider_refund")
    assert "TRADE_CLOSED" in (row.attention_note or "")
    assert await _sms(db, payer) == sms
    await assert_ledger_balanced(db)


async def test_the_portal_on_a_phone_opens_alipays_mobile_page(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """The portal places the order with the browser's User-Agent, as the API does: "Pay now" on
    a phone goes to Alipay's mobile page (`wap.pay`), on a desktop to its website."""
    from tests.portal.helpers import new_customer, portal_order, sign_in

    Alipay(keys, mock)
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    expected = {
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148": "alipay.trade.wap.pay",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0": "alipay.trade.page.pay",
    }
    for agent, method in expected.items():
        client.headers["User-Agent"] = agent
        _, went = await portal_order(client, customer.line.id, method="alipay")
        params = dict(parse_qsl(urlparse(went).query, keep_blank_values=True))
        assert params.get("method") == method, (agent, went)


async def test_the_portal_on_a_phone_opens_wechat_pays_h5_page(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, keys: Keys,
    mock: respx.MockRouter,
) -> None:
    from tests.portal.helpers import new_customer, portal_order, sign_in

    route = WeChatPay(keys, mock).expect_h5_checkout()
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    client.headers["User-Agent"] = "Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36"
    _, went = await portal_order(client, customer.line.id, method="wechatpay")
    assert route.call_count == 1
    assert went.startswith("https://wx.tenpay.com/cgi-bin/mmpayweb-bin/")


# --- our refunds the provider answers as pending ----------------------------------------------


async def _refund_answered_pending(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, p: Harness
) -> tuple[Order, PendingAtProvider]:
    """A paid order, a quarter of it refunded by finance; the provider answers `pending`."""
    _, _, order = await _placed(client, db, settings, p)
    _ok(p, await _deliver(client, p, p.paid_webhook(order)))
    r = await client.post(
        f"/api/v1/admin/orders/{order.id}/refunds",
        headers={**await _staff(db), **idem()},
        json={"amount": order.total // 4, "reason": "unused"},
    )
    assert r.status_code == 202, r.text
    at = PendingAtProvider()
    p.expect_pending_refund(order, at)
    await _worker(shop, db, settings)
    assert at.created == 1
    [refund] = await _refunds(db, order)
    assert refund.state == "pending"
    if not isinstance(p, Alipay):  # Alipay has no refund id of its own: ours is asked about
        assert refund.provider_refund_id  # kept from the answer, to read the refund by
    held = await transfers_of(db, f"refund:{refund.id}")
    assert held and {t.kind for t in held} == {"pending"}
    return order, at


async def test_a_pending_refund_is_read_at_the_provider_and_settles_the_ledger(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    """The follow-up reads the refund (Stripe `GET /v1/refunds/{id}`, PayPal `GET
    /v2/payments/refunds/{id}`, Alipay `alipay.trade.fastpay.refund.query`, WeChat Pay `GET
    /v3/refund/domestic/refunds/{out_refund_no}`) instead of asking for it again — which
    Stripe and PayPal answer with the first answer, unchanged — and applies what it reads."""
    order, at = await _refund_answered_pending(shop, client, db, settings, provider)
    read = at.read  # Alipay confirms a refund that moved no money at once
    at.settled = True
    clock.freeze(utcnow() + timedelta(minutes=3))
    await _worker(shop, db, settings)
    assert (at.created, at.read) == (1, read + 1)
    [refund] = await _refunds(db, order)
    assert refund.state == "succeeded", refund.error
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.attention) == (
        "partially_refunded", order.total // 4, None)
    posted = await transfers_of(db, f"refund:{refund.id}")
    assert {t.kind for t in posted} == {"pending", "post_pending"}
    await assert_ledger_balanced(db)


async def _follow_up_due(db: Database, refund: Refund, follow_up: int) -> datetime | None:
    """When the `follow_up`th read of a refund is scheduled (None: it is not)."""
    async with db.read() as s:
        return (
            await s.execute(
                select(OutboxJob.run_at).where(
                    OutboxJob.dedupe_key == f"{REFUND_JOB}:{refund.id}:{follow_up}",
                    OutboxJob.status == "pending",
                )
            )
        ).scalar_one_or_none()


async def test_a_refund_that_stays_pending_is_read_for_ten_days_and_never_made_again(
    shop: Any, client: httpx.AsyncClient, db: Database, settings: Settings, provider: Harness
) -> None:
    """Read at every follow-up — 2, 4, 8 … 128 minutes apart, then every 4 hours, for 10 days
    (a refund to a bank card takes WeChat Pay 1–3 working days; a PayPal eCheck up to 6
    business days to clear) — and made once: nothing posted or voided while the provider
    says pending. Finance is told after the last read, not before."""
    order, at = await _refund_answered_pending(shop, client, db, settings, provider)
    read = at.read
    [refund] = await _refunds(db, order)
    answered: datetime | None = None
    previous: datetime | None = None
    for n in range(1, REFUND_FOLLOW_UPS + 1):
        due = await _follow_up_due(db, refund, n)
        assert due is not None, n
        if previous is None:
            answered = due - refund_follow_up_delay(1)
        else:
            assert due - previous == refund_follow_up_delay(n), n
        clock.freeze(due)
        await _worker(shop, db, settings)
        assert (at.created, at.read) == (1, read + n), n
        row = await order_row(db, order.id)
        assert (row.attention == "refund_pending") is (n == REFUND_FOLLOW_UPS), n
        previous = due
    assert answered is not None and previous is not None
    assert previous - answered == REFUND_FOLLOW_UP_SPAN >= timedelta(days=10)
    assert await _follow_up_due(db, refund, REFUND_FOLLOW_UPS + 1) is None
    clock.freeze(utcnow() + timedelta(days=30))
    await _worker(shop, db, settings)
    assert (at.created, at.read) == (1, read + REFUND_FOLLOW_UPS)  # no read after the last
    [refund] = await _refunds(db, order)
    assert refund.state == "pending"
    assert {t.kind for t in await transfers_of(db, f"refund:{refund.id}")} == {"pending"}
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount) == ("fulfilled", 0)
    # After the last follow-up finance is told (payments needing attention), not only the log.
    assert row.attention == "refund_pending" and refund.reference in (row.attention_note or "")
    await assert_ledger_balanced(db)


async def test_a_refund_read_refused_is_read_again_and_nothing_is_voided(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Stripe once answers the read 404 (a refusal that is not transient): the refund it
    accepted is not voided on that, nor made again; the next follow-up reads it done."""
    stripe_ = Stripe(keys, mock)
    order, at = await _refund_answered_pending(shop, client, db, settings, stripe_)
    at.refused_reads, at.settled = 1, True
    clock.freeze(utcnow() + timedelta(minutes=3))
    await _worker(shop, db, settings)
    [refund] = await _refunds(db, order)
    assert (refund.state, (await order_row(db, order.id)).attention) == ("pending", None)
    clock.freeze(utcnow() + timedelta(minutes=5))
    await _worker(shop, db, settings)
    assert (at.created, at.read) == (1, 2)
    [refund] = await _refunds(db, order)
    assert refund.state == "succeeded", refund.error
    await assert_ledger_balanced(db)
