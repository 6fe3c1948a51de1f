"""A customer gives credit, minutes, data or SMS from one of their own lines to another number:
the service behind `/api/v1/me/lines/{id}/transfers` and the portal's transfer page. It checks
ownership (anyone else's line is "not found"), picks the bucket to give from, then calls
`service.transfer` (TMF654's `transferBalance`), and tells the receiver's owner."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.service import own_line
from simcharge.config import Settings
from simcharge.errors import IdempotencyKeyReused, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import N_
from simcharge.ledger.service import MAX_AMOUNT
from simcharge.lines.models import Bucket, Line
from simcharge.lines.service import find_line_by_msisdn
from simcharge.notifications.service import notify
from simcharge.orders.service import refuse_closed_payer
from simcharge.tmf654 import service
from simcharge.tmf654.models import ActionKind, BalanceAction
from simcharge.tmf654.service import MB, BucketNotFound, Holder, InsufficientBalance

USAGE_TYPES = ("monetary", "voice", "data", "sms")
PER_UNIT = {"monetary": 1, "voice": 60, "data": MB, "sms": 1}
"""Ledger units in one unit of a customer's amount: minor units, minutes, MB, messages."""


@dataclass(frozen=True, slots=True)
class Gift:
    """What the customer asks: `amount` in minor units (money), minutes, MB or messages."""

    to: str
    usage_type: str
    amount: int
    bucket_id: uuid.UUID | None = None
    reason: str | None = None

    def request(self) -> dict[str, Any]:
        """The request as stored with the action: a retry must send the same, for the same line
        (the action's `line_id`)."""
        return {
            "to": self.to,
            "usage_type": self.usage_type,
            "amount": self.amount,
            "bucket_id": str(self.bucket_id) if self.bucket_id else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Given:
    action: BalanceAction
    line: Line
    receiver: Line
    replayed: bool


@dataclass(frozen=True, slots=True)
class Preview:
    """What a transfer would do, before the customer confirms it."""

    line: Line
    receiver: Line
    unit: str
    amount: int
    """In the ledger unit."""
    fee: int
    """In the giver's currency (minor units), taken from the wallet."""


@dataclass(frozen=True, slots=True)
class Terms:
    """The fee and limits of a transfer from a line, in its currency's minor units."""

    currency: str
    fee_percent: Decimal
    fee_fixed: int
    min_amount: int
    max_amount: int
    max_data_mb: int
    max_voice_minutes: int
    per_day: int
    used_today: int
    min_data_mb: int
    min_voice_minutes: int
    max_sms: int


def actor_of(account_id: uuid.UUID) -> str:
    return f"account:{account_id}"


async def _source(s: AsyncSession, line: Line, gift: Gift, amount: int) -> Holder:
    if gift.usage_type == "monetary":
        return Holder(line, line.wallet_account_id, line.currency, None)
    unit = service.unit_for(line, gift.usage_type)
    if gift.bucket_id is not None:
        holder = await service.holder_of(s, gift.bucket_id)
        if holder is None or holder.line.id != line.id or holder.bucket is None:
            raise BucketNotFound(field="bucket_id")
        if holder.unit != unit:
            raise ValidationFailed(N_("The bucket holds another usage type."), field="usage_type")
        return holder
    now = utcnow()
    for bucket in (await s.execute(
        select(Bucket).where(Bucket.line_id == line.id, Bucket.unit == unit)
        # The one that ends first; one that never ends last (SQLite would sort it first).
        .order_by(Bucket.expires_at.is_(None), Bucket.expires_at, Bucket.created_at)
    )).scalars():
        if bucket.expires_at is not None and bucket.expires_at <= now:
            continue
        if await service.available(s, bucket.id) >= amount:
            return Holder(line, bucket.id, unit, bucket)
    raise InsufficientBalance(field="amount")


def _check_usage_type(gift: Gift) -> None:
    if gift.usage_type not in PER_UNIT:
        raise ValidationFailed(
            N_("Usage type {value} is not supported."), field="usage_type", value=gift.usage_type
        )
    if gift.amount <= 0:
        raise ValidationFailed(N_("The amount must be more than zero."), field="amount")
    if gift.amount * PER_UNIT[gift.usage_type] > MAX_AMOUNT:
        # More than any account can hold, in ledger units (nor a BIGINT column).
        raise ValidationFailed(N_("This is not a valid amount."), field="amount")


async def preview(
    s: AsyncSession, settings: Settings, *, account_id: uuid.UUID, line_id: uuid.UUID, gift: Gift
) -> Preview:
    """The checks `give` makes and the fee it would take, changing nothing. The balance is
    checked here too (the wallet must hold the amount and the fee), so the customer learns it
    before confirming; the ledger still decides when the transfer is posted."""
    _check_usage_type(gift)
    line = await own_line(s, account_id, line_id)
    receiver = await find_line_by_msisdn(s, gift.to)
    amount = gift.amount * PER_UNIT[gift.usage_type]
    source = await _source(s, line, gift, amount)
    fee = await service.check_transfer(
        s, settings, source=source, receiver=receiver, amount=amount, now=utcnow()
    )
    wallet = await service.available(s, line.wallet_account_id)
    if wallet < fee + (amount if source.bucket is None else 0):
        raise InsufficientBalance(field="amount")
    return Preview(line, receiver, source.unit, amount, fee)


async def give(
    s: AsyncSession,
    settings: Settings,
    *,
    account_id: uuid.UUID,
    line_id: uuid.UUID,
    gift: Gift,
    key: str,
    fee: int | None = None,
) -> Given:
    """The transfer, once per idempotency key (the same key, line and request: the first action;
    the same key from another line or with another request is refused). `fee`: the fee the
    customer was shown (a review page's, minor units); if it is no longer the fee, nothing is
    given (400, field `transferCost.value`, saying the fee now)."""
    _check_usage_type(gift)
    # A closure committing meanwhile detaches the line: wait for its lock on the account and
    # see it (`401 session-ended`), as an order does, rather than give from a line no longer
    # the account's.
    await refuse_closed_payer(s, account_id)
    line = await own_line(s, account_id, line_id)
    actor = actor_of(account_id)
    request = gift.request()
    found = await service.replay(s, actor, key, request, ActionKind.transfer)
    if found is not None:
        # The giving line is part of the request (in the path, not the body): the same key
        # and body from another of the customer's lines asks for another transfer.
        if found.line_id != line.id:
            raise IdempotencyKeyReused(field="Idempotency-Key")
        receiver = await s.get(Line, found.receiver_line_id)
        assert receiver is not None
        return Given(found, line, receiver, True)
    receiver = await find_line_by_msisdn(s, gift.to)
    amount = gift.amount * PER_UNIT[gift.usage_type]
    source = await _source(s, line, gift, amount)
    action = await service.transfer(
        s, settings, source=source, receiver=receiver, amount=amount, actor=actor,
        key=key, request=request, reason=gift.reason, stated_fee=fee,
    )
    if receiver.account_id is not None and receiver.account_id != account_id:
        await notify(
            s, account_id=receiver.account_id, template="line.gift_received",
            params={"msisdn": receiver.msisdn}, channels=["portal", "sms"],
            line_id=receiver.id, dedupe_key=f"transfer:{action.id}",
        )
    return Given(action, line, receiver, False)


async def given_from(
    s: AsyncSession, line: Line, *, limit: int = 100
) -> list[tuple[BalanceAction, Line]]:
    """Transfers given from `line` (the caller's own) since its holder attached it, newest
    first, with their receivers: a previous holder's gifts (their receivers' numbers, their
    reasons) are not the new holder's to read."""
    stmt = select(BalanceAction).where(BalanceAction.line_id == line.id,
                                       BalanceAction.kind == ActionKind.transfer.value)
    if line.attached_at is not None:
        stmt = stmt.where(BalanceAction.requested_at >= line.attached_at)
    actions: Sequence[BalanceAction] = (await s.execute(
        stmt.order_by(BalanceAction.requested_at.desc()).limit(limit)
    )).scalars().all()
    ids = {a.receiver_line_id for a in actions if a.receiver_line_id is not None}
    receivers = {
        r.id: r for r in (await s.execute(select(Line).where(Line.id.in_(ids)))).scalars()
    } if ids else {}
    return [(a, receivers[a.receiver_line_id]) for a in actions
            if a.receiver_line_id in receivers]


async def terms_of(s: AsyncSession, settings: Settings, line: Line, now: datetime) -> Terms:
    """The terms of a transfer from `line`, in its wallet currency's own limits and fee."""
    low, high, fee_fixed = settings.transfer_money_terms(line.currency)
    return Terms(
        currency=line.currency,
        fee_percent=settings.balance_transfer_fee_percent,
        fee_fixed=fee_fixed,
        min_amount=low,
        max_amount=high,
        max_data_mb=settings.balance_transfer_max_data_mb,
        max_voice_minutes=settings.balance_transfer_max_voice_minutes,
        per_day=settings.balance_transfer_daily_count,
        used_today=await service.transfers_today(s, line.id, now),
        min_data_mb=settings.balance_transfer_min_data_mb,
        min_voice_minutes=settings.balance_transfer_min_voice_minutes,
        max_sms=settings.balance_transfer_max_sms,
    )
