"""Closures after a restore: an account closed after the backup comes back with the restore
(name, contacts, password hash, TOTP secret…); `simcharge privacy reapply-closures` closes it
again from the application's own log.

The record that survives the restore is the log, shipped off the host: each closure writes the
JSON line `{"event": "account.closed", "account_id": "…", "closed_at": "…", "mac": "…",
"timestamp": "…"}` once its transaction has committed (`_log_committed_closures`: never for a
closure rolled back, which did not happen). The closure's audit entry, security event and outbox
job are in the database, and went back with it.

The line is signed: `mac` is an HMAC-SHA256 of the account id and `closed_at` under a key
derived from `SIMCHARGE_SECRET_KEY` (`kit.crypto.keyed_hash`, purpose `log:account.closed`), so
that whoever can write a line into the log cannot have an account erased. Only lines whose MAC
verifies under the key ring (`SIMCHARGE_SECRET_KEY` and `_PREVIOUS`) are applied; the others —
forged, damaged, or written before lines were signed — are listed and passed over, unless the
operator says `--accept-unsigned` (for a log older than the signing, read by a person first).

Closing again erases what `accounts.privacy.close_account` erases — without asking the
password (the holder confirmed it when they closed) and without a confirmation message (they
were sent one then) — and is audited (`account.closure_reapplied`, `cli:<OS user>`, with the
time of the logged closure). An account already closed is left as it is, one the database does
not know (opened after the backup) is reported: running the command twice, or over a log that
names the same closure twice, changes nothing more. The log is read as shippers keep it (bare,
behind a prefix, inside Docker's `{"log": …}`); a file of which no line is the application's
JSON log is refused rather than read as "no closures"."""

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
from simcharge.kit.crypto import Ring, as_ring, keyed_hash, keyed_hash_matches

log = structlog.get_logger("simcharge.privacy")

CLOSED_EVENT = "account.closed"
"""The log line's `event`: an account closed, by its id (`account_id`)."""
_CLOSED_HERE = "simcharge.accounts_closed"
MAC_PURPOSE = "log:account.closed"
"""The purpose of the key that signs the line (`kit.crypto.derive_key`): its own key."""


# --- the log line ----------------------------------------------------------------------------


def closure_mac(secret: str, account_id: uuid.UUID, closed_at: str) -> str:
    """The line's `mac`: what only the holder of the secret key can write for this account
    and this time."""
    return keyed_hash(secret, MAC_PURPOSE, f"{account_id} {closed_at}")


def note_closure(
    session: AsyncSession | Session, settings: Settings, account_id: uuid.UUID, now: datetime
) -> None:
    """The closure of `account_id`, signed, to be logged when (if) the transaction commits
    (`accounts.privacy.erase_account`, where every closure is made)."""
    closed_at = now.isoformat()
    noted = session.info.setdefault(_CLOSED_HERE, {})
    noted[account_id] = (closed_at, closure_mac(settings.secret_key, account_id, closed_at))


@event.listens_for(Account, "after_update")
def _note_closure(_mapper: Any, _connection: Any, account: Account) -> None:
    """An account whose status has just become `closed` is noted on its session, to be logged
    when (if) the transaction commits: unsigned if no `note_closure` signed it (a closure made
    elsewhere than `erase_account` is still in the record, but not applied again unasked)."""
    history = inspect(account).attrs.status.history
    closed = AccountStatus.closed.value
    if closed in (history.added or ()) and closed not in (history.deleted or ()):
        session = object_session(account)
        if session is not None:
            noted = session.info.setdefault(_CLOSED_HERE, {})
            noted.setdefault(account.id, (utcnow().isoformat(), None))


@event.listens_for(Session, "after_commit")
def _log_committed_closures(session: Session) -> None:
    noted: dict[uuid.UUID, tuple[str, str | None]] = session.info.pop(_CLOSED_HERE, {})
    for account_id, (closed_at, mac) in noted.items():
        signed = {"mac": mac} if mac else {}
        log.info(CLOSED_EVENT, account_id=str(account_id), closed_at=closed_at, **signed)


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
    written: int = 0
    """Lines with something on them (not blank)."""
    ours: int = 0
    """Lines that are the application's JSON log (any event): none of `written` is a log of
    another shape, not one this reads."""
    unreadable: list[int] = field(default_factory=list)
    """Numbers of the `account.closed` lines whose `account_id` is no id (a damaged log)."""
    signed: set[uuid.UUID] = field(default_factory=set)
    """The closures of which a line's MAC verifies (`closed_at` then that line's time)."""
    unsigned: list[int] = field(default_factory=list)
    """Numbers of the `account.closed` lines whose MAC is missing or does not verify."""

    def unsigned_closures(self) -> list[uuid.UUID]:
        """The closures no line of which verifies: not applied without `--accept-unsigned`."""
        return [a for a in self.closed_at if a not in self.signed]


_WRAPPED = ("log", "MESSAGE")
"""Where a shipper puts the line it read: Docker's json-file driver, Fluentd and Fluent Bit
(`{"log": "<the line>\\n", "stream": "stderr", "time": …}`), journald's JSON export
(`journalctl -o json`: `MESSAGE`)."""
_APP_LOGGER = "simcharge"
_TRIES = 8
"""`{` of a prefix tried before the line is given up (a prefix rarely holds one)."""
_decoder = json.JSONDecoder()


