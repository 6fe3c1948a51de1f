"""A line's lifecycle.

    available ─top-up─▶ active ─validity ends─▶ grace ─grace over─▶ frozen ─too long─▶ terminated
                          │ ▲                   │ ▲                  ▲ │
                          │ └──────top-up───────┘ │                  │ │
                          └──────── no activity and no top-up ───────┘ │
                                   active ◀─ top-up (policy) or support ┘

The sweep (`sweep`, run by the worker every few minutes) does every change that time makes,
set-based: each rule is one indexed `UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP
LOCKED) RETURNING`, a batch per transaction, so it scales with the number of lines that change,
not with the number of lines; several workers may run it at once (skipped locks, idempotent
transfer ids, deduplicated notices). Warnings go out before each change, once per line and
change (a keyset mark per pass, and `dedupe_key`s).

Top-ups and support call `on_topup` and `unfreeze` in their own transaction.

Customer service may also **suspend** a line in service (active, grace or frozen: a SIM
reported lost or stolen) and **resume** it (`suspend`, `resume`). A suspended line is outside
every rule above: it is denied service, takes top-ups without changing state, and the sweep
neither freezes nor terminates it (no rule starts from `suspended`), however long it stays so;
its validity keeps running. Resuming puts it where those rules say (`resume`).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.nchf import end_sessions_of_lines
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Conflict, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.translations import N_
from simcharge.ledger import chart
from simcharge.ledger.models import TransferKind
from simcharge.ledger.service import (
    NewTransfer,
    TransferOutcome,
    TransferResult,
    create_transfers,
    ensure_accounts,
    lock_expirable_holds,
    release_timed_out,
)
from simcharge.lifecycle.models import LineEvent
from simcharge.lifecycle.repository import LifecycleRepository, lines
from simcharge.lines.models import Line, LineState
from simcharge.lines.service import LineNotInService
from simcharge.notifications.service import notice
from simcharge.worker.service import NewJob, enqueue_many

log = structlog.get_logger("simcharge.lifecycle")
audit = structlog.get_logger("simcharge.audit")

DAY = timedelta(days=1)
WARNING_JOB = "lifecycle.warning"
"""Every lifecycle warning is queued as this job and judged again when it goes out: the payload
of a `notifications.deliver` job, delivered by `lifecycle.jobs.send_warning` if still true —
the date it names still the line's and still ahead, its days left counted from then. (Queued as
a plain delivery, a warning that waited in a late queue went out as it was: "valid until" a
day gone by, or "7 days" left when 5 were.)"""
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
BUCKET_LOOKBACK = timedelta(days=8)
"""The bucket pass looks this far behind its last complete run, for units a hold frees after
the bucket's end: longer than the longest hold a bucket can carry (a TMF654 reservation,
`tmf654.service.MAX_RESERVATION`, 7 days) plus the time the ledger takes to release one after
its timeout (`ledger.expire_pending`, every 30 s) — a day's margin."""


@dataclass(frozen=True, slots=True)
class Policy:
    grace: timedelta
    inactivity: timedelta
    termination: timedelta
    warning_days: tuple[int, ...]
    frozen_reactivation: str
    batch: int
    topup_validity: timedelta = timedelta(0)
    settings: Settings = field(kw_only=True, compare=False, repr=False)
    """The settings the policy was read from, handed on where the sweep calls another module
    that takes them (`charging.nchf.end_sessions_of_lines`): never the process's own."""

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            grace=timedelta(days=settings.lifecycle_grace_days),
            inactivity=timedelta(days=settings.lifecycle_inactivity_days),
            termination=timedelta(days=settings.lifecycle_termination_days),
            warning_days=tuple(sorted(set(settings.lifecycle_warning_days), reverse=True)),
            frozen_reactivation=settings.lifecycle_frozen_reactivation,
            batch=settings.lifecycle_batch_size,
            topup_validity=timedelta(days=settings.lifecycle_topup_validity_days),
            settings=settings,
        )

    def frozen_from_grace(self, entered: datetime, last_activity: datetime | None) -> datetime:
        """When a line in grace since `entered` is frozen: at the end of grace, or sooner when its
        inactivity runs out first (a line that never had activity counts from `entered`). The
        sweep's rules, its notices and `forecast.outlook` all say this one date."""
        return min(entered + self.grace, (last_activity or entered) + self.inactivity)


