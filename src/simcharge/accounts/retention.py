"""Data retention: how long simcharge keeps what it holds about people, and the sweep that
enforces it (the daily worker job `privacy.retention`, `simcharge privacy sweep`).

Each rule is one set-based statement over the rows its setting has made due — deleted, or
stripped of what identifies someone — a batch per transaction: the batch is chosen with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several workers sweeping at once never take the same
row, and the statement repeats the rule's condition, so a row another sweep has just handled is
not counted again. A setting of 0 keeps that data for ever.

What the law keeps is never swept: orders, payments, refunds, receipts, credit notes, the
ledger, adjustments, balance actions and the staff audit log (a usage record stays too, with what
it used and cost; only its traffic and location detail goes, `usage_records.detail`) (10 years is typical for
accounting; the audit log refuses every UPDATE and DELETE). README, "Data retention", has the
table of what is kept for how long, and why.

The indexes declared here serve the rules (one range scan per batch, whatever the size of the
table), as `lifecycle.models` declares those of the lifecycle sweep.

Four rules take more than one statement a batch (`Rule.apply`): three rewrite each row with
values of its own (`_row_by_row`: a dead job keeps the ids of its payload, a security event its
details with the MSISDN masked, a usage record its start's day), one changes two tables
(`_redact_tickets`: a closed account's ticket keeps its existence, not its text). Their batch
is locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's write lock serialises the
transactions) from the moment it is chosen, so no other sweep, worker or staff action changes
a row between the choice and the rewrite."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import structlog
from sqlalchemy import (
    ColumnElement,
    Index,
    Row,
    Table,
    bindparam,
    delete,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

# Imported for its listeners: every closure, however made, writes its `account.closed` log line
# once committed (what `simcharge privacy reapply-closures` reads after a restore).
from simcharge.accounts import closures  # noqa: F401
from simcharge.accounts.models import Account, AccountStatus
from simcharge.auth.events import EventKind
from simcharge.auth.models import (
    AuthSession,
    KnownDevice,
    LoginThrottle,
    PasskeyChallenge,
    SecurityEvent,
    VerificationCode,
)
from simcharge.backoffice.models import StaffSession
from simcharge.charging.models import ChargingSession, SessionState, UsageRecord
from simcharge.config import Settings
from simcharge.db import Database, table_of
from simcharge.kit.clock import utcnow
from simcharge.notifications.models import MessageLog, Notice
from simcharge.notifications.transports import mask
from simcharge.orders.models import IdempotencyKey, ProviderEvent
from simcharge.tickets.models import Ticket, TicketMessage
from simcharge.worker.models import JobStatus, OutboxJob

log = structlog.get_logger("simcharge.privacy")

_events = table_of(SecurityEvent)
_sessions = table_of(AuthSession)
_staff_sessions = table_of(StaffSession)
_codes = table_of(VerificationCode)
_devices = table_of(KnownDevice)
_throttles = table_of(LoginThrottle)
_messages = table_of(MessageLog)
_notices = table_of(Notice)
_idempotency = table_of(IdempotencyKey)
_provider_events = table_of(ProviderEvent)
_charging = table_of(ChargingSession)
_jobs = table_of(OutboxJob)
_tickets = table_of(Ticket)
_ticket_messages = table_of(TicketMessage)
_accounts = table_of(Account)
_challenges = table_of(PasskeyChallenge)
_usage = table_of(UsageRecord)

_IDENTIFIED = or_(_events.c.ip.is_not(None), _events.c.user_agent.is_not(None))
"""A security event that still says where it came from."""
_NO_CLIENT = {"ip": None, "user_agent": None}
_RAW_KEPT = _provider_events.c.headers.is_not(None)
"""A provider event still as delivered (its body, headers and decoded payload)."""

Index("ix_security_events_created_at", _events.c.created_at)
Index(
    "ix_security_events_identified",
    _events.c.created_at,
    postgresql_where=_IDENTIFIED,
    sqlite_where=_IDENTIFIED,
)
Index("ix_auth_sessions_expires_at", _sessions.c.expires_at)
Index("ix_staff_sessions_expires_at", _staff_sessions.c.expires_at)
Index("ix_verification_codes_expires_at", _codes.c.expires_at)
Index("ix_known_devices_last_seen_at", _devices.c.last_seen_at)
Index("ix_login_throttles_updated_at", _throttles.c.updated_at)
Index("ix_message_log_created_at", _messages.c.created_at)
Index("ix_notices_created_at", _notices.c.created_at)
Index("ix_idempotency_keys_created_at", _idempotency.c.created_at)
Index(
    "ix_provider_events_raw_kept",
    _provider_events.c.received_at,
    postgresql_where=_RAW_KEPT,
    sqlite_where=_RAW_KEPT,
)
Index("ix_charging_sessions_created_at", _charging.c.created_at)

PERSONAL_DETAILS = {"msisdn": "sms"}
"""The values of a security event's `details` that name someone, each masked as the message log
masks that channel's targets (`notifications.transports.mask`: `+6391***4567`). Every other
detail any `EventKind` records is an id, a count, a reason or a channel's name."""
DETAILED_KINDS = (EventKind.line_attach_requested.value, EventKind.line_attached.value)
"""The kinds of event whose details hold one of them."""
_DETAILED = text("kind IN ('line_attach_requested', 'line_attached')")
Index(
    "ix_security_events_personal",
    _events.c.created_at,
    postgresql_where=_DETAILED,
    sqlite_where=_DETAILED,
)

