"""Signing up, signing in and keeping an account safe (OWASP ASVS 4.0.3 L2, NIST SP 800-63B).

Functions that refuse after having counted something (a failed sign-in, a wrong code) return
`Refused(error)` instead of raising, so that the edge commits the count and then raises.
Answers never tell a known account from an unknown one: the same error, and the same work
(an unknown login still costs a password hash)."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account, AccountStatus
from simcharge.accounts.repository import AccountRepository
from simcharge.auth import codes, throttle, totp
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import AuthSession, CodePurpose, KnownDevice, LoginThrottle
from simcharge.auth.passwords import (
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)
from simcharge.auth.sessions import (
    IssuedSession,
    SessionPolicy,
    open_session,
    revoke_all,
    rotate,
)
from simcharge.config import Settings
from simcharge.errors import (
    Conflict,
    FieldError,
    NotAuthenticated,
    Refused,
    ValidationFailed,
)
from simcharge.kit.i18n import LANGUAGES
from simcharge.kit.ids import uuid7
from simcharge.kit.phone import InvalidPhoneNumber, normalize_e164
from simcharge.kit.translations import N_
from simcharge.notifications.service import notify, send_code
from simcharge.notifications.transports import mask

Channel = Literal["email", "sms"]
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")


class InvalidCredentials(NotAuthenticated):
    slug = "invalid-credentials"
    title = N_("The login or the password is wrong.")


class InvalidSecondFactor(NotAuthenticated):
    slug = "invalid-second-factor"
    title = N_("The authenticator or recovery code is wrong.")


class SecondFactorRequired(NotAuthenticated):
    slug = "second-factor-required"
    title = N_("Enter the code from your authenticator app, or a recovery code.")


class AccountLocked(NotAuthenticated):
    slug = "account-locked"
    title = N_("This account is locked. Ask for an unlock code, or contact customer service.")


class UsernameTaken(Conflict):
    slug = "username-taken"
    title = N_("This username is taken; choose another.")


class ContactTaken(Conflict):
    slug = "contact-taken"
    title = N_("This address or number belongs to another account.")


def policy(settings: Settings) -> SessionPolicy:
    return SessionPolicy(
        idle=timedelta(minutes=settings.session_idle_minutes),
        absolute=timedelta(hours=settings.session_absolute_hours),
    )


# --------------------------------------------------------------------------------------------
# Normalisation


def normalize_username(raw: str) -> str:
    username = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not USERNAME.match(username):
        raise ValidationFailed(
            N_(
                "A username has 3 to 32 characters: letters a–z, digits, '.', '_' or '-', "
                "starting with a letter or digit."
            ),
            field="username",
        )
    return username


def normalize_email(raw: str, field: str = "email") -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValidationFailed(N_("This is not a valid e-mail address."), field=field) from exc


def normalize_phone(raw: str, field: str = "phone") -> str:
    try:
        return normalize_e164(raw)
    except InvalidPhoneNumber as exc:
        raise ValidationFailed(
            N_(
                "This is not a valid phone number; include the country code, like +63 917 123 4567."
            ),
            field=field,
        ) from exc


def normalize_login(raw: str) -> tuple[str, str]:
    """(kind, value): an e-mail address, an international phone number, or a username."""
    text = unicodedata.normalize("NFKC", raw).strip()
    if "@" in text:
        try:
            return "email", normalize_email(text, "login")
        except ValidationFailed:
            return "username", text.casefold()
    if text.startswith("+"):
        try:
            return "phone", normalize_e164(text)
        except InvalidPhoneNumber:
            pass
    return "username", text.casefold()


async def find_by_login(session: AsyncSession, raw: str) -> Account | None:
    kind, value = normalize_login(raw)
    repo = AccountRepository(session)
    if kind == "email":
        return await repo.by_verified_email(value)
    if kind == "phone":
        return await repo.by_verified_phone(value)
    return await repo.by_username(value)


def _login_keys(secret: str, account: Account) -> list[str]:
    keys = [throttle.login_key(secret, f"username:{account.username}")]
    if account.email:
        keys.append(throttle.login_key(secret, f"email:{account.email}"))
    if account.phone:
        keys.append(throttle.login_key(secret, f"phone:{account.phone}"))
    return keys


# --------------------------------------------------------------------------------------------
# Registration and contacts


@dataclass(frozen=True, slots=True)
class Registration:
    username: str
    password: str
    email: str | None = None
    phone: str | None = None
    language: str = "en"
    display_name: str | None = None


async def register(
    session: AsyncSession,
    settings: Settings,
    reg: Registration,
    *,
    client: ClientInfo,
    now: datetime,
) -> list[Channel]:
    """Create an account and send a code to each contact; returns the channels used.

    A username in use is refused (`username-taken`: usernames are public handles). An e-mail
    address or phone number in use is NOT revealed: nothing is created, the holder of the
    contact is told that someone tried, and the answer is the same as for a success."""
    errors: list[FieldError] = []
    username = _collect(errors, normalize_username, reg.username)
    email = _collect(errors, normalize_email, reg.email) if reg.email else None
    phone = _collect(errors, normalize_phone, reg.phone) if reg.phone else None
    if not reg.email and not reg.phone:
        errors.append(
            FieldError("email", N_("Give an e-mail address or a phone number (or both)."))
        )
    if reg.language not in LANGUAGES:
        errors.append(
            FieldError(
                "language", N_("Choose one of: {languages}."), {"languages": ", ".join(LANGUAGES)}
            )
        )
    try:
        check_password_policy(reg.password, username=username or reg.username, email=email)
    except ValidationFailed as exc:
        errors.append(FieldError("password", exc.detail_template, exc.params))
    if errors or username is None:
        raise ValidationFailed(errors=errors)
    repo = AccountRepository(session)
    if await repo.by_username(username) is not None:
        raise UsernameTaken(field="username")
    channels: list[Channel] = []
    if email:
        channels.append("email")
    if phone:
        channels.append("sms")
    holder = await repo.holding_contact(email=email, phone=phone)
    if holder is not None:
        await notify(
            session,
            account_id=holder.id,
            template="security.registration_attempt",
            dedupe_key=f"registration-attempt:{holder.id}:{now:%Y%m%d%H}",
        )
        await record_event(
            session,
            EventKind.registration_attempt_on_taken_contact,
            account_id=holder.id,
            client=client,
            success=False,
            now=now,
        )
        return channels
    account = Account(
        id=uuid7(),
        username=username,
        display_name=reg.display_name,
        email_pending=email,
        phone_pending=phone,
        password_hash=hash_password(reg.password),
        password_changed_at=now,
        language=reg.language,
        status=AccountStatus.active.value,
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    await session.flush()
    for channel in channels:
        await _send_verification(session, settings, account, channel, now)
    await _remember_device(session, settings, account.id, client, now)
    await record_event(session, EventKind.registered, account_id=account.id, client=client, now=now)
    await notify(
        session,
        account_id=account.id,
        template="account.welcome",
        params={"username": username},
        channels=["portal"],
    )
    return channels


def _collect(errors: list[FieldError], normalize: Callable[[str], str], raw: str) -> str | None:
    """Normalise `raw`, or note why not (so that every bad field is reported at once)."""
    try:
        return normalize(raw)
    except ValidationFailed as exc:
        errors.append(FieldError(exc.field or "body", exc.detail_template, exc.params))
        return None


async def _send_verification(
    session: AsyncSession, settings: Settings, account: Account, channel: Channel, now: datetime
) -> None:
    target = account.email_pending if channel == "email" else account.phone_pending
    if target is None:
        return
    purpose = CodePurpose.verify_email if channel == "email" else CodePurpose.verify_phone
    issued = await codes.issue_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=purpose,
        channel=channel,
        target=target,
        now=now,
    )
    await send_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=purpose,
        channel=channel,
        target=target,
        code=issued.code,
        language=account.language,
    )


async def resend_verification(
    session: AsyncSession, settings: Settings, account: Account, channel: Channel, now: datetime
) -> None:
    pending = account.email_pending if channel == "email" else account.phone_pending
    if pending is None:
        raise ValidationFailed(N_("There is nothing to verify on this channel."), field="channel")
    await _send_verification(session, settings, account, channel, now)


async def verify_contact(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    channel: Channel,
    code: str,
    *,
    client: ClientInfo,
    now: datetime,
) -> Account | Refused:
    """Confirm a pending e-mail address or phone number with its code."""
    pending = account.email_pending if channel == "email" else account.phone_pending
    purpose = CodePurpose.verify_email if channel == "email" else CodePurpose.verify_phone
    if pending is None:
        return Refused(codes.InvalidCode())
    row = await codes.consume_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=purpose,
        code=code,
        target=pending,
        now=now,
    )
    if row is None:
        await record_event(
            session,
            EventKind.code_rejected,
            account_id=account.id,
            client=client,
            success=False,
            details={"purpose": purpose.value},
            now=now,
        )
        return Refused(codes.InvalidCode())
    repo = AccountRepository(session)
    other = await repo.holding_contact(
        email=pending if channel == "email" else None,
        phone=pending if channel == "sms" else None,
        other_than=account.id,
    )
    if other is not None and (other.email == pending or other.phone == pending):
        return Refused(ContactTaken(field="channel"))
    old = account.email if channel == "email" else account.phone
    old_verified = account.email_verified_at if channel == "email" else account.phone_verified_at
    if channel == "email":
        account.email, account.email_pending, account.email_verified_at = pending, None, now
    else:
        account.phone, account.phone_pending, account.phone_verified_at = pending, None, now
    account.updated_at = now
    await session.flush()
    await record_event(
        session,
        EventKind.contact_verified,
        account_id=account.id,
        client=client,
        details={"channel": channel},
        now=now,
    )
    if old and old != pending and old_verified is not None:
        await notify(
            session,
            account_id=account.id,
            template="security.contact_changed",
            params={
                "kind": "email" if channel == "email" else "phone",
                "new": mask(channel, pending),
            },
            channels=[channel, "portal"],
            targets={channel: old},
        )
        await record_event(
            session,
            EventKind.contact_changed,
            account_id=account.id,
            client=client,
            details={"channel": channel},
            now=now,
        )
    if channel == "sms":
        from simcharge.accounts.service import attach_own_number

        await attach_own_number(session, account, client=client, now=now)
    return account


async def request_contact_change(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    channel: Channel,
    raw: str,
    *,
    client: ClientInfo,
    now: datetime,
) -> None:
    """Start replacing the e-mail address or phone number: a code goes to the new one, and the
    current one is told. The old contact stays until the code is entered."""
    value = normalize_email(raw) if channel == "email" else normalize_phone(raw)
    current = account.email if channel == "email" else account.phone
    if value == current:
        return
    if channel == "email":
        account.email_pending = value
    else:
        account.phone_pending = value
    account.updated_at = now
    await session.flush()
    await _send_verification(session, settings, account, channel, now)
    await record_event(
        session,
        EventKind.contact_change_requested,
        account_id=account.id,
        client=client,
        details={"channel": channel},
        now=now,
    )
    if current:
        await notify(
            session,
            account_id=account.id,
            template="security.contact_change_requested",
            params={
                "kind": "email" if channel == "email" else "phone",
                "new": mask(channel, value),
            },
            channels=[channel, "portal"],
            targets={channel: current},
        )


# --------------------------------------------------------------------------------------------
# Signing in


@dataclass(frozen=True, slots=True)
class SignedIn:
    account: Account
    issued: IssuedSession
    new_device: bool


async def login(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    password: str,
    second_factor: str | None,
    client: ClientInfo,
    now: datetime,
) -> SignedIn | Refused:
    secret = settings.secret_key
    kind, value = normalize_login(login)
    row = await throttle.load(session, throttle.login_key(secret, f"{kind}:{value}"), now)
    account = await find_by_login(session, login)
    account_id = account.id if account else None
    locked_out = throttle.refusal(row, now)
    if locked_out is not None:
        await record_event(
            session,
            EventKind.login_locked_out,
            account_id=account_id,
            client=client,
            success=False,
            now=now,
        )
        return Refused(locked_out)
    password_ok = verify_password(account.password_hash if account else None, password)
    if account is None or not password_ok or account.status == AccountStatus.disabled:
        return await _failed_login(session, row, account, client, now, InvalidCredentials())
    if account.status == AccountStatus.locked:
        await record_event(
            session,
            EventKind.login,
            account_id=account.id,
            client=client,
            success=False,
            details={"reason": "account_locked"},
            now=now,
        )
        return Refused(AccountLocked())
    mfa = False
    if account.totp_enabled_at is not None:
        if not second_factor:
            await record_event(
                session, EventKind.mfa_required, account_id=account.id, client=client, now=now
            )
            return Refused(SecondFactorRequired(field="second_factor"))
        if not await _second_factor_ok(session, settings, account, second_factor, client, now):
            return await _failed_login(
                session, row, account, client, now, InvalidSecondFactor(field="second_factor")
            )
        mfa = True
    throttle.clear(row, now)
    if needs_rehash(account.password_hash):
        account.password_hash = hash_password(password)
    issued = await open_session(
        session,
        secret,
        account_id=account.id,
        client=client,
        policy=policy(settings),
        now=now,
        mfa=mfa,
    )
    new_device = await _remember_device(session, settings, account.id, client, now)
    await record_event(
        session,
        EventKind.login,
        account_id=account.id,
        client=client,
        details={"session_id": str(issued.session.id), "mfa": mfa},
        now=now,
    )
    if new_device:
        await record_event(
            session, EventKind.new_device, account_id=account.id, client=client, now=now
        )
        await notify(
            session,
            account_id=account.id,
            template="security.new_device",
            params={
                "device": client.short_user_agent or "?",
                "ip": client.ip or "?",
                "time": now.isoformat(),
            },
        )
    return SignedIn(account, issued, new_device)


async def _failed_login(
    session: AsyncSession,
    row: LoginThrottle,
    account: Account | None,
    client: ClientInfo,
    now: datetime,
    error: InvalidCredentials | InvalidSecondFactor,
) -> Refused:
    throttle.count_failure(row, now)
    await record_event(
        session,
        EventKind.login,
        account_id=account.id if account else None,
        client=client,
        success=False,
        details={"reason": error.slug, "consecutive_failures": row.failures},
        now=now,
    )
    if account is not None and row.failures == throttle.FREE_FAILURES:
        await notify(
            session,
            account_id=account.id,
            template="security.failed_logins",
            params={"count": row.failures},
            dedupe_key=f"failed-logins:{account.id}:{now:%Y%m%d%H}",
        )
    return Refused(error)


async def _second_factor_ok(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    code: str,
    client: ClientInfo,
    now: datetime,
) -> bool:
    if totp.accept_totp(settings.secret_key, account, code, now):
        await session.flush()
        return True
    left = await totp.use_recovery_code(session, settings.secret_key, account.id, code, now)
    if left is None:
        return False
    await record_event(
        session,
        EventKind.recovery_code_used,
        account_id=account.id,
        client=client,
        details={"left": left},
        now=now,
    )
    await notify(
        session,
        account_id=account.id,
        template="security.recovery_code_used",
        params={"remaining": left},
    )
    return True


async def _remember_device(
    session: AsyncSession,
    settings: Settings,
    account_id: uuid.UUID,
    client: ClientInfo,
    now: datetime,
) -> bool:
    """Note the device; True if this account has never been used from it before (and it is
    not the account's first device)."""
    digest = client.device_hash(settings.secret_key)
    known = (
        (await session.execute(select(KnownDevice).where(KnownDevice.account_id == account_id)))
        .scalars()
        .all()
    )
    for device in known:
        if device.device_hash == digest:
            device.last_seen_at = now
            return False
    session.add(
        KnownDevice(
            account_id=account_id,
            device_hash=digest,
            user_agent=client.short_user_agent,
            first_seen_at=now,
            last_seen_at=now,
        )
    )
    await session.flush()
    return bool(known)


async def logout(
    session: AsyncSession,
    auth: AuthSession,
    *,
    client: ClientInfo,
    now: datetime,
    everywhere: bool = False,
) -> int:
    if everywhere:
        count = await revoke_all(session, auth.account_id, reason="logout_all", now=now)
        await record_event(
            session,
            EventKind.logout_all,
            account_id=auth.account_id,
            client=client,
            details={"sessions": count},
            now=now,
        )
        return count
    auth.revoked_at, auth.revoked_reason = now, "logout"
    await session.flush()
    await record_event(
        session, EventKind.logout, account_id=auth.account_id, client=client, now=now
    )
    return 1


# --------------------------------------------------------------------------------------------
# Passwords


async def forgot_password(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    channel: Channel,
    client: ClientInfo,
    now: datetime,
) -> None:
    """Send a reset code to the account's verified contact on `channel`, if there is one.
    Says nothing either way (the edge answers 202 to everyone)."""
    account = await find_by_login(session, login)
    if account is None or account.status == AccountStatus.disabled:
        return
    target = (
        account.email
        if channel == "email" and account.email_verified_at
        else (account.phone if channel == "sms" and account.phone_verified_at else None)
    )
    if target is None:
        return
    try:
        issued = await codes.issue_code(
            session,
            settings.secret_key,
            account_id=account.id,
            purpose=CodePurpose.password_reset,
            channel=channel,
            target=target,
            now=now,
        )
    except codes.ResendTooSoon:
        return
    await send_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=CodePurpose.password_reset,
        channel=channel,
        target=target,
        code=issued.code,
        language=account.language,
    )
    await record_event(
        session,
        EventKind.password_reset_requested,
        account_id=account.id,
        client=client,
        details={"channel": channel},
        now=now,
    )