class LineNotFrozen(Conflict):
    slug = "line-not-frozen"
    title = N_("The line is not frozen.")


class LineWouldFreezeAgain(Conflict):
    slug = "line-would-freeze-again"
    title = N_("Unfrozen now, the line would be frozen again at once.")


class LineAlreadySuspended(Conflict):
    slug = "line-already-suspended"
    title = N_("The line is already suspended.")


class LineNotSuspended(Conflict):
    slug = "line-not-suspended"
    title = N_("The line is not suspended.")


SUSPENDABLE = frozenset({LineState.active, LineState.grace, LineState.frozen})
"""The states a line may be suspended from: in service. One in stock was never sold, one
terminated is gone (`lines.service.LineNotInService`)."""
SUSPENDED_NOTICE = "line.suspended"
RESUMED_NOTICE = "line.resumed"


# ---------------------------------------------------------------------------------------------
# One line at a time: top-ups and support


def _valid(line: Line, now: datetime) -> bool:
    return line.validity_end is None or line.validity_end > now


def _change(
    session: AsyncSession, line: Line, to: LineState, *, reason: str, actor: str, now: datetime
) -> None:
    session.add(
        LineEvent(
            id=uuid7(),
            line_id=line.id,
            from_state=line.state,
            to_state=to.value,
            reason=reason[:255],
            actor=actor[:120],
            created_at=now,
        )
    )
    line.state, line.state_changed_at = to.value, now


def on_topup(
    session: AsyncSession,
    line: Line,
    *,
    now: datetime,
    actor: str,
    by_owner: bool,
    policy: Policy,
) -> bool:
    """A paid top-up was credited to `line` (locked by the caller, validity already extended).

    A top-up counts as activity. A suspended line stays suspended (the top-up is credited: a
    thief must not bring a lost SIM back by paying for it); its owner's balance waits for
    customer service to resume it. It brings a line out of stock or grace; out of frozen only if
    the policy lets a top-up do so (`topup`: any paid top-up; `owner_topup`: one paid by the
    line's owner; `support`: never). When the validity of such a line is still over after the
    top-up (money alone, a plan without validity), it runs `policy.topup_validity` from now;
    with none (0), a line in grace stays there and a frozen one comes back in grace, with a
    full grace period — or, with no grace period at all, stays frozen (a grace of no length
    would be over at the next sweep, which would freeze it again and say so just after the
    top-up). Returns whether the state changed."""
    line.last_activity_at = now
    state = LineState(line.state)
    # An active line whose validity has just ended is in grace in all but name until the next
    # sweep: a top-up then gives it validity as it would in grace (else the sweep undoes it).
    lapsed = state is LineState.active and not _valid(line, now)
    brought_back = state is LineState.grace or lapsed or (
        state is LineState.frozen
        and (
            policy.frozen_reactivation == "topup"
            or (policy.frozen_reactivation == "owner_topup" and by_owner)
        )
    )
    if brought_back and not _valid(line, now) and policy.topup_validity:
        line.validity_end = now + policy.topup_validity
    target: LineState | None = None
    if state is LineState.available or (state is LineState.grace and _valid(line, now)):
        target = LineState.active
    elif state is LineState.frozen and brought_back:
        if _valid(line, now):
            target = LineState.active
        elif policy.grace > timedelta(0):
            target = LineState.grace
    if target is None:
        return False
    _change(session, line, target, reason="topup", actor=actor, now=now)
    return True


