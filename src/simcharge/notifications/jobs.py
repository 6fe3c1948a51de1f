"""The jobs that deliver notifications (registered with the worker)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account, AccountStatus
from simcharge.auth.events import EventKind, record_event
from simcharge.config import Settings
from simcharge.db import insert_if_absent, table_of
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import SealBroken, unseal_any
from simcharge.kit.i18n import spoken
from simcharge.kit.ids import derived_id
from simcharge.lines.models import Line
from simcharge.notifications.models import MessageLog, Notice
from simcharge.notifications.service import (
    DELIVER,
    SEND_CODE,
    SEND_EMAIL,
    log_message,
    reading_of,
)
from simcharge.notifications.templates import render
from simcharge.notifications.transports import (
    Attachment,
    DeliveryFailed,
    mask,
    send_email,
    send_sms,
)
from simcharge.worker.registry import JobContext, PermanentJobError, job
from simcharge.worker.service import enqueue

SEND_SMS = "notifications.sms"
CODE_MINUTES = 10

log = structlog.get_logger("simcharge.notifications")

# What a `line.…` warning may say it was built on (`about`): the line's state and the time its
# change is counted from.
LINE_FACTS = ("state", "validity_end", "last_activity_at", "state_changed_at")


CLOSURE_TEMPLATE = "account.closed"
"""The closure's own confirmation (`accounts.privacy.close_account`), addressed in its job before
the contacts were erased: the one message a closed account is still sent."""

CLOSED_ACCOUNT = "account-closed"
"""Why a job did nothing (`notifications.closed_account_skipped`'s `reason`)."""


def closed_account_skipped(
    ctx: JobContext, account: Account | None, template: str
) -> bool:
    """Whether this job is for an account closed since it was queued (not the closure's own
    confirmation): it then does nothing customer-facing — no notice, no e-mail, no SMS — and
    ends done, never retried, the reason in the log. Its receipt or credit note, if any, was
    kept by its own job before it came here (finance's, whatever the account)."""
    if account is None or account.status != AccountStatus.closed or template == CLOSURE_TEMPLATE:
        return False
    log.info(
        "notifications.closed_account_skipped",
        job_id=str(ctx.job.id),
        kind=ctx.job.kind,
        template=template,
        account_id=str(account.id),
        reason=CLOSED_ACCOUNT,
    )
    return True


def _account_id(payload: dict[str, Any]) -> uuid.UUID:
    try:
        return uuid.UUID(str(payload["account_id"]))
    except (KeyError, ValueError) as exc:
        raise PermanentJobError("payload without a valid account_id") from exc


async def _line_moved_on(
    session: AsyncSession, line_id: uuid.UUID | None, about: dict[str, Any]
) -> bool:
    """Whether the line is no longer what a warning about it was built on (`about`: its state
    and the time its change is counted from, as the lifecycle saw them): a top-up, a use or
    support changed it while the warning waited in the queue."""
    unknown = set(about) - set(LINE_FACTS)
    if line_id is None or unknown:
        raise PermanentJobError(f"a line warning about {sorted(unknown) or 'no line'}")
    line = await session.get(Line, line_id)
    if line is None:
        return True
    for fact, then in about.items():
        current = getattr(line, fact)
        if isinstance(current, datetime):
            if then is None or datetime.fromisoformat(str(then)) != current:
                return True
        elif current != then:
            return True
    return False


@job(DELIVER)
async def deliver(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Fan a notification out: the portal notice now, one job per message channel. A security
    alert (`security.…`) is also written in the account's security log, with its channels.

    Run again (its worker died after the commit), it writes nothing more: the notice and the
    log entry have ids derived from the job, the channels' jobs dedupe keys. A `line.…`
    warning whose line has moved on since it was queued (`about`) is dropped."""
    account_id = _account_id(payload)
    template = str(payload.get("template", ""))
    channels = list(payload.get("channels") or [])
    targets: dict[str, str] = dict(payload.get("targets") or {})
    params = dict(payload.get("params") or {})
    line_id = uuid.UUID(str(payload["line_id"])) if payload.get("line_id") else None
    about: dict[str, Any] = dict(payload.get("about") or {})

    async def fan_out(session: AsyncSession) -> None:
        # Shared with the key (FOR KEY SHARE, as the notice's foreign key would take it anyway):
        # a closure committing meanwhile (it holds the account FOR UPDATE) is waited for and
        # seen, rather than a notice written after it for an account no one can sign in to.
        account = await session.get(
            Account, account_id, with_for_update={"read": True, "key_share": True},
            populate_existing=True,
        )  # fmt: skip
        if account is None:
            raise PermanentJobError(f"no account {account_id}")
        if closed_account_skipped(ctx, account, template):
            return
        if template.startswith("line.") and about and await _line_moved_on(session, line_id, about):
            log.info(
                "notifications.stale_warning_skipped",
                job_id=str(ctx.job.id),
                template=template,
                line_id=str(line_id),
            )
            return
        if "portal" in channels:
            await session.execute(
                insert_if_absent(session, table_of(Notice), "id"),
                {
                    "id": derived_id(DELIVER, ctx.job.id, "notice"),
                    "account_id": account_id,
                    "template": template,
                    "params": params,
                    "line_id": line_id,
                    "created_at": utcnow(),
                },
            )
        email = targets.get("email") or (account.email if account.email_verified_at else None)
        phone = targets.get("sms") or (account.phone if account.phone_verified_at else None)
        sent = ["portal"] if "portal" in channels else []
        for channel, to, kind in (("email", email, SEND_EMAIL), ("sms", phone, SEND_SMS)):
            if channel in channels and to:
                sent.append(channel)
                await enqueue(
                    session,
                    kind,
                    {
                        "account_id": str(account_id),
                        "template": template,
                        "params": params,
                        "to": to,
                        "language": account.language,
                    },
                    dedupe_key=f"{DELIVER}:{ctx.job.id}:{channel}",
                )
        if template.startswith("security."):
            await record_event(
                session,
                EventKind.alert_sent,
                account_id=account_id,
                details={"alert": template.removeprefix("security."), "channels": sent},
                event_id=derived_id(DELIVER, ctx.job.id, "alert"),  # once, however many runs
            )

    await ctx.db.run(fan_out)


ATTACH_LINE = "code.attach_line"
"""The code that adds a line to an account, sent by SMS to the line: read by whoever holds the
SIM, who may not be the customer who asked."""


async def reader_language(
    session: AsyncSession,
    template: str,
    to: str,
    account: Account | None,
    queued: str,
    settings: Settings,
) -> str:
    """The language a message is written in, read when it is sent (as its zone is,
    `reading_of`): a language chosen while it waited in the queue is the one it is written in.
    The account's — except a staff member's e-mail (no account: `queued`, the staff member's)
    and the code that adds a line (`ATTACH_LINE`), which is the line's reader's: its current
    holder's language if an account holds it, else the operator's (`SIMCHARGE_DEFAULT_LANGUAGE`)
    — never the asker's, whom the holder may not know. (Every other code goes to a contact of an
    account that exists from registration on: its account's language too.)"""
    if template == ATTACH_LINE:
        holder = await session.scalar(select(Line.account_id).where(Line.msisdn == to))
        held_by = await session.get(Account, holder) if holder is not None else None
        return held_by.language if held_by is not None else settings.default_language
    return account.language if account is not None else queued


async def send_message(
    ctx: JobContext,
    channel: str,
    account_id: uuid.UUID | None,
    template: str,
    to: str,
    language: str,
    params: dict[str, Any],
    attachments: Sequence[Attachment] = (),
) -> None:
    params = {
        "operator": ctx.settings.operator_name, "base_url": ctx.settings.base_url,
        "privacy_notice": ctx.settings.privacy_notice_address, **params,
    }  # fmt: skip
    # The job's message, logged under an id of its own: a run after one that sent it and logged
    # it (the worker stopped before marking the job done, and its lease ran out) sends nothing.
    # A row that says `failed` is no such proof: the job was buried after it and retried since
    # (by staff, once the server is back): the message goes out, and the row says what came of it.
    log_id = derived_id("message", ctx.job.id)
    async with ctx.db.read() as s:
        logged = await s.get(MessageLog, log_id)
        if logged is not None and logged.status == "sent":
            log.info("notifications.already_sent", job=str(ctx.job.id), template=template)
            return
        account = await s.get(Account, account_id) if account_id is not None else None
        if closed_account_skipped(ctx, account, template):
            return
        reading = reading_of(account, ctx.settings)
        language = await reader_language(s, template, to, account, language, ctx.settings)
    try:
        message = render(
            template, language, params, default=ctx.settings.default_language,
            zone=reading.zone, locale=reading.locale,
        )  # fmt: skip
    except Exception as exc:
        raise PermanentJobError(f"template {template}: {type(exc).__name__}: {exc}") from exc
    if channel == "sms" and not message.sms:
        # A template without an SMS (a receipt, a ticket's answer) says nothing by SMS: its
        # e-mail text — the operator's header, the e-mail's footer — is no SMS.
        log.info("notifications.no_sms_text", job=str(ctx.job.id), template=template)
        return
    # What the log may keep: never the params (a code, a link) — only template and subject.
    subject = message.subject if channel == "email" else None
    try:
        if channel == "email":
            provider_id: str | None = await send_email(
                ctx.settings,
                to,
                message.subject,
                message.text,
                message.html or None,
                attachments,
                language=spoken(language, ctx.settings.default_language),
                # Sent again (the server took it, the worker stopped before the log), the same
                # message keeps its Message-ID.
                message_key=derived_id("message-id", ctx.job.id),
            )
        else:
            provider_id = await send_sms(ctx.settings, ctx.http, to, message.sms)
    except DeliveryFailed as exc:
        error = str(exc)
        if not exc.transient or ctx.job.attempts >= ctx.job.max_attempts:
            await ctx.db.run(
                lambda s: _log_once(
                    s,
                    account_id=account_id,
                    channel=channel,
                    template=template,
                    target=mask(channel, to),
                    subject=subject,
                    status="failed",
                    error=error,
                    log_id=log_id,
                )
            )
        if exc.transient:
            raise
        raise PermanentJobError(error) from exc
    await ctx.db.run(
        lambda s: _log_once(
            s,
            account_id=account_id,
            channel=channel,
            template=template,
            target=mask(channel, to),
            subject=subject,
            status="sent",
            provider_id=provider_id,
            log_id=log_id,
        )
    )


async def _log_once(
    session: AsyncSession,
    *,
    log_id: uuid.UUID,
    status: str,
    provider_id: str | None = None,
    error: str | None = None,
    **fields: Any,
) -> None:
    """Log a job's message under its id (`log_message`) — or, the job retried after a failure
    it logged, say on that row what came of this attempt: one row per job, its latest outcome."""
    logged = await session.get(MessageLog, log_id, with_for_update=True)
    if logged is None:
        await log_message(
            session, log_id=log_id, status=status, provider_id=provider_id, error=error, **fields
        )
        return
    logged.status, logged.provider_id, logged.error = status, provider_id, error
    logged.created_at = utcnow()
    await session.flush()


@job(SEND_EMAIL)
async def send_email_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    # A staff member's e-mail (`staff_id`, no customer account) is logged without an account.
    staff_mail = "staff_id" in payload and "account_id" not in payload
    await send_message(
        ctx,
        "email",
        None if staff_mail else _account_id(payload),
        str(payload["template"]),
        str(payload["to"]),
        str(payload.get("language") or ctx.settings.default_language),
        dict(payload.get("params") or {}),
    )


@job(SEND_SMS)
async def send_sms_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    await send_message(
        ctx,
        "sms",
        _account_id(payload),
        str(payload["template"]),
        str(payload["to"]),
        str(payload.get("language") or ctx.settings.default_language),
        dict(payload.get("params") or {}),
    )


@job(SEND_CODE, scrub_payload=True)
async def send_code_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    try:
        # With the key ring: a code queued just before a rotation of the secret key still goes.
        sealed = str(payload["sealed"])
        code = unseal_any(ctx.settings.secret_keys, "outbox-code", sealed)[0].decode()
    except (KeyError, SealBroken) as exc:
        raise PermanentJobError("the code cannot be unsealed") from exc
    await send_message(
        ctx,
        str(payload["channel"]),
        _account_id(payload),
        f"code.{payload['purpose']}",
        str(payload["target"]),
        str(payload.get("language") or ctx.settings.default_language),
        {"code": code, "minutes": CODE_MINUTES},
    )
