"""The customer page at scale and two gaps (sixteenth round): a customer's page and full view
list their latest 50 tickets, not thousands, and link to the ticket queue filtered by the
customer; the audit log API refuses a parameter it does not take (`?actor=` for `?who=` listed
the whole log); an API key does not unlock an account — a person does."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.apikeys import create_api_key
from simcharge.auth.service import lock_account
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.tickets.models import Ticket
from tests.backoffice.helpers import new_staff, web_sign_in


async def _customer_with_tickets(db: Database, username: str, count: int) -> uuid.UUID:
    async def run(s: AsyncSession) -> uuid.UUID:
        account = Account(id=uuid7(), username=username, password_hash="!")
        s.add(account)
        await s.flush()
        start = utcnow() - timedelta(days=30)
        s.add_all(
            Ticket(
                number=f"T-{username[:3].upper()}{i:05d}",
                account_id=account.id,
                subject=f"Question {i}",
                updated_at=start + timedelta(minutes=i),
            )
            for i in range(count)
        )
        await s.flush()
        return account.id

    return await db.run(run)


async def test_the_page_and_the_view_show_the_latest_50_tickets_and_link_to_all(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    busy = await _customer_with_tickets(db, "busy", 53)
    other = await _customer_with_tickets(db, "oth", 2)
    agent = await new_staff(db, settings, "agent")

    r = await client.get(f"/api/v1/admin/customers/{busy}", headers=agent.auth)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["tickets_total"] == 53
    assert [t["number"] for t in view["tickets"]] == [f"T-BUS{i:05d}" for i in range(52, 2, -1)]
    r = await client.get(f"/api/v1/admin/customers/{other}", headers=agent.auth)
    assert r.json()["tickets_total"] == 2 and len(r.json()["tickets"]) == 2

    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{busy}")
    assert page.status_code == 200
    assert page.text.count('<tr><td><a href="/backoffice/tickets/') == 50
    assert "T-BUS00052" in page.text and "T-BUS00002" not in page.text
    assert "The latest 50 of 53 tickets." in page.text
    link = f'href="/backoffice/tickets?account_id={busy}"'
    assert link in page.text
    # Few tickets: all shown, no note.
    page = await client.get(f"/backoffice/customers/{other}")
    assert 'data-testid="tickets-more"' not in page.text

    # The queue filtered by the customer: theirs only, a page of 100 — here all 53 — and it
    # says whose they are; the filter stays on through the status filter's form.
    queue = await client.get("/backoffice/tickets", params={"account_id": str(busy)})
    assert queue.status_code == 200
    assert queue.text.count('<tr><td><a href="/backoffice/tickets/') == 53
    assert "T-OTH" not in queue.text
    assert "Only the tickets of busy." in queue.text
    assert f'name="account_id" value="{busy}"' in queue.text
    queue = await client.get(
        "/backoffice/tickets", params={"account_id": str(busy), "status": "closed"}
    )
    assert queue.status_code == 200 and "No tickets." in queue.text
    # Not an id: refused, nothing listed.
    bad = await client.get("/backoffice/tickets", params={"account_id": "busy"})
    assert bad.status_code == 422 and "T-BUS" not in bad.text
    async with db.read() as s:
        rows = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "ticket.list").order_by(AuditEntry.at))).scalars().all()
    assert [r.details for r in rows] == [
        {"account_id": str(busy), "found": 53},
        {"account_id": str(busy), "status": "closed", "found": 0},
    ]


async def test_the_audit_api_refuses_a_parameter_it_does_not_take(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    agent = await new_staff(db, settings, "agent")
    await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "someone"})

    r = await client.get("/api/v1/admin/audit", headers=admin.auth,
                         params={"actor": f"staff:{agent.username}"})  # fmt: skip
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "/problems/validation-error" and body["field"] == "actor"
    [error] = body["errors"]
    assert error["field"] == "actor" and "who" in error["detail"]
    assert error["detail"].startswith("Unknown parameter: use one of ")
    # With a good filter beside it, still refused (the list would not be what was asked).
    r = await client.get("/api/v1/admin/audit", headers=admin.auth,
                         params={"who": f"staff:{agent.username}", "sort": "at"})  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "sort"
    # What it takes, and the language every route reads, are fine.
    r = await client.get(
        "/api/v1/admin/audit",
        headers=admin.auth,
        params={"who": f"staff:{agent.username}", "action": "customer.search", "lang": "es",
                "from": "2020-01-01", "limit": "5"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert [e["action"] for e in r.json()] == ["customer.search"]
    # Who may not read the log is refused as such first, not told about the parameter.
    r = await client.get("/api/v1/admin/audit", headers=agent.auth, params={"actor": "x"})
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    r = await client.get("/api/v1/admin/audit", params={"actor": "x"})
    assert r.status_code == 401


async def _locked_by_customer(db: Database) -> uuid.UUID:
    async def run(s: AsyncSession) -> uuid.UUID:
        account = Account(id=uuid7(), username=f"locked{uuid.uuid4().hex[:6]}", password_hash="!")
        s.add(account)
        await s.flush()
        await lock_account(s, account, reason="customer", client=None, now=utcnow())
        return account.id

    return await db.run(run)


async def test_an_api_key_does_not_unlock_an_account_a_person_does(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    locked = await _locked_by_customer(db)
    key = await db.run(lambda s: create_api_key(s, "tool", ["accounts:write"]))
    auth = {"Authorization": f"Bearer {key.token}"}

    r = await client.post(f"/api/v1/admin/customers/{locked}/unlock", headers=auth)
    assert r.status_code == 403, r.text
    assert r.json()["type"] == "/problems/unlock-needs-a-person"
    assert r.json()["field"] == "account_id"
    async with db.read() as s:
        account = await s.get(Account, locked)
        assert account is not None and account.status == "locked"
        assert account.lock_reason == "customer"
        [denied] = (await s.execute(select(AuditEntry).where(
            AuditEntry.actor == f"apikey:{key.key.prefix}"))).scalars().all()
        assert denied.action == "access.denied" and denied.target_id == str(locked)
        assert denied.details["permission"] == "accounts.unlock"
        assert (await s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "account.unlock"))).scalar_one() == 0
    # An account that is not there: 404 to the key as to anyone (nothing audited).
    r = await client.post(f"/api/v1/admin/customers/{uuid.uuid4()}/unlock", headers=auth)
    assert r.status_code == 404 and r.json()["type"] == "/problems/customer-not-found"
    # The key's other powers are untouched: unfreezing an unknown line is a 404, not a 403.
    r = await client.post(f"/api/v1/admin/lines/{uuid.uuid4()}/unfreeze", headers=auth)
    assert r.status_code == 404

    # A staff member (token or page) unlocks it.
    agent = await new_staff(db, settings, "agent")
    r = await client.post(f"/api/v1/admin/customers/{locked}/unlock", headers=agent.auth)
    assert r.status_code == 200 and r.json()["state"] == "active"
    again = await _locked_by_customer(db)
    csrf = await web_sign_in(client, agent)
    r = await client.post(f"/backoffice/customers/{again}/unlock", data={"csrf": csrf})
    assert r.status_code == 303
    async with db.read() as s:
        assert (await s.get(Account, again)).status == "active"  # type: ignore[union-attr]
        actors = (await s.execute(select(AuditEntry.actor).where(
            AuditEntry.action == "account.unlock"))).scalars().all()
    assert actors == [f"staff:{agent.username}"] * 2
