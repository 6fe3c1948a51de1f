"""`/api/v1/admin/jobs`: the outbox as staff see it — what is waiting, what is retrying, what
died — and a dead job retried or discarded by hand. A staff bearer token (`jobs.read` for every
role, `jobs.manage` for admins) or an API key (`jobs:read`, `jobs:write`); each retry and
discard is in the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from simcharge.api.deps import API_PREFIX, DB
from simcharge.backoffice import jobs as staff_jobs
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import require
from simcharge.backoffice.jobs import JobView
from simcharge.backoffice.roles import Permission
from simcharge.kit.clock import utcnow
from simcharge.kit.schemas import Instant
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob

router = APIRouter(prefix=f"{API_PREFIX}/admin/jobs", tags=["admin"])

ReadJobs = Annotated[Actor, require(Permission.jobs_read)]
ManageJobs = Annotated[Actor, require(Permission.jobs_manage)]


class JobOut(BaseModel):
    """One outbox job. Its payload is not shown (it may carry sealed values until done)."""

    id: uuid.UUID
    kind: str
    status: JobStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    run_at: datetime
    """When it runs (again)."""
    created_at: datetime
    finished_at: datetime | None
    locked_by: str | None
    payload_removed_at: datetime | None = Field(
        description="When the retention sweep removed the personal data of its payload (a dead "
        "job kept past its period): it can then only be discarded; null: never"
    )


class JobsSummary(BaseModel):
    counts: dict[str, int]
    """Jobs by status (`pending`, `running`, `done`, `dead`)."""


class DiscardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(max_length=500, description="Why it is given up on (how it was settled)")


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
        payload_removed_at=job.payload_removed_at,
    )


@router.get("", response_model=list[JobOut], summary="Outbox jobs, newest first")
async def list_jobs(
    actor: ReadJobs,
    db: DB,
    status: JobStatus | None = None,
    view: Annotated[
        JobView | None,
        Query(description="`retrying`: pending after a failed attempt; `pending`: not tried yet"),
    ] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[
        Instant | None, Query(description="The next page: the last job's `created_at`…")
    ] = None,
    before_id: Annotated[
        uuid.UUID | None, Query(description="… and its `id` (jobs created at the same time)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[JobOut]:
    async with db.read() as s:
        rows = await staff_jobs.find_jobs(
            s, view=view, status=status, kind=kind, before=before, before_id=before_id,
            limit=limit,
        )
        return [job_out(j) for j in rows]


@router.get("/summary", response_model=JobsSummary, summary="How many jobs are in each status")
async def summary(actor: ReadJobs, db: DB) -> JobsSummary:
    async with db.read() as s:
        counts = await service.count_by_status(s)
    return JobsSummary(counts={status.value: counts.get(status.value, 0) for status in JobStatus})


@router.post("/{job_id}/retry", response_model=JobOut, summary="Run a dead job again")
async def retry_job(job_id: uuid.UUID, actor: ManageJobs, db: DB) -> JobOut:
    """A dead job goes back to the queue, due now, with its attempts counted from zero. Only a
    dead job: a pending or running one is already on its way (`409 job-not-dead`). Audited."""
    job = await db.run(lambda s: staff_jobs.retry_job(s, actor, job_id, utcnow()))
    return job_out(job)


@router.post("/{job_id}/discard", response_model=JobOut, summary="Give up on a dead job")
async def discard_job(job_id: uuid.UUID, body: DiscardIn, actor: ManageJobs, db: DB) -> JobOut:
    """A dead job closed without running (`done`, its last error saying who discarded it and
    why): for work settled by hand. Only a dead job (`409 job-not-dead`). Audited."""
    job = await db.run(lambda s: staff_jobs.discard_job(s, actor, job_id, body.note, utcnow()))
    return job_out(job)
