"""`/api/v1/admin/jobs`: the outbox as staff see it — what is waiting, what died, and retrying a
dead job by hand (API keys with the scopes `jobs:read`, `jobs:write`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import API_PREFIX, DB, Integration, require_scope
from simcharge.errors import Conflict, NotFound
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob

router = APIRouter(prefix=f"{API_PREFIX}/admin/jobs", tags=["admin"])
log = structlog.get_logger("simcharge.audit")

ReadJobs = Annotated[Integration, require_scope("jobs:read")]
WriteJobs = Annotated[Integration, require_scope("jobs:write")]


class JobNotFound(NotFound):
    slug = "job-not-found"


class JobNotDead(Conflict):
    slug = "job-not-dead"


class JobOut(BaseModel):
    """One outbox job. Its payload is not shown (it may carry sealed values until done)."""

    id: uuid.UUID
    kind: str
    status: JobStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    run_at: datetime
    created_at: datetime
    finished_at: datetime | None
    locked_by: str | None


class JobsSummary(BaseModel):
    counts: dict[str, int]
    """Jobs by status (`pending`, `running`, `done`, `dead`)."""


def job_out(job: OutboxJob) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=JobStatus(job.status),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        last_error=job.last_error,
        run_at=job.run_at,
        created_at=job.created_at,
        finished_at=job.finished_at,
        locked_by=job.locked_by,
    )


@router.get("", response_model=list[JobOut], summary="Outbox jobs, newest first")
async def list_jobs(
    _key: ReadJobs,
    db: DB,
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[datetime | None, Query(description="Jobs created before this")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[JobOut]:
    stmt = select(OutboxJob)
    if status is not None:
        stmt = stmt.where(OutboxJob.status == status.value)
    if kind:
        stmt = stmt.where(OutboxJob.kind == kind)
    if before:
        stmt = stmt.where(OutboxJob.created_at < before)
    stmt = stmt.order_by(OutboxJob.created_at.desc(), OutboxJob.id.desc()).limit(limit)
    async with db.read() as s:
        return [job_out(j) for j in (await s.execute(stmt)).scalars()]


@router.get("/summary", response_model=JobsSummary, summary="How many jobs are in each status")
async def summary(_key: ReadJobs, db: DB) -> JobsSummary:
    async with db.read() as s:
        counts = await service.count_by_status(s)
    return JobsSummary(counts={status.value: counts.get(status.value, 0) for status in JobStatus})


@router.post("/{job_id}/retry", response_model=JobOut, summary="Run a dead job again")
async def retry_job(job_id: uuid.UUID, key: WriteJobs, db: DB) -> JobOut:
    """A dead job goes back to the queue, due now, with its attempts counted from zero. Only a
    dead job: a pending or running one is already on its way (`409 job-not-dead`)."""

    async def requeue(s: AsyncSession) -> OutboxJob:
        job = await s.get(OutboxJob, job_id)
        if job is None:
            raise JobNotFound(field="job_id")
        if not await service.requeue_dead(s, job_id):
            raise JobNotDead(field="job_id")
        await s.refresh(job)
        return job

    job = await db.run(requeue)
    log.info("job.retried", job=str(job_id), kind=job.kind, by=f"apikey:{key.key_prefix}")
    return job_out(job)
