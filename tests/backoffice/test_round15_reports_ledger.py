"""The top-ups report read from the ledger (review round 15).

What was wrong:
- Lost disputes were in no column: a 2000 refund of an order, then the order's full dispute
  lost, left `net` 2000 above what the providers' clearing accounts held (the `dispute_loss`
  transfer was counted nowhere), and the dispute's refund was mixed into `refunded`.
- The report read the provider's `paid_at` and the orders' state today: a payment the provider
  said was made on a closed day but that reached the books a week later changed that day's row,
  and so did putting held money on a wallet (`uncredited` 1 → 0, `applied` 0 → 1).

Now every figure is a sum of ledger transfers by the day they were posted: a closed period,
computed again after any later activity, is the same to the byte; `net` is the clearing
accounts' movement, with `chargebacks` and `dispute_losses` in their own columns. Real flows on
both databases: orders paid at the sandbox, a late signed webhook, the API's refund confirmed by
the worker, a Stripe dispute stored and applied as the adapter does.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.ledger.service import NewTransfer, post_transfers
from simcharge.orders.models import Order, OrderState, ProviderEvent
from simcharge.orders.reversals import apply_refund_news
from simcharge.payments.codec import dispute_to_json
from simcharge.payments.providers import Dispute
from tests.backoffice.helpers import new_staff
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    idem,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    sandbox_object,
    signed_event,
)

DAY = timedelta(days=1)


async def ledger_copies(db: Database, row: Order, copies: list[dict[str, Any]]) -> None:
    """The ledger entries of copies of a credited order (`row`'s columns inserted as they are,
    each paid and credited at its `fulfilled_at`): what the order's credit moved through
    clearing (its sale, its fee), posted again for each copy at that instant through the
    ledger's service — the top-ups report reads the ledger, not the orders."""

    async def run(s: AsyncSession) -> None:
        originals = (await s.execute(
            select(LedgerTransfer)
            .join(LedgerAccount, LedgerAccount.id == LedgerTransfer.debit_account_id)
            .where(LedgerTransfer.reference == f"order:{row.id}",
                   LedgerAccount.code == "clearing")
        )).scalars().all()  # fmt: skip
        assert originals
        for copy in copies:
            if copy.get("fulfilled_at") is None:
                continue
            await post_transfers(s, [
                NewTransfer(id=uuid.uuid4(), amount=t.amount, unit=t.unit,
                            debit_account_id=t.debit_account_id,
                            credit_account_id=t.credit_account_id, code=t.code,
                            reference=f"order:{copy['id']}")
                for t in originals
            ], now=copy["fulfilled_at"])  # fmt: skip

    await db.run(run)


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer) -> dict[str, Any]:
    order = await place(client, payer, plan="traveller-20", method="paypal")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return order


async def _webhook(client: httpx.AsyncClient, db: Database, settings: Settings,
                   order: dict[str, Any], **override: Any) -> None:
    row = await order_row(db, order["id"])
    obj = await sandbox_object(db, row.reference, **override)
    body, headers = signed_event(settings, "payment.succeeded", obj,
                                 at=int(utcnow().timestamp()))
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text


async def _lost(db: Database, order: Order, amount: int) -> None:
    """Stripe's `charge.dispute.closed`, `status: lost`, stored and applied as the adapter's."""
    dispute = Dispute(f"dp_{uuid.uuid4().hex[:10]}", amount, "usd", "fraudulent", "lost", None,
                      order.reference)

    async def run(s: AsyncSession) -> str:
        event = ProviderEvent(
            provider="stripe", event_id=f"evt_{uuid.uuid4().hex[:12]}",
            event_type="charge.dispute.closed", order_id=order.id, payload={},
            dispute=dispute_to_json(dispute),
        )  # fmt: skip
        s.add(event)
        await s.flush()
        return await apply_refund_news(s, event, utcnow())

    await db.run(run)


async def _clearing_movement(db: Database, since: datetime, until: datetime) -> dict[str, int]:
    """Per currency: what the providers' clearing accounts were debited less credited by the
    transfers posted in [since, until) — read from the ledger's tables, not the report."""
    t = LedgerTransfer
    moved: dict[str, int] = {}
    async with db.read() as s:
        for side, sign in ((t.debit_account_id, 1), (t.credit_account_id, -1)):
            rows = await s.execute(
                select(t.unit, func.sum(t.amount))
                .join(LedgerAccount, LedgerAccount.id == side)
                .where(LedgerAccount.code == "clearing",
                       t.kind.in_(("posted", "post_pending")),
                       t.created_at >= since, t.created_at < until)
                .group_by(t.unit)
            )  # fmt: skip
            for unit, amount in rows:
                moved[unit] = moved.get(unit, 0) + sign * int(amount)
    return moved


def _sums(rows: list[dict[str, Any]], currency: str) -> dict[str, int]:
    names = ("topups", "amount", "fees", "uncredited", "uncredited_amount", "applied",
             "applied_amount", "refunded", "chargebacks", "dispute_losses", "net")
    return {n: sum(r[n] for r in rows if r["currency"] == currency) for n in names}


