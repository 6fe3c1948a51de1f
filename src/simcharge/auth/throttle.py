"""Anti-automation.

In the database, so every process agrees, one row per login name (known or unknown alike, so
that the answers cannot tell them apart) and one per account (whichever of its names is used,
and wherever its password or second factor is asked again): after 5 consecutive failures, each
further attempt must wait 2, 4, 8 … seconds (at most 15 minutes); and never more than 100
failures an hour.

With the `limits` library (in memory, or Redis when `SIMCHARGE_REDIS_URL` is set so that all
processes share the counts): per client address (an IPv6 address by its /64: `address_key`),
sign-ins, registrations, code sends, code checks and re-entered passwords; per account, code
sends and code checks (per purpose) and re-entered passwords.

A Redis that cannot count fails closed: the attempt is refused with `503 service-unavailable`
(ASVS 2.2.1: a limit that is not counted must not let guesses through), within
`REDIS_TIMEOUT_SECONDS` even when Redis accepts connections and never answers, or never
accepts them."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import coredis.exceptions
import structlog
from coredis.retry import ConstantRetryPolicy
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.models import LoginThrottle
from simcharge.db import table_of, upsert_insert
from simcharge.errors import ServiceUnavailable, TooManyAttempts
from simcharge.kit.crypto import keyed_hash

log = structlog.get_logger("simcharge.auth")

FREE_FAILURES = 5
MAX_DELAY = timedelta(minutes=15)
HOURLY_CAP = 100
HOUR = timedelta(hours=1)

REDIS_TIMEOUT_SECONDS = 1.0
"""The longest Redis may take to accept a connection, and then to answer one command
(coredis waits for ever by default: a hung Redis would hold every sign-in, and a re-entered
password's account row lock, as long as it hangs); also the longest one `RateLimits.hit` may
take in all (coredis reports a connect timeout as a dropped connection and tries again)."""
REDIS_RETRY_AFTER = "5"
"""`Retry-After` of the 503 answered while Redis cannot count."""

LIMITS: dict[str, list[RateLimitItem]] = {
    # per client address
    "login": parse_many("30/minute;300/hour"),
    "register": parse_many("10/hour"),
    "codes": parse_many("10/minute;60/hour"),
    "verify": parse_many("30/minute"),
    "reauth": parse_many("10/minute;60/hour"),
    # per account (and code purpose)
    "account-code-sends": parse_many("5/hour;20/day"),
    "account-code-checks": parse_many("10/hour;30/day"),
    "account-reauth": parse_many("10/minute;30/hour"),
    "account-export": parse_many("5/hour;20/day"),
    # new tickets and answers to them, together (`tickets.service.RATE`)
    "account-tickets": parse_many("10/minute;60/hour"),
}
PER_ADDRESS = frozenset({"login", "register", "codes", "verify", "reauth"})
"""The actions counted per client address (`address_key`)."""


def address_key(ip: str) -> str:
    """Who a client address is for the per-address limits: an IPv4 address itself, an IPv6
    address its /64 — a home, a mobile phone or a cloud host is given a whole /64 and may send
    from any of its 2^64 addresses. The full address stays in logs and security events."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


def login_key(secret: str, normalized_login: str) -> str:
    return keyed_hash(secret, "login-throttle", normalized_login)


def name_key(secret: str, kind: str, value: str) -> str:
    """The row of a login name (`username`, `email` or `phone`, normalised)."""
    return login_key(secret, f"{kind}:{value}")


def account_key(secret: str, account_id: uuid.UUID) -> str:
    """The row of an account, whichever name it is reached by."""
    return login_key(secret, f"account:{account_id}")


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


async def clear_keys(session: AsyncSession, keys: Sequence[str], now: datetime) -> None:
    """Forget the consecutive failures of these rows (those that exist; none is created). The
    hour's count stays: the cap is on failures, whatever succeeded in between."""
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key_hash.in_(list(keys)))
        .values(failures=0, locked_until=None, updated_at=now)
    )


class RateLimits:
    """Counts per (action, who) in memory or Redis; `who` is a client address, or an account
    (with a code purpose) for the `account-…` actions."""

    def __init__(self, redis_url: str | None = None) -> None:
        self.redis = _redacted(redis_url) if redis_url else None
        """Where the counts are shared, without credentials (for logs); None: in memory."""
        storage: Storage
        if redis_url:
            options: dict[str, Any] = {
                "connect_timeout": REDIS_TIMEOUT_SECONDS,
                "stream_timeout": REDIS_TIMEOUT_SECONDS,
                # A pooled connection that Redis dropped (a restart) is worth one more try; a
                # timeout is not (it would double the wait).
                "retry_policy": ConstantRetryPolicy(
                    (coredis.exceptions.ConnectionError,), retries=1, delay=0.01
                ),
            }
            storage = RedisStorage("async+" + redis_url, wrap_exceptions=True, **options)
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self.deadline = REDIS_TIMEOUT_SECONDS if redis_url else None

    async def hit(self, action: str, who: str | None) -> None:
        """Count one `action` by `who` (a client address for the `PER_ADDRESS` actions, reduced
        by `address_key`); raise `TooManyAttempts` when over any of its limits, and
        `ServiceUnavailable` when the counts cannot be reached within `REDIS_TIMEOUT_SECONDS`
        in all (refused, not let through)."""
        if not who:
            return
        if action in PER_ADDRESS:
            who = address_key(who)
        try:
            async with asyncio.timeout(self.deadline):
                for item in LIMITS[action]:
                    if not await self.limiter.hit(item, action, who):
                        stats = await self.limiter.get_window_stats(item, action, who)
                        raise TooManyAttempts(math.ceil(stats.reset_time - time.time()))
        except (StorageError, TimeoutError) as exc:
            cause = exc.storage_error if isinstance(exc, StorageError) else exc
            log.warning(
                "ratelimit.storage_unreachable",
                action=action,
                redis=self.redis,
                error=type(cause).__name__,
            )
            raise ServiceUnavailable(headers={"Retry-After": REDIS_RETRY_AFTER}) from None

    async def readiness(self) -> Literal["ok", "unreachable"] | None:
        """For `/readyz`: "ok" while Redis answers a PING (connecting, then the PING, each within
        `REDIS_TIMEOUT_SECONDS`), "unreachable" (logged) when it does not; None when the counts
        are in memory (nothing to wait for)."""
        if self.redis is None:
            return None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS * 2):
                answered = await self.storage.check()
        except TimeoutError:
            answered = False
        if answered:
            return "ok"
        log.warning("readyz.redis_unreachable", redis=self.redis)
        return "unreachable"

    async def reset(self) -> None:
        await self.storage.reset()


def _redacted(url: str) -> str:
    """A Redis URL without its user and password: `redis://host:port/db`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
