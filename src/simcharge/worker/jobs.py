"""Every job simcharge knows, registered by importing the modules that define them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import simcharge.accounts.jobs
import simcharge.charging.jobs
import simcharge.lifecycle.jobs
import simcharge.notifications.jobs
import simcharge.payments.jobs  # noqa: F401 - reconciliation, refunds, receipts, sandbox webhooks
from simcharge.ledger.service import expire_pending_transfers
from simcharge.worker import service
from simcharge.worker.registry import JobContext, every


@every("ledger.expire_pending", timedelta(seconds=30))
async def expire_pending(ctx: JobContext, _payload: dict[str, Any]) -> None:
    """Release reservations whose timeout has passed, a batch per transaction."""
    while await ctx.db.run(expire_pending_transfers) > 0:
        pass


@every("outbox.prune", timedelta(hours=1))
async def prune_outbox(ctx: JobContext, _payload: dict[str, Any]) -> None:
    """Forget jobs finished more than a week ago."""
    await ctx.db.run(lambda s: service.prune_finished(s, older_than=timedelta(days=7)))
