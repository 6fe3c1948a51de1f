"""`portal_dashboard`: the user center (`GET /account`) of a signed-in customer, rendered by
simcharge served by uvicorn — session check, lines, balances with their buckets, the latest
ledger activity and notices — for 32 concurrent customers. Target: p95 < 50 ms."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from bench.driver import Operation
from simcharge.auth.client import ClientInfo
from simcharge.auth.sessions import SessionPolicy, open_session
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, read_catalog_file
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.lines.models import LineState
from simcharge.lines.service import NewLine, UnitGrant, credit_wallet, grant_units, open_line

if TYPE_CHECKING:
    from bench.entries import BenchContext

CUSTOMERS = 500
CONCURRENCY = 32
SECRET_KEY = "bench-secret-key-bench-secret-key-bench-secret-key"  # noqa: S105 - made up
POLICY = SessionPolicy(idle=timedelta(hours=12), absolute=timedelta(hours=12))


async def _seed(s: AsyncSession) -> list[str]:
    """Customers with one or two lines each, money and three buckets, and a signed-in session;
    returns the session tokens."""
    from simcharge.accounts.models import Account

    await load_catalog(s, read_catalog_file(DEMO_CATALOG))
    tokens = []
    now = utcnow()
    for i in range(CUSTOMERS):
        account = Account(id=uuid7(), username=f"bench-portal-{i}", password_hash="!",  # noqa: S106
                          language=("en", "zh-Hans", "zh-Hant", "fil", "es")[i % 5])
        s.add(account)
        await s.flush()
        for j in range(1 + i % 2):
            line = await open_line(
                s, NewLine(msisdn=f"+1303{5_000_000 + 2 * i + j:07d}",
                           iccid=f"89019991{i:06d}{j:05d}", currency="USD"),
                account_id=account.id, state=LineState.active,
            )
            line.validity_end = now.replace(year=now.year + 1)
            await credit_wallet(s, line, 1000 + i, source=f"bench:{i}:{j}", code="adjustment")
            await grant_units(s, line, [UnitGrant("VOICE_S", 6000, 30, ()),
                                        UnitGrant("DATA_B", 2 * 1024**3, 30, ()),
                                        UnitGrant("SMS", 50, 30, ())], source=f"bench:{i}:{j}")
        issued = await open_session(s, SECRET_KEY, account_id=account.id,
                                    client=ClientInfo(ip="127.0.0.1", user_agent="bench"),
                                    policy=POLICY, now=now)
        tokens.append(issued.token)
    return tokens


async def portal_dashboard(ctx: BenchContext) -> Operation:
    tokens = await ctx.database().run(_seed)
    base = await ctx.serve("simcharge.app:create_app", factory=True, env={
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_DATABASE_URL": ctx.sqlalchemy_url(),
        "SIMCHARGE_DB_POOL_SIZE": str(CONCURRENCY),
        "SIMCHARGE_WORKER_IN_PROCESS": "false",
        "SIMCHARGE_LOG_LEVEL": "warning",
        "SIMCHARGE_SECRET_KEY": SECRET_KEY,
        "SIMCHARGE_SESSION_IDLE_MINUTES": "720",
    })
    client = ctx.client(base, connections=CONCURRENCY)

    async def op(rng: random.Random) -> None:
        token = rng.choice(tokens)
        r = await client.get("/account", headers={"cookie": f"sc_session={token}"})
        if r.status_code != 200 or 'data-testid="wallet"' not in r.text:
            raise RuntimeError(f"/account answered {r.status_code}: {r.text[:200]}")

    return op
