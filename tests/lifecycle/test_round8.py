"""Eighth review round: the lifecycle sweep's counts and the wording of its notices.

- `test_concurrent_sweeps_count_each_expired_bucket_and_forfeit_once`: two (or more) sweeps
  running at once both read the same expired buckets, and each created the same transfer (same
  derived id): the first created it, the others got `exists` — and counted it too, as the ledger
  reports `exists` as success. The ledger was right (one transfer), but `lifecycle.swept`'s
  `expired_buckets` / `forfeited` added up to more than was done. Each sweep now counts only the
  transfers it created itself (`ok`, not `exists`).
- `test_the_frozen_notice_says_what_brings_the_line_back_under_each_policy`: `line.frozen`
  said "Top it up or contact customer service" whatever `LIFECYCLE_FROZEN_REACTIVATION` was;
  under `owner_topup` a top-up paid by someone else (a gift) is credited but leaves the line
  frozen, so the owner was told a way out that does not work when a friend tops up. The sweep
  now hands the policy to the notice (`reactivation`), which says a top-up from the owner's
  account under `owner_topup` (and only customer service when it was queued without one); the
  notices before and after it (`validity_ending`, `freeze_warning`, `entered_grace`,
  `grace_ending`, `termination_warning`) are checked under the three policies too.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.ledger.models import LedgerTransfer
from simcharge.lifecycle.service import Policy, sweep
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from tests.factories import create_account, create_line
from tests.orders.helpers import assert_ledger_balanced

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def policy(settings: Settings, **override: Any) -> Policy:
    return Policy.of(settings.model_copy(update=override))


async def _line(db: Database, *, state: LineState, state_changed_at: datetime) -> uuid.UUID:
    async def run(s: AsyncSession) -> uuid.UUID:
        n = uuid.uuid4().hex[:10]
        account = await create_account(s, username=f"r8{n}", email=f"r8{n}@example.com")
        line = await create_line(s, account_id=account.id, state=state)
        line.validity_end = T + 60 * DAY if state is LineState.active else T - 400 * DAY
        line.last_activity_at = T - DAY
        line.state_changed_at = state_changed_at
        await s.flush()
        return line.id

    return await db.run(run)


@pytest.mark.postgres_only
async def test_concurrent_sweeps_count_each_expired_bucket_and_forfeit_once(
    fresh_db: Database, settings: Settings
) -> None:
    db = fresh_db
    for _ in range(12):
        line_id = await _line(db, state=LineState.active, state_changed_at=T - 2 * DAY)

        async def units(s: AsyncSession, line_id: uuid.UUID = line_id) -> None:
            line = await s.get(Line, line_id)
            assert line is not None
            await grant_units(
                s, line, [UnitGrant("DATA_B", 1000, 1), UnitGrant("SMS", 10, 1)],
                source=f"test:{line_id}", now=T - 2 * DAY,
            )

        await db.run(units)
    for _ in range(12):
        line_id = await _line(db, state=LineState.frozen, state_changed_at=T - 366 * DAY)

        async def money(s: AsyncSession, line_id: uuid.UUID = line_id) -> None:
            line = await s.get(Line, line_id)
            assert line is not None
            await credit_wallet(s, line, 750, source=f"test:{line_id}")

        await db.run(money)

    p = policy(settings, lifecycle_batch_size=5)
    reports = await asyncio.gather(*(sweep(db, p, now=T) for _ in range(4)))

    async with db.read() as s:
        expired = (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
            LedgerTransfer.code == "expiry"))).scalar_one()
        forfeited = (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
            LedgerTransfer.code == "forfeit"))).scalar_one()
    assert (expired, forfeited) == (24, 12)
    assert sum(r.expired_buckets for r in reports) == expired
    assert sum(r.forfeited for r in reports) == forfeited
    assert sum(r.changed.get("frozen->terminated", 0) for r in reports) == 12
    await assert_ledger_balanced(db)


def _text(job: dict[str, Any], language: str = "en") -> str:
    from simcharge.notifications.templates import render

    rendered = render(job["template"], language, {**job["params"], "operator": "simcharge"})
    return " ".join([rendered.text, rendered.sms, rendered.html])


async def _owned_line(db: Database, **columns: Any) -> Line:
    async def run(s: AsyncSession) -> Line:
        n = uuid.uuid4().hex[:10]
        account = await create_account(s, username=f"r8{n}", email=f"r8{n}@example.com")
        line = await create_line(s, account_id=account.id, state=columns.pop("state"))
        for k, v in columns.items():
            setattr(line, k, v)
        await s.flush()
        return line

    return await db.run(run)


async def _jobs(db: Database, line: Line) -> list[dict[str, Any]]:
    from simcharge.worker.models import OutboxJob

    async with db.read() as s:
        rows = (await s.execute(select(OutboxJob.payload).where(
            OutboxJob.kind.in_(("notifications.deliver", "lifecycle.warning"))))).scalars().all()
    return [p for p in rows if p.get("line_id") == str(line.id)]


@pytest.mark.parametrize("reactivation", ["topup", "owner_topup", "support"])
async def test_the_frozen_notice_says_what_brings_the_line_back_under_each_policy(
    db: Database, settings: Settings, reactivation: str
) -> None:
    p = policy(settings, lifecycle_frozen_reactivation=reactivation)
    # Frozen by inactivity (active), by the end of grace, and with no grace at all.
    idle = await _owned_line(db, state=LineState.active, validity_end=T + 30 * DAY,
                             last_activity_at=T - 400 * DAY, state_changed_at=T - 400 * DAY)
    graced = await _owned_line(db, state=LineState.grace, validity_end=T - 40 * DAY,
                               last_activity_at=T - 40 * DAY, state_changed_at=T - 31 * DAY)
    await sweep(db, p, now=T)
    no_grace = await _owned_line(db, state=LineState.active, validity_end=T - DAY,
                                 last_activity_at=T - DAY, state_changed_at=T - 10 * DAY)
    await sweep(db, policy(settings, lifecycle_frozen_reactivation=reactivation,
                           lifecycle_grace_days=0), now=T)
    for line in (idle, graced, no_grace):
        [job] = await _jobs(db, line)
        said = _text(job)
        assert line.msisdn in said
        if reactivation == "topup":
            assert job["template"] == "line.frozen"
            assert "Top it up or contact customer service" in said
        elif reactivation == "owner_topup":
            assert job["template"] == "line.frozen"
            assert "Top it up or contact" not in said
            assert "while signed in to your account" in said
            assert "paid by someone else does not reactivate it" in said
        else:
            assert job["template"] == "line.frozen_support"
            assert "Top it up" not in said and "top it up" not in said
            assert "Contact customer service" in said
    # One queued before the sweep named the policy says what always works.
    old = {"template": "line.frozen", "params": {"msisdn": "+14155550100"}}
    assert "Top it up" not in _text(old) and "Contact customer service" in _text(old)


@pytest.mark.parametrize("reactivation", ["topup", "owner_topup", "support"])
async def test_every_lifecycle_notice_says_only_what_saves_the_line(
    db: Database, settings: Settings, reactivation: str
) -> None:
    """Before the line is frozen any top-up (a gift too) keeps it, whatever the policy; once it
    is frozen, only what the policy allows is named."""
    p = policy(settings, lifecycle_frozen_reactivation=reactivation)
    validity = await _owned_line(db, state=LineState.active, validity_end=T + 3 * DAY,
                                 last_activity_at=T - DAY, state_changed_at=T - 10 * DAY)
    idle = await _owned_line(db, state=LineState.active, validity_end=T + 90 * DAY,
                             last_activity_at=T - (p.inactivity - 3 * DAY),
                             state_changed_at=T - 200 * DAY)
    entering = await _owned_line(db, state=LineState.active, validity_end=T - DAY,
                                 last_activity_at=T - DAY, state_changed_at=T - 10 * DAY)
    ending = await _owned_line(db, state=LineState.grace, validity_end=T - 30 * DAY,
                               last_activity_at=T - 30 * DAY,
                               state_changed_at=T - (p.grace - 3 * DAY))
    closing = await _owned_line(db, state=LineState.frozen, validity_end=T - 400 * DAY,
                                last_activity_at=T - 400 * DAY,
                                state_changed_at=T - (p.termination - 3 * DAY))
    await sweep(db, p, now=T)
    expected = {
        validity.id: "line.validity_ending", idle.id: "line.freeze_warning",
        entering.id: "line.entered_grace", ending.id: "line.grace_ending",
        closing.id: "line.termination_warning",
    }
    for line in (validity, idle, entering, ending):
        [job] = await _jobs(db, line)
        assert job["template"] == expected[line.id]
        said = _text(job)
        assert "op it up" in said and "customer service" not in said, said
    [job] = await _jobs(db, closing)
    assert job["template"] == "line.termination_warning"
    said = _text(job)
    if reactivation == "topup":
        assert "Top it up before then" in said
    elif reactivation == "owner_topup":
        assert "while signed in to your account" in said
    else:
        assert "op it up" not in said and "Contact customer service" in said
