"""The sweep at its edges: a line due two ways at once, a line that comes back after its
warning times went by, holds whose timeout passed before the ledger's job released them."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount, TransferKind
from simcharge.ledger.service import (
    NewTransfer,
    ensure_accounts,
    expire_pending_transfers,
    post_transfers,
)
from simcharge.lifecycle.service import BUCKET_LOOKBACK, sweep, unfreeze
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units, line_balances
from simcharge.tmf654.service import MAX_RESERVATION
from tests.lifecycle.test_lifecycle import DAY, T, events_of, jobs_for, new_line, policy, reload
from tests.orders.helpers import assert_ledger_balanced

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


async def test_an_idle_line_whose_validity_also_ended_is_frozen_at_once(
    db: Database, settings: Settings
) -> None:
    """Not put in a grace whose end has passed (and told so) and frozen a moment later: frozen
    for its inactivity, one change, one notice."""
    line = await new_line(db, validity_end=T - HOUR, last_activity_at=T - 200 * DAY)
    await sweep(db, policy(settings), now=T)
    assert (await reload(db, line)).state == "frozen"
    assert [j["template"] for j in await jobs_for(db, line)] == ["line.frozen"]
    assert [(e.from_state, e.to_state, e.reason) for e in await events_of(db, line)] == [
        ("active", "frozen", "inactive")]


async def test_without_grace_a_line_whose_validity_ends_is_frozen_and_told_once(
    db: Database, settings: Settings
) -> None:
    line = await new_line(db, validity_end=T - HOUR, last_activity_at=T - DAY)
    await sweep(db, policy(settings, lifecycle_grace_days=0), now=T)
    assert (await reload(db, line)).state == "frozen"
    assert [j["template"] for j in await jobs_for(db, line)] == ["line.frozen"]
    assert [(e.from_state, e.to_state, e.reason) for e in await events_of(db, line)] == [
        ("active", "frozen", "validity_ended")]


async def test_a_line_brought_back_after_its_warning_times_is_warned_before_it_changes(
    db: Database, settings: Settings
) -> None:
    """Unfrozen with half a day of validity left, after both warning times (7 and 1 days
    before) went by: the next sweep sends the nearest warning (1 day), once."""
    p = policy(settings)  # warnings 7 and 1 days ahead
    await sweep(db, p, now=T - DAY)
    await sweep(db, p, now=T)
    line = await new_line(db, state=LineState.frozen, validity_end=T + 2 * DAY + 12 * HOUR,
                          state_changed_at=T - 10 * DAY, last_activity_at=T - 190 * DAY)
    for at in (T + DAY, T + DAY + 13 * HOUR):
        await sweep(db, p, now=at)

    async def back(s: AsyncSession) -> str:
        found = await s.get(Line, line.id)
        assert found is not None
        return (await unfreeze(s, found, by="agent", reason="asked", now=T + 2 * DAY)).state

    assert await db.run(back) == "active"
    for at in (T + 2 * DAY + 10 * timedelta(minutes=1), T + 2 * DAY + 6 * HOUR,
               T + 2 * DAY + 11 * HOUR):
        await sweep(db, p, now=at)
    warned = [j for j in await jobs_for(db, line) if j["template"] == "line.validity_ending"]
    assert [(j["params"]["days_left"], j["params"]["validity_end"]) for j in warned] == [
        (1, (T + 2 * DAY + 12 * HOUR).isoformat())]
    await sweep(db, p, now=T + 2 * DAY + 12 * HOUR + timedelta(minutes=1))
    assert (await reload(db, line)).state == "grace"


async def test_a_hold_timed_out_but_not_yet_released_is_forfeited_at_termination(
    db: Database, settings: Settings
) -> None:
    """The ledger's job releases timed-out holds every 30 s: a termination in between releases
    it itself, and forfeits it with the rest — nothing comes back to the closed line."""
    line = await new_line(db, state=LineState.frozen, state_changed_at=T - 366 * DAY,
                          validity_end=T - 400 * DAY)
    sink = chart.consumption("USD")

    async def fill(s: AsyncSession) -> None:
        found = await s.get(Line, line.id)
        assert found is not None
        await credit_wallet(s, found, 1000, source=f"test:{line.id}")
        await ensure_accounts(s, [sink])
        await post_transfers(s, [NewTransfer(
            id=uuid7(), amount=300, unit="USD", debit_account_id=found.wallet_account_id,
            credit_account_id=sink.id, kind=TransferKind.pending, timeout_s=60,
            code="reservation", reference="test")], now=T - HOUR)

    await db.run(fill)
    await sweep(db, policy(settings), now=T)
    assert (await reload(db, line)).state == "terminated"
    assert await db.run(lambda s: expire_pending_transfers(s, now=T + timedelta(minutes=1))) == 0
    await sweep(db, policy(settings), now=T + 10 * timedelta(minutes=1))
    async with db.read() as s:
        found = await s.get(Line, line.id)
        assert found is not None
        wallet = (await line_balances(s, found, now=T + 10 * timedelta(minutes=1))).wallet
    assert (wallet.available, wallet.reserved) == (0, 0)
    await assert_ledger_balanced(db)


async def test_units_a_hold_of_the_longest_kind_frees_after_the_end_still_expire(
    db: Database, settings: Settings
) -> None:
    """A reservation made just before its bucket ends and held the longest time allowed: the
    sweep after the ledger's job released it still looks far enough back."""
    assert BUCKET_LOOKBACK > MAX_RESERVATION + HOUR
    p = policy(settings)
    end = T + DAY
    line = await new_line(db, validity_end=T + 60 * DAY)
    sink = chart.consumption("DATA_B")

    async def fill(s: AsyncSession) -> uuid.UUID:
        found = await s.get(Line, line.id)
        assert found is not None
        [bucket] = await grant_units(s, found, [UnitGrant("DATA_B", 1000, 1)],
                                     source=f"test:{line.id}", now=T)
        await ensure_accounts(s, [sink])
        await post_transfers(s, [NewTransfer(
            id=uuid7(), amount=300, unit="DATA_B", debit_account_id=bucket,
            credit_account_id=sink.id, kind=TransferKind.pending,
            timeout_s=int(MAX_RESERVATION.total_seconds()), code="reservation",
            reference="test")], now=end - 10 * SECOND)
        return bucket

    bucket = await db.run(fill)
    for at in (end, end + 3 * DAY, end + 6 * DAY, end + 7 * DAY + 5 * SECOND):
        await sweep(db, p, now=at)
    assert await db.run(lambda s: expire_pending_transfers(s, now=end + 7 * DAY + 15 * SECOND)) == 1
    await sweep(db, p, now=end + 7 * DAY + 10 * 60 * SECOND)
    async with db.read() as s:
        account = await s.get(LedgerAccount, bucket, populate_existing=True)
        assert account is not None
        left = account.credits_posted - account.debits_posted - account.debits_pending
    assert left == 0
    await assert_ledger_balanced(db)
