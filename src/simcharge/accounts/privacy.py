"""A customer's own data: a copy of everything held about the account ("download my data"), and
closing the account ("close my account") — GDPR arts. 15, 17 and 20; ASVS 8.3.2.

Closing keeps what the law asks an operator to keep (orders, payments, refunds, receipts, the
ledger: they reference the account's id, which stays, pseudonymous) and erases or unlinks the
rest. The lines are not the login's: a line and what it holds belong to its number, so they are
detached (free again, to be added by whoever holds the SIM, with a code sent to it)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.closures import note_closure
from simcharge.accounts.models import Account, AccountStatus
from simcharge.accounts.retention import (
    PERSONAL_JOB_KINDS,
    forget_where_events_came_from,
    kept_payload,
)
from simcharge.auth import passkeys
from simcharge.auth import service as auth
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import (
    AuthSession,
    KnownDevice,
    Passkey,
    PasskeyChallenge,
    PasskeySecondFactor,
    SecurityEvent,
    VerificationCode,
)
from simcharge.auth.sessions import revoke_all
from simcharge.auth.throttle import RateLimits
from simcharge.auth.totp import forget_recovery_codes
from simcharge.charging.models import UsageRecord
from simcharge.config import Settings
from simcharge.errors import Conflict, Refused, ValidationFailed
from simcharge.kit.translations import N_
from simcharge.lifecycle.models import LineEvent
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.notifications.models import MessageLog, Notice
from simcharge.notifications.service import notify
from simcharge.orders.models import Order, OrderState, Payment, Refund, RefundState
from simcharge.tickets.models import Ticket, TicketMessage
from simcharge.tickets.service import close_with_account
from simcharge.tmf654.models import ActionKind, BalanceAction
from simcharge.worker.models import JobStatus, OutboxJob

EXPORT_FORMAT = "simcharge.account-export/1"
"""The `format` member of an export: changes when its shape does."""

USAGE_PAGE = 5000
"""Usage records read per statement by an export: a line's years of records are read page by
page (by `started_at` and id), never all at once into the session."""

EXPORT_LIMIT = "account-export"
"""The rate limit of exports, per account: each one reads everything the account holds."""

TOMBSTONE_PREFIX = "closed-"
"""A closed account's username: this and its id in hex (39 characters: longer than any username
one may register, so it never stands in anyone's way and no one can take it)."""

UNUSABLE_HASH = "!closed"
"""A closed account's password hash: no password matches it (and no sign-in gets as far)."""


class ClosureBlocked(Conflict):
    slug = "account-closure-blocked"
    title = N_("The account cannot be closed yet.")


@dataclass(frozen=True, slots=True)
class Closed:
    lines_detached: int
    sessions_ended: int
    tickets_closed: int


# --- download my data ------------------------------------------------------------------------


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _usage_of(session: AsyncSession, lines: Sequence[Line]) -> list[dict[str, Any]]:
    """The usage records of the account's lines, each since its holder attached it (as the
    portal's records read them: a previous holder's calls are not the new one's), oldest first,
    line by line, read `USAGE_PAGE` rows a statement, only the columns the export shows."""
    u = UsageRecord
    found: list[dict[str, Any]] = []
    for line in lines:
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            stmt = select(
                u.id, u.service, u.country, u.zone, u.quantity, u.rated, u.from_buckets,
                u.charge, u.currency, u.unbilled, u.started_at,
            ).where(u.line_id == line.id)  # fmt: skip
            if line.attached_at is not None:
                stmt = stmt.where(u.started_at >= line.attached_at)
            if after is not None:
                at, last = after
                stmt = stmt.where(
                    or_(u.started_at > at, and_(u.started_at == at, u.id > last))
                )
            rows = (
                await session.execute(stmt.order_by(u.started_at, u.id).limit(USAGE_PAGE))
            ).all()
            found.extend(
                {
                    "line": line.msisdn,
                    "service": r.service,
                    "country": r.country,
                    "zone": r.zone,
                    "quantity": r.quantity,
                    "rated": r.rated,
                    "from_buckets": r.from_buckets,
                    "charge": r.charge,
                    "currency": r.currency,
                    "unbilled": r.unbilled,
                    "started_at": _at(r.started_at),
                }
                for r in rows
            )
            if len(rows) < USAGE_PAGE:
                break
            after = (rows[-1].started_at, rows[-1].id)
    return found


