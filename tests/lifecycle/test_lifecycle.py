"""The line lifecycle: what time does to lines and buckets, warnings, top-ups and support."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.models import ChargingSession, SessionState
from simcharge.charging.nchf import NchfProblem, create_charging_data, update_charging_data
from simcharge.charging.rating import load_rating_table
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import clock
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, PendingStatus
from simcharge.lifecycle.forecast import outlook
from simcharge.lifecycle.models import LineEvent
from simcharge.lifecycle.service import LineNotFrozen, Policy, on_topup, sweep, unfreeze
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units, line_balances
from simcharge.notifications.models import Notice
from simcharge.worker.models import OutboxJob
from simcharge.worker.runner import Worker, load_jobs
from tests.charging.helpers import body, make_line, rg
from tests.conftest import SmtpInbox
from tests.factories import create_account, create_line
from tests.orders.helpers import assert_ledger_balanced

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


def policy(settings: Settings, **override: Any) -> Policy:
    return Policy.of(settings.model_copy(update=override))


async def new_line(
    db: Database,
    *,
    state: LineState = LineState.active,
    validity_end: datetime | None = None,
    last_activity_at: datetime | None = None,
    state_changed_at: datetime | None = None,
    language: str = "en",
    owned: bool = True,
) -> Line:
    async def run(s: AsyncSession) -> Line:
        account_id = None
        if owned:
            n = uuid.uuid4().hex[:10]
            account = await create_account(
                s, username=f"lc{n}", email=f"lc{n}@example.com", language=language,
                email_verified_at=T - 400 * DAY,
            )
            account_id = account.id
        line = await create_line(s, account_id=account_id, state=state)
        line.validity_end = validity_end
        line.last_activity_at = last_activity_at if last_activity_at else T - DAY
        line.state_changed_at = state_changed_at or T - 2 * DAY
        await s.flush()
        return line

    return await db.run(run)


async def reload(db: Database, line: Line) -> Line:
    async with db.read() as s:
        found = await s.get(Line, line.id, populate_existing=True)
        assert found is not None
        return found


async def jobs_for(db: Database, line: Line) -> list[dict[str, Any]]:
    async with db.read() as s:
        rows = (await s.execute(select(OutboxJob.payload).where(
            OutboxJob.kind.in_(("notifications.deliver", "lifecycle.warning"))))).scalars().all()
    return [p for p in rows if p.get("line_id") == str(line.id)]


async def events_of(db: Database, line: Line) -> list[LineEvent]:
    async with db.read() as s:
        return list((await s.execute(select(LineEvent).where(
            LineEvent.line_id == line.id).order_by(LineEvent.created_at))).scalars())


# --- Transitions ---------------------------------------------------------------------------


async def test_validity_end_puts_an_active_line_in_grace_and_tells_the_customer(
    db: Database, settings: Settings, inbox: SmtpInbox, deliver: Callable[[], Awaitable[int]]
) -> None:
    clock.freeze(T)
    line = await new_line(db, validity_end=T - timedelta(hours=1), language="es")
    valid = await new_line(db, validity_end=T + 3 * DAY)
    report = await sweep(db, policy(settings), now=T)
    assert report.changed["active->grace"] >= 1
    assert (await reload(db, line)).state == "grace"
    assert (await reload(db, line)).state_changed_at == T
    assert (await reload(db, valid)).state == "active"
    [event] = await events_of(db, line)
    assert (event.from_state, event.to_state, event.reason, event.actor) == (
        "active", "grace", "validity_ended", "sweep")
    [job] = await jobs_for(db, line)
    assert job["template"] == "line.entered_grace"
    await deliver()
    async with db.read() as s:
        notice = (await s.execute(select(Notice).where(Notice.line_id == line.id))).scalar_one()
    assert notice.template == "line.entered_grace"
    mails = [m for m in inbox.messages if line.msisdn in str(m["Subject"])]
    assert mails, "no e-mail"
    body = mails[0].get_body(preferencelist=("plain",))
    assert body is not None
    assert "La validez de tu línea" in body.get_content()
    assert "antes del 31 dic 2026, 9:00 UTC" in body.get_content()  # a moment to the minute


async def test_grace_over_freezes_the_line(db: Database, settings: Settings) -> None:
    over = await new_line(db, state=LineState.grace, validity_end=T - 40 * DAY,
                          state_changed_at=T - 31 * DAY)
    still = await new_line(db, state=LineState.grace, validity_end=T - 10 * DAY,
                           state_changed_at=T - 10 * DAY)
    await sweep(db, policy(settings), now=T)
    assert (await reload(db, over)).state == "frozen"
    assert (await reload(db, still)).state == "grace"
    [job] = await jobs_for(db, over)
    assert job["template"] == "line.frozen"


async def test_no_activity_and_no_top_up_freezes_even_a_valid_line(
    db: Database, settings: Settings
) -> None:
    idle = await new_line(db, validity_end=T + 100 * DAY, last_activity_at=T - 181 * DAY)
    used = await new_line(db, validity_end=T + 100 * DAY, last_activity_at=T - 179 * DAY)
    idle_grace = await new_line(db, state=LineState.grace, last_activity_at=T - 200 * DAY,
                                validity_end=T - DAY, state_changed_at=T - DAY)
    await sweep(db, policy(settings), now=T)
    assert (await reload(db, idle)).state == "frozen"
    assert (await reload(db, used)).state == "active"
    assert (await reload(db, idle_grace)).state == "frozen"
    assert [e.reason for e in await events_of(db, idle)] == ["inactive"]


async def test_a_line_never_used_counts_from_when_it_entered_service(
    db: Database, settings: Settings
) -> None:
    async def run(s: AsyncSession) -> Line:
        line = await create_line(s)
        line.last_activity_at = None
        line.state_changed_at = T - 200 * DAY
        return line

    line = await db.run(run)
    await sweep(db, policy(settings), now=T)
    found = await reload(db, line)
    assert found.last_activity_at == T - 200 * DAY
    assert found.state == "frozen"


async def test_frozen_too_long_terminates_and_forfeits_what_is_left(
    db: Database, settings: Settings
) -> None:
    line = await new_line(db, state=LineState.frozen, state_changed_at=T - 366 * DAY,
                          validity_end=T - 400 * DAY)

    async def fill(s: AsyncSession) -> None:
        found = await s.get(Line, line.id)
        assert found is not None
        await credit_wallet(s, found, 750, source="test:wallet")
        await grant_units(s, found, [UnitGrant("DATA_B", 5000, None)], source="test:data",
                          now=T - 400 * DAY)

    await db.run(fill)
    await sweep(db, policy(settings), now=T)
    terminated = await reload(db, line)
    assert terminated.state == "terminated"
    async with db.read() as s:
        balances = await line_balances(s, terminated, now=T)
        expiry = {
            a.unit: a.credits_posted for a in (await s.execute(select(LedgerAccount).where(
                LedgerAccount.id.in_([chart.expiry("USD", chart.shard_of(line.id)).id,
                                      chart.expiry("DATA_B", chart.shard_of(line.id)).id])
            ))).scalars()
        }
    assert balances.wallet.available == 0
    assert balances.units == []
    assert expiry["USD"] >= 750 and expiry["DATA_B"] >= 5000
    [job] = await jobs_for(db, line)
    assert job["template"] == "line.terminated"
    await assert_ledger_balanced(db)


async def test_termination_reads_the_settings_it_is_given_not_the_process_s(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep works with the settings its policy was read from (the worker's), never the
    process's own (`get_settings`): ending a terminated line's sessions reads nothing from them,
    so an environment that holds no valid settings changes nothing."""
    line = await new_line(db, state=LineState.frozen, state_changed_at=T - 366 * DAY,
                          validity_end=T - 400 * DAY)

    async def fill(s: AsyncSession) -> None:
        found = await s.get(Line, line.id)
        assert found is not None
        await credit_wallet(s, found, 750, source="test:wallet")

    await db.run(fill)
    p = policy(settings)
    monkeypatch.setenv("SIMCHARGE_ENV", "not-an-environment")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="env"):
            get_settings()
        report = await sweep(db, p, now=T)
    finally:
        get_settings.cache_clear()
    assert report.forfeited >= 1
    found = await reload(db, line)
    assert found.state == "terminated"
    async with db.read() as s:
        assert (await line_balances(s, found, now=T)).wallet.available == 0
    await assert_ledger_balanced(db)


