"""Balance actions on the ledger: top-up, adjustment, reservation, transfer between lines.

Every movement is a ledger transfer whose id derives from the action, so a retried action
names the same transfers; a reservation is a pending transfer (posted on completion, voided on
cancellation, released by the ledger's sweep at its timeout). The TMF654 API and the portal's
transfer call these functions; they flush, never commit.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.models import Adjustment, AdjustmentState
from simcharge.backoffice.money import AdjustmentNeedsAPerson, adjustment_facts, needs_approval
from simcharge.backoffice.money import InsufficientBalance as InsufficientBalance  # re-exported
from simcharge.config import Settings
from simcharge.db import RetryableError
from simcharge.errors import Conflict, IdempotencyKeyReused, NotFound, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.money import from_minor
from simcharge.kit.translations import N_
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, PendingStatus, TransferKind
from simcharge.ledger.service import (
    NewAccount,
    NewTransfer,
    TransferRejected,
    TransferResult,
    ensure_accounts,
    post_transfers,
)
from simcharge.lifecycle.service import Policy, on_topup
from simcharge.lines.models import Bucket, Line, LineState
from simcharge.lines.service import LineNotInService as LineNotInService  # re-exported
from simcharge.lines.service import UnitGrant, bucket_id, open_buckets
from simcharge.tmf654.models import ActionKind, ActionStatus, BalanceAction

USAGE_UNITS = {"voice": "VOICE_S", "data": "DATA_B", "sms": "SMS"}
UNIT_USAGE = {v: k for k, v in USAGE_UNITS.items()}
MAX_RESERVATION = timedelta(days=7)
DEFAULT_RESERVATION = timedelta(hours=1)
LATEST_END = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
"""The latest end a top-up's new bucket may have (it is opened for the whole days to the end
asked for, then given that end exactly: now plus those days must still be a date)."""
MB = 1024 * 1024
TOPUP_CODE = "tmf_topup"
"""The code of a TMF654 top-up's transfers: told apart from a plan's wallet credit (`topup`)."""


class BalanceActionNotFound(NotFound):
    slug = "balance-action-not-found"
    title = N_("No such balance action.")


class AccumulatedBalanceNotFound(NotFound):
    slug = "accumulated-balance-not-found"
    title = N_("No such accumulated balance.")


class BucketNotFound(NotFound):
    slug = "bucket-not-found"
    title = N_("No such bucket.")


class TransferLimitExceeded(Conflict):
    slug = "transfer-limit-exceeded"
    title = N_("This transfer is over a limit.")


class TopupLimitExceeded(Conflict):
    slug = "topup-limit-exceeded"
    title = N_("This top-up is over the limit.")


class ReservationNotOpen(Conflict):
    slug = "reservation-not-open"
    title = N_("The reservation is no longer open.")


@dataclass(frozen=True, slots=True)
class Holder:
    """A ledger account that holds money or units for a line: its wallet or one bucket."""

    line: Line
    account_id: uuid.UUID
    unit: str
    bucket: Bucket | None

    @property
    def usage_type(self) -> str:
        return "monetary" if self.bucket is None else UNIT_USAGE.get(self.unit, "other")


def unit_for(line: Line, usage_type: str) -> str:
    if usage_type == "monetary":
        return line.currency
    unit = USAGE_UNITS.get(usage_type)
    if unit is None:
        raise ValidationFailed(
            N_("Usage type {value} is not supported."), field="usageType", value=usage_type
        )
    return unit


async def holder_of(session: AsyncSession, account_id: uuid.UUID) -> Holder | None:
    """The wallet or bucket whose ledger account is `account_id`, with its line."""
    bucket = await session.get(Bucket, account_id)
    if bucket is not None:
        line = await session.get(Line, bucket.line_id)
        assert line is not None
        return Holder(line, bucket.id, bucket.unit, bucket)
    line = (
        await session.execute(select(Line).where(Line.wallet_account_id == account_id))
    ).scalar_one_or_none()
    return None if line is None else Holder(line, line.wallet_account_id, line.currency, None)


async def available(session: AsyncSession, account_id: uuid.UUID) -> int:
    row = await session.get(LedgerAccount, account_id, populate_existing=True)
    assert row is not None
    return row.credits_posted - row.debits_posted - row.debits_pending


# ---------------------------------------------------------------------------------------------
# Idempotency


LEGACY_USED = "_used"
"""Where a completed reservation's used amount was once written, into its stored request (no
longer: the settle transfer says it, `used_amount`). Rows written so still replay."""


async def replay(
    session: AsyncSession,
    actor: str,
    key: str | None,
    request: dict[str, Any],
    kind: ActionKind,
    *,
    also: Sequence[str] = (),
) -> BalanceAction | None:
    """The action already made under this key by this caller (same kind of action, same
    request), or None. The key names one request: another body, or the same body sent as
    another kind of action, is refused. `also`: other actors that are the same caller (an API
    key's client's other keys, `apikey:<prefix>`: a key and its rotation's successor share
    their idempotency keys); the caller's own action first, else the earliest."""
    if key is None:
        return None
    actors = [actor, *(a for a in also if a != actor)]
    found = (
        await session.execute(
            select(BalanceAction)
            .where(BalanceAction.actor.in_(actors), BalanceAction.idempotency_key == key)
            .order_by((BalanceAction.actor == actor).desc(), BalanceAction.requested_at)
            .limit(1)
        )
    ).scalar_one_or_none()
    if found is None:
        return None
    stored = found.request
    if LEGACY_USED in stored and LEGACY_USED not in request:
        stored = {k: v for k, v in stored.items() if k != LEGACY_USED}
    if found.kind != kind.value or stored != request:
        raise IdempotencyKeyReused(field="Idempotency-Key")
    return found