async def test_a_closed_period_never_changes_and_net_is_what_clearing_moved(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    first = datetime.combine(utcnow().date() - 10 * DAY, time(10), tzinfo=UTC)
    clock.freeze(first)
    payer, other = await new_payer(db, settings), await new_payer(db, settings)
    # Day 1: one order credited; one paid another amount (held, applied a week later).
    credited = await _credited(client, settings, payer)
    held = await place(client, other, plan="traveller-20")
    await pay_at_sandbox(client, settings, held)
    await _webhook(client, db, settings, held, amount=1999)
    assert (await order_row(db, held["id"])).state == OrderState.paid
    # Day 2: an order paid at the provider whose news comes a week later.
    clock.advance(days=1)
    other = await new_payer(db, settings)  # a session of its own: a day idle ends one
    late = await place(client, other, plan="starter-10")
    await pay_at_sandbox(client, settings, late)
    paid_on_day_2 = utcnow()
    staff = {"finance": await new_staff(db, settings, "finance")}
    closed = {"from": first.date().isoformat(), "to": (first + DAY).date().isoformat()}

    async def report(params: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        auth = staff["finance"].auth
        r = await client.get("/api/v1/admin/reports/topups", headers=auth, params=params)
        assert r.status_code == 200, r.text
        c = await client.get("/api/v1/admin/reports/topups", headers=auth,
                             params={**params, "format": "csv"})
        assert c.status_code == 200, c.text
        return r.json(), c.text

    before, before_csv = await report(closed)
    usd = _sums(before, "USD")
    assert (usd["topups"], usd["uncredited"], usd["uncredited_amount"], usd["applied"]) == (
        1, 1, 1999, 0)
    assert usd["net"] == usd["amount"] + 1999

    # A week later: the late payment's webhook (the provider's paid_at: day 2), the held money
    # put on the wallet, a 2000 refund of the credited order, then its whole dispute lost.
    clock.advance(days=6)
    today = utcnow()
    finance = staff["finance"] = await new_staff(db, settings, "finance")
    await _webhook(client, db, settings, late, paid_at=paid_on_day_2.isoformat())
    late_row = await order_row(db, late["id"])
    assert late_row.state == OrderState.fulfilled
    assert late_row.paid_at is not None and late_row.paid_at.date() == paid_on_day_2.date()
    r = await client.post(f"/api/v1/admin/orders/{held['id']}/apply-to-wallet",
                          headers=finance.auth, json={"note": "credit instead"})
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/v1/admin/orders/{credited['id']}/refunds",
                          headers={**finance.auth, **idem()},
                          json={"amount": 2000, "reason": "asked by the payer"})
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)  # the provider confirms the refund
    row = await order_row(db, credited["id"])
    assert row.refunded_amount == 2000
    await _lost(db, row, row.total)

    # The closed period, computed again: the same, to the byte.
    after, after_csv = await report(closed)
    assert after == before
    assert after_csv == before_csv

    # Today's row holds today's movements, each in its column.
    days = {"from": today.date().isoformat(), "to": today.date().isoformat()}
    now_rows, _ = await report(days)
    got = _sums(now_rows, "USD")
    assert got["topups"] == 1 and got["amount"] == late_row.total
    assert (got["applied"], got["applied_amount"]) == (1, 1999)
    assert got["uncredited"] == 0
    assert got["refunded"] == 2000
    assert got["chargebacks"] == row.total - 2000
    assert got["dispute_losses"] == 2000
    midnight = datetime.combine(today.date(), time(), tzinfo=UTC)
    moved = await _clearing_movement(db, midnight, midnight + DAY)
    assert got["net"] == moved["USD"]
    assert got["net"] == (got["amount"] + got["uncredited_amount"] - got["refunded"]
                          - got["chargebacks"] - got["dispute_losses"])
    # Over the whole stretch, `net` is what is left in clearing.
    whole = {"from": closed["from"], "to": days["to"]}
    everything, _ = await report(whole)
    start = datetime.combine(first.date(), time(), tzinfo=UTC)
    assert _sums(everything, "USD")["net"] == (
        await _clearing_movement(db, start, midnight + DAY))["USD"]
    assert {r["time_zone"] for r in everything} == {"UTC"}
    await assert_ledger_balanced(db)


async def test_the_csv_and_the_page_show_the_new_columns_and_the_zone(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    await _credited(client, settings, payer)
    finance = await new_staff(db, settings, "finance")
    today = utcnow().date().isoformat()
    params = {"from": today, "to": today}
    r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth,
                         params={**params, "format": "csv"})
    [row] = [x for x in csv.DictReader(io.StringIO(r.text)) if x["method"] != "TOTAL"]
    assert list(row) == [
        "day", "method", "provider", "currency", "topups", "amount_minor", "fees_minor",
        "uncredited", "uncredited_amount_minor", "applied", "applied_amount_minor",
        "refunded_minor", "refunded_fees_minor", "chargebacks_minor", "dispute_losses_minor",
        "net_minor", "time_zone",
    ]
    assert row["time_zone"] == "UTC" and row["method"] == "paypal"
    for name in ("conversion", "failures", "trial-balance"):
        r = await client.get(f"/api/v1/admin/reports/{name}", headers=finance.auth,
                             params=params)
        assert r.status_code == 200, r.text
        assert {x["time_zone"] for x in r.json()} == (set() if name == "failures" else {"UTC"})
        r = await client.get(f"/api/v1/admin/reports/{name}", headers=finance.auth,
                             params={**params, "format": "csv"})
        assert r.text.split("\r\n", 1)[0].endswith(",time_zone"), name
