"""Per-address rate limits, in memory and in Redis (shared by every process)."""

from __future__ import annotations

import os
import uuid

import pytest

from simcharge.auth.throttle import LIMITS, RateLimits
from simcharge.errors import TooManyAttempts

REDIS_URL = os.environ.get("SIMCHARGE_TEST_REDIS_URL")


async def exhaust(limits: RateLimits, who: str) -> TooManyAttempts:
    allowed = LIMITS["register"][0].amount
    for _ in range(allowed):
        await limits.hit("register", who)
    with pytest.raises(TooManyAttempts) as info:
        await limits.hit("register", who)
    return info.value


async def test_memory_limits() -> None:
    limits = RateLimits()
    refused = await exhaust(limits, "198.51.100.7")
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    await limits.hit("register", "198.51.100.8")  # another address is unaffected
    await limits.hit("register", None)  # no address known: not counted


@pytest.mark.skipif(not REDIS_URL, reason="SIMCHARGE_TEST_REDIS_URL is not set")
async def test_redis_limits_are_shared_between_processes() -> None:
    assert REDIS_URL
    who = f"203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    first, second = RateLimits(REDIS_URL), RateLimits(REDIS_URL)  # two processes' views
    allowed = LIMITS["register"][0].amount
    for i in range(allowed):
        await (first if i % 2 else second).hit("register", who)
    with pytest.raises(TooManyAttempts):
        await first.hit("register", who)
    with pytest.raises(TooManyAttempts):
        await second.hit("register", who)
