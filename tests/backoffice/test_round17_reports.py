"""The top-ups report for finance's reconciliation (seventeenth round, an auditor in Manila).

What was wrong:
- A row was a day, the order's method and a currency: a method re-pointed to another provider
  put two clearing accounts in one row, which no provider's statement matches. A row is now a
  day, method, provider and currency: one clearing account (`clearing:<provider>:<CUR>`).
- `refunded` mixed the `refund` and `refund_fee` transfers: the period's fee income took two
  trial balances to find. `refunded_fees` now gives the fees given back (by refunds and
  chargebacks: a part of those columns, as `fees` is of `amount`); `refunded` and `net` mean
  what they meant.
- No totals: the page and the CSV end with one total per currency (in the CSV, rows whose
  `method` is `TOTAL`, `day` and `provider` empty); the JSON has none.
- A sales channel's TMF654 top-up (channel → wallet) is in no row; the page now says so and
  where it is (the trial balance's channel accounts).

Real flows on both databases: orders paid at the sandbox, the API's refund confirmed by the
worker, a lost dispute applied as the adapter does, held money put on a wallet, a channel's
`topupBalance`; a re-pointed method's order posted through the ledger's service.
"""

from __future__ import annotations

import csv
import io
import uuid
from html import unescape
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.orders.models import Order, ProviderEvent
from simcharge.orders.reversals import apply_refund_news
from simcharge.payments.codec import dispute_to_json
from simcharge.payments.providers import Dispute
from tests.backoffice.helpers import new_staff, web_sign_in
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
from tests.tmf654.helpers import BASE, new_holder

URL = "/api/v1/admin/reports/topups"
COUNTED = ("topups", "amount", "fees", "uncredited", "uncredited_amount", "applied",
           "applied_amount", "refunded", "refunded_fees", "chargebacks", "dispute_losses", "net")
MINOR = {"amount", "fees", "uncredited_amount", "applied_amount", "refunded", "refunded_fees",
         "chargebacks", "dispute_losses", "net"}


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer,
                    **how: Any) -> dict[str, Any]:
    order = await place(client, payer, **how)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return order


async def _repointed(client: httpx.AsyncClient, db: Database, payer: Payer) -> dict[str, Any]:
    """An order of the `paypal` method placed once the method was pointed at PayPal itself
    (the tests' sandbox stands in for it otherwise): its credit — sale and fee, as fulfilment
    posts them — goes through `clearing:paypal:USD`, posted by the ledger's service."""
    order = await place(client, payer, plan="traveller-20", method="paypal")
    row = await order_row(db, order["id"])

    async def run(s: AsyncSession) -> None:
        await s.execute(update(Order).where(Order.id == row.id).values(provider="paypal"))
        shard = chart.shard_of(row.id)
        clearing = chart.clearing("paypal", "USD", shard)
        sales, fees = chart.sales("USD", shard), chart.fees("USD", shard)
        await ensure_accounts(s, [clearing, sales, fees])
        await post_transfers(s, [
            NewTransfer(id=uuid.uuid4(), amount=amount, unit="USD", debit_account_id=clearing.id,
                        credit_account_id=to.id, code=code, reference=f"order:{row.id}")
            for amount, to, code in ((row.price, sales, "topup"), (row.fee, fees, "fee"))
        ], now=utcnow())  # fmt: skip

    await db.run(run)
    return order


async def _lost(db: Database, order_id: str, amount: int) -> None:
    """Stripe's `charge.dispute.closed`, `status: lost`, stored and applied as the adapter's."""
    row = await order_row(db, order_id)
    dispute = Dispute(f"dp_{uuid.uuid4().hex[:10]}", amount, "usd", "fraudulent", "lost", None,
                      row.reference)

    async def run(s: AsyncSession) -> str:
        event = ProviderEvent(
            provider="stripe", event_id=f"evt_{uuid.uuid4().hex[:12]}",
            event_type="charge.dispute.closed", order_id=row.id, payload={},
            dispute=dispute_to_json(dispute),
        )  # fmt: skip
        s.add(event)
        await s.flush()
        return await apply_refund_news(s, event, utcnow())

    await db.run(run)


async def _held_then_applied(client: httpx.AsyncClient, db: Database, settings: Settings,
                             payer: Payer, finance: Any) -> None:
    """Money taken for another amount (held in `unapplied`), then put on the line's balance."""
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await pay_at_sandbox(client, settings, order)
    obj = await sandbox_object(db, row.reference, amount=1999)
    body, headers = signed_event(settings, "payment.succeeded", obj)
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/apply-to-wallet",
                          headers=finance.auth, json={"note": "credit instead"})
    assert r.status_code == 200, r.text


