"""`make chaos`: simcharge under faults, then a check of every promise.

Two web processes and two workers run on one PostgreSQL database and a Redis of their own.
Simulated customers top up through the sandbox for `--duration` seconds (its webhooks sent
several times, delayed and so reordered), give top-ups to each other, cancel, decline,
re-check, sign in again; finance refunds. Meanwhile a random web or worker process is killed
with SIGKILL every few seconds and restarted, the Redis is killed for a few seconds and started
again (sign-ins must be refused with a 503 meanwhile, `/readyz` must say so, and both must
recover), PostgreSQL is restarted once in immediate mode (as after a crash), and the sandbox
fails for a while (provider calls answered 503, timed out before or after doing the work, or
slow); a share of the paid orders lose every webhook (a larger one during the provider storm).
Then the load stops, what is due is left to drain (retries waiting out
their backoff are made due), the processes are stopped with SIGTERM, and the books are checked:
per unit the ledger sums to zero, every stored balance equals its transfers, no customer
account unbounded or overdrawn, every payment the sandbox reports paid is captured for the
order's total and credited exactly once as its plan says (and nothing unpaid is), refunds equal
what the provider refunded, no job lost or left waiting for a retry, no reservation left open.
Exit status 1 on any violation — also when PostgreSQL could not be restarted (unless
--no-postgres-restart), when a customer got a server error other than a 503 while PostgreSQL
restarted, or saw another customer's order, or when a process did not stop on SIGTERM. The
seed (`--seed`, else a random one) is printed first: the same seed, the same draws.

    python -m chaos [--duration 60] [--customers 24] [--no-postgres-restart] [--seed N]
                    [--postgres-restart-command "docker restart -t 0 pg"]
                    [--redis-outage 6] [--provider-storm 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import uvloop
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from chaos.checks import (
    REDIS_RECOVERY_SECONDS,
    Readiness,
    bring_retries_forward,
    due_jobs,
    open_reservations,
    paid_but_pending,
    readiness_verdict,
    server_error_verdict,
    sign_in_verdict,
    storm_verdict,
    verify,
    webhook_deliveries,
)
from chaos.cluster import (
    BIN,
    GRACE_SECONDS,
    ROOT,
    Cluster,
    Proc,
    RedisServer,
    WebhookSink,
    postgres_restart_command,
)
from chaos.customers import PASSWORD, Crowd, Customer, GaveUp
from chaos.faults import FAULT_LOG_ENV, STORM_FILE_ENV, count_faults, end_storm, start_storm
from simcharge.accounts.models import Account
from simcharge.auth.apikeys import create_api_key
from simcharge.auth.client import ClientInfo
from simcharge.auth.passwords import hash_password
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, read_catalog_file
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.demo import demo_iccid, demo_imsi
from simcharge.kit.clock import utcnow
from simcharge.lines.models import LineState
from simcharge.lines.service import NewLine, open_line

DATABASE = "simcharge_chaos"
SECRET = "chaos-secret-key-" + "x" * 40


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def recreate(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


async def seed(
    db: Database, settings: Settings, n: int, run_seed: int
) -> tuple[list[Customer], str, str]:
    """The demo catalog, `n` customers each with an active line, a signed-in session and its
    own `random.Random` (from the run's seed and its number), and a finance API key and the
    network's (charging, usage)."""
    customers = []
    async with db.transaction() as s:
        await load_catalog(s, read_catalog_file(DEMO_CATALOG))
        now = utcnow()
        password = hash_password(PASSWORD)
        for i in range(n):
            account = Account(
                username=f"chaos{i}", display_name=f"Chaos {i}", language="en",
                email=f"chaos{i}@example.com", email_verified_at=now, password_hash=password,
            )
            s.add(account)
            await s.flush()
            msisdn = f"+1415556{i:04d}"
            line = await open_line(
                s,
                NewLine(msisdn=msisdn, iccid=demo_iccid(msisdn), currency="USD",
                        imsi=demo_imsi(msisdn)),
                account_id=account.id,
                state=LineState.active,
            )
            line.validity_end = now + timedelta(days=30)
            issued = await open_session(
                s, settings.secret_key, account_id=account.id,
                client=ClientInfo(ip="127.0.0.1", user_agent="chaos"),
                policy=policy(settings), now=now,
            )
            customers.append(Customer(
                account.id, issued.token, line.id, msisdn, rng=random.Random(f"{run_seed}:{i}"),
                username=f"chaos{i}", address=str(ipaddress.ip_address("10.77.0.1") + i),
            ))
        key = await create_api_key(s, "chaos finance", ["orders:read", "refunds:write"])
        network = await create_api_key(s, "chaos network", ["charging", "usage:write"])
    return customers, key.token, network.token


async def storm(cluster: Cluster, rng: random.Random, until: float, every: tuple[float, float],
                pg_restart_at: float | None, restart: list[str] | None, events: list[str],
                restarts: list[tuple[float, float]]) -> None:
    if pg_restart_at is not None and restart is None:
        log("no PostgreSQL to restart (no local cluster on that port, no restart command)")
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(*every))
        if time.monotonic() >= until:
            break
        if restart is not None and pg_restart_at is not None and time.monotonic() >= pg_restart_at:
            log("restarting PostgreSQL (immediate)")
            began = time.monotonic()
            # Output to a file, not a pipe: the restarted server inherits it and keeps it open.
            with (cluster.logs / "postgres-restart.log").open("ab") as out:
                proc = await asyncio.create_subprocess_exec(*restart, stdout=out, stderr=out)
                code = await asyncio.wait_for(proc.wait(), 120)
            restarts.append((began, time.monotonic()))
            events.append(f"postgres restart (exit {code})")
            if code != 0:
                raise RuntimeError(f"PostgreSQL restart failed: see {cluster.logs}")
            restart = None
            continue
        # Both draws each time, whatever the health check says: the schedule is the seed's.
        pick, fallback = rng.random(), rng.random()
        victim = cluster.procs[int(pick * len(cluster.procs))]
        if victim.port is not None and not await cluster.others_serving(victim):
            # Keep one web process answering (as behind a load balancer): kill a worker.
            workers = [p for p in cluster.procs if p.port is None]
            victim = workers[int(fallback * len(workers))]
        events.append(f"kill -9 {victim.name}")
        await cluster.restart(victim)


