"""Telling a customer something, after commit, through the outbox.

`notify` writes a `notifications.deliver` job in the caller's transaction; when it runs, it
adds the in-portal notice and one job per channel (e-mail to the verified address, SMS to the
verified phone), each retried on its own. `send_code` sends a one-time code to a given address
or number: the code travels sealed (AES-GCM) in the job's payload, which is emptied once the
job is done or buried — a code is never stored in the clear.

The payload of `notifications.deliver` is a contract other modules rely on:
`{"account_id", "template", "params", "channels": ["email", "sms", "portal"], "line_id"?,
"targets"?: {"email": addr, "sms": number}, "about"?: {"state": …, "validity_end": …}}`
(`targets` overrides the account's contacts, e.g. to warn an old address that it was replaced;
`about`, for a `line.…` warning, is what the line was when it was queued — its state, and the
time its change is counted from, ISO 8601 — and the warning is dropped if the line is no
longer so when it is delivered; the lifecycle's warnings are first judged by their own job,
`lifecycle.warning`, which delivers one with the line's facts of the moment if it still holds)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.models import CodePurpose
from simcharge.config import Settings
from simcharge.db import table_of
from simcharge.driver_reads import DriverRead
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import seal
from simcharge.kit.ids import uuid7
from simcharge.kit.moments import is_zone
from simcharge.notifications.models import MessageLog, Notice
from simcharge.worker.service import NewJob, enqueue

CHANNELS = ("email", "sms", "portal")
DELIVER = "notifications.deliver"
SEND_CODE = "notifications.code"
SEND_EMAIL = "notifications.email"


@dataclass(frozen=True, slots=True)
class Reading:
    """How a reader's messages write times and numbers: `zone`, an IANA name, and `locale`, a
    regional format (`es_MX`) or None for the language's own (`templates.render`'s)."""

    zone: str
    locale: str | None = None


def reading_of(account: Account | None, settings: Settings) -> Reading:
    """The account's time zone and number format; for no account (a staff member's address)
    or an account without a zone of its own, the operator's zone (`SIMCHARGE_OPERATOR_TIMEZONE`)."""
    if account is None:
        return Reading(settings.operator_timezone)
    zone = account.time_zone if is_zone(account.time_zone) else settings.operator_timezone
    return Reading(zone, account.format_locale)


async def reading_for(
    session: AsyncSession, account_id: uuid.UUID | None, settings: Settings
) -> Reading:
    """`reading_of` the account as it is now, when its message is rendered: a zone chosen
    while a message waited in the queue is the one it is written in."""
    account = await session.get(Account, account_id) if account_id is not None else None
    return reading_of(account, settings)


async def notify(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    template: str,
    params: dict[str, Any] | None = None,
    channels: Sequence[str] = CHANNELS,
    line_id: uuid.UUID | None = None,
    targets: dict[str, str] | None = None,
    dedupe_key: str | None = None,
    about: dict[str, Any] | None = None,
) -> None:
    job = notice(
        account_id=account_id,
        template=template,
        params=params,
        channels=channels,
        line_id=line_id,
        targets=targets,
        dedupe_key=dedupe_key,
        about=about,
    )
    await enqueue(session, job.kind, job.payload, dedupe_key=job.dedupe_key)


def notice(
    *,
    account_id: uuid.UUID,
    template: str,
    params: dict[str, Any] | None = None,
    channels: Sequence[str] = CHANNELS,
    line_id: uuid.UUID | None = None,
    targets: dict[str, str] | None = None,
    dedupe_key: str | None = None,
    about: dict[str, Any] | None = None,
) -> NewJob:
    """The delivery job of a notification, for `enqueue_many` with others."""
    unknown = set(channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channels {sorted(unknown)}")
    payload: dict[str, Any] = {
        "account_id": str(account_id),
        "template": template,
        "params": params or {},
        "channels": list(channels),
        "line_id": str(line_id) if line_id else None,
    }
    if targets:
        payload["targets"] = targets
    if about:
        payload["about"] = about
    return NewJob(DELIVER, payload, dedupe_key=dedupe_key)


async def tell_staff(
    session: AsyncSession,
    *,
    staff_id: uuid.UUID,
    to: str,
    language: str,
    template: str,
    params: dict[str, Any],
    dedupe_key: str,
) -> None:
    """E-mail a staff member (who has no customer account, portal or phone): one
    `notifications.email` job naming `staff_id`, logged without an account."""
    await enqueue(
        session,
        SEND_EMAIL,
        {
            "staff_id": str(staff_id),
            "template": template,
            "params": params,
            "to": to,
            "language": language,
        },
        dedupe_key=dedupe_key,
    )


async def send_code(
    session: AsyncSession,
    secret: str,
    *,
    account_id: uuid.UUID,
    purpose: CodePurpose,
    channel: str,
    target: str,
    code: str,
    language: str,
) -> None:
    await enqueue(
        session,
        SEND_CODE,
        {
            "account_id": str(account_id),
            "purpose": purpose.value,
            "channel": channel,
            "target": target,
            "language": language,
            "sealed": seal(secret, "outbox-code", code.encode()),
        },
        max_attempts=4,
    )


async def log_message(
    session: AsyncSession,
    *,
    account_id: uuid.UUID | None,
    channel: str,
    template: str,
    target: str,
    subject: str | None,
    status: str,
    provider_id: str | None = None,
    error: str | None = None,
    log_id: uuid.UUID | None = None,
) -> None:
    session.add(
        MessageLog(
            id=log_id or uuid7(),
            account_id=account_id,
            channel=channel,
            template=template,
            target=target,
            subject=subject,
            status=status,
            provider_id=provider_id,
            error=error,
            created_at=utcnow(),
        )
    )
    await session.flush()


def _notices(*where: Any) -> DriverRead:
    # Built once (every view of the user center asks): no construction or cache key per call.
    return DriverRead(
        select(*table_of(Notice).c)
        .where(Notice.account_id == bindparam("account"), *where)
        .order_by(Notice.created_at.desc(), Notice.id.desc())
        .limit(bindparam("limit"))
    )


NOTICES_OF = _notices()
_UNREAD_OF = _notices(Notice.read_at.is_(None))


async def notices_of(
    session: AsyncSession, account_id: uuid.UUID, *, limit: int = 50, unread_only: bool = False
) -> list[Any]:
    """The account's latest notices, newest first, as rows of `Notice`'s columns (to show)."""
    read = _UNREAD_OF if unread_only else NOTICES_OF
    return await read.all(session, {"account": account_id, "limit": limit})


async def unread_count(session: AsyncSession, account_id: uuid.UUID) -> int:
    stmt = (
        select(func.count())
        .select_from(Notice)
        .where(Notice.account_id == account_id, Notice.read_at.is_(None))
    )
    return int((await session.execute(stmt)).scalar_one())


async def mark_read(
    session: AsyncSession,
    account_id: uuid.UUID,
    notice_ids: Sequence[uuid.UUID] | None,
    now: datetime,
) -> int:
    """Mark the account's notices read (all of them when `notice_ids` is None)."""
    stmt = update(Notice).where(Notice.account_id == account_id, Notice.read_at.is_(None))
    if notice_ids is not None:
        stmt = stmt.where(Notice.id.in_(list(notice_ids)))
    result = await session.execute(stmt.values(read_at=now))
    return int(getattr(result, "rowcount", 0) or 0)
