"""The eleventh round's review of refunds, what was wrong, per test:

- `test_an_order_refunded_in_parts_takes_back_its_wallet_credit_once`,
  `test_small_refunds_never_take_back_more_credit_than_the_order_granted`: the refund of the
  rest of an order refunded in parts took the order's whole wallet credit again, out of the
  wallet's other money; parts rounded up could add up past the credit.
- `test_a_refund_the_provider_cannot_take_in_its_currency_is_refused_at_once`: an amount the
  provider cannot refund in the currency (KWD 1.235 at Stripe, 10.50 HUF) was accepted, then
  refused by the provider in the worker and the order flagged `refund_failed`.
- `test_a_refund_amount_must_be_a_json_integer`: `"amount": true` was a refund of 1.
- `test_a_dispute_lost_while_our_refund_is_pending_is_recorded_in_full`: a lost dispute was
  capped by our refund still pending, and nothing of it recorded once ours was refused.

Real databases (both), the sandbox provider; the ledger checked balanced after each."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.orders.models import Refund
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
)


async def _staff(db: Database, *scopes: str) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "finance", list(scopes)))
    return {"Authorization": f"Bearer {issued.token}"}


async def _paid_order(client: httpx.AsyncClient, settings: Settings, payer: Payer,
                      **kw: Any) -> dict[str, Any]:
    order = await place(client, payer, **kw)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return r.json()


async def _wallet(db: Database, line_id: uuid.UUID) -> tuple[int, int]:
    async with db.read() as s:
        line = await s.get(Line, line_id)
        assert line is not None
        b = await line_balances(s, line)
    return b.wallet.available, b.wallet.reserved


async def _refund(client: httpx.AsyncClient, staff: dict[str, str], order_id: str,
                  body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/api/v1/admin/orders/{order_id}/refunds",
                             headers={**staff, **idem()}, json={"reason": "test", **body})


async def test_an_order_refunded_in_parts_takes_back_its_wallet_credit_once(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """explorer-50 grants $5.00 of credit. Refunded in two halves, it takes back $2.50 and then
    what is left of its $5.00 — $2.50 — never the whole $5.00 again out of the wallet's other
    money (before: $7.50 taken, $2.50 of another order's credit lost)."""
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    first = await _paid_order(client, settings, payer, plan="explorer-50")
    await _paid_order(client, settings, payer, plan="explorer-50")
    assert await _wallet(db, payer.line.id) == (1000, 0)

    r = await _refund(client, staff, first["id"], {"amount": 2500})
    assert r.status_code == 202, r.text
    assert await _wallet(db, payer.line.id) == (750, 250)
    await run_worker(app, db, settings)
    assert await _wallet(db, payer.line.id) == (750, 0)

    r = await _refund(client, staff, first["id"], {})
    assert r.status_code == 202, r.text
    assert r.json()["amount"]["minor"] == 2500
    assert await _wallet(db, payer.line.id) == (500, 250)
    await run_worker(app, db, settings)
    row = await order_row(db, first["id"])
    assert (row.state, row.refunded_amount) == ("refunded", 5000)
    assert await _wallet(db, payer.line.id) == (500, 0)  # the other order's $5.00, whole
    await assert_ledger_balanced(db)


async def test_small_refunds_never_take_back_more_credit_than_the_order_granted(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Each part's share of the credit is rounded up (⌈500 × 3 / 5000⌉ = 1 for a refund of
    $0.03): parts that add up to less than the order still never take back more than the $5.00
    it granted, whatever else the wallet holds."""
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    first = await _paid_order(client, settings, payer, plan="explorer-50")
    await _paid_order(client, settings, payer, plan="explorer-50")
    # 501 refunds of 3 would take back 501; the cap is what the order granted.
    for _ in range(4):
        r = await _refund(client, staff, first["id"], {"amount": 1})
        assert r.status_code == 202, r.text
    async with db.read() as s:
        held = (await s.execute(select(func.count()).select_from(Refund).where(
            Refund.order_id == uuid.UUID(first["id"])))).scalar_one()
    assert held == 4
    assert await _wallet(db, payer.line.id) == (996, 4)
    await run_worker(app, db, settings)
    r = await _refund(client, staff, first["id"], {})
    assert r.json()["amount"]["minor"] == 4996
    await run_worker(app, db, settings)
    assert await _wallet(db, payer.line.id) == (500, 0)
    await assert_ledger_balanced(db)


async def _uncredited(db: Database, order_id: str, provider: str, currency: str,
                      amount: int) -> None:
    """Make the order a payment taken and not credited, at `provider` in `currency` (its money
    in `unapplied`, as `fulfilment` leaves a payment of another currency)."""
    from simcharge.kit.clock import utcnow
    from simcharge.orders.models import Order
    from simcharge.orders.refunds import received_unapplied

    async def run(s: Any) -> None:
        order = await s.get(Order, uuid.UUID(order_id), with_for_update=True)
        assert order is not None
        now = utcnow()
        order.provider, order.state, order.paid_at = provider, "paid", now
        order.paid_amount, order.paid_currency = amount, currency
        await received_unapplied(s, order, now)

    await db.run(run)


async def _counts(db: Database) -> tuple[int, int]:
    from simcharge.ledger.models import LedgerTransfer

    async with db.read() as s:
        refunds = (await s.execute(select(func.count()).select_from(Refund))).scalar_one()
        transfers = (await s.execute(
            select(func.count()).select_from(LedgerTransfer))).scalar_one()
    return int(refunds), int(transfers)


async def test_a_refund_the_provider_cannot_take_in_its_currency_is_refused_at_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Stripe takes three-decimal currencies in steps of 10 (KWD 1.235 cannot be refunded, KWD
    1.240 can) and whole forints only; PayPal whole forints. Such an amount is refused with a
    422 naming the field and the step, nothing held nor asked (before: a 202, then the provider
    refused it in the worker and the order was flagged `refund_failed`)."""
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    cases = [("stripe", "KWD", 1235, 1240, "0.010 KWD"), ("stripe", "HUF", 1050, 1000, "1.00 HUF"),
             ("paypal", "HUF", 1099, 1100, "1.00 HUF"), ("sandbox", "HUF", 1050, 1050, None)]
    for provider, currency, odd, even, step in cases:
        order = await place(client, payer)
        await _uncredited(db, order["id"], provider, currency, 5000)
        before = await _counts(db)
        r = await _refund(client, staff, order["id"], {"amount": odd})
        if step is None:  # the sandbox takes any amount
            assert r.status_code == 202, r.text
            continue
        assert r.status_code == 422, (provider, currency, r.text)
        body = r.json()
        assert r.headers["content-type"] == "application/problem+json"
        assert body["type"].endswith("/refund-amount-not-payable"), body
        assert body["field"] == "amount" or body.get("errors"), body
        assert step in body["detail"], body
        assert await _counts(db) == before
        assert (await order_row(db, order["id"])).attention is None
        r = await _refund(client, staff, order["id"], {"amount": even})
        assert r.status_code == 202, (provider, currency, r.text)
        assert r.json()["amount"]["minor"] == even
    await assert_ledger_balanced(db)


async def test_a_refund_amount_must_be_a_json_integer(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`"amount": true` was read as 1 (a refund of 0.01 USD, held and asked of the provider),
    and `"100"` or `100.0` as 100: now each is a 422 naming `amount`, nothing held."""
    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, settings, payer, plan="starter-10")
    before = await _counts(db)
    for amount in (True, "100", 100.0, "1e3", "١٠٠", -0):
        r = await _refund(client, staff, order["id"], {"amount": amount})
        assert r.status_code == 422, (amount, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["type"].endswith("/validation-error"), body
        assert [e["field"] for e in body["errors"]] == ["amount"], body
    assert await _counts(db) == before
    assert (await order_row(db, order["id"])).state == "fulfilled"


async def test_a_dispute_lost_while_our_refund_is_pending_is_recorded_in_full(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Finance asks for a full refund; before the provider answers, the payer's dispute is
    lost (the money went back through their bank), and the provider then refuses our refund
    (Stripe's `charge_disputed`). The dispute's money was capped by our refund still pending —
    recorded as nothing — and when ours was refused, nothing was recorded at all: the books kept
    money the provider no longer held. What the provider did is counted against what it did
    (refunds done), not against a refund of ours it may still refuse; ours, refused, is voided."""
    from simcharge.kit.clock import utcnow
    from simcharge.orders.models import Order
    from simcharge.orders.refunds import complete_refund
    from simcharge.orders.reversals import record_lost_dispute
    from simcharge.payments.providers import Dispute, RefundResult, RefundState

    staff = await _staff(db, "refunds:write")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, settings, payer, plan="starter-10")
    total = order["total"]["minor"]
    r = await _refund(client, staff, order["id"], {})
    assert r.status_code == 202, r.text
    ours = r.json()["reference"]
    order_id = uuid.UUID(order["id"])

    async def lose(s: Any) -> None:
        row = await s.get(Order, order_id, with_for_update=True)
        dispute = Dispute("du_1LOST", total, "USD", "fraudulent", "lost", None)
        await record_lost_dispute(s, row, dispute, source="webhook:evt_1", now=utcnow())

    async def refuse(s: Any) -> str:
        result = RefundResult(ours, None, RefundState.failed, total, "USD",
                              {"code": "charge_disputed"})
        return await complete_refund(s, order_id, result, utcnow())

    await db.run(lose)
    assert await db.run(refuse) == "refund_failed"
    row = await order_row(db, order_id)
    assert (row.state, row.refunded_amount) == ("refunded", total)
    async with db.read() as s:
        refunds = (await s.execute(select(Refund).where(Refund.order_id == order_id)
                                   .order_by(Refund.created_at))).scalars().all()
    assert [(x.requested_by.split(":")[0], x.state, x.amount) for x in refunds] == [
        ("apikey", "failed", total), ("provider", "succeeded", total)]
    assert refunds[1].credit_note_number is not None
    await assert_ledger_balanced(db)
