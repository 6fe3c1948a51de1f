"""Payment providers against their documentation: edges found in review round 7.

- PayPal: a capture refused with `INSTRUMENT_DECLINED` must be followed by a capture PayPal
  really makes once the payer has chosen another funding source. PayPal answers a request whose
  `PayPal-Request-Id` it has seen with "the latest status of the previous request that used that
  same header" (developer.paypal.com, "Idempotency"); every capture of an order was sent with
  the same id (`<reference>-capture`), so after a refusal PayPal answered the refusal again and
  the order could never be paid. Now a capture after an earlier answer or attempt carries a new
  id; a second capture of the same order is still harmless (`ORDER_ALREADY_CAPTURED` reports the
  first one).
- Stripe: `charge.refunded` delivered before `checkout.session.completed` (Stripe does not
  deliver events in order) names only the payment intent, which we learn from the completion:
  it found no order and was marked processed as `ignored`, so the payment was credited in full
  and the refund never recorded. Now it is kept for its payment (tried again for a day, like a
  refund reported first) and applied before the payment's success: recorded as refunded at the
  provider and not credited.
- Sandbox: a notification signed with the sandbox's secret whose object is not what the sandbox
  sends (not an object, an unreadable `paid_at`, an amount that is no integer, an id or a currency
  that is no string) raised out of `parse_notification` — a 500 — and an amount that is a JSON
  float (`2000.0`) compared equal to the order's integer total and credited it. Now each is
  rejected as `malformed`, stores nothing and credits nothing.

Real database (both, when the PostgreSQL URL is set), real signatures; respx answers only at
PayPal's and Stripe's HTTP boundaries with the shapes they document (Orders v2; Checkout
Sessions, events and charges).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import func, select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.orders.models import Order, ProviderEvent, Refund
from simcharge.payments.sandbox import sign
from simcharge.payments.service import reconcile
from tests.factories import load_demo_catalog
from tests.orders.helpers import (
    assert_ledger_balanced,
    new_payer,
    order_row,
    place,
    sandbox_object,
    signed_event,
    transfers_of,
)

PAYPAL_API = "https://api-m.paypal.com"
STRIPE_API = "https://api.stripe.com"
STRIPE_WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
PAYPAL_MERCHANT = "7MZV6QG4EXAMP"
PAYPAL_ORDER = "5O190127TN364715T"
PAYPAL_CAPTURE = "3C679366HH908993F"


@pytest.fixture(autouse=True)
async def _catalog(db: Database) -> None:
    await db.run(load_demo_catalog)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """PayPal configured (the sandbox stays on for its own orders, standing in for nobody)."""
    return settings.model_copy(
        update={
            "sandbox_stands_in": False,
            "paypal_client_id": "AaZ-test-client",
            "paypal_client_secret": SecretStr("EE-test-secret-" + secrets.token_hex(8)),
            "paypal_webhook_id": "1JE4291016473214C",
            "paypal_merchant_id": PAYPAL_MERCHANT,
            "stripe_secret_key": SecretStr("sk_test_" + secrets.token_hex(12)),
            "stripe_webhook_secret": SecretStr(STRIPE_WEBHOOK_SECRET),
        }
    )


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


class PayPalOrders:
    """PayPal's Orders v2 as documented: create, get, capture — with `PayPal-Request-Id`
    idempotency (a request id seen before is answered with that request's answer)."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.router = router
        self.unit: dict[str, Any] = {}
        self.status = "PAYER_ACTION_REQUIRED"
        self.declines = 0
        """How many of the next new capture requests the payer's funding source declines."""
        self.seen: dict[str, httpx.Response] = {}
        self.stale_reads = 0
        """How many of the next reads still show the order approved, not yet captured."""
        self.capture_ids: list[str] = []
        router.post(f"{PAYPAL_API}/v1/oauth2/token").respond(
            200,
            json={
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": "A21AAL-test-token",
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": 32400,
                "nonce": "2026-12-06T12:00:00Z",
            },
        )
        router.post(f"{PAYPAL_API}/v2/checkout/orders").mock(side_effect=self._create)
        router.get(f"{PAYPAL_API}/v2/checkout/orders/{PAYPAL_ORDER}").mock(side_effect=self._get)
        self.capture = router.post(
            f"{PAYPAL_API}/v2/checkout/orders/{PAYPAL_ORDER}/capture"
        ).mock(side_effect=self._capture)

    def _links(self) -> list[dict[str, str]]:
        return [
            {
                "href": f"{PAYPAL_API}/v2/checkout/orders/{PAYPAL_ORDER}",
                "rel": "self",
                "method": "GET",
            },
            {
                "href": f"https://www.paypal.com/checkoutnow?token={PAYPAL_ORDER}",
                "rel": "payer-action",
                "method": "GET",
            },
        ]

    def order(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": PAYPAL_ORDER,
            "intent": "CAPTURE",
            "status": self.status,
            "purchase_units": [self.unit],
            "links": self._links(),
        }
        if self.status != "PAYER_ACTION_REQUIRED":
            body["payer"] = {
                "payer_id": "QYR5Z8XDVJNXQ",
                "email_address": "buyer@example.com",
                "name": {"given_name": "Ana", "surname": "Cruz"},
            }
        return body

    def _create(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["purchase_units"][0]
        self.unit = {
            "reference_id": sent["reference_id"],
            "custom_id": sent["custom_id"],
            "invoice_id": sent["invoice_id"],
            "amount": sent["amount"],
            "payee": {"email_address": "shop@example.com", "merchant_id": PAYPAL_MERCHANT},
        }
        body = self.order()
        del body["purchase_units"]
        body["payment_source"] = {"paypal": {}}
        return httpx.Response(200, json=body)

    def _get(self, request: httpx.Request) -> httpx.Response:
        if self.stale_reads:
            self.stale_reads -= 1
            unit = {k: v for k, v in self.unit.items() if k != "payments"}
            return httpx.Response(
                200, json={**self.order(), "status": "APPROVED", "purchase_units": [unit]}
            )
        return httpx.Response(200, json=self.order())

    def _capture(self, request: httpx.Request) -> httpx.Response:
        request_id = request.headers["PayPal-Request-Id"]
        self.capture_ids.append(request_id)
        if request_id in self.seen:  # "the latest status of the previous request"
            return self.seen[request_id]
        if self.status == "COMPLETED":
            answer = httpx.Response(
                422,
                json={
                    "name": "UNPROCESSABLE_ENTITY",
                    "details": [
                        {
                            "issue": "ORDER_ALREADY_CAPTURED",
                            "description": "Order already captured. If 'intent=CAPTURE' only "
                            "one capture per order is allowed.",
                        }
                    ],
                    "message": "The requested action could not be performed, semantically "
                    "incorrect, or failed business validation.",
                    "debug_id": "f0a0a0a0a0a01",
                },
            )
        elif self.declines:
            self.declines -= 1
            answer = httpx.Response(
                422,
                json={
                    "name": "UNPROCESSABLE_ENTITY",
                    "details": [
                        {
                            "issue": "INSTRUMENT_DECLINED",
                            "description": "The instrument presented was either declined by "
                            "the processor or bank, or it can't be used for this payment.",
                        }
                    ],
                    "message": "The requested action could not be performed, semantically "
                    "incorrect, or failed business validation.",
                    "debug_id": "90957fca61718",
                    "links": [
                        {
                            "href": f"https://www.paypal.com/checkoutnow?token={PAYPAL_ORDER}",
                            "rel": "redirect",
                            "method": "GET",
                        }
                    ],
                },
            )
        else:
            self.status = "COMPLETED"
            self.unit["payments"] = {
                "captures": [
                    {
                        "id": PAYPAL_CAPTURE,
                        "status": "COMPLETED",
                        "amount": self.unit["amount"],
                        "final_capture": True,
                        "custom_id": self.unit["custom_id"],
                        "invoice_id": self.unit["invoice_id"],
                        "seller_protection": {"status": "ELIGIBLE"},
                        "create_time": "2026-12-06T12:00:05Z",
                        "update_time": "2026-12-06T12:00:05Z",
                    }
                ]
            }
            answer = httpx.Response(201, json=self.order())
        self.seen[request_id] = answer
        return answer


async def test_a_paypal_capture_declined_then_approved_again_is_captured(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    """PayPal declined the payer's funding source at capture (`INSTRUMENT_DECLINED`); the payer
    chose another one on PayPal's page and approved again. The next capture must be a new
    request: it was sent with the refused capture's `PayPal-Request-Id`, PayPal answered the
    refusal again, and the order stayed unpaid for good. Now it is captured and credited once,
    and a later capture attempt only reports the first one."""
    paypal = PayPalOrders(mock)
    payer = await new_payer(db, settings)
    body = await place(client, payer, method="paypal")
    order = await order_row(db, body["id"])
    paypal.status, paypal.declines = "APPROVED", 1

    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert (await order_row(db, order.id)).state == "pending"
    assert paypal.capture.call_count == 1
    assert not await transfers_of(db, f"order:{order.id}")

    # The payer goes back to PayPal, picks another card and approves again.
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "fulfilled"
    assert paypal.capture.call_count == 2
    first, second = paypal.capture_ids
    assert first == f"{order.reference}-capture"  # the first attempt's id is unchanged
    assert second != first
    credited = len(await transfers_of(db, f"order:{order.id}"))
    assert credited

    again = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert again.status_code == 200 and again.json()["state"] == "fulfilled"
    assert len(await transfers_of(db, f"order:{order.id}")) == credited
    await assert_ledger_balanced(db)


async def test_a_paypal_capture_that_got_no_answer_is_not_made_twice(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    """A capture PayPal made but whose answer was lost (a timeout) is tried again, now under
    another request id, while PayPal's order still reads as approved: PayPal captures an order
    once (`ORDER_ALREADY_CAPTURED`), the adapter reads the first capture, and it is credited
    once."""
    paypal = PayPalOrders(mock)
    payer = await new_payer(db, settings)
    body = await place(client, payer, method="paypal")
    order = await order_row(db, body["id"])
    paypal.status = "APPROVED"
    made = paypal._capture

    def lost(request: httpx.Request) -> httpx.Response:
        made(request)  # PayPal captures …
        raise httpx.ReadTimeout("lost", request=request)  # … and the answer never arrives

    paypal.capture.mock(side_effect=lost)
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 503
    assert (await order_row(db, order.id)).state == "pending"

    paypal.capture.mock(side_effect=made)
    paypal.stale_reads = 1
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "fulfilled"
    assert len(set(paypal.capture_ids)) == 2
    assert paypal.unit["payments"]["captures"][0]["id"] == PAYPAL_CAPTURE
    assert len(await transfers_of(db, f"order:{order.id}")) > 0
    await assert_ledger_balanced(db)


def _stripe_event(kind: str, obj: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A Stripe event as Stripe sends it, signed (`Stripe-Signature: t=…,v1=…`)."""
    now = int(utcnow().timestamp())
    event = {
        "id": f"evt_1{uuid.uuid4().hex[:22]}",
        "object": "event",
        "api_version": "2025-10-29.clover",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
        "data": {"object": obj},
    }
    body = json.dumps(event).encode()
    v1 = hmac.new(STRIPE_WEBHOOK_SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256)
    return body, {
        "content-type": "application/json",
        "stripe-signature": f"t={now},v1={v1.hexdigest()}",
    }


def _stripe_session(reference: str, total: int, currency: str, **change: Any) -> dict[str, Any]:
    sid = f"cs_test_a1{reference}"
    now = int(utcnow().timestamp())
    return {
        "id": sid,
        "object": "checkout.session",
        "amount_subtotal": total,
        "amount_total": total,
        "cancel_url": "http://testserver/cancel",
        "client_reference_id": reference,
        "created": now,
        "currency": currency.lower(),
        "expires_at": now + 3600,
        "livemode": False,
        "metadata": {"reference": reference},
        "mode": "payment",
        "payment_intent": None,
        "payment_status": "unpaid",
        "status": "open",
        "success_url": "http://testserver/return?session_id={CHECKOUT_SESSION_ID}",
        "url": f"https://checkout.stripe.com/c/pay/{sid}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
        **change,
    }


async def refunded_before_paid(
    mock: respx.MockRouter, client: httpx.AsyncClient, db: Database, settings: Settings
) -> tuple[Order, str, httpx.Response]:
    """A card order placed through Stripe (checkout mocked as documented) whose charge Stripe
    reports refunded in full before anything said it was paid: the order, its payment intent,
    and our answer to that `charge.refunded`."""

    def create(request: httpx.Request) -> httpx.Response:
        sent = parse_qs(request.content.decode())
        reference = sent["client_reference_id"][0]
        total = int(sent["line_items[0][price_data][unit_amount]"][0])
        currency = sent["line_items[0][price_data][currency]"][0]
        return httpx.Response(200, json=_stripe_session(reference, total, currency))

    mock.post(f"{STRIPE_API}/v1/checkout/sessions").mock(side_effect=create)
    payer = await new_payer(db, settings)
    body = await place(client, payer, method="card")
    order = await order_row(db, body["id"])
    intent = f"pi_3{order.reference}"
    charge = {
        "id": f"ch_3{order.reference}",
        "object": "charge",
        "amount": order.total,
        "amount_captured": order.total,
        "amount_refunded": order.total,
        "captured": True,
        "currency": order.currency.lower(),
        "metadata": {},
        "paid": True,
        "payment_intent": intent,
        "refunded": True,
        "status": "succeeded",
        "created": int(utcnow().timestamp()) - 60,
    }
    signed = _stripe_event("charge.refunded", charge)
    r = await client.post("/api/v1/webhooks/stripe", content=signed[0], headers=signed[1])
    assert r.status_code == 200, r.text
    return order, intent, r


async def test_a_stripe_refund_reported_before_its_payment_is_recorded_not_credited(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    """Stripe does not deliver events in order. A `charge.refunded` (the charge names only its
    payment intent, which we learn from the session's completion) arriving before
    `checkout.session.completed` found no order and was marked processed as `ignored`: the
    payment was then credited in full and the refund never recorded — the payer had the money
    back and the line kept the credit, unseen by finance. Now it is kept for its payment and
    applied first when the payment is reported, as a refund reported first: the payment is
    recorded as refunded at the provider and not credited (README "The money rules")."""
    clock.freeze(utcnow())

    order, intent, _ = await refunded_before_paid(mock, client, db, settings)

    clock.advance(seconds=5)
    paid = _stripe_session(
        order.reference, order.total, order.currency,
        status="complete", payment_status="paid", payment_intent=intent,
    )  # fmt: skip
    signed = _stripe_event("checkout.session.completed", paid)
    r = await client.post("/api/v1/webhooks/stripe", content=signed[0], headers=signed[1])
    assert r.status_code == 200, r.text

    row = await order_row(db, order.id)
    assert row.fulfilled_at is None, "a payment refunded before it was known was credited"
    assert (row.state, row.attention) == ("refunded", "provider_refund"), row.attention_note
    found = await _refunds(db, order)
    assert found == [(order.total, "succeeded")]
    await assert_ledger_balanced(db)
    # Nothing is left for reconciliation: a later pass records nothing more.
    clock.advance(seconds=120)
    await reconcile(db, app.state.providers)
    assert await _refunds(db, order) == found
    async with db.read() as s:
        left = (
            await s.execute(
                select(func.count())
                .select_from(ProviderEvent)
                .where(ProviderEvent.processed_at.is_(None))
            )
        ).scalar_one()
    assert left == 0


async def _refunds(db: Database, order: Order) -> list[tuple[int, str]]:
    async with db.read() as s:
        rows = (await s.execute(select(Refund).where(Refund.order_id == order.id))).scalars()
        return [(x.amount, x.state) for x in rows]


async def _stored_events(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(ProviderEvent))).scalar_one())


async def _sandbox_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> tuple[Order, dict[str, Any]]:
    payer = await new_payer(db, settings)
    body = await place(client, payer, method="sandbox")
    order = await order_row(db, body["id"])
    return order, await sandbox_object(db, order.reference)


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("payment.succeeded", {"paid_at": "yesterday"}),
        ("payment.succeeded", {"paid_at": 1733486400}),
        ("refund.succeeded", {"refund_id": "rf1", "refund_amount": "all of it"}),
        ("payment.succeeded", {"currency": 840}),
        ("payment.succeeded", {"reference": ["a", "list"]}),
        ("refund.succeeded", {"refund_id": {"an": "object"}, "refund_amount": 100}),
    ],
    ids=[
        "paid_at-not-a-time",
        "paid_at-a-number",
        "refund-amount-not-an-integer",
        "currency-a-number",
        "reference-a-list",
        "refund-id-an-object",
    ],
)
async def test_a_signed_sandbox_event_it_never_sends_is_malformed_not_a_500(
    client: httpx.AsyncClient, db: Database, settings: Settings, kind: str, change: dict[str, Any]
) -> None:
    """A sandbox event, signed with its secret, whose fields are not what the sandbox sends:
    `parse_notification` raised (a 500 to the sender). Now: the failure answer, `malformed`,
    nothing stored or credited."""
    order, obj = await _sandbox_order(client, db, settings)
    body, headers = signed_event(settings, kind, {**obj, **change})
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"received": False}
    assert await _stored_events(db) == 0
    assert (await order_row(db, order.id)).state == "pending"


async def test_a_signed_sandbox_event_whose_object_is_no_object_is_malformed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`data.object` a list: `obj.get` raised AttributeError (a 500). Now `malformed`."""
    event = {"id": "evt_list", "type": "payment.succeeded", "data": {"object": ["not", "one"]}}
    body = json.dumps(event).encode()
    headers = {
        "content-type": "application/json",
        "sandbox-signature": sign(settings.sandbox_secret.get_secret_value(), body),
    }
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert await _stored_events(db) == 0


@pytest.mark.parametrize("amount", [None, "float", "string", True])
async def test_a_sandbox_amount_that_is_no_integer_credits_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings, amount: Any
) -> None:
    """An amount of `2000.0` (a JSON float) compared equal to the order's total of 2000 minor
    units and credited the order with a float; `"2000"` or `true` are no amounts either. The
    sandbox sends integers: anything else is `malformed`, and nothing is credited. (An event
    without an amount is the documented "success naming no amount": see `null`.)"""
    order, obj = await _sandbox_order(client, db, settings)
    value = {
        None: None,
        "float": float(order.total),
        "string": str(order.total),
        True: True,
    }[amount]
    body, headers = signed_event(settings, "payment.succeeded", {**obj, "amount": value})
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    row = await order_row(db, order.id)
    if amount is None:
        assert r.status_code == 200  # stored; paid, amount unknown: nothing credited
        assert row.state == "paid"
    else:
        assert r.status_code == 400, r.text
        assert await _stored_events(db) == 0
        assert row.state == "pending"
    assert not await transfers_of(db, f"order:{order.id}")
