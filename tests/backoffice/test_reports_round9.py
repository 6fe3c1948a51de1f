"""Reports, ninth review round: the operator's days, CSV a spreadsheet cannot run, and the
ledger's trial balance.

What was wrong or missing:
- Every report grouped by the UTC day, and `from`/`to` were UTC dates: an operator in Manila
  (UTC+8) closing its books by its own day saw its 00:00–08:00 sales on the previous day. Days
  now follow the operator's zone (`Period.zone`, from `SIMCHARGE_OPERATOR_TIMEZONE`), on both
  databases, across changes of daylight saving time (a day of 23 or 25 hours), still summed in
  SQL.
- CSV cells were written as they came: a payment method (or any text) starting with `=`, `+`,
  `-`, `@`, a tab or a line break ran as a formula in a spreadsheet (OWASP "CSV Injection"). The
  API's CSV had no file name either.
- There was no trial balance: nothing a finance person could check the ledger's books with
  (every unit's debits equal its credits, per account, as of a day).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from simcharge.app import create_app
from simcharge.backoffice.reports import (
    Period,
    conversion,
    failures,
    operator_zone,
    period,
    to_csv,
    topups,
    trial_balance,
    zone_of,
)
from simcharge.config import Settings
from simcharge.db import Database, table_of
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.orders.models import Order, Refund
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.backoffice.test_reports_ledger import _credited, _refund, _taken_not_credited, _usage
from tests.backoffice.test_round15_reports_ledger import ledger_copies
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

MANILA, NEW_YORK, MADRID = (ZoneInfo(z) for z in ("Asia/Manila", "America/New_York",
                                                  "Europe/Madrid"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def d(text: str) -> date:
    return date.fromisoformat(text)


async def _paid_order(client: httpx.AsyncClient, db: Database, settings: Settings) -> Order:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    # Out of the tested periods' way (its copies take their own times).
    long_ago = at("2001-01-01T12:00:00")
    await db.run(lambda s: s.execute(update(Order).where(Order.id == uuid.UUID(order["id"]))
                                     .values(created_at=long_ago, paid_at=long_ago,
                                             fulfilled_at=long_ago)))
    # Its ledger entries too: the top-ups report reads the ledger's times (round 15).
    await db.run(lambda s: s.execute(update(LedgerTransfer)
                                     .where(LedgerTransfer.reference == f"order:{order['id']}")
                                     .values(created_at=long_ago)))
    return await order_row(db, order["id"])


async def _copies(db: Database, row: Order, paid: list[datetime], *, failed: int = 0,
                  method: str | None = None) -> None:
    """Copies of a credited order paid at each instant (created two minutes before), and
    `failed` failed ones created at the first instant."""
    def copy(paid_at: datetime | None, state: str) -> dict[str, Any]:
        values = {c.name: getattr(row, c.key) for c in table_of(Order).columns}
        values.update(
            id=uuid.uuid4(), reference="C" + uuid.uuid4().hex[:20], state=state,
            created_at=(paid_at or paid[0]) - timedelta(minutes=2), paid_at=paid_at,
            fulfilled_at=paid_at, receipt_number=None,
        )
        if method is not None:
            values["method_code"] = method
        return values

    rows = [copy(t, "fulfilled") for t in paid] + [copy(None, "failed") for _ in range(failed)]
    await db.run(lambda s: s.execute(insert(table_of(Order)), rows))
    await ledger_copies(db, row, rows)


# --- the operator's day -----------------------------------------------------------------------


async def test_manila_closes_its_books_by_its_own_day(
    client: httpx.AsyncClient, connection: AsyncConnection, db: Database, settings: Settings
) -> None:
    row = await _paid_order(client, db, settings)
    # 2026-03-09 23:30 UTC is 07:30 on the 10th in Manila; 2026-03-10 15:59 UTC the 10th's last
    # minute there, 16:05 UTC the 11th's sixth (created two minutes before, on the 11th too).
    await _copies(db, row, [at("2026-03-09T15:30:00")] * 2 + [at("2026-03-09T23:30:00")] * 3
                  + [at("2026-03-10T15:59:00")] * 4 + [at("2026-03-10T16:05:00")] * 5, failed=1)
    if connection.dialect.name == "postgresql":  # the session's zone must not decide the day
        await connection.exec_driver_sql("SET TIME ZONE 'America/Los_Angeles'")
    async with db.read() as s:
        local = Period(d("2026-03-09"), d("2026-03-11"), MANILA)
        top = await topups(s, local)
        conv = await conversion(s, local)
        fail = await failures(s, local)
        utc = await topups(s, Period(d("2026-03-09"), d("2026-03-11")))
        only_tenth = await topups(s, Period(d("2026-03-10"), d("2026-03-10"), MANILA))
    assert [(r.day, r.topups, r.amount) for r in top] == [
        (d("2026-03-09"), 2, 2 * row.total), (d("2026-03-10"), 7, 7 * row.total),
        (d("2026-03-11"), 5, 5 * row.total),
    ]
    assert [(c.day, c.created, c.paid) for c in conv] == [
        (d("2026-03-09"), 3, 2), (d("2026-03-10"), 7, 7), (d("2026-03-11"), 5, 5)
    ]
    assert [(f.day, f.orders) for f in fail] == [(d("2026-03-09"), 1)]
    assert [(r.day, r.topups) for r in utc] == [(d("2026-03-09"), 5), (d("2026-03-10"), 9)]
    assert [(r.day, r.topups) for r in only_tenth] == [(d("2026-03-10"), 7)]


@pytest.mark.parametrize(
    ("zone", "paid", "day"),
    [
        # New York: EST (−5) until 2026-03-08 07:00 UTC, EDT (−4) until 2026-11-01 06:00 UTC.
        (NEW_YORK, "2026-03-08T04:30:00", "2026-03-07"),  # 23:30 EST
        (NEW_YORK, "2026-03-09T03:30:00", "2026-03-08"),  # 23:30 EDT, the 23-hour day
        (NEW_YORK, "2026-03-09T04:30:00", "2026-03-09"),  # 00:30 EDT (23:30 at a fixed −5)
        (NEW_YORK, "2026-11-01T04:30:00", "2026-11-01"),  # 00:30 EDT, the 25-hour day
        (NEW_YORK, "2026-11-02T04:30:00", "2026-11-01"),  # 23:30 EST (00:30 at a fixed −4)
        (NEW_YORK, "2026-11-02T05:30:00", "2026-11-02"),  # 00:30 EST
        # Madrid: CET (+1) until 2026-03-29 01:00 UTC, CEST (+2) until 2026-10-25 01:00 UTC.
        (MADRID, "2026-03-29T22:30:00", "2026-03-30"),  # 00:30 CEST (23:30 at a fixed +1)
        (MADRID, "2026-10-25T22:30:00", "2026-10-25"),  # 23:30 CET (00:30 at a fixed +2)
        (MANILA, "2026-12-31T16:05:00", "2027-01-01"),  # 00:05, no daylight saving time
    ],
)
async def test_a_day_follows_daylight_saving_time(
    client: httpx.AsyncClient, db: Database, settings: Settings, zone: ZoneInfo, paid: str,
    day: str,
) -> None:
    """Over a whole year (both changes in one statement) and over the day itself."""
    row = await _paid_order(client, db, settings)
    await _copies(db, row, [at(paid)], failed=1)
    first = d(day).replace(month=1, day=1) if d(day).year == 2026 else d("2026-01-02")
    year = Period(first, first + timedelta(days=365), zone)
    async with db.read() as s:
        top = [(r.day, r.topups) for r in await topups(s, year)]
        created = [(c.day, c.created) for c in await conversion(s, year) if c.created]
        fail = [(f.day, f.orders) for f in await failures(s, year)]
        that_day = await topups(s, Period(d(day), d(day), zone))
        next_day = await topups(s, Period(d(day) + timedelta(days=1), d(day) + timedelta(days=1),
                                          zone))
    assert top == [(d(day), 1)]
    assert (created, fail) == ([(d(day), 2)], [(d(day), 1)])
    assert [(r.day, r.topups) for r in that_day] == [(d(day), 1)]
    assert next_day == []


def test_a_period_is_the_operators_days() -> None:
    p = period("2026-03-08", "2026-03-08", d("2026-12-06"), NEW_YORK)
    assert (p.since, p.until) == (at("2026-03-08T05:00:00"), at("2026-03-09T04:00:00"))
    p = period("2026-11-01", "2026-11-01", d("2026-12-06"), NEW_YORK)
    assert p.until - p.since == timedelta(hours=25)
    p = period(None, None, d("2026-12-06"), MANILA)
    assert (p.start, p.end, p.since) == (d("2026-11-07"), d("2026-12-06"),
                                         at("2026-11-06T16:00:00"))
    assert [s for _, s in Period(d("2026-01-01"), d("2026-12-31"), MADRID).offsets()] == [
        3600, 7200, 3600]
    assert Period(d("2026-01-01"), d("2026-12-31"), MADRID).offsets()[1][0] == at(
        "2026-03-29T01:00:00")


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../../etc/passwd", "UTC'; --",
                                  "Asia/Manila "])
def test_an_unknown_time_zone_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        operator_zone(name)


def test_the_zone_comes_from_the_settings(settings: Settings) -> None:
    assert zone_of(settings).key == "UTC"
    assert zone_of(settings.model_copy(update={"operator_timezone": "Asia/Manila"})) == MANILA
    with pytest.raises(ValueError, match="time zone"):
        zone_of(settings.model_copy(update={"operator_timezone": "Asia/Atlantis"}))


async def test_the_api_and_the_pages_take_the_operators_dates(
    db: Database, settings: Settings
) -> None:
    manila = settings.model_copy(update={"operator_timezone": "Asia/Manila"})
    app = create_app(manila, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        row = await _paid_order(client, db, manila)
        await _copies(db, row, [at("2026-03-09T23:30:00")], failed=1)
        finance = await new_staff(db, manila, "finance")
        tenth = {"from": "2026-03-10", "to": "2026-03-10"}
        r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth, params=tenth)
        assert r.status_code == 200, r.text
        assert [(x["day"], x["topups"]) for x in r.json()] == [("2026-03-10", 1)]
        r = await client.get("/api/v1/admin/reports/failures", headers=finance.auth,
                             params={**tenth, "format": "csv"})
        assert r.text.splitlines()[1:] == ["2026-03-10,sandbox,failed,1,Asia/Manila"]
        assert r.headers["content-disposition"] == (
            'attachment; filename="failures-2026-03-10-2026-03-10.csv"')
        await web_sign_in(client, finance)
        page = await client.get("/backoffice/reports", params=tenth)
        assert page.status_code == 200 and "Asia/Manila" in page.text
        r = await client.get("/backoffice/reports/conversion.csv", params=tenth)
        assert r.text.splitlines()[1:] == ["2026-03-10,2,1,0.5,Asia/Manila"]
        # Today is Manila's today: a default period ends on it.
        r = await client.get("/api/v1/admin/reports/conversion", headers=finance.auth)
        assert r.json()[-1]["day"] == utcnow().astimezone(MANILA).date().isoformat()


# --- CSV a spreadsheet cannot run ---------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tcmd", "\r=1"]


def test_a_cell_that_starts_a_formula_is_neutralised() -> None:
    rows = [{"method": text, "amount": -1250, "rate": -0.5, "day": d("2026-03-10")}
            for text in FORMULAS]
    rows.append({"method": "-12.50", "amount": 0, "rate": 0.0, "day": d("2026-03-10")})
    rows.append({"method": "paypal", "amount": 12, "rate": 1.0, "day": d("2026-03-10")})
    got = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["method"] for r in got] == ["'" + t for t in FORMULAS] + ["-12.50", "paypal"]
    assert {r["amount"] for r in got} == {"-1250", "0", "12"}
    assert {r["rate"] for r in got} == {"-0.5", "0.0", "1.0"}
    assert {r["day"] for r in got} == {"2026-03-10"}


async def test_report_csv_neutralises_text_from_the_data(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    row = await _paid_order(client, db, settings)
    day = utcnow().date() - timedelta(days=2)
    paid = datetime.combine(day, time(12), tzinfo=UTC)
    for method in FORMULAS:
        await _copies(db, row, [paid], failed=1, method=method)
    # A refund confirmed that day of a payment made before it: that day's net is negative.
    refunded = await _paid_order(client, db, settings)
    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/orders/{refunded.id}/refunds",
                          headers={**finance.auth, **idem()},
                          json={"amount": 300, "reason": "asked by the payer"})
    assert r.status_code == 202, r.text

    await run_worker(app, db, settings)  # the provider confirms it

    async def move(s: AsyncSession) -> None:
        await s.execute(update(Order).where(Order.id == refunded.id).values(
            method_code="-neg", paid_at=paid - timedelta(days=1),
            fulfilled_at=paid - timedelta(days=1)))
        # The report reads the ledger (round 15): the refund's entries move to that day.
        ids = (await s.execute(select(Refund.id).where(
            Refund.order_id == refunded.id))).scalars().all()
        await s.execute(update(LedgerTransfer).where(
            LedgerTransfer.reference.in_([f"refund:{i}" for i in ids])).values(created_at=paid))

    await db.run(move)
    params = {"from": day.isoformat(), "to": day.isoformat()}
    for url, extra in (("/api/v1/admin/reports/{}", {"format": "csv"}),
                       ("/backoffice/reports/{}.csv", {})):
        if url.startswith("/backoffice"):
            await web_sign_in(client, finance)
        r = await client.get(url.format("topups"), headers=finance.auth,
                             params={**params, **extra})
        assert r.status_code == 200, r.text
        assert "filename=\"topups-" in r.headers["content-disposition"]
        got = {x["method"]: x for x in csv.DictReader(io.StringIO(r.text))
               if x["method"] != "TOTAL"}  # the totals rows: test_round17_reports
        assert set(got) == {"'" + t for t in FORMULAS} | {"'-neg"}
        assert (got["'-neg"]["refunded_minor"], got["'-neg"]["net_minor"]) == ("300", "-300")
        r = await client.get(url.format("failures"), headers=finance.auth,
                             params={**params, **extra})
        assert {x["method"] for x in csv.DictReader(io.StringIO(r.text))} == {
            "'" + t for t in FORMULAS}


# --- the trial balance --------------------------------------------------------------------------


async def _funded_transfer(client: httpx.AsyncClient, payer: Payer, to: Payer) -> None:
    r = await client.post(f"/api/v1/me/lines/{payer.line.id}/transfers",
                          headers={**payer.auth, **idem()},
                          json={"to": to.line.msisdn, "usage_type": "monetary", "amount": 150})
    assert r.status_code == 201, r.text


async def _ledger_accounts(s: AsyncSession) -> dict[tuple[str, str, str | None], tuple[int, int]]:
    """The ledger's stored totals (not its transfers), by unit, code and key without shard."""
    found: dict[tuple[str, str, str | None], tuple[int, int]] = defaultdict(lambda: (0, 0))
    for unit, code, key, debits, credits in await s.execute(select(
        LedgerAccount.unit, LedgerAccount.code, LedgerAccount.key,
        func.sum(LedgerAccount.debits_posted), func.sum(LedgerAccount.credits_posted),
    ).group_by(LedgerAccount.unit, LedgerAccount.code, LedgerAccount.key)):
        name = key.split("#")[0] if key else None
        old = found[(unit, code, name)]
        found[(unit, code, name)] = (old[0] + int(debits), old[1] + int(credits))
    return {k: v for k, v in found.items() if v != (0, 0)}