async def reset_password(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    code: str,
    new_password: str,
    client: ClientInfo,
    now: datetime,
) -> Account | Refused:
    account = await find_by_login(session, login)
    if account is None or account.status == AccountStatus.disabled:
        return Refused(codes.InvalidCode())
    check_password_policy(
        new_password, username=account.username, email=account.email, field="new_password"
    )
    row = await codes.consume_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=CodePurpose.password_reset,
        code=code,
        now=now,
    )
    if row is None:
        await record_event(
            session,
            EventKind.code_rejected,
            account_id=account.id,
            client=client,
            success=False,
            details={"purpose": "password_reset"},
            now=now,
        )
        return Refused(codes.InvalidCode())
    await _set_password(session, settings, account, new_password, now)
    ended = await revoke_all(session, account.id, reason="password_reset", now=now)
    await record_event(
        session,
        EventKind.password_reset,
        account_id=account.id,
        client=client,
        details={"sessions_ended": ended},
        now=now,
    )
    await notify(session, account_id=account.id, template="security.password_reset")
    return account


async def _set_password(
    session: AsyncSession, settings: Settings, account: Account, password: str, now: datetime
) -> None:
    account.password_hash = hash_password(password)
    account.password_changed_at = account.updated_at = now
    for key in _login_keys(settings.secret_key, account):
        row = await throttle.load(session, key, now)
        throttle.clear(row, now)
    await session.flush()


