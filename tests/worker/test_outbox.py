"""The outbox: jobs enqueued with their cause, claimed once, retried with backoff, buried."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import TransferKind
from simcharge.ledger.service import NewTransfer
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.registry import JobContext, PermanentJobError, Registry
from simcharge.worker.runner import Worker, load_jobs


async def job_row(db: Database, kind: str) -> OutboxJob:
    async with db.read() as s:
        return (await s.execute(select(OutboxJob).where(OutboxJob.kind == kind))).scalar_one()


async def test_enqueue_with_a_dedupe_key_makes_one_job(session: AsyncSession) -> None:
    assert await service.enqueue(session, "x", {"a": 1}, dedupe_key="k")
    assert not await service.enqueue(session, "x", {"a": 2}, dedupe_key="k")
    rows = (await session.execute(select(OutboxJob).where(OutboxJob.kind == "x"))).scalars().all()
    assert [r.payload for r in rows] == [{"a": 1}]


async def test_a_job_runs_once_and_is_done(db: Database, settings: Settings) -> None:
    registry = Registry()
    seen: list[dict[str, Any]] = []

    @registry.job("greet")
    async def greet(ctx: JobContext, payload: dict[str, Any]) -> None:
        seen.append(payload)

    await db.run(lambda s: service.enqueue(s, "greet", {"to": "alice"}))
    worker = Worker(db, settings, registry=registry)
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert seen == [{"to": "alice"}]
    job = await job_row(db, "greet")
    assert (job.status, job.attempts) == (JobStatus.done, 1)


async def test_failures_are_retried_with_backoff_then_buried(
    db: Database, settings: Settings
) -> None:
    registry = Registry()

    @registry.job("flaky")
    async def flaky(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise RuntimeError("smtp down")

    await db.run(lambda s: service.enqueue(s, "flaky", {}, max_attempts=2))
    worker = Worker(db, settings, registry=registry)
    await worker.run_once()
    job = await job_row(db, "flaky")
    assert (job.status, job.attempts) == (JobStatus.pending, 1)
    assert "smtp down" in (job.last_error or "")
    assert job.run_at > utcnow() + timedelta(seconds=1)
    assert await worker.run_once() == 0  # not due yet
    clock.freeze(utcnow() + timedelta(seconds=10))
    assert await worker.run_once() == 1
    job = await job_row(db, "flaky")
    assert (job.status, job.attempts) == (JobStatus.dead, 2)
    assert await db.run(lambda s: service.requeue_dead(s, job.id))
    assert (await job_row(db, "flaky")).status == JobStatus.pending


async def test_permanent_errors_are_buried_at_once_and_unknown_kinds_left_to_others(
    db: Database, settings: Settings
) -> None:
    registry = Registry()

    @registry.job("doomed")
    async def doomed(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise PermanentJobError("order vanished")

    await db.run(lambda s: service.enqueue(s, "doomed", {}))
    await db.run(lambda s: service.enqueue(s, "nobody-knows", {}))
    await Worker(db, settings, registry=registry, concurrency=2).run_once()
    assert (await job_row(db, "doomed")).status == JobStatus.dead
    unknown = await job_row(db, "nobody-knows")  # for a worker that knows it (a newer release)
    assert (unknown.status, unknown.attempts, unknown.last_error) == (JobStatus.pending, 0, None)


async def test_a_dead_workers_lease_runs_out_and_the_job_comes_back(db: Database) -> None:
    await db.run(lambda s: service.enqueue(s, "lease", {}))
    [claimed] = await db.run(lambda s: service.claim(s, "w1", 10))
    assert await db.run(lambda s: service.claim(s, "w2", 10)) == []
    clock.freeze(utcnow() + service.LEASE + timedelta(seconds=1))
    [again] = await db.run(lambda s: service.claim(s, "w2", 10))
    assert again.id == claimed.id and again.attempts == 2
    # The first worker's late report does not overwrite the second's claim.
    await db.run(lambda s: service.finish(s, claimed.id, "w1"))
    assert (await job_row(db, "lease")).status == JobStatus.running
    await db.run(lambda s: service.finish(s, claimed.id, "w2"))
    assert (await job_row(db, "lease")).status == JobStatus.done


async def test_the_lease_is_the_configured_one(db: Database, settings: Settings) -> None:
    worker = Worker(db, settings.model_copy(update={"worker_lease_seconds": 15}))
    kind = next(iter(worker.registry.handlers))  # a kind the worker runs
    await db.run(lambda s: service.enqueue(s, kind, {}))
    before = utcnow()
    [claimed] = await worker._claim(10)
    row = await job_row(db, kind)
    assert row.locked_until is not None
    assert timedelta(seconds=14) < row.locked_until - before < timedelta(seconds=16)
    assert claimed.id == row.id
    await worker.close()


async def test_periodic_jobs_are_scheduled_once_per_slot(db: Database, settings: Settings) -> None:
    registry = Registry()
    runs: list[int] = []

    @registry.every("tick", timedelta(minutes=1))
    async def tick(ctx: JobContext, payload: dict[str, Any]) -> None:
        runs.append(1)

    a = Worker(db, settings, registry=registry, worker_id="a")
    b = Worker(db, settings, registry=registry, worker_id="b")
    assert await a.schedule_periodic() == 1
    assert await b.schedule_periodic() == 0
    await a.run_once()
    await b.run_once()
    assert runs == [1]


async def test_the_real_registry_expires_reservations(db: Database, settings: Settings) -> None:
    from simcharge.kit.ids import uuid7
    from simcharge.ledger.service import post_transfers
    from tests.factories import create_ledger_account

    registry = load_jobs()
    assert {"ledger.expire_pending", "outbox.prune", "payments.reconcile"} <= set(registry.periodic)

    async def reserve(s: AsyncSession) -> uuid7:  # type: ignore[valid-type]
        a = await create_ledger_account(s)
        b = await create_ledger_account(s)
        await post_transfers(
            s, [NewTransfer(uuid7(), 5, "USD", a, b, kind=TransferKind.pending, timeout_s=1)]
        )
        return a

    account = await db.run(reserve)
    clock.freeze(utcnow() + timedelta(seconds=5))
    await Worker(db, settings, registry=registry, concurrency=8).run_once()
    from tests.factories import ledger_account

    async with db.read() as s:
        assert (await ledger_account(s, account)).debits_pending == 0


async def test_two_workers_never_run_the_same_job(fresh_db: Database, settings: Settings) -> None:
    registry = Registry()
    ran: list[int] = []

    @registry.job("count")
    async def count(ctx: JobContext, payload: dict[str, Any]) -> None:
        ran.append(payload["n"])
        await asyncio.sleep(0.001)

    async def fill(s: AsyncSession) -> None:
        for n in range(60):
            await service.enqueue(s, "count", {"n": n})

    await fresh_db.run(fill)
    workers = [
        Worker(fresh_db, settings, registry=registry, concurrency=4, worker_id=f"w{i}")
        for i in range(3)
    ]
    await asyncio.gather(*(w.drain() for w in workers))
    assert sorted(ran) == list(range(60))
    async with fresh_db.read() as s:
        assert await service.count_by_status(s) == {"done": 60}


async def test_a_commit_that_wrote_jobs_wakes_the_workers_of_the_process(db: Database) -> None:
    calls: list[int] = []
    stop_waking = service.on_jobs_committed(lambda: calls.append(1))
    try:

        async def rolled_back(s: AsyncSession) -> None:
            await service.enqueue(s, "x", {})
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await db.run(rolled_back)
        assert calls == []
        await db.run(lambda s: service.enqueue(s, "x", {}, dedupe_key="once"))
        assert calls == [1]
        # Nothing written (the dedupe key is taken), nothing to wake for.
        await db.run(lambda s: service.enqueue(s, "x", {}, dedupe_key="once"))
        await db.run(lambda s: s.execute(select(OutboxJob.id)))
        assert calls == [1]
        await db.run(lambda s: service.enqueue_many(s, [service.NewJob("x", {})]))
        assert calls == [1, 1]
    finally:
        stop_waking()
    await db.run(lambda s: service.enqueue(s, "x", {}))
    assert calls == [1, 1]


async def test_a_job_written_in_this_process_is_claimed_at_its_commit_not_at_the_next_poll(
    fresh_db: Database, settings: Settings
) -> None:
    """A running worker whose poll is an hour away still takes, at once, a job this process
    commits (a payment's webhook written by the sandbox, a receipt); after it stops, its waker
    is gone."""
    registry = Registry()
    ran = asyncio.Event()

    @registry.job("now")
    async def now(ctx: JobContext, payload: dict[str, Any]) -> None:
        ran.set()

    hourly = settings.model_copy(update={"worker_poll_seconds": 3600})
    worker = Worker(fresh_db, hourly, registry=registry)
    stop = asyncio.Event()
    others = set(service._wakers)  # workers of other tests in this process, if any
    running = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)  # the worker's first claim found nothing: it now waits on its poll
    assert len(service._wakers - others) == 1
    await fresh_db.run(lambda s: service.enqueue_many(s, [service.NewJob("now", {})]))
    await asyncio.wait_for(ran.wait(), 30)  # long before the hour
    stop.set()
    await asyncio.wait_for(running, 10)
    assert service._wakers <= others
