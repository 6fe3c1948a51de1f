"""Payments, review round 8: what was wrong, per test.

- `test_a_paypal_query_listing_its_refunds_records_them_before_any_credit`: PayPal's order
  (`GET /v2/checkout/orders/{id}`) lists the refunds of its capture
  (`purchase_units[].payments.refunds`, each with its amount and status), but a capture
  `PARTIALLY_REFUNDED` found by "check now" before its success was seen was read as refunded
  by an amount not reported: the order was only flagged, none of the refund recorded, and all
  of the payment held in `unapplied` as if finance could still refund or apply it whole. Now
  the `COMPLETED` refunds' amounts are the refunded amount: recorded as the provider's refund
  (its money back out of `unapplied`) before anything could be credited; nothing is credited.
- `test_a_refund_paypal_lists_later_is_recorded_when_staff_check_again`: a payment recorded
  as taken was never asked about again (`check_order` answered `already`), so a refund PayPal
  listed only once it completed was never recorded. Staff's check now asks again about a
  payment taken, not credited and refunded at the provider, and records what more went back
  (never twice); reconciliation does not.
- `test_a_payment_refunded_by_an_amount_not_reported_is_not_put_on_the_wallet`: after WeChat
  Pay's `REFUND` (some of it refunded, how much not said) the order was held, but finance's
  "apply to wallet" put all of the payment on the line — money that partly went back to the
  payer, credited in full. Now it is refused (409 `refund-amount-unreported`) until a refund
  of it is recorded (its `REFUND.SUCCESS`), and then only what is left is applied.
- `test_a_sandbox_query_says_how_much_was_refunded`: the sandbox's query said
  `partially_refunded` without the amount it knows (`refunded`), as if it could not tell.
- `test_a_wechat_pay_query_for_another_app_or_merchant_credits_nothing`: the order query's
  answer (`GET /v3/pay/transactions/out-trade-no/{no}?mchid=`) was believed whatever `appid` it
  named, and whatever `mchid` when it named none: another app's payment of our merchant under
  our reference was credited by "check now". Now, as a notification is, an answer that does
  not name our `mchid` and our `appid` is flagged `merchant_mismatch` and credits nothing.
- `test_a_signed_json_notification_holding_a_nul_is_refused_by_the_webhook_route`: a
  Stripe or PayPal notification holding a NUL or a lone surrogate was refused by the API's
  middleware (422, a problem document) before the webhook route ran: not counted in
  `simcharge_webhooks_total`, not logged as a webhook, and not the provider's failure answer.
  Now it reaches the route and is refused there as Alipay's and WeChat Pay's are
  (`rejected:unstorable`, `payments.webhook_unstorable` with the field, the provider's reply).

Real databases (both, when the PostgreSQL URL is set), real signatures; respx only at the
providers' HTTP boundary (the providers' harnesses of `tests/orders/test_providers.py`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.metrics import WEBHOOKS
from simcharge.orders.fulfilment import Outcome
from simcharge.orders.models import Order, SandboxPayment
from simcharge.orders.refunds import RefundAmountUnreported, apply_to_wallet
from simcharge.payments import webhooks
from simcharge.payments.providers import (
    PaymentState,
    RefundRequest,
)
from simcharge.payments.service import check_order
from tests.factories import load_demo_catalog
from tests.orders import test_providers as harness
from tests.orders.helpers import (
    assert_ledger_balanced,
    new_payer,
    order_row,
    place,
    transfers_of,
)
from tests.orders.test_providers import (
    PAYPAL_API,
    WECHAT_API,
    Keys,
    PayPal,
    Stripe,
    WeChatPay,
    _deliver,
    _ok,
    _placed,
    _refunds,
    _sms,
    _unchanged,
)
from tests.payments.test_provider_follow_ups import _paid_holding, _Recorder, _stored
from tests.payments.test_sandbox import paid_checkout

keys = harness.keys
mock = harness.mock
settings = harness.settings
shop = harness.shop


@pytest.fixture(autouse=True)
async def _catalog(db: Database) -> None:
    await db.run(load_demo_catalog)


async def test_a_paypal_query_listing_its_refunds_records_them_before_any_credit(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """The capture's notification is lost; "check now" finds it `PARTIALLY_REFUNDED`, the
    order listing a completed refund of a quarter and a pending one: the quarter is recorded
    as refunded at the provider, nothing is credited, the rest stays held for finance; the
    late `PAYMENT.CAPTURE.COMPLETED` changes nothing."""
    p = PayPal(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    part = order.total // 4
    found = p.order(order, "COMPLETED", captured=True)
    unit = found["purchase_units"][0]
    unit["payments"]["captures"][0]["status"] = "PARTIALLY_REFUNDED"

    def refund(rid: str, amount: int, status: str) -> dict[str, Any]:
        value = {"currency_code": order.currency, "value": f"{amount / 100:.2f}"}
        return {"id": rid, "status": status, "amount": value}

    unit["payments"]["refunds"] = [
        refund("1JU08902", part, "COMPLETED"),
        refund("2KV19013", 100, "PENDING"),
    ]
    mock.get(f"{PAYPAL_API}/v2/checkout/orders/{p.order_id(order)}").respond(200, json=found)
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.refunded_amount, row.fulfilled_at) == (
        "paid", "provider_refund", part, None)
    [recorded] = await _refunds(db, order)
    assert (recorded.amount, recorded.requested_by, recorded.state) == (
        part, "provider:paypal", "succeeded")
    [held] = await transfers_of(db, f"order:{order.id}")
    assert (held.code, held.amount) == ("unapplied", order.total)
    [back] = await transfers_of(db, f"refund:{recorded.id}")
    assert (back.amount, back.debit_account_id) == (part, held.credit_account_id)
    _ok(p, await _deliver(client, p, p.paid_webhook(order)))
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.fulfilled_at) == ("paid", part, None)
    assert await _sms(db, payer) == 0
    await assert_ledger_balanced(db)


async def test_a_refund_paypal_lists_later_is_recorded_when_staff_check_again(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """First found `PARTIALLY_REFUNDED` with its refund still pending (no amount given back
    yet): held, flagged, nothing recorded. Staff's check asks PayPal again — before, a
    payment already recorded as taken was never asked about again — and the refund, completed
    now, is recorded; a third check records nothing more."""
    p = PayPal(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    part = order.total // 3
    found = p.order(order, "COMPLETED", captured=True)
    unit = found["purchase_units"][0]
    unit["payments"]["captures"][0]["status"] = "PARTIALLY_REFUNDED"
    value = {"currency_code": order.currency, "value": f"{part / 100:.2f}"}
    refund = {"id": "1JU08902", "status": "PENDING", "amount": value}
    unit["payments"]["refunds"] = [refund]
    mock.get(f"{PAYPAL_API}/v2/checkout/orders/{p.order_id(order)}").mock(
        side_effect=lambda request: httpx.Response(200, json=found)
    )
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.refunded_amount) == ("paid", "provider_refund", 0)
    assert "amount not reported" in (row.attention_note or "")
    refund["status"] = "COMPLETED"
    providers = shop.state.providers
    assert await check_order(db, providers, order.id, source="staff") is Outcome.flagged
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.fulfilled_at) == ("paid", part, None)
    [recorded] = await _refunds(db, order)
    assert (recorded.amount, recorded.requested_by) == (part, "provider:paypal")
    assert await check_order(db, providers, order.id, source="staff") is Outcome.already
    assert len(await _refunds(db, order)) == 1
    await assert_ledger_balanced(db)


async def _apply(db: Database, order_id: Any) -> int:
    """Finance puts what is left of the uncredited payment on the line's wallet."""

    async def apply(s: AsyncSession) -> int:
        order = await s.get(Order, order_id, with_for_update=True)
        assert order is not None
        return await apply_to_wallet(s, order, utcnow())

    return await db.run(apply)