async def _add_action(session: AsyncSession, action: BalanceAction) -> None:
    """Write a new action. Its id derives from the caller's idempotency key: when a copy of the
    same request (the same key) committed it first, the transaction runs again and `replay`
    answers with that action, where a 500 was."""
    session.add(action)
    try:
        await session.flush()
    except IntegrityError as exc:
        # The id derives from (actor, key): either unique constraint may be the one reported.
        text = str(exc.orig)
        names = ("pk_balance_actions", "balance_actions.id", "balance_actions_actor_idempotency",
                 "balance_actions.idempotency_key")
        if any(name in text for name in names):
            raise RetryableError("balance action made meanwhile by a copy of the request") from exc
        raise


def action_id(actor: str, key: str | None) -> uuid.UUID:
    """The id of the action `actor` asks for under `key` (`actor`: whose idempotency keys they
    are — an API key's client, `client_scope`, or a customer's `account:<id>`)."""
    return derived_id("balance-action", actor, key) if key else uuid7()


def client_scope(client_id: str) -> str:
    """Whose idempotency keys an API key's are: its client's, across rotations
    (`ApiKey.client_id`)."""
    return f"apikey-client:{client_id}"


def _new_action(
    kind: ActionKind,
    *,
    aid: uuid.UUID,
    actor: str,
    key: str | None,
    request: dict[str, Any],
    holder: Holder,
    amount: int,
    now: datetime,
    reason: str | None,
) -> BalanceAction:
    return BalanceAction(
        id=aid,
        kind=kind.value,
        status=ActionStatus.completed.value,
        line_id=holder.line.id,
        usage_type=holder.usage_type,
        unit=holder.unit,
        amount=amount,
        fee=0,
        account_id=holder.account_id,
        request=request,
        actor=actor,
        idempotency_key=key,
        requested_at=now,
        confirmed_at=now,
        reason=(reason or None) and reason[:255],
    )


def _raise_refused(exc: TransferRejected) -> None:
    if exc.reason in (TransferResult.exceeds_credits, TransferResult.exceeds_debits):
        raise InsufficientBalance(field="amount") from exc
    raise exc


def _check_topped_up(line: Line) -> None:
    """A top-up goes to a line in service: active, in grace, or frozen (credited; brought back
    as the lifecycle's reactivation policy says, as a paid top-up in the portal is), or
    suspended (credited; it stays suspended until staff resume it). Never to a
    terminated line, nor to an unsold one (`available`, in the inventory: a top-up would sell
    it to nobody)."""
    state = LineState(line.state)
    if state is LineState.terminated:
        raise LineNotInService(N_("The line is terminated."), field="logicalResource")
    if state is LineState.available:
        raise LineNotInService(N_("The line is not in service: it was never sold."),
                               field="logicalResource")