async def change_password(
    session: AsyncSession,
    settings: Settings,
    auth: AuthSession,
    account: Account,
    *,
    current: str,
    new: str,
    client: ClientInfo,
    now: datetime,
) -> str | Refused:
    """Change the password (the current one is required); other sessions end, this one gets a
    new token, which is returned."""
    if not verify_password(account.password_hash, current):
        await record_event(
            session,
            EventKind.password_changed,
            account_id=account.id,
            client=client,
            success=False,
            details={"reason": "wrong_password"},
            now=now,
        )
        return Refused(
            InvalidCredentials(N_("The current password is wrong."), field="current_password")
        )
    check_password_policy(new, username=account.username, email=account.email, field="new_password")
    await _set_password(session, settings, account, new, now)
    ended = await revoke_all(session, account.id, reason="password_changed", now=now, keep=auth.id)
    token = await rotate(session, settings.secret_key, auth)
    await record_event(
        session,
        EventKind.password_changed,
        account_id=account.id,
        client=client,
        details={"sessions_ended": ended},
        now=now,
    )
    await notify(session, account_id=account.id, template="security.password_changed")
    return token


# --------------------------------------------------------------------------------------------
# Locking


async def lock_account(
    session: AsyncSession,
    account: Account,
    *,
    reason: str,
    client: ClientInfo | None,
    now: datetime,
) -> int:
    account.status = AccountStatus.locked.value
    account.locked_at, account.lock_reason, account.updated_at = now, reason, now
    ended = await revoke_all(session, account.id, reason="account_locked", now=now)
    await record_event(
        session,
        EventKind.account_locked,
        account_id=account.id,
        client=client,
        details={"reason": reason, "sessions_ended": ended},
        now=now,
    )
    await notify(session, account_id=account.id, template="security.account_locked")
    return ended


