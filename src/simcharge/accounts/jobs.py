"""The accounts' worker jobs: the daily retention sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from simcharge.accounts.retention import sweep
from simcharge.worker.registry import JobContext, every

RETENTION_EVERY = timedelta(days=1)


@every("privacy.retention", RETENTION_EVERY)
async def retention_sweep(ctx: JobContext, _payload: dict[str, Any]) -> None:
    """Delete or anonymise what the retention settings have made due (`accounts.retention`),
    a batch per transaction: a sweep cut short (a timeout, a restart) has kept what it did, and
    the next one finishes."""
    await sweep(ctx.db, ctx.settings)
