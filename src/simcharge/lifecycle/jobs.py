"""The worker's lifecycle sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from simcharge.lifecycle.service import Policy, sweep
from simcharge.worker.registry import JobContext, every

SWEEP_EVERY = timedelta(minutes=10)


@every("lifecycle.sweep", SWEEP_EVERY)
async def lifecycle_sweep(ctx: JobContext, _payload: dict[str, Any]) -> None:
    """Expire buckets, move lines along their lifecycle, warn before each change."""
    await sweep(ctx.db, Policy.of(ctx.settings))
