"""Background jobs as staff see them: the page and `/api/v1/admin/jobs` with a staff token,
dead jobs retried or discarded by an admin, each in the audit log."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob
from tests.backoffice.helpers import new_staff, web_sign_in


async def _job(db: Database, kind: str, status: JobStatus, **values: Any) -> uuid.UUID:
    async def write(s: AsyncSession) -> uuid.UUID:
        key = f"{kind}:{uuid.uuid4()}"
        await service.enqueue(s, kind, {"n": 1}, dedupe_key=key)
        job_id = (
            await s.execute(select(OutboxJob.id).where(OutboxJob.dedupe_key == key))
        ).scalar_one()
        await s.execute(
            update(OutboxJob).where(OutboxJob.id == job_id).values(status=status.value, **values)
        )
        return job_id

    return await db.run(write)


async def _row(db: Database, job_id: uuid.UUID) -> OutboxJob:
    async with db.read() as s:
        row = await s.get(OutboxJob, job_id)
        assert row is not None
        return row


async def _audited(db: Database, job_id: uuid.UUID) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.target_type == "job", AuditEntry.target_id == str(job_id))
                    .order_by(AuditEntry.at, AuditEntry.id)
                )
            ).scalars()
        )


async def test_staff_see_jobs_and_an_admin_retries_or_discards_a_dead_one(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    dead = await _job(db, "email.send", JobStatus.dead, attempts=10, last_error="SMTP 451")
    gone = await _job(db, "payments.refund", JobStatus.dead, attempts=10, last_error="HTTP 500")
    retrying = await _job(db, "sms.send", JobStatus.pending, attempts=2, last_error="timeout")
    waiting = await _job(db, "orders.receipt", JobStatus.pending)
    agent = await new_staff(db, settings, "agent")
    admin = await new_staff(db, settings, "admin")
    # staff tokens read the outbox too (every role), by list
    r = await client.get("/api/v1/admin/jobs", params={"view": "dead"}, headers=agent.auth)
    assert r.status_code == 200, r.text
    assert {j["id"] for j in r.json()} == {str(dead), str(gone)}
    r = await client.get("/api/v1/admin/jobs", params={"view": "retrying"}, headers=agent.auth)
    assert [j["id"] for j in r.json()] == [str(retrying)]
    r = await client.get("/api/v1/admin/jobs", params={"view": "pending"}, headers=agent.auth)
    assert [j["id"] for j in r.json()] == [str(waiting)]
    r = await client.get("/api/v1/admin/jobs/summary", headers=agent.auth)
    assert r.json()["counts"]["dead"] == 2
    # an agent may not retry
    r = await client.post(f"/api/v1/admin/jobs/{dead}/retry", headers=agent.auth)
    assert r.status_code == 403
    assert (await _row(db, dead)).status == "dead"
    # the admin retries one through the API…
    r = await client.post(f"/api/v1/admin/jobs/{dead}/retry", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
    [entry] = await _audited(db, dead)
    assert entry.action == "job.retry" and entry.actor == f"staff:{admin.username}"
    assert entry.before and entry.before["status"] == "dead" and entry.before["attempts"] == 10
    assert entry.after and entry.after["status"] == "pending"
    assert "payload" not in entry.before
    # … and discards the other on the page, saying why
    csrf = await web_sign_in(client, admin)
    page = await client.get("/backoffice/jobs")
    assert page.status_code == 200
    assert "payments.refund" in page.text and "HTTP 500" in page.text
    assert "email.send" not in page.text  # no longer dead
    r = await client.post(f"/backoffice/jobs/{gone}/discard", data={"csrf": csrf, "note": " "})
    assert r.status_code == 422 and (await _row(db, gone)).status == "dead"
    r = await client.post(
        f"/backoffice/jobs/{gone}/discard",
        data={"csrf": csrf, "note": "refunded by hand in the PayPal dashboard"},
        headers={"user-agent": "admin-browser/1.0"},
    )
    assert r.status_code == 303, r.text
    row = await _row(db, gone)
    assert row.status == "done" and row.finished_at is not None
    assert row.last_error is not None and "refunded by hand" in row.last_error
    assert "HTTP 500" in row.last_error
    [entry] = await _audited(db, gone)
    assert entry.action == "job.discard" and entry.details["note"].startswith("refunded by hand")
    assert entry.user_agent == "admin-browser/1.0" and entry.ip
    # only a dead job is retried or discarded
    for path, body in ((f"{gone}/discard", {"note": "again"}), (f"{waiting}/retry", None)):
        r = await client.post(f"/api/v1/admin/jobs/{path}", headers=admin.auth, json=body)
        assert r.status_code == 409 and r.json()["type"] == "/problems/job-not-dead", path
    r = await client.post(f"/api/v1/admin/jobs/{uuid.uuid4()}/retry", headers=admin.auth)
    assert r.status_code == 404 and r.json()["type"] == "/problems/job-not-found"
    r = await client.post(
        f"/api/v1/admin/jobs/{retrying}/discard", headers=admin.auth, json={"note": "x" * 501}
    )
    assert r.status_code == 422
    # the other lists on the page
    page = await client.get("/backoffice/jobs", params={"view": "retrying"})
    assert "sms.send" in page.text and "timeout" in page.text
    assert (await client.get("/backoffice/jobs", params={"view": "zombie"})).status_code == 422


async def test_an_agent_sees_the_jobs_page_without_actions(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await _job(db, "email.send", JobStatus.dead, attempts=10, last_error="SMTP 451")
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    home = await client.get("/backoffice")
    assert 'href="/backoffice/jobs"' in home.text
    page = await client.get("/backoffice/jobs")
    assert page.status_code == 200 and "SMTP 451" in page.text
    assert "/discard" not in page.text and "/retry" not in page.text
