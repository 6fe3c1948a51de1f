"""A refund still pending in a restored backup is looked for at the provider before it is sent.

The books are restored from a backup taken when the refund was pending: its job runs again, days
after it was first sent, when Stripe has pruned its idempotency key. Each provider is answered by
respx at its HTTP boundary with the shapes it documents (the harnesses of `test_providers`):
found there, the refund is adopted and never made again; the provider reporting more refunded
than the books know of (a refund made after the backup), it is not sent, failed and flagged.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import respx
from sqlalchemy import update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Order, Refund
from simcharge.payments.jobs import HELD, RESEND_CHECK_AFTER
from tests.orders import test_providers as harness
from tests.orders.helpers import assert_ledger_balanced, idem, order_row, transfers_of
from tests.orders.test_providers import (
    PAYPAL_API,
    STRIPE_API,
    WECHAT_API,
    Alipay,
    Keys,
    PayPal,
    Stripe,
    WeChatPay,
    _deliver,
    _now,
    _ok,
    _placed,
    _refunds,
    _staff,
    _worker,
)

keys = harness.keys
mock = harness.mock
settings = harness.settings
shop = harness.shop

Harness = Stripe | PayPal | Alipay | WeChatPay


async def _pending_in_backup(
    client: httpx.AsyncClient, db: Database, settings: Settings, p: Harness
) -> tuple[Order, Refund]:
    """A paid order and a refund of a quarter of it, asked for two days ago and still pending:
    the books as a backup taken then has them. Its job is due again."""
    _, _, order = await _placed(client, db, settings, p)
    _ok(p, await _deliver(client, p, p.paid_webhook(order)))
    r = await client.post(
        f"/api/v1/admin/orders/{order.id}/refunds",
        headers={**await _staff(db), **idem()},
        json={"amount": order.total // 4, "reason": "unused"},
    )
    assert r.status_code == 202, r.text
    asked = utcnow() - timedelta(days=2)
    assert utcnow() - asked > RESEND_CHECK_AFTER

    async def restore(s: Any) -> None:
        await s.execute(update(Refund).where(Refund.order_id == order.id).values(created_at=asked))

    await db.run(restore)
    [refund] = await _refunds(db, order)
    assert refund.state == "pending" and refund.provider_refund_id is None
    return order, refund


def _stripe_refund(
    order: Order, rid: str, amount: int, *, ours: str | None, status: str = "succeeded"
) -> dict[str, Any]:
    """A Refund object as `GET /v1/refunds` lists it."""
    return {
        "id": rid,
        "object": "refund",
        "amount": amount,
        "balance_transaction": "txn_1" if status == "succeeded" else None,
        "charge": f"ch_3{order.reference}",
        "created": _now() - 86400,
        "currency": order.currency.lower(),
        "destination_details": {"type": "card"},
        "metadata": {"reference": order.reference, "refund_id": ours} if ours else {},
        "payment_intent": f"pi_3{order.reference}",
        "reason": None,
        "status": status,
    }


def _stripe_list(data: list[dict[str, Any]], *, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "url": "/v1/refunds", "has_more": has_more, "data": data}


async def _held(db: Database, order: Order, refund: Refund, why: str) -> None:
    """Not sent: failed (its holds voided, the payer keeps everything), flagged for finance."""
    [row] = await _refunds(db, order)
    assert row.state == "failed" and row.provider_refund_id is None
    assert HELD in (row.error or "") and why in (row.error or "")
    found = await order_row(db, order.id)
    assert found.state == "fulfilled" and found.refunded_amount == 0
    assert found.attention == "refund_failed"
    assert f"refund {refund.reference} not sent" in (found.attention_note or "")
    kinds = {t.kind for t in await transfers_of(db, f"refund:{refund.id}")}
    assert kinds == {"pending", "void_pending"}
    await assert_ledger_balanced(db)


async def _adopted(db: Database, order: Order, refund: Refund, provider_refund_id: str) -> None:
    """Recorded as its notification would record it, once."""
    [row] = await _refunds(db, order)
    assert (row.state, row.provider_refund_id) == ("succeeded", provider_refund_id)
    found = await order_row(db, order.id)
    assert (found.state, found.refunded_amount) == ("partially_refunded", refund.amount)
    assert found.attention is None
    kinds = {t.kind for t in await transfers_of(db, f"refund:{refund.id}")}
    assert kinds == {"pending", "post_pending"}
    await assert_ledger_balanced(db)


# --- Stripe ---------------------------------------------------------------------------------------


async def test_stripe_a_refund_it_already_made_is_adopted_not_made_again(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Stripe lists the payment intent's refunds; ours (its `metadata.refund_id`) is there, on
    the second page: adopted, `POST /v1/refunds` never called (its key is pruned: a new refund)."""
    p = Stripe(keys, mock)
    order, refund = await _pending_in_backup(client, db, settings, p)
    pages: list[httpx.QueryParams] = []

    def listed(request: httpx.Request) -> httpx.Response:
        pages.append(request.url.params)
        if "starting_after" not in request.url.params:
            failed = _stripe_refund(order, "re_3failed", 100, ours=None, status="failed")
            return httpx.Response(200, json=_stripe_list([failed], has_more=True))
        ours = _stripe_refund(order, "re_3ours", refund.amount, ours=refund.reference)
        return httpx.Response(200, json=_stripe_list([ours]))

    listing = mock.get(f"{STRIPE_API}/v1/refunds").mock(side_effect=listed)
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert listing.call_count == 2 and not create.called
    assert pages[0]["payment_intent"] == f"pi_3{order.reference}"
    assert pages[1]["starting_after"] == "re_3failed"
    await _adopted(db, order, refund, "re_3ours")


