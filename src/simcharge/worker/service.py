"""Enqueueing, claiming and finishing outbox jobs.

A job is claimed in a short transaction of its own (status `running`, a lease until
`locked_until`), run, then marked done or rescheduled in another. While it runs, its worker
renews the lease (`renew`), so a job longer than the lease is never taken by a second worker. A
worker that dies stops renewing: its jobs come back when their lease runs out, so every handler
must be safe to run twice; a job that has come back `max_attempts` times (it keeps killing its
worker) is buried as dead by the next `claim` instead of being run again. On PostgreSQL several
workers claim with `FOR UPDATE SKIP LOCKED`; on SQLite the write lock taken by
`BEGIN IMMEDIATE` serialises the claims.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, delete, event, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from simcharge.db import insert_if_absent, table_of
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.worker.models import JobStatus, OutboxJob

jobs = table_of(OutboxJob)
log = structlog.get_logger("simcharge.worker")

LEASE = timedelta(minutes=5)
MAX_ERROR_LENGTH = 2000


_WRITTEN = "simcharge.outbox_written"
_wakers: set[Callable[[], None]] = set()


def on_jobs_committed(wake: Callable[[], None]) -> Callable[[], None]:
    """Call `wake` whenever a transaction of this process that wrote jobs commits (a worker in
    the process then claims them at once instead of at its next poll). Returns what stops it."""
    _wakers.add(wake)
    return lambda: _wakers.discard(wake)


def _wrote_jobs(session: AsyncSession) -> None:
    session.info[_WRITTEN] = True


@event.listens_for(Session, "after_commit")
def _wake_workers(session: Session) -> None:
    if session.info.pop(_WRITTEN, False):
        for wake in list(_wakers):
            wake()


@event.listens_for(Session, "after_soft_rollback")
def _forget_jobs(session: Session, _previous: Any) -> None:
    session.info.pop(_WRITTEN, None)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = 10,
) -> bool:
    """Write a job in the caller's transaction. With a `dedupe_key` already used: no new job.

    Returns whether a job was written."""
    now = utcnow()
    values = {
        "id": uuid7(),
        "kind": kind,
        "payload": payload or {},
        "status": JobStatus.pending.value,
        "run_at": run_at or now,
        "attempts": 0,
        "max_attempts": max_attempts,
        "dedupe_key": dedupe_key,
        "created_at": now,
    }
    # The values as parameters, not `.values(…)`: a statement SQLAlchemy compiles once.
    if dedupe_key is None:
        await session.execute(jobs.insert(), values)
        _wrote_jobs(session)
        return True
    stmt = insert_if_absent(session, jobs, "dedupe_key", returning=("id",))
    result = await session.execute(stmt, values)
    written = result.first() is not None
    if written:
        _wrote_jobs(session)
    return written


@dataclass(frozen=True, slots=True)
class NewJob:
    kind: str
    payload: dict[str, Any]
    dedupe_key: str | None = None
    run_at: datetime | None = None
    max_attempts: int = 10


async def enqueue_many(session: AsyncSession, new: Sequence[NewJob]) -> None:
    """Write several jobs in one statement (those whose `dedupe_key` is used: not again)."""
    if not new:
        return
    now = utcnow()
    rows = [
        {
            "id": uuid7(),
            "kind": j.kind,
            "payload": j.payload,
            "status": JobStatus.pending.value,
            "run_at": j.run_at or now,
            "attempts": 0,
            "max_attempts": j.max_attempts,
            "dedupe_key": j.dedupe_key,
            "created_at": now,
        }
        for j in new
    ]
    await session.execute(insert_if_absent(session, jobs, "dedupe_key"), rows)
    _wrote_jobs(session)


async def claim(
    session: AsyncSession,
    worker_id: str,
    limit: int,
    lease: timedelta = LEASE,
    *,
    kinds: Collection[str] | None = None,
    scrubbed: Collection[str] = (),
) -> list[ClaimedJob]:
    """Take up to `limit` due jobs (and jobs whose worker's lease ran out) for `worker_id` — of
    `kinds` only, when given: the kinds the worker can run. During a rolling upgrade an old
    worker leaves a new kind of job to the new workers instead of burying it as unknown.

    A job whose lease ran out after its last allowed attempt is buried instead: its worker died
    running it `max_attempts` times (killed, out of memory), so running it again would only kill
    another one."""
    now = utcnow()
    await bury_abandoned(session, now, scrubbed)
    due = or_(
        and_(jobs.c.status == JobStatus.pending.value, jobs.c.run_at <= now),
        and_(
            jobs.c.status == JobStatus.running.value,
            jobs.c.locked_until < now,
            jobs.c.attempts < jobs.c.max_attempts,
        ),
    )
    if kinds is not None:
        due = and_(due, jobs.c.kind.in_(sorted(kinds)))
    stmt = (
        select(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts, jobs.c.max_attempts)
        .where(due)
        .order_by(jobs.c.run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(await session.execute(stmt))
    if not rows:
        return []
    await session.execute(
        update(jobs)
        .where(jobs.c.id.in_([r.id for r in rows]))
        .values(
            status=JobStatus.running.value,
            locked_by=worker_id,
            locked_until=now + lease,
            attempts=jobs.c.attempts + 1,
        )
    )
    return [ClaimedJob(r.id, r.kind, r.payload, r.attempts + 1, r.max_attempts) for r in rows]


ABANDONED = "its worker stopped (killed or lost) while running it, at every attempt"


async def bury_abandoned(
    session: AsyncSession, now: datetime, scrubbed: Collection[str] = ()
) -> int:
    """Bury the jobs whose lease ran out after their last allowed attempt. Returns how many.
    Those of `scrubbed` kinds (their payload must not outlive the job: a sealed code) are
    buried without it, as a job of theirs that fails is."""
    abandoned = and_(
        jobs.c.status == JobStatus.running.value,
        jobs.c.locked_until < now,
        jobs.c.attempts >= jobs.c.max_attempts,
    )
    result = await session.execute(
        update(jobs)
        .where(abandoned)
        .values(
            status=JobStatus.dead.value,
            last_error=func.coalesce(jobs.c.last_error + "\n", "") + ABANDONED,
            locked_until=None,
            finished_at=now,
        )
        .returning(jobs.c.id, jobs.c.kind, jobs.c.locked_by)
    )
    buried = result.all()
    for row in buried:
        log.error("job.abandoned", job_id=str(row.id), kind=row.kind, last_worker=row.locked_by)
    emptied = [row.id for row in buried if row.kind in scrubbed]
    if emptied:
        await session.execute(update(jobs).where(jobs.c.id.in_(emptied)).values(payload={}))
    return len(buried)


async def renew(
    session: AsyncSession, job_ids: Sequence[uuid.UUID], worker_id: str, lease: timedelta = LEASE
) -> set[uuid.UUID]:
    """Extend the lease of the jobs `worker_id` is running. Returns those still its own: a job
    missing from the answer was taken over (its lease had run out) and must not be finished."""
    if not job_ids:
        return set()
    result = await session.execute(
        update(jobs)
        .where(
            jobs.c.id.in_(list(job_ids)),
            jobs.c.locked_by == worker_id,
            jobs.c.status == JobStatus.running.value,
        )
        .values(locked_until=utcnow() + lease)
        .returning(jobs.c.id)
    )
    return {row.id for row in result}


async def finish(
    session: AsyncSession, job_id: uuid.UUID, worker_id: str, *, scrub: bool = False
) -> bool:
    """Mark the job done; False if it was no longer running under `worker_id` (see `fail`)."""
    values: dict[str, Any] = {
        "status": JobStatus.done.value,
        "finished_at": utcnow(),
        "locked_until": None,
    }
    if scrub:
        values["payload"] = {}
    done = await session.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            jobs.c.locked_by == worker_id,
            jobs.c.status == JobStatus.running.value,
        )
        .values(values)
    )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def backoff(attempts: int) -> timedelta:
    """2, 4, 8 … seconds, at most an hour, with ±25 % jitter so retries do not stampede."""
    base = min(3600.0, 2.0**attempts)
    return timedelta(seconds=base * random.uniform(0.75, 1.25))  # noqa: S311


async def fail(
    session: AsyncSession,
    job: ClaimedJob,
    worker_id: str,
    error: str,
    *,
    retry: bool = True,
    scrub: bool = False,
) -> JobStatus | None:
    """Reschedule the job with backoff, or bury it once it has used its attempts (emptying a
    scrubbed payload then); the status it now has. Only while it is still running under
    `worker_id`: a worker that stalled past its lease may find its job taken over, buried as
    abandoned, or buried and retried by staff since — its late failure changes none of that,
    and None says so."""
    now = utcnow()
    dead = not retry or job.attempts >= job.max_attempts
    status = JobStatus.dead if dead else JobStatus.pending
    values: dict[str, Any] = {
        "status": status.value,
        "last_error": error[:MAX_ERROR_LENGTH],
        "run_at": now if dead else now + backoff(job.attempts),
        "locked_until": None,
        "finished_at": now if dead else None,
    }
    if dead and scrub:
        values["payload"] = {}
    changed = await session.execute(
        update(jobs)
        .where(
            jobs.c.id == job.id,
            jobs.c.locked_by == worker_id,
            jobs.c.status == JobStatus.running.value,
        )
        .values(values)
    )
    return status if changed.rowcount else None  # type: ignore[attr-defined]


async def release(session: AsyncSession, job_ids: Sequence[uuid.UUID], worker_id: str) -> None:
    """Give jobs back at shutdown without counting the attempt."""
    if job_ids:
        await session.execute(
            update(jobs)
            .where(
                jobs.c.id.in_(list(job_ids)),
                jobs.c.locked_by == worker_id,
                jobs.c.status == JobStatus.running.value,
            )
            .values(status=JobStatus.pending.value, locked_until=None, attempts=jobs.c.attempts - 1)
        )


async def prune_finished(session: AsyncSession, *, older_than: timedelta) -> int:
    cutoff = utcnow() - older_than
    result = await session.execute(
        delete(jobs).where(jobs.c.status == JobStatus.done.value, jobs.c.finished_at < cutoff)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
    return {status: int(n) for status, n in rows}


async def requeue_dead(session: AsyncSession, job_id: uuid.UUID) -> bool:
    """A dead job back in the queue — not one whose payload the retention sweep emptied: it
    would run without its address or text (a half-made notification), or fail again."""
    result = await session.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            jobs.c.status == JobStatus.dead.value,
            jobs.c.payload_removed_at.is_(None),
        )
        .values(status=JobStatus.pending.value, run_at=utcnow(), attempts=0, finished_at=None)
    )
    return bool(getattr(result, "rowcount", 0))