def _check_amount(amount: int) -> None:
    if amount <= 0:
        raise ValidationFailed(N_("The amount must be more than zero."), field="amount")


def _check_live(holder: Holder, now: datetime) -> None:
    """A bucket past its end takes nothing and gives nothing: what it held is expiry's."""
    b = holder.bucket
    if b is not None and b.expires_at is not None and b.expires_at <= now:
        raise BucketNotFound(N_("The bucket has expired."), field="bucket.id")


# ---------------------------------------------------------------------------------------------
# Top-up and adjustment


async def topup(
    session: AsyncSession,
    *,
    line: Line,
    usage_type: str,
    amount: int,
    target: Holder | None,
    valid_until: datetime | None,
    actor: str,
    key: str | None,
    request: dict[str, Any],
    reason: str | None,
    policy: Policy,
    client: str | None = None,
    settings: Settings | None = None,
    client_id: uuid.UUID | None = None,
    by: Actor | None = None,
) -> BalanceAction:
    """Credit a line through the TMF654 channel: money into the wallet from the receivable of
    the API client that sold it (`channel:<client_id>:<CUR>`: a shop or partner collected the
    money and owes it), units into the named bucket or a new one (from `issuance:<unit>`); every
    transfer has the code `tmf_topup` (a plan's credit is `topup`). At most
    `settings.tmf654_topup_max(<CUR>)` of money per request (`TopupLimitExceeded`, nothing
    written). Audited (`balance.topup`, actor `by`: the API key) in the same transaction.
    Counts as a top-up for the lifecycle (`policy`: the lifecycle's). Only a new bucket's end can
    be chosen (`valid_until`): money has no end, and units put in a bucket end when it does."""
    _check_amount(amount)
    _check_topped_up(line)
    now = utcnow()
    aid = action_id(client or actor, key)
    source = f"balance:{aid}"
    unit = unit_for(line, usage_type)
    if target is not None and target.unit != unit:
        # The account named holds another unit: crediting another one would be a guess.
        raise ValidationFailed(N_("The bucket holds another usage type."), field="usageType")
    shard = chart.shard_of(line.id)
    if unit == line.currency:
        if valid_until is not None:
            raise ValidationFailed(N_("Money in the wallet has no end: it cannot be chosen."),
                                   field="validFor")
        if settings is not None and amount > (most := settings.tmf654_topup_max(unit)):
            raise TopupLimitExceeded(
                N_("A top-up is at most {max_amount} {currency}: a larger credit is an "
                   "adjustment in the back office."),
                field="amount", limit=most, currency=unit,
                max_amount=str(from_minor(most, unit)),
            )
        origin = chart.channel(str(client_id) if client_id else "tmf654", unit, shard)
        account_id = line.wallet_account_id
        await ensure_accounts(session, [origin])
        transfers = [
            NewTransfer(id=derived_id(source, "credit"), amount=amount, unit=unit,
                        debit_account_id=origin.id, credit_account_id=account_id,
                        code=TOPUP_CODE, reference=source)
        ]
    elif target is not None and target.bucket is not None:
        if target.unit != unit or target.line.id != line.id:
            raise ValidationFailed(N_("The bucket does not match."), field="bucket.id")
        _check_live(target, now)
        if valid_until is not None:
            raise ValidationFailed(
                N_("Units put in a bucket end when it does: the end cannot be chosen."),
                field="validFor",
            )
        origin = chart.issuance(unit, shard)
        account_id = target.account_id
        await ensure_accounts(session, [origin])
        transfers = [
            NewTransfer(id=derived_id(source, "credit"), amount=amount, unit=unit,
                        debit_account_id=origin.id, credit_account_id=account_id,
                        code=TOPUP_CODE, reference=source)
        ]
    else:
        days = None
        if valid_until is not None:
            if valid_until <= now:
                raise ValidationFailed(N_("The end of validity is in the past."), field="validFor")
            if valid_until > LATEST_END:
                raise ValidationFailed(N_("Not a date and time."), field="validFor.endDateTime")
            days = max(1, math.ceil((valid_until - now) / timedelta(days=1)))
        origin = chart.issuance(unit, shard)  # what `open_buckets` debits
        transfers = [
            dataclasses.replace(t, code=TOPUP_CODE)
            for t in await open_buckets(
                session, line, [UnitGrant(unit, amount, days)], source=source, now=now,
                shard=shard,
            )
        ]
        account_id = bucket_id(source, 0)
        if valid_until is not None:
            # Whole days would end it before the end asked for (rounded down) or after it: the
            # bucket ends exactly when asked.
            await session.execute(
                update(Bucket).where(Bucket.id == account_id).values(expires_at=valid_until)
            )
    holder = Holder(line, account_id, unit, None if unit == line.currency else Bucket(id=account_id))
    action = _new_action(ActionKind.topup, aid=aid, actor=actor, key=key, request=request,
                         holder=holder, amount=amount, now=now, reason=reason)
    on_topup(session, line, now=now, actor=actor, by_owner=False, policy=policy)
    await _add_action(session, action)
    await post_transfers(session, transfers, now=now)
    await audit.record(
        session, by or Actor(name=actor, permissions=frozenset()), "balance.topup",
        target_type="line", target_id=line.id,
        after={"amount": amount, "unit": unit, "account": str(account_id),
               "from": (origin.key or "").split("#")[0]},
        details={"balance_action": str(aid), "client": str(client_id) if client_id else None,
                 "idempotency_key": key, **_told(request)},
        now=now,
    )
    return action