async def unfreeze(
    session: AsyncSession,
    line: Line,
    *,
    by: str,
    reason: str,
    now: datetime | None = None,
    policy: Policy | None = None,
) -> Line:
    """Customer service brings a frozen line back: active if its validity runs, else in grace
    with a full grace period to top up. The activity clock restarts. Audited.

    With no grace period in the `policy` (`LIFECYCLE_GRACE_DAYS=0`), a line whose validity has
    ended is refused (`LineWouldFreezeAgain`): a grace of no length is over at the next sweep,
    which would freeze the line again and tell the customer so just after support helped. A
    top-up with a package that gives validity comes first (it extends the validity of a frozen
    line too); then the line is unfrozen into `active`."""
    now = now or utcnow()
    if not reason.strip():
        raise ValidationFailed(N_("Say why the line is unfrozen."), field="reason")
    if not by.strip():
        raise ValidationFailed(N_("Say who unfreezes the line."), field="by")
    await session.refresh(line, with_for_update=True)
    if line.state != LineState.frozen:
        raise LineNotFrozen(
            N_("Line {msisdn} is {state}, not frozen."),
            field="line_id",
            msisdn=line.msisdn,
            state=line.state,
        )
    target = LineState.active if _valid(line, now) else LineState.grace
    if target is LineState.grace and policy is not None and policy.grace <= timedelta(0):
        raise LineWouldFreezeAgain(
            N_(
                "The validity of line {msisdn} has ended and lines have no grace period: "
                "unfrozen, it would be frozen again at once. Top it up with a package that "
                "gives validity, then unfreeze it."
            ),
            field="line_id",
            msisdn=line.msisdn,
        )
    line.last_activity_at = now
    _change(session, line, target, reason=f"support: {reason.strip()}", actor=f"staff:{by}", now=now)
    await session.flush()
    audit.info("line.unfrozen", line_id=str(line.id), by=by, reason=reason, state=target.value)
    return line


async def suspend(
    session: AsyncSession, line: Line, *, by: str, reason: str, now: datetime | None = None
) -> LineState:
    """Customer service stops a line in service (a SIM reported lost or stolen): `suspended`
    until staff resume it. Returns the state it was in. The caller has checked `reason` and
    locked the line; its owner is told (`line.suspended`). Its charging sessions stay open:
    each one's next request is denied (`charging.nchf.line_may_charge`), and what it reported
    used until then is charged, as for a frozen line."""
    now = now or utcnow()
    state = LineState(line.state)
    if state is LineState.suspended:
        raise LineAlreadySuspended(
            N_("Line {msisdn} is already suspended."), field="line_id", msisdn=line.msisdn
        )
    if state not in SUSPENDABLE:
        raise LineNotInService(
            N_("Line {msisdn} is {state}: only a line in service can be suspended."),
            field="line_id",
            msisdn=line.msisdn,
            state=line.state,
        )
    _change(session, line, LineState.suspended, reason=f"suspended: {reason}", actor=by, now=now)
    await _tell(session, line, SUSPENDED_NOTICE, now)
    await session.flush()
    audit.info("line.suspended", line_id=str(line.id), by=by, reason=reason, was=state.value)
    return state


async def resume(
    session: AsyncSession,
    line: Line,
    *,
    by: str,
    reason: str,
    policy: Policy,
    now: datetime | None = None,
) -> LineState:
    """Customer service resumes a suspended line (locked by the caller, `reason` checked) into
    the state the lifecycle's rules give it now, and tells its owner (`line.resumed`):

    - a line that was frozen when it was suspended is frozen again (a suspension unfreezes
      nothing: `unfreeze` does that), its termination period counted from now;
    - else, its validity running, `active`; its validity ended (it may have run out during the
      suspension), in grace with a full grace period to top up, as `unfreeze` does — or frozen
      with no grace period (`LIFECYCLE_GRACE_DAYS=0`), as the sweep freezes a line whose
      validity ends then.

    The activity clock restarts (the line could not be used while suspended). Returns the new
    state."""
    now = now or utcnow()
    if line.state != LineState.suspended:
        raise LineNotSuspended(
            N_("Line {msisdn} is {state}, not suspended."),
            field="line_id",
            msisdn=line.msisdn,
            state=line.state,
        )
    was = await _state_before_suspension(session, line.id)
    if was is LineState.frozen:
        target = LineState.frozen
    elif _valid(line, now):
        target = LineState.active
    elif policy.grace > timedelta(0):
        target = LineState.grace
    else:
        target = LineState.frozen
    if target is not LineState.frozen:
        line.last_activity_at = now
    _change(session, line, target, reason=f"resumed: {reason}", actor=by, now=now)
    await _tell(session, line, RESUMED_NOTICE, now, state=target.value)
    await session.flush()
    audit.info("line.resumed", line_id=str(line.id), by=by, reason=reason, state=target.value)
    return target