async def test_termination_ends_open_charging_sessions_and_forfeits_their_reservations(
    db: Database, settings: Settings
) -> None:
    t = await make_line(db, money=1000, grants=[UnitGrant("DATA_B", 5000, 30)])
    async with db.read() as s:
        table = await load_rating_table(s)

    def request(seq: int, units: list[dict[str, Any]]) -> bytes:
        return json.dumps(body(t.supi, seq, units)).encode()

    # A call and a data session go on (voice at home: 0.05 a minute, 10 minutes reserved)…
    units = [rg(100, requested={"time": 600}), rg(200, requested={"totalVolume": 3000})]
    created = await db.run(lambda s: create_charging_data(
        s, settings, table, client="smf", body=request(0, units)))
    ref = str(created.ref)

    async def frozen_long_ago(s: AsyncSession) -> None:
        found = await s.get(Line, t.line.id)
        assert found is not None
        found.state, found.state_changed_at = LineState.frozen.value, T - 366 * DAY

    # … when the line has been frozen too long (say the worker timing sessions out was down).
    await db.run(frozen_long_ago)

    async def holdings() -> tuple[tuple[int, int], list[Any], dict[str, int], int]:
        async with db.read() as s:
            line = await s.get(Line, t.line.id, populate_existing=True)
            assert line is not None
            view = await line_balances(s, line, now=T)
            forfeited = {
                unit: int(total) for unit, total in await s.execute(
                    select(LedgerTransfer.unit, func.sum(LedgerTransfer.amount))
                    .where(LedgerTransfer.code == "forfeit",
                           LedgerTransfer.reference == f"line:{t.line.id}")
                    .group_by(LedgerTransfer.unit))
            }
            held = (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
                LedgerTransfer.reference == f"nchf:{ref}",
                LedgerTransfer.pending_status == PendingStatus.pending.value))).scalar_one()
        return (view.wallet.available, view.wallet.reserved), view.units, forfeited, held

    assert (await holdings())[0] == (950, 50)
    await sweep(db, policy(settings), now=T)
    assert (await reload(db, t.line)).state == "terminated"
    # The reservations were released first: all the line had is forfeited, nothing is held.
    assert await holdings() == ((0, 0), [], {"USD": 1000, "DATA_B": 5000}, 0)
    async with db.read() as s:
        cs = await s.get(ChargingSession, created.ref)
    assert cs is not None and cs.state == SessionState.ended.value
    # The network's report comes too late: the session is over, nothing returns to the line.
    with pytest.raises(NchfProblem) as refused:
        await db.run(lambda s: update_charging_data(
            s, settings, table, client="smf", ref=ref, release=True,
            body=request(1, [rg(100, used=[{"time": 60}])])))
    assert refused.value.cause == "CONTEXT_NOT_FOUND"
    await sweep(db, policy(settings), now=T + timedelta(minutes=10))
    assert await holdings() == ((0, 0), [], {"USD": 1000, "DATA_B": 5000}, 0)
    await assert_ledger_balanced(db)


