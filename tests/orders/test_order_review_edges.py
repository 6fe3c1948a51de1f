"""Orders, quotes and receipts: edges found by the seventh review round. Each docstring says
what was wrong and what is right now."""

from __future__ import annotations

import re
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.orders.models import OrderState
from tests.auth.helpers import problem
from tests.backoffice.helpers import new_staff
from tests.backoffice.test_paid_but_got_nothing import _wrong_amount
from tests.orders.helpers import new_payer, order_row, place, sandbox_object, signed_event
from tests.orders.test_receipts import _text
from tests.portal.helpers import new_customer, sign_in


async def test_the_json_receipt_of_a_payment_put_on_the_balance_says_what_was_paid(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A payment of 19.99 taken for a 20.00 order, never credited, then put on the line's
    balance by finance: its PDF receipt says 19.99 paid, no fee, 19.99 total — but the JSON
    receipt (`Accept: application/json`) gave the order's price, fee and total (20.00), amounts
    that were never charged, for the same receipt number. Both now say what was paid."""
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    oid = uuid.UUID(order["id"])
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/orders/{oid}/apply-to-wallet",
                          headers=finance.auth, json={"note": "customer asked for credit"})
    assert r.status_code == 200, r.text
    r = await client.get(f"/api/v1/orders/{oid}/receipt",
                         headers={**payer.auth, "Accept": "application/json"})
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["price"] == {"currency": "USD", "minor": 1999, "value": "19.99"}
    assert receipt["fee"] == {"currency": "USD", "minor": 0, "value": "0.00"}
    assert receipt["total"] == {"currency": "USD", "minor": 1999, "value": "19.99"}
    assert receipt["refunded"]["minor"] == 0


async def test_order_lists_refuse_a_state_that_is_none(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`GET /orders?state=payed` (a typo; the states are `pending`, `paid`, `fulfilled` …)
    answered 200 with no orders — a client, or staff on `/admin/orders`, reads "none" where
    there are some. A state that is none is now `422`, `field: state`; a real one filters."""
    payer = await new_payer(db, settings)
    await place(client, payer)
    r = await client.get("/api/v1/orders", params={"state": "payed"}, headers=payer.auth)
    assert r.status_code == 422 and problem(r)["field"] == "state", r.text
    r = await client.get("/api/v1/orders", params={"state": "pending"}, headers=payer.auth)
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    staff = await new_staff(db, settings, "finance")
    r = await client.get("/api/v1/admin/orders", params={"state": "payed"}, headers=staff.auth)
    assert r.status_code == 422 and problem(r)["field"] == "state", r.text
    r = await client.get("/api/v1/admin/orders", params={"state": "pending"}, headers=staff.auth)
    assert r.status_code == 200 and payer.line.msisdn in {o["msisdn"] for o in r.json()}


async def test_the_next_page_needs_its_time_as_well_as_its_id(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`before_id` alone (a client that kept only `next_before_id`) was ignored: the answer was
    the first page again, and a client paging until `next_before` is null went round for ever.
    It is now `422`, `field: before`."""
    payer = await new_payer(db, settings)
    first = await place(client, payer)
    await place(client, payer)
    r = await client.get("/api/v1/orders", params={"before_id": first["id"]}, headers=payer.auth)
    assert r.status_code == 422 and problem(r)["field"] == "before", r.text
    page = (await client.get("/api/v1/orders", params={"limit": 1}, headers=payer.auth)).json()
    r = await client.get("/api/v1/orders", headers=payer.auth, params={
        "limit": 1, "before": page["next_before"], "before_id": page["next_before_id"]})
    assert [o["id"] for o in r.json()["items"]] == [first["id"]]


async def test_a_payment_put_on_the_balance_keeps_its_receipt_once_refunded_at_the_provider(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """19.99 taken for a 20.00 order, never credited, put on the line's balance by finance —
    and then the payer also gets it back at the provider (its dashboard): the order becomes
    `refunded`. `applied_at` only looked at `paid` orders, so the receipt forgot the payment was
    put on the balance: issued after, it was refused ("your payment was refunded and nothing was
    credited", while 19.99 of credit stays on the line); issued before, it printed the package
    as included and 20.00 as paid. It is now the receipt of the payment put on the balance, with
    what was refunded."""
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    oid = uuid.UUID(order["id"])
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/orders/{oid}/apply-to-wallet",
                          headers=finance.auth, json={"note": "customer asked for credit"})
    assert r.status_code == 200, r.text
    row = await order_row(db, oid)
    body, headers = signed_event(
        settings, "refund.succeeded",
        await sandbox_object(db, row.reference, amount=1999, refunded=1999,
                             refund_id="dashboard-1", refund_amount=1999),
    )
    assert (await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
            ).status_code == 200
    assert (await order_row(db, oid)).state == OrderState.refunded

    r = await client.get(f"/api/v1/orders/{oid}/receipt",
                         headers={**payer.auth, "Accept": "application/json"})
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["includes"] == ["$19.99 put on the line's balance"]
    assert receipt["total"]["minor"] == 1999 and receipt["fee"]["minor"] == 0
    assert receipt["refunded"]["minor"] == 1999
    pdf = await client.get(f"/api/v1/orders/{oid}/receipt", headers=payer.auth)
    assert pdf.status_code == 200 and "250 minutes" not in _text(pdf.content)


_AMOUNT_CELL = re.compile(r'<td class="num">([^<]*)</td>')
_OLDER = re.compile(r'<a rel="next" href="(/account/records\?[^"]+)"')


async def test_the_records_page_pages_instead_of_cutting_records_off(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The records page showed the newest 200 records of the filters and nothing else: a
    month of calls and data sessions went past 200, and the older ones could not be seen —
    not even that there were more. It now pages ("Older", newest first, by the transfer's time
    and id): every record once, on one page or another, the filters kept."""
    customer = await new_customer(db, settings)
    line = customer.line
    sink = chart.consumption("USD", chart.shard_of(line.id))
    source = chart.funding("USD")

    async def usage(s: AsyncSession) -> None:
        await ensure_accounts(s, [sink, source])
        await post_transfers(s, [NewTransfer(
            id=uuid7(), amount=30_000, unit="USD", code="adjustment", reference="credit",
            debit_account_id=source.id, credit_account_id=line.wallet_account_id)], now=utcnow())
        # One transaction: all at the same time, so the pages are told apart by id too.
        await post_transfers(s, [
            NewTransfer(id=uuid7(), amount=cents, unit="USD", code="usage",
                        debit_account_id=line.wallet_account_id, credit_account_id=sink.id,
                        reference=f"usage:call-{cents}")
            for cents in range(1, 206)
        ], now=utcnow())

    await db.run(usage)
    sign_in(client, customer)
    seen: list[str] = []
    url: str | None = "/account/records?kind=usage"
    pages = 0
    while url is not None:
        r = await client.get(url.replace("&amp;", "&"))
        assert r.status_code == 200, r.text
        records = r.text.split("<table>")[1].split("</table>")[0]
        seen += _AMOUNT_CELL.findall(records)
        older = _OLDER.search(r.text)
        url = older.group(1) if older else None
        assert url is None or "kind=usage" in url
        pages += 1
        assert pages < 5
    assert pages == 2
    assert len(seen) == len(set(seen)) == 205


async def test_every_order_and_its_receipt_can_be_reached_from_the_records_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The records page's "My orders" — the portal's only list of orders, and of their
    receipts — showed the newest 20 and nothing else: the 21st order back, its page and its
    receipt could no longer be found in the portal. "My orders" now pages too ("Older"),
    keeping the records' filters and page."""
    payer = await new_payer(db, settings)
    placed = [(await place(client, payer, plan="starter-10"))["id"] for _ in range(22)]
    client.cookies.set("sc_session", payer.token)
    seen: list[str] = []
    url: str | None = "/account/records?kind=usage"
    pages = 0
    while url is not None:
        r = await client.get(url.replace("&amp;", "&"))
        assert r.status_code == 200, r.text
        table = r.text.split("<table>")[2].split("</table>")[0]
        seen += re.findall(r'href="/account/orders/([0-9a-f-]{36})"', table)
        older = re.search(r'<a rel="next" href="(/account/records\?[^"]*orders_before[^"]*)"',
                          r.text)
        url = older.group(1) if older else None
        assert url is None or "kind=usage" in url
        pages += 1
        assert pages < 4
    assert pages == 2
    assert seen == placed[::-1]


async def test_a_page_of_records_that_is_no_page_is_the_first(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """What the "Older" links carry is only ours to read: a time that is none, off the
    calendar in UTC, or outside our years, or an id that is none, is the first page — never
    an error."""
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    for before, before_id in (("yesterday", str(uuid.uuid4())), ("2026-12-01T00:00:00", "x"),
                              ("9999-12-31T23:59:59-05:00", str(uuid.uuid4())),
                              ("0001-01-01T00:00:00+01:00", str(uuid.uuid4()))):
        for prefix in ("", "orders_"):
            r = await client.get("/account/records", params={
                f"{prefix}before": before, f"{prefix}before_id": before_id})
            assert r.status_code == 200, (before, r.text)
            assert r.text.count("<td>Package</td>") == 2, before
