"""Reports: top-ups and revenue, conversion, failures, lines by state — pages with SVG charts,
CSV, JSON; finance and admins only."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import httpx

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer, pay_at_sandbox, place


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
    assert r.status_code == 200 and r.text.startswith("day,method,currency,topups")
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
