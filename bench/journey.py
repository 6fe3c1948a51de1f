"""`topup_journey`: the whole top-up journey of a customer, step by step, against simcharge
served by uvicorn with its in-process worker: sign in with a password, quote, place the order,
pay on the sandbox's hosted page (open it, press pay), and wait until the order is credited (the
sandbox's signed webhook is sent by the worker and fulfils the order). 16 customers at once for
`DURATION` seconds, each journey from its own address (behind a proxy, X-Forwarded-For) as real
customers are; reports each step's throughput and p50/p95, and the journeys completed."""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.passwords import hash_password
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, read_catalog_file
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.lines.models import LineState
from simcharge.lines.service import NewLine, open_line

if TYPE_CHECKING:
    from bench.entries import BenchContext

CUSTOMERS = 200
CONCURRENCY = 16
DURATION = 30.0
POLL_SECONDS = 0.1
"""How often a customer asks whether the order is credited (each ask is a request the server
serves too; the portal asks every 2–5 s)."""
PASSWORD = "bench-journey-password-2026"  # noqa: S105 - made up
STEPS = ("sign_in", "quote", "order", "sandbox_page", "pay", "credited")
_TOKEN = re.compile(r'name="token" value="([^"]+)"')


async def _seed(s: AsyncSession) -> list[tuple[str, str]]:
    """Customers with a password and an active line: (username, line id)."""
    from sqlalchemy import update

    from simcharge.accounts.models import Account
    from simcharge.worker.models import OutboxJob

    # The entries before this one leave thousands of receipts and notices queued; the journey's
    # server would work through them before its own webhooks. They are not this entry's work.
    await s.execute(
        update(OutboxJob)
        .where(OutboxJob.status == "pending",
               OutboxJob.kind.in_(("orders.receipt", "notifications.deliver")))
        .values(status="done")
    )
    await load_catalog(s, read_catalog_file(DEMO_CATALOG))
    hashed = hash_password(PASSWORD)
    now = utcnow()
    out = []
    for i in range(CUSTOMERS):
        account = Account(id=uuid7(), username=f"bench-journey-{i}", password_hash=hashed,
                          email=f"journey{i}@example.com", email_verified_at=now)
        s.add(account)
        await s.flush()
        line = await open_line(
            s, NewLine(msisdn=f"+1404{5_000_000 + i:07d}", iccid=f"89019992{i:011d}",
                       currency="USD"),
            account_id=account.id, state=LineState.active,
        )
        out.append((account.username, str(line.id)))
    return out


async def topup_journey(ctx: BenchContext) -> dict[str, Any]:
    customers = await ctx.database().run(_seed)
    base = await ctx.serve("simcharge.app:serve_app", factory=True, proxied=True, env={
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_DATABASE_URL": ctx.sqlalchemy_url(),
        "SIMCHARGE_DB_POOL_SIZE": str(CONCURRENCY),
        "SIMCHARGE_WORKER_IN_PROCESS": "true",
        "SIMCHARGE_SANDBOX_ENABLED": "true",
        "SIMCHARGE_LOG_LEVEL": "warning",
        "SIMCHARGE_BASE_URL": "{base}",
        "SIMCHARGE_SECRET_KEY": "bench-secret-key-bench-secret-key-bench-secret-key",
    })
    timings: dict[str, list[float]] = {step: [] for step in STEPS}
    journeys: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + DURATION

    async def journey(http: httpx.AsyncClient, rng: random.Random) -> None:
        username, line_id = rng.choice(customers)
        client_ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        headers = {"X-Forwarded-For": client_ip}
        began = time.perf_counter()

        async def step(name: str, method: str, url: str, ok: int, **kw: Any) -> httpx.Response:
            t = time.perf_counter()
            r = await http.request(method, url, headers={**headers, **kw.pop("headers", {})}, **kw)
            if r.status_code != ok:
                raise RuntimeError(f"{name}: {r.status_code} {r.text[:120]}")
            timings[name].append((time.perf_counter() - t) * 1000)
            return r

        r = await step("sign_in", "POST", "/api/v1/auth/login", 200,
                       json={"login": username, "password": PASSWORD})
        headers["Authorization"] = f"Bearer {r.json()['token']}"
        body = {"plan": rng.choice(("starter-10", "traveller-20")), "method": "sandbox",
                "line_id": line_id}
        await step("quote", "POST", "/api/v1/quotes", 200, json=body)
        r = await step("order", "POST", "/api/v1/orders", 201, json=body,
                       headers={"Idempotency-Key": uuid7().hex})
        order = r.json()
        page_url = httpx.URL(order["next_action"]["url"]).path
        page = await step("sandbox_page", "GET", page_url, 200)
        match = _TOKEN.search(page.text)
        if match is None:
            raise RuntimeError("sandbox page without a token")
        await step("pay", "POST", page_url, 303, data={"action": "pay", "token": match.group(1)})
        t = time.perf_counter()
        while True:
            r = await http.get(f"/api/v1/orders/{order['id']}", headers=headers)
            if r.json().get("state") == "fulfilled":
                break
            if time.perf_counter() - t > 30:
                raise RuntimeError("credited: not within 30 s")
            await asyncio.sleep(POLL_SECONDS)
        timings["credited"].append((time.perf_counter() - t) * 1000)
        journeys.append((time.perf_counter() - began) * 1000)

    async def customer(index: int) -> None:
        rng = random.Random(index)
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while time.perf_counter() < stop_at:
                try:
                    await journey(http, rng)
                except Exception as exc:  # noqa: BLE001 - counted, the journey goes on
                    key = str(exc).split(":")[0][:40]
                    errors[key] = errors.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(customer(i) for i in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)

    figures: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "seconds": round(elapsed, 1),
        "journeys": len(journeys),
        "journeys_per_s": round(len(journeys) / elapsed, 2),
        "errors": errors,
    }
    if journeys:
        figures["journey_p50_ms"] = round(statistics.median(journeys), 1)
        figures["journey_p95_ms"] = pct(journeys, 95)
    for name, values in timings.items():
        if values:
            figures[name] = {"per_s": round(len(values) / elapsed, 2),
                             "p50_ms": round(statistics.median(values), 1),
                             "p95_ms": pct(values, 95)}
    return figures
