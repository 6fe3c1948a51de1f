"""Round 13, the audit log searched: a filter form (who, action, target, days), a page at a
time by (time, id), targets as links (an order by its reference to its customer's page, a
customer, a ticket, a line), a bad day drawn again beside its field; an "audit trail" link on
the order panel, the customer and the ticket pages for those who may read the log; the admin
API takes the same filters."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.backoffice.test_customers_and_money import _paid
from tests.orders.helpers import new_payer


async def _many(db: Database, count: int, target: str) -> None:
    """`count` entries by a tool, a second apart, the newest now."""
    bot = Actor(name="apikey:sk_bot", permissions=frozenset())
    now = utcnow()

    async def write(s: AsyncSession) -> None:
        for i in range(count):
            await audit.record(
                s, bot, "test.thing", target_type="thing", target_id=target,
                details={"n": i}, now=now - timedelta(seconds=count - i),
            )  # fmt: skip

    await db.run(write)


def _rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


async def test_the_audit_log_is_filtered_paged_and_links_its_targets(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    admin = await new_staff(db, settings, "admin")
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    customer = f"/backoffice/customers/{payer.account_id}"
    r = await client.post(f"/backoffice/orders/{order['id']}/refund", data={
        "csrf": csrf, "amount": "1.00", "reason": "goodwill", "then": customer, "idem": "a1"})
    assert r.status_code == 303, r.text
    # finance may not read the log: no trail link for them
    page = await client.get(customer)
    assert "/backoffice/audit?target=" not in page.text
    thing = str(uuid.uuid4())
    await _many(db, 105, thing)
    client.cookies.clear()
    await web_sign_in(client, admin)
    # the form, every filter with its label
    log = await client.get("/backoffice/audit")
    assert log.status_code == 200
    for name in ("who", "action", "target", "from", "to"):
        assert f'id="audit-{name}" name="{name}"' in log.text, name
    # by who (a bare name is a staff member's) and by action; the order as its reference,
    # linking to its customer's page at the order
    mine = await client.get("/backoffice/audit", params={"who": finance.username,
                                                         "action": "order.refund"})
    [row] = _rows(mine.text)
    assert f'href="{customer}#order-{order["id"]}">{order["reference"]}</a>' in row
    assert f'value="{finance.username}"' in mine.text  # the filter kept in its field
    same = await client.get("/backoffice/audit", params={"who": f"staff:{finance.username}"})
    assert order["reference"] in same.text
    # the customer's own reads: the account links to its page
    views = await client.get("/backoffice/audit", params={"target": str(payer.account_id)})
    assert f'href="{customer}"' in views.text and "customer.view" in views.text
    # by target, a page at a time: 100, then the 5 older, none twice, newest first
    first = await client.get("/backoffice/audit", params={"target": thing})
    rows = _rows(first.text)
    assert len(rows) == 100
    more = re.search(r'<a href="/backoffice/audit\?([^"]+)">Older</a>', first.text)
    assert more, "no link to older entries"
    query = more.group(1).replace("&amp;", "&")
    assert f"target={thing}" in query and "before_id=" in query
    older = await client.get(f"/backoffice/audit?{query}")
    assert len(_rows(older.text)) == 5
    assert "Older</a>" not in older.text
    numbers = [int(n) for n in re.findall(r"\"n\": (\d+)", first.text + older.text)]
    assert numbers, first.text[-3000:]
    assert numbers == list(range(104, -1, -1)), numbers
    # by days: today holds them, a day long past none
    today = utcnow().date().isoformat()
    assert len(_rows((await client.get(
        "/backoffice/audit", params={"target": thing, "from": today, "to": today})).text)) == 100
    past = await client.get("/backoffice/audit", params={"target": thing, "to": "2020-01-01"})
    assert "No entry matches." in past.text


async def test_a_bad_day_is_said_beside_its_field_and_nothing_listed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    await web_sign_in(client, admin)
    for params, field in (
        ({"from": "2026-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2026-12-07", "to": "2026-12-01"}, "from"),
    ):
        r = await client.get("/backoffice/audit", params=params)
        assert r.status_code == 422, (params, r.text)
        assert f'id="audit-{field}-error"' in r.text, params
        assert f'aria-describedby="audit-{field}-error"' in r.text
        assert f'href="#audit-{field}"' in r.text  # the summary links to it
        for value in params.values():
            assert f'value="{value}"' in r.text
        assert "No entry matches." in r.text
    # the API: the same filters, the same refusals as problem+json
    r = await client.get("/api/v1/admin/audit", params={"from": "2026-12-07", "to": "2026-12-01"},
                         headers=admin.auth)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/validation-error" and r.json()["field"] == "from", r.text
    r = await client.get("/api/v1/admin/audit", params={"to": "soon"}, headers=admin.auth)
    assert r.status_code == 422 and r.json()["field"] == "to", r.text


async def test_audit_trail_links_and_the_api_s_filters(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    admin = await new_staff(db, settings, "admin")
    await web_sign_in(client, admin)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert f'href="/backoffice/audit?target={payer.account_id}"' in page.text
    assert f'href="/backoffice/audit?target={order["id"]}"' in page.text
    thing = str(uuid.uuid4())
    await _many(db, 7, thing)
    r = await client.get("/api/v1/admin/audit", params={"target_id": thing, "limit": 4},
                         headers=admin.auth)
    assert r.status_code == 200
    first = r.json()
    assert [e["details"]["n"] for e in first] == [6, 5, 4, 3]
    r = await client.get("/api/v1/admin/audit", params={
        "target_id": thing, "limit": 4, "before": first[-1]["at"], "before_id": first[-1]["id"]},
        headers=admin.auth)
    assert [e["details"]["n"] for e in r.json()] == [2, 1, 0]
    today = utcnow().date().isoformat()
    r = await client.get("/api/v1/admin/audit", params={
        "target_id": thing, "from": today, "to": today}, headers=admin.auth)
    assert len(r.json()) == 7
    r = await client.get("/api/v1/admin/audit", params={
        "target_id": thing, "to": "2020-01-01"}, headers=admin.auth)
    assert r.json() == []
    r = await client.get("/api/v1/admin/audit", params={"action": "test.thing",
                                                        "who": "apikey:sk_bot"},
                         headers=admin.auth)
    assert len(r.json()) == 7
