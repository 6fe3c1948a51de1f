"""The bench database, the baselines and every entry. Later work adds entries to `ENTRIES`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench import http
from bench.driver import Operation
from simcharge import migrate
from simcharge.db import Database, create_engine
from simcharge.kit.ids import uuid7
from simcharge.ledger.service import NewTransfer, commit_transfers

BENCH_DB = os.environ.get("SIMCHARGE_BENCH_DATABASE", "simcharge_bench")
ROWS = 100_000


@dataclass(frozen=True)
class Target:
    """A target an issue set for an entry: `metric op value` on one of the entry's figures
    (`ratio`, `p95_ms` for a driven entry; `records_per_s`, `peak_mb` for a run-once one)."""

    metric: str
    op: Literal[">=", "<"]
    value: float

    def met(self, actual: float) -> bool:
        return actual >= self.value if self.op == ">=" else actual < self.value

    def describe(self) -> str:
        return f"{self.metric} {'≥' if self.op == '>=' else '<'} {self.value:g}"


def at_least(metric: str, value: float) -> Target:
    return Target(metric, ">=", value)


def below(metric: str, value: float) -> Target:
    return Target(metric, "<", value)


@dataclass(frozen=True)
class Entry:
    name: str
    baseline: str
    """`db_baseline` or `http_baseline`: measured in the same run at this entry's concurrency."""
    build: Callable[[BenchContext], Awaitable[Operation]]
    concurrency: int | None = None
    """Its own number of concurrent workers (else the run's)."""
    targets: tuple[Target, ...] = ()
    """What its issue asks of it."""


@dataclass(frozen=True)
class Baseline:
    """What entries are compared with; built for a number of concurrent workers, so that each
    entry's baseline runs at the entry's own concurrency."""

    name: str
    build: Callable[[BenchContext, int], Awaitable[Operation]]


@dataclass(frozen=True)
class OnceEntry:
    """An entry run once (not driven for a duration), reporting its own figures: a job's
    throughput and memory (`cdr_rating`)."""

    name: str
    run: Callable[[BenchContext], Awaitable[dict[str, Any]]]
    targets: tuple[Target, ...] = ()