async def _transfers_of(session: AsyncSession, lines: Sequence[Line]) -> list[dict[str, Any]]:
    """Transfers between lines given from and received on the account's lines, each since its
    holder attached it, oldest first. The other line is named as the portal's records name it:
    in full when it is one of the account's own lines, else masked (`+1 415 ••• ••02`); a
    giver's reason is the giver's (shown on what it gave, not on what another gave it)."""
    # The portal's own masking (imported here: the portal's package imports this module).
    from simcharge.portal.records import masked

    own = {line.id: line for line in lines}
    if not own:
        return []
    b = BalanceAction
    actions: list[tuple[str, BalanceAction]] = []
    for line in lines:
        for direction, column in (("given", b.line_id), ("received", b.receiver_line_id)):
            stmt = select(b).where(column == line.id, b.kind == ActionKind.transfer.value)
            if line.attached_at is not None:
                stmt = stmt.where(b.requested_at >= line.attached_at)
            actions.extend((direction, a) for a in (await session.execute(stmt)).scalars())
    others = {
        (a.receiver_line_id if direction == "given" else a.line_id) for direction, a in actions
    } - set(own) - {None}
    numbers = {line.id: line.msisdn for line in lines}
    if others:
        numbers |= dict(
            (await session.execute(select(Line.id, Line.msisdn).where(Line.id.in_(others)))).all()
        )
    actions.sort(key=lambda pair: (pair[1].requested_at, pair[1].id, pair[0]))
    found = []
    for direction, a in actions:
        pair: tuple[uuid.UUID | None, uuid.UUID | None] = (
            (a.line_id, a.receiver_line_id) if direction == "given" else (a.receiver_line_id, a.line_id)
        )
        mine, other = pair
        number = numbers.get(other) if other is not None else None
        found.append(
            {
                "direction": direction,
                "line": numbers[mine] if mine is not None else None,
                "other_line": number if other in own or number is None else masked(number),
                "usage_type": a.usage_type,
                "unit": a.unit,
                "amount": a.amount,
                "fee": a.fee if direction == "given" else 0,
                "status": a.status,
                "reason": a.reason if direction == "given" else None,
                "requested_at": _at(a.requested_at),
                "confirmed_at": _at(a.confirmed_at),
            }
        )
    return found


async def _line_events_of(session: AsyncSession, lines: Sequence[Line]) -> list[dict[str, Any]]:
    """The lines' state changes since each was attached: from what to what, why (the reason's
    code: customer service's words after it are theirs) and by what kind of actor (`sweep`,
    `order`, `staff`: not which staff member, nor another payer's order)."""
    found = []
    for line in lines:
        stmt = select(LineEvent).where(LineEvent.line_id == line.id)
        if line.attached_at is not None:
            stmt = stmt.where(LineEvent.created_at >= line.attached_at)
        for e in (
            await session.execute(stmt.order_by(LineEvent.created_at, LineEvent.id))
        ).scalars():
            found.append(
                {
                    "line": line.msisdn,
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                    "reason": e.reason.split(":", 1)[0].strip(),
                    "by": e.actor.split(":", 1)[0],
                    "at": _at(e.created_at),
                }
            )
    return found


