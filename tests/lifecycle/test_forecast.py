"""The forecast the portal shows ("frozen on …") is when the sweep really makes the change."""

from __future__ import annotations

from datetime import timedelta

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lifecycle.forecast import outlook
from simcharge.lifecycle.service import Policy, sweep
from simcharge.lines.models import LineState
from tests.lifecycle.test_lifecycle import DAY, T, new_line, reload

MINUTE = timedelta(minutes=1)


async def test_a_line_in_grace_is_frozen_when_the_forecast_says(
    db: Database, settings: Settings
) -> None:
    policy = Policy.of(settings)
    line = await new_line(db, state=LineState.grace, validity_end=T - 3 * DAY,
                          state_changed_at=T - 3 * DAY, last_activity_at=T - 5 * DAY)
    freeze_at = outlook(line, policy).freeze_at
    assert freeze_at == T - 3 * DAY + policy.grace
    await sweep(db, policy, now=freeze_at - MINUTE)
    assert (await reload(db, line)).state == LineState.grace
    await sweep(db, policy, now=freeze_at + MINUTE)
    assert (await reload(db, line)).state == LineState.frozen


async def test_an_unused_line_is_frozen_when_the_forecast_says(
    db: Database, settings: Settings
) -> None:
    policy = Policy.of(settings)
    line = await new_line(db, validity_end=T + 300 * DAY, last_activity_at=T - 179 * DAY)
    ahead = outlook(line, policy)
    assert ahead.freeze_at == T + DAY and ahead.grace_at == T + 300 * DAY
    await sweep(db, policy, now=T + DAY - MINUTE)
    assert (await reload(db, line)).state == LineState.active
    await sweep(db, policy, now=T + DAY + MINUTE)
    assert (await reload(db, line)).state == LineState.frozen


async def test_an_active_line_goes_through_grace_to_the_forecast_freeze(
    db: Database, settings: Settings
) -> None:
    policy = Policy.of(settings)
    line = await new_line(db, validity_end=T + 2 * DAY, last_activity_at=T)
    freeze_at = outlook(line, policy).freeze_at
    assert freeze_at == T + 2 * DAY + policy.grace
    await sweep(db, policy, now=T + 2 * DAY)  # the sweep that sees the validity end
    assert (await reload(db, line)).state == LineState.grace
    await sweep(db, policy, now=freeze_at - MINUTE)
    assert (await reload(db, line)).state == LineState.grace
    await sweep(db, policy, now=freeze_at + MINUTE)
    assert (await reload(db, line)).state == LineState.frozen


async def test_a_frozen_line_is_closed_when_the_forecast_says(
    db: Database, settings: Settings
) -> None:
    policy = Policy.of(settings)
    line = await new_line(db, state=LineState.frozen, state_changed_at=T - 10 * DAY)
    ahead = outlook(line, policy)
    assert ahead.freeze_at is None and ahead.terminate_at == T - 10 * DAY + policy.termination
    assert ahead.terminate_at is not None
    await sweep(db, policy, now=ahead.terminate_at - MINUTE)
    assert (await reload(db, line)).state == LineState.frozen
    await sweep(db, policy, now=ahead.terminate_at + MINUTE)
    assert (await reload(db, line)).state == LineState.terminated
    assert outlook(await reload(db, line), policy) == type(ahead)()
