"""A dispute lost after the order was refunded (review round 12).

What was wrong: a lost dispute is recorded as a refund made at the provider, capped by what was
left to refund. After a full refund that is nothing: the order was flagged and nothing was
written. But the provider took the disputed amount from the operator's balance again (the payer
got the money twice: our refund, and their bank's), so the ledger's provider clearing account
said the provider owed the operator money it no longer held. Now what the dispute took beyond
what was left to refund leaves the clearing account for the operator's dispute losses
(`loss:disputes:<CUR>`), once per dispute; what was left is a refund by the provider as before.
The line's wallet and buckets are not touched again, the order stays refunded, flagged
`chargeback` with the dispute and the loss in its note, and the ledger balances. A dispute won
moves nothing: while open the provider held the money and our books moved nothing.

Real databases (both), the sandbox provider and its refunds; the dispute's notification stored
as the Stripe adapter stores it, then applied (`reversals.apply_refund_news`).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.orders.models import Order, ProviderEvent, Refund
from simcharge.orders.reversals import apply_refund_news
from simcharge.payments.codec import dispute_to_json
from simcharge.payments.providers import Dispute
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


async def _staff(db: Database) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    return {"Authorization": f"Bearer {issued.token}"}


async def _refunded(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, payer: Payer,
    amount: int | None,
) -> dict[str, Any]:
    """A fulfilled starter-10 order refunded by us at the sandbox (`amount`, or in full)."""
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    r = await client.post(
        f"/api/v1/admin/orders/{order['id']}/refunds",
        headers={**await _staff(db), **idem()},
        json={"reason": "test"} if amount is None else {"amount": amount, "reason": "test"},
    )
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)
    row = await order_row(db, order["id"])
    assert row.refunded_amount == (amount or row.total), row.state
    return order


async def _decide(db: Database, order_id: uuid.UUID, dispute: Dispute, event_id: str) -> str:
    """The dispute's notification, stored as a webhook stores it, then applied."""

    async def run(s: AsyncSession) -> str:
        event = ProviderEvent(
            provider="sandbox", event_id=event_id, event_type="charge.dispute.closed",
            order_id=order_id, payload={}, dispute=dispute_to_json(dispute),
        )  # fmt: skip
        s.add(event)
        await s.flush()
        return await apply_refund_news(s, event, utcnow())

    return await db.run(run)


async def _balance(db: Database, key: str) -> int:
    """An operator account's balance over its shards, debits minus credits."""
    async with db.read() as s:
        rows = (
            await s.execute(select(LedgerAccount).where(LedgerAccount.key.in_(chart.keys(key))))
        ).scalars().all()
    return sum(a.debits_posted - a.credits_posted for a in rows)


async def _holdings(db: Database, line_id: uuid.UUID) -> Any:
    async with db.read() as s:
        line = await s.get(Line, line_id)
        assert line is not None
        b = await line_balances(s, line)
    return b.model_dump(mode="json")  # the wallet, every bucket, the line's state and validity


async def _counts(db: Database) -> tuple[int, int]:
    async with db.read() as s:
        refunds = await s.scalar(select(func.count()).select_from(Refund))
        transfers = await s.scalar(select(func.count()).select_from(LedgerTransfer))
    return int(refunds or 0), int(transfers or 0)


CLEARING, LOSS = "clearing:sandbox:USD", "loss:disputes:USD"


