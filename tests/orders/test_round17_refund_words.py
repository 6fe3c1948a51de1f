"""What finance reads when money went back outside us (round 17).

What was wrong: a refund of ours completing after the payer had been refunded at the provider's
dashboard (the payer refunded twice) was booked as the operator's loss — rightly — and the order
flagged `chargeback`, "(a dispute lost, a refund at the provider)": finance read a chargeback
where there was none. Now the flag says what happened: `provider_refund`, the note naming the
refund at the provider and the double refund; a dispute (or a reversal) in the story keeps
`chargeback`. The ledger is the same either way (`clearing → loss:disputes`, code
`dispute_loss`). And a lost dispute or a reversal recorded as a refund by the provider no longer
says "refunded at the provider" in its note: "gone back to the payer by a chargeback".

Real databases (both), orders paid at the sandbox; the provider's refund applied as its
notification is (`reversals.refund_not_ours`), ours completed as the worker completes it.
"""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerTransfer
from simcharge.orders.models import Refund
from simcharge.orders.reversals import refund_not_ours
from simcharge.payments.providers import RefundResult
from simcharge.payments.providers import RefundState as ProviderRefundState
from tests.orders.helpers import order_row
from tests.orders.test_round15_refund_disputes import (
    _answer,
    _ask,
    _books,
    _credited,
    _ledger_verified,
    _lost,
)


async def _refunded_at_dashboard(
    db: Database, order_id: uuid.UUID, amount: int, what: str = "charge.refunded"
) -> str:
    """A refund made in the provider's dashboard, its notification applied."""
    news = RefundResult(
        refund_id=f"re_dash_{uuid.uuid4().hex[:8]}", provider_refund_id=None,
        state=ProviderRefundState.succeeded, amount=amount, currency="USD", raw={},
    )  # fmt: skip
    return await db.run(
        lambda s: refund_not_ours(s, order_id, news, utcnow(), source="webhook:evt_dash",
                                  what=what)
    )


async def _loss_of(db: Database, reference: str) -> int:
    async with db.read() as s:
        ours = (await s.execute(select(Refund).where(Refund.reference == reference))).scalar_one()
        loss = (
            await s.execute(
                select(LedgerTransfer.amount).where(
                    LedgerTransfer.reference == f"refund:{ours.id}",
                    LedgerTransfer.code == "dispute_loss",
                )
            )
        ).scalar_one()
    return int(loss)


async def test_ours_completing_after_a_dashboard_refund_reads_provider_refund_not_chargeback(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    order = await _credited(client, db, settings)
    total = order.total
    asked = total * 3 // 4
    reference = await _ask(db, order.id, asked)
    assert await _refunded_at_dashboard(db, order.id, total) == "provider_refund"
    assert await _answer(db, order.id, reference, asked, ok=True) == "refunded"

    row = await order_row(db, order.id)
    assert (row.state, row.refunded_amount) == ("refunded", total)
    assert row.attention == "provider_refund"
    note = row.attention_note or ""
    assert reference in note and "refunded twice" in note and "loss" in note
    assert "dispute" not in note and "chargeback" not in note
    # The ledger as before: what was paid out twice is the operator's loss.
    assert await _loss_of(db, reference) == asked
    books = await _books(db, order.id)
    assert (books.refunded, books.done, books.loss, books.held) == (total, total, asked, 0)
    await _ledger_verified(db)
    # Told again: nothing more, the flag unchanged.
    assert await _answer(db, order.id, reference, asked, ok=True) == "already"
    again = await order_row(db, order.id)
    assert (again.attention, again.attention_note) == (row.attention, row.attention_note)


async def test_a_dispute_in_the_story_still_reads_chargeback(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Half refunded at the dashboard, half disputed and lost, then ours of three quarters:
    a chargeback took part of it — finance reads `chargeback`."""
    order = await _credited(client, db, settings)
    total = order.total
    asked, half = total * 3 // 4, total // 2
    reference = await _ask(db, order.id, asked)
    await _refunded_at_dashboard(db, order.id, half)
    await _lost(db, order, total - half, "dp_r17")
    assert await _answer(db, order.id, reference, asked, ok=True) == "refunded"
    row = await order_row(db, order.id)
    assert row.attention == "chargeback" and reference in (row.attention_note or "")
    assert await _loss_of(db, reference) == asked
    await _ledger_verified(db)


async def test_a_reversal_recorded_as_a_refund_says_chargeback_in_its_note(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    reversed_, refunded = [await _credited(client, db, settings) for _ in range(2)]
    await _refunded_at_dashboard(db, reversed_.id, 500, what="PAYMENT.CAPTURE.REVERSED")
    await _refunded_at_dashboard(db, refunded.id, 500)
    note = (await order_row(db, reversed_.id)).attention_note or ""
    assert "PAYMENT.CAPTURE.REVERSED" in note and "by a chargeback" in note
    assert "refunded at the provider" not in note
    note = (await order_row(db, refunded.id)).attention_note or ""
    assert "refunded at the provider" in note and "chargeback" not in note
    await _ledger_verified(db)