def _told(request: dict[str, Any]) -> dict[str, Any]:
    """What a top-up's request says of itself, for its audit entry: `reason`, `description`,
    the `channel`, `paymentMethod` and `requestor` (the agent who took the money) by id and
    name or role. Never the `voucher` (a code worth money) nor the line's number."""
    told: dict[str, Any] = {}
    for name in ("reason", "description"):
        if isinstance(request.get(name), str):
            told[name] = request[name][:255]
    for name, keys in (("channel", ("id", "name")), ("paymentMethod", ("id", "name")),
                       ("requestor", ("id", "role"))):
        ref = request.get(name)
        if isinstance(ref, dict):
            kept = {k: str(ref[k])[:255] for k in keys if ref.get(k) is not None}
            if kept:
                told[name] = kept
    return told


async def adjust(
    session: AsyncSession,
    settings: Settings,
    *,
    holder: Holder,
    amount: int,
    actor: Actor,
    key: str | None,
    request: dict[str, Any],
    reason: str,
    client: str | None = None,
) -> BalanceAction:
    """Correct a wallet or bucket by a signed amount, against `funding`/`issuance` (staff).

    The back office's four-eyes rule holds here too (`backoffice.money.needs_approval`): what
    needs a second person's approval an API key may not ask for (403), and an adjustment made
    here is an applied `adjustments` row that counts toward the customer's 24 h total, audited
    in the same transaction."""
    if amount == 0:
        raise ValidationFailed(N_("The amount must not be zero."), field="amount")
    if not reason.strip():
        raise ValidationFailed(N_("Say why the balance is adjusted."), field="reason")
    line = holder.line
    # As the back office does: the line, then its customer, locked FOR NO KEY UPDATE, so that
    # two adjustments at once count each other.
    await session.refresh(line, with_for_update={"key_share": True})
    aid = action_id(client or actor.name, key)
    if key is not None and await session.get(BalanceAction, aid) is not None:
        # A copy of this request committed while this one waited: answered as its replay.
        raise RetryableError("the same adjustment was made meanwhile")
    if LineState(line.state) is LineState.available:
        raise LineNotInService(N_("The line is not in service: it was never sold."),
                               field="bucket.id")
    if amount > 0 and LineState(line.state) is LineState.terminated:
        raise LineNotInService(N_("The line is terminated."), field="bucket.id")
    now = utcnow()
    _check_live(holder, now)
    if amount < 0 and -amount > await available(session, holder.account_id):
        # Refused for what it is, whoever asks: no approval would make it possible.
        raise InsufficientBalance(field="amount")
    waits, before, limit = await needs_approval(
        session, settings, line, holder.unit, wallet=holder.bucket is None, amount=amount,
        now=now,
    )
    if waits:
        raise AdjustmentNeedsAPerson(field="amount")
    shard = chart.shard_of(line.id)
    origin = (
        chart.funding(holder.unit, shard) if holder.bucket is None
        else chart.issuance(holder.unit, shard)
    )
    await ensure_accounts(session, [origin])
    debit, credit = (origin.id, holder.account_id) if amount > 0 else (holder.account_id, origin.id)
    action = _new_action(ActionKind.adjust, aid=aid, actor=actor.name, key=key, request=request,
                         holder=holder, amount=amount, now=now, reason=reason)
    await _add_action(session, action)
    transfer_id = derived_id(f"balance:{aid}", "adjust")
    try:
        await post_transfers(session, [
            NewTransfer(id=transfer_id, amount=abs(amount),
                        unit=holder.unit, debit_account_id=debit, credit_account_id=credit,
                        code="adjustment", reference=f"balance:{aid}")
        ], now=now)
    except TransferRejected as exc:
        _raise_refused(exc)
    adjustment = Adjustment(
        id=aid, line_id=line.id, ledger_account_id=holder.account_id, unit=holder.unit,
        amount=amount, reason=reason, state=AdjustmentState.applied.value,
        requested_by=actor.name[:80], requested_by_staff_id=actor.staff_id,
        transfer_id=transfer_id, created_at=now, decided_at=now,
    )
    session.add(adjustment)
    await session.flush()
    await audit.record(
        session, actor, "adjustment.apply", target_type="line", target_id=line.id,
        after=adjustment_facts(adjustment),
        details={"adjustment": str(aid), "balance_action": str(aid), "reason": reason,
                 "applied_alone_24h": before, "limit": limit},
        now=now,
    )
    return action


