"""Orders and refunds: follow-ups of review round 7.

What was wrong, and is right now:

- PayPal declined the payer's funding source when the return captured the approved order
  (`INSTRUMENT_DECLINED`). PayPal's "Handle funding failures" says: restart the payment, so the
  payer picks another funding source. The return sent the payer to the order's page, which
  said "waiting" for good (nothing would ever capture what PayPal refused). Now the return
  sends the payer back to the payment's PayPal approval page (the `payer-action` link kept at
  checkout, and only a provider page we may send a payer to, `portal.web.provider_url_ok`);
  approved again, the next return captures and credits once. Coming back by the cancel link,
  or a payer who is not the order's, goes to the order's page as before.
- A Stripe `charge.refunded` stored before its payment was known (it names only the payment
  intent) was applied before the success only when the success came by webhook
  (`webhooks._apply_early_refunds`). A success reached otherwise — reconciliation applying a
  stored completion, "check now", the return — credited the order in full, and the refund was
  recorded only afterwards: the payer had the money back and the line kept the credit. Now
  `fulfilment._adopt_early_news` adopts such refunded statuses too: the payment is recorded as
  refunded at the provider and not credited, however its success arrived.
- A refund the provider refused after the line was terminated: its voided holds gave what they
  held of the order's grant back to the closed line (the test in
  `tests/lifecycle/test_lifecycle_review_edges.py`); now it is forfeited as termination
  forfeits the rest, by transfers whose ids derive from the refund (here: a second answer
  writes nothing twice).

Real database (both, when the PostgreSQL URL is set), real signatures; respx answers only at
PayPal's and Stripe's HTTP boundaries with their documented shapes (Orders v2 with its
`INSTRUMENT_DECLINED` error body; Checkout Sessions, events and charges).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import func, select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.kit.ids import derived_id
from simcharge.ledger.models import LedgerTransfer
from simcharge.orders.models import Payment, ProviderEvent, Refund
from simcharge.orders.refunds import complete_refund
from simcharge.payments.providers import RefundState
from simcharge.payments.service import reconcile
from simcharge.payments.webhooks import _store
from tests.lifecycle.test_lifecycle import MINUTE
from tests.lifecycle.test_lifecycle_review_edges import (
    _answer,
    _left_on,
    _refund_pending_then_terminated,
)
from tests.orders.helpers import assert_ledger_balanced, new_payer, order_row, place, transfers_of
from tests.payments.test_provider_doc_edges import (
    PAYPAL_MERCHANT,
    PAYPAL_ORDER,
    STRIPE_WEBHOOK_SECRET,
    PayPalOrders,
    _stripe_event,
    _stripe_session,
    refunded_before_paid,
)

APPROVAL = f"https://www.paypal.com/checkoutnow?token={PAYPAL_ORDER}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """PayPal and Stripe configured (the sandbox stays on for its own orders)."""
    return settings.model_copy(
        update={
            "sandbox_stands_in": False,
            "paypal_client_id": "AaZ-test-client",
            "paypal_client_secret": SecretStr("EE-test-secret-follow-ups"),
            "paypal_webhook_id": "1JE4291016473214C",
            "paypal_merchant_id": PAYPAL_MERCHANT,
            "stripe_secret_key": SecretStr("sk_test_" + "0" * 24),
            "stripe_webhook_secret": SecretStr(STRIPE_WEBHOOK_SECRET),
        }
    )


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


# --- PayPal: a funding source declined at the return ----------------------------------------


async def test_a_paypal_capture_declined_at_the_return_sends_the_payer_back_to_paypal(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    """The payer approved, came back, and PayPal declined the funding source at capture
    (422 `INSTRUMENT_DECLINED`, with its `redirect` link). The return sent the payer to the
    order's page, "waiting" for good. Now it sends them back to PayPal's approval page to choose
    another funding source; approved again, the return captures (a new request id) and credits
    once, and the payer lands on the order's page."""
    paypal = PayPalOrders(mock)
    payer = await new_payer(db, settings)
    body = await place(client, payer, method="paypal")
    order = await order_row(db, body["id"])
    paypal.status, paypal.declines = "APPROVED", 1

    r = await client.get(f"/api/v1/orders/{order.id}/return", headers=payer.auth)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == APPROVAL
    assert paypal.capture.call_count == 1
    assert (await order_row(db, order.id)).state == "pending"
    assert not await transfers_of(db, f"order:{order.id}")

    # On PayPal's page the payer picks another card and approves again.
    r = await client.get(f"/api/v1/orders/{order.id}/return", headers=payer.auth)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/account/orders/{order.id}"
    assert paypal.capture.call_count == 2
    assert (await order_row(db, order.id)).state == "fulfilled"
    credited = len(await transfers_of(db, f"order:{order.id}"))
    assert credited
    again = await client.get(f"/api/v1/orders/{order.id}/return", headers=payer.auth)
    assert again.headers["location"] == f"/account/orders/{order.id}"
    assert len(await transfers_of(db, f"order:{order.id}")) == credited
    await assert_ledger_balanced(db)


