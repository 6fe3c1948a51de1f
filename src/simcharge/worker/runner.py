"""The worker loop: schedule periodic jobs, claim due ones, run them with bounded concurrency,
and keep their leases while they run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.metrics import JOBS
from simcharge.worker import service
from simcharge.worker.registry import JobContext, PermanentJobError, Registry, registry

log = structlog.get_logger("simcharge.worker")


def load_jobs() -> Registry:
    """Import every module that registers jobs, and return the filled registry."""
    import simcharge.worker.jobs  # noqa: F401

    return registry


class Worker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        concurrency: int = 1,
        registry: Registry | None = None,
        worker_id: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.registry = registry or load_jobs()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid7().hex[-6:]}"
        self.lease = timedelta(seconds=settings.worker_lease_seconds)
        self.job_timeout = settings.worker_job_timeout_seconds
        self._running: set[asyncio.Task[None]] = set()
        self._in_hand: dict[asyncio.Task[None], service.ClaimedJob] = {}
        self._deadlines: dict[uuid.UUID, asyncio.Timeout] = {}
        """The jobs whose handler runs now, each with its timeout (also stopped early when the
        job's lease is lost)."""
        self._lost: set[uuid.UUID] = set()
        self._http: httpx.AsyncClient | None = http
        self._owns_http = http is None
        self.shared: dict[str, Any] = {}

    async def schedule_periodic(self) -> int:
        """Make sure the current slot of every periodic job exists (once, whoever asks)."""
        now = utcnow()
        written = 0

        async def write(session: AsyncSession) -> int:
            n = 0
            for p in self.registry.periodic.values():
                seconds = max(1, int(p.every.total_seconds()))
                slot = int(now.timestamp()) // seconds
                n += await service.enqueue(
                    session, p.kind, {}, dedupe_key=f"every:{p.kind}:{slot}", max_attempts=3
                )
            return n

        if self.registry.periodic:
            written = await self.db.run(write)
        return written

    async def _claim(self, limit: int) -> list[service.ClaimedJob]:
        """Claim due jobs — but never start a second run of one this worker is running: its
        lease ran out (the renewals failed: a busy or unreachable database) and this worker's
        own claim took it back, with a fresh lease that the run in hand now keeps."""
        if limit <= 0:
            return []
        kinds, scrubbed = self.registry.handlers.keys(), self.registry.scrubbed
        claimed = await self.db.run(
            lambda s: service.claim(
                s, self.worker_id, limit, self.lease, kinds=kinds, scrubbed=scrubbed
            )
        )
        in_hand = set(self._deadlines) | {j.id for j in self._in_hand.values()}
        for job in claimed:
            if job.id in in_hand:
                log.warning(
                    "job.lease_taken_back",
                    job_id=str(job.id),
                    kind=job.kind,
                    worker_id=self.worker_id,
                )
        return [j for j in claimed if j.id not in in_hand]

    async def run_once(self) -> int:
        """Claim and run what is due now, waiting for it to finish. Returns jobs run."""
        await self.schedule_periodic()
        claimed = await self._claim(self.concurrency)
        async with self._keeping_leases():
            await asyncio.gather(*(self._run_job(j) for j in claimed))
        return len(claimed)

    async def drain(self, *, max_rounds: int = 100) -> int:
        """Run due jobs until none is left (tests, the chaos check, `worker --drain`)."""
        total = 0
        async with self._keeping_leases():
            for _ in range(max_rounds):
                claimed = await self._claim(self.concurrency)
                if not claimed:
                    break
                await asyncio.gather(*(self._run_job(j) for j in claimed))
                total += len(claimed)
        return total

    @property
    def heartbeat_seconds(self) -> float:
        """How often the leases of running jobs are renewed: three times per lease, so that one
        renewal lost to a busy database does not lose a job."""
        return self.lease.total_seconds() / 3

    async def renew_leases(self) -> None:
        """Extend the lease of every job running here; stop those another worker has taken over
        (their lease had run out: this process was stalled or cut from the database)."""
        held = list(self._deadlines)
        if not held:
            return
        kept = await self.db.run(lambda s: service.renew(s, held, self.worker_id, self.lease))
        now = asyncio.get_running_loop().time()
        for job_id in set(held) - kept:
            deadline = self._deadlines.get(job_id)
            if deadline is not None:
                self._lost.add(job_id)
                deadline.reschedule(now)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.renew_leases()
            except Exception:  # the next beat tries again: a lease outlasts three
                log.warning("worker.lease_renewal_failed", worker_id=self.worker_id, exc_info=True)

    @asynccontextmanager
    async def _keeping_leases(self) -> AsyncIterator[None]:
        beat = asyncio.create_task(self._heartbeat())
        try:
            yield
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=20)
        return self._http

    async def close(self) -> None:
        if self._http is not None and self._owns_http:
            await self._http.aclose()
        self._http = None

    async def _record_failure(self, job: service.ClaimedJob, error: str, *, retry: bool) -> str:
        scrub = job.kind in self.registry.scrubbed
        status = await self.db.run(
            lambda s: service.fail(s, job, self.worker_id, error, retry=retry, scrub=scrub)
        )
        # `lost`: the job was no longer this worker's (taken over, buried, retried by staff):
        # the failure changed nothing and is not counted as a retry or a burial.
        outcome = status.value if status is not None else "lost"
        JOBS.labels(job.kind, outcome).inc()
        return outcome

    async def _run_job(self, job: service.ClaimedJob) -> None:
        handler = self.registry.handlers.get(job.kind)
        bound = log.bind(job_id=str(job.id), kind=job.kind, attempt=job.attempts)
        if handler is None:
            await self._record_failure(job, "unknown job kind", retry=False)
            bound.error("job.unknown_kind")
            return
        deadline = asyncio.timeout(self.job_timeout)
        try:
            async with deadline:
                self._deadlines[job.id] = deadline
                try:
                    await handler(
                        JobContext(self.db, self.settings, job, self.http, self.shared),
                        job.payload,
                    )
                finally:
                    self._deadlines.pop(job.id, None)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if job.id in self._lost:
                # Another worker holds the job now and runs it; it is that worker's to finish.
                self._lost.discard(job.id)
                bound.warning("job.lease_lost", worker_id=self.worker_id)
                return
            if not deadline.expired():
                error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            else:
                error = f"timed out after {self.job_timeout:g} s"
            now = await self._record_failure(job, error, retry=True)
            bound.warning("job.failed", error=error, now=now)
        except PermanentJobError as exc:
            error = str(exc)
            await self._record_failure(job, error, retry=False)
            bound.error("job.failed_permanently", error=error)
        except Exception as exc:  # noqa: BLE001 - a job's failure must not stop the worker
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            now = await self._record_failure(job, error, retry=True)
            bound.warning("job.failed", error=error, now=now)
        else:
            scrub = job.kind in self.registry.scrubbed
            ours = await self.db.run(
                lambda s: service.finish(s, job.id, self.worker_id, scrub=scrub)
            )
            JOBS.labels(job.kind, "done" if ours else "lost").inc()
            if ours:
                bound.debug("job.done")
            else:
                bound.warning("job.done_but_no_longer_ours", worker_id=self.worker_id)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._in_hand.pop(task, None)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; then claim nothing more and let the jobs in hand finish
        within `worker_shutdown_grace_seconds`. Those still running then are cancelled and given
        back to the queue at once (their attempt not counted), for another worker to take."""
        log.info("worker.started", worker_id=self.worker_id, concurrency=self.concurrency)
        async with self._keeping_leases():
            await self._work(stop)
            await self._wind_down(self.settings.worker_shutdown_grace_seconds)
        await self.close()
        log.info("worker.stopped", worker_id=self.worker_id)

    async def _work(self, stop: asyncio.Event) -> None:
        poll = self.settings.worker_poll_seconds
        loop = asyncio.get_running_loop()
        # Jobs this process writes (a payment's webhook, a receipt) are claimed as soon as their
        # transaction commits, not up to a poll later; the poll still finds everyone else's.
        written = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # this worker's loop has closed meanwhile
                loop.call_soon_threadsafe(written.set)

        stop_waking = service.on_jobs_committed(wake)
        try:
            await self._working(stop, poll, loop, written)
        finally:
            stop_waking()

    async def _working(
        self,
        stop: asyncio.Event,
        poll: float,
        loop: asyncio.AbstractEventLoop,
        written: asyncio.Event,
    ) -> None:
        next_schedule = 0.0
        while not stop.is_set():
            try:
                if loop.time() >= next_schedule:
                    await self.schedule_periodic()
                    next_schedule = loop.time() + poll
                claimed = await self._claim(self.concurrency - len(self._running))
                for job in claimed:
                    task = asyncio.create_task(self._run_job(job))
                    self._running.add(task)
                    self._in_hand[task] = job
                    task.add_done_callback(self._forget)
                if not claimed:
                    await self._idle(stop, poll, written)
            except asyncio.CancelledError:
                break
            except Exception:
                log.exception("worker.loop_error")
                await asyncio.sleep(min(5.0, poll * 2))

    async def _wind_down(self, grace: float) -> None:
        if not self._running:
            return
        if grace > 0:
            await asyncio.wait(set(self._running), timeout=grace)
        late = [t for t in self._running if not t.done()]
        if not late:
            return
        returned = [self._in_hand[t].id for t in late if t in self._in_hand]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        await self.db.run(lambda s: service.release(s, returned, self.worker_id))
        log.warning("worker.jobs_returned", worker_id=self.worker_id, count=len(returned))

    async def _idle(self, stop: asyncio.Event, poll: float, written: asyncio.Event) -> None:
        """Wait for the next poll, a stop, a free slot, or jobs written by this process,
        whichever comes first."""
        if written.is_set():
            written.clear()
            return
        waiters: list[asyncio.Task[Any]] = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(written.wait()),
        ]
        if self._running:
            # A copy: a task that ends before this one starts must still count as done.
            waiters.append(asyncio.create_task(_first_done(set(self._running))))
        _, pending = await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()


async def _first_done(tasks: set[asyncio.Task[None]]) -> None:
    await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