# ---------------------------------------------------------------------------------------------
# Reservations


def _sink(holder: Holder) -> NewAccount:
    shard = chart.shard_of(holder.line.id)
    if holder.bucket is None:
        return chart.usage_revenue(holder.unit, shard)
    return chart.consumption(holder.unit, shard)


async def reserve(
    session: AsyncSession,
    *,
    holder: Holder,
    amount: int,
    until: datetime | None,
    actor: str,
    key: str | None,
    request: dict[str, Any],
    reason: str | None,
    client: str | None = None,
) -> BalanceAction:
    """Hold `amount` of a wallet or bucket for a charge to come: a pending transfer to usage
    (revenue for money, consumption for units) that times out at `until` (default an hour)."""
    _check_amount(amount)
    if LineState(holder.line.state) is not LineState.active:
        raise LineNotInService(N_("Only an active line can reserve."), field="bucket.id")
    now = utcnow()
    end = holder.line.validity_end
    if end is not None and end <= now:
        # In grace in all but name until the next sweep (as charging and transfers read it).
        raise LineNotInService(N_("Only an active line can reserve."), field="bucket.id")
    _check_live(holder, now)
    until = until or now + DEFAULT_RESERVATION
    if until <= now or until - now > MAX_RESERVATION:
        raise ValidationFailed(
            N_("A reservation ends within 7 days from now."), field="validFor.endDateTime"
        )
    aid = action_id(client or actor, key)
    sink = _sink(holder)
    await ensure_accounts(session, [sink])
    pending_id = derived_id(f"balance:{aid}", "reserve")
    action = _new_action(ActionKind.reserve, aid=aid, actor=actor, key=key, request=request,
                         holder=holder, amount=amount, now=now, reason=reason)
    action.status, action.confirmed_at = ActionStatus.created.value, None
    action.pending_transfer_id = pending_id
    await _add_action(session, action)
    try:
        await post_transfers(session, [
            NewTransfer(id=pending_id, amount=amount, unit=holder.unit,
                        debit_account_id=holder.account_id, credit_account_id=sink.id,
                        kind=TransferKind.pending,
                        timeout_s=max(1, int((until - now).total_seconds())),
                        code="reservation", reference=f"balance:{aid}")
        ], now=now)
    except TransferRejected as exc:
        _raise_refused(exc)
    return action


