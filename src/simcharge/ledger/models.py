"""The double-entry ledger, modelled on TigerBeetle.

An account holds one unit (an ISO 4217 currency in minor units, `VOICE_S`, `DATA_B` or `SMS`)
and four running totals. A transfer moves an amount of one unit from a debit account to a
credit account; it is immutable and has a client-chosen id. A *pending* transfer reserves the
amount (the `*_pending` totals) until it is posted (wholly or partly), voided, or expires — each
of which is itself a transfer row pointing at it, so every change of a balance is a transfer.

The stored totals are a cache of the transfers, kept in the same database transaction; the
CHECK constraints below make the database refuse any write that would cross a balance bound.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow


class TransferKind(StrEnum):
    posted = "posted"
    """Moves the amount at once."""
    pending = "pending"
    """Reserves the amount until it is posted, voided or times out."""
    post_pending = "post_pending"
    """Posts (part of) a pending transfer; releases the rest of the reservation."""
    void_pending = "void_pending"
    """Releases a pending transfer entirely."""
    expire_pending = "expire_pending"
    """Written by the sweep when a pending transfer's timeout has passed; releases it."""


class PendingStatus(StrEnum):
    pending = "pending"
    """Reserved; waiting to be posted or voided."""
    posted = "posted"
    """Posted by a `post_pending` transfer."""
    voided = "voided"
    """Released by a `void_pending` transfer."""
    expired = "expired"
    """Released by the sweep after its timeout."""


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("debits_pending >= 0 AND debits_posted >= 0", name="debits_not_negative"),
        CheckConstraint(
            "credits_pending >= 0 AND credits_posted >= 0", name="credits_not_negative"
        ),
        CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name="one_bound_only",
        ),
        CheckConstraint(
            "NOT debits_must_not_exceed_credits "
            "OR debits_pending + debits_posted <= credits_posted",
            name="debits_within_credits",
        ),
        CheckConstraint(
            "NOT credits_must_not_exceed_debits "
            "OR credits_pending + credits_posted <= debits_posted",
            name="credits_within_debits",
        ),
        Index("ix_ledger_accounts_line_id", "line_id"),
        # Room on each page so that balance updates are HOT (no index maintenance).
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    unit: Mapped[str] = mapped_column(String(8))
    """ISO 4217 code (minor units) or one of `VOICE_S`, `DATA_B`, `SMS`."""
    code: Mapped[str] = mapped_column(String(32))
    """What the account is for: `wallet`, `bucket`, `clearing`, `revenue`, `issuance`, …"""
    key: Mapped[str | None] = mapped_column(String(160), unique=True)
    """A stable name for operator accounts (`clearing:stripe:USD`); customer accounts have none."""
    line_id: Mapped[uuid.UUID | None] = mapped_column()
    """The line that holds this account, if any (also the key to partition customer data by)."""
    debits_must_not_exceed_credits: Mapped[bool] = mapped_column(default=False)
    credits_must_not_exceed_debits: Mapped[bool] = mapped_column(default=False)
    debits_pending: Mapped[int] = mapped_column(default=0)
    debits_posted: Mapped[int] = mapped_column(default=0)
    credits_pending: Mapped[int] = mapped_column(default=0)
    credits_posted: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def balance(self) -> int:
        """For a credit-normal account (a customer's wallet): what may still be spent."""
        return self.credits_posted - self.debits_posted - self.debits_pending


class LedgerTransfer(Base):
    __tablename__ = "ledger_transfers"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint("debit_account_id <> credit_account_id", name="accounts_differ"),
        CheckConstraint(
            "(kind = 'pending') = (pending_status IS NOT NULL)", name="status_only_when_pending"
        ),
        CheckConstraint(
            "(kind IN ('post_pending', 'void_pending', 'expire_pending')) = "
            "(pending_id IS NOT NULL)",
            name="pending_id_when_resolving",
        ),
        # A pending transfer is resolved once: posted, voided or expired, never two of these.
        Index(
            "uq_ledger_transfers_pending_id",
            "pending_id",
            unique=True,
            postgresql_where=text("pending_id IS NOT NULL"),
            sqlite_where=text("pending_id IS NOT NULL"),
        ),
        Index("ix_ledger_transfers_debit_account_id", "debit_account_id", "created_at"),
        Index("ix_ledger_transfers_credit_account_id", "credit_account_id", "created_at"),
        Index(
            "ix_ledger_transfers_open_pending",
            "timeout_at",
            postgresql_where=text("pending_status = 'pending'"),
            sqlite_where=text("pending_status = 'pending'"),
        ),
        # A period of the journal (`backoffice.journal`), on PostgreSQL: a BRIN index, a few
        # pages for the whole table (transfers are written in time order), nothing a hot path's
        # insert pays for, and no order a planner could walk for "the latest N" of one account
        # (the user center's `LATEST_OF_ACCOUNT`: a btree on `created_at` made it scan the
        # whole ledger's recent transfers — the sixteenth round's first try).
        Index("ix_ledger_transfers_created_brin", "created_at", postgresql_using="brin").ddl_if(
            dialect="postgresql"
        ),
    )

    # No foreign keys to ledger_accounts: a transfer is only ever written by the statement or
    # transaction that also updates (and so proves the existence of) both accounts, and an FK
    # check on every insert cost a quarter of the ledger's throughput (README, "Performance").
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    debit_account_id: Mapped[uuid.UUID] = mapped_column()
    credit_account_id: Mapped[uuid.UUID] = mapped_column()
    amount: Mapped[int] = mapped_column()
    unit: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))
    pending_id: Mapped[uuid.UUID | None] = mapped_column()
    """For post/void/expire: the pending transfer this one resolves."""
    pending_status: Mapped[str | None] = mapped_column(String(8))
    """For a pending transfer only: where it stands now (see `PendingStatus`)."""
    timeout_at: Mapped[datetime | None] = mapped_column()
    """For a pending transfer with a timeout: when the sweep may release it."""
    code: Mapped[str] = mapped_column(String(32))
    """Why the money moved, in the domain's words: `topup`, `usage`, `expiry`, `refund`, …"""
    reference: Mapped[str | None] = mapped_column(String(160))
    """The business object behind it (an order, a usage record, a charging session)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