async def export_account(
    session: AsyncSession, account: Account, *, now: datetime
) -> dict[str, Any]:
    """Everything held about the account, as one JSON-ready document: the profile, its lines and
    what they hold, the orders it placed (with their payments' states and refunds; no provider's
    secret, reference or raw notification), its tickets (without staff's internal notes), its
    sessions, known devices, passkeys (not their keys), security log, portal notices and the
    messages sent to it (as the message log keeps them: masked); and, for each of its lines
    since it was attached, the usage records, the transfers given and received (the other
    line masked unless it is one of the account's) and the line's state changes. Orders others
    placed for its lines are theirs: the lines' balances say what they brought."""
    aid = account.id
    lines = (
        (await session.execute(select(Line).where(Line.account_id == aid).order_by(Line.created_at)))
        .scalars()
        .all()
    )
    orders = (
        (
            await session.execute(
                select(Order).where(Order.account_id == aid).order_by(Order.created_at, Order.id)
            )
        )
        .scalars()
        .all()
    )
    order_ids = [o.id for o in orders]
    payments = {
        p.order_id: p
        for p in (
            await session.execute(select(Payment).where(Payment.order_id.in_(order_ids)))
        ).scalars()
    } if order_ids else {}
    refunds: dict[uuid.UUID, list[Refund]] = {}
    if order_ids:
        for r in (
            await session.execute(
                select(Refund).where(Refund.order_id.in_(order_ids)).order_by(Refund.created_at)
            )
        ).scalars():
            refunds.setdefault(r.order_id, []).append(r)
    tickets = (
        (
            await session.execute(
                select(Ticket).where(Ticket.account_id == aid).order_by(Ticket.created_at)
            )
        )
        .scalars()
        .all()
    )
    messages: dict[uuid.UUID, list[TicketMessage]] = {}
    if tickets:
        for m in (
            await session.execute(
                select(TicketMessage)
                .where(
                    TicketMessage.ticket_id.in_([t.id for t in tickets]),
                    TicketMessage.internal.is_(False),
                )
                .order_by(TicketMessage.created_at, TicketMessage.id)
            )
        ).scalars():
            messages.setdefault(m.ticket_id, []).append(m)
    sessions = (
        await session.execute(
            select(AuthSession).where(AuthSession.account_id == aid).order_by(AuthSession.created_at)
        )
    ).scalars()
    devices = (
        await session.execute(
            select(KnownDevice)
            .where(KnownDevice.account_id == aid)
            .order_by(KnownDevice.first_seen_at)
        )
    ).scalars()
    passkeys = (
        await session.execute(
            select(Passkey).where(Passkey.account_id == aid).order_by(Passkey.created_at)
        )
    ).scalars()
    passkey_two_step = await session.get(PasskeySecondFactor, aid)
    events = (
        await session.execute(
            select(SecurityEvent)
            .where(SecurityEvent.account_id == aid)
            .order_by(SecurityEvent.created_at, SecurityEvent.id)
        )
    ).scalars()
    notices = (
        await session.execute(
            select(Notice).where(Notice.account_id == aid).order_by(Notice.created_at, Notice.id)
        )
    ).scalars()
    sent = (
        await session.execute(
            select(MessageLog)
            .where(MessageLog.account_id == aid)
            .order_by(MessageLog.created_at, MessageLog.id)
        )
    ).scalars()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now.isoformat(),
        "account": {
            "id": str(aid),
            "username": account.username,
            "display_name": account.display_name,
            "email": account.email,
            "email_verified_at": _at(account.email_verified_at),
            "email_pending": account.email_pending,
            "phone": account.phone,
            "phone_verified_at": _at(account.phone_verified_at),
            "phone_pending": account.phone_pending,
            "language": account.language,
            "time_zone": account.time_zone,
            "format_locale": account.format_locale,
            "status": account.status,
            "two_step_verification": account.totp_enabled_at is not None,
            "two_step_enabled_at": _at(account.totp_enabled_at),
            "two_step_with_passkey_since": _at(passkey_two_step.enabled_at)
            if passkey_two_step is not None
            else None,
            "password_changed_at": _at(account.password_changed_at),
            "created_at": _at(account.created_at),
            "updated_at": _at(account.updated_at),
        },
        "lines": [
            {
                "id": str(line.id),
                "msisdn": line.msisdn,
                "iccid": line.iccid,
                "label": line.label,
                "state": line.state,
                "validity_end": _at(line.validity_end),
                "last_activity_at": _at(line.last_activity_at),
                "balances": (await line_balances(session, line, now=now)).model_dump(mode="json"),
            }
            for line in lines
        ],
        "orders": [
            {
                "id": str(o.id),
                "reference": o.reference,
                "msisdn": o.msisdn,
                "plan": o.plan_code,
                "method": o.method_code,
                "currency": o.currency,
                "price": o.price,
                "fee": o.fee,
                "total": o.total,
                "state": o.state,
                "created_at": _at(o.created_at),
                "paid_at": _at(o.paid_at),
                "fulfilled_at": _at(o.fulfilled_at),
                "closed_at": _at(o.closed_at),
                "paid_amount": o.paid_amount,
                "paid_currency": o.paid_currency,
                "receipt_number": o.receipt_number,
                "refunded_amount": o.refunded_amount,
                "payment": (
                    {
                        "provider": payments[o.id].provider,
                        "state": payments[o.id].state,
                        "created_at": _at(payments[o.id].created_at),
                    }
                    if o.id in payments
                    else None
                ),
                "refunds": [
                    {
                        "reference": r.reference,
                        "amount": r.amount,
                        "currency": r.currency,
                        "state": r.state,
                        "created_at": _at(r.created_at),
                        "completed_at": _at(r.completed_at),
                    }
                    for r in refunds.get(o.id, [])
                ],
            }
            for o in orders
        ],
        "tickets": [
            {
                "number": t.number,
                "subject": t.subject,
                "status": t.status,
                "order_id": str(t.order_id) if t.order_id else None,
                "line_id": str(t.line_id) if t.line_id else None,
                "created_at": _at(t.created_at),
                "updated_at": _at(t.updated_at),
                "messages": [
                    {"author": m.author, "body": m.body, "created_at": _at(m.created_at)}
                    for m in messages.get(t.id, [])
                ],
            }
            for t in tickets
        ],
        "sessions": [
            {
                "created_at": _at(r.created_at),
                "last_seen_at": _at(r.last_seen_at),
                "expires_at": _at(r.expires_at),
                "ip": r.ip,
                "user_agent": r.user_agent,
                "two_step": r.mfa,
                "ended_at": _at(r.revoked_at),
                "ended_because": r.revoked_reason,
            }
            for r in sessions
        ],
        "known_devices": [
            {
                "user_agent": d.user_agent,
                "first_seen_at": _at(d.first_seen_at),
                "last_seen_at": _at(d.last_seen_at),
            }
            for d in devices
        ],
        # What the holder knows of their passkeys; the public key and credential id are the
        # authenticator's business, not personal data anyone reads.
        "passkeys": [
            {
                "name": k.name,
                "created_at": _at(k.created_at),
                "last_used_at": _at(k.last_used_at),
                "synced": k.backed_up,
                "transports": list(k.transports or []),
                "authenticator_model": k.aaguid,
            }
            for k in passkeys
        ],
        "security_events": [
            {
                "kind": e.kind,
                "success": e.success,
                "ip": e.ip,
                "user_agent": e.user_agent,
                "details": e.details,
                "created_at": _at(e.created_at),
            }
            for e in events
        ],
        "notices": [
            {
                "template": n.template,
                "params": n.params,
                "line_id": str(n.line_id) if n.line_id else None,
                "created_at": _at(n.created_at),
                "read_at": _at(n.read_at),
            }
            for n in notices
        ],
        "messages_sent": [
            {
                "channel": m.channel,
                "template": m.template,
                "to": m.target,
                "subject": m.subject,
                "status": m.status,
                "created_at": _at(m.created_at),
            }
            for m in sent
        ],
        "usage": await _usage_of(session, lines),
        "transfers": await _transfers_of(session, lines),
        "line_events": await _line_events_of(session, lines),
        "preferences": {
            "language": account.language,
            "time_zone": account.time_zone,
            "format_locale": account.format_locale,
        },
    }


