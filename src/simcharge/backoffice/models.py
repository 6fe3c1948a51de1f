"""Staff users, their sessions, the audit log, and adjustments waiting for a second pair of eyes."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class Role(StrEnum):
    agent = "agent"
    """Customer service: tickets, customers, unlocking, unfreezing, small adjustments."""
    finance = "finance"
    """Money: refunds, approving adjustments, payments needing attention, reports."""
    admin = "admin"
    """Everything, including the catalog, staff and the audit log."""


class StaffUser(Base):
    """Someone of the operator's staff. Not a customer account: own table, own sessions."""

    __tablename__ = "staff_users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    email: Mapped[str | None] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8), default="en")
    time_zone: Mapped[str | None] = mapped_column(String(64))
    """The IANA zone the back office writes this member's times in; None: the operator's
    (`SIMCHARGE_OPERATOR_TIMEZONE`). Reports count the operator's days whatever it is."""
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret_sealed: Mapped[str | None] = mapped_column(String(255))
    """Sealed TOTP secret; set at the first sign-in (enrolment), confirmed by a code."""
    totp_enabled_at: Mapped[datetime | None] = mapped_column()
    totp_last_step: Mapped[int | None] = mapped_column()
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    password_set_by_other_at: Mapped[datetime | None] = mapped_column()
    """When someone else (an admin, `simcharge staff password`) set the password: while set, the
    member may only change it (and sign out); it signs in for
    `SIMCHARGE_STAFF_RESET_PASSWORD_HOURS` after this. Cleared by their own change."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()


class StaffSession(Base):
    """A signed-in staff member (browser cookie or API bearer token); only the token's hash."""

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_staff_id", "staff_id", "revoked_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    mfa: Mapped[bool] = mapped_column(default=False)
    """False between the password and the TOTP code: such a session opens nothing else."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    revoked_at: Mapped[datetime | None] = mapped_column()


class StaffPasskey(Base):
    """A passkey (WebAuthn credential) a staff member signs in to the back office with: both
    factors at once (user verification is required). Kept apart from the customers' `passkeys`:
    a staff credential never opens a customer session, nor the other way round."""

    __tablename__ = "staff_passkeys"
    __table_args__ = (Index("ix_staff_passkeys_staff_id", "staff_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    staff_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_users.id"))
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary())
    """COSE-encoded, as the authenticator gave it at registration."""
    sign_count: Mapped[int] = mapped_column(default=0)
    """The signature counter at the last use (0: the authenticator keeps none)."""
    transports: Mapped[list[str]] = mapped_column(default=list)
    aaguid: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(64))
    backed_up: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()


class AuditEntry(Base):
    """One staff action (or refusal): append-only — the database refuses UPDATE and DELETE."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_target", "target_type", "target_id", "at"),
        # A target's id alone (the page's filter, "its trail"): migration 0026.
        Index("ix_audit_entries_target_id", "target_id", "at"),
        Index("ix_audit_entries_actor", "actor", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_users.id"))
    actor: Mapped[str] = mapped_column(String(80))
    """`staff:<username>` or `apikey:<prefix>`."""
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column()
    after: Mapped[dict[str, Any] | None] = mapped_column()
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))


class AdjustmentState(StrEnum):
    awaiting_approval = "awaiting_approval"
    """Above the threshold: a second staff member must approve it before it moves anything."""
    applied = "applied"
    """Posted to the ledger."""
    rejected = "rejected"
    """Turned down by the approver: nothing moved."""


class Adjustment(Base):
    """A manual change of a wallet or a bucket, with its reason; posted as one ledger transfer."""

    __tablename__ = "adjustments"
    __table_args__ = (Index("ix_adjustments_line_id", "line_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lines.id"))
    ledger_account_id: Mapped[uuid.UUID] = mapped_column()
    """The wallet or bucket adjusted."""
    unit: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column()
    """Signed: positive credits the line, negative takes back."""
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_by_staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_users.id"))
    decided_by: Mapped[str | None] = mapped_column(String(80))
    decision_note: Mapped[str | None] = mapped_column(Text)
    """Why the second person approved or rejected it (required to reject on the page)."""
    transfer_id: Mapped[uuid.UUID | None] = mapped_column()
    ticket_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()
