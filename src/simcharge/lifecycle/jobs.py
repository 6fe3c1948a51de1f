"""The worker's lifecycle jobs: the sweep, and the warnings judged again as they go out."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.kit.clock import utcnow
from simcharge.lifecycle.forecast import outlook
from simcharge.lifecycle.service import DAY, WARNING_JOB, Policy, sweep
from simcharge.lines.models import Line, LineState
from simcharge.notifications.jobs import LINE_FACTS, deliver
from simcharge.worker.registry import JobContext, PermanentJobError, every, job

log = structlog.get_logger("simcharge.lifecycle")

SWEEP_EVERY = timedelta(minutes=10)

# The date a warning names (its param), and the template that says it to a line in each state in
# which that change is still to come: a line in grace cannot be used, so it is told to top up.
_SAYS: dict[tuple[str, LineState], str] = {
    ("validity_end", LineState.active): "line.validity_ending",
    ("freeze_on", LineState.active): "line.freeze_warning",
    ("freeze_on", LineState.grace): "line.grace_ending",
    ("terminate_on", LineState.frozen): "line.termination_warning",
}
_DATES = ("validity_end", "freeze_on", "terminate_on")


@every("lifecycle.sweep", SWEEP_EVERY)
async def lifecycle_sweep(ctx: JobContext, _payload: dict[str, Any]) -> None:
    """Expire buckets, move lines along their lifecycle, warn before each change."""
    await sweep(ctx.db, Policy.of(ctx.settings))


@job(WARNING_JOB)
async def send_warning(ctx: JobContext, payload: dict[str, Any]) -> None:
    """A warning judged again as it goes out (`warning_to_send`): delivered if still true, as
    any notification (`notifications.jobs.deliver`: the portal notice and one job per channel,
    their ids derived from this job, so a rerun sends nothing twice), else dropped."""
    policy, now = Policy.of(ctx.settings), utcnow()
    found = await ctx.db.run(lambda s: warning_to_send(s, payload, policy, now))
    if found is None:
        log.info(
            "lifecycle.stale_warning_skipped",
            job_id=str(ctx.job.id),
            template=payload.get("template"),
            line_id=payload.get("line_id"),
        )
        return
    await deliver(ctx, found)


async def warning_to_send(
    session: AsyncSession, payload: dict[str, Any], policy: Policy, now: datetime
) -> dict[str, Any] | None:
    """The queued warning `payload` as it goes out at `now`, or None if it is no longer true.

    True: the date it names is still the line's date for that change, by the policy in force
    for the state the line is in now (`forecast.outlook`, what the portal says), and still to
    come — whatever state the line was in when the warning was queued. (An active line warned
    of its inactivity freeze that entered grace meanwhile is frozen on the same date when its
    inactivity runs out before the end of grace; a top-up or a use moves the date, and so does
    an end of grace that comes sooner.) It then goes out in the words for that state, with the
    days left counted from now, built on the line as it is now (`about`): should the line
    change again before delivery, delivery drops it."""
    params = dict(payload.get("params") or {})
    dates = [p for p in _DATES if p in params]
    if not payload.get("line_id") or len(dates) != 1:
        raise PermanentJobError("a lifecycle warning without its line or its date")
    param = dates[0]
    try:
        line_id = uuid.UUID(str(payload["line_id"]))
        named = datetime.fromisoformat(str(params[param]))
    except ValueError as exc:
        raise PermanentJobError(f"a lifecycle warning with a bad line or date: {exc}") from exc
    line = await session.get(Line, line_id)
    if line is None:
        return None
    template = _SAYS.get((param, LineState(line.state)))
    if template is None or named <= now or _date_of(line, param, policy) != named:
        return None
    params["days_left"] = math.ceil((named - now) / DAY)
    return {**payload, "template": template, "params": params, "about": _facts(line)}


def _date_of(line: Line, param: str, policy: Policy) -> datetime | None:
    o = outlook(line, policy)
    return {"validity_end": o.grace_at, "freeze_on": o.freeze_at, "terminate_on": o.terminate_at}[
        param
    ]


def _facts(line: Line) -> dict[str, Any]:
    """The line as it is, in the terms delivery compares it with (`about`)."""
    facts = {fact: getattr(line, fact) for fact in LINE_FACTS}
    return {f: v.isoformat() if isinstance(v, datetime) else v for f, v in facts.items()}
