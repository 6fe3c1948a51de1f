"""The audit log: personal and financial data read through the admin API is audited like the
customer view (who, what, from where); the table refuses to be changed or emptied."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer, place


async def _entries(db: Database, actor: str) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.actor == actor)
                    .order_by(AuditEntry.at, AuditEntry.id)
                )
            ).scalars()
        )


async def test_reading_orders_tickets_and_reports_through_the_api_is_audited(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    ticket = (
        await client.post(
            "/api/v1/me/tickets",
            headers=payer.auth,
            json={"subject": "Where is my top-up?", "body": "Paid, nothing came."},
        )
    ).json()
    admin = await new_staff(db, settings, "admin")
    headers = {**admin.auth, "user-agent": "ops-console/5"}
    reads = [
        ("/api/v1/admin/orders", {"state": "pending"}),
        (f"/api/v1/admin/orders/{order['id']}", {}),
        ("/api/v1/admin/tickets", {"account_id": str(payer.account_id)}),
        (f"/api/v1/admin/tickets/{ticket['id']}", {}),
        ("/api/v1/admin/reports/topups", {}),
        ("/api/v1/admin/reports/lines", {"format": "csv"}),
        ("/api/v1/admin/attention", {}),
        ("/api/v1/admin/customers", {"q": payer.email}),
        (f"/api/v1/admin/customers/{payer.account_id}", {}),
    ]
    for path, params in reads:
        r = await client.get(path, params=params, headers=headers)
        assert r.status_code == 200, (path, r.text)
    entries = await _entries(db, f"staff:{admin.username}")
    assert [(e.action, e.target_type, e.target_id) for e in entries] == [
        ("order.list", None, None),
        ("order.view", "order", order["id"]),
        ("ticket.list", None, None),
        ("ticket.view", "ticket", ticket["id"]),
        ("report.read", None, None),
        ("report.read", None, None),
        ("attention.list", None, None),
        ("customer.search", None, None),
        ("customer.view", "account", str(payer.account_id)),
    ]
    assert entries[0].details == {"state": "pending", "found": 1}
    assert entries[2].details == {"account_id": str(payer.account_id), "found": 1}
    assert entries[4].details["report"] == "topups" and entries[5].details["format"] == "csv"
    assert {(e.ip, e.user_agent) for e in entries} == {("127.0.0.1", "ops-console/5")}
    # a read that finds nothing is not "read": a missing order is 404 and leaves no entry
    r = await client.get(f"/api/v1/admin/orders/{uuid.uuid4()}", headers=headers)
    assert r.status_code == 404
    assert len(await _entries(db, f"staff:{admin.username}")) == len(reads)


async def test_pages_reading_tickets_and_reports_are_audited(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    ticket = (
        await client.post(
            "/api/v1/me/tickets", headers=payer.auth, json={"subject": "Roaming", "body": "?"}
        )
    ).json()
    finance = await new_staff(db, settings, "finance")
    await web_sign_in(client, finance)
    for path in (f"/backoffice/tickets/{ticket['id']}", "/backoffice/reports"):
        assert (await client.get(path)).status_code == 200, path
    actions = [
        (e.action, e.target_id)
        for e in await _entries(db, f"staff:{finance.username}")
        if not e.action.startswith("staff.")
    ]
    assert actions == [("ticket.view", ticket["id"]), ("report.view", None)]
