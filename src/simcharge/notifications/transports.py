"""Handing messages over: e-mail by SMTP, SMS by a Twilio-compatible API, and in development
an in-memory mailbox that `/dev/mailbox` shows (so `make run` needs no mail server). The tests
(`SIMCHARGE_ENV=test`) read the same in-memory mailbox, but no page shows it then."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib
import httpx

from simcharge.config import Environment, Settings
from simcharge.kit.clock import utcnow


@dataclass(frozen=True, slots=True)
class Outgoing:
    channel: str
    to: str
    subject: str | None
    text: str
    html: str | None = None
    at: datetime = field(default_factory=utcnow)
    attachments: tuple[str, ...] = ()
    """File names only."""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


class DeliveryFailed(Exception):
    """The transport refused or failed; `transient` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


# Development and test only: what would have been sent, newest last.
dev_mailbox: collections.deque[Outgoing] = collections.deque(maxlen=500)


def keeps_dev_mailbox(settings: Settings) -> bool:
    """Development (shown at `/dev/mailbox`) and tests (read by them); never production."""
    return settings.env in (Environment.development, Environment.test)


async def send_email(
    settings: Settings,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    attachments: Sequence[Attachment] = (),
    *,
    language: str | None = None,
    message_key: uuid.UUID | None = None,
) -> str:
    """Send one e-mail; returns its Message-ID. It is derived from `message_key` when given
    (the job's: the same message sent again keeps its id, and a mail system that knows the
    id shows it once), else new. `language` (a BCP 47 tag) is its `Content-Language`."""
    # One line whatever its values hold: a line break in a header is refused by the policy
    # (a job that fails every attempt), and must never start a header of its own.
    subject = " ".join(subject.split())
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    # RFC 5322 requires it: without one, a relay stamps its own time and spam filters score it.
    message["Date"] = format_datetime(utcnow())
    domain = settings.smtp_from.rsplit("@", 1)[-1].strip("> ") or None
    message_id = (
        f"<{message_key.hex}@{domain or 'simcharge.invalid'}>"
        if message_key is not None
        else make_msgid(domain=domain)
    )
    message["Message-ID"] = message_id
    # RFC 3834: no vacation notice or out-of-office reply back to a sender nobody reads.
    message["Auto-Submitted"] = "auto-generated"
    # Exchange and Outlook read their own header, not RFC 3834's (not "All": that would
    # also suppress their non-delivery reports, the bounces).
    message["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    if settings.smtp_reply_to:
        message["Reply-To"] = settings.smtp_reply_to
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    for a in attachments:
        main, _, sub = a.content_type.partition("/")
        message.add_attachment(a.data, maintype=main, subtype=sub, filename=a.filename)
    if language:
        # Set last: making the message multipart moves the Content-* headers set before into
        # its first part.
        message["Content-Language"] = language
    if keeps_dev_mailbox(settings):
        names = tuple(a.filename for a in attachments)
        dev_mailbox.append(Outgoing("email", to, subject, text, html, attachments=names))
    if not settings.smtp_host:
        if settings.env is Environment.production:
            raise DeliveryFailed("SIMCHARGE_SMTP_HOST is not set", transient=False)
        return message_id
    try:
        await aiosmtplib.send(
            message,
            sender=settings.smtp_return_path,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            use_tls=settings.smtp_tls == "tls",
            start_tls=settings.smtp_tls == "starttls",
            timeout=15,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = ", ".join(str(r.code) for r in exc.recipients) or "?"
        # 4xx is "not now" (a full or busy mailbox, greylisting): the next attempt may pass.
        raise DeliveryFailed(
            f"recipient {mask('email', to)} refused ({codes})",
            transient=all(_transient_reply(r.code) for r in exc.recipients),
        ) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        said = _without(str(exc), "email", to)
        raise DeliveryFailed(
            f"SMTP: {type(exc).__name__}: {said}", transient=not _refused_for_good(exc, to)
        ) from exc
    return message_id


def _transient_reply(code: int) -> bool:
    """RFC 5321 §4.2.1: 4yz is a transient negative reply, 5yz a permanent one."""
    return not 500 <= code < 600


def _refused_for_good(exc: Exception, to: str) -> bool:
    """Whether the server refused this message for a reason the next attempt keeps: a 5yz reply
    to its content (`DATA`: spam, size, policy), or an address with non-ASCII characters that a
    server without SMTPUTF8 (RFC 6531) cannot take. What would refuse every message — our
    credentials, our sender, TLS the server lacks — stays transient: once the operator mends
    the settings, the queued messages go."""
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return not _transient_reply(exc.code)
    return (
        isinstance(exc, aiosmtplib.SMTPNotSupported) and not to.isascii() and "SMTPUTF8" in str(exc)
    )


async def send_sms(settings: Settings, client: httpx.AsyncClient, to: str, text: str) -> str | None:
    """Send one SMS; returns the provider's message id."""
    if keeps_dev_mailbox(settings):
        dev_mailbox.append(Outgoing("sms", to, None, text))
    if settings.sms_provider == "outbox":
        if settings.env is Environment.production:
            raise DeliveryFailed(
                "no SMS provider configured (SIMCHARGE_SMS_PROVIDER)", transient=False
            )
        return None
    sid, token, sender = (
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        settings.twilio_from,
    )
    if not (sid and token and sender):
        raise DeliveryFailed("the Twilio settings are incomplete", transient=False)
    url = f"{settings.twilio_api_base.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
    try:
        response = await client.post(
            url,
            data={"To": to, "From": sender, "Body": text},
            auth=(sid, token.get_secret_value()),
            timeout=15,
        )
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"SMS provider unreachable: {type(exc).__name__}") from exc
    if response.status_code >= 400:
        try:
            body = response.json()
            reason = f"{body.get('code')}: {body.get('message')}"
        except ValueError:
            reason = response.text[:200]
        transient = response.status_code == 429 or response.status_code >= 500
        reason = _without(reason, "sms", to)
        raise DeliveryFailed(
            f"SMS provider answered {response.status_code} ({reason})", transient=transient
        )
    sid = response.json().get("sid")
    return str(sid) if sid else None


def _without(text: str, channel: str, target: str) -> str:
    """A server's or provider's words with the address or number masked: the error is kept
    with the job, logged and shown to staff (an SMTP reply or Twilio's message names it)."""
    for form in {target, target.lstrip("+")} - {""}:
        text = text.replace(form, mask(channel, target))
    return text


def mask(channel: str, target: str) -> str:
    """What logs may keep of an address or a number."""
    if channel == "email" and "@" in target:
        local, _, domain = target.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{target[:5]}***{target[-4:]}" if len(target) > 9 else "***"
