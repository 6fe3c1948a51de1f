"""A customer's profile and lines."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth import codes
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import CodePurpose
from simcharge.auth.service import (
    Channel,
    normalize_phone,
    request_contact_change,
    use_code,
    verify_purpose,
)
from simcharge.auth.throttle import RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Conflict, NotFound, Refused, ValidationFailed
from simcharge.kit.i18n import LANGUAGES, regional_format
from simcharge.kit.logging import log_denied
from simcharge.kit.moments import is_zone
from simcharge.kit.translations import N_
from simcharge.lines.models import Line, LineState
from simcharge.lines.repository import LineRepository
from simcharge.notifications.service import notify, send_code


class LineAttachedElsewhere(Conflict):
    slug = "line-attached-elsewhere"
    title = N_("This line belongs to another account. Contact customer service to move it.")


async def update_profile(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    display_name: str | None = None,
    language: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    formats: Mapping[str, str | None] | None = None,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: Sequence[codes.CodeCount] = (),
) -> Account:
    """Change what was given. A new e-mail address or phone number is only pending until its
    code is entered; the current one stays in use meanwhile (`counted`: the sends of their
    codes, counted before the transaction by `auth.service.count_contact_change_sends`).
    `formats`: the time zone and number format given (`checked_formats`; None resets one)."""
    if language is not None and language not in LANGUAGES:
        raise ValidationFailed(
            N_("Choose one of: {languages}."), field="language", languages=", ".join(LANGUAGES)
        )
    checked = checked_formats(formats or {})
    for name, value in checked.items():
        setattr(account, name, value)
    if display_name is not None:
        account.display_name = display_name.strip() or None
    if language is not None:
        account.language = language
    changes: list[tuple[Channel, str]] = []
    if email is not None:
        changes.append(("email", email))
    if phone is not None:
        changes.append(("sms", phone))
    for channel, value in changes:
        purpose = verify_purpose(channel)
        await request_contact_change(
            session, settings, account, channel, value, client=client, now=now, limits=limits,
            counted=next((c for c in counted if c.purpose == purpose), None),
        )  # fmt: skip
    account.updated_at = now
    await session.flush()
    return account


FORMAT_FIELDS = ("time_zone", "format_locale")
"""How an account's times and numbers are written: what `checked_formats` takes."""


def checked_formats(given: Mapping[str, str | None]) -> dict[str, str | None]:
    """The time zone and number format of a profile change, as stored: an IANA zone name the
    time zone database knows, a regional format `kit.i18n.regional_format` allows (`es-mx` is
    stored `es_MX`), or None — the operator's zone, the browser's region. Anything else is
    refused, naming the field, before anything changes."""
    checked: dict[str, str | None] = {}
    for name in FORMAT_FIELDS:
        if name not in given:
            continue
        value = given[name]
        if value is None:
            checked[name] = None
        elif name == "time_zone":
            if not is_zone(value):
                raise ValidationFailed(
                    N_("Choose a time zone by its IANA name, such as Asia/Manila."), field=name
                )
            checked[name] = value
        else:
            found = regional_format(value)
            if found is None:
                raise ValidationFailed(
                    N_("Choose a regional format of a language that has them, such as es_MX."),
                    field=name,
                )
            checked[name] = found
    return checked


async def set_formats(
    session: AsyncSession, account: Account, given: Mapping[str, str | None], now: datetime
) -> Account:
    """Write the account's time zone and number format (`checked_formats`): the portal's
    profile page. Nothing else changes; nothing is sent (it is no security setting)."""
    for name, value in checked_formats(given).items():
        setattr(account, name, value)
    account.updated_at = now
    await session.flush()
    return account


async def own_lines(session: AsyncSession, account_id: uuid.UUID) -> Sequence[Line]:
    return await LineRepository(session).of_account(account_id)


async def own_line(session: AsyncSession, account_id: uuid.UUID, line_id: uuid.UUID) -> Line:
    """A line of this account; anyone else's line is "not found", never "forbidden"."""
    line = await LineRepository(session).get(line_id)
    if line is None or line.account_id != account_id:
        if line is not None:
            log_denied("line", account_id, line_id)
        raise NotFound(N_("No line with id {line_id}."), field="line_id", line_id=str(line_id))
    return line