async def test_batches_move_every_due_line(db: Database, settings: Settings) -> None:
    due = [await new_line(db, validity_end=T - DAY, owned=False) for _ in range(25)]
    report = await sweep(db, policy(settings, lifecycle_batch_size=10), now=T)
    assert report.changed["active->grace"] >= 25
    assert {(await reload(db, line)).state for line in due} == {"grace"}


# --- Buckets -------------------------------------------------------------------------------


async def test_buckets_expire_into_the_expiry_account_once(
    db: Database, settings: Settings
) -> None:
    line = await new_line(db, validity_end=T + 60 * DAY)

    async def fill(s: AsyncSession) -> list[uuid.UUID]:
        found = await s.get(Line, line.id)
        assert found is not None
        return await grant_units(
            s, found,
            [UnitGrant("VOICE_S", 600, 1), UnitGrant("SMS", 10, 30)],
            source=f"test:{line.id}", now=T - 2 * DAY,
        )

    short, long = await db.run(fill)
    expiry_id = chart.expiry("VOICE_S", chart.shard_of(line.id)).id

    async def counts() -> tuple[int, int, int]:
        async with db.read() as s:
            n = (await s.execute(select(func.count()).select_from(LedgerTransfer).where(
                LedgerTransfer.reference == f"bucket:{short}"))).scalar_one()
            b = await s.get(LedgerAccount, short, populate_existing=True)
            e = await s.get(LedgerAccount, expiry_id, populate_existing=True)
            assert b is not None and e is not None
            return int(n), b.credits_posted - b.debits_posted, e.credits_posted

    report = await sweep(db, policy(settings), now=T)
    assert report.expired_buckets >= 1
    n, left, _ = await counts()
    assert (n, left) == (1, 0)
    await sweep(db, policy(settings), now=T + timedelta(minutes=10))
    assert (await counts())[:2] == (1, 0)
    async with db.read() as s:
        sms = await s.get(LedgerAccount, long)
        assert sms is not None and sms.credits_posted - sms.debits_posted == 10
    await assert_ledger_balanced(db)