async def readiness(cluster: Cluster, phase: str, wait: float) -> list[Readiness]:
    """Each web process's `/readyz`, all at once: "down" asks once; "back" asks until the
    answer finds Redis (`"redis": "ok"`) or `wait` seconds have passed, and keeps the last
    answer."""

    async def ask(http: httpx.AsyncClient, p: Proc) -> Readiness:
        deadline = time.monotonic() + wait
        while True:
            try:
                r = await http.get(f"{p.url}/readyz")
                status, body = r.status_code, r.json()
            except (httpx.HTTPError, ValueError):
                status, body = 0, {}
            redis = body.get("redis") if isinstance(body, dict) else None
            if phase == "down" or redis == "ok" or time.monotonic() > deadline:
                return Readiness(p.name, phase, status, redis)
            await asyncio.sleep(0.5)

    async with httpx.AsyncClient(timeout=5) as http:
        return list(await asyncio.gather(*(ask(http, p) for p in cluster.web)))


async def redis_outage(
    redis: RedisServer, cluster: Cluster, crowd: Crowd, at: float, seconds: float,
    events: list[str], probes: list[Readiness],
) -> None:
    """At `at`, Redis is killed for `seconds`: meanwhile each web process is asked whether it
    is ready, and one sign-in is tried; after, each must be ready again, and once
    `REDIS_RECOVERY_SECONDS` have passed a sign-in is tried until one succeeds (three tries, 2 s
    apart; every refusal is still judged)."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    log(f"Redis down for {seconds:g} s")
    events.append(f"redis down {seconds:g} s")

    async def meanwhile() -> None:
        await asyncio.sleep(min(1.0, seconds / 4))
        probes.extend(await readiness(cluster, "down", 0))
        async with httpx.AsyncClient(timeout=10) as http:
            await crowd.sign_in(http, crowd.customers[0])

    _, (_, starting) = await asyncio.gather(meanwhile(), redis.outage(seconds))
    log("Redis back")
    probes.extend(await readiness(cluster, "back", REDIS_RECOVERY_SECONDS + 5))
    await asyncio.sleep(max(0.0, starting + REDIS_RECOVERY_SECONDS - time.monotonic()))
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(3):
            await crowd.sign_in(http, crowd.customers[-1])
            if crowd.sign_ins[-1].status == 200:
                break
            await asyncio.sleep(2)


STORM_REFUNDS = 4
"""Refunds finance asks for as a provider storm begins (so that refunds meet it every run)."""


async def provider_storm(
    path: Path, fault_log: Path, crowd: Crowd, rng: random.Random, at: float, seconds: float,
    events: list[str], storms: list[tuple[float, float]],
) -> None:
    """From `at`, the sandbox's calls fail (see `chaos.faults`) for `seconds` — and on, up to
    twice as long, until a refund has met the storm. As it begins, finance refunds part or all
    of up to `STORM_REFUNDS` credited orders."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    log(f"provider failing for {seconds:g} s or more")
    began = time.monotonic()
    start_storm(path, seconds * 2)  # ends by itself even if this run dies
    storms.append((began, began + seconds * 2))

    async def refunds() -> None:
        asked = crowd.stats["refund 202"]
        async with httpx.AsyncClient(timeout=10) as http:
            for order_id in list(crowd.owner):
                if crowd.stats["refund 202"] - asked >= STORM_REFUNDS:
                    break
                if time.monotonic() > began + seconds:
                    break
                with contextlib.suppress(GaveUp):
                    await crowd.refund(http, order_id, rng)
        crowd.stats["refunds asked as the provider storm began"] += (
            crowd.stats["refund 202"] - asked)

    asking = asyncio.create_task(refunds())
    await asyncio.sleep(seconds)
    for _ in range(int(seconds * 2)):  # at most `seconds` more, the faults log read twice a second
        if "refund" in count_faults(fault_log):
            break
        await asyncio.sleep(0.5)
    end_storm(path)
    ended = time.monotonic()
    storms[-1] = (began, ended)
    events.append(f"provider storm {ended - began:.0f} s")
    log("provider answering again")
    await asking


