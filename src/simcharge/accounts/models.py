"""A customer's login identity; it owns lines."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Insert, String, Text, Update, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, validates
from sqlalchemy.sql.elements import BindParameter

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.fold import fold
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
    display_name_folded: Mapped[str | None] = mapped_column(Text)
    """`fold(display_name)`, written with it (`_fold_display_name`, `_fold_in_bulk`): what the
    back office's name search compares (`LIKE`), no function applied per row. Without a length:
    folding can lengthen a name ("ß" is "ss", a Hangul syllable two or three letters)."""
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

    @validates("display_name")
    def _fold_display_name(self, _key: str, value: str | None) -> str | None:
        """Every write of the name through the ORM (sign-up, a profile change, the demo, its
        erasure to None) writes its folded form with it."""
        self.display_name_folded = fold(value) if value is not None else None
        return value


def _given(stmt: Insert | Update, name: str) -> tuple[bool, object]:
    """Whether `stmt.values(…)` sets the column `name`, and to what."""
    for column, value in (stmt._values or {}).items():
        if getattr(column, "key", column) == name:
            return True, value
    return False, None


def _named_in(parameters: object, name: str) -> bool:
    rows = parameters if isinstance(parameters, list) else [parameters]
    return any(isinstance(row, dict) and name in row for row in rows)


@event.listens_for(Session, "do_orm_execute")
def _fold_in_bulk(state: ORMExecuteState) -> None:
    """`update(Account).values(display_name=…)` (and `insert`) bypasses `@validates`: the
    folded name is added to the statement. A name the Python side cannot see — an SQL
    expression, rows of parameters — is refused unless the statement sets
    `display_name_folded` too, rather than leaving the search a stale name."""
    stmt = state.statement
    table = getattr(stmt, "table", None)
    if not (isinstance(stmt, Insert | Update) and getattr(table, "name", None) == "accounts"):
        return
    named, value = _given(stmt, "display_name")
    folded = "display_name_folded"
    if _given(stmt, folded)[0] or _named_in(state.parameters, folded):
        return
    if _named_in(state.parameters, "display_name"):
        raise ValueError("accounts.display_name in bulk parameters: give display_name_folded")
    if not named:
        return
    if not isinstance(value, BindParameter) or not isinstance(value.value, str | None):
        raise ValueError("accounts.display_name set to an expression: set display_name_folded")
    state.statement = stmt.values(
        display_name_folded=fold(value.value) if value.value is not None else None
    )
