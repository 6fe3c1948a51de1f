"""`simcharge worker` as a process, as an operator runs it: SIGTERM lets the jobs in hand
finish within the grace period, gives the rest back and exits 0; `--metrics-port` serves the
worker's own metrics, the fulfilment delay of the orders its reconciliation credits included."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import Payment
from simcharge.payments.sandbox import DELIVER_WEBHOOK
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob
from tests.conftest import TEST_SECRET, Backend
from tests.factories import load_demo_catalog
from tests.orders.helpers import new_payer, order_row, pay_at_sandbox, place

ROOT = Path(__file__).resolve().parents[2]
GRACE = 5.0
# The real `simcharge` entry point, with the test jobs of process_jobs.py registered too.
WORKER = [
    sys.executable, "-c",
    "import sys, tests.worker.process_jobs; from simcharge.cli import main; "
    "sys.argv[0] = 'simcharge'; main()",
]


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[tuple[str, Database]]:
    """A migrated database of its own, its URL for the process, and a handle for the test."""
    url = await backend.copy("w" + uuid.uuid4().hex[:10])
    db = Database.from_url(url, pool_size=4)
    yield make_url(url).render_as_string(hide_password=False), db
    await db.dispose()
    await backend.discard(url)


def _env(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": url,
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_SECRET_KEY": TEST_SECRET,
        "SIMCHARGE_SANDBOX_ENABLED": "true",
        "SIMCHARGE_WORKER_POLL_SECONDS": "0.1",
        "SIMCHARGE_WORKER_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "SIMCHARGE_LOG_LEVEL": "INFO",
        **extra,
    }


async def _wait_for(what: str, ready: Callable[[], Awaitable[bool]],
                    proc: asyncio.subprocess.Process, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await ready():
        if proc.returncode is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds} s")
        await asyncio.sleep(0.05)


async def _start(*args: str, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *WORKER, *args, env=env, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT
        )


async def _stop(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, as an operator or a container runtime stops it; the exit status."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), GRACE + 30)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def _jobs(db: Database) -> dict[str, OutboxJob]:
    async with db.read() as s:
        rows = (await s.execute(select(OutboxJob).where(OutboxJob.kind.like("test.%")))).scalars()
        return {j.payload.get("name", j.kind): j for j in rows}


async def test_sigterm_lets_jobs_in_hand_finish_gives_back_the_rest_and_exits_0(
    database: tuple[str, Database], tmp_path: Path
) -> None:
    url, db = database

    async def fill(s: AsyncSession) -> None:
        for kind, name in (("test.quick", "quick"), ("test.until_released", "finishing"),
                           ("test.until_released", "stuck")):
            await service.enqueue(s, kind, {"dir": str(tmp_path), "name": name})

    await db.run(fill)
    log = tmp_path / "worker.log"
    proc = await _start("worker", "--concurrency", "3", env=_env(url), log=log)

    async def started() -> bool:
        names = ("quick", "finishing", "stuck")
        return all((tmp_path / f"started-{n}").exists() for n in names) and (
            tmp_path / "finished-quick"
        ).exists()

    try:
        await _wait_for("jobs started", started, proc)
        proc.send_signal(signal.SIGTERM)
        # Told to stop: one job in hand finishes within the grace period, the other does not.
        await asyncio.sleep(0.3)
        (tmp_path / "release-finishing").touch()
        code = await asyncio.wait_for(proc.wait(), GRACE + 30)
    finally:
        await _kill(proc)
    output = log.read_text()
    assert code == 0, output
    assert (tmp_path / "finished-finishing").exists()
    assert not (tmp_path / "finished-stuck").exists()
    jobs = await _jobs(db)
    assert (jobs["quick"].status, jobs["finishing"].status) == (JobStatus.done, JobStatus.done)
    stuck = jobs["stuck"]
    # Given back at once, its attempt not counted: the next worker takes it without waiting.
    assert (stuck.status, stuck.attempts, stuck.locked_until) == (JobStatus.pending, 0, None)
    assert "worker.jobs_returned" in output and "worker.stopped" in output
    async with db.transaction() as s:
        assert [c.id for c in await service.claim(s, "next", 10) if c.kind.startswith("test.")] \
            == [stuck.id]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(body: str, name: str, **labels: str) -> float | None:
    for line in body.splitlines():
        found = re.fullmatch(r"([a-z_]+)(\{.*\})? (\S+)", line)
        have = dict(re.findall(r'(\w+)="([^"]*)"', (found and found.group(2)) or ""))
        if found and found.group(1) == name and have == labels:
            return float(found.group(3))
    return None


async def test_the_worker_serves_its_metrics_with_the_fulfilment_delay_of_what_it_reconciles(
    database: tuple[str, Database], settings: Settings, tmp_path: Path
) -> None:
    url, db = database
    await db.run(load_demo_catalog)
    app: Any = create_app(settings, db=db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        payer = await new_payer(db, settings)
        order = await place(client, payer)
        assert (await pay_at_sandbox(client, settings, order)).status_code == 303

    async def lose_the_webhooks(s: AsyncSession) -> None:
        # Paid at the provider, but its notifications never arrive: only reconciliation can
        # find out, and it runs in the worker.
        await s.execute(delete(OutboxJob).where(OutboxJob.kind == DELIVER_WEBHOOK))
        await s.execute(update(Payment).values(next_check_at=Payment.created_at))

    await db.run(lose_the_webhooks)
    assert (await order_row(db, order["id"])).state == "pending"
    port = _free_port()
    proc = await _start("worker", "--metrics-port", str(port), env=_env(url),
                        log=tmp_path / "worker.log")
    body = ""

    async def credited() -> bool:
        nonlocal body
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                body = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            return False
        # The delay is observed as the order is credited; the job counted when it has ended.
        return bool(
            _sample(body, "simcharge_order_fulfilment_delay_seconds_count", provider="sandbox")
            and _sample(body, "simcharge_jobs_total", kind="payments.reconcile", outcome="done")
        )

    try:
        await _wait_for("the order credited by the worker", credited, proc)
        assert await _stop(proc) == 0
    finally:
        await _kill(proc)
    assert _sample(body, "simcharge_order_fulfilment_delay_seconds_count", provider="sandbox") == 1
    reconciled = _sample(body, "simcharge_jobs_total", kind="payments.reconcile", outcome="done")
    assert reconciled is not None and reconciled >= 1
    assert (await order_row(db, order["id"])).state == "fulfilled"
