"""Customer sessions: 256-bit random tokens, stored as a keyed hash, with idle and absolute
timeouts. A browser holds the token in an HttpOnly cookie (and proves each write with a CSRF
token derived from the session); an API client sends it as a bearer token."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import AuthSession
from simcharge.driver_reads import DriverRead, ReadTogether, detached, entity_columns
from simcharge.kit.crypto import constant_time_equals, keyed_hash

TOUCH_EVERY = timedelta(seconds=60)
"""`last_seen_at` is written at most once a minute (the idle timeout is in minutes)."""

BACKGROUND_HEADER = "x-background"
"""A request carrying this header with `1` is made by a page or client on its own (the order
page polling its state), not by the person: it is served, but it does not renew the session's
idle time (ASVS 3.3.2), so polling does not keep an unattended session alive."""


def is_background(headers: Mapping[str, str]) -> bool:
    return headers.get(BACKGROUND_HEADER) == "1"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class IssuedSession:
    session: AuthSession
    token: str
    """Shown once: to the browser as a cookie, to an API client in the response."""


def token_hash(secret: str, token: str) -> str:
    return keyed_hash(secret, "session-token", token)


def csrf_token(secret: str, session_id: uuid.UUID) -> str:
    return keyed_hash(secret, "csrf", str(session_id))


def csrf_valid(secret: str, session_id: uuid.UUID, presented: str | None) -> bool:
    return bool(presented) and constant_time_equals(csrf_token(secret, session_id), presented or "")


async def open_session(
    session: AsyncSession,
    secret: str,
    *,
    account_id: uuid.UUID,
    client: ClientInfo,
    policy: SessionPolicy,
    now: datetime,
    mfa: bool = False,
) -> IssuedSession:
    token = secrets.token_urlsafe(32)
    row = AuthSession(
        account_id=account_id,
        token_hash=token_hash(secret, token),
        created_at=now,
        last_seen_at=now,
        expires_at=now + policy.absolute,
        ip=client.ip,
        user_agent=client.short_user_agent,
        device_hash=client.device_hash(secret),
        mfa=mfa,
    )
    session.add(row)
    await session.flush()
    return IssuedSession(row, token)


def expired(row: AuthSession, policy: SessionPolicy, now: datetime) -> str | None:
    """Why a session is over, or None while it lives."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= now:
        return "absolute_timeout"
    if row.last_seen_at + policy.idle <= now:
        return "idle_timeout"
    return None


# Built once: every signed-in request asks.
_SESSION_AND_ACCOUNT = DriverRead(
    select(*entity_columns(AuthSession, "s_"), *entity_columns(Account, "a_"))
    .join(Account, Account.id == AuthSession.account_id)
    .where(AuthSession.token_hash == bindparam("hash"))
)


_ACCOUNT_OF_TOKEN = (
    select(AuthSession.account_id)
    .where(AuthSession.token_hash == bindparam("hash"))
    .scalar_subquery()
)


class ReadsWithSession:
    """Reads of a page answered with the session check, in one statement (`ReadTogether`):
    each read's parameter `account` becomes the account of the session's token. Their rows are
    kept only if the session is live (`find_session`), and they are the session's own account's
    by construction: one statement, one snapshot."""

    __slots__ = ("params", "together")

    def __init__(self, reads: Sequence[DriverRead], params: Sequence[Mapping[str, Any]]) -> None:
        self.together = ReadTogether(
            _SESSION_AND_ACCOUNT, *(r.replacing("account", _ACCOUNT_OF_TOKEN) for r in reads)
        )
        self.params = tuple(params)
        """Each read's other parameters."""


@dataclass(frozen=True, slots=True)
class FoundSession:
    session: AuthSession
    account: Account
    stale: bool
    """It must be looked at in a write transaction (`session_for_token`): to note its use
    (older than `TOUCH_EVERY`) or to end it now that it is over (and log that)."""
    read: list[list[Any]] | None = None
    """The rows of the `ReadsWithSession` asked for with it."""


