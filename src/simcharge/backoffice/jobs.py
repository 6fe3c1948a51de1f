"""The outbox as staff see it: jobs waiting, retrying after a failure, running, and dead; a dead
job retried or discarded by hand, each audited.

A discarded job is not deleted: it is closed as `done` without running, its last error saying
who discarded it and why, so its `dedupe_key` keeps refusing a duplicate until the worker
prunes finished jobs (a week). A discarded refund job (`payments.refund`) whose refund is still
pending settles it as a refusal by the provider would: in the same transaction its pending
transfers are voided (the customer keeps the money's units and credit), the refund is `failed`
and the order flagged `refund_failed` for finance, the note saying who discarded it and that
the provider's side is unknown."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.db import older_than
from simcharge.errors import Conflict, NotFound, ValidationFailed
from simcharge.kit.translations import N_
from simcharge.orders.models import Refund
from simcharge.orders.models import RefundState as OurRefundState
from simcharge.orders.refunds import REFUND_JOB, complete_refund
from simcharge.payments.providers import RefundResult, RefundState
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob

NOTE_MAX = 500


class JobNotFound(NotFound):
    slug = "job-not-found"
    title = N_("There is no such job.")


class JobNotDead(Conflict):
    slug = "job-not-dead"
    title = N_("Only a dead job can be retried or discarded.")


class JobPayloadRemoved(Conflict):
    slug = "job-payload-removed"
    title = N_(
        "This job's personal data was removed under the retention policy: it cannot be retried, "
        "only discarded."
    )


class JobView(StrEnum):
    """Which jobs a list shows."""

    dead = "dead"
    """Failed every attempt (or failed for good): waits for staff."""
    retrying = "retrying"
    """Failed at least once, waiting for its next attempt."""
    pending = "pending"
    """Waiting for its time, not tried yet."""
    running = "running"
    """Claimed by a worker now."""


def _filtered(
    view: JobView | None, status: JobStatus | None, kind: str | None
) -> Select[OutboxJob]:
    stmt = select(OutboxJob)
    if view is JobView.retrying:
        stmt = stmt.where(OutboxJob.status == JobStatus.pending.value, OutboxJob.attempts > 0)
    elif view is JobView.pending:
        stmt = stmt.where(OutboxJob.status == JobStatus.pending.value, OutboxJob.attempts == 0)
    elif view is not None:
        stmt = stmt.where(OutboxJob.status == view.value)
    if status is not None:
        stmt = stmt.where(OutboxJob.status == status.value)
    if kind:
        stmt = stmt.where(OutboxJob.kind == kind)
    return stmt


async def find_jobs(
    s: AsyncSession,
    *,
    view: JobView | None = None,
    status: JobStatus | None = None,
    kind: str | None = None,
    before: datetime | None = None,
    before_id: uuid.UUID | None = None,
    limit: int = 50,
) -> Sequence[OutboxJob]:
    """Jobs newest first (`before`, `before_id`: after the last one of a page, to page back)."""
    stmt = _filtered(view, status, kind)
    if before is not None:
        stmt = stmt.where(older_than(OutboxJob.created_at, OutboxJob.id, before, before_id))
    stmt = stmt.order_by(OutboxJob.created_at.desc(), OutboxJob.id.desc()).limit(limit)
    return (await s.execute(stmt)).scalars().all()


async def count_by_view(s: AsyncSession) -> dict[str, int]:
    """How many jobs each list holds (and `done`)."""
    retrying = (OutboxJob.status == JobStatus.pending.value) & (OutboxJob.attempts > 0)
    label = case((retrying, JobView.retrying.value), else_=OutboxJob.status)
    rows = await s.execute(select(label, func.count()).group_by(label))
    found = {str(k): int(n) for k, n in rows}
    return {v.value: found.get(v.value, 0) for v in JobView} | {
        JobStatus.done.value: found.get(JobStatus.done.value, 0)
    }


def job_facts(job: OutboxJob) -> dict[str, Any]:
    """What the audit log keeps of a job (never its payload: it may carry sealed values)."""
    return {
        "kind": job.kind,
        "status": job.status,
        "attempts": job.attempts,
        "last_error": (job.last_error or "")[:500] or None,
        "dedupe_key": job.dedupe_key,
        "created_at": job.created_at,
    }


async def _dead(s: AsyncSession, job_id: uuid.UUID) -> OutboxJob:
    job = await s.get(OutboxJob, job_id, with_for_update=True)
    if job is None:
        raise JobNotFound(field="job_id")
    if job.status != JobStatus.dead.value:
        raise JobNotDead(field="job_id")
    return job


async def retry_job(s: AsyncSession, actor: Actor, job_id: uuid.UUID, now: datetime) -> OutboxJob:
    """A dead job back in the queue, due now, its attempts counted from zero."""
    job = await _dead(s, job_id)
    if job.payload_removed_at is not None:
        raise JobPayloadRemoved(field="job_id")
    before = job_facts(job)
    if not await service.requeue_dead(s, job_id):
        raise JobNotDead(field="job_id")
    await s.refresh(job)
    await audit.record(
        s,
        actor,
        "job.retry",
        target_type="job",
        target_id=job.id,
        before=before,
        after=job_facts(job),
        now=now,
    )
    return job


async def discard_job(
    s: AsyncSession, actor: Actor, job_id: uuid.UUID, note: str, now: datetime
) -> OutboxJob:
    """A dead job given up on (settled by hand, or no longer wanted): closed without running."""
    text = note.replace("\x00", "").strip()
    if not text:
        raise ValidationFailed(N_("Say why."), field="note")
    if len(text) > NOTE_MAX:
        raise ValidationFailed(N_("At most {max} characters."), field="note", max=NOTE_MAX)
    job = await _dead(s, job_id)
    before = job_facts(job)
    error = f"discarded by {actor.name}: {text}" + (
        f" (was: {job.last_error})" if job.last_error else ""
    )
    claimed = await s.execute(
        update(OutboxJob)
        .where(OutboxJob.id == job.id, OutboxJob.status == JobStatus.dead.value)
        .values(status=JobStatus.done.value, finished_at=now, last_error=error[:2000])
    )
    if not getattr(claimed, "rowcount", 0):
        raise JobNotDead(field="job_id")
    await s.refresh(job)
    settled = await _give_up_refund(s, actor, job, text, now)
    await audit.record(
        s,
        actor,
        "job.discard",
        target_type="job",
        target_id=job.id,
        before=before,
        after=job_facts(job),
        details={"note": text} | ({"refund": settled} if settled else {}),
        now=now,
    )
    return job


async def _give_up_refund(
    s: AsyncSession, actor: Actor, job: OutboxJob, note: str, now: datetime
) -> str | None:
    """A refund whose job is discarded while it is pending: settled the way the provider refusing
    it settles it (`orders.refunds.complete_refund`), so nothing stays held for ever unseen.
    Returns the refund's reference (None: not a refund job, or its refund is settled)."""
    if job.kind != REFUND_JOB:
        return None
    try:
        refund_id = uuid.UUID(str(job.payload.get("refund_id")))
    except ValueError:
        return None
    refund = await s.get(Refund, refund_id)
    if refund is None or refund.state != OurRefundState.pending.value:
        return None
    if refund.provider_refund_id is not None or "follow_up" in job.payload:
        unknown = "the provider had accepted it: check whether the money went back"
    else:
        unknown = "whether the provider received it is not known: check with the provider"
    outcome = await complete_refund(
        s,
        refund.order_id,
        RefundResult(
            refund_id=refund.reference,
            provider_refund_id=refund.provider_refund_id,
            state=RefundState.failed,
            amount=refund.amount,
            currency=refund.currency,
            raw={"discarded_by": actor.name, "note": note},
        ),
        now,
        note=f"refund {refund.reference} voided, its job discarded by {actor.name} ({note}): "
        f"{unknown}",
    )
    return refund.reference if outcome == "refund_failed" else None
