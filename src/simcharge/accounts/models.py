"""A customer's login identity; it owns lines."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class AccountStatus(StrEnum):
    active = "active"
    """Can log in."""
    locked = "locked"
    """Locked by the customer ("lock my account") or by security rules; unlocked by a code."""
    disabled = "disabled"
    """Closed by staff."""
    closed = "closed"
    """Closed by its holder (`accounts.privacy.close_account`): personal data erased, the
    username a tombstone, lines detached; kept, pseudonymous, for the financial records."""


SIGNED_OUT_FOR_GOOD = frozenset({AccountStatus.disabled.value, AccountStatus.closed.value})
"""Statuses no sign-in, code or reset can get past: answered as a wrong password."""


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    """Stored case-folded and NFKC-normalised; logins compare against it."""
    display_name: Mapped[str | None] = mapped_column(String(128))
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    email_verified_at: Mapped[datetime | None] = mapped_column()
    phone: Mapped[str | None] = mapped_column(String(16), unique=True)
    """E.164."""
    phone_verified_at: Mapped[datetime | None] = mapped_column()
    email_pending: Mapped[str | None] = mapped_column(String(254))
    """A new e-mail address waiting for its code; the old one stays until then."""
    phone_pending: Mapped[str | None] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    password_changed_at: Mapped[datetime | None] = mapped_column()
    language: Mapped[str] = mapped_column(String(8), default="en")
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.active.value)
    time_zone: Mapped[str | None] = mapped_column(String(64))
    """The IANA zone its times are written in (`Asia/Manila`); None: the operator's
    (`SIMCHARGE_OPERATOR_TIMEZONE`)."""
    format_locale: Mapped[str | None] = mapped_column(String(16))
    """The regional format of its numbers, money and dates (`es_MX`: `kit.i18n.regional_format`)
    while it reads a language of `REGIONAL_FORMATS`; None: its browser's region, else the
    language's own."""
    locked_at: Mapped[datetime | None] = mapped_column()
    lock_reason: Mapped[str | None] = mapped_column(String(16))
    """`customer` ("lock my account"), `security` (automatic) or `staff`."""
    totp_secret_sealed: Mapped[str | None] = mapped_column(String(255))
    """The TOTP secret, sealed with a key derived from the secret key."""
    totp_enabled_at: Mapped[datetime | None] = mapped_column()
    """None while enrolment is not confirmed."""
    totp_last_step: Mapped[int | None] = mapped_column()
    """The last time step accepted: a TOTP code works once."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
