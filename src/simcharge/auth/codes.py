"""One-time codes: six digits from a CSPRNG, stored as a keyed hash bound to the account, the
purpose and the target; single use; valid 10 minutes; at most 5 wrong tries; one send a
minute; a newer code voids the older ones. Per account and purpose, sends and checks are also
limited (`throttle.LIMITS`: 5 sends and 10 checks an hour, 20 and 30 a day), so that guessing
is bounded per account whatever the number of addresses it comes from. They are counted before
the transaction that sends or checks the code (`count_send`, `count_check`), as re-entered
passwords are: a slow or hung Redis then holds no account row (nor SQLite's write lock), and a
transaction tried again is not counted twice.

A code is hashed under the current secret key and checked with the key ring: one sent just
before a rotation of the key (its message may still be in the outbox) is still good."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.models import CodePurpose, VerificationCode
from simcharge.auth.throttle import RateLimits
from simcharge.errors import TooManyAttempts, ValidationFailed
from simcharge.kit.crypto import Ring, keyed_hash, keyed_hash_matches
from simcharge.kit.translations import N_

CODE_TTL = timedelta(minutes=10)
MAX_ATTEMPTS = 5
RESEND_AFTER = timedelta(seconds=60)


class InvalidCode(ValidationFailed):
    slug = "invalid-code"
    title = N_("The code is wrong or has expired.")

    def __init__(self) -> None:
        super().__init__(self.title, field="code")


class ResendTooSoon(TooManyAttempts):
    slug = "code-resend-too-soon"
    title = N_("A code was sent a moment ago; please wait before asking for another.")


class TooManyCodes(TooManyAttempts):
    """Too many codes sent to, or checked for, this account and purpose lately."""

    slug = "too-many-codes"
    title = N_("Too many codes were asked for or tried; please try again later.")


@dataclass(frozen=True, slots=True)
class CodeCount:
    """A code send or check of (account, purpose) counted before its transaction. `over`: the
    limit it passed, refused in the transaction; `too_soon`: a send within a minute of the last
    one to `target` (seen by a read before counting), not counted and refused in the
    transaction."""

    account_id: uuid.UUID
    purpose: CodePurpose
    target: str | None = None
    over: TooManyCodes | None = None
    too_soon: ResendTooSoon | None = None

    def counts(self, account_id: uuid.UUID, purpose: CodePurpose, target: str | None) -> bool:
        """Whether this count is the one of that send or check (a target changed, or a login
        that now names another account, between the count and the transaction: it is not)."""
        return (self.account_id, self.purpose) == (account_id, purpose) and (
            self.target is None or self.target == target
        )


async def send_wait(
    session: AsyncSession,
    account_id: uuid.UUID,
    purpose: CodePurpose,
    target: str,
    now: datetime,
) -> ResendTooSoon | None:
    """Why a code of `purpose` may not be sent to `target` now: one was, less than a minute
    ago."""
    latest = (
        await session.execute(
            select(VerificationCode)
            .where(*_live(account_id, purpose))
            .order_by(VerificationCode.created_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if latest is not None and latest.target == target and now - latest.created_at < RESEND_AFTER:
        wait = RESEND_AFTER - (now - latest.created_at)
        return ResendTooSoon(int(wait.total_seconds()) + 1)
    return None


async def count_send(
    limits: RateLimits,
    account_id: uuid.UUID,
    purpose: CodePurpose,
    target: str,
    *,
    too_soon: ResendTooSoon | None = None,
) -> CodeCount:
    """Count one send of a code against the account's limits, outside any transaction (not
    when it is `too_soon`: it will not be sent); `ServiceUnavailable` when the counts cannot be
    reached."""
    if too_soon is not None:
        return CodeCount(account_id, purpose, target, too_soon=too_soon)
    try:
        await _count(limits, "account-code-sends", account_id, purpose)
    except TooManyCodes as exc:
        return CodeCount(account_id, purpose, target, over=exc)
    return CodeCount(account_id, purpose, target)


async def count_check(
    limits: RateLimits, account_id: uuid.UUID, purpose: CodePurpose
) -> CodeCount:
    """Count one check of a code against the account's limits, outside any transaction;
    `ServiceUnavailable` when the counts cannot be reached."""
    try:
        await _count(limits, "account-code-checks", account_id, purpose)
    except TooManyCodes as exc:
        return CodeCount(account_id, purpose, over=exc)
    return CodeCount(account_id, purpose)


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    row: VerificationCode


def _value(account_id: uuid.UUID, purpose: str, target: str, code: str) -> str:
    return f"{account_id}|{purpose}|{target}|{code}"


def _hash(secret: str, account_id: uuid.UUID, purpose: str, target: str, code: str) -> str:
    return keyed_hash(secret, "verification-code", _value(account_id, purpose, target, code))


def _live(account_id: uuid.UUID, purpose: CodePurpose) -> list[ColumnElement[bool]]:
    return [
        VerificationCode.account_id == account_id,
        VerificationCode.purpose == purpose.value,
        VerificationCode.consumed_at.is_(None),
        VerificationCode.voided_at.is_(None),
    ]


async def issue_code(
    session: AsyncSession,
    secret: str,
    *,
    account_id: uuid.UUID,
    purpose: CodePurpose,
    channel: str,
    target: str,
    now: datetime,
    limits: RateLimits,
    counted: CodeCount | None = None,
) -> IssuedCode:
    """A new code for (account, purpose, target); raises `ResendTooSoon` within a minute of the
    last one, `TooManyCodes` past the account's sends for this purpose (`counted` before the
    transaction; counted here, holding what the transaction holds, only when it was not). Every
    older live code of the same purpose is voided."""
    if counted is not None and counted.too_soon is not None:
        raise counted.too_soon
    too_soon = await send_wait(session, account_id, purpose, target, now)
    if too_soon is not None:
        raise too_soon
    if counted is None or not counted.counts(account_id, purpose, target):
        await _count(limits, "account-code-sends", account_id, purpose)
    elif counted.over is not None:
        raise counted.over
    await session.execute(
        update(VerificationCode).where(*_live(account_id, purpose)).values(voided_at=now)
    )
    code = f"{secrets.randbelow(1_000_000):06d}"
    row = VerificationCode(
        account_id=account_id,
        purpose=purpose.value,
        channel=channel,
        target=target,
        code_hash=_hash(secret, account_id, purpose.value, target, code),
        created_at=now,
        expires_at=now + CODE_TTL,
    )
    session.add(row)
    await session.flush()
    return IssuedCode(code, row)


async def void_codes(
    session: AsyncSession,
    account_id: uuid.UUID,
    purposes: Sequence[CodePurpose],
    target: str,
    now: datetime,
) -> None:
    """Void the live codes of these purposes sent to `target` (an address no longer the
    account's)."""
    await session.execute(
        update(VerificationCode)
        .where(
            VerificationCode.account_id == account_id,
            VerificationCode.purpose.in_([p.value for p in purposes]),
            VerificationCode.target == target,
            VerificationCode.consumed_at.is_(None),
            VerificationCode.voided_at.is_(None),
        )
        .values(voided_at=now)
    )


async def live_code(
    session: AsyncSession, account_id: uuid.UUID, purpose: CodePurpose
) -> VerificationCode | None:
    return (
        await session.execute(
            select(VerificationCode)
            .where(*_live(account_id, purpose))
            .order_by(VerificationCode.created_at.desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()


async def consume_code(
    session: AsyncSession,
    secret: Ring,
    *,
    account_id: uuid.UUID,
    purpose: CodePurpose,
    code: str,
    now: datetime,
    limits: RateLimits,
    target: str | None = None,
    counted: CodeCount | None = None,
) -> VerificationCode | None:
    """Use the live code of this purpose (and target, when given). Returns the code's row, or
    None — after counting the attempt, which the caller must commit before refusing. Raises
    `TooManyCodes`, before looking at any code, past the account's checks for this purpose
    (`counted` before the transaction; counted here only when it was not). `secret`: the key
    ring (`Settings.secret_keys`), or the current key alone."""
    if counted is None or not counted.counts(account_id, purpose, None):
        await _count(limits, "account-code-checks", account_id, purpose)
    elif counted.over is not None:
        raise counted.over
    row = await live_code(session, account_id, purpose)
    if row is None or (target is not None and row.target != target):
        return None
    if row.expires_at <= now or row.attempts >= MAX_ATTEMPTS:
        row.voided_at = now
        await session.flush()
        return None
    candidate = code.strip()
    if not (
        candidate.isdigit()
        and len(candidate) == 6
        and keyed_hash_matches(
            secret,
            "verification-code",
            _value(account_id, purpose.value, row.target, candidate),
            row.code_hash,
        )
    ):
        row.attempts += 1
        if row.attempts >= MAX_ATTEMPTS:
            row.voided_at = now
        await session.flush()
        return None
    row.consumed_at = now
    await session.flush()
    return row


async def _count(
    limits: RateLimits, action: str, account_id: uuid.UUID, purpose: CodePurpose
) -> None:
    try:
        await limits.hit(action, f"{account_id}:{purpose.value}")
    except TooManyAttempts as exc:
        raise TooManyCodes(exc.retry_after) from exc