async def count_export(limits: RateLimits, account_id: uuid.UUID) -> None:
    """Count one export against the account's limit (`TooManyAttempts` past it)."""
    await limits.hit(EXPORT_LIMIT, str(account_id))


# --- close my account ------------------------------------------------------------------------


async def _closure_blocked(session: AsyncSession, account_id: uuid.UUID) -> ClosureBlocked | None:
    """Why the account cannot be closed now, if it cannot: money on its way (an order waiting
    for its payment, a refund asked of the provider) must land on a known account first."""
    pending_order = await session.scalar(
        select(
            exists().where(Order.account_id == account_id, Order.state == OrderState.pending.value)
        )
    )
    if pending_order:
        return ClosureBlocked(
            N_("An order is waiting for its payment. Pay or cancel it, or wait until it expires, "
               "then close the account."),
            field="orders",
        )  # fmt: skip
    pending_refund = await session.scalar(
        select(
            exists().where(
                Refund.order_id == Order.id,
                Order.account_id == account_id,
                Refund.state == RefundState.pending.value,
            )
        )
    )
    if pending_refund:
        return ClosureBlocked(
            N_("A refund is in progress. Close the account once it is done."), field="refunds"
        )
    return None


def check_closure_input(
    account: Account,
    password: str,
    code: str,
    credential: dict[str, Any] | None = None,
    *,
    passkey_step: bool = False,
) -> None:
    """What closing needs that no count is spent on: the password, and when two-step
    verification is on — with the app, or two-step sign-in with a passkey (`passkey_step`) — its
    second factor, a code (`code`) or one of the account's passkeys' answer to the confirm
    options (`credential`): `ValidationFailed` naming the missing field (`code`). A malformed
    `credential` is `422 passkey-invalid` here too, before anything is counted or spent."""
    if not password:
        raise ValidationFailed(N_("This field is required."), field="password")
    if credential is not None:
        passkeys.parsed_authentication(credential)
    two_step = account.totp_enabled_at is not None or passkey_step
    if two_step and not code.strip() and credential is None:
        raise ValidationFailed(N_("This field is required."), field="code")