async def _state_before_suspension(session: AsyncSession, line_id: uuid.UUID) -> LineState:
    """The state the line was suspended from: its latest change into `suspended` (the index on
    `line_events (line_id, created_at)`)."""
    found = await session.scalar(
        select(LineEvent.from_state)
        .where(LineEvent.line_id == line_id, LineEvent.to_state == LineState.suspended.value)
        .order_by(LineEvent.created_at.desc(), LineEvent.id.desc())
        .limit(1)
    )
    return LineState(found) if found else LineState.active


async def _tell(
    session: AsyncSession, line: Line, template: str, now: datetime, **params: str
) -> None:
    """The owner's notice of a staff change of their line's state (none for a line no one
    holds), queued in the change's transaction; its key names the change, so a retry of the
    transaction queues it once."""
    if line.account_id is None:
        return
    job = notice(
        account_id=line.account_id,
        template=template,
        params={"msisdn": line.msisdn, **params},
        line_id=line.id,
        dedupe_key=f"lifecycle:{template}:{line.id}:{now.isoformat()}",
    )
    await enqueue_many(session, [job])


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepReport:
    changed: dict[str, int] = field(default_factory=dict)
    expired_buckets: int = 0
    forfeited: int = 0
    warned: int = 0
    activity_clocks: int = 0

    def add(self, key: str, n: int) -> None:
        self.changed[key] = self.changed.get(key, 0) + n


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    from_state: LineState
    to_state: LineState
    template: str


_RULES = {
    # Inactivity first: a line both idle too long and past its validity is frozen at once, not
    # put in a grace whose end (`Policy.frozen_from_grace`) has already passed.
    "inactive": _Rule("inactive", LineState.active, LineState.frozen, "line.frozen"),
    "validity_ended": _Rule("validity_ended", LineState.active, LineState.grace, "line.entered_grace"),
    "grace_over": _Rule("grace_over", LineState.grace, LineState.frozen, "line.frozen"),
    "inactive_in_grace": _Rule("inactive", LineState.grace, LineState.frozen, "line.frozen"),
    "frozen_too_long": _Rule(
        "frozen_too_long", LineState.frozen, LineState.terminated, "line.terminated"
    ),
}


def _due(key: str, policy: Policy, now: datetime) -> ColumnElement[bool]:
    c = lines.c
    if key == "validity_ended":
        return c.validity_end <= now
    if key == "grace_over":
        return c.state_changed_at <= now - policy.grace
    if key in ("inactive", "inactive_in_grace"):
        return c.last_activity_at <= now - policy.inactivity
    return c.state_changed_at <= now - policy.termination


async def sweep(db: Database, policy: Policy, *, now: datetime | None = None) -> SweepReport:
    """Everything time has made due, a batch per transaction: buckets expire, lines change
    state, customers are warned of what comes next."""
    now = now or utcnow()
    report = SweepReport()
    while (n := await db.run(lambda s: LifecycleRepository(s).start_activity_clocks(policy.batch))):
        report.activity_clocks += n
        if n < policy.batch:
            break
    await expire_buckets(db, policy, now=now, report=report)
    for key in _RULES:
        while await db.run(partial(_apply_rule, key=key, policy=policy, now=now, report=report)):
            pass
    for w in _warning_passes(policy):
        for days in policy.warning_days:
            warn = partial(_warn, w=w, days=days, policy=policy, now=now, report=report)
            while not await db.run(warn):
                pass
        arrivals = partial(_warn_arrivals, w=w, policy=policy, now=now, report=report)
        while not await db.run(arrivals):
            pass
    if any(report.changed.values()) or report.expired_buckets or report.warned:
        log.info(
            "lifecycle.swept",
            changed=report.changed,
            expired_buckets=report.expired_buckets,
            forfeited=report.forfeited,
            warned=report.warned,
        )
    return report


