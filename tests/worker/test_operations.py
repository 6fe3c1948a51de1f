"""Running the outbox in production: staff see dead jobs and retry them; a worker that is told
to stop finishes what it can and gives the rest back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.registry import JobContext, Registry
from simcharge.worker.runner import Worker
from tests.auth.helpers import problem


async def _key(db: Database, *scopes: str) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "ops", list(scopes)))
    return {"Authorization": f"Bearer {issued.token}"}


async def _job(db: Database, kind: str, status: JobStatus, **values: Any) -> uuid.UUID:
    async def write(s: AsyncSession) -> uuid.UUID:
        await service.enqueue(s, kind, {"n": 1}, dedupe_key=f"{kind}:{uuid.uuid4()}")
        row = (await s.execute(select(OutboxJob).where(OutboxJob.kind == kind))).scalars().all()[-1]
        await s.execute(
            update(OutboxJob).where(OutboxJob.id == row.id).values(status=status.value, **values)
        )
        return row.id

    return await db.run(write)


async def _row(db: Database, job_id: uuid.UUID) -> OutboxJob:
    async with db.read() as s:
        row = await s.get(OutboxJob, job_id)
        assert row is not None
        return row


async def test_staff_list_dead_jobs_and_retry_them(client: httpx.AsyncClient, db: Database) -> None:
    dead = await _job(db, "sms.send", JobStatus.dead, attempts=10, last_error="RuntimeError: 503")
    waiting = await _job(db, "email.send", JobStatus.pending)
    ops = await _key(db, "jobs:read", "jobs:write")

    r = await client.get("/api/v1/admin/jobs", params={"status": "dead"}, headers=ops)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [j["id"] for j in listed] == [str(dead)]
    assert listed[0]["kind"] == "sms.send" and listed[0]["attempts"] == 10
    assert listed[0]["last_error"] == "RuntimeError: 503"
    assert "payload" not in listed[0]
    r = await client.get("/api/v1/admin/jobs/summary", headers=ops)
    assert r.json()["counts"] == {"pending": 1, "running": 0, "done": 0, "dead": 1}

    r = await client.post(f"/api/v1/admin/jobs/{dead}/retry", headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
    row = await _row(db, dead)
    assert row.status == "pending" and row.finished_at is None

    again = await client.post(f"/api/v1/admin/jobs/{dead}/retry", headers=ops)
    assert again.status_code == 409
    assert problem(again)["type"].endswith("/job-not-dead")
    r = await client.post(f"/api/v1/admin/jobs/{waiting}/retry", headers=ops)
    assert r.status_code == 409
    missing = await client.post(f"/api/v1/admin/jobs/{uuid.uuid4()}/retry", headers=ops)
    assert missing.status_code == 404
    assert problem(missing)["type"].endswith("/job-not-found")


async def test_the_jobs_api_wants_a_key_with_the_right_scope(
    client: httpx.AsyncClient, db: Database
) -> None:
    dead = await _job(db, "sms.send", JobStatus.dead)
    assert (await client.get("/api/v1/admin/jobs")).status_code == 401
    reader = await _key(db, "jobs:read")
    other = await _key(db, "orders:read")
    assert (await client.get("/api/v1/admin/jobs", headers=other)).status_code == 403
    r = await client.post(f"/api/v1/admin/jobs/{dead}/retry", headers=reader)
    assert r.status_code == 403
    assert (await _row(db, dead)).status == "dead"
    bad = await client.get("/api/v1/admin/jobs", params={"status": "zombie"}, headers=reader)
    assert bad.status_code == 422


async def test_a_stopping_worker_finishes_quick_jobs_and_gives_back_the_rest(
    fresh_db: Database, settings: Settings
) -> None:
    registry = Registry()
    started, finished = asyncio.Event(), []

    @registry.job("quick")
    async def quick(ctx: JobContext, payload: dict[str, Any]) -> None:
        await started.wait()
        await asyncio.sleep(0.05)
        finished.append(payload["n"])

    @registry.job("stuck")
    async def stuck(ctx: JobContext, payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def fill(s: AsyncSession) -> None:
        await service.enqueue(s, "quick", {"n": 1})
        await service.enqueue(s, "stuck", {"n": 2})

    await fresh_db.run(fill)
    quick_settings = settings.model_copy(
        update={"worker_shutdown_grace_seconds": 0.5, "worker_poll_seconds": 0.05}
    )
    worker = Worker(fresh_db, quick_settings, registry=registry, concurrency=2, worker_id="w1")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(running, 5)

    assert finished == [1]
    async with fresh_db.read() as s:
        rows = {j.kind: j for j in (await s.execute(select(OutboxJob))).scalars()}
    assert rows["quick"].status == "done"
    given_back = rows["stuck"]
    assert (given_back.status, given_back.attempts, given_back.locked_until) == ("pending", 0, None)
    # Another worker takes it at once (no lease to wait out).
    async with fresh_db.transaction() as s:
        claimed = await service.claim(s, "w2", 5)
    assert [c.kind for c in claimed] == ["stuck"]


async def test_the_in_process_worker_runs_as_many_jobs_at_once_as_configured(
    settings: Settings, db: Database
) -> None:
    from simcharge.app import create_app

    settings = settings.model_copy(update={"worker_in_process": True})
    app = create_app(settings.model_copy(update={"worker_in_process_concurrency": 3}), db=db)
    async with app.router.lifespan_context(app):
        worker = app.state.worker
        assert isinstance(worker, Worker) and worker.concurrency == 3
    default = create_app(settings, db=db)
    async with default.router.lifespan_context(default):
        assert default.state.worker.concurrency == 10


async def test_a_worker_leaves_kinds_it_does_not_know_to_those_that_do(
    db: Database, settings: Settings
) -> None:
    """A rolling upgrade: the new release's web enqueues a kind of job the old worker still
    running has no handler for. The old worker leaves it pending (not buried as unknown, no
    attempt counted); the new worker runs it."""
    old, new = Registry(), Registry()
    ran: list[str] = []

    @old.job("orders.receipt")
    @new.job("orders.receipt")
    async def receipt(ctx: JobContext, payload: dict[str, Any]) -> None:
        ran.append("receipt")

    @new.job("orders.receipt_v2")
    async def receipt_v2(ctx: JobContext, payload: dict[str, Any]) -> None:
        ran.append("receipt_v2")

    await db.run(lambda s: service.enqueue(s, "orders.receipt_v2", {"order_id": "x"}))
    await db.run(lambda s: service.enqueue(s, "orders.receipt", {"order_id": "y"}))
    assert await Worker(db, settings, registry=old).drain() == 1
    async with db.read() as s:
        job = (await s.execute(
            select(OutboxJob).where(OutboxJob.kind == "orders.receipt_v2"))).scalar_one()
    assert (job.status, job.attempts, job.last_error) == (JobStatus.pending, 0, None)
    assert await Worker(db, settings, registry=new).drain() == 1
    assert ran == ["receipt", "receipt_v2"]
