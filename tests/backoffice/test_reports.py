"""Reports: top-ups and revenue, conversion, failures, lines by state — pages with SVG charts,
CSV, JSON; finance and admins only."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from simcharge.backoffice.reports import Period, conversion, failures, topups
from simcharge.config import Settings
from simcharge.db import Database, table_of
from simcharge.kit.clock import utcnow
from simcharge.orders.models import Order
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.backoffice.test_round15_reports_ledger import ledger_copies
from tests.orders.helpers import (
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    sandbox_object,
    signed_event,
)


async def test_reports_count_what_happened(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    paid = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, paid)
    await client.post(f"/api/v1/orders/{paid['id']}/check", headers=payer.auth)
    declined = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, declined, action="fail")
    await client.post(f"/api/v1/orders/{declined['id']}/check", headers=payer.auth)
    await place(client, payer, plan="starter-10")  # still pending
    finance = await new_staff(db, settings, "finance")
    today = utcnow().date().isoformat()
    r = await client.get(
        "/api/v1/admin/reports/topups", headers=finance.auth, params={"from": today, "to": today}
    )
    assert r.status_code == 200, r.text
    [row] = r.json()
    assert (row["method"], row["currency"], row["topups"]) == ("sandbox", "USD", 1)
    r = await client.get("/api/v1/admin/reports/conversion", headers=finance.auth)
    last = r.json()[-1]
    assert (last["created"], last["paid"]) == (3, 1)
    r = await client.get("/api/v1/admin/reports/failures", headers=finance.auth)
    assert [(x["state"], x["orders"]) for x in r.json()] == [("failed", 1)]
    r = await client.get(
        "/api/v1/admin/reports/lines", headers=finance.auth, params={"format": "csv"}
    )
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {"state": "active", "lines": "1"} in rows or any(x["state"] == "active" for x in rows)
    # the page: charts and CSV
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/reports")
    assert page.status_code == 200
    assert page.text.count("<svg") >= 4 and "<script" not in page.text
    r = await client.get("/backoffice/reports/topups.csv")
    assert r.status_code == 200 and r.text.startswith("day,method,provider,currency,topups")
    # bad periods
    for params in (
        {"from": "yesterday"},
        {"from": today, "to": "2000-01-01"},
        {"from": (utcnow().date() - timedelta(days=400)).isoformat()},
    ):
        r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth, params=params)
        assert r.status_code == 422, params
    r = await client.get("/api/v1/admin/reports/everything", headers=finance.auth)
    assert r.status_code == 422


async def test_agents_do_not_see_reports(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    r = await client.get("/api/v1/admin/reports/topups", headers=agent.auth)
    assert r.status_code == 403
    await web_sign_in(client, agent)
    assert (await client.get("/backoffice/reports")).status_code == 403
    assert (await client.get("/backoffice/reports/topups.csv")).status_code == 403


async def test_top_ups_in_two_currencies_are_never_mixed(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Only credited orders are top-ups; fees and refunds are added in the currency they are
    in; money taken for an order never credited, in another currency, stays in that one."""
    admin = await new_staff(db, settings, "admin")
    catalog = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()
    sandbox = next(m for m in catalog["payment_methods"] if m["code"] == "sandbox")
    with_fee = {**sandbox, "fee_percent": "2.00", "fee_fixed": {"USD": "0.30", "CNY": "2.00"}}
    r = await client.put(
        "/api/v1/admin/catalog/payment_methods/sandbox", headers=admin.auth, json=with_fee
    )
    assert r.status_code == 200, r.text
    in_yuan = {**with_fee, "code": "sandbox-cny", "currencies": ["CNY"],
               "fee_fixed": {"CNY": "2.00"}, "limits": {}}
    r = await client.put(
        "/api/v1/admin/catalog/payment_methods/sandbox-cny", headers=admin.auth, json=in_yuan
    )
    assert r.status_code == 200, r.text
    dollars = await new_payer(db, settings)
    yuan = await new_payer(db, settings, currency="CNY")
    usd = await place(client, dollars, plan="starter-10")  # 10.00 + 2 % + 0.30 = 10.50
    cny = await place(client, yuan, plan="starter-10", method="sandbox-cny")  # 68 + 2 % + 2
    assert (usd["total"]["minor"], usd["fee"]["minor"], usd["total"]["currency"]) == (
        1050, 50, "USD"
    )
    assert (cny["total"]["minor"], cny["fee"]["minor"], cny["total"]["currency"]) == (
        7136, 336, "CNY"
    )
    for order, payer in ((usd, dollars), (cny, yuan)):
        await pay_at_sandbox(client, settings, order)
        r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
        assert r.json()["state"] == "fulfilled"
    # a USD order paid in yuan: flagged, nothing credited; the 71.36 CNY taken is not a top-up
    wrong = await place(client, dollars, plan="starter-10")
    ref = (await order_row(db, wrong["id"])).reference
    body, headers = signed_event(
        settings,
        "payment.succeeded",
        await sandbox_object(db, ref, amount=7136, currency="CNY"),
    )
    assert (await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)).is_success
    assert (await order_row(db, wrong["id"])).attention == "amount_mismatch"
    # 4.00 USD refunded (done by the provider)
    finance = await new_staff(db, settings, "finance")
    r = await client.post(
        f"/api/v1/admin/orders/{usd['id']}/refunds",
        headers={**finance.auth, "Idempotency-Key": "r1"},
        json={"amount": 400, "reason": "asked by the payer"},
    )
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)
    assert (await order_row(db, usd["id"])).refunded_amount == 400
    await place(client, dollars, plan="starter-10")  # pending: nothing
    today = utcnow().date().isoformat()
    r = await client.get(
        "/api/v1/admin/reports/topups", headers=finance.auth, params={"from": today, "to": today}
    )
    rows = {(row["method"], row["currency"]): row for row in r.json()}
    none = {"topups": 0, "amount": 0, "fees": 0, "uncredited": 0, "uncredited_amount": 0,
            "applied": 0, "applied_amount": 0, "refunded": 0, "refunded_fees": 0,
            "chargebacks": 0, "dispute_losses": 0, "time_zone": "UTC", "provider": "sandbox"}
    assert rows == {
        ("sandbox", "USD"): {
            "day": today, "method": "sandbox", "currency": "USD", **none, "topups": 1,
            "amount": 1050, "fees": 50, "refunded": 400, "refunded_fees": 19, "net": 650,
        },
        # the USD order paid in yuan: its yuan alone, none of its dollar fee or price
        ("sandbox", "CNY"): {
            "day": today, "method": "sandbox", "currency": "CNY", **none, "uncredited": 1,
            "uncredited_amount": 7136, "net": 7136,
        },
        ("sandbox-cny", "CNY"): {
            "day": today, "method": "sandbox-cny", "currency": "CNY", **none, "topups": 1,
            "amount": 7136, "fees": 336, "net": 7136,
        },
    }
    r = await client.get(
        "/api/v1/admin/reports/topups",
        headers=finance.auth,
        params={"from": today, "to": today, "format": "csv"},
    )
    assert r.text.splitlines()[0] == (
        "day,method,provider,currency,topups,amount_minor,fees_minor,uncredited,"
        "uncredited_amount_minor,applied,applied_amount_minor,refunded_minor,refunded_fees_minor,"
        "chargebacks_minor,dispute_losses_minor,net_minor,time_zone"
    )
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/reports")
    assert "Net top-ups per day (CNY)" in page.text and "Net top-ups per day (USD)" in page.text
    assert "¥71.36" in page.text or "CN¥71.36" in page.text