async def _apply_rule(
    session: AsyncSession, *, key: str, policy: Policy, now: datetime, report: SweepReport
) -> bool:
    """One batch of a rule; True if there may be more."""
    rule = _RULES[key]
    if key == "validity_ended" and policy.grace <= timedelta(0):
        # No grace at all: a line whose validity ends is frozen, told once.
        rule = _Rule("validity_ended", LineState.active, LineState.frozen, "line.frozen")
    repo = LifecycleRepository(session)
    rows = await repo.change_states(
        from_state=rule.from_state,
        to_state=rule.to_state,
        due=_due(key, policy, now),
        now=now,
        limit=policy.batch,
    )
    if not rows:
        return False
    await repo.add_events(
        [
            {
                "id": uuid7(),
                "line_id": r.id,
                "from_state": rule.from_state.value,
                "to_state": rule.to_state.value,
                "reason": rule.name,
                "actor": "sweep",
                "created_at": now,
            }
            for r in rows
        ]
    )
    jobs: list[NewJob] = []
    for r in rows:
        if r.account_id is None:
            continue
        params: dict[str, Any] = {"msisdn": r.msisdn}
        template = rule.template
        if rule.to_state is LineState.frozen:
            if policy.frozen_reactivation == "support":
                template = "line.frozen_support"  # a top-up will not bring it back: say so
            else:
                # Which top-up brings it back: any (`topup`), or the owner's (`owner_topup`).
                params["reactivation"] = policy.frozen_reactivation
        if rule.to_state is LineState.grace:
            params["grace_ends"] = policy.frozen_from_grace(now, r.last_activity_at).isoformat()
        jobs.append(
            notice(
                account_id=r.account_id,
                template=template,
                params=params,
                line_id=r.id,
                dedupe_key=f"lifecycle:{rule.to_state.value}:{r.id}:{now.isoformat()}",
            )
        )
    await enqueue_many(session, jobs)
    if rule.to_state is LineState.terminated:
        report.forfeited += await _forfeit(session, [r.id for r in rows], now, policy.settings)
    report.add(f"{rule.from_state.value}->{rule.to_state.value}", len(rows))
    return len(rows) >= policy.batch


async def _forfeit(
    session: AsyncSession, line_ids: Sequence[uuid.UUID], now: datetime, settings: Settings
) -> int:
    """A terminated line's money and units go to the expiry accounts (prepaid credit is
    forfeited on termination; finance may give it back by an adjustment).

    Its open charging sessions are ended first, their reservations released, and so is any
    other hold on its accounts (a TMF654 reservation, which then reads cancelled): what they
    held is forfeited with the rest, and nothing comes back to the line afterwards. A refund's
    hold (`LifecycleRepository.open_holds`) is left to the refund: it is the payer's money on
    its way back, which the refund posts when the provider has paid it. Done once,
    as the line changes to terminated: the transfer ids derive from the accounts alone.
    (Ending sessions reads nothing from `settings`: they are the sweep's, passed on because
    `end_sessions_of_lines` takes them.)

    The holds the ledger's timeout sweep may release are locked first, before ending the
    sessions locks the line's pots: the ledger's order (reservations, then accounts), which the
    sweep keeps too. Voided after the pots, they waited crosswise with a sweep releasing one."""
    await lock_expirable_holds(session, line_ids)
    await end_sessions_of_lines(session, settings, line_ids, now=now)
    repo = LifecycleRepository(session)
    holds = await repo.open_holds(line_ids)
    if holds:
        released = [
            NewTransfer(id=derived_id("terminate", pid), kind=TransferKind.void_pending,
                        pending_id=pid, code="forfeit", reference=str(pid))
            for pid in holds
        ]  # fmt: skip
        outcomes = await create_transfers(session, released, now=now)
        # A hold past its timeout that the ledger's job has not released yet cannot be voided:
        # it is released here as that job would, so that it is forfeited with the rest.
        timed_out = [
            pid for pid, o in zip(holds, outcomes, strict=True)
            if o.result is TransferResult.pending_transfer_expired
        ]  # fmt: skip
        await release_timed_out(session, timed_out, now=now)
    batch = await forfeit_transfers(session, line_ids, lambda account: ("terminate", account))
    if not batch:
        return 0
    outcomes = await create_transfers(session, batch, now=now)
    return _created(outcomes)


