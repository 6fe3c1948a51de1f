"""The top-ups report against the ledger, account by account: what finance reads is what the
ledger holds. Built through the real services (orders paid at the sandbox and credited, refunds
confirmed by the provider, money taken and not credited, applied to a wallet, an adjustment,
usage from buckets and wallet, a termination's forfeit); the ledger is read from its own tables
with SQL, never through the report's code."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.batch import import_usage_records, read_usage_text
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lifecycle.service import Policy, sweep
from simcharge.lines.models import Line, LineState
from simcharge.orders.models import OrderState
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
MONEY = ("amount", "fees", "uncredited", "uncredited_amount", "applied", "applied_amount",
         "chargebacks", "dispute_losses",
         "refunded", "net", "topups")


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer,
                    **how: Any) -> dict[str, Any]:
    order = await place(client, payer, **how)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return order


async def _taken_not_credited(client: httpx.AsyncClient, db: Database, settings: Settings,
                              payer: Payer, **paid: Any) -> dict[str, Any]:
    """An order the provider says it took `paid` for (another amount; or none named)."""
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await pay_at_sandbox(client, settings, order)
    obj = await sandbox_object(db, row.reference, **paid)
    if paid.get("amount") is None:
        obj.pop("amount")
    body, headers = signed_event(settings, "payment.succeeded", obj)
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (await order_row(db, order["id"])).state == OrderState.paid
    return order


async def _refund(client: httpx.AsyncClient, finance: Any, order: dict[str, Any],
                  amount: int | None) -> None:
    r = await client.post(
        f"/api/v1/admin/orders/{order['id']}/refunds",
        headers={**finance.auth, **idem()},
        json={"reason": "asked by the payer"} | ({} if amount is None else {"amount": amount}),
    )
    assert r.status_code == 202, r.text


async def _usage(db: Database, settings: Settings, *rows: str) -> None:
    text = "id,subscriber,service,quantity,started_at,country\n" + "\n".join(rows)
    report = await import_usage_records(db, settings, read_usage_text(text, "usage.csv"))
    assert report.accepted == len(rows) and not report.errors, report


class Ledger:
    """Sums of the ledger's own tables."""

    def __init__(self, s: AsyncSession) -> None:
        self.s = s

    async def account(self, key: str) -> dict[str, int]:
        """An operator account over its shards: posted and pending debits and credits."""
        row = (await self.s.execute(select(
            func.coalesce(func.sum(LedgerAccount.debits_posted), 0),
            func.coalesce(func.sum(LedgerAccount.credits_posted), 0),
            func.coalesce(func.sum(LedgerAccount.debits_pending), 0),
            func.coalesce(func.sum(LedgerAccount.credits_pending), 0),
        ).where(LedgerAccount.key.in_(chart.keys(key))))).one()
        return dict(zip(("debits", "credits", "debits_pending", "credits_pending"),
                        map(int, row), strict=True))

    async def clearing(self, currency: str) -> dict[str, int]:
        """Every provider's clearing account in `currency`."""
        keys = (await self.s.execute(select(LedgerAccount.key).where(
            LedgerAccount.key.like("clearing:%"), LedgerAccount.unit == currency))).scalars()
        found = {k.split("#")[0] for k in keys if k}
        total: dict[str, int] = defaultdict(int)
        for key in found:
            for name, value in (await self.account(key)).items():
                total[name] += value
        return dict(total)

    async def transfers(self, code: str, credit_key: str | None = None,
                        debit_key: str | None = None) -> tuple[int, int]:
        """(count, amount) of the transfers of `code` that moved money (posted at once, or a
        reservation's posting), into or out of an operator account."""
        stmt = select(func.count(), func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
            LedgerTransfer.code == code, LedgerTransfer.kind.in_(("posted", "post_pending")))
        for column, key in ((LedgerTransfer.credit_account_id, credit_key),
                            (LedgerTransfer.debit_account_id, debit_key)):
            if key is not None:
                stmt = stmt.where(column.in_(
                    select(LedgerAccount.id).where(LedgerAccount.key.in_(chart.keys(key)))))
        count, amount = (await self.s.execute(stmt)).one()
        return int(count), int(amount)