# --- Warnings ------------------------------------------------------------------------------


async def test_warnings_go_out_once_before_the_validity_ends(
    db: Database, settings: Settings
) -> None:
    p = policy(settings)
    await sweep(db, p, now=T - DAY)  # the passes start
    soon = await new_line(db, validity_end=T + timedelta(days=6, hours=12))
    very_soon = await new_line(db, validity_end=T + timedelta(hours=12))
    later = await new_line(db, validity_end=T + 30 * DAY)
    await sweep(db, p, now=T)
    [warning] = await jobs_for(db, soon)
    assert warning["template"] == "line.validity_ending"
    assert warning["params"]["days_left"] == 7
    assert warning["params"]["validity_end"] == (T + timedelta(days=6, hours=12)).isoformat()
    # The 1-day warning only, not both.
    [only] = await jobs_for(db, very_soon)
    assert only["params"]["days_left"] == 1
    assert await jobs_for(db, later) == []
    await sweep(db, p, now=T + timedelta(hours=1))
    assert len(await jobs_for(db, soon)) == 1
    await sweep(db, p, now=T + timedelta(days=5, hours=13))
    templates = [(j["template"], j["params"]["days_left"]) for j in await jobs_for(db, soon)]
    assert templates == [("line.validity_ending", 7), ("line.validity_ending", 1)]


async def test_freeze_and_termination_are_announced(db: Database, settings: Settings) -> None:
    p = policy(settings)
    await sweep(db, p, now=T - DAY)
    hour = timedelta(hours=1)
    grace = await new_line(db, state=LineState.grace, validity_end=T - 24 * DAY,
                           state_changed_at=T - 24 * DAY + hour)
    idle = await new_line(db, validity_end=T + 100 * DAY,
                          last_activity_at=T - 173 * DAY - 12 * hour)
    frozen = await new_line(db, state=LineState.frozen, state_changed_at=T - 359 * DAY + hour)
    await sweep(db, p, now=T)
    [g] = await jobs_for(db, grace)
    assert (g["template"], g["params"]["freeze_on"]) == (
        "line.grace_ending", (T + 6 * DAY + hour).isoformat())
    [i] = await jobs_for(db, idle)
    assert (i["template"], i["params"]["days_left"]) == ("line.freeze_warning", 7)
    [f] = await jobs_for(db, frozen)
    assert (f["template"], f["params"]["terminate_on"], f["params"]["reactivation"]) == (
        "line.termination_warning", (T + 6 * DAY + hour).isoformat(), "topup")