async def count_line_attach(
    db: Database, limits: RateLimits, account: Account, raw_msisdn: str, now: datetime
) -> codes.CodeCount | None:
    """The code send of a line being added, counted against the account's sends before the
    transaction that sends it, as every code send is (a slow Redis then holds no row). Nothing
    is counted for a number that is not ours, a line already the customer's (the transaction
    refuses them) or a send within a minute of the last (refused as too soon); a number that is
    no number is refused here."""
    msisdn = normalize_phone(raw_msisdn, field="msisdn")
    async with db.read() as s:
        line = await LineRepository(s).by_msisdn(msisdn)
        if line is None or line.state == LineState.terminated or line.account_id == account.id:
            return None
        too_soon = await codes.send_wait(s, account.id, CodePurpose.attach_line, msisdn, now)
    return await codes.count_send(
        limits, account.id, CodePurpose.attach_line, msisdn, too_soon=too_soon
    )


async def request_line_attach(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    raw_msisdn: str,
    *,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> None:
    """Send a code by SMS to one of the operator's lines, to prove the customer holds it
    (`counted`: its send, counted before the transaction by `count_line_attach`)."""
    msisdn = normalize_phone(raw_msisdn, field="msisdn")
    line = await LineRepository(session).by_msisdn(msisdn)
    if line is None or line.state == LineState.terminated:
        raise NotFound(N_("{msisdn} is not one of our lines."), field="msisdn", msisdn=msisdn)
    if line.account_id == account.id:
        raise Conflict(N_("This line is already in your account."), field="msisdn")
    issued = await codes.issue_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=CodePurpose.attach_line,
        channel="sms",
        target=msisdn,
        now=now,
        limits=limits,
        counted=counted,
    )
    await send_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=CodePurpose.attach_line,
        channel="sms",
        target=msisdn,
        code=issued.code,
        # Read by the SIM's holder, who may not be the asker: sent in the holder's language, or
        # the operator's (`notifications.jobs.reader_language`), never the asker's.
        language=settings.default_language,
    )
    await record_event(
        session,
        EventKind.line_attach_requested,
        account_id=account.id,
        client=client,
        details={"msisdn": msisdn},
        now=now,
    )


async def confirm_line_attach(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    raw_msisdn: str,
    code: str,
    *,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> Line | Refused:
    """Add the line whose code this is (`counted`: the check, counted before the transaction:
    `codes.count_check` for `CodePurpose.attach_line`)."""
    msisdn = normalize_phone(raw_msisdn, field="msisdn")
    used = await use_code(
        session,
        settings,
        account,
        CodePurpose.attach_line,
        code,
        target=msisdn,
        client=client,
        now=now,
        limits=limits,
        counted=counted,
    )
    if isinstance(used, Refused):
        return used
    # Locked: two accounts whose holders both had the SIM's code may confirm at once. The
    # later one waits here for the first to commit, then sees the line taken and is refused
    # (on SQLite the writers are already one after the other).
    line = await LineRepository(session).by_msisdn(msisdn, lock=True)
    if line is None or line.state == LineState.terminated:
        return Refused(codes.InvalidCode())
    if line.account_id is not None and line.account_id != account.id:
        await record_event(
            session,
            EventKind.line_attached,
            account_id=account.id,
            client=client,
            success=False,
            details={"msisdn": msisdn, "reason": LineAttachedElsewhere.slug},
            now=now,
        )
        return Refused(LineAttachedElsewhere(field="msisdn"))
    await _attach(session, account, line, client=client, now=now)
    return line


async def attach_own_number(
    session: AsyncSession, account: Account, *, client: ClientInfo | None, now: datetime
) -> Line | None:
    """A verified phone number that is one of the operator's free lines joins the account."""
    if not account.phone or account.phone_verified_at is None:
        return None
    line = await LineRepository(session).by_msisdn(account.phone)
    if line is None or line.account_id is not None or line.state == LineState.terminated:
        return None
    await _attach(session, account, line, client=client, now=now)
    return line


async def _attach(
    session: AsyncSession, account: Account, line: Line, *, client: ClientInfo | None, now: datetime
) -> None:
    line.account_id = account.id
    line.attached_at = now
    await session.flush()
    await record_event(
        session,
        EventKind.line_attached,
        account_id=account.id,
        client=client,
        details={"msisdn": line.msisdn, "line_id": str(line.id)},
        now=now,
    )
    await notify(
        session,
        account_id=account.id,
        template="line.attached",
        params={"msisdn": line.msisdn},
        line_id=line.id,
    )
