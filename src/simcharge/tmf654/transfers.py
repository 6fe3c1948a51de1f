"""`/api/v1/me/lines/{line_id}/transfers`: a customer gives credit, minutes, data or SMS from
one of their lines to another number (the portal uses it). Same service as TMF654
`transferBalance`; the line must be the customer's own (anyone else's is "not found")."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.service import own_line
from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.auth.deps import CurrentCustomer
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.schemas import Money
from simcharge.kit.translations import N_
from simcharge.lines.models import Bucket, Line
from simcharge.lines.service import find_line_by_msisdn
from simcharge.notifications.service import notify
from simcharge.tmf654 import service
from simcharge.tmf654.models import ActionKind, BalanceAction
from simcharge.tmf654.service import MB, BucketNotFound, Holder

router = APIRouter(prefix=f"{API_PREFIX}/me/lines", tags=["me"])

USAGE = Literal["monetary", "voice", "data", "sms"]
_PER_UNIT = {"monetary": 1, "voice": 60, "data": MB, "sms": 1}


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(max_length=32, description="The receiving number (E.164)")
    usage_type: USAGE
    amount: int = Field(
        gt=0, description="Money: minor units; voice: minutes; data: MB; sms: messages"
    )
    bucket_id: uuid.UUID | None = Field(
        default=None, description="Units: the bucket to give from (default: the one that ends "
        "soonest with enough left)"
    )
    reason: str | None = Field(default=None, max_length=200)


class TransferOut(BaseModel):
    id: uuid.UUID
    status: str
    from_msisdn: str
    to_msisdn: str
    usage_type: str
    unit: str
    amount: int
    """In the ledger unit: minor units, seconds, bytes, messages."""
    fee: Money
    receiver_bucket_id: uuid.UUID | None
    created_at: datetime


class TransferTerms(BaseModel):
    fee_percent: Decimal
    fee_fixed: Money
    min_amount: Money
    max_amount: Money
    max_data_mb: int
    max_voice_minutes: int
    per_day: int


def _out(action: BalanceAction, line: Line, receiver: Line) -> TransferOut:
    return TransferOut(
        id=action.id, status=action.status, from_msisdn=line.msisdn, to_msisdn=receiver.msisdn,
        usage_type=action.usage_type, unit=action.unit, amount=action.amount,
        fee=Money.of(action.fee, line.currency),
        receiver_bucket_id=action.receiver_account_id if action.unit != line.currency else None,
        created_at=action.requested_at,
    )


async def _source(
    s: AsyncSession, line: Line, body: TransferIn, amount: int
) -> Holder:
    if body.usage_type == "monetary":
        return Holder(line, line.wallet_account_id, line.currency, None)
    unit = service.unit_for(line, body.usage_type)
    if body.bucket_id is not None:
        holder = await service.holder_of(s, body.bucket_id)
        if holder is None or holder.line.id != line.id or holder.bucket is None:
            raise BucketNotFound(field="bucket_id")
        if holder.unit != unit:
            raise ValidationFailed(N_("The bucket holds another usage type."), field="usage_type")
        return holder
    now = utcnow()
    for bucket in (await s.execute(
        select(Bucket).where(Bucket.line_id == line.id, Bucket.unit == unit)
        .order_by(Bucket.expires_at, Bucket.created_at)
    )).scalars():
        if bucket.expires_at is not None and bucket.expires_at <= now:
            continue
        if await service.available(s, bucket.id) >= amount:
            return Holder(line, bucket.id, unit, bucket)
    raise service.InsufficientBalance(field="amount")


@router.post("/{line_id}/transfers", status_code=201, response_model=TransferOut,
             summary="Give credit or units to another number (send an Idempotency-Key)")
async def give(
    line_id: uuid.UUID,
    body: TransferIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
) -> JSONResponse:
    if not idempotency_key:
        raise ValidationFailed(N_("An Idempotency-Key header is required."),
                               field="Idempotency-Key")
    actor = f"account:{customer.account.id}"
    request = body.model_dump(mode="json")

    async def run(s: AsyncSession) -> tuple[TransferOut, bool]:
        line = await own_line(s, customer.account.id, line_id)
        found = await service.replay(s, actor, idempotency_key, request)
        if found is None:
            receiver = await find_line_by_msisdn(s, body.to)
            amount = body.amount * _PER_UNIT[body.usage_type]
            source = await _source(s, line, body, amount)
            found = await service.transfer(
                s, settings, source=source, receiver=receiver, amount=amount, actor=actor,
                key=idempotency_key, request=request, reason=body.reason,
            )
            if receiver.account_id is not None and receiver.account_id != customer.account.id:
                await notify(
                    s, account_id=receiver.account_id, template="line.gift_received",
                    params={"msisdn": receiver.msisdn}, channels=["portal", "sms"],
                    line_id=receiver.id, dedupe_key=f"transfer:{found.id}",
                )
            return _out(found, line, receiver), False
        receiver_line = await s.get(Line, found.receiver_line_id)
        assert receiver_line is not None
        return _out(found, line, receiver_line), True

    out, replayed = await db.run(run)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return JSONResponse(out.model_dump(mode="json"), status_code=201, headers=headers)


@router.get("/{line_id}/transfers", response_model=list[TransferOut],
            summary="Transfers given from my line, newest first")
async def given(line_id: uuid.UUID, customer: CurrentCustomer, db: DB) -> list[TransferOut]:
    async with db.read() as s:
        line = await own_line(s, customer.account.id, line_id)
        actions = (await s.execute(
            select(BalanceAction).where(BalanceAction.line_id == line.id,
                                        BalanceAction.kind == ActionKind.transfer.value)
            .order_by(BalanceAction.requested_at.desc()).limit(100)
        )).scalars().all()
        out = []
        for a in actions:
            receiver = await s.get(Line, a.receiver_line_id)
            assert receiver is not None
            out.append(_out(a, line, receiver))
        return out


@router.get("/{line_id}/transfers/terms", response_model=TransferTerms,
            summary="The fee and limits of a transfer from my line")
async def terms(
    line_id: uuid.UUID, customer: CurrentCustomer, db: DB, settings: AppSettings
) -> TransferTerms:
    async with db.read() as s:
        line = await own_line(s, customer.account.id, line_id)
    cur = line.currency
    return TransferTerms(
        fee_percent=settings.balance_transfer_fee_percent,
        fee_fixed=Money.of(settings.balance_transfer_fee_fixed, cur),
        min_amount=Money.of(settings.balance_transfer_min_amount, cur),
        max_amount=Money.of(settings.balance_transfer_max_amount, cur),
        max_data_mb=settings.balance_transfer_max_data_mb,
        max_voice_minutes=settings.balance_transfer_max_voice_minutes,
        per_day=settings.balance_transfer_daily_count,
    )