async def test_a_dispute_lost_after_a_full_refund_is_the_operators_loss(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _refunded(app, client, db, settings, payer, None)
    order_id, total = uuid.UUID(order["id"]), order["total"]["minor"]
    clearing, holdings = await _balance(db, CLEARING), await _holdings(db, payer.line.id)
    refunds, transfers = await _counts(db)
    lost = Dispute("du_12FULL", total, "usd", "fraudulent", "lost", None)

    assert await _decide(db, order_id, lost, "evt_12full") == "flagged"
    # The provider took the total from the operator again: it owes that much less.
    assert await _balance(db, CLEARING) == clearing - total
    assert await _balance(db, LOSS) == total
    assert await _holdings(db, payer.line.id) == holdings  # the line is not touched again
    assert await _counts(db) == (refunds, transfers + 1)  # no refund: one loss transfer
    row = await order_row(db, order_id)
    assert (row.state, row.refunded_amount) == ("refunded", total)
    assert row.attention == "chargeback"
    assert "du_12FULL" in (row.attention_note or "") and "loss" in (row.attention_note or "")
    await assert_ledger_balanced(db)

    # The same decision again (another notification of it): nothing more.
    await _decide(db, order_id, lost, "evt_12full_again")
    assert await _balance(db, LOSS) == total
    assert await _counts(db) == (refunds, transfers + 1)
    await assert_ledger_balanced(db)


async def test_a_dispute_lost_after_a_partial_refund_beyond_what_is_left(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """What was left to refund is a refund by the provider (revenue back, a credit note), as
    before; only what the dispute took beyond it is the operator's loss."""
    payer = await new_payer(db, settings)
    order = await _refunded(app, client, db, settings, payer, 300)
    order_id, total = uuid.UUID(order["id"]), order["total"]["minor"]
    left = total - 300
    clearing, holdings = await _balance(db, CLEARING), await _holdings(db, payer.line.id)
    lost = Dispute("du_12PART", total, "USD", "fraudulent", "lost", None)

    await _decide(db, order_id, lost, "evt_12part")
    assert await _balance(db, CLEARING) == clearing - total
    assert await _balance(db, LOSS) == 300
    assert await _holdings(db, payer.line.id) == holdings
    async with db.read() as s:
        theirs = (
            await s.execute(
                select(Refund).where(
                    Refund.order_id == order_id, Refund.requested_by.startswith("provider:")
                )
            )
        ).scalars().all()
    assert [(x.amount, x.state) for x in theirs] == [(left, "succeeded")]
    assert theirs[0].credit_note_number is not None
    row = await order_row(db, order_id)
    assert (row.state, row.refunded_amount) == ("refunded", total)
    assert row.attention == "chargeback" and "du_12PART" in (row.attention_note or "")
    await assert_ledger_balanced(db)
    before = await _counts(db)
    await _decide(db, order_id, lost, "evt_12part_again")
    assert await _counts(db) == before
    assert await _balance(db, LOSS) == 300


async def test_a_dispute_lost_within_what_is_left_is_no_loss(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Within what was left to refund: a refund by the provider only, as before, and repeated
    (a second notification) it is not taken for a loss of what it itself refunded."""
    payer = await new_payer(db, settings)
    order = await _refunded(app, client, db, settings, payer, 300)
    order_id = uuid.UUID(order["id"])
    lost = Dispute("du_12LEFT", 500, "USD", "fraudulent", "lost", None)
    await _decide(db, order_id, lost, "evt_12left")
    before = await _counts(db)
    await _decide(db, order_id, lost, "evt_12left_again")
    assert await _counts(db) == before
    assert await _balance(db, LOSS) == 0
    assert (await order_row(db, order_id)).refunded_amount == 800
    await assert_ledger_balanced(db)


async def test_a_dispute_won_after_a_full_refund_moves_nothing(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Won, the provider keeps (or gives back) the money it held while the dispute was open;
    our books moved nothing when it opened, so nothing moves now: the order is only flagged."""
    payer = await new_payer(db, settings)
    order = await _refunded(app, client, db, settings, payer, None)
    order_id = uuid.UUID(order["id"])
    before, clearing = await _counts(db), await _balance(db, CLEARING)
    won = Dispute("du_12WON", order["total"]["minor"], "USD", "fraudulent", "won", None)
    assert await _decide(db, order_id, won, "evt_12won") == "flagged"
    assert await _counts(db) == before
    assert await _balance(db, CLEARING) == clearing
    assert await _balance(db, LOSS) == 0
    row = await order_row(db, order_id)
    assert row.attention == "chargeback" and "du_12WON" in (row.attention_note or "")
    await assert_ledger_balanced(db)
    assert isinstance(row, Order)