async def empty_finished_jobs(
    session: AsyncSession, account_id: uuid.UUID, *, now: datetime
) -> int:
    """What the `outbox_jobs.dead` retention rule does by age, at once for one account's
    finished jobs (done, kept 7 days; dead, kept until staff discard them) of the kinds that
    name someone (`PERSONAL_JOB_KINDS`): the payload keeps its ids and template
    (`kept_payload`: no address, number, name or ticket subject), `payload_removed_at` says
    when (a dead one can no longer be retried). Jobs still to run (the closure's own
    confirmation among them) are left to send what they were queued for; done, they are pruned
    with the others. Returns how many were emptied."""
    jobs = (
        await session.execute(
            select(OutboxJob.id, OutboxJob.payload).where(
                OutboxJob.status.in_((JobStatus.done.value, JobStatus.dead.value)),
                OutboxJob.kind.in_(PERSONAL_JOB_KINDS),
                OutboxJob.payload_removed_at.is_(None),
                OutboxJob.payload["account_id"].as_string() == str(account_id),
            )
        )
    ).all()
    for job_id, payload in jobs:
        await session.execute(
            update(OutboxJob)
            .where(OutboxJob.id == job_id)
            .values(payload=kept_payload(payload), payload_removed_at=now)
        )
    return len(jobs)


async def close_account(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    password: str,
    code: str = "",
    credential: dict[str, Any] | None = None,
    auth_session: AuthSession,
    client: ClientInfo,
    now: datetime,
    counted: auth.Reauthentication,
) -> Closed | Refused:
    """Close the account of a signed-in customer, who gives the password again and, when
    two-step verification is on, its second factor as every change that could take the account
    away asks it (`auth.confirm_both_factors`): with the app, a current code or a recovery code;
    with two-step sign-in with a passkey, one of the account's passkeys' answer to the confirm
    options of `auth_session` (`credential`) or a recovery code (`counted` by
    `auth.count_reauthentication` before the transaction, which `account`'s lock opened).

    Refused (409 `account-closure-blocked`) while an order waits for its payment or a refund is
    in progress. Then, in one transaction: the confirmation is queued to the verified contacts
    (their addresses in the job, before they are erased); the lines are detached, with their
    balances (a line belongs to its number, not to the login); every session ends; codes,
    recovery codes, known devices, passkeys and portal notices are deleted, and the sessions and security
    events kept for the record lose their address and device; its finished outbox jobs lose
    their addresses and texts (`empty_finished_jobs`); its tickets still open are closed
    with an internal note (no one can answer them any more); the username becomes a tombstone,
    the contacts, the display name, the password and the TOTP secret are erased. Orders,
    payments, refunds, receipts and the ledger stay (the law keeps them), on the account's id.
    What stays is then swept by age as any other account's (`accounts.retention`)."""
    check_closure_input(
        account, password, code, credential,
        passkey_step=await auth.passkey_second_factor_on(session, account),
    )  # fmt: skip
    if account.status == AccountStatus.closed:
        raise ClosureBlocked(N_("The account is closed already."))
    blocked = await _closure_blocked(session, account.id)
    if blocked is not None:
        raise blocked
    refused = await auth.confirm_both_factors(
        session, settings, account, password, code.strip(), kind=EventKind.account_closed,
        client=client, now=now, counted=counted,
        passkey=passkeys.confirmed_by(
            session, settings, account, auth_session, credential, client, now
        ),
    )  # fmt: skip
    if refused is not None:
        return refused
    targets: dict[str, str] = {}
    if account.email and account.email_verified_at is not None:
        targets["email"] = account.email
    if account.phone and account.phone_verified_at is not None:
        targets["sms"] = account.phone
    if targets:
        await notify(
            session,
            account_id=account.id,
            template="account.closed",
            channels=list(targets.keys()),
            targets=targets,
        )
    erased = await erase_account(session, settings, account, now)
    await record_event(
        session,
        EventKind.account_closed,
        account_id=account.id,
        details={"lines_detached": erased.lines_detached, "sessions_ended": erased.sessions_ended},
        now=now,
    )
    return erased