def _object_in(text: str) -> dict[str, Any] | None:
    """The JSON object a line carries: from its first `{` that starts one (a prefix — a
    syslog or journald time stamp and host, a Kubernetes `… stderr F ` — passed over, and
    whatever follows the object), unwrapped from a shipper's `{"log": …}`."""
    at = text.find("{")
    for _ in range(_TRIES):
        if at < 0:
            return None
        try:
            record, _end = _decoder.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        if not isinstance(record, dict):
            return None
        if "event" not in record:
            for key in _WRAPPED:
                inner = record.get(key)
                if isinstance(inner, str):
                    return _object_in(inner)
        return record
    return None


def _is_ours(record: dict[str, Any]) -> bool:
    """A line of the application's JSON log (`kit.logging`): a string `event` with its
    `timestamp` or `level`. Its lines name no logger; a line that names one not the
    application's (`simcharge`, `simcharge.…`) is another program's."""
    if not isinstance(record.get("event"), str):
        return False
    if "timestamp" not in record and "level" not in record:
        return False
    logger = record.get("logger")
    if logger is None:
        return True
    return isinstance(logger, str) and (
        logger == _APP_LOGGER or logger.startswith(_APP_LOGGER + ".")
    )


def logged_closures(lines: Iterable[str], keys: Ring = ()) -> LoggedClosures:
    """The `account.closed` lines of the application's JSON log (stderr of the web and the
    worker, as shipped: one JSON object a line, bare, after a prefix — a time stamp, a host,
    a program — or inside a shipper's `{"log": …}`; Docker's pieces of a line longer than 16
    KiB joined again). Other lines — other events, other programs' lines, blank or not JSON —
    are passed over, and counted (`written`, `ours`): a log of which no line is the
    application's is the wrong file, or the wrong format. `keys`: the key ring the lines' MACs
    are verified with (none: no line verifies)."""
    ring = as_ring(keys) if keys else ()
    found = LoggedClosures()
    pending = ""
    for number, raw in enumerate(lines, start=1):
        found.lines = number
        text = raw.strip()
        if not text:
            continue
        found.written += 1
        # Docker's json-file cuts a line into 16 KiB pieces, each its own entry, all but the
        # last without the line's newline: joined before reading.
        piece = _docker_piece(text)
        if piece is not None:
            pending += piece
            if not piece.endswith("\n"):
                continue
            text, pending = pending, ""
        elif pending:
            pending = ""
        record = _object_in(text)
        if record is None or not _is_ours(record):
            continue
        found.ours += 1
        if record.get("event") != CLOSED_EVENT:
            continue
        try:
            account_id = uuid.UUID(str(record.get("account_id")))
        except ValueError:
            found.unreadable.append(number)
            continue
        at = record.get("timestamp")
        logged_at = str(at) if at is not None else None
        if _verifies(ring, account_id, record):
            if account_id not in found.signed:  # the time its first signed line signs
                found.closed_at[account_id] = str(record["closed_at"])
                found.signed.add(account_id)
        else:
            found.unsigned.append(number)
        found.closed_at.setdefault(account_id, logged_at)
    return found


def _verifies(ring: tuple[str, ...], account_id: uuid.UUID, record: dict[str, Any]) -> bool:
    """Whether the line's `mac` signs its account and `closed_at` under a key of the ring."""
    closed_at, mac = record.get("closed_at"), record.get("mac")
    if not ring or not isinstance(closed_at, str) or not isinstance(mac, str):
        return False
    return keyed_hash_matches(ring, MAC_PURPOSE, f"{account_id} {closed_at}", mac)


def _docker_piece(text: str) -> str | None:
    """The `log` of a Docker json-file entry (a whole line ends in a newline, a piece of a
    longer one does not); None for a line of any other shape."""
    if not text.startswith('{"log":'):
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    inner = entry.get("log") if isinstance(entry, dict) else None
    return inner if isinstance(inner, str) else None


# --- closing again -----------------------------------------------------------------------------


@dataclass(slots=True)
class Reapplied:
    closed: list[uuid.UUID] = field(default_factory=list)
    """Closed again (a dry run: would be)."""
    already: list[uuid.UUID] = field(default_factory=list)
    """Closed in the database already."""
    unknown: list[uuid.UUID] = field(default_factory=list)
    """Not in the database: opened after the backup, so nothing of theirs came back."""
    unsigned: list[uuid.UUID] = field(default_factory=list)
    """Passed over: no line of the closure carries a MAC that verifies."""


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
    accept_unsigned: bool = False,
) -> Reapplied:
    """Close again each account the log says was closed and the database holds open: one
    transaction each, the account locked as a closure locks it. Only a closure a signed line
    names (`LoggedClosures.signed`), unless `accept_unsigned` (dangerous: anyone who could
    write a line into the log could have an account erased). `dry_run`: say which, change
    nothing."""
    from simcharge.backoffice import audit

    done = Reapplied()
    for account_id, closed_at in logged.closed_at.items():
        signed = account_id in logged.signed
        if not signed and not accept_unsigned:
            done.unsigned.append(account_id)
            continue

        async def one(s: AsyncSession, account_id: uuid.UUID = account_id,
                      closed_at: str | None = closed_at,
                      signed: bool = signed) -> list[uuid.UUID]:
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
                target_id=account.id,
                details={"logged_at": closed_at, "signed": signed, **counts}, now=now,
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
        already=len(done.already), unknown=len(done.unknown), unsigned=len(done.unsigned),
        accept_unsigned=accept_unsigned,
    )
    return done
