"""A line is one virtual SIM: a wallet of money and buckets of units, each a ledger account."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.lines.identifiers import ACTIVATION_CODE_MAX


class LineState(StrEnum):
    available = "available"
    """In the operator's inventory; not in service until its first top-up or activation."""
    active = "active"
    """In service: can use what it holds."""
    grace = "grace"
    """Validity ended; receives calls and top-ups, but cannot use paid services."""
    frozen = "frozen"
    """Left unused and not topped up for too long; a top-up or support reactivates it."""
    suspended = "suspended"
    """Stopped by customer service (a SIM reported lost or stolen): cannot use paid services,
    takes top-ups without changing state, left alone by the sweep; only staff resume it
    (`lifecycle.service.suspend` / `resume`)."""
    terminated = "terminated"
    """Gone for good; its number may be recycled later."""


class Line(Base):
    __tablename__ = "lines"
    __table_args__ = (Index("ix_lines_account_id", "account_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    msisdn: Mapped[str] = mapped_column(String(16), unique=True)
    """E.164, e.g. +14155550100."""
    iccid: Mapped[str] = mapped_column(String(22), unique=True)
    imsi: Mapped[str | None] = mapped_column(String(15), unique=True)
    activation_code: Mapped[str | None] = mapped_column(String(ACTIVATION_CODE_MAX))
    """The eSIM activation code (LPA string); shown to the line's owner only."""
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    attached_at: Mapped[datetime | None] = mapped_column()
    """Since when `account_id` holds the line (None while no account does). What the line did
    before — another holder's transfers, top-ups and usage — is not shown to this one."""
    label: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=LineState.available.value)
    currency: Mapped[str] = mapped_column(String(3))
    """The wallet's currency."""
    wallet_account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_accounts.id"))
    validity_end: Mapped[datetime | None] = mapped_column()
    last_activity_at: Mapped[datetime | None] = mapped_column()
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LineFacts(Protocol):
    """What a page shows of a line: a `Line`, or a row of its columns read for display
    (`repository.LINES_OF_ACCOUNT`)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def msisdn(self) -> str: ...
    @property
    def label(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def wallet_account_id(self) -> uuid.UUID: ...
    @property
    def validity_end(self) -> datetime | None: ...
    @property
    def last_activity_at(self) -> datetime | None: ...
    @property
    def state_changed_at(self) -> datetime: ...
    @property
    def attached_at(self) -> datetime | None: ...


class Bucket(Base):
    """Units a line holds with one validity and scope; its id is its ledger account's id."""

    __tablename__ = "buckets"
    __table_args__ = (Index("ix_buckets_line_id", "line_id", "unit", "expires_at"),)

    id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_accounts.id"), primary_key=True)
    line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lines.id"))
    unit: Mapped[str] = mapped_column(String(8))
    initial_amount: Mapped[int] = mapped_column()
    zones: Mapped[list[Any]] = mapped_column(default=list)
    """Zone codes where it may be used; empty: everywhere."""
    expires_at: Mapped[datetime | None] = mapped_column()
    source: Mapped[str] = mapped_column(String(160))
    """What granted it: `order:<id>`, `demo`, `adjustment:<id>`."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
