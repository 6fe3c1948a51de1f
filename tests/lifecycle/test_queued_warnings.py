"""A warning waits in the queue while the line moves on: what the customer gets is what is still
true when it goes out — the date it names still the line's date for that change, by the policy
in force for the state the line is in then."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.lifecycle.service import Policy, on_topup, sweep
from simcharge.lines.models import Line, LineState
from simcharge.notifications.models import Notice
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.runner import Worker
from tests.conftest import SmtpInbox
from tests.lifecycle.test_lifecycle import DAY, MINUTE, T, new_line, policy, reload

HOUR = timedelta(hours=1)
# Idle since this, a line is frozen for inactivity at T + 6.5 days (180 days of inactivity): its
# 7-day warning goes out at the sweep at T.
IDLE_SINCE = T - 173 * DAY - 12 * HOUR
FREEZE = IDLE_SINCE + 180 * DAY


async def notices_of(db: Database, line: Line) -> list[tuple[str, dict[str, Any]]]:
    async with db.read() as s:
        rows = (await s.execute(
            select(Notice.template, Notice.params).where(Notice.line_id == line.id)
            .order_by(Notice.created_at, Notice.id))).all()
    return [(template, dict(params)) for template, params in rows]


async def sweep_at(db: Database, p: Policy, at: datetime) -> None:
    """The sweep at `at`, the clock there too (the jobs it writes are due from then)."""
    clock.freeze(at)
    await sweep(db, p, now=at)


async def drain(db: Database, settings: Settings) -> None:
    worker = Worker(db, settings, concurrency=2)
    try:
        await worker.drain()
    finally:
        await worker.close()


async def test_a_freeze_warning_still_true_when_the_line_entered_grace_is_sent(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """Queued for an active line, the 7-day freeze warning waits; meanwhile the validity ends
    and the line enters grace. Its freeze date is still the same (inactivity runs out before
    the end of grace): the warning goes out, in the words for a line in grace (top it up: it
    cannot be used), once — and the 1-day warning still follows."""
    p = policy(settings)
    await sweep_at(db, p, T - DAY)  # the passes start
    line = await new_line(db, validity_end=T + 2 * HOUR, last_activity_at=IDLE_SINCE)
    await sweep_at(db, p, T)  # the 7-day freeze warning is queued (and the validity's 1-day)
    await sweep_at(db, p, T + 3 * HOUR)  # grace, before a worker took the warning
    assert (await reload(db, line)).state == "grace"
    clock.freeze(T + 3 * HOUR + MINUTE)
    await drain(db, settings)
    sent = sorted(await notices_of(db, line), key=lambda n: n[0])  # both written at once
    assert [t for t, _ in sent] == ["line.entered_grace", "line.grace_ending"]
    (_, entered), (_, warning) = sent
    assert entered["grace_ends"] == FREEZE.isoformat()
    assert (warning["freeze_on"], warning["days_left"]) == (FREEZE.isoformat(), 7)
    mails = [str(m["Subject"]) for m in inbox.messages if line.msisdn in str(m["Subject"])]
    assert len(mails) == 2, mails
    # The passes that look at lines in grace do not send it again …
    await sweep_at(db, p, T + 4 * HOUR)
    clock.freeze(T + 4 * HOUR + MINUTE)
    await drain(db, settings)
    assert len(await notices_of(db, line)) == 2
    # … and the 1-day warning comes as it should.
    at = FREEZE - DAY + MINUTE
    await sweep_at(db, p, at)
    clock.freeze(at + MINUTE)
    await drain(db, settings)
    warnings = [(n["days_left"], n["freeze_on"]) for t, n in await notices_of(db, line)
                if t == "line.grace_ending"]
    assert warnings == [(7, FREEZE.isoformat()), (1, FREEZE.isoformat())]
    async with db.read() as s:
        statuses = (await s.execute(select(OutboxJob.status))).scalars().all()
    assert set(statuses) <= {JobStatus.done.value}


async def test_a_freeze_warning_no_longer_true_is_not_sent(
    db: Database, settings: Settings
) -> None:
    """What the warning says must still hold when it goes out: not if the line was topped up or
    used (a new inactivity period), frozen already, or — by the policy in force — will be frozen
    sooner in grace than the date it names."""
    p = policy(settings)
    await sweep_at(db, p, T - DAY)
    untouched = await new_line(db, validity_end=T + 100 * DAY, last_activity_at=IDLE_SINCE)
    used = await new_line(db, validity_end=T + 100 * DAY, last_activity_at=IDLE_SINCE)
    topped_up_in_grace = await new_line(db, validity_end=T + 2 * HOUR,
                                        last_activity_at=IDLE_SINCE)
    await sweep_at(db, p, T)
    await sweep_at(db, p, T + 3 * HOUR)
    assert (await reload(db, topped_up_in_grace)).state == "grace"

    async def meanwhile(s: AsyncSession) -> None:
        line = await s.get(Line, used.id)
        assert line is not None
        line.last_activity_at = T + 3 * HOUR  # a call
        line = await s.get(Line, topped_up_in_grace.id)
        assert line is not None
        line.validity_end = T + 33 * DAY  # a plan's validity
        on_topup(s, line, now=T + 3 * HOUR, actor="order:x", by_owner=True, policy=p)

    await db.run(meanwhile)
    clock.freeze(T + 3 * HOUR + MINUTE)
    await drain(db, settings)
    assert [t for t, _ in await notices_of(db, untouched)] == ["line.freeze_warning"]
    assert await notices_of(db, used) == []
    assert [t for t, _ in await notices_of(db, topped_up_in_grace)] == ["line.entered_grace"]

    # Frozen before the warning went out (the workers were behind): nothing.
    frozen = await new_line(db, validity_end=T + 100 * DAY, last_activity_at=IDLE_SINCE + DAY)
    await sweep_at(db, p, FREEZE + MINUTE)  # its 1-day warning
    await sweep_at(db, p, FREEZE + DAY + MINUTE)
    assert (await reload(db, frozen)).state == "frozen"
    clock.freeze(FREEZE + DAY + 2 * MINUTE)
    await drain(db, settings)
    assert [t for t, _ in await notices_of(db, frozen)] == ["line.frozen"]


async def test_a_freeze_warning_the_end_of_grace_overtakes_is_not_sent(
    db: Database, settings: Settings
) -> None:
    """With a grace period shorter than what is left of the inactivity period, a line entering
    grace is frozen at the end of grace, sooner than the queued warning says: the warning is
    dropped, and the customer hears the right date ("entered grace")."""
    short = settings.model_copy(update={"lifecycle_grace_days": 3})
    p = policy(short)
    await sweep_at(db, p, T - DAY)
    line = await new_line(db, validity_end=T + 2 * HOUR, last_activity_at=IDLE_SINCE)
    await sweep_at(db, p, T)
    await sweep_at(db, p, T + 3 * HOUR)
    clock.freeze(T + 3 * HOUR + MINUTE)
    await drain(db, short)
    sent = await notices_of(db, line)
    assert [t for t, _ in sent] == ["line.entered_grace"]
    assert sent[0][1]["grace_ends"] == (T + 3 * HOUR + 3 * DAY).isoformat()


async def test_the_warning_goes_out_with_the_days_left_when_it_is_sent(
    db: Database, settings: Settings, deliver: Callable[[], Awaitable[int]]
) -> None:
    """A warning that waited (the workers were behind) counts the days from when it goes out."""
    p = policy(settings)
    await sweep_at(db, p, T - DAY)
    line = await new_line(db, validity_end=T + 100 * DAY, last_activity_at=IDLE_SINCE)
    await sweep_at(db, p, T)
    clock.freeze(T + 2 * DAY)
    await deliver()
    [(template, params)] = await notices_of(db, line)
    assert (template, params["days_left"], params["freeze_on"]) == (
        "line.freeze_warning", 5, FREEZE.isoformat())
    assert (await reload(db, line)).state == LineState.active