async def run(args: argparse.Namespace) -> int:
    """The run, with its own Redis (on a free port, never the machine's 6379), stopped
    whatever happens."""
    redis = RedisServer(ROOT / "var" / "chaos")
    try:
        await redis.start()
        log(f"Redis of the run on port {redis.port}")
        return await _run(args, redis)
    finally:
        await redis.stop()


async def _run(args: argparse.Namespace, redis: RedisServer) -> int:
    run_seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    log(f"seed {run_seed} (python -m chaos --seed {run_seed} draws the same)")
    # The faults' own draws; each customer has its own (see `seed`).
    rng = random.Random(f"{run_seed}:storm")
    admin = args.postgres_url
    url = make_url(admin).set(drivername="postgresql+asyncpg", database=DATABASE)
    db_url = url.render_as_string(hide_password=False)
    await recreate(admin)
    web_ports = [args.port, args.port + 1]
    logs = redis.logs
    storm_file, fault_log = logs / "provider-storm.json", logs / "provider-faults.log"
    end_storm(storm_file)
    fault_log.unlink(missing_ok=True)
    env = {
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_DATABASE_URL": db_url,
        "SIMCHARGE_SECRET_KEY": SECRET,
        "SIMCHARGE_BASE_URL": f"http://127.0.0.1:{web_ports[0]}",
        "SIMCHARGE_WORKER_IN_PROCESS": "false",
        "SIMCHARGE_SANDBOX_ENABLED": "true",
        "SIMCHARGE_SANDBOX_WEBHOOK_COPIES": "3",
        "SIMCHARGE_SANDBOX_WEBHOOK_MAX_DELAY_SECONDS": "2",
        "SIMCHARGE_LOG_LEVEL": "WARNING",
        "SIMCHARGE_REDIS_URL": redis.url,
        "SIMCHARGE_DB_POOL_SIZE": "8",
        # A killed worker's jobs come back after this (every handler is safe to run twice).
        "SIMCHARGE_WORKER_LEASE_SECONDS": "10",
        "SIMCHARGE_WORKER_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        # Quotas valid 20 s: a session the network drops is timed out soon after.
        "SIMCHARGE_CHARGING_VALIDITY_SECONDS": "20",
        "SIMCHARGE_CHARGING_SESSION_GRACE_SECONDS": "5",
    }
    log(f"database {DATABASE}: migrating")
    subprocess.run([str(BIN / "simcharge"), "db", "upgrade"], env={**os.environ, **env},
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    settings = Settings(_env_file=None, **{k.removeprefix("SIMCHARGE_").lower(): v  # type: ignore[arg-type]
                                           for k, v in env.items()})
    cluster = Cluster({**env, STORM_FILE_ENV: str(storm_file), FAULT_LOG_ENV: str(fault_log)},
                      logs, web_ports, args.workers)
    db = Database.from_url(db_url, pool_size=4)
    sink = WebhookSink()
    await sink.start()

    async def lose_webhooks(sandbox_id: str) -> bool:
        """Every webhook of this sandbox payment goes to the sink (before it is paid)."""

        async def point(s: AsyncSession) -> bool:
            done = await s.execute(
                text("UPDATE sandbox_payments SET notify_url = :url"
                     " WHERE id = :id AND state = 'open'"),
                {"url": sink.url, "id": sandbox_id},
            )
            return bool(getattr(done, "rowcount", 0))

        for _ in range(3):
            try:
                return await db.run(point)
            except Exception:  # noqa: BLE001 - PostgreSQL restarting: try again, else pay as usual
                await asyncio.sleep(0.5)
        return False

    try:
        customers, staff_key, network_key = await seed(db, settings, args.customers, run_seed)
        log(f"{args.customers} customers; starting 2 web processes and {args.workers} workers")
        await cluster.start_all()
        storms: list[tuple[float, float]] = []
        crowd = Crowd([p.url for p in cluster.web], customers, staff_key,
                      random.Random(f"{run_seed}:crowd"), network_key,
                      lose_webhooks=lose_webhooks, lose_fraction=args.lose_webhooks,
                      storm_lose_fraction=args.storm_lose_webhooks,
                      storming=lambda: any(a <= time.monotonic() <= b for a, b in storms))
        start = time.monotonic()
        until = start + args.duration
        events: list[str] = []
        restarts: list[tuple[float, float]] = []
        probes: list[Readiness] = []
        faults = []
        if args.redis_outage > 0:
            faults.append(redis_outage(redis, cluster, crowd, start + args.duration * 0.08,
                                       args.redis_outage, events, probes))
        if args.provider_storm > 0:
            faults.append(provider_storm(storm_file, fault_log, crowd,
                                         random.Random(f"{run_seed}:refunds"),
                                         start + args.duration * 0.2, args.provider_storm,
                                         events, storms))
        pg_at = None if args.no_postgres_restart else start + args.duration * 0.5
        restart = (
            None if pg_at is None
            else postgres_restart_command(url.port or 5432, args.postgres_restart_command)
        )
        log(f"load and faults for {args.duration:.0f} s")
        await asyncio.gather(
            storm(cluster, rng, until, (args.kill_min, args.kill_max), pg_at, restart, events,
                  restarts),
            *faults,
            *(crowd.live(c, until) for c in customers),
        )
        log(f"load over: {dict(crowd.stats)}")
        for p in cluster.procs:
            if p.process is None or p.process.returncode is not None:
                await cluster.start(p)
        await cluster.wait_ready()
        # This process's own connections did not survive the PostgreSQL restart: new ones.
        await db.dispose()
        db = Database.from_url(db_url, pool_size=4)
        log("draining: letting the workers finish what is due; customers re-check paid orders")
        drain_until = time.monotonic() + args.drain
        brought_forward = 0
        drained_in: float | None = None
        async with httpx.AsyncClient(timeout=10) as http:
            while time.monotonic() < drain_until:
                brought_forward += await bring_retries_forward(db)
                stuck = await paid_but_pending(db)
                due = await due_jobs(db)
                held = await open_reservations(db)
                if not stuck and not due and not held:
                    drained_in = round(args.drain - (drain_until - time.monotonic()), 1)
                    break
                for order_id in stuck:
                    owner = crowd.owner.get(order_id)
                    if owner is not None:
                        await crowd.request(
                            http, "POST", f"/api/v1/orders/{order_id}/check",
                            headers={"Authorization": f"Bearer {owner.token}"},
                        )
                await asyncio.sleep(1)
        await cluster.stop_all()
        verdict = await verify(db, dropped=crowd.lost)
        webhooks = await webhook_deliveries(db, sink.url)
        verdict.facts["retries brought forward to drain"] = brought_forward
        verdict.facts["drained in (s)"] = drained_in if drained_in is not None else (
            f"not within {args.drain:g}")
        server_error_verdict(verdict, crowd.server_errors, restarts,
                             redis_outages=redis.outages, storms=storms)
        sign_in_verdict(verdict, crowd.sign_ins, redis.outages)
        readiness_verdict(verdict, probes)
        storm_verdict(verdict, count_faults(fault_log), storms)
        verdict.facts["probes of another customer's order"] = crowd.stats[
            "probes of another's order"]
        verdict.violations += [
            f"a customer saw another customer's order: {what} ({n}×)"
            for what, n in sorted(crowd.leaks.items())
        ]
        verdict.violations += [
            f"{name} did not stop within {GRACE_SECONDS} s + 20 s of SIGTERM (killed)"
            for name in cluster.forced
        ]
        if args.redis_outage > 0 and not redis.outages:
            verdict.violations.append("Redis was not stopped (the run ended first)")
        if not args.no_postgres_restart and not restarts:
            verdict.violations.append(
                "PostgreSQL was not restarted: no local cluster listens on that port and no "
                "--postgres-restart-command was given (or run with --no-postgres-restart)"
            )
    finally:
        end_storm(storm_file)
        await cluster.stop_all()
        await db.dispose()
        await sink.stop()

    kills = {p.name: p.kills for p in cluster.procs}
    report = {
        "seed": run_seed,
        "duration_s": args.duration,
        "customers": args.customers,
        "kills": kills,
        "restarted as unhealthy": cluster.supervisor_restarts,
        "faults": events,
        "faults injected": {
            "kill -9": sum(kills.values()),
            "postgres restarts": len(restarts),
            "redis outages": len(redis.outages),
            "provider storms": len(storms),
            "provider calls failed or slowed": sum(
                n for by in count_faults(fault_log).values() for n in by.values()),
            "orders whose webhooks were all dropped": len(crowd.lost),
            "webhooks dropped": sink.received,
            "duplicate webhooks delivered": webhooks["duplicates delivered"],
            "webhooks delivered": webhooks["delivered"],
        },
        "client": dict(sorted(crowd.stats.items())),
        **{k: v for k, v in verdict.facts.items()},
        "violations": verdict.violations,
    }
    print(json.dumps(report, indent=2, default=str))
    if verdict.violations:
        log(f"{len(verdict.violations)} VIOLATION(S)")
        return 1
    log("every promise held")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--postgres-url", default=os.environ.get(
        "SIMCHARGE_CHAOS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a server where the run may create and drop its database")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load and faults")
    parser.add_argument("--customers", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--kill-min", type=float, default=2.0)
    parser.add_argument("--kill-max", type=float, default=5.0)
    parser.add_argument(
        "--drain", type=float, default=300,
        help="seconds allowed to drain (the backlog of a minute of load and faults: ~2 min on 2 "
        "cores)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the run's seed (default: a random one, printed first)")
    parser.add_argument(
        "--lose-webhooks", type=float, default=0.1,
        help="share of paid orders whose webhooks are all lost (only the return, 'check now' "
        "and reconciliation can credit them)")
    parser.add_argument(
        "--redis-outage", type=float, default=6.0,
        help="seconds the run's own Redis is down, from 8%% of the duration (0: no outage)")
    parser.add_argument(
        "--provider-storm", type=float, default=12.0,
        help="seconds the sandbox's calls fail (503, timeouts, lost answers, slow answers), "
        "from 20%% of the duration, before PostgreSQL's restart (0: no storm)")
    parser.add_argument(
        "--storm-lose-webhooks", type=float, default=0.5,
        help="share of the orders paid during the provider storm whose webhooks are all lost")
    parser.add_argument("--no-postgres-restart", action="store_true",
                        help="skip that fault (otherwise a run that cannot restart it fails)")
    parser.add_argument(
        "--postgres-restart-command",
        default=os.environ.get("SIMCHARGE_CHAOS_POSTGRES_RESTART"),
        help="how to restart PostgreSQL at once (default: pg_ctlcluster … restart -m immediate "
        "for the local cluster on the URL's port)",
    )
    sys.exit(uvloop.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
