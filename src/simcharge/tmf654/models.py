"""Balance actions: each top-up, adjustment, reservation and transfer asked through TMF654 (or
the portal), with the ledger transfers that carried it out."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class ActionKind(StrEnum):
    topup = "topup"
    adjust = "adjust"
    reserve = "reserve"
    transfer = "transfer"


class ActionStatus(StrEnum):
    """TMF654 `ActionStatusType`."""

    created = "created"
    """A reservation holds the amount (a pending ledger transfer)."""
    completed = "completed"
    """Done: the transfers are posted (a reservation: consumed)."""
    failed = "failed"
    cancelled = "cancelled"
    """A reservation released (its pending transfer voided or timed out)."""


class BalanceAction(Base):
    __tablename__ = "balance_actions"
    __table_args__ = (
        UniqueConstraint("actor", "idempotency_key"),
        Index("ix_balance_actions_line_id", "line_id", "kind", "requested_at"),
        Index("ix_balance_actions_receiver_line_id", "receiver_line_id", "kind", "requested_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(12))
    line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lines.id"))
    receiver_line_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("lines.id"))
    usage_type: Mapped[str] = mapped_column(String(16))
    """TMF654 `UsageType`: monetary, voice, data, sms."""
    unit: Mapped[str] = mapped_column(String(8))
    """The ledger unit: a currency, `VOICE_S`, `DATA_B`, `SMS`."""
    amount: Mapped[int] = mapped_column()
    """In the ledger unit; an adjustment may be negative."""
    fee: Mapped[int] = mapped_column(default=0)
    """A transfer's fee, in the giver's currency (minor units)."""
    account_id: Mapped[uuid.UUID] = mapped_column()
    """The ledger account moved from or to: the wallet or a bucket."""
    receiver_account_id: Mapped[uuid.UUID | None] = mapped_column()
    pending_transfer_id: Mapped[uuid.UUID | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(String(255))
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What the caller sent (descriptive members are shown back)."""
    actor: Mapped[str] = mapped_column(String(120))
    """`apikey:<prefix>` or `account:<id>`."""
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column()