async def test_a_declined_payer_who_cancels_at_paypal_or_is_not_signed_in_sees_the_order(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    """The restart is only for the order's own payer coming back from approving: one who comes
    back by PayPal's cancel link (`?cancelled=1`) after a decline is not sent to PayPal again
    (they would be caught in a loop), and a visitor who is not the payer asks nothing and goes
    to the order's page."""
    paypal = PayPalOrders(mock)
    payer = await new_payer(db, settings)
    body = await place(client, payer, method="paypal")
    order_id = body["id"]
    paypal.status, paypal.declines = "APPROVED", 2

    r = await client.get(f"/api/v1/orders/{order_id}/return?cancelled=1", headers=payer.auth)
    assert r.status_code == 303 and r.headers["location"] == f"/account/orders/{order_id}"
    assert paypal.capture.call_count == 1

    r = await client.get(f"/api/v1/orders/{order_id}/return")
    assert r.status_code == 303 and r.headers["location"] == f"/account/orders/{order_id}"
    assert paypal.capture.call_count == 1
    assert (await order_row(db, order_id)).state == "pending"


async def test_a_declined_payer_is_never_sent_to_a_page_not_on_the_allow_list(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    """The restart sends the payer only where a payer may be sent (`provider_url_ok`: https, a
    known provider's host): a payment whose approval link names another host goes to the
    order's page."""
    paypal = PayPalOrders(mock)
    payer = await new_payer(db, settings)
    body = await place(client, payer, method="paypal")
    order_id = uuid.UUID(body["id"])

    async def elsewhere(s: Any) -> None:
        await s.execute(update(Payment).where(Payment.order_id == order_id).values(
            redirect_url=f"https://paypal.example.net/checkoutnow?token={PAYPAL_ORDER}"))

    await db.run(elsewhere)
    paypal.status, paypal.declines = "APPROVED", 1
    r = await client.get(f"/api/v1/orders/{order_id}/return", headers=payer.auth)
    assert r.status_code == 303 and r.headers["location"] == f"/account/orders/{order_id}"
    assert paypal.capture.call_count == 1


# --- Stripe: a refund reported first, the success reached by reconciliation -----------------


async def test_a_stripe_refund_before_a_success_applied_by_reconciliation_is_not_credited(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    """`charge.refunded` arrived first and was kept for its payment (it names only the payment
    intent). The session's completion came next, but applying it failed, so it was stored
    alone, unprocessed (as the webhook endpoint does), and reconciliation applied it. That
    success credited the order in full; the refund was recorded after it. Now the stored refund
    is adopted first: the payment is recorded as refunded at the provider, not credited."""
    clock.freeze(utcnow())

    order, intent, r = await refunded_before_paid(mock, client, db, settings)
    assert r.headers["simcharge-outcome"] == "unmatched"

    clock.advance(seconds=5)
    paid = _stripe_session(
        order.reference, order.total, order.currency,
        status="complete", payment_status="paid", payment_intent=intent,
    )  # fmt: skip
    completion = _stripe_event("checkout.session.completed", paid)
    stripe = app.state.providers.named("stripe")
    notification = await stripe.parse_notification(completion[1], completion[0], now=utcnow())
    now = utcnow()
    assert await db.run(lambda s: _store(s, "stripe", notification, now)) is not None

    clock.advance(seconds=60)
    await reconcile(db, app.state.providers)
    clock.advance(seconds=60)
    await reconcile(db, app.state.providers)  # anything left over is applied now

    row = await order_row(db, order.id)
    assert row.fulfilled_at is None, "a payment refunded before it was known was credited"
    assert (row.state, row.attention) == ("refunded", "provider_refund"), row.attention_note
    async with db.read() as s:
        refunds = [(x.amount, x.state) for x in (await s.execute(
            select(Refund).where(Refund.order_id == order.id))).scalars()]
        left = (await s.execute(select(func.count()).select_from(ProviderEvent).where(
            ProviderEvent.processed_at.is_(None)))).scalar_one()
    assert refunds == [(order.total, "succeeded")]
    assert left == 0
    assert {t.code for t in await transfers_of(db, f"order:{order.id}")} == {"unapplied"}
    await assert_ledger_balanced(db)


# --- A refund refused after the line was terminated: a second answer ------------------------


async def test_a_refused_refund_on_a_terminated_line_forfeits_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """What the refused refund's voided holds gave back to the terminated line is forfeited by
    transfers whose ids derive from the refund (termination's derive from the accounts: they
    exist already and would forfeit nothing); the provider's answer delivered again writes
    nothing more."""
    payer, oid, refund, now = await _refund_pending_then_terminated(client, db, settings)
    refused = _answer(refund, RefundState.failed)
    assert await db.run(lambda s: complete_refund(s, oid, refused, now + MINUTE)) == (
        "refund_failed"
    )

    async def forfeits() -> list[tuple[uuid.UUID, uuid.UUID, int]]:
        async with db.read() as s:
            rows = (await s.execute(select(LedgerTransfer).where(
                LedgerTransfer.code == "forfeit",
                LedgerTransfer.reference == f"line:{payer.line.id}",
            ))).scalars()
            return sorted((t.id, t.debit_account_id, t.amount) for t in rows)

    found = await forfeits()
    ours = [t for t in found if t[0] == derived_id("refund-forfeit", refund.id, t[1])]
    assert ours, found
    assert await db.run(lambda s: complete_refund(s, oid, refused, now + 2 * MINUTE)) == "already"
    assert await forfeits() == found
    assert await _left_on(db, payer.line) == []
    await assert_ledger_balanced(db)