async def reservation_status(
    session: AsyncSession, action: BalanceAction, now: datetime | None = None
) -> str:
    """The reservation's status as the ledger knows it. A timeout shows as cancelled from the
    moment it passes, before the sweep releases the amount: it can no longer be completed."""
    if action.kind != ActionKind.reserve or action.pending_transfer_id is None:
        return action.status
    pending = await session.get(LedgerTransfer, action.pending_transfer_id)
    if pending is None:
        return action.status
    if pending.pending_status == PendingStatus.pending.value and (
        pending.timeout_at is not None and pending.timeout_at <= (now or utcnow())
    ):
        return ActionStatus.cancelled.value
    return {
        PendingStatus.pending.value: ActionStatus.created.value,
        PendingStatus.posted.value: ActionStatus.completed.value,
    }.get(pending.pending_status or "", ActionStatus.cancelled.value)


def _settle_id(action: BalanceAction) -> uuid.UUID:
    return derived_id(f"balance:{action.id}", "settle")


async def used_amount(session: AsyncSession, action: BalanceAction) -> int | None:
    """What completing the reservation posted — the settle transfer's amount; rows whose request
    still carries `_used` were settled by the same transfer — or None when it is not completed."""
    settle = await session.get(LedgerTransfer, _settle_id(action))
    if settle is None or settle.kind != TransferKind.post_pending.value:
        return None
    return settle.amount


async def settle_reservation(
    session: AsyncSession,
    action: BalanceAction,
    *,
    complete: bool,
    amount: int | None = None,
) -> BalanceAction:
    """Complete (post `amount`, default all; the rest is released) or cancel (void) an open
    reservation. Settling it again the same way answers the same (completing: with no amount or
    the amount posted); otherwise 409."""
    await session.refresh(action, with_for_update=True)
    wanted = ActionStatus.completed if complete else ActionStatus.cancelled
    current = await reservation_status(session, action)
    if current == wanted.value and action.status == wanted.value:
        if complete and amount is not None and amount != await used_amount(session, action):
            raise ReservationNotOpen(field="amount")
        return action
    if not complete and current == ActionStatus.cancelled.value:
        # Timed out (released by the sweep, or about to be): cancelled already, as asked.
        return action
    if current != ActionStatus.created.value:
        raise ReservationNotOpen(field="status")
    if amount is not None and not 0 <= amount <= action.amount:
        raise ValidationFailed(
            N_("The amount must be between 0 and the amount reserved."), field="amount"
        )
    now = utcnow()
    assert action.pending_transfer_id is not None
    resolve = NewTransfer(
        id=_settle_id(action),
        pending_id=action.pending_transfer_id,
        amount=amount if complete else None,
        kind=TransferKind.post_pending if complete else TransferKind.void_pending,
        code="reservation", reference=f"balance:{action.id}",
    )
    try:
        await post_transfers(session, [resolve], now=now)
    except TransferRejected as exc:
        if exc.reason is TransferResult.pending_transfer_expired:
            raise ReservationNotOpen(field="status") from exc
        raise
    action.status, action.confirmed_at = wanted.value, now
    await session.flush()
    return action


# ---------------------------------------------------------------------------------------------
# Transfers between lines


def transfer_fee(settings: Settings, unit: str, currency: str, amount: int) -> int:
    """The giver's fee in minor units: percent of a money amount (half up) plus the fixed fee."""
    fee = settings.transfer_money_terms(currency)[2]
    if unit == currency and settings.balance_transfer_fee_percent:
        share = Decimal(amount) * settings.balance_transfer_fee_percent / 100
        fee += int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return fee