async def test_each_warning_says_what_keeps_the_line(db: Database, settings: Settings) -> None:
    from simcharge.notifications.templates import render

    def text(job: dict[str, Any], language: str = "en") -> str:
        return render(job["template"], language, {**job["params"], "operator": "simcharge"}).text

    hour = timedelta(hours=1)
    # In grace the line cannot be used: only a top-up keeps it, whatever the reason it freezes.
    await sweep(db, policy(settings), now=T - DAY)
    grace = await new_line(db, state=LineState.grace, validity_end=T - 24 * DAY,
                           state_changed_at=T - 24 * DAY + hour)
    idle_in_grace = await new_line(db, state=LineState.grace, validity_end=T - DAY,
                                   state_changed_at=T - DAY,
                                   last_activity_at=T - 173 * DAY - 12 * hour)
    idle = await new_line(db, validity_end=T + 100 * DAY,
                          last_activity_at=T - 173 * DAY - 12 * hour)
    await sweep(db, policy(settings), now=T)
    for line in (grace, idle_in_grace):
        [job] = await jobs_for(db, line)
        assert "Top it up before then" in text(job) and "or use it" not in text(job)
        assert "validity of your line" in text(job)
    [job] = await jobs_for(db, idle)
    assert "Top it up or use it" in text(job)

    # Before termination: what saves a frozen line under the policy in force.
    advice = {
        "topup": "Top it up before then to reactivate it",
        "owner_topup": "Top it up while signed in to your account",
        "support": "Contact customer service before then",
    }
    for i, (reactivation, expected) in enumerate(advice.items()):
        p = policy(settings, lifecycle_frozen_reactivation=reactivation)
        at = T + i * 30 * DAY
        await sweep(db, p, now=at - DAY)
        frozen = await new_line(db, state=LineState.frozen,
                                state_changed_at=at - 359 * DAY + hour)
        await sweep(db, p, now=at)
        [job] = await jobs_for(db, frozen)
        assert job["params"]["reactivation"] == reactivation
        assert expected in text(job), text(job)
        others = [a for a in advice.values() if a != expected]
        assert not any(a in text(job) for a in others)
        # Every language says it its own way.
        assert len({text(job, lang) for lang in ("en", "zh-Hans", "zh-Hant", "fil", "es")}) == 5
    # A notice queued before the policy was named says what always works.
    old = {"msisdn": "+14155550100", "days_left": 7, "terminate_on": T.isoformat()}
    assert "Contact customer service" in text({"template": "line.termination_warning",
                                               "params": old})


async def test_warnings_render_in_every_language(db: Database, settings: Settings) -> None:
    from simcharge.notifications.templates import render

    params = {"msisdn": "+14155550100", "days_left": 7, "operator": "simcharge",
              "validity_end": T.isoformat(), "freeze_on": T.isoformat(),
              "terminate_on": T.isoformat(), "grace_ends": T.isoformat()}
    for template in ("line.validity_ending", "line.freeze_warning", "line.grace_ending",
                     "line.termination_warning", "line.entered_grace", "line.frozen",
                     "line.terminated"):
        texts = {lang: render(template, lang, params).text
                 for lang in ("en", "zh-Hans", "zh-Hant", "fil", "es")}
        assert len(set(texts.values())) == 5, template
        assert all("+14155550100" in t for t in texts.values())


# --- Top-ups and support -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reactivation", "by_owner", "expected"),
    [("topup", False, "active"), ("owner_topup", True, "active"),
     ("owner_topup", False, "frozen"), ("support", True, "frozen")],
)
async def test_a_top_up_brings_a_frozen_line_back_by_policy(
    db: Database, settings: Settings, reactivation: str, by_owner: bool, expected: str
) -> None:
    line = await new_line(db, state=LineState.frozen, validity_end=T + 30 * DAY)

    async def top_up(s: AsyncSession) -> bool:
        found = await s.get(Line, line.id)
        assert found is not None
        return on_topup(s, found, now=T, actor="order:x", by_owner=by_owner,
                        policy=policy(settings, lifecycle_frozen_reactivation=reactivation))

    changed = await db.run(top_up)
    found = await reload(db, line)
    assert (found.state, changed) == (expected, expected == "active")
    assert found.last_activity_at == T


