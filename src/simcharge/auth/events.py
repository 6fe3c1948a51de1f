"""The security log: every authentication decision and every change to an account's security."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.client import ClientInfo
from simcharge.auth.models import SecurityEvent
from simcharge.db import insert_if_absent, older_than, table_of
from simcharge.kit.clock import utcnow

FORBIDDEN_DETAILS = ("password", "code", "token", "secret")


class EventKind(StrEnum):
    registered = "registered"
    registration_attempt_on_taken_contact = "registration_attempt_on_taken_contact"
    contact_verified = "contact_verified"
    contact_change_requested = "contact_change_requested"
    contact_changed = "contact_changed"
    login = "login"
    login_locked_out = "login_locked_out"
    mfa_required = "mfa_required"
    new_device = "new_device"
    logout = "logout"
    logout_all = "logout_all"
    session_revoked = "session_revoked"
    session_expired = "session_expired"
    """Used after its idle or absolute timeout: ended (`details.reason`)."""
    password_changed = "password_changed"
    password_reset_requested = "password_reset_requested"
    password_reset = "password_reset"
    totp_enrolment_started = "totp_enrolment_started"
    totp_enabled = "totp_enabled"
    totp_disabled = "totp_disabled"
    recovery_codes_regenerated = "recovery_codes_regenerated"
    recovery_code_used = "recovery_code_used"
    account_locked = "account_locked"
    unlock_requested = "unlock_requested"
    account_unlocked = "account_unlocked"
    line_attach_requested = "line_attach_requested"
    line_attached = "line_attached"
    code_rejected = "code_rejected"
    csrf_refused = "csrf_refused"
    """A cookie-authenticated write without the session's CSRF token."""
    alert_sent = "alert_sent"
    """A security alert went out (`details`: which one, by which channels)."""
    account_closed = "account_closed"
    """The holder closed the account (`details`: lines detached, sessions ended; nothing
    personal)."""
    passkey_added = "passkey_added"
    """A passkey was registered (`details.passkey_id`); failed: the password asked first was
    wrong, or the authenticator's answer did not verify (`details.reason`)."""
    passkey_renamed = "passkey_renamed"
    passkey_removed = "passkey_removed"
    passkey_second_factor_enabled = "passkey_second_factor_enabled"
    """Two-step sign-in with a passkey was turned on (failed: the password asked again was
    wrong)."""
    passkey_second_factor_disabled = "passkey_second_factor_disabled"
    """Turned off by its holder (`details.reason`: `holder`), or replaced by an authenticator
    app (`totp`)."""
    passkey_sign_count_regressed = "passkey_sign_count_regressed"
    """A sign-in with a passkey whose signature counter did not move forward: refused, as the
    key may have been copied (`details`: the passkey, the stored and the presented counts)."""


async def record_event(
    session: AsyncSession,
    kind: EventKind,
    *,
    account_id: uuid.UUID | None,
    client: ClientInfo | None = None,
    success: bool = True,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> None:
    """Write an entry of the account's security log. With `event_id` (derived by the caller, e.g.
    from a job that may run twice), written once whatever the number of calls."""
    safe = {k: v for k, v in (details or {}).items() if not any(f in k for f in FORBIDDEN_DETAILS)}
    row = {
        "account_id": account_id,
        "kind": kind.value,
        "success": success,
        "ip": client.ip if client else None,
        "user_agent": client.short_user_agent if client else None,
        "details": safe,
        "created_at": now or utcnow(),
    }
    if event_id is not None:
        stmt = insert_if_absent(session, table_of(SecurityEvent), "id")
        await session.execute(stmt, {"id": event_id, **row})
        return
    session.add(SecurityEvent(**row))
    await session.flush()


async def events_of(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    limit: int,
    before: datetime | None = None,
    before_id: uuid.UUID | None = None,
) -> Sequence[SecurityEvent]:
    stmt = select(SecurityEvent).where(SecurityEvent.account_id == account_id)
    if before is not None:
        stmt = stmt.where(older_than(SecurityEvent.created_at, SecurityEvent.id, before, before_id))
    stmt = stmt.order_by(SecurityEvent.created_at.desc(), SecurityEvent.id.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()
