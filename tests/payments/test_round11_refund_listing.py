"""Payments, review round 11: a refund PayPal lists with its order, then notifies.

What was wrong: staff's "check" on a payment taken and not credited reads PayPal's order, which
lists the capture's refunds (`purchase_units[].payments.refunds`, each with its `id`); their
total was recorded as one refund by the provider (`reported:<total>`), with no id. The same
refund's own notification, `PAYMENT.CAPTURE.REFUNDED` (which PayPal sends for a refund made in
its dashboard), then found no refund with its id and was recorded a second time: the books gave
back twice what PayPal did, and the payer got two credit notes' worth of refunds. Arriving in
the other order, the two were recorded once. Now the refunds PayPal lists are recorded each
under its own id (the key its notification uses), ours (their `custom_id` is our refund's
reference) skipped, so whichever comes first, each is recorded once.

Real databases (both), real signatures; respx only at PayPal's HTTP boundary (the providers'
harnesses of `tests/orders/test_providers.py`), in the shapes PayPal documents.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import Order
from tests.factories import load_demo_catalog
from tests.orders import test_providers as harness
from tests.orders.helpers import assert_ledger_balanced, idem, order_row
from tests.orders.test_providers import (
    PAYPAL_API,
    Keys,
    PayPal,
    _deliver,
    _ok,
    _placed,
    _refunds,
    _worker,
)
from tests.orders.test_refunds import _staff

keys = harness.keys
mock = harness.mock
settings = harness.settings
shop = harness.shop


@pytest.fixture(autouse=True)
async def _catalog(db: Database) -> None:
    await db.run(load_demo_catalog)


def _listed(p: PayPal, order: Order, refunds: list[dict[str, Any]]) -> dict[str, Any]:
    """PayPal's order, its capture `PARTIALLY_REFUNDED`, listing these refunds."""
    found = p.order(order, "COMPLETED", captured=True)
    unit = found["purchase_units"][0]
    unit["payments"]["captures"][0]["status"] = "PARTIALLY_REFUNDED"
    unit["payments"]["refunds"] = refunds
    return found


def _refund(rid: str, order: Order, amount: int, **more: Any) -> dict[str, Any]:
    value = {"currency_code": order.currency, "value": f"{amount / 100:.2f}"}
    return {"id": rid, "status": "COMPLETED", "amount": value, **more}


async def _check(client: httpx.AsyncClient, payer: Any, order: Order) -> None:
    r = await client.post(f"/api/v1/orders/{order.id}/check", headers=payer.auth)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("first", ["check", "notification"])
async def test_a_refund_paypal_lists_and_notifies_is_recorded_once(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
    first: str,
) -> None:
    p = PayPal(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    part = order.total // 4
    signed = p.refund_webhook(order, part)
    rid = json.loads(signed[0])["resource"]["id"]
    found = _listed(p, order, [_refund(rid, order, part)])
    mock.get(f"{PAYPAL_API}/v2/checkout/orders/{p.order_id(order)}").mock(
        side_effect=lambda request: httpx.Response(200, json=found)
    )
    if first == "check":
        await _check(client, payer, order)
        _ok(p, await _deliver(client, p, signed))
    else:
        _ok(p, await _deliver(client, p, signed))
        await _check(client, payer, order)
    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount, row.fulfilled_at) == ("paid", part, None)
    [recorded] = await _refunds(db, order)
    assert (recorded.amount, recorded.requested_by, recorded.provider_refund_id) == (
        part, "provider:paypal", rid)
    await assert_ledger_balanced(db)


async def test_our_own_refund_in_paypal_s_list_is_not_recorded_as_the_provider_s(
    shop: Any,
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    keys: Keys,
    mock: respx.MockRouter,
) -> None:
    """The list also holds refunds we asked for (their `custom_id` is our reference): only the
    one made in PayPal's dashboard is recorded as the provider's; a check again records
    nothing more, nor does the dashboard refund's own notification."""
    p = PayPal(keys, mock)
    payer, _, order = await _placed(client, db, settings, p)
    third = order.total // 3
    signed = p.refund_webhook(order, third)
    rid = json.loads(signed[0])["resource"]["id"]
    found = _listed(p, order, [_refund(rid, order, third)])
    mock.get(f"{PAYPAL_API}/v2/checkout/orders/{p.order_id(order)}").mock(
        side_effect=lambda request: httpx.Response(200, json=found)
    )
    await _check(client, payer, order)  # taken, not credited; a third refunded at PayPal
    [dashboard] = await _refunds(db, order)

    staff_refund = p.expect_refund(order)
    staff = await _staff(db, "refunds:write")
    r = await client.post(f"/api/v1/admin/orders/{order.id}/refunds",
                          headers={**staff, **idem()}, json={"amount": third, "reason": "test"})
    assert r.status_code == 202, r.text
    await _worker(shop, db, settings)
    assert staff_refund.called
    ours = [x for x in await _refunds(db, order) if x.id != dashboard.id]
    assert [(x.amount, x.state) for x in ours] == [(third, "succeeded")]
    sent = json.loads(staff_refund.calls.last.request.content)
    listed_ours = _refund(ours[0].provider_refund_id or "", order, third,
                          custom_id=sent["custom_id"])
    found["purchase_units"][0]["payments"]["refunds"].append(listed_ours)
    await _check(client, payer, order)
    _ok(p, await _deliver(client, p, signed))
    assert len(await _refunds(db, order)) == 2
    row = await order_row(db, order.id)
    assert row.refunded_amount == 2 * third
    await assert_ledger_balanced(db)


def test_paypal_s_order_lists_its_done_refunds_with_their_ids_and_the_codec_keeps_them() -> None:
    """`order_status` lists the `COMPLETED` refunds in the capture's currency (a `PENDING` one,
    or one in another currency, is not part of `refunded_amount` either), each with its id and
    `custom_id`; a status stored with an event keeps them, and one stored before has none."""
    from simcharge.payments.codec import status_from_json, status_to_json
    from simcharge.payments.providers import ListedRefund, PaymentState
    from simcharge.payments.providers.paypal import order_status

    order = Order(reference="SCREF1", currency="USD", total=2000)
    p = PayPal.__new__(PayPal)
    found = _listed(p, order, [
        _refund("1JU00001", order, 500, custom_id="RF0001"),
        _refund("2KV00002", order, 300),
        {**_refund("3LW00003", order, 100), "status": "PENDING"},
        {"id": "4MX00004", "status": "COMPLETED",
         "amount": {"currency_code": "EUR", "value": "1.00"}},
    ])
    status = order_status(found)
    assert status.state is PaymentState.partially_refunded
    assert status.refunded_amount == 800
    assert status.refunds == (ListedRefund("1JU00001", 500, "RF0001"),
                              ListedRefund("2KV00002", 300, None))
    assert status_from_json(status_to_json(status)).refunds == status.refunds
    stored_before = status_to_json(status)
    del stored_before["refunds"]
    assert status_from_json(stored_before).refunds == ()