PERSONAL_JOB_KINDS = (
    "notifications.deliver",
    "notifications.email",
    "notifications.sms",
    "notifications.code",
    "lifecycle.warning",
    "sandbox.deliver_webhook",
)
"""The kinds of job whose payload names someone: an address or number, a name, a message's
parameters (an MSISDN), a provider's event. The others carry ids only (an order, a refund)."""
JOB_KEPT = ("account_id", "staff_id", "line_id", "template", "purpose", "channel", "channels")
"""What a dead job's payload keeps once emptied: whom and what it was about, by id and name."""
_DEAD_KEPT = text("status = 'dead' AND payload_removed_at IS NULL")
Index(
    "ix_outbox_jobs_dead_kept",
    _jobs.c.finished_at,
    postgresql_where=_DEAD_KEPT,
    sqlite_where=_DEAD_KEPT,
)
_CLOSED = text("status = 'closed'")
Index("ix_accounts_closed", _accounts.c.updated_at, postgresql_where=_CLOSED, sqlite_where=_CLOSED)
_UNREDACTED = text("redacted_at IS NULL")
Index(
    "ix_tickets_unredacted",
    _tickets.c.account_id,
    postgresql_where=_UNREDACTED,
    sqlite_where=_UNREDACTED,
)

_DETAIL_KEPT = text("zone <> ''")
"""A usage record that still says where (country, zone) and exactly when it was used: a stripped
one has an empty zone (every rated record has one: the tariff's zone of its country)."""
Index(
    "ix_usage_records_detail_kept",
    _usage.c.started_at,
    postgresql_where=_DETAIL_KEPT,
    sqlite_where=_DETAIL_KEPT,
)

