"""Who may act: API keys, customer sessions, one-time codes, and the record of every decision."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class ApiKey(Base):
    """API keys for the operator's own tools and integrations (stored only as a hash)."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    """The public part of the key (`sck_<prefix>_…`), to find it and to show it."""
    client_id: Mapped[uuid.UUID] = mapped_column(index=True)
    """Who holds the key, across its rotations: the id of the first key of its rotation chain
    (a new key's own id; a rotation's successor copies it). Charging sessions and TMF654
    idempotency keys belong to the client, so that they outlive a rotation."""
    secret_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the whole key; the key itself is shown once and never stored."""
    scopes: Mapped[list[str]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    """When it last let a request in; written at most every few minutes (`TOUCH_EVERY`)."""
    revoked_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    """From then on it is refused as a revoked one is; none: it never expires. A rotated key
    ends when its overlap with the new one does."""
    request_key: Mapped[str | None] = mapped_column(String(220), unique=True)
    """`<who asked>:<Idempotency-Key>` of the request that made it (the back-office form's one-time
    key, the admin API's header): a retry finds this key and never makes a second one."""
    request_hash: Mapped[str | None] = mapped_column(String(64))
    """A digest of what that request asked for: the same key with another request is refused."""


class AuthSession(Base):
    """A signed-in browser or API client. The token is random (256 bits); only its hash is kept."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_account_id", "account_id", "revoked_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    """The absolute timeout; the idle timeout counts from `last_seen_at`."""
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    device_hash: Mapped[str | None] = mapped_column(String(64))
    mfa: Mapped[bool] = mapped_column(default=False)
    """Signed in with a second factor."""
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_reason: Mapped[str | None] = mapped_column(String(32))


class CodePurpose(StrEnum):
    verify_email = "verify_email"
    verify_phone = "verify_phone"
    password_reset = "password_reset"
    unlock = "unlock"
    attach_line = "attach_line"


class VerificationCode(Base):
    """A six-digit code sent to an e-mail address or phone, stored only as a keyed hash."""

    __tablename__ = "verification_codes"
    __table_args__ = (
        Index(
            "ix_verification_codes_live",
            "account_id",
            "purpose",
            "target",
            postgresql_where=text("consumed_at IS NULL AND voided_at IS NULL"),
            sqlite_where=text("consumed_at IS NULL AND voided_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    purpose: Mapped[str] = mapped_column(String(24))
    channel: Mapped[str] = mapped_column(String(8))
    """`email` or `sms`."""
    target: Mapped[str] = mapped_column(String(254))
    """The address or E.164 number the code was sent to; the code is bound to it."""
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    attempts: Mapped[int] = mapped_column(default=0)
    consumed_at: Mapped[datetime | None] = mapped_column()
    voided_at: Mapped[datetime | None] = mapped_column()


class SecurityEvent(Base):
    """An authentication decision or a change to an account's security, shown to the customer
    and kept for audit. Never holds a password, code or token."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_account_id", "account_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    """None when the attempt named no known account."""
    kind: Mapped[str] = mapped_column(String(40))
    success: Mapped[bool] = mapped_column(default=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecoveryCode(Base):
    """A single-use recovery code for an account with TOTP (keyed hash only)."""

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("account_id", "code_hash"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column()


class LoginThrottle(Base):
    """Consecutive failed logins per login name (known or not, so both answer alike)."""

    __tablename__ = "login_throttles"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Keyed hash of the normalised login: unknown names are not stored in the clear."""
    failures: Mapped[int] = mapped_column(default=0)
    """Consecutive failures; a success resets them."""
    locked_until: Mapped[datetime | None] = mapped_column()
    window_start: Mapped[datetime | None] = mapped_column()
    window_failures: Mapped[int] = mapped_column(default=0)
    """Failures since `window_start` (an hour at most): capped at 100."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KnownDevice(Base):
    """A browser or client an account has signed in from (for "new device" alerts)."""

    __tablename__ = "known_devices"
    __table_args__ = (UniqueConstraint("account_id", "device_hash"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    device_hash: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Passkey(Base):
    """A WebAuthn credential (a passkey) its holder signs in with instead of a password. Only
    the public key is here: the private key never leaves the authenticator."""

    __tablename__ = "passkeys"
    __table_args__ = (Index("ix_passkeys_account_id", "account_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(), unique=True)
    """The authenticator's id of the credential: what a sign-in names it by."""
    public_key: Mapped[bytes] = mapped_column(LargeBinary())
    """COSE-encoded, as the authenticator gave it at registration."""
    sign_count: Mapped[int] = mapped_column(default=0)
    """The authenticator's signature counter at the last use (0: it keeps none, as synced
    passkeys do); a sign-in that does not move it forward is refused as a cloned key's."""
    transports: Mapped[list[str]] = mapped_column(default=list)
    """How the browser may reach the authenticator (`internal`, `hybrid`, `usb`…)."""
    aaguid: Mapped[str] = mapped_column(String(36))
    """The authenticator's model (all zeros when it does not say)."""
    name: Mapped[str] = mapped_column(String(64))
    """What the holder calls it ("Phone", "Laptop")."""
    backed_up: Mapped[bool] = mapped_column(default=False)
    """Synced to the holder's other devices (a cloud keychain), as of its last use."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()


class PasskeyChallenge(Base):
    """The challenge of one passkey ceremony: stored as a keyed hash, used once, for a few
    minutes. A registration's is bound to its account, a sign-in's to the client that asked
    for it (the keyed hash of a random handle only that client holds)."""

    __tablename__ = "passkey_challenges"
    __table_args__ = (Index("ix_passkey_challenges_expires_at", "expires_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    purpose: Mapped[str] = mapped_column(String(16))
    """`register` or `login`."""
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    """The account registering a passkey; None for a sign-in (any account's passkey may answer)."""
    challenge_hash: Mapped[str] = mapped_column(String(64), unique=True)
    holder_hash: Mapped[str] = mapped_column(String(64))
    """Keyed hash of the handle given to the client with the challenge."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


class PasskeySecondFactor(Base):
    """Two-step sign-in with a passkey turned on by a customer who keeps a password but has no
    authenticator app: after the password, a sign-in asks for one of their passkeys (or a
    recovery code). One row per account that turned it on; none while TOTP is on (then a
    passkey is accepted at the second step anyway)."""

    __tablename__ = "passkey_second_factors"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    enabled_at: Mapped[datetime] = mapped_column()