def _created(outcomes: Sequence[TransferOutcome]) -> int:
    """How many of the transfers this run created itself: not those another run (a second
    worker's sweep, a retry) had created already, which the ledger reports `exists` — counted by
    both, the sweeps' logs added up to more than was done."""
    return sum(1 for o in outcomes if o.result is TransferResult.ok)


async def forfeit_transfers(
    session: AsyncSession,
    line_ids: Sequence[uuid.UUID],
    id_parts: Callable[[uuid.UUID], tuple[object, ...]],
) -> list[NewTransfer]:
    """The transfers that forfeit what the lines' accounts hold (not reserved) to
    `expiry:<unit>` / `expiry:<CUR>` (created if need be), code `forfeit`, reference
    `line:<id>`; each transfer's id derives from `id_parts(account id)`, so that a rerun is
    `exists`. Termination's, and a refund's refused after it (`orders.refunds`)."""
    rows = await LifecycleRepository(session).holdings(line_ids)
    if not rows:
        return []
    expiry = {(r.unit, r.line_id): chart.expiry(r.unit, chart.shard_of(r.line_id)) for r in rows}
    await ensure_accounts(session, list({a.id: a for a in expiry.values()}.values()))
    return [
        NewTransfer(
            id=derived_id(*id_parts(r.id)),
            amount=int(r.available),
            unit=r.unit,
            debit_account_id=r.id,
            credit_account_id=expiry[(r.unit, r.line_id)].id,
            code="forfeit",
            reference=f"line:{r.line_id}",
        )
        for r in rows
    ]


async def expire_buckets(
    db: Database, policy: Policy, *, now: datetime | None = None, report: SweepReport | None = None
) -> int:
    """Move what is left in buckets past their end to `expiry:<unit>`, a batch per transaction.

    The transfer id derives from the bucket and what it had used: a second run (another worker,
    a retry) names the same transfer and changes nothing; units freed later (a reservation
    released after the end) are swept by a later run."""
    now = now or utcnow()
    report = report or SweepReport()
    name = "buckets"

    async def since(s: AsyncSession) -> datetime | None:
        at, _ = await LifecycleRepository(s).mark(name, NEVER)
        return None if at <= NEVER else at - BUCKET_LOOKBACK

    lower = await db.run(since)
    total = 0
    while True:
        created, moved, seen = await db.run(lambda s: _expire_batch(s, now, lower, policy.batch))
        total += created
        if seen < policy.batch or moved == 0:
            break

    async def finish(s: AsyncSession) -> None:
        await LifecycleRepository(s).mark(name, now)
        await LifecycleRepository(s).set_mark(name, now, None)

    await db.run(finish)
    report.expired_buckets += total
    return total


async def _expire_batch(
    session: AsyncSession, now: datetime, since: datetime | None, limit: int
) -> tuple[int, int, int]:
    """One batch: the expiries this run created, those that are done (by it or by another
    run at the same time), and the buckets it looked at."""
    rows = await LifecycleRepository(session).expired_buckets(now, since, limit)
    if not rows:
        return 0, 0, 0
    expiry = {r.id: chart.expiry(r.unit, chart.shard_of(r.line_id)) for r in rows}
    await ensure_accounts(session, list({a.id: a for a in expiry.values()}.values()))
    batch = [
        NewTransfer(
            id=derived_id("bucket-expiry", r.id, int(r.debits_posted)),
            amount=int(r.available),
            unit=r.unit,
            debit_account_id=r.id,
            credit_account_id=expiry[r.id].id,
            code="expiry",
            reference=f"bucket:{r.id}",
        )
        for r in rows
    ]
    outcomes = await create_transfers(session, batch, now=now)
    return _created(outcomes), sum(1 for o in outcomes if o.ok), len(rows)


