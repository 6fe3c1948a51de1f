"""`portal_dashboard`: the user center (`GET /account`) of a signed-in customer, rendered by
simcharge served by uvicorn — session check, lines, balances with their buckets, the latest
ledger activity and notices — for 32 concurrent customers. Target: p95 < 50 ms.

The customers look like real ones, so that the page does all of its work: one or two lines
each, money and three buckets, a few weeks of usage (calls, data, SMS) and a top-up, five
notices of which some unread; one line in five is in grace, one in seven ends within a week,
one in eleven has not been used for nearly the inactivity period (all three show when the
line would be frozen), one in thirteen is frozen (when it would be closed)."""

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
from simcharge.kit.ids import derived_id, uuid7
from simcharge.ledger import chart
from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import NewLine, UnitGrant, credit_wallet, grant_units, open_line

if TYPE_CHECKING:
    from bench.entries import BenchContext

CUSTOMERS = 500
CONCURRENCY = 32
WEB_PROCESSES = 2
"""As the image serves the site (`simcharge serve --workers 2`)."""
SECRET_KEY = "bench-secret-key-bench-secret-key-bench-secret-key"  # noqa: S105 - made up
POLICY = SessionPolicy(idle=timedelta(hours=12), absolute=timedelta(hours=12))
USAGE_PER_LINE = 24
"""Calls, data sessions and SMS of the last few weeks, each a ledger transfer."""
DAY = timedelta(days=1)


def _lifecycle(line: Line, i: int, j: int) -> None:
    """Where in its life a line is (see the module's docstring)."""
    now = utcnow()
    n = 2 * i + j
    line.last_activity_at = now - timedelta(hours=n % 48)
    line.validity_end = now + (20 + n % 300) * DAY
    if n % 5 == 0:
        line.state = LineState.grace.value
        line.validity_end = line.state_changed_at = now - (n % 20 + 1) * DAY
    elif n % 13 == 0:
        line.state = LineState.frozen.value
        line.validity_end = now - 60 * DAY
        line.state_changed_at = now - (n % 90 + 1) * DAY
    elif n % 7 == 0:
        line.validity_end = now + (n % 7 + 1) * DAY
    elif n % 11 == 0:
        line.last_activity_at = now - (170 + n % 9) * DAY


async def _usage(s: AsyncSession, line: Line, buckets: list[object], rng: random.Random) -> None:
    """A few weeks of usage taken from the line's buckets, as charging posts it."""
    now = utcnow()
    shard = chart.shard_of(line.id)
    # Within what the buckets hold: 8 records each, at most 4,800 s of 6,000, 320 MB of 2 GB,
    # 8 of 50 SMS.
    units = {"VOICE_S": (60, 600), "DATA_B": (1024**2, 40 * 1024**2), "SMS": (1, 1)}
    sinks = {unit: chart.consumption(unit, shard) for unit in units}
    await ensure_accounts(s, list(sinks.values()))
    transfers = []
    for k in range(USAGE_PER_LINE):
        bucket_id, unit = buckets[k % len(buckets)]  # type: ignore[misc]
        low, high = units[unit]
        transfers.append(NewTransfer(
            id=derived_id("bench-usage", str(line.id), k), amount=rng.randint(low, high),
            unit=unit, debit_account_id=bucket_id, credit_account_id=sinks[unit].id,
            code="usage", reference=f"usage:{uuid7()}"))
    await post_transfers(s, transfers, now=now - timedelta(minutes=rng.randint(1, 20_000)))


async def _seed(s: AsyncSession) -> list[str]:
    """The customers, their lines, balances, usage and notices, and a signed-in session each;
    returns the session tokens."""
    from simcharge.accounts.models import Account
    from simcharge.notifications.models import Notice

    await load_catalog(s, read_catalog_file(DEMO_CATALOG))
    rng = random.Random(7)
    tokens = []
    now = utcnow()
    for i in range(CUSTOMERS):
        account = Account(id=uuid7(), username=f"bench-portal-{i}", password_hash="!",  # noqa: S106
                          language=("en", "zh-Hans", "zh-Hant", "fil", "es")[i % 5])
        s.add(account)
        await s.flush()
        lines = []
        for j in range(1 + i % 2):
            line = await open_line(
                s, NewLine(msisdn=f"+1303{5_000_000 + 2 * i + j:07d}",
                           iccid=f"89019991{i:06d}{j:05d}", currency="USD"),
                account_id=account.id, state=LineState.active,
            )
            await credit_wallet(s, line, 1000 + i, source=f"bench:{i}:{j}", code="adjustment")
            await credit_wallet(s, line, 500, source=f"bench-topup:{i}:{j}", code="topup")
            ids = await grant_units(s, line, [UnitGrant("VOICE_S", 6000, 30, ()),
                                              UnitGrant("DATA_B", 2 * 1024**3, 30, ()),
                                              UnitGrant("SMS", 50, 30, ())],
                                    source=f"bench:{i}:{j}")
            await _usage(s, line, list(zip(ids, ("VOICE_S", "DATA_B", "SMS"), strict=True)), rng)
            _lifecycle(line, i, j)
            lines.append(line)
        for k, (template, params) in enumerate((
            ("account.welcome", {"username": account.username}),
            ("order.fulfilled", {"msisdn": lines[0].msisdn, "plan": {"en": "Traveller"},
                                 "total": 2000, "currency": "USD", "receipt": f"R{i:06d}"}),
            ("security.new_device", {"device": "Firefox", "ip": "203.0.113.9",
                                     "time": now.isoformat()}),
            ("balance.low", {"msisdn": lines[-1].msisdn, "balance": 125, "currency": "USD"}),
            ("line.freeze_warning", {"msisdn": lines[0].msisdn, "days_left": 7,
                                     "freeze_on": (now + 7 * DAY).isoformat()}),
        )):
            s.add(Notice(account_id=account.id, template=template, params=params,
                         line_id=lines[0].id if template.startswith("line.") else None,
                         created_at=now - timedelta(hours=5 - k),
                         read_at=now if k < 2 else None))
        issued = await open_session(s, SECRET_KEY, account_id=account.id,
                                    client=ClientInfo(ip="127.0.0.1", user_agent="bench"),
                                    policy=POLICY, now=now)
        tokens.append(issued.token)
    return tokens


async def portal_dashboard(ctx: BenchContext) -> Operation:
    tokens = await ctx.database().run(_seed)
    base = await ctx.serve("simcharge.app:serve_app", factory=True, workers=WEB_PROCESSES, env={
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_DATABASE_URL": ctx.sqlalchemy_url(),
        "SIMCHARGE_DB_POOL_SIZE": str(CONCURRENCY // WEB_PROCESSES),
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