async def test_a_report_is_summed_in_the_database_by_utc_day(
    client: httpx.AsyncClient, connection: AsyncConnection, db: Database, settings: Settings
) -> None:
    """A period's orders are grouped where they lie: the report's statements return about as
    many rows as the report has, not one per order (a year of orders is not read into memory).
    And a day is a UTC day, whatever time zone the database session is in."""
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    row = await order_row(db, order["id"])
    day = utcnow().date() - timedelta(days=3)
    late = datetime.combine(day, time(23, 30), tzinfo=UTC)  # the day's last hour, UTC
    early = late + timedelta(hours=1)  # the next day's first

    def copy(paid_at: datetime | None, state: str) -> dict[str, Any]:
        values = {c.name: getattr(row, c.key) for c in table_of(Order).columns}
        values.update(
            id=uuid.uuid4(), reference="C" + uuid.uuid4().hex[:20], state=state,
            created_at=(paid_at or late) - timedelta(minutes=2), paid_at=paid_at,
            fulfilled_at=paid_at, receipt_number=None,
        )
        return values

    copies = [copy(late + timedelta(seconds=i), "fulfilled") for i in range(40)]
    copies += [copy(early + timedelta(seconds=i), "fulfilled") for i in range(20)]
    copies += [copy(None, "failed") for _ in range(5)]
    await db.run(lambda s: s.execute(insert(table_of(Order)), copies))
    await ledger_copies(db, row, copies)  # the top-ups report reads the ledger (round 15)
    if connection.dialect.name == "postgresql":  # 23:30 UTC is 07:30 the next day there
        await connection.exec_driver_sql("SET TIME ZONE 'Asia/Shanghai'")

    returned: list[int] = []

    def count_rows(_conn: Any, cursor: Any, *_: Any) -> None:
        returned.append(len(cursor._rows))  # both drivers' adapters fetch the rows at once

    p = Period(day, day + timedelta(days=1))
    event.listen(connection.sync_connection, "after_cursor_execute", count_rows)
    try:
        async with db.read() as s:
            top = await topups(s, p)
            conv = await conversion(s, p)
            fail = await failures(s, p)
    finally:
        event.remove(connection.sync_connection, "after_cursor_execute", count_rows)
    assert [(r.day, r.topups, r.amount) for r in top] == [
        (day, 40, 40 * row.total), (day + timedelta(days=1), 20, 20 * row.total)
    ]
    assert [(c.day, c.created, c.paid) for c in conv] == [
        (day, 45, 40), (day + timedelta(days=1), 20, 20)
    ]
    assert [(f.day, f.method, f.state, f.orders) for f in fail] == [(day, "sandbox", "failed", 5)]
    assert returned and max(returned) <= 4, returned