# ---------------------------------------------------------------------------------------------
# Warnings


@dataclass(frozen=True, slots=True)
class _Warning:
    """Warn lines in `state` `days` before `column + offset` (the change's time)."""

    name: str
    state: LineState
    column: str
    offset: timedelta
    template: str
    date_param: str
    dedupe: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    """More of the notice's params: what the template needs to say what keeps the line."""
    rival: tuple[str, timedelta, bool] | None = None
    """Another way to the same change (`column`, `offset`, wins a tie): a line whose change comes
    sooner that way is warned by the other pass, so the customer hears one date, the right one."""
    told_on_arrival: bool = False
    """The notice of the change into `state` already says when the line changes next (entering
    grace: `grace_ends`): a line arriving there with a warning time gone by is not warned again
    (`_warn_arrivals`). An active line back by a top-up or support was told nothing of its
    validity's end, nor a frozen line of when it closes."""


def _warning_passes(policy: Policy) -> list[_Warning]:
    return [
        _Warning(
            "validity", LineState.active, "validity_end", timedelta(0),
            "line.validity_ending", "validity_end",
        ),
        _Warning(
            "inactive", LineState.active, "last_activity_at", policy.inactivity,
            "line.freeze_warning", "freeze_on",
        ),
        # A line may enter grace between its inactivity warnings: the same warning, looked for
        # among lines in grace by a pass of its own (the dedupe key is shared). A line in grace
        # cannot be used: what keeps it is a top-up, as for the end of grace.
        # A line in grace is frozen by whichever comes first: the end of grace or of its
        # inactivity period. Each of the two passes leaves to the other the lines it reaches
        # sooner.
        _Warning(
            "inactive_grace", LineState.grace, "last_activity_at", policy.inactivity,
            "line.grace_ending", "freeze_on", dedupe="inactive",
            rival=("state_changed_at", policy.grace, True), told_on_arrival=True,
        ),
        _Warning(
            "grace", LineState.grace, "state_changed_at", policy.grace,
            "line.grace_ending", "freeze_on",
            rival=("last_activity_at", policy.inactivity, False), told_on_arrival=True,
        ),
        _Warning(
            "termination", LineState.frozen, "state_changed_at", policy.termination,
            "line.termination_warning", "terminate_on",
            params=(("reactivation", policy.frozen_reactivation),),
        ),
    ]


async def _warn(
    session: AsyncSession,
    *,
    w: _Warning,
    days: int,
    policy: Policy,
    now: datetime,
    report: SweepReport,
) -> bool:
    """One batch of a warning pass; True when the pass has caught up with `now`.

    The mark is a position in "warning time" (the change's time minus `days`): every line whose
    warning time is up to it has been seen. A line whose change comes sooner than a shorter
    warning is left to that warning, so a late run does not send both.

    The mark is the pass's under the periods in force (`_periods`): when settings change a
    period, every line's warning time moves, and a pass under the new periods starts afresh —
    each line whose change is now within `days` (and not within a shorter warning) is warned,
    with the new date. A mark further back than `days` before now is brought up to there: the
    lines before it have their change behind them (none is warned of a change gone by)."""
    repo = LifecycleRepository(session)
    name = f"warn:{w.name}:{days}:{_periods(w)}"
    lead = timedelta(days=days)
    at, last_id = await repo.mark(name, now - lead, formerly=f"warn:{w.name}:{days}")
    if at < now - lead:
        at, last_id = now - lead, None
    shift = w.offset - lead  # warning time = column + shift
    rows = await repo.lines_in_window(
        state=w.state,
        column=w.column,
        after=at - shift,
        after_id=last_id,
        until=now - shift,
        limit=policy.batch,
        also=w.rival[0] if w.rival else None,
    )
    shorter = [d for d in policy.warning_days if d < days]
    jobs: list[NewJob] = []
    for r in rows:
        left = r.anchor + w.offset - now
        if any(left <= timedelta(days=d) for d in shorter):
            continue
        job = _warning(w, days, r, now)
        if job is not None:
            jobs.append(job)
    return await _queued(repo, name, jobs, rows, policy=policy, now=now, report=report, shift=shift)