async def request_unlock(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    channel: Channel,
    client: ClientInfo,
    now: datetime,
) -> None:
    """Send an unlock code to a verified contact of a self-locked account. Silent otherwise."""
    account = await find_by_login(session, login)
    if account is None or account.status != AccountStatus.locked or account.lock_reason == "staff":
        return
    target = (
        account.email
        if channel == "email" and account.email_verified_at
        else (account.phone if channel == "sms" and account.phone_verified_at else None)
    )
    if target is None:
        return
    try:
        issued = await codes.issue_code(
            session,
            settings.secret_key,
            account_id=account.id,
            purpose=CodePurpose.unlock,
            channel=channel,
            target=target,
            now=now,
        )
    except codes.ResendTooSoon:
        return
    await send_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=CodePurpose.unlock,
        channel=channel,
        target=target,
        code=issued.code,
        language=account.language,
    )
    await record_event(
        session,
        EventKind.unlock_requested,
        account_id=account.id,
        client=client,
        details={"channel": channel},
        now=now,
    )


async def unlock(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    code: str,
    client: ClientInfo,
    now: datetime,
) -> Account | Refused:
    account = await find_by_login(session, login)
    if account is None or account.status != AccountStatus.locked or account.lock_reason == "staff":
        return Refused(codes.InvalidCode())
    row = await codes.consume_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=CodePurpose.unlock,
        code=code,
        now=now,
    )
    if row is None:
        await record_event(
            session,
            EventKind.code_rejected,
            account_id=account.id,
            client=client,
            success=False,
            details={"purpose": "unlock"},
            now=now,
        )
        return Refused(codes.InvalidCode())
    await unlock_account(session, account, client=client, now=now)
    return account


