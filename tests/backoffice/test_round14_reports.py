"""Report CSVs, fourteenth review round.

What was wrong:
- `topups.csv` wrote minor units (cents) under a plain `amount` header, easily read as dollars.
  Every amount column of a report CSV now says so (`amount_minor`, …, `balance_minor`); the JSON
  keeps its names (documented as minor units).
- The "Lines by state" CSV link dropped the report's `from`/`to`.
- The trial balance CSV was named `trial-balance-<from>-<to>.csv`, though it is a balance as of
  the end of `to`: it is `trial-balance-as-of-<to>.csv` now.
"""

from __future__ import annotations

import csv
import io
from html import unescape

import httpx

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer, pay_at_sandbox, place

MONEY = ["amount_minor", "fees_minor", "uncredited_amount_minor", "applied_amount_minor",
         "refunded_minor", "net_minor"]


async def test_topups_csv_says_its_amounts_are_minor_units(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    finance = await new_staff(db, settings, "finance")
    today = utcnow().date().isoformat()
    params = {"from": today, "to": today}
    r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth, params=params)
    [row] = r.json()
    assert "amount" in row and "amount_minor" not in row  # the JSON keeps its names
    r = await client.get("/api/v1/admin/reports/topups", headers=finance.auth,
                         params={**params, "format": "csv"})
    api_csv = r.text
    await web_sign_in(client, finance)
    page_csv = (await client.get("/backoffice/reports/topups.csv", params=params)).text
    for text in (api_csv, page_csv):
        [got] = [x for x in csv.DictReader(io.StringIO(text)) if x["method"] != "TOTAL"]
        assert list(got) == ["day", "method", "provider", "currency", "topups", "amount_minor",
                             "fees_minor", "uncredited", "uncredited_amount_minor", "applied",
                             "applied_amount_minor", "refunded_minor", "refunded_fees_minor",
                             "chargebacks_minor", "dispute_losses_minor", "net_minor",
                             "time_zone"]
        assert got["currency"] == "USD"
        assert int(got["amount_minor"]) == row["amount"] > 0  # cents, as the JSON
        assert int(got["net_minor"]) == row["net"]
        assert not set(MONEY) - set(got)
    # Counts keep their names; the trial balance's amounts say minor units too.
    r = await client.get("/backoffice/reports/conversion.csv", params=params)
    assert r.text.startswith("day,created,paid,rate,time_zone\r\n")
    r = await client.get("/backoffice/reports/trial-balance.csv", params=params)
    assert r.text.startswith(
        "unit,code,account,debits_minor,credits_minor,balance_minor,time_zone\r\n")


async def test_lines_csv_link_keeps_the_period_and_the_trial_balance_is_named_as_of(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    finance = await new_staff(db, settings, "finance")
    await web_sign_in(client, finance)
    period = {"from": "2026-11-01", "to": "2026-11-30"}
    page = await client.get("/backoffice/reports", params=period)
    assert page.status_code == 200
    html = unescape(page.text)
    assert "/backoffice/reports/lines.csv?from=2026-11-01&to=2026-11-30" in html
    assert "/backoffice/reports/lines.csv\"" not in html
    for link in ("topups", "conversion", "failures", "lines", "trial-balance"):
        assert f"/backoffice/reports/{link}.csv?from=2026-11-01&to=2026-11-30" in html, link
    r = await client.get("/backoffice/reports/lines.csv", params=period)
    assert r.headers["content-disposition"] == (
        'attachment; filename="lines-2026-11-01-2026-11-30.csv"')
    r = await client.get("/backoffice/reports/trial-balance.csv", params=period)
    assert r.status_code == 200
    assert r.headers["content-disposition"] == (
        'attachment; filename="trial-balance-as-of-2026-11-30.csv"')
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=finance.auth,
                         params={**period, "format": "csv"})
    assert r.headers["content-disposition"] == (
        'attachment; filename="trial-balance-as-of-2026-11-30.csv"')
    # The other reports keep their period in the name.
    r = await client.get("/backoffice/reports/topups.csv", params=period)
    assert r.headers["content-disposition"] == (
        'attachment; filename="topups-2026-11-01-2026-11-30.csv"')
    # A bad period is refused, nothing exported.
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=finance.auth,
                         params={"to": "2026-11-31", "format": "csv"})
    assert r.status_code == 422 and "to" in r.text