async def test_a_top_up_without_validity_of_its_own_leaves_the_line_in_grace_when_set_to(
    db: Database, settings: Settings
) -> None:
    """`LIFECYCLE_TOPUP_VALIDITY_DAYS=0`: only a plan's validity reactivates a line in grace."""
    valid = await new_line(db, state=LineState.grace, validity_end=T + 30 * DAY)
    expired = await new_line(db, state=LineState.grace, validity_end=T - DAY)
    frozen_expired = await new_line(db, state=LineState.frozen, validity_end=T - DAY)
    none = policy(settings, lifecycle_topup_validity_days=0)

    async def top_up(s: AsyncSession) -> None:
        for line in (valid, expired, frozen_expired):
            found = await s.get(Line, line.id)
            assert found is not None
            on_topup(s, found, now=T, actor="order:x", by_owner=True, policy=none)

    await db.run(top_up)
    assert (await reload(db, valid)).state == "active"
    assert (await reload(db, expired)).state == "grace"
    assert (await reload(db, expired)).validity_end == T - DAY
    assert (await reload(db, frozen_expired)).state == "grace"
    assert [e.reason for e in await events_of(db, valid)] == ["topup"]


async def test_any_top_up_reactivates_a_line_in_grace_with_validity_days_from_now(
    db: Database, settings: Settings
) -> None:
    """By default a top-up that gives no validity of its own (money alone, a plan without
    validity) makes it run `LIFECYCLE_TOPUP_VALIDITY_DAYS` (30) from now; a longer validity is
    kept; a frozen line the policy keeps frozen gets none."""
    assert settings.lifecycle_topup_validity_days == 30
    valid = await new_line(db, state=LineState.grace, validity_end=T + 90 * DAY)
    expired = await new_line(db, state=LineState.grace, validity_end=T - DAY)
    frozen_expired = await new_line(db, state=LineState.frozen, validity_end=T - 60 * DAY)
    kept_frozen = await new_line(db, state=LineState.frozen, validity_end=T - 60 * DAY)

    async def top_up(s: AsyncSession) -> None:
        for line, rule in ((valid, "topup"), (expired, "topup"), (frozen_expired, "topup"),
                           (kept_frozen, "support")):
            found = await s.get(Line, line.id)
            assert found is not None
            on_topup(s, found, now=T, actor="order:x", by_owner=False,
                     policy=policy(settings, lifecycle_frozen_reactivation=rule))

    await db.run(top_up)
    assert ((await reload(db, valid)).state, (await reload(db, valid)).validity_end) == (
        "active", T + 90 * DAY)
    for line in (expired, frozen_expired):
        found = await reload(db, line)
        assert (found.state, found.validity_end) == ("active", T + 30 * DAY)
        assert [e.reason for e in await events_of(db, line)] == ["topup"]
    found = await reload(db, kept_frozen)
    assert (found.state, found.validity_end) == ("frozen", T - 60 * DAY)


async def test_a_top_up_after_the_validity_ended_and_before_the_sweep_is_not_undone(
    db: Database, settings: Settings
) -> None:
    """Between the end of its validity and the next sweep a line is still `active`: a top-up
    with no validity of its own (money alone) gives it validity as in grace, and the sweep that
    follows leaves it active and says nothing to the customer."""
    p = policy(settings)
    line = await new_line(db, validity_end=T - timedelta(minutes=1), last_activity_at=T - DAY)

    async def top_up(s: AsyncSession) -> None:
        found = await s.get(Line, line.id)
        assert found is not None
        assert not on_topup(s, found, now=T, actor="tmf654:x", by_owner=False, policy=p)

    await db.run(top_up)
    await sweep(db, p, now=T + timedelta(minutes=5))
    found = await reload(db, line)
    assert (found.state, found.validity_end) == ("active", T + 30 * DAY)
    assert await events_of(db, line) == []
    assert await jobs_for(db, line) == []