async def unlock_account(
    session: AsyncSession,
    account: Account,
    *,
    client: ClientInfo | None,
    now: datetime,
    by: str = "customer",
) -> None:
    account.status = AccountStatus.active.value
    account.locked_at = account.lock_reason = None
    account.updated_at = now
    await record_event(
        session,
        EventKind.account_unlocked,
        account_id=account.id,
        client=client,
        details={"by": by},
        now=now,
    )
    await notify(session, account_id=account.id, template="security.account_unlocked")


# --------------------------------------------------------------------------------------------
# Two-step verification


async def start_totp(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    password: str,
    client: ClientInfo,
    now: datetime,
) -> totp.Enrolment | Refused:
    if not verify_password(account.password_hash, password):
        return Refused(InvalidCredentials(N_("The current password is wrong."), field="password"))
    if account.totp_enabled_at is not None:
        raise Conflict(N_("Two-step verification is already on; turn it off first."))
    enrolment, sealed = totp.new_enrolment(settings.secret_key, account, settings.operator_name)
    account.totp_secret_sealed, account.totp_last_step = sealed, None
    await record_event(
        session, EventKind.totp_enrolment_started, account_id=account.id, client=client, now=now
    )
    return enrolment


@dataclass(frozen=True, slots=True)
class TotpEnabled:
    recovery_codes: list[str]
    token: str