async def erase_account(
    session: AsyncSession, settings: Settings, account: Account, now: datetime
) -> Closed:
    """What closing erases, once the holder is confirmed (`close_account`) or when a closure
    is applied again after a restore (`accounts.closures`): the lines detached, with their
    balances; every session ended; codes, recovery codes, known devices, passkeys and portal
    notices deleted; the sessions and security events kept for the record without their
    address and device; the finished outbox jobs without their addresses and texts; the open
    tickets closed; the username a tombstone, the contacts, the display name, the password and
    the TOTP secret erased. One place, so that the two never drift apart.

    A line suspended as lost or stolen goes back to stock still suspended: whoever attaches it
    next proves only that they receive its SMS — possibly the thief holding the profile — so
    customer service resumes it once the eSIM profile is replaced. The closure's log line is
    signed (`accounts.closures.note_closure`), for `privacy reapply-closures` after a restore."""
    detached = await session.execute(
        update(Line)
        .where(Line.account_id == account.id)
        .values(account_id=None, attached_at=None, label=None)
    )
    lines_detached = int(getattr(detached, "rowcount", 0) or 0)
    ended = await revoke_all(session, account.id, reason="account_closed", now=now)
    await session.execute(
        update(AuthSession)
        .where(AuthSession.account_id == account.id)
        .values(ip=None, user_agent=None, device_hash=None)
    )
    await session.execute(delete(VerificationCode).where(VerificationCode.account_id == account.id))
    await session.execute(delete(KnownDevice).where(KnownDevice.account_id == account.id))
    await session.execute(delete(Passkey).where(Passkey.account_id == account.id))
    await session.execute(
        delete(PasskeySecondFactor).where(PasskeySecondFactor.account_id == account.id)
    )
    await session.execute(
        delete(PasskeyChallenge).where(PasskeyChallenge.account_id == account.id)
    )
    await session.execute(delete(Notice).where(Notice.account_id == account.id))
    await forget_recovery_codes(session, account.id)
    await forget_where_events_came_from(session, account.id)
    await empty_finished_jobs(session, account.id, now=now)
    tickets_closed = await close_with_account(
        session, account.id, language=settings.default_language, now=now
    )
    account.username = f"{TOMBSTONE_PREFIX}{account.id.hex}"
    account.display_name = None
    account.email = account.email_pending = account.email_verified_at = None
    account.phone = account.phone_pending = account.phone_verified_at = None
    account.password_hash = UNUSABLE_HASH
    account.password_changed_at = None
    account.totp_secret_sealed = None
    account.totp_enabled_at = account.totp_last_step = None
    account.locked_at = account.lock_reason = None
    account.status = AccountStatus.closed.value
    account.updated_at = now
    note_closure(session, settings, account.id, now)
    await session.flush()
    return Closed(
        lines_detached=lines_detached, sessions_ended=ended, tickets_closed=tickets_closed
    )

