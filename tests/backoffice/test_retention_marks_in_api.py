"""What the retention sweep did, in the admin API: a ticket's `redacted_at`, a job's
`payload_removed_at` (`accounts.retention`), on SQLite and PostgreSQL.

What was missing: the back office's screens said "Removed under the retention policy.", but
`GET /api/v1/admin/tickets…` showed a redacted ticket only as an empty subject, and
`GET /api/v1/admin/jobs` gave no reason why a dead job could not be retried (`409
job-payload-removed`)."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.retention import sweep
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.accounts.test_retention_more import _closed_account_with_ticket, _dead_job
from tests.backoffice.helpers import new_staff

DAY = timedelta(days=1)


async def test_a_redacted_ticket_says_when(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    now = utcnow()
    _, redacted = await _closed_account_with_ticket(db, now - 731 * DAY)
    _, kept = await _closed_account_with_ticket(db, now - 729 * DAY)
    agent = await new_staff(db, settings, "agent")
    r = await client.get(f"/api/v1/admin/tickets/{redacted}", headers=agent.auth)
    assert r.status_code == 200 and r.json()["redacted_at"] is None, r.text
    assert (await sweep(db, settings, now=now)).changed["tickets.closed_accounts"] == 1
    r = await client.get(f"/api/v1/admin/tickets/{redacted}", headers=agent.auth)
    assert r.status_code == 200, r.text
    assert r.json()["subject"] == "" and r.json()["redacted_at"] is not None
    assert abs((_instant(r.json()["redacted_at"]) - now).total_seconds()) < 1  # the sweep's
    listed = {
        t["id"]: t["redacted_at"]
        for t in (await client.get("/api/v1/admin/tickets", headers=agent.auth)).json()
    }  # fmt: skip
    assert listed[str(redacted)] is not None and listed[str(kept)] is None
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert "redacted_at" in schema["StaffTicketOut"]["required"]


async def test_a_job_whose_payload_was_removed_says_when(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    now = utcnow()
    old = _dead_job("notifications.email", {"to": "someone@example.com", "template": "x"},
                    now - 91 * DAY)
    recent = _dead_job("notifications.email", {"to": "else@example.com", "template": "x"},
                       now - 10 * DAY)

    async def seed(s: AsyncSession) -> None:
        s.add_all([old, recent])

    await db.run(seed)
    assert (await sweep(db, settings, now=now)).changed["outbox_jobs.dead"] == 1
    admin = await new_staff(db, settings, "admin")
    r = await client.get("/api/v1/admin/jobs", params={"view": "dead"}, headers=admin.auth)
    assert r.status_code == 200, r.text
    removed = {j["id"]: j["payload_removed_at"] for j in r.json()}
    assert removed[str(recent.id)] is None
    assert removed[str(old.id)] is not None
    assert abs((_instant(removed[str(old.id)]) - now).total_seconds()) < 1
    # which is why it can only be discarded
    r = await client.post(f"/api/v1/admin/jobs/{old.id}/retry", headers=admin.auth)
    assert r.status_code == 409 and r.json()["type"] == "/problems/job-payload-removed"
    r = await client.post(f"/api/v1/admin/jobs/{old.id}/discard", headers=admin.auth,
                          json={"note": "sent by hand"})
    assert r.status_code == 200 and r.json()["payload_removed_at"] is not None, r.text


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
