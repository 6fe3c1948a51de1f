"""The customer is told of every resolution of their ticket, whichever way staff made it: a
reply, the status (PATCH), or an internal note that resolves it (whose text stays internal)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.worker.models import OutboxJob
from tests.backoffice.helpers import new_staff
from tests.orders.helpers import Payer, new_payer


async def _ticket(client: httpx.AsyncClient, payer: Payer) -> str:
    r = await client.post("/api/v1/me/tickets", headers=payer.auth,
                          json={"subject": "help", "body": "my data does not work"})  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _told(db: Database, account_id: uuid.UUID) -> list[dict[str, Any]]:
    """The `ticket.resolved` notifications queued for the customer (e-mail and portal)."""
    async with db.read() as s:
        jobs = (await s.execute(select(OutboxJob))).scalars()
        return [j.payload for j in jobs if j.payload.get("template") == "ticket.resolved"
                and j.payload.get("account_id") == str(account_id)]  # fmt: skip


async def test_a_note_that_resolves_the_ticket_tells_the_customer(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    tid = await _ticket(client, payer)
    agent = await new_staff(db, settings, "agent")
    # a plain note: nothing told
    r = await client.post(f"/api/v1/admin/tickets/{tid}/messages", headers=agent.auth,
                          json={"body": "checked the radio logs", "internal": True})  # fmt: skip
    assert r.status_code == 201, r.text
    assert await _told(db, payer.account_id) == []
    # a note that resolves it: the resolution is told, the note's text is not shown
    r = await client.post(f"/api/v1/admin/tickets/{tid}/messages", headers=agent.auth, json={
        "body": "looks fine, closing", "internal": True, "status": "resolved"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "resolved"
    [told] = await _told(db, payer.account_id)
    assert set(told["channels"]) == {"email", "portal"}
    assert "closing" not in str(told)
    mine = (await client.get(f"/api/v1/me/tickets/{tid}", headers=payer.auth)).json()
    assert mine["status"] == "resolved"
    assert all("closing" not in m["body"] for m in mine["messages"])
    # resolved again by another note, or by PATCH: already resolved, nothing more told
    r = await client.post(f"/api/v1/admin/tickets/{tid}/messages", headers=agent.auth, json={
        "body": "still fine", "internal": True, "status": "resolved"})  # fmt: skip
    assert r.status_code == 201, r.text
    r = await client.patch(f"/api/v1/admin/tickets/{tid}", headers=agent.auth,
                           json={"status": "resolved"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert len(await _told(db, payer.account_id)) == 1
    # the customer writes again (open), the next resolution is told again
    r = await client.post(f"/api/v1/me/tickets/{tid}/messages", headers=payer.auth,
                          json={"body": "it stopped again"})  # fmt: skip
    assert r.status_code == 201, r.text
    r = await client.patch(f"/api/v1/admin/tickets/{tid}", headers=agent.auth,
                           json={"status": "resolved"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert len(await _told(db, payer.account_id)) == 2