async def test_stripe_more_refunded_than_the_books_know_is_not_sent_and_flagged(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """A refund made in Stripe's dashboard after the backup (no metadata of ours): Stripe has
    refunded more than the restored books know of. Ours is not sent."""
    p = Stripe(keys, mock)
    order, refund = await _pending_in_backup(client, db, settings, p)
    theirs = _stripe_refund(order, "re_3dashboard", order.total // 2, ours=None)
    listing = mock.get(f"{STRIPE_API}/v1/refunds").respond(200, json=_stripe_list([theirs]))
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert listing.called and not create.called
    await _held(db, order, refund, "the provider has refunded")


async def test_stripe_nothing_found_and_nothing_unknown_is_sent(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """No refund of ours, nothing refunded the books do not know of: it was never made, so it
    is sent (once) — as a refund asked for a minute ago is, without the look."""
    p = Stripe(keys, mock)
    order, _ = await _pending_in_backup(client, db, settings, p)
    listing = mock.get(f"{STRIPE_API}/v1/refunds").respond(200, json=_stripe_list([]))
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert listing.call_count == 1 and create.call_count == 1
    [row] = await _refunds(db, order)
    assert row.state == "succeeded" and row.provider_refund_id
    assert (await order_row(db, order.id)).attention is None
    await assert_ledger_balanced(db)


async def test_stripe_out_of_reach_is_tried_again_and_nothing_is_sent(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Stripe answering 500 to the list: nothing is sent, nothing decided; the job is tried
    again later."""
    p = Stripe(keys, mock)
    order, _ = await _pending_in_backup(client, db, settings, p)
    error = {"error": {"type": "api_error", "message": "Something went wrong on Stripe's end."}}
    listing = mock.get(f"{STRIPE_API}/v1/refunds").respond(500, json=error)
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert listing.called and not create.called
    [row] = await _refunds(db, order)
    assert row.state == "pending" and row.error is None
    assert (await order_row(db, order.id)).attention is None


async def test_stripe_a_list_refused_for_good_holds_the_refund(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """Stripe refusing the list (400): whether the refund was made cannot be known, so it is
    not sent; finance decides."""
    p = Stripe(keys, mock)
    order, refund = await _pending_in_backup(client, db, settings, p)
    error = {
        "error": {
            "code": "resource_missing",
            "message": f"No such payment_intent: 'pi_3{order.reference}'",
            "param": "payment_intent",
            "type": "invalid_request_error",
        }
    }
    mock.get(f"{STRIPE_API}/v1/refunds").respond(400, json=error)
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert not create.called
    await _held(db, order, refund, "resource_missing")


# --- PayPal ---------------------------------------------------------------------------------------


def _paypal_order(p: PayPal, order: Order, refunds: list[dict[str, Any]]) -> dict[str, Any]:
    """The order as `GET /v2/checkout/orders/{id}` shows it: captured, its refunds listed."""
    body = p.order(order, "COMPLETED", captured=True)
    body["purchase_units"][0]["payments"]["captures"][0]["status"] = "PARTIALLY_REFUNDED"
    body["purchase_units"][0]["payments"]["refunds"] = refunds
    return body


def _paypal_refund(order: Order, rid: str, amount: int, custom_id: str | None) -> dict[str, Any]:
    value = {"currency_code": order.currency, "value": f"{amount / 100:.2f}"}
    found: dict[str, Any] = {
        "id": rid,
        "status": "COMPLETED",
        "amount": value,
        "seller_payable_breakdown": {"gross_amount": value, "net_amount": value},
        "create_time": "2026-12-05T10:00:00Z",
        "update_time": "2026-12-05T10:00:00Z",
        "links": [
            {"href": f"{PAYPAL_API}/v2/payments/refunds/{rid}", "rel": "self", "method": "GET"},
            {
                "href": f"{PAYPAL_API}/v2/payments/captures/{PayPal.capture_id(order)}",
                "rel": "up",
                "method": "GET",
            },
        ],
    }
    if custom_id:
        found["custom_id"] = custom_id
    return found


async def test_paypal_a_refund_the_order_lists_as_ours_is_adopted(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """The PayPal order lists its capture's refunds; ours carries our refund id (`custom_id`)."""
    p = PayPal(keys, mock)
    order, refund = await _pending_in_backup(client, db, settings, p)
    ours = _paypal_refund(order, "1JU0OURS", refund.amount, refund.reference)
    read = mock.get(f"{PAYPAL_API}/v2/checkout/orders/{p.order_id(order)}").respond(
        200, json=_paypal_order(p, order, [ours])
    )
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert read.called and not create.called
    await _adopted(db, order, refund, "1JU0OURS")


async def test_paypal_a_refund_the_books_do_not_know_holds_ours(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    p = PayPal(keys, mock)
    order, refund = await _pending_in_backup(client, db, settings, p)
    theirs = _paypal_refund(order, "8RU0DASHBOARD", order.total // 2, None)
    mock.get(f"{PAYPAL_API}/v2/checkout/orders/{p.order_id(order)}").respond(
        200, json=_paypal_order(p, order, [theirs])
    )
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert not create.called
    await _held(db, order, refund, "the provider has refunded")


# --- Alipay and WeChat Pay: the same refund number refunds a trade once, however late ----------


async def test_alipay_a_refund_it_made_is_adopted_not_asked_again(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    p = Alipay(keys, mock)
    order, refund = await _pending_in_backup(client, db, settings, p)

    def query(biz: dict[str, Any]) -> dict[str, Any]:
        assert biz == {"out_trade_no": order.reference, "out_request_no": refund.reference}
        return {
            "code": "10000",
            "msg": "Success",
            "trade_no": p.trade_no(order),
            "out_trade_no": order.reference,
            "out_request_no": refund.reference,
            "total_amount": f"{order.total / 100:.2f}",
            "refund_amount": f"{refund.amount / 100:.2f}",
            "refund_status": "REFUND_SUCCESS",
        }

    p.answers["alipay.trade.fastpay.refund.query"] = query
    p.expect_refund(order)
    await _worker(shop, db, settings)
    methods = [method for method, _ in p.calls]
    assert "alipay.trade.fastpay.refund.query" in methods
    assert "alipay.trade.refund" not in methods
    [row] = await _refunds(db, order)
    assert row.state == "succeeded"
    assert (await order_row(db, order.id)).refunded_amount == refund.amount
    await assert_ledger_balanced(db)


async def test_wechatpay_a_refund_it_does_not_have_is_sent_with_the_same_number(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    p = WeChatPay(keys, mock)
    order, refund = await _pending_in_backup(client, db, settings, p)
    missing = {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}
    read = mock.get(f"{WECHAT_API}/v3/refund/domestic/refunds/{refund.reference}").mock(
        side_effect=lambda request: p.signed(404, missing)
    )
    create = p.expect_refund(order)
    await _worker(shop, db, settings)
    assert read.call_count == 1 and create.call_count == 1
    assert json.loads(create.calls.last.request.content)["out_refund_no"] == refund.reference
    [row] = await _refunds(db, order)
    assert row.state == "pending" and row.provider_refund_id  # PROCESSING: read again later
    assert row.error is None