async def confirm_totp(
    session: AsyncSession,
    settings: Settings,
    auth: AuthSession,
    account: Account,
    *,
    code: str,
    client: ClientInfo,
    now: datetime,
) -> TotpEnabled | Refused:
    if account.totp_enabled_at is not None:
        raise Conflict(N_("Two-step verification is already on."))
    if account.totp_secret_sealed is None:
        raise Conflict(N_("Start setting up two-step verification first."))
    if not totp.accept_totp(settings.secret_key, account, code, now):
        await session.flush()
        return Refused(InvalidSecondFactor(field="code"))
    account.totp_enabled_at = account.updated_at = now
    recovery = await totp.new_recovery_codes(session, settings.secret_key, account.id, now)
    auth.mfa = True
    token = await rotate(session, settings.secret_key, auth)
    await record_event(
        session, EventKind.totp_enabled, account_id=account.id, client=client, now=now
    )
    await notify(session, account_id=account.id, template="security.totp_enabled")
    return TotpEnabled(recovery, token)


async def disable_totp(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    password: str,
    code: str,
    client: ClientInfo,
    now: datetime,
) -> Refused | None:
    if account.totp_enabled_at is None and account.totp_secret_sealed is None:
        raise Conflict(N_("Two-step verification is not on."))
    if not verify_password(account.password_hash, password):
        return Refused(InvalidCredentials(N_("The current password is wrong."), field="password"))
    was_on = account.totp_enabled_at is not None
    if was_on and not await _second_factor_ok(session, settings, account, code, client, now):
        return Refused(InvalidSecondFactor(field="code"))
    account.totp_secret_sealed = None
    account.totp_enabled_at = account.totp_last_step = None
    account.updated_at = now
    await totp.forget_recovery_codes(session, account.id)
    if was_on:
        await record_event(
            session, EventKind.totp_disabled, account_id=account.id, client=client, now=now
        )
        await notify(session, account_id=account.id, template="security.totp_disabled")
    return None


async def regenerate_recovery_codes(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    password: str,
    client: ClientInfo,
    now: datetime,
) -> list[str] | Refused:
    if account.totp_enabled_at is None:
        raise Conflict(N_("Two-step verification is not on."))
    if not verify_password(account.password_hash, password):
        return Refused(InvalidCredentials(N_("The current password is wrong."), field="password"))
    recovery = await totp.new_recovery_codes(session, settings.secret_key, account.id, now)
    await record_event(
        session, EventKind.recovery_codes_regenerated, account_id=account.id, client=client, now=now
    )
    return recovery
