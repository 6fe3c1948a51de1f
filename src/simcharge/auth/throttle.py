"""Anti-automation.

Per login name (known or unknown alike, so that the answers cannot tell them apart), kept in
the database so every process agrees: after 5 consecutive failures, each further attempt must
wait 2, 4, 8 … seconds (at most 15 minutes); and never more than 100 failures an hour.

Per client address, with the `limits` library (in memory, or Redis when
`SIMCHARGE_REDIS_URL` is set so that all processes share the counts): sign-ins, code sends,
registrations."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.models import LoginThrottle
from simcharge.db import table_of, upsert_insert
from simcharge.errors import TooManyAttempts
from simcharge.kit.crypto import keyed_hash

FREE_FAILURES = 5
MAX_DELAY = timedelta(minutes=15)
HOURLY_CAP = 100
HOUR = timedelta(hours=1)

LIMITS: dict[str, list[RateLimitItem]] = {
    "login": parse_many("30/minute;300/hour"),
    "register": parse_many("10/hour"),
    "codes": parse_many("10/minute;60/hour"),
    "verify": parse_many("30/minute"),
}


def login_key(secret: str, normalized_login: str) -> str:
    return keyed_hash(secret, "login-throttle", normalized_login)


def delay_after(failures: int) -> timedelta:
    if failures < FREE_FAILURES:
        return timedelta(0)
    exponent = min(failures - FREE_FAILURES + 1, 20)  # 2**20 s is far past the cap already
    return min(MAX_DELAY, timedelta(seconds=2**exponent))


async def load(session: AsyncSession, key: str, now: datetime) -> LoginThrottle:
    """The login's throttle row, locked; created first if missing (two sign-ins at once for one
    login both find it: the insert does nothing when the other got there first)."""
    row = await session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        await session.execute(
            upsert_insert(session, table_of(LoginThrottle))
            .values(
                key_hash=key,
                failures=0,
                locked_until=None,
                updated_at=now,
                window_start=now,
                window_failures=0,
            )
            .on_conflict_do_nothing(index_elements=["key_hash"])
        )
        row = await session.get(
            LoginThrottle, key, with_for_update=True, populate_existing=True
        )
        assert row is not None
    return row


def refusal(row: LoginThrottle, now: datetime) -> TooManyAttempts | None:
    """Why this login name may not try now, if it may not."""
    if row.locked_until is not None and row.locked_until > now:
        return TooManyAttempts(math.ceil((row.locked_until - now).total_seconds()))
    if (
        row.window_start is not None
        and now - row.window_start < HOUR
        and row.window_failures >= HOURLY_CAP
    ):
        return TooManyAttempts(math.ceil((row.window_start + HOUR - now).total_seconds()))
    return None


def count_failure(row: LoginThrottle, now: datetime) -> None:
    row.failures += 1
    if row.window_start is None or now - row.window_start >= HOUR:
        row.window_start, row.window_failures = now, 0
    row.window_failures += 1
    wait = delay_after(row.failures)
    row.locked_until = now + wait if wait else None
    row.updated_at = now


def clear(row: LoginThrottle, now: datetime) -> None:
    row.failures = 0
    row.locked_until = None
    row.updated_at = now


class RateLimits:
    """Counts per (action, client address) in memory or Redis."""

    def __init__(self, redis_url: str | None = None) -> None:
        storage: Storage = RedisStorage("async+" + redis_url) if redis_url else MemoryStorage()
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)

    async def hit(self, action: str, who: str | None) -> None:
        """Count one `action` by `who`; raise `TooManyAttempts` when over any of its limits."""
        if not who:
            return
        for item in LIMITS[action]:
            if not await self.limiter.hit(item, action, who):
                stats = await self.limiter.get_window_stats(item, action, who)
                raise TooManyAttempts(math.ceil(stats.reset_time - time.time()))

    async def reset(self) -> None:
        await self.storage.reset()
