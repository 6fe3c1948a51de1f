"""The ledger's journal for a period, and the charts' headings (review round 15).

What was missing or wrong:
- No journal: finance could see the trial balance's sums but not the transfers behind them.
  `GET /api/v1/admin/ledger/transfers` lists a period's transfers (JSON pages with
  `X-Total-Count`, or the whole period as CSV, streamed in keyset chunks), to `ledger.read`.
- `bar_chart` built its heading as `'<text …>' + escape(…)`: `Markup.__radd__` escaped the
  markup itself, so the chart's title and "highest" were drawn as no element at all.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice import journal
from simcharge.backoffice.models import AuditEntry
from simcharge.backoffice.reports import bar_chart
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerTransfer
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer, pay_at_sandbox, place

URL = "/api/v1/admin/ledger/transfers"
SVG = "{http://www.w3.org/2000/svg}"


async def _credited(client: httpx.AsyncClient, db: Database, settings: Settings) -> str:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20", method="paypal")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return str(order["id"])


async def _moved_today(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).where(
            LedgerTransfer.kind.in_(("posted", "post_pending"))))).scalar_one())


async def test_the_journal_pages_filters_and_streams_the_period(
    client: httpx.AsyncClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = [await _credited(client, db, settings) for _ in range(2)]
    # A reference a spreadsheet would run, posted through the ledger like any transfer.
    hostile = "=HYPERLINK(\"http://evil.example\",\"x\")"

    async def post(s: Any) -> None:
        sales, fees = chart.sales("USD"), chart.fees("USD")
        await ensure_accounts(s, [sales, fees])
        await post_transfers(s, [NewTransfer(
            id=uuid.uuid4(), amount=1, unit="USD", debit_account_id=sales.id,
            credit_account_id=fees.id, code="adjustment", reference=hostile)], now=utcnow())

    await db.run(post)
    finance = await new_staff(db, settings, "finance")
    today = utcnow().date().isoformat()
    period = {"from": today, "to": today}
    total = await _moved_today(db)

    r = await client.get(URL, headers=finance.auth, params={**period, "limit": 3})
    assert r.status_code == 200, r.text
    assert int(r.headers["X-Total-Count"]) == total and len(r.json()) == 3
    first = r.json()
    assert set(first[0]) == {"id", "created_at", "code", "kind", "debit_account",
                             "credit_account", "amount", "unit", "reference"}
    assert first[0]["created_at"].endswith("Z")
    r = await client.get(URL, headers=finance.auth, params={**period, "limit": 3, "offset": 3})
    assert {x["id"] for x in r.json()}.isdisjoint({x["id"] for x in first})
    everything = (await client.get(URL, headers=finance.auth,
                                   params={**period, "limit": 500})).json()
    assert len(everything) == total
    assert [x["created_at"] for x in everything] == sorted(x["created_at"] for x in everything)

    # One kind of account, and one operator account (its shards together).
    r = await client.get(URL, headers=finance.auth, params={**period, "account": "clearing"})
    through_clearing = r.json()
    assert {x["code"] for x in through_clearing} >= {"topup", "fee"}
    assert all("clearing:" in x["debit_account"] + x["credit_account"] for x in through_clearing)
    assert {x["reference"] for x in through_clearing} == {f"order:{o}" for o in orders}
    key = next(x["debit_account"] for x in through_clearing if x["code"] == "topup")
    assert key.startswith("clearing:") and "#" not in key
    r = await client.get(URL, headers=finance.auth, params={**period, "account": key})
    assert int(r.headers["X-Total-Count"]) == len(through_clearing)
    r = await client.get(URL, headers=finance.auth, params={**period, "account": "nothing"})
    assert r.status_code == 200 and r.json() == [] and r.headers["X-Total-Count"] == "0"

    # The CSV: every row of the period, read in chunks (two rows at a time here).
    monkeypatch.setattr(journal, "CHUNK", 2)
    r = await client.get(URL, headers=finance.auth, params={**period, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == (
        f'attachment; filename="ledger-transfers-{today}-{today}.csv"')
    assert r.text.startswith("id,created_at,code,kind,debit_account,credit_account,"
                             "amount_minor,unit,reference\r\n")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["id"] for x in rows] == [x["id"] for x in everything]
    assert sum(int(x["amount_minor"]) for x in rows) == sum(x["amount"] for x in everything)
    [bad] = [x for x in rows if "HYPERLINK" in x["reference"]]
    assert bad["reference"] == "'" + hostile
    r = await client.get(URL, headers=finance.auth,
                         params={**period, "account": "clearing:paypal:USD", "format": "csv"})
    assert 'filename="ledger-transfers-' in r.headers["content-disposition"]
    assert "clearing_paypal_USD.csv" in r.headers["content-disposition"]

    async with db.read() as s:
        reads = (await s.execute(select(func.count()).where(
            AuditEntry.action == "ledger.journal_read"))).scalar_one()
    assert reads >= 8


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": str(2**63)}, "offset"),
        ({"account": "DROP TABLE"}, "account"),
        ({"account": "a" * 161}, "account"),
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-11-30", "to": "2026-11-01"}, "from"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),
        ({"format": "xml"}, "format"),
    ],
)
async def test_bad_input_is_refused_naming_its_field(
    client: httpx.AsyncClient, db: Database, settings: Settings, params: dict[str, str],
    field: str,
) -> None:
    finance = await new_staff(db, settings, "finance")
    r = await client.get(URL, headers=finance.auth, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/validation-error"
    assert field in r.text


async def test_only_ledger_readers_read_the_journal(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    r = await client.get(URL, headers=agent.auth)
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    r = await client.get(URL, headers=agent.auth, params={"format": "csv"})
    assert r.status_code == 403
    async with db.read() as s:
        denied = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "access.denied",
            AuditEntry.actor == f"staff:{agent.username}"))).scalars().all()
    assert [(d.details["path"], d.details["permission"]) for d in denied] == [
        (URL, "ledger.read")] * 2
    for scope, allowed in (("ledger:read", True), ("reports:read", True),
                           ("orders:read", False), ("refunds:write", False)):
        key = await db.run(lambda s, scope=scope: create_api_key(s, "tool", [scope]))
        r = await client.get(URL, headers={"Authorization": f"Bearer {key.token}"})
        assert r.status_code == (200 if allowed else 403), (scope, r.text)
    for role in ("finance", "admin"):
        member = await new_staff(db, settings, role)
        assert (await client.get(URL, headers=member.auth)).status_code == 200, role
    r = await client.get(URL)
    assert r.status_code == 401


def test_the_chart_heading_is_a_text_element() -> None:
    svg = bar_chart([("2026-11-01", 3.0), ("2026-11-02", -1.0)], title="Net <USD> & co")
    assert "&lt;text" not in svg and "&lt;/text" not in svg
    root = ElementTree.fromstring(str(svg))  # noqa: S314 - the SVG this code just drew
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert texts[0] == "Net <USD> & co — highest: 3", texts
    assert root.find(f"{SVG}title") is not None


async def test_the_reports_page_draws_its_chart_headings(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    finance = await new_staff(db, settings, "finance")
    await web_sign_in(client, finance)
    page = await client.get("/backoffice/reports")
    assert page.status_code == 200
    assert '<text x="8" y="16" font-size="13" fill="#1b2733">Failed payments per day' in page.text
    assert "&lt;text" not in page.text