async def test_a_payment_refunded_by_an_amount_not_reported_is_not_put_on_the_wallet(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """WeChat Pay's query answers `REFUND` (some of it refunded, how much not said): held and
    flagged. Finance putting "what is left" on the wallet put all of it there — money that
    partly went back to the payer, credited in full. Now that is refused (409
    `refund-amount-unreported`, nothing moved) until the refund's own `REFUND.SUCCESS` says
    how much; then what is really left is applied."""
    p = WeChatPay(keys, mock)
    payer = await new_payer(db, settings, currency="CNY")  # a wallet the yuan can go on
    p.expect_checkout()
    order = await order_row(db, (await place(client, payer, method=p.method))["id"])
    p._query_route(order, "REFUND")
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    with pytest.raises(RefundAmountUnreported) as refused:
        await _apply(db, order.id)
    assert (refused.value.status, refused.value.slug, refused.value.field) == (
        409, "refund-amount-unreported", "order_id")
    assert [t.code for t in await transfers_of(db, f"order:{order.id}")] == ["unapplied"]
    part = order.total // 4
    _ok(p, await _deliver(client, p, p.external_refund(order, part)))
    assert await _apply(db, order.id) == order.total - part
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.fulfilled_at) == ("paid", part, None)
    await assert_ledger_balanced(db)


