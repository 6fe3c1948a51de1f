"""What the API shows of a line."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from simcharge.kit.schemas import Schema
from simcharge.lines.models import LineState


class WalletView(Schema):
    currency: str
    available: int = Field(description="Minor units that may be spent now")
    reserved: int = Field(description="Minor units held by open reservations (calls in progress)")


class BucketView(Schema):
    id: uuid.UUID
    unit: str = Field(description="VOICE_S (seconds), DATA_B (bytes) or SMS (messages)")
    initial: int
    remaining: int
    reserved: int
    zones: list[str] = Field(description="Zones where it may be used; empty: everywhere")
    expires_at: datetime | None
    source: str


class UnitBalance(Schema):
    unit: str
    remaining: int
    reserved: int
    next_expiry: datetime | None = None
    buckets: list[BucketView]


class LineBalances(Schema):
    line_id: uuid.UUID
    msisdn: str
    state: LineState
    validity_end: datetime | None
    wallet: WalletView
    units: list[UnitBalance]


class LineView(Schema):
    id: uuid.UUID
    msisdn: str
    iccid: str
    state: LineState
    currency: str
    validity_end: datetime | None
    last_activity_at: datetime | None
    account_id: uuid.UUID | None
