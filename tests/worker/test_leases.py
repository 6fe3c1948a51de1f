"""Leases: a running job's lease is renewed, so no second worker takes a long job; a job whose
worker keeps dying is buried after `max_attempts`; a hung job times out; a worker that lost a
job's lease stops running it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.registry import JobContext, Registry
from simcharge.worker.runner import Worker


async def _row(db: Database, job_id: uuid.UUID) -> OutboxJob:
    async with db.read() as s:
        row = await s.get(OutboxJob, job_id)
        assert row is not None
        return row


async def _enqueue(db: Database, kind: str, **kw: Any) -> uuid.UUID:
    async def write(s: AsyncSession) -> uuid.UUID:
        key = f"{kind}:{uuid.uuid4()}"
        await service.enqueue(s, kind, {}, dedupe_key=key, **kw)
        found = await s.execute(select(OutboxJob.id).where(OutboxJob.dedupe_key == key))
        return found.scalar_one()

    return await db.run(write)


def _quick(settings: Settings, **changes: Any) -> Settings:
    # model_copy skips validation: a lease of a fraction of a second keeps these tests short.
    return settings.model_copy(update={"worker_poll_seconds": 0.02, **changes})


async def test_renew_extends_only_the_workers_own_running_jobs(db: Database) -> None:
    mine = await _enqueue(db, "renew-mine")
    [claimed] = await db.run(lambda s: service.claim(s, "w1", 1))
    assert claimed.id == mine
    theirs = await _enqueue(db, "renew-theirs")
    await db.run(lambda s: service.claim(s, "w2", 1))
    before = (await _row(db, mine)).locked_until
    assert before is not None

    clock.freeze(utcnow() + timedelta(minutes=3))
    kept = await db.run(
        lambda s: service.renew(s, [mine, theirs, uuid.uuid4()], "w1", timedelta(minutes=5))
    )
    assert kept == {mine}
    after = (await _row(db, mine)).locked_until
    assert after is not None and after - before >= timedelta(minutes=3)
    # Renewed: still w1's when the original lease has run out (w2's, not renewed, is taken).
    clock.freeze(before + timedelta(seconds=1))
    assert [c.id for c in await db.run(lambda s: service.claim(s, "w3", 10))] == [theirs]
    assert await db.run(lambda s: service.renew(s, [], "w1")) == set()


async def test_a_job_longer_than_its_lease_runs_once_while_several_workers_wait(
    fresh_db: Database, settings: Settings
) -> None:
    registry = Registry()
    runs: list[str] = []
    done = asyncio.Event()

    @registry.job("long")
    async def long(ctx: JobContext, payload: dict[str, Any]) -> None:
        runs.append(ctx.job.id.hex)
        # Several leases long: without renewal another worker would take it and run it again.
        await asyncio.sleep(3.5)
        done.set()

    job_id = await _enqueue(fresh_db, "long")
    quick = _quick(settings, worker_lease_seconds=1)
    crew = [
        Worker(fresh_db, quick, registry=registry, concurrency=2, worker_id=f"w{i}")
        for i in range(3)
    ]
    stop = asyncio.Event()
    running = [asyncio.create_task(w.run(stop)) for w in crew]
    await asyncio.wait_for(done.wait(), 30)
    for _ in range(200):  # the worker records the job done right after the handler returns
        if (await _row(fresh_db, job_id)).status == JobStatus.done:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*running), 10)

    assert runs == [job_id.hex]
    row = await _row(fresh_db, job_id)
    assert (row.status, row.attempts, row.last_error) == (JobStatus.done, 1, None)


async def test_a_job_that_keeps_killing_its_worker_is_buried_after_its_attempts(
    db: Database,
) -> None:
    job_id = await _enqueue(db, "killer", max_attempts=3)
    other = await _enqueue(db, "other", max_attempts=3)
    for attempt in (1, 2, 3):
        claimed = await db.run(lambda s, n=attempt: service.claim(s, f"w{n}", 10))
        assert [c.attempts for c in claimed if c.id == job_id] == [attempt]
        # The worker is killed mid-job: no finish, no fail, no renewal; the lease runs out.
        clock.freeze(utcnow() + service.LEASE + timedelta(seconds=1))
        if attempt == 1:
            await db.run(lambda s: service.finish(s, other, "w1"))

    assert await db.run(lambda s: service.claim(s, "w4", 10)) == []
    row = await _row(db, job_id)
    assert (row.status, row.attempts, row.locked_until) == (JobStatus.dead, 3, None)
    assert row.finished_at is not None and service.ABANDONED in (row.last_error or "")
    assert (await _row(db, other)).status == JobStatus.done
    # Staff can give it another chance, as any dead job.
    assert await db.run(lambda s: service.requeue_dead(s, job_id))
    [again] = await db.run(lambda s: service.claim(s, "w5", 10))
    assert (again.id, again.attempts) == (job_id, 1)


async def test_a_job_buried_as_abandoned_loses_a_payload_that_must_not_outlive_it(
    db: Database,
) -> None:
    """A kind whose payload is scrubbed when it ends (a sealed code) is buried without it also
    when its workers died at every attempt; another kind keeps its payload for staff."""
    async def enqueue(s: AsyncSession, kind: str, payload: dict[str, Any]) -> uuid.UUID:
        await service.enqueue(s, kind, payload, dedupe_key=kind, max_attempts=1)
        return (await s.execute(
            select(OutboxJob.id).where(OutboxJob.dedupe_key == kind))).scalar_one()

    secret = await db.run(lambda s: enqueue(s, "notifications.code", {"sealed": "v1.x"}))
    plain = await db.run(lambda s: enqueue(s, "orders.receipt", {"order_id": "o1"}))
    await db.run(lambda s: service.claim(s, "w1", 10, scrubbed={"notifications.code"}))
    clock.freeze(utcnow() + service.LEASE + timedelta(seconds=1))
    assert await db.run(
        lambda s: service.claim(s, "w2", 10, scrubbed={"notifications.code"})) == []
    gone, kept = await _row(db, secret), await _row(db, plain)
    assert (gone.status, gone.payload) == (JobStatus.dead, {})
    assert (kept.status, kept.payload) == (JobStatus.dead, {"order_id": "o1"})


async def test_a_job_that_failed_before_keeps_its_error_when_buried_as_abandoned(
    db: Database,
) -> None:
    job_id = await _enqueue(db, "flaky-killer", max_attempts=2)
    [first] = await db.run(lambda s: service.claim(s, "w1", 10))
    await db.run(lambda s: service.fail(s, first, "w1", "RuntimeError: smtp down"))
    clock.freeze(utcnow() + timedelta(hours=2))
    await db.run(lambda s: service.claim(s, "w2", 10))
    clock.freeze(utcnow() + service.LEASE + timedelta(seconds=1))
    assert await db.run(lambda s: service.claim(s, "w3", 10)) == []
    row = await _row(db, job_id)
    assert row.status == JobStatus.dead
    assert (row.last_error or "").splitlines() == ["RuntimeError: smtp down", service.ABANDONED]


@pytest.mark.postgres_only
async def test_workers_claiming_at_once_bury_each_abandoned_job_once_and_run_the_rest_once(
    fresh_db: Database,
) -> None:
    spent = [await _enqueue(fresh_db, "spent", max_attempts=1) for _ in range(20)]
    alive = [await _enqueue(fresh_db, "alive", max_attempts=2) for _ in range(20)]
    # Every job claimed once by a worker that then dies.
    while await fresh_db.run(lambda s: service.claim(s, "dead-worker", 50)):
        pass
    clock.freeze(utcnow() + service.LEASE + timedelta(seconds=1))

    async def claimer(n: int) -> list[uuid.UUID]:
        got: list[uuid.UUID] = []
        while batch := await fresh_db.run(lambda s: service.claim(s, f"c{n}", 3)):
            got += [c.id for c in batch]
        return got

    taken = [j for found in await asyncio.gather(*(claimer(n) for n in range(6))) for j in found]
    assert sorted(taken) == sorted(alive)  # each live job taken by exactly one worker
    async with fresh_db.read() as s:
        rows = {r.id: r for r in (await s.execute(select(OutboxJob))).scalars()}
    assert {rows[j].status for j in spent} == {JobStatus.dead}
    assert all(rows[j].last_error == service.ABANDONED for j in spent)  # written once each


async def test_a_hung_job_is_stopped_at_its_timeout_and_retried_later(
    db: Database, settings: Settings
) -> None:
    registry = Registry()

    @registry.job("hung")
    async def hung(ctx: JobContext, payload: dict[str, Any]) -> None:
        await asyncio.sleep(3600)

    job_id = await _enqueue(db, "hung")
    worker = Worker(db, _quick(settings, worker_job_timeout_seconds=0.2), registry=registry)
    assert await worker.run_once() == 1
    row = await _row(db, job_id)
    assert (row.status, row.attempts) == (JobStatus.pending, 1)
    assert row.last_error == "timed out after 0.2 s"
    assert row.run_at > utcnow()
    await worker.close()


async def test_a_job_raising_timeout_error_itself_is_an_ordinary_failure(
    db: Database, settings: Settings
) -> None:
    registry = Registry()

    @registry.job("provider-timeout")
    async def provider_timeout(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise TimeoutError("the provider did not answer")

    job_id = await _enqueue(db, "provider-timeout")
    worker = Worker(db, settings, registry=registry)
    await worker.run_once()
    row = await _row(db, job_id)
    assert row.status == JobStatus.pending
    assert row.last_error == "TimeoutError: the provider did not answer"
    await worker.close()


async def test_a_worker_that_lost_a_jobs_lease_stops_it_and_leaves_it_to_the_new_holder(
    fresh_db: Database, settings: Settings
) -> None:
    registry = Registry()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @registry.job("slow")
    async def slow(ctx: JobContext, payload: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = await _enqueue(fresh_db, "slow")
    worker = Worker(fresh_db, _quick(settings), registry=registry, worker_id="stalled")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    # As if this worker had stalled past its lease and another had claimed the job meanwhile.
    await fresh_db.run(
        lambda s: s.execute(
            update(OutboxJob).where(OutboxJob.id == job_id).values(locked_by="newcomer")
        )
    )
    await worker.renew_leases()
    await asyncio.wait_for(cancelled.wait(), 10)
    stop.set()
    await asyncio.wait_for(running, 10)
    row = await _row(fresh_db, job_id)
    # Neither finished nor failed nor given back by the stalled worker: the newcomer's to run.
    assert (row.status, row.locked_by, row.attempts) == (JobStatus.running, "newcomer", 1)
    assert row.last_error is None