async def test_a_sandbox_query_says_how_much_was_refunded(
    db: Database, settings: Settings
) -> None:
    """Paid 10.00, 4.00 refunded: `partially_refunded`, and 4.00 of it."""
    sandbox, checkout = await paid_checkout(db, settings, "SBXROUND801")
    assert (await sandbox.query("SBXROUND801", None)).refunded_amount is None
    await sandbox.refund(
        RefundRequest("SBXROUND801", checkout.provider_ref, "RF1", 400, 1000, "USD", None)
    )
    status = await sandbox.query("SBXROUND801", checkout.provider_ref)
    assert (status.state, status.amount, status.refunded_amount) == (
        PaymentState.partially_refunded, 1000, 400)
    async with db.read() as s:
        row = (
            await s.execute(select(SandboxPayment).where(SandboxPayment.reference == "SBXROUND801"))
        ).scalar_one()
    assert row.refunded == 400


@pytest.mark.parametrize(
    "change",
    [{"appid": "wx9999999999999999"}, {"appid": None}, {"mchid": None}],
    ids=["other-app", "no-appid", "no-mchid"],
)
async def test_a_wechat_pay_query_for_another_app_or_merchant_credits_nothing(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    change: dict[str, str | None],
) -> None:
    """WeChat Pay's answer to "check now" (signed, `SUCCESS`, our reference and amount) names
    another app of our merchant, or no app, or no merchant: flagged `merchant_mismatch`,
    nothing credited; our own payment's notification still credits the order."""
    p = WeChatPay(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    answer = p.transaction(order, "SUCCESS")
    for name, value in change.items():
        if value is None:
            del answer[name]
        else:
            answer[name] = value
    mock.get(f"{WECHAT_API}/v3/pay/transactions/out-trade-no/{order.reference}").mock(
        side_effect=lambda request: p.signed(200, answer)
    )
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text
    row = await order_row(db, order.id)
    assert (row.state, row.attention, row.paid_at) == ("pending", "merchant_mismatch", None)
    assert not await transfers_of(db, f"order:{order.id}")
    _ok(p, await _deliver(client, p, p.paid_webhook(order)))
    assert (await order_row(db, order.id)).state == "fulfilled"
    await assert_ledger_balanced(db)


@pytest.mark.parametrize("text", ["eSIM\x00top-up", "eSIM\ud800"], ids=["nul", "surrogate"])
@pytest.mark.parametrize("harness_type", [Stripe, PayPal], ids=["stripe", "paypal"])
async def test_a_signed_json_notification_holding_a_nul_is_refused_by_the_webhook_route(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    harness_type: type[Stripe] | type[PayPal],
    text: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused with the provider's own failure answer (400, its body), counted
    (`rejected:unstorable`) and logged with the field; nothing stored or credited; the same
    payment reported without it is credited."""
    recorder = _Recorder()
    monkeypatch.setattr(webhooks, "log", recorder)
    p = harness_type(keys, mock)
    _, _, order = await _placed(client, db, settings, p)
    unstorable = WEBHOOKS.labels(p.name, "rejected:unstorable")
    before, stored = unstorable._value.get(), await _stored(db)
    r = await _deliver(client, p, _paid_holding(p, keys, order, text))
    assert r.status_code == 400, r.text  # the provider's failure answer, not a problem
    if isinstance(p, Stripe):
        assert (r.headers["content-type"], r.json()) == ("application/json", {"received": False})
    else:
        assert (r.headers["content-type"].split(";")[0], r.content) == ("text/plain", b"")
    assert unstorable._value.get() == before + 1
    field = {
        "stripe": "payload.data.object.customer_details.name",
        "paypal": "payload.resource.note_to_payer",
    }[p.name]
    logged = [f for _, e, f in recorder.events if e == "payments.webhook_unstorable"]
    assert [f["field"] for f in logged] == [field]
    await _unchanged(db, order)
    assert await _stored(db) == stored
    _ok(p, await _deliver(client, p, p.paid_webhook(order)))
    assert (await order_row(db, order.id)).state == "fulfilled"
    await assert_ledger_balanced(db)