async def test_a_line_in_grace_is_told_the_freeze_that_comes_first(
    db: Database, settings: Settings
) -> None:
    """In grace a line is frozen at the end of grace or of its inactivity period, whichever
    comes first (as the forecast says): the "entered grace" notice and every warning name that
    date, never the later one."""
    p = policy(settings)  # grace 30 days, inactivity 180 days, warnings 7 and 1 days ahead
    await sweep(db, p, now=T - 10 * DAY)
    # Long in grace, its inactivity runs out 3 days from T, before the end of grace (T + 7 days).
    line = await new_line(db, state=LineState.grace, validity_end=T - 23 * DAY,
                          state_changed_at=T - 23 * DAY, last_activity_at=T - 177 * DAY)
    for at in (T - 4 * DAY + MINUTE, T + MINUTE, T + 2 * DAY + MINUTE, T + 3 * DAY + MINUTE):
        await sweep(db, p, now=at)
    assert (await reload(db, line)).state == "frozen"
    warned = sorted((j["params"]["days_left"], j["params"]["freeze_on"])
                    for j in await jobs_for(db, line) if j["template"] == "line.grace_ending")
    assert warned == [(1, (T + 3 * DAY).isoformat()), (7, (T + 3 * DAY).isoformat())]

    # Entering grace 5 days before its inactivity runs out: the notice says so.
    later = T + 4 * DAY
    soon = await new_line(db, validity_end=later - MINUTE, last_activity_at=later - 175 * DAY)
    await sweep(db, p, now=later)
    [entered] = [j for j in await jobs_for(db, soon) if j["template"] == "line.entered_grace"]
    assert entered["params"]["grace_ends"] == (later + 5 * DAY).isoformat()  # not + 30 days
    assert outlook(await reload(db, soon), p).freeze_at == later + 5 * DAY


async def test_support_unfreezes_a_line(db: Database, settings: Settings) -> None:
    line = await new_line(db, state=LineState.frozen, validity_end=T + 10 * DAY)
    expired = await new_line(db, state=LineState.frozen, validity_end=T - 10 * DAY)

    async def run(s: AsyncSession, target: Line) -> str:
        found = await s.get(Line, target.id)
        assert found is not None
        return (await unfreeze(s, found, by="agent7", reason="customer called", now=T)).state

    assert await db.run(lambda s: run(s, line)) == "active"
    assert await db.run(lambda s: run(s, expired)) == "grace"
    [event] = await events_of(db, line)
    assert (event.actor, event.reason) == ("staff:agent7", "support: customer called")
    # Not frozen any more: refused, nothing changes.
    with pytest.raises(LineNotFrozen):
        await db.run(lambda s: run(s, line))

    async def no_reason(s: AsyncSession) -> None:
        found = await s.get(Line, expired.id)
        assert found is not None
        await unfreeze(s, found, by="agent7", reason="  ")

    with pytest.raises(ValidationFailed):
        await db.run(no_reason)
    assert len(await events_of(db, line)) == 1
    # After support, the line does not freeze again at the next sweep.
    await sweep(db, policy(settings), now=T + timedelta(minutes=5))
    assert (await reload(db, line)).state == "active"
    assert (await reload(db, expired)).state == "grace"


# --- The worker ----------------------------------------------------------------------------


async def test_the_worker_runs_the_sweep_periodically(db: Database, settings: Settings) -> None:
    assert "lifecycle.sweep" in load_jobs().periodic
    line = await new_line(db, validity_end=datetime.now(UTC) - DAY)
    worker = Worker(db, settings, concurrency=2)
    try:
        await worker.run_once()
        await worker.drain()
    finally:
        await worker.close()
    assert (await reload(db, line)).state == "grace"


