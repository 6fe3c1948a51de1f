"""Closures after a restore: an account closed after the backup comes back with the restore
(name, contacts, password hash, TOTP secret…); `simcharge privacy reapply-closures` closes it
again from the application's own log.

The record that survives the restore is the log, shipped off the host: each closure writes the
JSON line `{"event": "account.closed", "account_id": "…", "timestamp": "…"}` once its transaction
has committed (`_log_committed_closures`: never for a closure rolled back, which did not happen).
The closure's audit entry, security event and outbox job are in the database, and went back
with it.

Closing again erases what `accounts.privacy.close_account` erases — without asking the
password (the holder confirmed it when they closed) and without a confirmation message (they
were sent one then) — and is audited (`account.closure_reapplied`, `cli:<OS user>`, with the
time of the logged closure). An account already closed is left as it is, one the database does
not know (opened after the backup) is reported: running the command twice, or over a log that
names the same closure twice, changes nothing more."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import event, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, object_session

from simcharge.accounts.models import Account, AccountStatus
from simcharge.backoffice.audit import Actor
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow

log = structlog.get_logger("simcharge.privacy")

CLOSED_EVENT = "account.closed"
"""The log line's `event`: an account closed, by its id (`account_id`)."""
_CLOSED_HERE = "simcharge.accounts_closed"


# --- the log line ----------------------------------------------------------------------------


@event.listens_for(Account, "after_update")
def _note_closure(_mapper: Any, _connection: Any, account: Account) -> None:
    """An account whose status has just become `closed` is noted on its session, to be logged
    when (if) the transaction commits."""
    history = inspect(account).attrs.status.history
    closed = AccountStatus.closed.value
    if closed in (history.added or ()) and closed not in (history.deleted or ()):
        session = object_session(account)
        if session is not None:
            session.info.setdefault(_CLOSED_HERE, []).append(account.id)


@event.listens_for(Session, "after_commit")
def _log_committed_closures(session: Session) -> None:
    for account_id in session.info.pop(_CLOSED_HERE, ()):
        log.info(CLOSED_EVENT, account_id=str(account_id))


@event.listens_for(Session, "after_soft_rollback")
def _forget_closures(session: Session, _previous: Any) -> None:
    session.info.pop(_CLOSED_HERE, None)


# --- reading the log ---------------------------------------------------------------------------


@dataclass(slots=True)
class LoggedClosures:
    """The closures a log names, in its order, each once (its first line's time)."""

    closed_at: dict[uuid.UUID, str | None] = field(default_factory=dict)
    lines: int = 0
    """Lines read."""
    unreadable: list[int] = field(default_factory=list)
    """Numbers of the `account.closed` lines whose `account_id` is no id (a damaged log)."""


def logged_closures(lines: Iterable[str]) -> LoggedClosures:
    """The `account.closed` lines of the application's JSON log (stderr of the web and the
    worker, as shipped: one JSON object a line). Other lines — other events, other programs'
    lines, blank or not JSON — are passed over."""
    found = LoggedClosures()
    for number, text in enumerate(lines, start=1):
        found.lines = number
        text = text.strip()
        if not text.startswith("{"):
            continue
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") != CLOSED_EVENT:
            continue
        try:
            account_id = uuid.UUID(str(record.get("account_id")))
        except ValueError:
            found.unreadable.append(number)
            continue
        at = record.get("timestamp")
        found.closed_at.setdefault(account_id, str(at) if at is not None else None)
    return found


# --- closing again -----------------------------------------------------------------------------


@dataclass(slots=True)
class Reapplied:
    closed: list[uuid.UUID] = field(default_factory=list)
    """Closed again (a dry run: would be)."""
    already: list[uuid.UUID] = field(default_factory=list)
    """Closed in the database already."""
    unknown: list[uuid.UUID] = field(default_factory=list)
    """Not in the database: opened after the backup, so nothing of theirs came back."""


async def erase(
    session: AsyncSession, settings: Settings, account: Account, now: datetime
) -> dict[str, int]:
    """What `accounts.privacy.close_account` does once the holder is confirmed
    (`privacy.erase_account`, the same function), but the confirmation message; the security
    event says it was applied again."""
    from simcharge.accounts.privacy import erase_account
    from simcharge.auth.events import EventKind, record_event

    erased = await erase_account(session, settings, account, now)
    counts = {"lines_detached": erased.lines_detached, "sessions_ended": erased.sessions_ended,
              "tickets_closed": erased.tickets_closed}
    await record_event(
        session, EventKind.account_closed, account_id=account.id,
        details={**counts, "reapplied": True}, now=now,
    )
    return counts


async def reapply(
    db: Database,
    settings: Settings,
    logged: LoggedClosures,
    *,
    actor: Actor,
    dry_run: bool = False,
) -> Reapplied:
    """Close again each account the log says was closed and the database holds open: one
    transaction each, the account locked as a closure locks it. `dry_run`: say which, change
    nothing."""
    from simcharge.backoffice import audit

    done = Reapplied()
    for account_id, closed_at in logged.closed_at.items():

        async def one(s: AsyncSession, account_id: uuid.UUID = account_id,
                      closed_at: str | None = closed_at) -> list[uuid.UUID]:
            stmt = select(Account).where(Account.id == account_id)
            if not dry_run:
                stmt = stmt.with_for_update()
            account = (await s.execute(stmt)).scalar_one_or_none()
            if account is None:
                return done.unknown
            if account.status == AccountStatus.closed.value:
                return done.already
            if dry_run:
                return done.closed
            now = utcnow()
            counts = await erase(s, settings, account, now)
            await audit.record(
                s, actor, "account.closure_reapplied", target_type="account",
                target_id=account.id, details={"logged_at": closed_at, **counts}, now=now,
            )
            return done.closed

        if dry_run:
            async with db.read() as s:
                which = await one(s)
        else:
            which = await db.run(one)
        which.append(account_id)
    log.info(
        "privacy.closures_reapplied", dry_run=dry_run, closed=len(done.closed),
        already=len(done.already), unknown=len(done.unknown),
    )
    return done