def _check_limits(settings: Settings, unit: str, currency: str, amount: int) -> None:
    if unit == currency:
        low, high, _ = settings.transfer_money_terms(currency)
        if not low <= amount <= high:
            raise TransferLimitExceeded(
                N_("A transfer of money is between {low_amount} and {high_amount} {currency}."),
                field="amount", low=low, high=high, currency=currency,
                low_amount=str(from_minor(low, currency)),
                high_amount=str(from_minor(high, currency)),
            )
    elif unit == "DATA_B" and amount > settings.balance_transfer_max_data_mb * MB:
        raise TransferLimitExceeded(
            N_("At most {limit} MB of data per transfer."), field="amount",
            limit=settings.balance_transfer_max_data_mb,
        )
    elif unit == "DATA_B" and amount < settings.balance_transfer_min_data_mb * MB:
        raise TransferLimitExceeded(
            N_("At least {limit} MB of data per transfer."), field="amount",
            limit=settings.balance_transfer_min_data_mb,
        )
    elif unit == "VOICE_S" and amount > settings.balance_transfer_max_voice_minutes * 60:
        raise TransferLimitExceeded(
            N_("At most {limit} minutes per transfer."), field="amount",
            limit=settings.balance_transfer_max_voice_minutes,
        )
    elif unit == "VOICE_S" and amount < settings.balance_transfer_min_voice_minutes * 60:
        raise TransferLimitExceeded(
            N_("At least {limit} minutes per transfer."), field="amount",
            limit=settings.balance_transfer_min_voice_minutes,
        )
    elif unit == "SMS" and amount > settings.balance_transfer_max_sms:
        raise TransferLimitExceeded(
            N_("At most {limit} messages per transfer."), field="amount",
            limit=settings.balance_transfer_max_sms,
        )


async def transfers_today(session: AsyncSession, line_id: uuid.UUID, now: datetime) -> int:
    stmt = select(func.count()).select_from(BalanceAction).where(
        BalanceAction.line_id == line_id,
        BalanceAction.kind == ActionKind.transfer.value,
        BalanceAction.requested_at > now - timedelta(days=1),
    )
    return int((await session.execute(stmt)).scalar_one())


async def check_transfer(
    session: AsyncSession,
    settings: Settings,
    *,
    source: Holder,
    receiver: Line,
    amount: int,
    now: datetime,
) -> int:
    """Whether `source` may give `amount` to `receiver` now (the lines' states, the limits, the
    daily count, the currency); returns the giver's fee. `transfer` asks it under the giver's
    lock; the portal asks it to show the fee before the customer confirms. Whether the balance
    suffices is the ledger's to decide when the transfer is posted."""
    _check_amount(amount)
    giver = source.line
    if giver.id == receiver.id:
        raise ValidationFailed(N_("A line cannot give to itself."), field="receiverLogicalResource")
    if LineState(giver.state) is not LineState.active:
        raise LineNotInService(N_("Only an active line can give balance."), field="logicalResource")
    if giver.validity_end is not None and giver.validity_end <= now:
        # In grace in all but name until the next sweep (as charging reads it): not in service.
        raise LineNotInService(
            N_("The line's validity has ended: top it up to give balance."),
            field="logicalResource",
        )
    # A line in grace receives, as it receives top-ups: the gift is kept for it (no validity
    # given: only a paid top-up brings a line back). A frozen line does not: it is on its way
    # to termination, which would forfeit the gift — refused, not swallowed (README, Decisions).
    # A suspended line (lost or stolen) is treated as a frozen one: it neither gives nor gets.
    if LineState(receiver.state) in (
        LineState.terminated, LineState.available, LineState.frozen, LineState.suspended
    ):
        raise LineNotInService(
            N_("The receiving line is not in service."), field="receiverLogicalResource"
        )
    _check_limits(settings, source.unit, giver.currency, amount)
    if await transfers_today(session, giver.id, now) >= settings.balance_transfer_daily_count:
        raise TransferLimitExceeded(
            N_("At most {limit} transfers in 24 hours."), field="amount",
            limit=settings.balance_transfer_daily_count,
        )
    if source.bucket is None and receiver.currency != giver.currency:
        raise ValidationFailed(
            N_("Money can only be given to a line in the same currency ({currency})."),
            field="receiverLogicalResource", currency=giver.currency,
        )
    return transfer_fee(settings, source.unit, giver.currency, amount)


