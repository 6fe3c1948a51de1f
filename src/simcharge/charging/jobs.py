"""Charging's worker jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from simcharge.charging.nchf import expire_abandoned_sessions
from simcharge.worker.registry import JobContext, every


@every("charging.expire_sessions", timedelta(seconds=30))
async def expire_sessions(ctx: JobContext, _payload: dict[str, Any]) -> None:
    """Release the reservations of abandoned charging sessions, a batch per transaction."""
    while await ctx.db.run(lambda s: expire_abandoned_sessions(s, ctx.settings)) > 0:
        pass