Apply = Callable[["AsyncSession", "Rule", datetime, datetime, int], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Rule:
    """One retention rule: the rows of `table` that `due(cutoff, now)` selects are deleted, or,
    with `scrub`, updated to those values (the row stays, anonymous)."""

    name: str
    setting: str
    """The `Settings` field of its days (`SIMCHARGE_RETENTION_…_DAYS`); 0: kept for ever."""
    table: Table
    due: Callable[[datetime, datetime], ColumnElement[bool]]
    scrub: dict[str, Any] | None = None
    apply: Apply | None = None
    """Instead of one statement: how a batch is changed (`_row_by_row`, `_redact_tickets`)."""

    def days(self, settings: Settings) -> int:
        return int(getattr(settings, self.setting))

    @property
    def key(self) -> Any:
        return next(iter(self.table.primary_key.columns))


def _security_event_clients(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Events older than the cutoff still holding an address or a device: both dropped (the
    kind, outcome, time and details stay, for the customer's log and for audit)."""
    return (_events.c.created_at < cutoff) & _IDENTIFIED


def _security_events(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    return _events.c.created_at < cutoff


def _ended_sessions(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Every session has ended by its absolute timeout, whether revoked before or not."""
    return _sessions.c.expires_at < cutoff


def _ended_staff_sessions(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    return _staff_sessions.c.expires_at < cutoff


def _expired_codes(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """A code is worthless once expired (used or not); the row still names its target."""
    return _codes.c.expires_at < cutoff


def _idle_devices(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """A device not seen since the cutoff is forgotten: a sign-in from it alerts again."""
    return _devices.c.last_seen_at < cutoff


def _idle_throttles(cutoff: datetime, now: datetime) -> ColumnElement[bool]:
    """A login name's failures untouched since the cutoff, and not locked out now."""
    return (_throttles.c.updated_at < cutoff) & or_(
        _throttles.c.locked_until.is_(None), _throttles.c.locked_until < now
    )


def _messages_sent(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    return _messages.c.created_at < cutoff


def _old_notices(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    return _notices.c.created_at < cutoff


def _idempotency_keys(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """A retry comes within minutes or hours; a key older than the cutoff is never retried."""
    return _idempotency.c.created_at < cutoff


def _provider_bodies(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Processed notifications received before the cutoff, still as delivered. The row stays
    (its (provider, event id) keeps a late duplicate out) with the verified facts drawn from it
    (`status`, `refund`, `dispute`: amounts, states, references; no payer)."""
    return (
        (_provider_events.c.received_at < cutoff)
        & _provider_events.c.processed_at.is_not(None)
        & _RAW_KEPT
    )


def _closed_charging_sessions(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Sessions opened before the cutoff and over (their usage records stay, with the ledger)."""
    return (_charging.c.created_at < cutoff) & (_charging.c.state != SessionState.open.value)


def _sql(*words: str) -> list[ColumnElement[Any]]:
    """Constants written into the statement, not bound: PostgreSQL uses a partial index only for
    a condition it can see implies the index's (`kind IN ('…')`), which a parameter of a
    prepared statement does not show it."""
    return [literal_column("'" + word.replace("'", "''") + "'") for word in words]


def _personal_details(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Events older than the cutoff (the address rule's) whose details still name an MSISDN in
    full: a masked one has `***` in it."""
    named = or_(
        *(
            _events.c.details[key].as_string().not_like("%***%")
            for key in PERSONAL_DETAILS
        )
    )
    return (_events.c.created_at < cutoff) & _events.c.kind.in_(_sql(*DETAILED_KINDS)) & named


def masked_details(details: dict[str, Any]) -> dict[str, Any]:
    """An event's details with each personal value masked (the others as they were)."""
    return {
        key: mask(PERSONAL_DETAILS[key], str(value))
        if key in PERSONAL_DETAILS and isinstance(value, str) and "***" not in value
        else value
        for key, value in details.items()
    }


def _dead_jobs(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Jobs dead since before the cutoff, of the kinds whose payload names someone, still whole.
    A dead job waits for staff; after this long nobody will retry it, and what it would have
    sent (a code, a receipt notice, a warning) is long out of date."""
    return (
        (_jobs.c.status == _sql(JobStatus.dead.value)[0])
        & (_jobs.c.finished_at < cutoff)
        & _jobs.c.payload_removed_at.is_(None)
        & _jobs.c.kind.in_(PERSONAL_JOB_KINDS)
    )


def kept_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: payload[key] for key in JOB_KEPT if key in payload}


def _closed_accounts_tickets(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Tickets not yet redacted of accounts closed before the cutoff. A closed account is a
    tombstone nothing changes: its `updated_at` is its closure (were it touched later, its
    tickets would only wait longer)."""
    closed = select(_accounts.c.id).where(
        _accounts.c.status == _sql(AccountStatus.closed.value)[0], _accounts.c.updated_at < cutoff
    )
    return _tickets.c.redacted_at.is_(None) & _tickets.c.account_id.in_(closed)


def _spent_challenges(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """A challenge is worthless once expired, used or not (it lives minutes)."""
    return _challenges.c.expires_at < cutoff


def _usage_detail(cutoff: datetime, _now: datetime) -> ColumnElement[bool]:
    """Usage records started before the cutoff that still hold their traffic and location
    detail. Past it the bill can no longer be challenged (ePrivacy art. 6(2)): where and at what
    time of day goes; what was used and charged, from which balances, stays with the ledger."""
    return (_usage.c.started_at < cutoff) & _DETAIL_KEPT


def stripped_usage(started_at: datetime) -> dict[str, Any]:
    """A usage record's detail removed: no country, no zone, the start cut to its day (UTC).
    The record's id, source and `external_id` stay: the id keeps a batch imported again from
    being charged twice, and `external_id` is the mediation's or the charging session's
    reference for the record (no subscriber in it), what a dispute about the bill names."""
    return {
        "country": None,
        "zone": "",
        "started_at": started_at.replace(hour=0, minute=0, second=0, microsecond=0),
    }


async def _chosen(
    session: AsyncSession, rule: Rule, cutoff: datetime, now: datetime, limit: int, *columns: Any
) -> list[Row[Any]]:
    """The batch: at most `limit` due rows, locked (those another holds are skipped)."""
    stmt = (
        select(rule.key, *columns)
        .where(rule.due(cutoff, now))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.execute(stmt))


def _row_by_row(*columns: str, values: Callable[[Row[Any], datetime], dict[str, Any]]) -> Apply:
    """A rule whose rows each get their own new values (from the row's `columns`)."""

    async def apply(
        session: AsyncSession, rule: Rule, cutoff: datetime, now: datetime, limit: int
    ) -> int:
        table = rule.table
        rows = await _chosen(session, rule, cutoff, now, limit, *(table.c[c] for c in columns))
        if not rows:
            return 0
        changes = [{"_row": row[0], **values(row, now)} for row in rows]
        stmt = update(table).where(rule.key == bindparam("_row"))
        await session.execute(stmt, changes)
        return len(rows)

    return apply


async def _redact_tickets(
    session: AsyncSession, rule: Rule, cutoff: datetime, now: datetime, limit: int
) -> int:
    """A batch of tickets loses its subject and its messages' text; each ticket stays (number,
    dates, status, priority, what it was about by id) and says when it was redacted."""
    chosen = [row[0] for row in await _chosen(session, rule, cutoff, now, limit)]
    if not chosen:
        return 0
    await session.execute(
        update(_ticket_messages).where(_ticket_messages.c.ticket_id.in_(chosen)).values(body="")
    )
    await session.execute(
        update(_tickets).where(_tickets.c.id.in_(chosen)).values(subject="", redacted_at=now)
    )
    return len(chosen)


RULES: tuple[Rule, ...] = (
    Rule(
        "security_events.client",
        "retention_security_client_days",
        _events,
        _security_event_clients,
        scrub=_NO_CLIENT,
    ),
    Rule(
        "security_events.details",
        "retention_security_client_days",
        _events,
        _personal_details,
        apply=_row_by_row(
            "details", values=lambda row, _now: {"details": masked_details(row.details)}
        ),
    ),
    Rule("security_events", "retention_security_events_days", _events, _security_events),
    Rule("auth_sessions", "retention_sessions_days", _sessions, _ended_sessions),
    Rule("staff_sessions", "retention_sessions_days", _staff_sessions, _ended_staff_sessions),
    Rule("verification_codes", "retention_codes_days", _codes, _expired_codes),
    Rule("known_devices", "retention_devices_days", _devices, _idle_devices),
    Rule("login_throttles", "retention_throttles_days", _throttles, _idle_throttles),
    Rule("message_log", "retention_messages_days", _messages, _messages_sent),
    Rule("notices", "retention_notices_days", _notices, _old_notices),
    Rule("idempotency_keys", "retention_idempotency_days", _idempotency, _idempotency_keys),
    Rule(
        "provider_events.body",
        "retention_provider_bodies_days",
        _provider_events,
        _provider_bodies,
        # SQL NULL, not JSON `null`: `headers IS NOT NULL` is what marks a row still raw.
        scrub={"body": None, "headers": null(), "payload": {}},
    ),
    Rule(
        "charging_sessions",
        "retention_charging_sessions_days",
        _charging,
        _closed_charging_sessions,
    ),
    Rule(
        "outbox_jobs.dead",
        "retention_dead_jobs_days",
        _jobs,
        _dead_jobs,
        apply=_row_by_row(
            "payload",
            values=lambda row, now: {
                "payload": kept_payload(row.payload),
                "payload_removed_at": now,
            },
        ),
    ),
    Rule(
        "tickets.closed_accounts",
        "retention_closed_tickets_days",
        _tickets,
        _closed_accounts_tickets,
        apply=_redact_tickets,
    ),
    Rule(
        "passkey_challenges",
        "retention_passkey_challenges_days",
        _challenges,
        _spent_challenges,
    ),
    Rule(
        "usage_records.detail",
        "retention_usage_detail_days",
        _usage,
        _usage_detail,
        apply=_row_by_row("started_at", values=lambda row, _now: stripped_usage(row.started_at)),
    ),
)
"""In the order the sweep applies them: an event's address goes before the event does."""


async def forget_where_events_came_from(session: AsyncSession, account_id: uuid.UUID) -> None:
    """What the `security_events.client` rule does by age, at once for one account (its holder
    closes it): the log keeps what happened (kinds, outcomes, times: for audit and fraud
    investigation), no longer from which address or device."""
    await session.execute(
        update(_events).where(_events.c.account_id == account_id, _IDENTIFIED).values(_NO_CLIENT)
    )


async def apply_rule(
    session: AsyncSession, rule: Rule, *, cutoff: datetime, now: datetime, limit: int
) -> int:
    """One batch of `rule`: at most `limit` due rows, in one statement; the rows another sweep
    holds are skipped, not waited for. Returns how many rows it deleted or scrubbed."""
    if rule.apply is not None:
        return await rule.apply(session, rule, cutoff, now, limit)
    due = rule.due(cutoff, now)
    chosen = (
        select(rule.key).where(due).limit(limit).with_for_update(skip_locked=True).scalar_subquery()
    )
    stmt: Any = delete(rule.table) if rule.scrub is None else update(rule.table).values(rule.scrub)
    result = await session.execute(stmt.where(rule.key.in_(chosen), due))
    return int(getattr(result, "rowcount", 0) or 0)


async def count_due(session: AsyncSession, rule: Rule, *, cutoff: datetime, now: datetime) -> int:
    """How many rows `rule` would change now (the dry run)."""
    found = await session.scalar(
        select(func.count()).select_from(rule.table).where(rule.due(cutoff, now))
    )
    return int(found or 0)


@dataclass(slots=True)
class RetentionReport:
    changed: dict[str, int] = field(default_factory=dict)
    """Rows deleted or scrubbed (a dry run: that would be), by rule."""
    kept: list[str] = field(default_factory=list)
    """Rules whose setting is 0: their data is kept for ever."""


async def sweep(
    db: Database, settings: Settings, *, now: datetime | None = None, dry_run: bool = False
) -> RetentionReport:
    """Apply every rule, a batch per transaction, until nothing more is due (or what is left is
    another sweep's); `dry_run` counts what is due and changes nothing. Logs the counts (never
    the data)."""
    now = now or utcnow()
    limit = settings.retention_batch_size
    report = RetentionReport()
    for rule in RULES:
        days = rule.days(settings)
        if days == 0:
            report.kept.append(rule.name)
            continue
        cutoff = now - timedelta(days=days)
        if dry_run:
            async with db.read() as s:
                report.changed[rule.name] = await count_due(s, rule, cutoff=cutoff, now=now)
            continue
        total = 0
        while True:
            n = await db.run(partial(apply_rule, rule=rule, cutoff=cutoff, now=now, limit=limit))
            total += n
            if n < limit:
                break
        report.changed[rule.name] = total
    # The counts under one key: rules named like `verification_codes` or `idempotency_keys`
    # would each be masked as a secret at the top level of the record (`kit.logging`).
    log.info("privacy.retention_swept", dry_run=dry_run, kept=report.kept, swept=report.changed)
    return report