async def _account(db: Database, key: str) -> tuple[int, int]:
    """An operator account's posted (debits, credits), its shards together, from its table."""
    async with db.read() as s:
        debits, credits = (await s.execute(select(
            func.coalesce(func.sum(LedgerAccount.debits_posted), 0),
            func.coalesce(func.sum(LedgerAccount.credits_posted), 0),
        ).where(LedgerAccount.key.in_(chart.keys(key))))).one()
    return int(debits), int(credits)


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _topups_table(page: str) -> str:
    """The page's top-ups section (its table ends where the conversion report starts)."""
    return page[page.index('id="topups"'):page.index('id="conversion"')]


async def test_each_row_is_one_clearing_account_and_gives_back_its_fees_apart(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    finance = await new_staff(db, settings, "finance")
    refunded = await _credited(client, settings, payer, plan="traveller-20", method="paypal")
    disputed = await _credited(client, settings, payer, plan="explorer-50", method="paypal")
    moved = await _repointed(client, db, payer)
    r = await client.post(f"/api/v1/admin/orders/{refunded['id']}/refunds",
                          headers={**finance.auth, **idem()},
                          json={"reason": "asked by the payer", "amount": 400})
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)  # the provider confirms the refund
    await _lost(db, disputed["id"], disputed["total"]["minor"])
    await _held_then_applied(client, db, settings, payer, finance)

    today = utcnow().date().isoformat()
    params = {"from": today, "to": today}
    r = await client.get(URL, headers=finance.auth, params=params)
    assert r.status_code == 200, r.text
    rows = {(x["method"], x["provider"]): x for x in r.json()}
    # The re-pointed method's order is a row of its own: its clearing account's.
    assert set(rows) == {("paypal", "sandbox"), ("paypal", "paypal"), ("sandbox", "sandbox")}
    assert all(x["method"] != "TOTAL" for x in r.json())  # the JSON has no totals rows
    paypal = rows[("paypal", "paypal")]
    assert (paypal["topups"], paypal["amount"], paypal["fees"], paypal["net"]) == (
        1, moved["total"]["minor"], moved["fee"]["minor"], moved["total"]["minor"])
    assert paypal["refunded"] == paypal["refunded_fees"] == paypal["chargebacks"] == 0
    # Each row's net is its clearing account's movement, to the minor unit.
    for provider in ("sandbox", "paypal"):
        debits, credits = await _account(db, f"clearing:{provider}:USD")
        assert sum(x["net"] for x in r.json() if x["provider"] == provider) == debits - credits
    # Held money put on the wallet (outside clearing) is on the row of the clearing account
    # that took it, with the money it was taken as.
    held = rows[("sandbox", "sandbox")]
    assert (held["uncredited"], held["uncredited_amount"], held["applied"],
            held["applied_amount"]) == (1, 1999, 1, 1999)
    # The fees given back: the refund's share of its fee and all of the lost dispute's, also
    # counted in `refunded` and `chargebacks` — which keep their meaning, as `net` does.
    fee_debits, fee_credits = await _account(db, "revenue:fees:USD")
    row = rows[("paypal", "sandbox")]
    assert row["refunded"] == 400 and row["chargebacks"] == disputed["total"]["minor"]
    assert 0 < row["refunded_fees"] - disputed["fee"]["minor"] < refunded["fee"]["minor"]
    assert row["refunded_fees"] == fee_debits
    assert sum(x["fees"] - x["refunded_fees"] for x in rows.values()) == fee_credits - fee_debits
    _, clearing_credits = await _account(db, "clearing:sandbox:USD")
    assert row["refunded"] + row["chargebacks"] + row["dispute_losses"] == clearing_credits
    for x in rows.values():
        assert x["net"] == (x["amount"] + x["uncredited_amount"] - x["refunded"]
                            - x["chargebacks"] - x["dispute_losses"])

    # The CSV (API and page alike): the provider and the refunded fees, and one total.
    api = await client.get(URL, headers=finance.auth, params={**params, "format": "csv"})
    await web_sign_in(client, finance)
    page_csv = await client.get("/backoffice/reports/topups.csv", params=params)
    assert api.text == page_csv.text
    got = _csv_rows(api.text)
    assert list(got[0]) == [
        "day", "method", "provider", "currency", "topups", "amount_minor", "fees_minor",
        "uncredited", "uncredited_amount_minor", "applied", "applied_amount_minor",
        "refunded_minor", "refunded_fees_minor", "chargebacks_minor", "dispute_losses_minor",
        "net_minor", "time_zone",
    ]
    *days, total = got
    assert [(x["method"], x["provider"]) for x in days] == sorted(rows)
    assert {k: total[k] for k in ("day", "method", "provider", "currency", "time_zone")} == {
        "day": "", "method": "TOTAL", "provider": "", "currency": "USD", "time_zone": "UTC"}
    for name in COUNTED:
        header = f"{name}_minor" if name in MINOR else name
        assert int(total[header]) == sum(int(x[header]) for x in days) == sum(
            x[name] for x in rows.values()), name
    debits, credits = await _account(db, "clearing:sandbox:USD")
    paypal_debits, paypal_credits = await _account(db, "clearing:paypal:USD")
    assert int(total["net_minor"]) == debits - credits + paypal_debits - paypal_credits
    await assert_ledger_balanced(db)