async def test_the_trial_balance_nets_every_unit_to_zero_and_agrees_with_the_ledger(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    start = utcnow()
    clock.freeze(start)
    dollars, other, yuan = (await new_payer(db, settings), await new_payer(db, settings),
                            await new_payer(db, settings, currency="CNY"))
    starter = await _credited(client, settings, dollars, plan="starter-10")
    await _credited(client, settings, dollars, plan="explorer-50", method="paypal")
    traveller = await _credited(client, settings, other, plan="traveller-20", method="paypal")
    await _credited(client, settings, yuan, plan="starter-10", method="alipay")
    held = await _taken_not_credited(client, db, settings, other, amount=1999)
    applied = await _taken_not_credited(client, db, settings, dollars, amount=1999)
    finance = await new_staff(db, settings, "finance")
    await _refund(client, finance, starter, 400)
    await _refund(client, finance, traveller, None)
    await _refund(client, finance, held, 999)
    await run_worker(app, db, settings)
    r = await client.post(f"/api/v1/admin/orders/{applied['id']}/apply-to-wallet",
                          headers=finance.auth, json={"note": "credit instead"})
    assert r.status_code == 200, r.text
    agent = await new_staff(db, settings, "agent")
    r = await client.post(f"/api/v1/admin/lines/{other.line.id}/adjustments",
                          headers={**agent.auth, **idem()},
                          json={"amount": 300, "reason": "goodwill"})
    assert r.json()["state"] == "applied", r.text
    await _funded_transfer(client, dollars, other)
    clock.advance(minutes=5)
    used_at = (start + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await _usage(db, settings, f"r1,{dollars.line.msisdn},voice,90,{used_at},",
                 f"r2,{other.line.msisdn},sms,3,{used_at},")
    await _refund(client, finance, starter, 100)  # asked, not confirmed: a reservation
    await assert_ledger_balanced(db)

    today = start.date()
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=finance.auth,
                         params={"to": today.isoformat()})
    assert r.status_code == 200, r.text
    rows = r.json()
    units: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        units[row["unit"]][0] += row["debits"]
        units[row["unit"]][1] += row["credits"]
        assert row["balance"] == row["debits"] - row["credits"]
    assert {"USD", "CNY", "VOICE_S", "DATA_B"} <= set(units)
    assert all(debits == credits > 0 for debits, credits in units.values()), units
    codes = {row["code"] for row in rows}
    assert {"clearing", "revenue", "funding", "issuance", "wallet", "bucket", "unapplied",
            "consumption"} <= codes, codes
    got = {(row["unit"], row["code"], row["account"]): (row["debits"], row["credits"])
           for row in rows}
    async with db.read() as s:
        assert got == await _ledger_accounts(s)
        revenue = {cur: sum(c - d_ for (u, code, _), (d_, c) in got.items()
                            if u == cur and code == "revenue") for cur in ("USD", "CNY")}
        for cur, total in revenue.items():
            stored = (await s.execute(select(
                func.sum(LedgerAccount.credits_posted) - func.sum(LedgerAccount.debits_posted))
                .where(LedgerAccount.code == "revenue", LedgerAccount.unit == cur))).scalar_one()
            assert total == int(stored) > 0, cur
    # The top-ups report's money is what went to revenue:sales and revenue:fees.
    r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth,
                         params={"from": today.isoformat(),
                                 "to": (today + timedelta(days=1)).isoformat()})
    for cur in ("USD", "CNY"):
        taken = sum(x["amount"] for x in r.json() if x["currency"] == cur)
        sold = sum(got.get((cur, "revenue", f"revenue:{k}:{cur}"), (0, 0))[1]
                   for k in ("sales", "fees"))
        assert taken == sold > 0, cur
    # As of an earlier day: nothing was posted yet; CSV the same rows, text neutralised.
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=finance.auth,
                         params={"to": (today - timedelta(days=1)).isoformat()})
    assert r.json() == []
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=finance.auth,
                         params={"to": today.isoformat(), "format": "csv"})
    listed = list(csv.DictReader(io.StringIO(r.text)))
    assert len(listed) == len(rows) and r.text.startswith(
        "unit,code,account,debits_minor,credits_minor,balance_minor")
    assert {x["account"] for x in listed if x["code"] == "wallet"} == {""}
    # The day is the operator's: everything was posted on the zone's day of `start`, nothing
    # before it. Kiritimati (UTC+14) and Pago Pago (UTC−11) are never on the same date, so at
    # any hour one of them is on another date than UTC.
    async with db.read() as s:
        for name in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Manila",
                     "America/New_York"):
            zone = ZoneInfo(name)
            local = start.astimezone(zone).date()
            books = await trial_balance(s, Period(local, local, zone))
            assert books.rows and books.balanced and books.day == local, name
            before = local - timedelta(days=1)
            assert (await trial_balance(s, Period(before, before, zone))).rows == [], name
    # The page.
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/reports", params={"to": today.isoformat()})
    assert page.status_code == 200
    assert "Trial balance" in page.text and "revenue:sales:USD" in page.text
    assert "the ledger needs checking" not in page.text
    r = await client.get("/backoffice/reports/trial-balance.csv",
                         params={"to": today.isoformat()})
    assert r.status_code == 200 and len(r.text.splitlines()) == len(rows) + 1


async def test_a_report_with_a_bad_name_or_date_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    finance = await new_staff(db, settings, "finance")
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=finance.auth,
                         params={"to": "2026-02-30"})
    assert r.status_code == 422 and r.json()["type"].endswith("/validation-error"), r.text
    assert "to" in r.text
    r = await client.get("/api/v1/admin/reports/trial_balance", headers=finance.auth)
    assert r.status_code == 422
    agent = await new_staff(db, settings, "agent")
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=agent.auth)
    assert r.status_code == 403
    with pytest.raises(ValidationFailed):
        period("2026-03-10", "2026-03-09", d("2026-12-06"), MANILA)