async def find_session(
    session: AsyncSession,
    secret: str,
    token: str,
    *,
    policy: SessionPolicy,
    now: datetime,
    reads: ReadsWithSession | None = None,
    background: bool = False,
) -> FoundSession | None:
    """The session a token belongs to and its account, in one query that writes nothing; None
    when no session has the token or it was ended. With `reads`, their rows too (same query).
    `background`: the request is no use of the session (`is_background`), so it is stale only
    when it is over, never to note its use."""
    hashed = token_hash(secret, token)
    read = None
    if reads is None:
        found = await _SESSION_AND_ACCOUNT.first(session, {"hash": hashed})
    else:
        params = [{"hash": hashed}, *({**p, "hash": hashed} for p in reads.params)]
        of_token, *read = await reads.together.all(session, params)
        found = of_token[0] if of_token else None
    if found is None or found.s_revoked_at is not None:
        return None
    row, account = detached(AuthSession, found, "s_"), detached(Account, found, "a_")
    stale = expired(row, policy, now) is not None or (
        not background and now - row.last_seen_at >= TOUCH_EVERY
    )
    return FoundSession(row, account, stale, read)


async def session_for_token(
    session: AsyncSession,
    secret: str,
    token: str,
    *,
    policy: SessionPolicy,
    now: datetime,
    client: ClientInfo | None = None,
    touch: bool = True,
) -> AuthSession | None:
    """The live session a token belongs to (its last use noted, unless not `touch`: a
    background request), or None. A session found past its idle or absolute timeout is ended
    here, and that is in the security log."""
    row = (
        await session.execute(
            select(AuthSession).where(AuthSession.token_hash == token_hash(secret, token))
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    why = expired(row, policy, now)
    if why is not None:
        if row.revoked_at is None:
            row.revoked_at, row.revoked_reason = now, why
            await session.flush()
            await record_event(
                session,
                EventKind.session_expired,
                account_id=row.account_id,
                client=client,
                details={"reason": why, "session_id": str(row.id)},
                now=now,
            )
        return None
    if touch and now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        await session.flush()
    return row


async def rotate(session: AsyncSession, secret: str, row: AuthSession) -> str:
    """Give a session a new token (after a privilege change); the old token stops working."""
    token = secrets.token_urlsafe(32)
    row.token_hash = token_hash(secret, token)
    await session.flush()
    return token


async def revoke(session: AsyncSession, row: AuthSession, reason: str, now: datetime) -> bool:
    """End a session; False when it had already ended (nothing done, nothing to log)."""
    if row.revoked_at is not None:
        return False
    row.revoked_at, row.revoked_reason = now, reason
    await session.flush()
    return True


async def revoke_token(
    session: AsyncSession, secret: str, token: str, reason: str, now: datetime
) -> AuthSession | None:
    """End the session a token belongs to, if it is still going; returns it (None if there was
    none to end)."""
    row = (
        await session.execute(
            select(AuthSession)
            .where(
                AuthSession.token_hash == token_hash(secret, token),
                AuthSession.revoked_at.is_(None),
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is not None:
        await revoke(session, row, reason, now)
    return row


async def revoke_all(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    reason: str,
    now: datetime,
    keep: uuid.UUID | None = None,
) -> int:
    stmt = update(AuthSession).where(
        AuthSession.account_id == account_id, AuthSession.revoked_at.is_(None)
    )
    if keep is not None:
        stmt = stmt.where(AuthSession.id != keep)
    result = await session.execute(stmt.values(revoked_at=now, revoked_reason=reason))
    return int(getattr(result, "rowcount", 0) or 0)


async def live_sessions(
    session: AsyncSession, account_id: uuid.UUID, *, policy: SessionPolicy, now: datetime
) -> Sequence[AuthSession]:
    rows = (
        (
            await session.execute(
                select(AuthSession)
                .where(AuthSession.account_id == account_id, AuthSession.revoked_at.is_(None))
                .order_by(AuthSession.last_seen_at.desc())
            )
        )
        .scalars()
        .all()
    )
    return [r for r in rows if expired(r, policy, now) is None]


async def session_of_account(
    session: AsyncSession, account_id: uuid.UUID, session_id: uuid.UUID
) -> AuthSession | None:
    """A session by id, only if it belongs to `account_id` (anyone else's is "not found")."""
    return (
        await session.execute(
            select(AuthSession).where(
                AuthSession.id == session_id, AuthSession.account_id == account_id
            )
        )
    ).scalar_one_or_none()