async def test_totals_per_currency_on_the_page_and_a_channel_top_up_is_elsewhere(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    dollars = await new_payer(db, settings)
    yuan = await new_payer(db, settings, currency="CNY")
    usd = [await _credited(client, settings, dollars, plan="starter-10") for _ in range(2)]
    cny = await _credited(client, settings, yuan, plan="starter-10", method="alipay")
    # A shop's TMF654 top-up: channel → wallet, through no provider.
    holder = await new_holder(db, wallet=0)
    issued = await db.run(lambda s: create_api_key(s, "shop", ["balance:write"]))
    r = await client.post(
        f"{BASE}/topupBalance",
        json={"amount": {"amount": 7, "units": "USD"}, "usageType": "monetary",
              "bucket": {"id": str(holder.line.wallet_account_id)},
              "partyAccount": {"id": str(holder.account_id)}},
        headers={"Authorization": f"Bearer {issued.token}", **idem()},
    )
    assert r.status_code == 201, r.text
    finance = await new_staff(db, settings, "finance")
    today = utcnow().date().isoformat()
    params = {"from": today, "to": today}

    rows = (await client.get(URL, headers=finance.auth, params=params)).json()
    assert {(x["currency"], x["provider"]) for x in rows} == {("USD", "sandbox"),
                                                              ("CNY", "sandbox")}
    usd_net = sum(x["net"] for x in rows if x["currency"] == "USD")
    assert usd_net == sum(o["total"]["minor"] for o in usd)  # not the channel's 7.00
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=finance.auth,
                         params=params)
    [channel] = [x for x in r.json() if x["code"] == "channel"]
    assert (channel["unit"], channel["debits"]) == ("USD", 700)

    text = (await client.get(URL, headers=finance.auth,
                             params={**params, "format": "csv"})).text
    totals = [x for x in _csv_rows(text) if x["method"] == "TOTAL"]
    assert [(x["currency"], int(x["net_minor"])) for x in totals] == [
        ("CNY", cny["total"]["minor"]), ("USD", usd_net)]
    assert text.endswith("\r\n") and _csv_rows(text)[-2:] == totals  # after the days' rows

    await web_sign_in(client, finance)
    page = unescape((await client.get("/backoffice/reports", params=params)).text)
    table = _topups_table(page)
    assert ">Provider<" in table and ">Refunded fees<" in table
    assert table.count(">Total<") == 2  # one per currency, never both summed
    assert "$20.00" in table  # the dollars' total
    assert "Top-ups sold through sales channels (TMF654" in table
    assert "in the trial balance, on the channel accounts" in table

    # A period without top-ups: no totals, in the CSV or on the page; the JSON is empty.
    empty = {"from": "2001-01-01", "to": "2001-01-02"}
    assert (await client.get(URL, headers=finance.auth, params=empty)).json() == []
    r = await client.get("/backoffice/reports/topups.csv", params=empty)
    assert r.status_code == 200 and r.text.count("\r\n") == 1 and "TOTAL" not in r.text
    table = _topups_table(unescape((await client.get("/backoffice/reports",
                                                     params=empty)).text))
    assert ">Total<" not in table and "None." in table
    # A bad period is refused as before, naming its field, and no CSV is written.
    r = await client.get(URL, headers=finance.auth, params={"from": "2001-13-01", "format": "csv"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem")
    assert r.json()["field"] == "from", r.text
    await assert_ledger_balanced(db)