@dataclass
class BenchContext:
    admin_url: str
    concurrency: int
    ledger_accounts: list[uuid.UUID] = field(default_factory=list)
    _pools: dict[int, Any] = field(default_factory=dict)
    _db: Database | None = None
    _servers: list[asyncio.subprocess.Process] = field(default_factory=list)
    _clients: list[http.Client] = field(default_factory=list)

    def dsn(self, database: str = BENCH_DB) -> str:
        return (
            make_url(self.admin_url)
            .set(drivername="postgresql", database=database)
            .render_as_string(hide_password=False)
        )

    def sqlalchemy_url(self) -> str:
        return (
            make_url(self.admin_url)
            .set(drivername="postgresql+asyncpg", database=BENCH_DB)
            .render_as_string(hide_password=False)
        )

    async def prepare(self) -> None:
        admin = await asyncpg.connect(self.dsn("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
        finally:
            await admin.close()
        engine = create_engine(self.sqlalchemy_url(), null_pool=True)
        await migrate.upgrade(engine)
        await engine.dispose()
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(
                "CREATE TABLE bench_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);"
                "CREATE TABLE bench_log (id bigserial PRIMARY KEY, account_id bigint NOT NULL, "
                "amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());"
            )
            await conn.copy_records_to_table(
                "bench_accounts", records=[(i, 0) for i in range(ROWS)], columns=["id", "balance"]
            )
            now = datetime.now(UTC)
            self.ledger_accounts = [uuid7() for _ in range(ROWS)]
            await conn.copy_records_to_table(
                "ledger_accounts",
                records=[
                    (a, "USD", "bench", False, False, 0, 0, 0, 0, now) for a in self.ledger_accounts
                ],
                columns=[
                    "id",
                    "unit",
                    "code",
                    "debits_must_not_exceed_credits",
                    "credits_must_not_exceed_debits",
                    "debits_pending",
                    "debits_posted",
                    "credits_pending",
                    "credits_posted",
                    "created_at",
                ],
            )
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()

    async def raw_pool(self, size: int) -> Any:
        """An asyncpg pool of `size` connections to the bench database (one per size)."""
        if size not in self._pools:
            self._pools[size] = await asyncpg.create_pool(self.dsn(), min_size=size, max_size=size)
        return self._pools[size]

    def database(self) -> Database:
        if self._db is None:
            self._db = Database.from_url(self.sqlalchemy_url(), pool_size=self.concurrency)
        return self._db

    async def serve(
        self,
        target: str,
        env: dict[str, str] | None = None,
        *,
        factory: bool = False,
        proxied: bool = False,
        workers: int = 1,
    ) -> str:
        """Start uvicorn as `simcharge serve` does (uvloop/httptools, no access log): one process,
        or with `workers` above 1 `simcharge serve --workers N` itself (simcharge only)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            str(Path(sys.executable).with_name("simcharge")),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *(["--proxy-headers"] if proxied else []),
        ] if workers > 1 else [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            *(["--factory"] if factory else []),
            # Behind a proxy: the client address is X-Forwarded-For (as `serve --proxy-headers`).
            *(["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"] if proxied else []),
        ]
        # "{base}" in a value stands for the server's own address (e.g. its base URL).
        own = {k: v.replace("{base}", f"http://127.0.0.1:{port}") for k, v in (env or {}).items()}
        proc = await asyncio.create_subprocess_exec(*cmd, env={**os.environ, **own})
        self._servers.append(proc)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as probe:
            for _ in range(1200):  # a minute: a loaded machine imports slowly
                with contextlib.suppress(httpx.HTTPError):
                    await probe.get(base + "/")
                    return base
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{target} did not start")

    def client(self, base: str, *, connections: int | None = None) -> http.Client:
        """The driver's HTTP client (`bench.http`: keep-alive, little CPU per request)."""
        c = http.Client(base, connections=connections or self.concurrency)
        self._clients.append(c)
        return c

    async def operation(self, name: str, concurrency: int | None = None) -> Operation:
        """The operation of an entry, or of a baseline built for `concurrency` workers."""
        baseline = next((b for b in BASELINES if b.name == name), None)
        if baseline is not None:
            return await baseline.build(self, concurrency or self.concurrency)
        entry = next((e for e in ENTRIES if e.name == name), None)
        if entry is None:
            raise KeyError(name)
        return await entry.build(self)

    async def release(self) -> None:
        """Stop the servers, close the clients and pools: what one measurement built. Each holds
        database connections, and the server allows only so many for the whole run."""
        for c in self._clients:
            await c.aclose()
        for proc in self._servers:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=10)
        self._clients.clear()
        self._servers.clear()
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
        if self._db is not None:
            await self._db.dispose()
            self._db = None

    async def close(self) -> None:
        await self.release()


# --- baselines ---------------------------------------------------------------------------------


async def _db_baseline(ctx: BenchContext, concurrency: int) -> Operation:
    pool = await ctx.raw_pool(concurrency)

    async def op(rng: random.Random) -> None:
        account, amount = rng.randrange(ROWS), rng.randint(1, 1000)
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchval(
                "UPDATE bench_accounts SET balance = balance + $1 WHERE id = $2 RETURNING balance",
                amount,
                account,
            )
            await conn.execute(
                "INSERT INTO bench_log (account_id, amount) VALUES ($1, $2)", account, amount
            )

    return op


async def _http_baseline(ctx: BenchContext, concurrency: int) -> Operation:
    # As many database connections and client connections as workers, as simcharge gets.
    base = await ctx.serve(
        "bench.bare_app:app", {"BENCH_DSN": ctx.dsn(), "BENCH_POOL": str(concurrency)}
    )
    client = ctx.client(base, connections=concurrency)

    async def op(rng: random.Random) -> None:
        r = await client.post(
            "/", json={"account": rng.randrange(ROWS), "amount": rng.randint(1, 1000)}
        )
        r.raise_for_status()

    return op


BASELINES = (
    Baseline("db_baseline", _db_baseline),
    Baseline("http_baseline", _http_baseline),
)


# --- entries -----------------------------------------------------------------------------------


async def _ledger_transfer(ctx: BenchContext) -> Operation:
    """One two-account transfer through the ledger service, in its own transaction
    (`commit_transfers`: the ledger used on its own)."""
    db = ctx.database()
    accounts = ctx.ledger_accounts

    async def op(rng: random.Random) -> None:
        debit, credit = rng.sample(accounts, 2)
        transfer = NewTransfer(uuid7(), rng.randint(1, 1000), "USD", debit, credit, code="bench")
        outcomes = await commit_transfers(db, [transfer])
        if not outcomes[0].ok:
            raise RuntimeError(outcomes[0].result)

    return op


async def _topup_fulfil_webhook(ctx: BenchContext) -> Operation:
    from bench.orders import topup_fulfil_webhook

    return await topup_fulfil_webhook(ctx)


async def _portal_dashboard(ctx: BenchContext) -> Operation:
    from bench.portal import portal_dashboard

    return await portal_dashboard(ctx)


async def _nchf_update(ctx: BenchContext) -> Operation:
    from bench.charging import nchf_update

    return await nchf_update(ctx)


async def _topup_journey(ctx: BenchContext) -> dict[str, Any]:
    from bench.journey import topup_journey

    return await topup_journey(ctx)


async def _cdr_rating(ctx: BenchContext) -> dict[str, Any]:
    from bench.charging import cdr_rating

    return await cdr_rating(ctx)


# Each entry with the target its issue set (issue 2: ledger; the orders, portal and charging
# issues: the others).
ENTRIES: list[Entry] = [
    Entry("ledger_transfer", "db_baseline", _ledger_transfer, targets=(at_least("ratio", 0.6),)),
    Entry(
        "topup_fulfil_webhook",
        "http_baseline",
        _topup_fulfil_webhook,
        targets=(at_least("ratio", 0.35),),
    ),
    Entry(
        "portal_dashboard",
        "http_baseline",
        _portal_dashboard,
        concurrency=32,
        targets=(below("p95_ms", 50),),
    ),
    Entry("nchf_update", "http_baseline", _nchf_update, targets=(at_least("ratio", 0.5),)),
]

ONCE: list[OnceEntry] = [
    OnceEntry(
        "cdr_rating",
        _cdr_rating,
        targets=(at_least("records_per_s", 20_000), below("peak_mb", 300)),
    ),
    OnceEntry("topup_journey", _topup_journey),
]