async def transfer(
    session: AsyncSession,
    settings: Settings,
    *,
    source: Holder,
    receiver: Line,
    amount: int,
    actor: str,
    key: str | None,
    request: dict[str, Any],
    reason: str | None,
    stated_fee: int | None = None,
    client: str | None = None,
) -> BalanceAction:
    """Give money (wallet to wallet, same currency) or units (a bucket to a new bucket of the
    receiver with the same end and zones) to another line; the giver pays the fee from the
    wallet to `revenue:fees`. One linked batch: all of it or nothing. A `stated_fee` (what the
    caller was told the transfer costs, minor units) other than the fee is refused."""
    giver = source.line
    # One transfer at a time per giver: the daily count and the balance are decided together.
    # FOR NO KEY UPDATE, not FOR UPDATE: rows naming the giver as receiver (a transfer the other
    # way, which holds its own giver) take a key-share lock on it for their foreign key, which
    # FOR UPDATE would refuse while this transfer waits for the same on that line: a deadlock.
    await session.refresh(giver, with_for_update={"key_share": True})
    # The receiver FOR KEY SHARE, its state read again under it: a termination (the sweep locks
    # the line FOR UPDATE, then forfeits its wallet) that committed while this transfer waited
    # is seen, and one that comes later skips the line until this transfer is done — never
    # money landing on a line after its forfeit. KEY SHARE is what the action's foreign key
    # takes anyway: a transfer the other way (which holds this line FOR NO KEY UPDATE) is not
    # waited for.
    if receiver.id != giver.id:
        await session.refresh(receiver, with_for_update={"read": True, "key_share": True})
    aid = action_id(client or actor, key)
    if key is not None and await session.get(BalanceAction, aid) is not None:
        # A copy of this request (a double submit, a retry) committed while this one waited for
        # the giver: run again, to be answered as its replay — not counted, nor refused, anew.
        raise RetryableError("the same transfer was made meanwhile")
    now = utcnow()
    fee = await check_transfer(
        session, settings, source=source, receiver=receiver, amount=amount, now=now
    )
    if stated_fee is not None and stated_fee != fee:
        raise ValidationFailed(
            N_("The transfer costs {fee} {currency}."), field="transferCost.value",
            fee=str(from_minor(fee, giver.currency)), currency=giver.currency,
        )
    ref = f"balance:{aid}"
    shard = chart.shard_of(giver.id)
    fees = chart.fees(giver.currency, shard)
    await ensure_accounts(session, [fees])
    transfers: list[NewTransfer] = []
    if source.bucket is None:
        receiver_account = receiver.wallet_account_id
        transfers.append(NewTransfer(
            id=derived_id(ref, "give"), amount=amount, unit=source.unit,
            debit_account_id=source.account_id, credit_account_id=receiver_account,
            code="transfer", reference=ref))
    else:
        b = source.bucket
        _check_live(source, now)
        receiver_account = bucket_id(ref, 0)
        await ensure_accounts(session, [NewAccount(
            unit=b.unit, code="bucket", id=receiver_account, line_id=receiver.id,
            debits_must_not_exceed_credits=True)])
        session.add(Bucket(id=receiver_account, line_id=receiver.id, unit=b.unit,
                           initial_amount=amount, zones=list(b.zones or []),
                           expires_at=b.expires_at, source=ref, created_at=now))
        transfers.append(NewTransfer(
            id=derived_id(ref, "give"), amount=amount, unit=b.unit,
            debit_account_id=source.account_id, credit_account_id=receiver_account,
            code="transfer", reference=ref))
    if fee:
        transfers.append(NewTransfer(
            id=derived_id(ref, "fee"), amount=fee, unit=giver.currency,
            debit_account_id=giver.wallet_account_id, credit_account_id=fees.id,
            code="transfer_fee", reference=ref))
    action = _new_action(ActionKind.transfer, aid=aid, actor=actor, key=key, request=request,
                         holder=source, amount=amount, now=now, reason=reason)
    action.fee = fee
    action.receiver_line_id = receiver.id
    action.receiver_account_id = receiver_account
    await _add_action(session, action)
    try:
        await post_transfers(session, transfers, now=now)
    except TransferRejected as exc:
        _raise_refused(exc)
    return action
