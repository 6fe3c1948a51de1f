"""The lifecycle's warnings and reactivations at their edges (review round 7).

What was wrong, and is right now:

- A period changed in the settings (termination, grace, inactivity) moves every line's warning
  time, but each warning pass kept its mark — a position in warning time — and its dedupe keys
  named only the line's anchor time. Shortened, a line whose change was now a few days off was
  behind the mark and got no warning until the last one (or none); lengthened, the warning of
  the new date had the key of the one sent for the old date and never went out, so the
  customer kept a date that was no longer true. Now a pass's mark belongs to the periods in
  force and the key names the date warned of: a line whose change is now within a warning gets
  it, with the new date, once.
- Only the inactivity warning is judged again as it goes out. The others (validity, end of
  grace, termination) are sent as queued: a warning that waited in the queue past the date it
  names (the workers were behind) tells the customer the line "stays valid until" a day gone
  by, with the days left counted from when it was queued. Now every warning is queued as
  `lifecycle.warning` and judged again as it goes out.
- Termination released every hold on the line's accounts, a refund's too: the refund could not
  complete afterwards. Now a refund's hold is left to the refund.
- Without a grace period (`LIFECYCLE_GRACE_DAYS=0`), a frozen line brought back by a top-up
  that left its validity over was put in a grace of no length: the next sweep froze it again
  and told the customer, just after the top-up, that the line was frozen. Now such a top-up
  leaves the line frozen (the credit is kept, the top-up counts as activity).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerAccount
from simcharge.lifecycle.models import LifecycleMark
from simcharge.lifecycle.service import Policy, on_topup, sweep
from simcharge.lines.models import Line, LineState
from simcharge.notifications.models import Notice
from simcharge.orders.models import Refund
from simcharge.orders.refunds import complete_refund, request_refund
from simcharge.payments.providers import RefundResult, RefundState
from tests.factories import load_demo_catalog
from tests.lifecycle.test_lifecycle import (
    DAY,
    MINUTE,
    T,
    events_of,
    jobs_for,
    new_line,
    policy,
    reload,
)
from tests.orders.helpers import Payer, assert_ledger_balanced, new_payer, pay_at_sandbox, place

HOUR = timedelta(hours=1)


def termination_warnings(jobs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(j["params"]["days_left"], j["params"]["terminate_on"]) for j in jobs
            if j["template"] == "line.termination_warning"]


async def notices_of(db: Database, line: Line) -> list[tuple[str, dict[str, Any]]]:
    async with db.read() as s:
        rows = (await s.execute(
            select(Notice.template, Notice.params).where(Notice.line_id == line.id)
            .order_by(Notice.created_at, Notice.id))).all()
    return [(template, dict(params)) for template, params in rows]


# --- A period changed in the settings between sweeps ----------------------------------------


async def test_a_shorter_termination_period_warns_a_line_now_closed_within_a_week(
    db: Database, settings: Settings
) -> None:
    """Frozen 357 days, a line is closed after 365: its 7-day warning is a day off. The operator
    shortens the period to 360 days: the line now closes in 3 days. It was warned of nothing;
    the next sweep tells it (3 days left), once, and the 1-day warning follows. (The pass's mark
    stood past the line's new warning time: it got no warning until the last day.)"""
    before, after = policy(settings), policy(settings, lifecycle_termination_days=360)
    frozen_at = T - 357 * DAY
    line = await new_line(db, state=LineState.frozen, state_changed_at=frozen_at,
                          validity_end=frozen_at - DAY)
    await sweep(db, before, now=T - 10 * MINUTE)
    await sweep(db, before, now=T - 5 * MINUTE)
    assert termination_warnings(await jobs_for(db, line)) == []
    closes = (frozen_at + 360 * DAY).isoformat()
    await sweep(db, after, now=T)
    assert termination_warnings(await jobs_for(db, line)) == [(3, closes)]
    await sweep(db, after, now=T + DAY)
    assert termination_warnings(await jobs_for(db, line)) == [(3, closes)]
    await sweep(db, after, now=T + 2 * DAY + MINUTE)
    assert termination_warnings(await jobs_for(db, line)) == [(3, closes), (1, closes)]
    await sweep(db, after, now=T + 3 * DAY)
    assert (await reload(db, line)).state == "terminated"


async def test_a_longer_termination_period_warns_again_with_the_new_date(
    db: Database, settings: Settings
) -> None:
    """Warned a week before its closing on day 365, the line's period is lengthened to 370
    days: the date it was given is no longer true. A week before the new date it is warned
    again, with that date. (The new warning had the dedupe key of the first one — the same
    line, the same time frozen — and was never sent.)"""
    before, after = policy(settings), policy(settings, lifecycle_termination_days=370)
    frozen_at = T - 358 * DAY
    line = await new_line(db, state=LineState.frozen, state_changed_at=frozen_at,
                          validity_end=frozen_at - DAY)
    await sweep(db, before, now=T - 10 * MINUTE)
    await sweep(db, before, now=T)
    old, new = (frozen_at + 365 * DAY).isoformat(), (frozen_at + 370 * DAY).isoformat()
    assert termination_warnings(await jobs_for(db, line)) == [(7, old)]
    for at in (T + DAY, T + 4 * DAY, T + 5 * DAY, T + 6 * DAY):
        await sweep(db, after, now=at)
    assert termination_warnings(await jobs_for(db, line)) == [(7, old), (7, new)]
    await sweep(db, after, now=T + 11 * DAY)
    assert termination_warnings(await jobs_for(db, line)) == [(7, old), (7, new), (1, new)]


async def test_a_pass_continues_from_the_mark_it_had_before_marks_named_their_periods(
    db: Database, settings: Settings
) -> None:
    """A database from before: the termination pass's mark is named without its period. The
    pass goes on from there — a line it had already warned (under the key of the time) is not
    warned again, a line whose warning time comes after it is."""
    p = policy(settings)
    warned = await new_line(db, state=LineState.frozen, state_changed_at=T - 358 * DAY - HOUR,
                            validity_end=T - 400 * DAY)
    later = await new_line(db, state=LineState.frozen,
                           state_changed_at=T - 358 * DAY + 5 * MINUTE,
                           validity_end=T - 400 * DAY)
    # The 7-day pass had been run at T - 30 minutes (its mark, in warning time, is there).
    await db.run(lambda s: s.execute(insert(LifecycleMark).values(
        name="warn:termination:7", at=T - 30 * MINUTE, last_id=None)))
    await sweep(db, p, now=T + 10 * MINUTE)
    assert termination_warnings(await jobs_for(db, warned)) == []
    assert [d for d, _ in termination_warnings(await jobs_for(db, later))] == [7]


# --- Every warning judged as it goes out -------------------------------------------------------


async def test_a_validity_warning_that_waited_past_its_date_is_not_sent(
    db: Database, settings: Settings, deliver: Callable[[], Awaitable[int]]
) -> None:
    """Queued a week before the validity ends, the warning waits (the workers were behind)
    until after that end — the sweep has not yet put the line in grace. It should not be sent:
    "stays valid until" a day gone by, "7 days", is no longer true. (It goes out as queued.)"""
    p = policy(settings)
    await sweep(db, p, now=T - DAY)
    line = await new_line(db, validity_end=T + 6 * DAY + 12 * HOUR, last_activity_at=T - DAY)
    clock.freeze(T)
    await sweep(db, p, now=T)
    assert [j["template"] for j in await jobs_for(db, line)] == ["line.validity_ending"]
    clock.freeze(T + 7 * DAY)
    await deliver()
    assert await notices_of(db, line) == []
    assert (await reload(db, line)).state == "active"


async def test_a_termination_warning_that_waited_counts_its_days_from_when_it_goes_out(
    db: Database, settings: Settings, deliver: Callable[[], Awaitable[int]]
) -> None:
    """A termination warning queued 7 days ahead and delivered 4 days later should say 3 days,
    not 7 (it says 7); one whose line was unfrozen meanwhile is not sent."""
    p = policy(settings)
    await sweep(db, p, now=T - DAY)
    frozen_at = T - 358 * DAY + HOUR
    kept = await new_line(db, state=LineState.frozen, state_changed_at=frozen_at,
                          validity_end=T - 400 * DAY)
    saved = await new_line(db, state=LineState.frozen, state_changed_at=frozen_at,
                           validity_end=T + 30 * DAY)
    clock.freeze(T + 2 * HOUR)  # the jobs the sweep writes are due from then
    await sweep(db, p, now=T + 2 * HOUR)

    async def unfreeze_by_topup(s: AsyncSession) -> None:
        line = await s.get(Line, saved.id)
        assert line is not None
        assert on_topup(s, line, now=T + 3 * HOUR, actor="order:x", by_owner=True, policy=p)

    await db.run(unfreeze_by_topup)
    clock.freeze(T + 4 * DAY + 2 * HOUR)
    await deliver()
    [(template, params)] = await notices_of(db, kept)
    assert (template, params["days_left"], params["terminate_on"]) == (
        "line.termination_warning", 3, (frozen_at + 365 * DAY).isoformat())
    assert params["reactivation"] == "topup"
    assert await notices_of(db, saved) == []


# --- No grace period ---------------------------------------------------------------------------


async def test_without_grace_a_top_up_that_leaves_the_validity_over_keeps_the_line_frozen(
    db: Database, settings: Settings
) -> None:
    """`LIFECYCLE_GRACE_DAYS=0`, `LIFECYCLE_TOPUP_VALIDITY_DAYS=0`: money alone on a frozen line
    whose validity is over. It was put in grace — of no length — and the next sweep froze it
    again and told the customer "your line is frozen" just after the top-up. Now it stays
    frozen, with no change and no notice; the top-up counts as activity. A top-up that gives
    validity still brings it back, active."""
    p = policy(settings, lifecycle_grace_days=0, lifecycle_topup_validity_days=0)
    moneyless = await new_line(db, state=LineState.frozen, validity_end=T - 10 * DAY,
                               state_changed_at=T - 5 * DAY, last_activity_at=T - 200 * DAY)
    planned = await new_line(db, state=LineState.frozen, validity_end=T - 10 * DAY,
                             state_changed_at=T - 5 * DAY, last_activity_at=T - 200 * DAY)

    async def top_up(s: AsyncSession) -> tuple[bool, bool]:
        money = await s.get(Line, moneyless.id)
        plan = await s.get(Line, planned.id)
        assert money is not None and plan is not None
        plan.validity_end = T + 30 * DAY  # a plan's validity
        return (
            on_topup(s, money, now=T, actor="order:a", by_owner=True, policy=p),
            on_topup(s, plan, now=T, actor="order:b", by_owner=True, policy=p),
        )

    assert await db.run(top_up) == (False, True)
    await sweep(db, p, now=T + 10 * MINUTE)
    line = await reload(db, moneyless)
    assert (line.state, line.state_changed_at, line.last_activity_at) == (
        "frozen", T - 5 * DAY, T)
    assert await events_of(db, moneyless) == []
    assert await jobs_for(db, moneyless) == []
    assert (await reload(db, planned)).state == "active"


async def test_with_a_grace_period_the_same_top_up_brings_the_line_back_in_grace(
    db: Database, settings: Settings
) -> None:
    """The documented rule where there is a grace: back in grace, with a whole grace period
    to top up (not frozen again at the next sweep)."""
    p: Policy = policy(settings, lifecycle_topup_validity_days=0)
    line = await new_line(db, state=LineState.frozen, validity_end=T - 10 * DAY,
                          state_changed_at=T - 5 * DAY, last_activity_at=T - 200 * DAY)

    async def top_up(s: AsyncSession) -> bool:
        found = await s.get(Line, line.id)
        assert found is not None
        return on_topup(s, found, now=T, actor="order:a", by_owner=True, policy=p)

    assert await db.run(top_up)
    await sweep(db, p, now=T + 10 * MINUTE)
    found = await reload(db, line)
    assert (found.state, found.state_changed_at) == ("grace", T)
    assert [(e.from_state, e.to_state) for e in await events_of(db, line)] == [
        ("frozen", "grace")]


# --- A top-up at the moment of a freeze (PostgreSQL) -----------------------------------------


@pytest.mark.postgres_only
async def test_a_sweep_during_a_top_up_leaves_the_line_to_the_top_up(
    fresh_db: Database, settings: Settings
) -> None:
    """A top-up holds the line (as fulfilment locks it) while the sweep that would freeze it
    runs: the sweep skips it, the top-up brings it back, and nothing of the freeze is left — no
    change, no notice, nothing at the next sweep."""
    db, p = fresh_db, policy(settings)
    line = await new_line(db, state=LineState.grace, validity_end=T - 40 * DAY,
                          state_changed_at=T - 31 * DAY)
    other = await new_line(db, state=LineState.grace, validity_end=T - 40 * DAY,
                           state_changed_at=T - 31 * DAY)
    async with db.transaction() as s:
        held = (await s.execute(select(Line).where(Line.id == line.id).with_for_update())).scalar_one()
        report = await sweep(db, p, now=T)
        held.validity_end = T + 30 * DAY  # a plan's validity
        assert on_topup(s, held, now=T, actor="order:x", by_owner=True, policy=p)
    assert report.changed == {"grace->frozen": 1}
    assert (await reload(db, other)).state == "frozen"
    await sweep(db, p, now=T + 10 * MINUTE)
    assert (await reload(db, line)).state == "active"
    assert [(e.from_state, e.to_state, e.reason) for e in await events_of(db, line)] == [
        ("grace", "active", "topup")]
    assert await jobs_for(db, line) == []


# --- A refund in flight when the line is terminated ------------------------------------------


async def _refund_pending_then_terminated(
    client: Any, db: Database, settings: Settings
) -> tuple[Payer, uuid.UUID, Refund, datetime]:
    """A starter-10 order paid and credited, a full refund asked (its holds take back what the
    order granted), then the line frozen for longer than the termination period and swept."""
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    oid, now = uuid.UUID(order["id"]), utcnow()
    refund = await db.run(lambda s: request_refund(
        s, oid, amount=None, reason="asked", requested_by="staff:a", now=now,
        idempotency_key="k1"))

    async def frozen_long_ago(s: AsyncSession) -> None:
        await s.execute(update(Line).where(Line.id == payer.line.id).values(
            state=LineState.frozen.value, state_changed_at=now - 366 * DAY))

    await db.run(frozen_long_ago)
    await sweep(db, policy(settings), now=now)
    assert (await reload(db, payer.line)).state == "terminated"
    return payer, oid, refund, now


def _answer(refund: Refund, state: RefundState) -> RefundResult:
    return RefundResult(refund_id=refund.reference, provider_refund_id=f"rf_{refund.reference}",
                        state=state, amount=refund.amount, currency="USD", raw={})


async def _left_on(db: Database, line: Line) -> list[tuple[str, int, int]]:
    """What each of the line's accounts still has (available, reserved), the empty ones left
    out."""
    async with db.read() as s:
        rows = (await s.execute(select(LedgerAccount).where(
            LedgerAccount.line_id == line.id).execution_options(populate_existing=True))).scalars()
        return [(a.unit, a.credits_posted - a.debits_posted - a.debits_pending, a.debits_pending)
                for a in rows if a.credits_posted - a.debits_posted or a.debits_pending]


async def test_a_refund_asked_before_the_line_was_terminated_completes(
    client: Any, db: Database, settings: Settings
) -> None:
    """Termination released every hold on the line's accounts — the refund's too, though that is
    the payer's money on its way back, not the line's. When the provider then confirmed the
    refund, posting its holds was refused (`pending_transfer_already_voided`): the money was
    paid back, and the ledger could not say so. Now the refund's holds are left to it: it
    completes, and nothing is left on the line."""
    payer, oid, refund, now = await _refund_pending_then_terminated(client, db, settings)
    done = await db.run(lambda s: complete_refund(
        s, oid, _answer(refund, RefundState.succeeded), now + MINUTE))
    assert done == "refunded"
    assert await _left_on(db, payer.line) == []
    await assert_ledger_balanced(db)


async def test_a_refund_refused_after_the_line_was_terminated_leaves_nothing_on_it(
    client: Any, db: Database, settings: Settings
) -> None:
    """The provider refuses the refund: its holds are voided, and what they held comes back to
    the accounts of a line that is closed. It should go where termination sends the rest."""
    payer, oid, refund, now = await _refund_pending_then_terminated(client, db, settings)
    done = await db.run(lambda s: complete_refund(
        s, oid, _answer(refund, RefundState.failed), now + MINUTE))
    assert done == "refund_failed"
    await assert_ledger_balanced(db)
    assert await _left_on(db, payer.line) == []