def _periods(w: _Warning) -> str:
    """The periods that place a pass's warning times (its own, its rival's), in seconds — part
    of its mark's name. (Marks named without them, before there were any, are where the
    same passes start.)"""
    offsets = [w.offset, *([w.rival[1]] if w.rival else [])]
    return "/".join(f"{int(o.total_seconds())}s" for o in offsets)


async def _queued(
    repo: LifecycleRepository,
    name: str,
    jobs: list[NewJob],
    rows: list[Any],
    *,
    policy: Policy,
    now: datetime,
    report: SweepReport,
    shift: timedelta = timedelta(0),
) -> bool:
    """Queue a batch's warnings and move the pass's mark past the batch (its keyset `key`,
    shifted into warning time); True when the pass has caught up with `now`."""
    await enqueue_many(repo.session, jobs)
    report.warned += len(jobs)
    if len(rows) < policy.batch:
        await repo.set_mark(name, now, None)
        return True
    last = rows[-1]
    await repo.set_mark(name, last.key + shift, last.id)
    return False


def _warning(w: _Warning, days: int, r: Any, now: datetime) -> NewJob | None:
    """The `days` warning of pass `w` for line `r` (its `anchor`, and its rival's `other`), or
    None: the line has no owner, its change is past, or the rival way comes sooner."""
    change_at: datetime = r.anchor + w.offset
    left = change_at - now
    if r.account_id is None or left <= timedelta(0):
        return None
    if w.rival is not None and r.other is not None:
        rival_at: datetime = r.other + w.rival[1]
        if rival_at < change_at or (rival_at == change_at and w.rival[2]):
            return None
    job = notice(
        account_id=r.account_id,
        template=w.template,
        params={
            "msisdn": r.msisdn,
            "days_left": math.ceil(left / DAY),
            w.date_param: change_at.isoformat(),
            **dict(w.params),
        },
        line_id=r.id,
        # The date it names: a period changed by settings gives a new date, warned of again.
        dedupe_key=f"lifecycle:warn:{w.dedupe or w.name}:{days}:{r.id}:{change_at.isoformat()}",
        # What the warning was built on: not sent if the line has moved on meanwhile.
        about={"state": w.state.value, w.column: r.anchor.isoformat()},
    )
    # Judged again when it goes out (`lifecycle.jobs.warning_to_send`): the line may have moved
    # on, or to another state where what it says is still true (an active line's inactivity
    # freeze, after it entered grace), and the queue may be late.
    return NewJob(WARNING_JOB, job.payload, dedupe_key=job.dedupe_key)


async def _warn_arrivals(
    session: AsyncSession, *, w: _Warning, policy: Policy, now: datetime, report: SweepReport
) -> bool:
    """One batch of a pass over the lines that came into `w.state` since its last run (a top-up
    or support brought a frozen line back, a line entered grace): their warning times may have
    gone by before they got there, which the passes by warning time never look at again. Each
    such line with a warning already due gets the nearest one (the least days ahead that its
    change is within) — with the key the pass of those days would give it, so never twice;
    the shorter warnings still ahead come from their own passes. True when caught up."""
    if not policy.warning_days or w.told_on_arrival:
        return True
    repo = LifecycleRepository(session)
    name = f"warn:{w.name}:arrivals"
    at, last_id = await repo.mark(name, now)
    rows = await repo.lines_in_window(
        state=w.state,
        column=w.column,
        after=at,
        after_id=last_id,
        until=now,
        limit=policy.batch,
        also=w.rival[0] if w.rival else None,
        by="state_changed_at",
    )
    jobs: list[NewJob] = []
    for r in rows:
        left = r.anchor + w.offset - now
        due = [d for d in policy.warning_days if left <= timedelta(days=d)]
        job = _warning(w, min(due), r, now) if due else None
        if job is not None:
            jobs.append(job)
    return await _queued(repo, name, jobs, rows, policy=policy, now=now, report=report)
