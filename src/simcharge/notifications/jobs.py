"""The jobs that deliver notifications (registered with the worker)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from simcharge.accounts.models import Account
from simcharge.auth.events import EventKind, record_event
from simcharge.kit.crypto import SealBroken, unseal
from simcharge.notifications.models import Notice
from simcharge.notifications.service import DELIVER, SEND_CODE, log_message
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

SEND_EMAIL = "notifications.email"
SEND_SMS = "notifications.sms"
CODE_MINUTES = 10


def _account_id(payload: dict[str, Any]) -> uuid.UUID:
    try:
        return uuid.UUID(str(payload["account_id"]))
    except (KeyError, ValueError) as exc:
        raise PermanentJobError("payload without a valid account_id") from exc


@job(DELIVER)
async def deliver(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Fan a notification out: the portal notice now, one job per message channel. A security
    alert (`security.…`) is also written in the account's security log, with its channels."""
    account_id = _account_id(payload)
    template = str(payload.get("template", ""))
    channels = list(payload.get("channels") or [])
    targets: dict[str, str] = dict(payload.get("targets") or {})
    params = dict(payload.get("params") or {})
    line_id = payload.get("line_id")

    async def fan_out(session: Any) -> None:
        account = await session.get(Account, account_id)
        if account is None:
            raise PermanentJobError(f"no account {account_id}")
        if "portal" in channels:
            session.add(
                Notice(
                    account_id=account_id,
                    template=template,
                    params=params,
                    line_id=uuid.UUID(line_id) if line_id else None,
                )
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
            )

    await ctx.db.run(fan_out)


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
    params = {"operator": ctx.settings.operator_name, "base_url": ctx.settings.base_url, **params}
    try:
        message = render(template, language, params)
    except Exception as exc:
        raise PermanentJobError(f"template {template}: {type(exc).__name__}: {exc}") from exc
    # What the log may keep: never the params (a code, a link) — only template and subject.
    subject = message.subject if channel == "email" else None
    try:
        if channel == "email":
            provider_id: str | None = await send_email(
                ctx.settings, to, message.subject, message.text, message.html or None, attachments
            )
        else:
            provider_id = await send_sms(ctx.settings, ctx.http, to, message.sms or message.text)
    except DeliveryFailed as exc:
        error = str(exc)
        if not exc.transient or ctx.job.attempts >= ctx.job.max_attempts:
            await ctx.db.run(
                lambda s: log_message(
                    s,
                    account_id=account_id,
                    channel=channel,
                    template=template,
                    target=mask(channel, to),
                    subject=subject,
                    status="failed",
                    error=error,
                )
            )
        if exc.transient:
            raise
        raise PermanentJobError(error) from exc
    await ctx.db.run(
        lambda s: log_message(
            s,
            account_id=account_id,
            channel=channel,
            template=template,
            target=mask(channel, to),
            subject=subject,
            status="sent",
            provider_id=provider_id,
        )
    )


@job(SEND_EMAIL)
async def send_email_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    await send_message(
        ctx,
        "email",
        _account_id(payload),
        str(payload["template"]),
        str(payload["to"]),
        str(payload.get("language", "en")),
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
        str(payload.get("language", "en")),
        dict(payload.get("params") or {}),
    )


@job(SEND_CODE, scrub_payload=True)
async def send_code_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    try:
        code = unseal(ctx.settings.secret_key, "outbox-code", str(payload["sealed"])).decode()
    except (KeyError, SealBroken) as exc:
        raise PermanentJobError("the code cannot be unsealed") from exc
    await send_message(
        ctx,
        str(payload["channel"]),
        _account_id(payload),
        f"code.{payload['purpose']}",
        str(payload["target"]),
        str(payload.get("language", "en")),
        {"code": code, "minutes": CODE_MINUTES},
    )
