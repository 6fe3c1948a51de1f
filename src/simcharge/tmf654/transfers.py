"""`/api/v1/me/lines/{line_id}/transfers`: a customer gives credit, minutes, data or SMS from
one of their lines to another number. The service (`tmf654.giving`) is the portal's too, and
calls TMF654's `transferBalance`; the line must be the customer's own (anyone else's is "not
found")."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.service import own_line
from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.auth.deps import CurrentCustomer
from simcharge.errors import SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.schemas import Money
from simcharge.kit.translations import N_
from simcharge.lines.models import Line
from simcharge.tmf654 import giving
from simcharge.tmf654.models import BalanceAction

router = APIRouter(prefix=f"{API_PREFIX}/me/lines", tags=["me"])

USAGE = Literal["monetary", "voice", "data", "sms"]


OUR_FIELDS = {
    "receiverLogicalResource": "to",
    "logicalResource": "line_id",
    "usageType": "usage_type",
    "bucket.id": "bucket_id",
    "msisdn": "to",
}
"""The service names fields as TMF654's `transferBalance` does; this request's are these."""


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(max_length=32, description="The receiving number (E.164)")
    usage_type: USAGE
    amount: int = Field(
        gt=0,
        strict=True,  # a JSON integer: `true` is not 1
        description="Money: minor units; voice: minutes; data: MB; sms: messages",
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
    """Every limit a transfer from the line can be refused for: money in the wallet's currency
    (`min_amount`, `max_amount`, with the fee), voice in minutes, data in MB, SMS in messages
    (the same figures a refusal names), and the count in 24 hours."""

    fee_percent: Decimal
    fee_fixed: Money
    min_amount: Money
    max_amount: Money
    min_data_mb: int
    max_data_mb: int
    min_voice_minutes: int
    max_voice_minutes: int
    max_sms: int
    """Messages; the least is one."""
    per_day: int
    used_today: int
    """Transfers this line gave in the last 24 hours (the limit's window: not a calendar day in
    any time zone); `per_day` minus this is what is left now."""


def _out(action: BalanceAction, line: Line, receiver: Line) -> TransferOut:
    return TransferOut(
        id=action.id, status=action.status, from_msisdn=line.msisdn, to_msisdn=receiver.msisdn,
        usage_type=action.usage_type, unit=action.unit, amount=action.amount,
        fee=Money.of(action.fee, line.currency),
        receiver_bucket_id=action.receiver_account_id if action.unit != line.currency else None,
        created_at=action.requested_at,
    )


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
    gift = giving.Gift(to=body.to, usage_type=body.usage_type, amount=body.amount,
                       bucket_id=body.bucket_id, reason=body.reason)

    async def run(s: AsyncSession) -> tuple[TransferOut, bool]:
        given = await giving.give(s, settings, account_id=customer.account.id, line_id=line_id,
                                  gift=gift, key=idempotency_key)
        return _out(given.action, given.line, given.receiver), given.replayed

    try:
        out, replayed = await db.run(run)
    except SimchargeError as exc:
        exc.field = OUR_FIELDS.get(exc.field or "", exc.field)
        raise
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return JSONResponse(out.model_dump(mode="json"), status_code=201, headers=headers)


@router.get("/{line_id}/transfers", response_model=list[TransferOut],
            summary="Transfers given from my line, newest first")
async def given(line_id: uuid.UUID, customer: CurrentCustomer, db: DB) -> list[TransferOut]:
    async with db.read() as s:
        line = await own_line(s, customer.account.id, line_id)
        return [_out(a, line, receiver) for a, receiver in await giving.given_from(s, line)]


@router.get("/{line_id}/transfers/terms", response_model=TransferTerms,
            summary="The fee and limits of a transfer from my line")
async def terms(
    line_id: uuid.UUID, customer: CurrentCustomer, db: DB, settings: AppSettings
) -> TransferTerms:
    async with db.read() as s:
        line = await own_line(s, customer.account.id, line_id)
        t = await giving.terms_of(s, settings, line, utcnow())
    return TransferTerms(
        fee_percent=t.fee_percent,
        fee_fixed=Money.of(t.fee_fixed, t.currency),
        min_amount=Money.of(t.min_amount, t.currency),
        max_amount=Money.of(t.max_amount, t.currency),
        min_data_mb=t.min_data_mb,
        max_data_mb=t.max_data_mb,
        min_voice_minutes=t.min_voice_minutes,
        max_voice_minutes=t.max_voice_minutes,
        max_sms=t.max_sms,
        per_day=t.per_day,
        used_today=t.used_today,
    )