@pytest.mark.postgres_only
async def test_concurrent_sweeps_change_each_line_once(
    fresh_db: Database, settings: Settings
) -> None:
    due = [await new_line(fresh_db, validity_end=T - DAY) for _ in range(30)]
    p = policy(settings, lifecycle_batch_size=10)
    await asyncio.gather(*(sweep(fresh_db, p, now=T) for _ in range(4)))
    for line in due:
        assert (await reload(fresh_db, line)).state == "grace"
        assert len(await events_of(fresh_db, line)) == 1
        assert len(await jobs_for(fresh_db, line)) == 1


async def test_a_line_idle_in_grace_is_warned_before_it_freezes(
    db: Database, settings: Settings
) -> None:
    p = policy(settings)
    await sweep(db, p, now=T - DAY)
    line = await new_line(db, state=LineState.grace, validity_end=T - DAY,
                          state_changed_at=T - DAY,
                          last_activity_at=T - 173 * DAY - timedelta(hours=12))
    await sweep(db, p, now=T)
    [warning] = await jobs_for(db, line)
    assert (warning["template"], warning["params"]["days_left"]) == ("line.grace_ending", 7)


async def test_units_reserved_at_the_end_expire_once_released(
    db: Database, settings: Settings
) -> None:
    from simcharge.kit.ids import uuid7
    from simcharge.ledger.models import TransferKind
    from simcharge.ledger.service import NewTransfer, ensure_accounts, post_transfers

    line = await new_line(db, validity_end=T + 60 * DAY)
    sink = chart.consumption("DATA_B")

    async def fill(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID]:
        found = await s.get(Line, line.id)
        assert found is not None
        [bucket] = await grant_units(s, found, [UnitGrant("DATA_B", 1000, 1)],
                                     source=f"test:{line.id}", now=T - 2 * DAY)
        await ensure_accounts(s, [sink])
        pending = uuid7()
        await post_transfers(s, [NewTransfer(
            id=pending, amount=300, unit="DATA_B", debit_account_id=bucket,
            credit_account_id=sink.id, kind=TransferKind.pending)], now=T - 2 * DAY)
        return bucket, pending

    bucket, pending = await db.run(fill)

    async def left() -> tuple[int, int]:
        async with db.read() as s:
            a = await s.get(LedgerAccount, bucket, populate_existing=True)
            assert a is not None
            return a.credits_posted - a.debits_posted - a.debits_pending, a.debits_pending

    await sweep(db, policy(settings), now=T)
    assert await left() == (0, 300)
    await db.run(lambda s: post_transfers(s, [NewTransfer(
        id=uuid7(), pending_id=pending, kind=TransferKind.void_pending)], now=T))
    assert await left() == (300, 0)
    await sweep(db, policy(settings), now=T + timedelta(minutes=10))
    assert await left() == (0, 0)
    await assert_ledger_balanced(db)


async def test_a_paid_order_reactivates_a_frozen_line_and_says_so(
    client: Any, db: Database, settings: Settings
) -> None:
    from tests.factories import load_demo_catalog
    from tests.orders.helpers import new_payer, pay_at_sandbox, place

    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings, line_state=LineState.frozen)
    order = await place(client, payer, plan="starter-10")
    await pay_at_sandbox(client, settings, order)
    await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    line = await reload(db, payer.line)
    assert line.state == "active" and line.last_activity_at is not None
    [event] = await events_of(db, line)
    assert (event.from_state, event.reason, event.actor) == (
        "frozen", "topup", f"order:{order['id']}")


async def test_when_only_support_unfreezes_the_notice_says_so(
    db: Database, settings: Settings
) -> None:
    line = await new_line(db, state=LineState.grace, validity_end=T - 40 * DAY,
                          state_changed_at=T - 31 * DAY)
    await sweep(db, policy(settings, lifecycle_frozen_reactivation="support"), now=T)
    [job] = await jobs_for(db, line)
    assert job["template"] == "line.frozen_support"