async def test_the_top_ups_report_agrees_with_the_ledger_account_by_account(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    start = utcnow()
    clock.freeze(start)
    dollars, other, yuan = (await new_payer(db, settings), await new_payer(db, settings),
                            await new_payer(db, settings, currency="CNY"))
    # Credited: with and without a fee (PayPal's 3.49 % + 0.49, served by the sandbox), with
    # wallet credit, a gift to another's line, and in yuan.
    starter = await _credited(client, settings, dollars, plan="starter-10")
    explorer = await _credited(client, settings, dollars, plan="explorer-50", method="paypal")
    traveller = await _credited(client, settings, other, plan="traveller-20", method="paypal")
    gift = await _credited(client, settings, other, plan="global-100",
                           msisdn=dollars.line.msisdn)
    await _credited(client, settings, yuan, plan="starter-10", method="alipay")
    assert explorer["fee"]["minor"] > 0 and starter["fee"]["minor"] == 0
    # Taken and not credited: another amount (held; and one put on the wallet, after part of
    # it was refunded), and a success that names no amount.
    held = await _taken_not_credited(client, db, settings, other, amount=1999)
    applied = await _taken_not_credited(client, db, settings, dollars, amount=1999)
    await _taken_not_credited(client, db, settings, other, amount=None)
    # A declined payment and one still pending: no money.
    declined = await place(client, dollars, plan="starter-10")
    await pay_at_sandbox(client, settings, declined, action="fail")
    await client.post(f"/api/v1/orders/{declined['id']}/check", headers=dollars.auth)
    await place(client, dollars, plan="starter-10")

    finance = await new_staff(db, settings, "finance")
    await _refund(client, finance, starter, 400)  # partial
    await _refund(client, finance, traveller, None)  # full: sale, fee, units taken back
    await _refund(client, finance, held, 999)  # part of money held
    await _refund(client, finance, applied, 500)  # part, then the rest to the wallet
    await run_worker(app, db, settings)  # the provider confirms
    r = await client.post(f"/api/v1/admin/orders/{applied['id']}/apply-to-wallet",
                          headers=finance.auth, json={"note": "credit instead"})
    assert r.status_code == 200, r.text
    agent = await new_staff(db, settings, "agent")
    r = await client.post(f"/api/v1/admin/lines/{other.line.id}/adjustments",
                          headers={**agent.auth, **idem()},
                          json={"amount": 300, "reason": "goodwill"})
    assert r.json()["state"] == "applied", r.text
    # Usage: voice from a bucket; SMS from the wallet (the full refund took the buckets back).
    clock.advance(minutes=5)
    at = (start + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await _usage(db, settings, f"r1,{dollars.line.msisdn},voice,90,{at},",
                 f"r2,{other.line.msisdn},sms,3,{at},")
    # A terminated line's credit is forfeited (not a top-up: the report leaves it out).
    lapsed = await new_payer(db, settings)
    await _credited(client, settings, lapsed, plan="explorer-50")

    async def frozen_long_ago(s: AsyncSession) -> None:
        line = await s.get(Line, lapsed.line.id)
        assert line is not None
        line.state, line.state_changed_at = LineState.frozen.value, utcnow() - timedelta(days=400)

    await db.run(frozen_long_ago)
    report = await sweep(db, Policy.of(settings), now=utcnow())
    assert report.forfeited >= 1
    # A refund asked and not confirmed yet: held in the ledger, not in the report.
    await _refund(client, finance, gift, 100)

    days = {"from": start.date().isoformat(), "to": (start + DAY).date().isoformat()}
    r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth, params=days)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert {row["currency"] for row in rows} == {"USD", "CNY"}
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(MONEY, 0))
    for row in rows:
        for name in MONEY:
            totals[row["currency"]][name] += row[name]

    async with db.read() as s:
        ledger = Ledger(s)
        for currency, got in totals.items():
            sales = await ledger.account(f"revenue:sales:{currency}")
            fees = await ledger.account(f"revenue:fees:{currency}")
            unapplied = await ledger.account(f"unapplied:{currency}")
            clearing = await ledger.clearing(currency)
            sold, _ = await ledger.transfers("topup", credit_key=f"revenue:sales:{currency}")
            _, put_on_wallets = await ledger.transfers("applied",
                                                       debit_key=f"unapplied:{currency}")
            _, refunded_held = await ledger.transfers("refund", debit_key=f"unapplied:{currency}")
            where = f"{currency}: report {got}"
            # Credited: each order's sale and fee went from clearing to revenue.
            assert got["topups"] == sold, where
            assert got["amount"] == sales["credits"] + fees["credits"], where
            assert got["fees"] == fees["credits"], where
            # Taken and not credited: into `unapplied`; out by refunds and to wallets.
            held_count, _ = await ledger.transfers("unapplied",
                                                   credit_key=f"unapplied:{currency}")
            assert got["uncredited"] == held_count, where
            assert got["uncredited_amount"] == unapplied["credits"], where
            assert got["applied_amount"] == put_on_wallets, where
            assert unapplied["debits"] == put_on_wallets + refunded_held, where
            # Refunds the provider confirmed left through clearing; the one asked is pending.
            assert got["refunded"] + got["chargebacks"] + got["dispute_losses"] == (
                clearing["credits"]), where
            assert got["net"] == clearing["debits"] - clearing["credits"], where
        usd = await ledger.clearing("USD")
        assert usd["credits_pending"] == 100
        # What the report does not cover moved too, in its own accounts.
        assert (await ledger.account("revenue:usage:USD"))["credits"] > 0
        assert (await ledger.account("expiry:USD"))["credits"] > 0
        assert (await ledger.transfers("adjustment"))[1] == 300
    usd_row = totals["USD"]
    # Held: the other amount, the one put on the wallet, and the success that named no amount
    # once the provider's status named it (the worker's reconciliation posted it then).
    assert (usd_row["uncredited"], usd_row["applied"]) == (3, 1)
    assert totals["CNY"]["topups"] == 1
    await assert_ledger_balanced(db)
