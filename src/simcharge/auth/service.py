"""Signing up, signing in and keeping an account safe (OWASP ASVS 4.0.3 L2, NIST SP 800-63B).

Functions that refuse after having counted something (a failed sign-in, a wrong code) return
`Refused(error)` instead of raising, so that the edge commits the count and then raises.
Answers never tell a known account from an unknown one: the same error, and the same work
(an unknown login still costs a password hash).

Functions that send or check codes, or ask for the password again, take the process's
`RateLimits` (`limits`) and what the edge counted before their transaction (`counted`: by
`count_reauthentication`, `count_verification_send`, `count_signed_out_check` and the like, the
same for the JSON API and the portal), so that a slow or hung Redis holds no row; a code send
or check not counted before is counted where the account is known."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import SIGNED_OUT_FOR_GOOD, Account, AccountStatus
from simcharge.accounts.repository import AccountRepository
from simcharge.auth import codes, throttle, totp
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import (
    AuthSession,
    CodePurpose,
    KnownDevice,
    LoginThrottle,
    PasskeySecondFactor,
    VerificationCode,
)
from simcharge.auth.passwords import check_password_policy, hashed, needs_rehash, verified
from simcharge.auth.sessions import (
    IssuedSession,
    SessionPolicy,
    open_session,
    revoke_all,
    revoke_token,
    rotate,
)
from simcharge.auth.throttle import RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import (
    Conflict,
    FieldError,
    NotAuthenticated,
    Refused,
    SecondFactorUnavailable,
    TooManyAttempts,
    ValidationFailed,
)
from simcharge.kit.crypto import SealBroken
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

    passkey: dict[str, object] | None = None
    """At a sign-in that asked for a fresh ceremony (`login(offer_again=True)`: the portal's
    second page shown again), the pending sign-in's new passkey ceremony, as
    `SecondFactorRequired.passkey`; never in the problem document."""


class SecondFactorRequired(NotAuthenticated):
    """The password was right; the second step is due. `passkey`: the pending sign-in's
    passkey ceremony (`passkeys.second_step_offer`), when the account has passkeys."""

    slug = "second-factor-required"
    title = N_("Enter the code from your authenticator app, or a recovery code.")

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        methods: Sequence[str] = ("totp", "recovery_code"),
        passkey: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail, field=field)
        self.methods = list(methods)
        self.passkey = passkey

    def extra(self) -> dict[str, object]:
        return {"methods": self.methods} | ({"passkey": self.passkey} if self.passkey else {})


class AccountLocked(NotAuthenticated):
    slug = "account-locked"
    title = N_("This account is locked. Ask for an unlock code, or contact customer service.")


class UsernameTaken(Conflict):
    slug = "username-taken"
    title = N_("This username is taken; choose another.")


class ContactTaken(Conflict):
    slug = "contact-taken"
    title = N_("This address or number belongs to another account.")


class OnlyContactPending(Conflict):
    slug = "contact-only-one"
    title = N_(
        "This is the only e-mail address or phone number of your account: replace it rather "
        "than cancel it."
    )


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
    """NFKC first, as a login is (`normalize_login`): an address typed in full width (an input
    method's) is the ASCII one, the same at registration, on the profile and at sign-in."""
    text = unicodedata.normalize("NFKC", raw).strip()
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
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
    """The account a login name signs in as; a closed account is no one's (its username is a
    tombstone and its contacts are gone, but a sign-in never finds it in any case: it answers as
    an unknown login does, at the same cost)."""
    kind, value = normalize_login(raw)
    repo = AccountRepository(session)
    if kind == "email":
        account = await repo.by_verified_email(value)
    elif kind == "phone":
        account = await repo.by_verified_phone(value)
    else:
        account = await repo.by_username(value)
    if account is not None and account.status == AccountStatus.closed:
        return None
    return account


async def _held_by_login(session: AsyncSession, raw: str) -> Account | None:
    """The account of this login name, locked and read as it is once held — the order sign-in
    (`check_credentials`), a reset, an unlock and a contact change take it in: the account
    before its codes and throttle rows (a reset that held its code and then waited for the
    account deadlocked with a contact's verification, which holds the account and voids the
    codes to the old one)."""
    account = await find_by_login(session, raw)
    if account is None:
        return None
    return await session.get(Account, account.id, with_for_update=True, populate_existing=True)


def _name_keys(secret: str, account: Account) -> list[str]:
    keys = [throttle.name_key(secret, "username", account.username)]
    if account.email:
        keys.append(throttle.name_key(secret, "email", account.email))
    if account.phone:
        keys.append(throttle.name_key(secret, "phone", account.phone))
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
    account_id: uuid.UUID = field(default_factory=uuid7)
    """The new account's id, known before its transaction so that its codes are counted first."""


def check_registration(reg: Registration) -> tuple[str, str | None, str | None]:
    """The username, e-mail address and phone number of a registration, normalised, once every
    rule that needs no account is met (else `ValidationFailed` naming every field that breaks
    one): the edges call it before counting the attempt, so that bad input uses up nothing."""
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
    return username, email, phone


async def count_registration_codes(
    limits: RateLimits, reg: Registration
) -> tuple[codes.CodeCount, ...]:
    """The code sends of a registration (one per contact given), counted before its transaction
    (a new account has sent none: none is too soon)."""
    _, email, phone = check_registration(reg)
    counted = []
    for purpose, target in ((CodePurpose.verify_email, email), (CodePurpose.verify_phone, phone)):
        if target:
            counted.append(await codes.count_send(limits, reg.account_id, purpose, target))
    return tuple(counted)


async def register(
    session: AsyncSession,
    settings: Settings,
    reg: Registration,
    *,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: Sequence[codes.CodeCount] = (),
) -> list[Channel]:
    """Create an account and send a code to each contact (`counted`: their sends, counted before
    the transaction by `count_registration_codes`); returns the channels given.

    A username in use is refused (`username-taken`: usernames are public handles). An e-mail
    address or phone number that another account holds is NOT revealed, now or later: the
    account is created all the same (same work: the password is hashed) with that contact
    pending, but no code goes to it — it can never be verified, since the other account holds
    it — and its holder is told that someone tried to use it. Signing in with the new username
    and registering that username again then answer as they would after any registration."""
    username, email, phone = check_registration(reg)
    repo = AccountRepository(session)
    if await repo.by_username(username) is not None:
        raise UsernameTaken(field="username")
    channels: list[Channel] = []
    if email:
        channels.append("email")
    if phone:
        channels.append("sms")
    account = Account(
        id=reg.account_id,
        username=username,
        display_name=reg.display_name,
        email_pending=email,
        phone_pending=phone,
        password_hash=await hashed(reg.password),
        password_changed_at=now,
        language=reg.language,
        status=AccountStatus.active.value,
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        # The same name registered a moment ago by another request (a form sent twice).
        raise UsernameTaken(field="username") from exc
    for channel in channels:
        await _send_verification(
            session, settings, account, channel, now, client, limits, counted
        )
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


async def _holder_of(
    session: AsyncSession, channel: Channel, value: str, other_than: uuid.UUID
) -> Account | None:
    """The other account that holds this e-mail address or phone number, if one does."""
    return await AccountRepository(session).holder_of(
        email=value if channel == "email" else None,
        phone=value if channel == "sms" else None,
        other_than=other_than,
    )


async def _send_verification(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    channel: Channel,
    now: datetime,
    client: ClientInfo | None,
    limits: RateLimits,
    counted: Sequence[codes.CodeCount] = (),
) -> None:
    """A code to the pending contact on `channel` — unless another account holds it: then the
    code is made (the same wait before another and the same limits apply, so asking again does
    not tell a held address from a free one) but sent to nobody (it could never be used), and
    the holder is told someone tried to use it. `counted`: sends counted before the
    transaction (the one of this purpose is used)."""
    target = account.email_pending if channel == "email" else account.phone_pending
    if target is None:
        return
    purpose = verify_purpose(channel)
    issued = await codes.issue_code(
        session,
        settings.secret_key,
        account_id=account.id,
        purpose=purpose,
        channel=channel,
        target=target,
        now=now,
        limits=limits,
        counted=next((c for c in counted if c.purpose == purpose), None),
    )
    holder = await _holder_of(session, channel, target, account.id)
    if holder is not None:
        kind = "email" if channel == "email" else "phone"
        await notify(
            session,
            account_id=holder.id,
            template="security.registration_attempt",
            params={"kind": kind},
            # One an hour per contact tried: the e-mail's and then the phone's are both told.
            dedupe_key=f"registration-attempt:{holder.id}:{kind}:{now:%Y%m%d%H}",
        )
        await record_event(
            session,
            EventKind.registration_attempt_on_taken_contact,
            account_id=holder.id,
            client=client,
            success=False,
            details={"channel": channel},
            now=now,
        )
        return
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


def verify_purpose(channel: Channel) -> CodePurpose:
    return CodePurpose.verify_email if channel == "email" else CodePurpose.verify_phone


async def count_verification_send(
    db: Database, limits: RateLimits, account: Account, channel: Channel, now: datetime
) -> codes.CodeCount | None:
    """A signed-in customer's code send to the contact pending on `channel` (as `account` was
    read for the request), counted before the transaction that sends it: a read first tells a
    send too soon (not counted); None when nothing is pending there."""
    target = account.email_pending if channel == "email" else account.phone_pending
    if target is None:
        return None
    purpose = verify_purpose(channel)
    async with db.read() as s:
        too_soon = await codes.send_wait(s, account.id, purpose, target, now)
    return await codes.count_send(limits, account.id, purpose, target, too_soon=too_soon)


async def count_verification_check(
    limits: RateLimits, account: Account, channel: Channel
) -> codes.CodeCount | None:
    """A signed-in customer's check of the code of the contact pending on `channel`, counted
    before the transaction that checks it; None when nothing is pending there (nothing is
    checked)."""
    pending = account.email_pending if channel == "email" else account.phone_pending
    if pending is None:
        return None
    return await codes.count_check(limits, account.id, verify_purpose(channel))


async def resend_verification(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    channel: Channel,
    now: datetime,
    *,
    client: ClientInfo,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> None:
    pending = account.email_pending if channel == "email" else account.phone_pending
    if pending is None:
        raise ValidationFailed(N_("There is nothing to verify on this channel."), field="channel")
    await _send_verification(
        session, settings, account, channel, now, client, limits, (counted,) if counted else ()
    )


async def use_code(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    purpose: CodePurpose,
    code: str,
    *,
    target: str | None = None,
    client: ClientInfo | None,
    now: datetime,
    limits: RateLimits,
    hide_limit: bool = False,
    counted: codes.CodeCount | None = None,
) -> VerificationCode | Refused:
    """Check and use a code of `account`; a refusal is in the security log. Past the account's
    checks for this purpose, the code is not even looked at: `too-many-codes`, or with
    `hide_limit` (signed out, where the account must not show) the answer of a wrong code."""
    try:
        row = await codes.consume_code(
            session,
            settings.secret_keys,
            account_id=account.id,
            purpose=purpose,
            code=code,
            target=target,
            now=now,
            limits=limits,
            counted=counted,
        )
    except codes.TooManyCodes as exc:
        await record_event(
            session,
            EventKind.code_rejected,
            account_id=account.id,
            client=client,
            success=False,
            details={"purpose": purpose.value, "reason": exc.slug},
            now=now,
        )
        return Refused(codes.InvalidCode() if hide_limit else exc)
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
    return row


async def verify_contact(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    channel: Channel,
    code: str,
    *,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> Account | Refused:
    """Confirm a pending e-mail address or phone number with its code (its check `counted`
    before the transaction, by `count_verification_check`)."""
    pending = account.email_pending if channel == "email" else account.phone_pending
    purpose = verify_purpose(channel)
    if pending is None:
        return Refused(codes.InvalidCode())
    used = await use_code(
        session,
        settings,
        account,
        purpose,
        code,
        target=pending,
        client=client,
        now=now,
        limits=limits,
        counted=counted,
    )
    if isinstance(used, Refused):
        return used
    if await _holder_of(session, channel, pending, account.id) is not None:
        return Refused(ContactTaken(field="channel"))
    old = account.email if channel == "email" else account.phone
    old_verified = account.email_verified_at if channel == "email" else account.phone_verified_at
    try:
        async with session.begin_nested():
            if channel == "email":
                account.email, account.email_pending = pending, None
                account.email_verified_at = now
            else:
                account.phone, account.phone_pending = pending, None
                account.phone_verified_at = now
            account.updated_at = now
            await session.flush()
    except IntegrityError:
        # Another account verified the same address a moment before (both passed the check
        # above): taken. The code's use stands, as when the holder was found first.
        await session.refresh(account)
        return Refused(ContactTaken(field="channel"))
    if old and old != pending:
        # A code on its way to the address just replaced (a reset, an unlock) no longer opens
        # the account: whoever keeps the old mailbox or number is not the holder any more.
        await codes.void_codes(
            session, account.id, (CodePurpose.password_reset, CodePurpose.unlock), old, now
        )
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


async def credentials_to_verify(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    password: str,
    client: ClientInfo,
    now: datetime,
) -> uuid.UUID | Refused:
    """Verifying a contact without a session, first step (its own transaction): the login and
    password are checked exactly as at sign-in (`check_credentials`: the same lock-out, hourly
    cap, log and alert), so this is no way around them. The account's id once they match: only
    then is its code check counted (`codes.count_check`, before the second step's transaction),
    so that no one without the password uses up the account's checks."""
    checked = await check_credentials(
        session, settings, login=login, password=password, client=client, now=now, via="verify"
    )
    if isinstance(checked, Refused):
        return checked
    if checked.account.status == AccountStatus.locked:
        return Refused(AccountLocked())
    return checked.account.id


async def verify_contact_signed_out(
    session: AsyncSession,
    settings: Settings,
    *,
    account_id: uuid.UUID,
    channel: Channel,
    code: str,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> Account | Refused:
    """Verifying a contact without a session, second step: the code, for the account whose
    login and password `credentials_to_verify` has just checked (as it is now: locked or
    disabled meanwhile, refused as at sign-in). The device that verified (with the password and
    the code) is remembered as the account's: its first sign-in is no new device's."""
    account = await AccountRepository(session).get(account_id, lock=True)
    if account is None or account.status in SIGNED_OUT_FOR_GOOD:
        return Refused(InvalidCredentials())
    if account.status == AccountStatus.locked:
        return Refused(AccountLocked())
    verified = await verify_contact(
        session,
        settings,
        account,
        channel,
        code,
        client=client,
        now=now,
        limits=limits,
        counted=counted,
    )
    if not isinstance(verified, Refused):
        await _remember_device(session, settings, account.id, client, now)
    return verified


def check_profile_change(language: str | None, email: str | None, phone: str | None) -> None:
    """The rules a profile change must meet that need no account (the language offered, the
    new address's and number's form), checked in the order `update_profile` checks them, so
    that an edge refuses bad input before it counts the code it would send."""
    if language is not None and language not in LANGUAGES:
        raise ValidationFailed(
            N_("Choose one of: {languages}."), field="language", languages=", ".join(LANGUAGES)
        )
    if email is not None:
        normalize_email(email)
    if phone is not None:
        normalize_phone(phone)


async def count_contact_change_sends(
    db: Database,
    limits: RateLimits,
    account: Account,
    *,
    email: str | None,
    phone: str | None,
    now: datetime,
) -> tuple[codes.CodeCount, ...]:
    """The code sends of a profile change (one per new contact), counted before the
    transaction that makes it — once the password has been confirmed, so that a session
    without the password uses up none — as every code send is: a transaction run again is not
    counted twice, and a slow Redis holds no row. A contact equal to the current one sends
    nothing and is not counted; a read first tells a send too soon (not counted)."""
    changes: list[tuple[Channel, str]] = []
    if email is not None:
        changes.append(("email", normalize_email(email)))
    if phone is not None:
        changes.append(("sms", normalize_phone(phone)))
    counted: list[codes.CodeCount] = []
    for channel, value in changes:
        if value == (account.email if channel == "email" else account.phone):
            continue
        purpose = verify_purpose(channel)
        async with db.read() as s:
            too_soon = await codes.send_wait(s, account.id, purpose, value, now)
        counted.append(
            await codes.count_send(limits, account.id, purpose, value, too_soon=too_soon)
        )
    return tuple(counted)


async def request_contact_change(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    channel: Channel,
    raw: str,
    *,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> None:
    """Start replacing the e-mail address or phone number: a code goes to the new one, and the
    current one is told. The old contact stays until the code is entered. The current contact
    given again cancels a change pending on its channel: the pending contact is dropped and its
    code void (entered later, it would otherwise still move the account's contact)."""
    value = normalize_email(raw) if channel == "email" else normalize_phone(raw)
    current = account.email if channel == "email" else account.phone
    if value == current:
        await _cancel_contact_change(session, account, channel, client=client, now=now)
        return
    if channel == "email":
        account.email_pending = value
    else:
        account.phone_pending = value
    account.updated_at = now
    await session.flush()
    await _send_verification(
        session, settings, account, channel, now, client, limits, (counted,) if counted else ()
    )
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


async def cancel_pending_contact(
    session: AsyncSession,
    account: Account,
    channel: Channel,
    *,
    client: ClientInfo,
    now: datetime,
) -> None:
    """Cancel the contact pending on `channel`: a change of a verified one (the verified one
    stays), or one added where none was verified (it goes; its code is void). Refused, changing
    nothing: nothing pending (`422`, field `channel`), or the account's only contact — neither
    a verified one nor one pending on the other channel would be left to reach the holder by
    (`409 contact-only-one`, field `channel`: it is replaced instead)."""
    pending = account.email_pending if channel == "email" else account.phone_pending
    if pending is None:
        raise ValidationFailed(N_("There is nothing to verify on this channel."), field="channel")
    current = account.email if channel == "email" else account.phone
    others = (account.phone, account.phone_pending) if channel == "email" else (
        account.email, account.email_pending)
    if current is None and not any(others):
        raise OnlyContactPending(field="channel")
    await _cancel_contact_change(session, account, channel, client=client, now=now)


async def _cancel_contact_change(
    session: AsyncSession,
    account: Account,
    channel: Channel,
    *,
    client: ClientInfo,
    now: datetime,
) -> None:
    """Drop the contact pending on `channel`, if any, and void the codes sent to it."""
    pending = account.email_pending if channel == "email" else account.phone_pending
    if pending is None:
        return
    if channel == "email":
        account.email_pending = None
    else:
        account.phone_pending = None
    account.updated_at = now
    await session.flush()
    await codes.void_codes(session, account.id, (verify_purpose(channel),), pending, now)
    await record_event(
        session,
        EventKind.contact_change_requested,
        account_id=account.id,
        client=client,
        details={"channel": channel, "cancelled": True},
        now=now,
    )


# --------------------------------------------------------------------------------------------
# Signing in


@dataclass(frozen=True, slots=True)
class SignedIn:
    account: Account
    issued: IssuedSession
    new_device: bool
    passkey_step: bool
    """Two-step sign-in with a passkey is on (the answer's `two_step_method`)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A login name and password that matched, with the two throttle rows they went through
    (locked until the transaction ends)."""

    account: Account
    name_row: LoginThrottle
    account_row: LoginThrottle


async def check_credentials(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    password: str,
    client: ClientInfo,
    now: datetime,
    via: Literal["login", "verify"] = "login",
) -> Credentials | Refused:
    """The one check of a login name and password, wherever one is given signed out.

    Two throttle rows count the failures: the login name's (known or unknown alike) and, when
    the name is an account's, the account's (whichever of its names is used). The name's
    lock-out answers `too-many-attempts`. The account's lock-out, reached through another of its
    names, answers like a wrong password, without looking at it (still at the cost of a hash):
    a `429` there would tell that this name belongs to an account already locked out. So the
    password of an account is never tried more than its own row allows — 5 at once, then ever
    longer waits, and never more than 100 failures an hour — whichever names are used. Every
    failure is in the security log; the account's holder is alerted at the fifth in a row."""
    secret = settings.secret_key
    kind, value = normalize_login(login)
    # The account locked first — the order a reset, a lock or a change of password takes it in
    # (then the names' rows, then its own) — and read as it is once held: a sign-in that waited
    # for one of them sees what it changed (the new password, `locked`, the second factor's
    # last step), never the account as it was.
    account = await _held_by_login(session, login)
    name_row = await throttle.load(session, throttle.name_key(secret, kind, value), now)
    account_row = (
        await throttle.load(session, throttle.account_key(secret, account.id), now)
        if account is not None
        else None
    )
    details = {"via": via} if via != "login" else {}
    locked_out = throttle.refusal(name_row, now)
    if locked_out is not None:
        await record_event(
            session,
            EventKind.login_locked_out,
            account_id=account.id if account else None,
            client=client,
            success=False,
            details=details,
            now=now,
        )
        return Refused(locked_out)
    if account_row is not None and throttle.refusal(account_row, now) is not None:
        await verified(None, password)  # the same work as a check; this password is not tried
        return await _failed_login(
            session, name_row, None, account, client, now, InvalidCredentials(), via=via
        )
    password_ok = await verified(account.password_hash if account else None, password)
    if (
        account is None
        or account_row is None
        or not password_ok
        or account.status in SIGNED_OUT_FOR_GOOD
    ):
        return await _failed_login(
            session, name_row, account_row, account, client, now, InvalidCredentials(), via=via
        )
    return Credentials(account, name_row, account_row)


async def login(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    password: str,
    second_factor: str | None,
    client: ClientInfo,
    now: datetime,
    replacing: str | None = None,
    offer_again: bool = False,
) -> SignedIn | Refused:
    """Sign in. `replacing`: the session token the client held until now (a browser's session
    cookie, which the new session's takes the place of); that session is ended with the
    sign-in, whoever's it was, rather than left valid on the server (ASVS 3.3.1). A refused
    sign-in ends nothing. `offer_again`: a wrong second factor after the right password carries
    a fresh passkey ceremony for this pending sign-in (`InvalidSecondFactor.passkey`), bound,
    timed and spent as the first one — for the portal's second page, shown again."""
    checked = await check_credentials(
        session, settings, login=login, password=password, client=client, now=now
    )
    if isinstance(checked, Refused):
        return checked
    account = checked.account
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
    if await two_step_on(session, account):
        if not second_factor:
            await record_event(
                session, EventKind.mfa_required, account_id=account.id, client=client, now=now
            )
            return Refused(await _second_step_due(session, settings, account, login, now))
        if not await _second_factor_ok(session, settings, account, second_factor, client, now):
            wrong = InvalidSecondFactor(field="second_factor")
            if offer_again:
                from simcharge.auth.second_step import second_step_offer  # builds on this module

                wrong.passkey = await second_step_offer(
                    session, settings, account, now=now, login_kind=normalize_login(login)[0]
                )
            return await _failed_login(
                session, checked.name_row, checked.account_row, account, client, now, wrong
            )
        mfa = True
    throttle.clear(checked.name_row, now)
    throttle.clear(checked.account_row, now)
    if needs_rehash(account.password_hash):
        account.password_hash = await hashed(password)
    return await start_session(
        session, settings, account, client=client, now=now, mfa=mfa, replacing=replacing
    )


async def start_session(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    client: ClientInfo,
    now: datetime,
    mfa: bool,
    replacing: str | None,
    method: str | None = None,
) -> SignedIn:
    """The session of a sign-in that passed every check (a password and second factor, or a
    passkey: `method`), opened the same way whichever it was: the session it replaces ends, the
    device is noted and a new one alerted, the sign-in logged."""
    issued = await open_session(
        session,
        settings.secret_key,
        account_id=account.id,
        client=client,
        policy=policy(settings),
        now=now,
        mfa=mfa,
    )
    if replacing:
        replaced = await revoke_token(session, settings.secret_key, replacing, "replaced", now)
        if replaced is not None:
            await record_event(
                session,
                EventKind.logout,
                account_id=replaced.account_id,
                client=client,
                details={"reason": "replaced", "session_id": str(replaced.id)},
                now=now,
            )
    new_device = await _remember_device(session, settings, account.id, client, now)
    await record_event(
        session,
        EventKind.login,
        account_id=account.id,
        client=client,
        details={"session_id": str(issued.session.id), "mfa": mfa}
        | ({"method": method} if method else {}),
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
                "device": client.device_summary,
                "ip": client.ip or "?",
                "time": now.isoformat(),
            },
        )
    return SignedIn(
        account, issued, new_device, await passkey_second_factor_on(session, account)
    )


async def _failed_login(
    session: AsyncSession,
    name_row: LoginThrottle,
    account_row: LoginThrottle | None,
    account: Account | None,
    client: ClientInfo,
    now: datetime,
    error: InvalidCredentials | InvalidSecondFactor,
    *,
    via: str = "login",
) -> Refused:
    """Count a failure on the name's row and, when the password (or second factor) was tried,
    on the account's row; log it; alert the holder at the fifth failure in a row."""
    throttle.count_failure(name_row, now)
    if account_row is not None:
        throttle.count_failure(account_row, now)
    details: dict[str, object] = {
        "reason": error.slug if account_row is not None or account is None else "account-throttled",
        "consecutive_failures": (account_row or name_row).failures,
    }
    if via != "login":
        details["via"] = via
    await record_event(
        session,
        EventKind.login,
        account_id=account.id if account else None,
        client=client,
        success=False,
        details=details,
        now=now,
    )
    if account is not None and account_row is not None:
        await _alert_failures(session, account, account_row, now)
    return Refused(error)


async def _alert_failures(
    session: AsyncSession, account: Account, row: LoginThrottle, now: datetime
) -> None:
    """The holder hears of the fifth failure in a row (at most once an hour)."""
    if row.failures == throttle.FREE_FAILURES:
        await notify(
            session,
            account_id=account.id,
            template="security.failed_logins",
            params={"count": row.failures},
            dedupe_key=f"failed-logins:{account.id}:{now:%Y%m%d%H}",
        )


async def two_step_on(session: AsyncSession, account: Account) -> bool:
    """Whether a sign-in with the password asks a second step: TOTP is on, or two-step sign-in
    with a passkey (`PasskeySecondFactor`)."""
    return account.totp_enabled_at is not None or await passkey_second_factor_on(session, account)


async def passkey_second_factor_on(session: AsyncSession, account: Account) -> bool:
    return await session.get(PasskeySecondFactor, account.id) is not None


async def _second_step_due(
    session: AsyncSession, settings: Settings, account: Account, login: str, now: datetime
) -> SecondFactorRequired:
    """The refusal that asks for the second step, saying which ones the account has: its
    authenticator app, its passkeys (with the pending sign-in's ceremony, which remembers the
    kind of name the password was given under: `login`'s), a recovery code."""
    # `second_step` builds on this module (sessions, throttles): imported where used.
    from simcharge.auth.second_step import second_step_offer

    offer = await second_step_offer(
        session, settings, account, now=now, login_kind=normalize_login(login)[0]
    )
    methods = (["totp"] if account.totp_enabled_at is not None else []) + (
        ["passkey"] if offer is not None else []
    )
    if account.totp_enabled_at is None:
        detail = N_("Confirm with one of your passkeys, or enter a recovery code.")
    elif offer is not None:
        detail = N_(
            "Enter the code from your authenticator app or a recovery code, or confirm with "
            "one of your passkeys."
        )
    else:
        detail = None
    return SecondFactorRequired(
        detail, field="second_factor", methods=[*methods, "recovery_code"], passkey=offer
    )


LOGIN_KINDS = frozenset({"username", "email", "phone"})
"""The kinds of login name (`normalize_login`), each with its own throttle row."""


@dataclass(frozen=True, slots=True)
class SecondStepRows:
    """The throttle rows (locked) a second step given apart from the password (a passkey's
    answer) counts on — those a wrong code given with the password counts on (`login`): the row
    of the name the password was given under (None when it is not known, or the account has no
    name of that kind any more) and the account's."""

    name: LoginThrottle | None
    account: LoginThrottle


def _name_key_of(secret: str, account: Account, kind: str | None) -> str | None:
    """The row key of the account's name of this kind (`username`, `email`, `phone`)."""
    value = {"username": account.username, "email": account.email, "phone": account.phone}.get(
        kind or ""
    )
    return throttle.name_key(secret, kind, value) if kind and value else None


async def second_step_throttle(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    now: datetime,
    *,
    login_kind: str | None,
) -> SecondStepRows:
    """The rows a second step given apart from the password counts on (`SecondStepRows`),
    locked in the order a sign-in takes them (the name's, then the account's; the account is
    held already). `login_kind`: the kind of name the password was given under."""
    key = _name_key_of(settings.secret_key, account, login_kind)
    name_row = await throttle.load(session, key, now) if key is not None else None
    account_row = await throttle.load(
        session, throttle.account_key(settings.secret_key, account.id), now
    )
    return SecondStepRows(name_row, account_row)


async def second_step_locked_out(
    session: AsyncSession,
    account: Account,
    rows: SecondStepRows,
    client: ClientInfo,
    now: datetime,
) -> Refused | None:
    """The refusal of a second step while its rows are locked out, before anything is looked at
    or counted — as a wrong code's sign-in is refused then (`check_credentials`): the name's row
    answers `too-many-attempts` with its `Retry-After` (logged `login_locked_out`); the
    account's, reached through another of its names, `invalid-second-factor`. None: it may try."""
    locked_out = throttle.refusal(rows.name, now) if rows.name is not None else None
    if locked_out is not None:
        await record_event(
            session, EventKind.login_locked_out, account_id=account.id, client=client,
            success=False, details={"method": "password+passkey"}, now=now,
        )  # fmt: skip
        return Refused(locked_out)
    if throttle.refusal(rows.account, now) is not None:
        return await second_step_failed(
            session, account, rows, client, now, reason="account-throttled", counted=False
        )
    return None


async def second_step_failed(
    session: AsyncSession,
    account: Account,
    rows: SecondStepRows,
    client: ClientInfo,
    now: datetime,
    *,
    reason: str,
    counted: bool = True,
) -> Refused:
    """A second step that failed, refused as a wrong code is (`InvalidSecondFactor`) and, when
    `counted`, counted as one on the same rows (the name's and the account's): the same growing
    delay, hourly cap, lock-out answer and alert, whichever second step is guessed."""
    if counted:
        if rows.name is not None:
            throttle.count_failure(rows.name, now)
        throttle.count_failure(rows.account, now)
    await record_event(
        session, EventKind.login, account_id=account.id, client=client, success=False,
        details={"method": "password+passkey", "reason": reason,
                 "consecutive_failures": rows.account.failures},
        now=now,
    )  # fmt: skip
    if counted:
        await _alert_failures(session, account, rows.account, now)
    return Refused(InvalidSecondFactor(field="credential"))


async def second_step_passed(
    session: AsyncSession, settings: Settings, account: Account, rows: SecondStepRows,
    now: datetime,
) -> None:  # fmt: skip
    """The sign-in passed both steps: its failures are forgotten, on the account's row and on
    the rows of each of its names (as a password+code sign-in clears the name it used)."""
    throttle.clear(rows.account, now)
    await throttle.clear_keys(session, _name_keys(settings.secret_key, account), now)


async def _second_factor_ok(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    code: str,
    client: ClientInfo,
    now: datetime,
) -> bool:
    """A code from the authenticator app (only once confirmed: a set-up not finished signs in
    nothing) or an unused recovery code, each read with the key ring (a rotation of the secret
    key locks no one out). An app secret no key of the ring opens (a key dropped too early):
    a recovery code still signs in; anything else is 503 `second-factor-unavailable`, not a
    wrong code — nothing is counted against the person (README, "Rotating the secret key")."""
    broken = False
    if account.totp_enabled_at is not None:
        try:
            accepted = totp.accept_totp(settings.secret_keys, account, code, now)
        except SealBroken:
            accepted, broken = False, True
        if accepted:
            await session.flush()
            return True
    left = await totp.use_recovery_code(session, settings.secret_keys, account.id, code, now)
    if left is None:
        if broken:
            raise SecondFactorUnavailable()
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
    not the account's first device). A device noted under an earlier secret key of the ring
    (`SIMCHARGE_SECRET_KEY_PREVIOUS`) is known still, and noted again under the current one: a
    rotation of the key does not make every customer's next sign-in "from a new device"."""
    digest, *earlier = (client.device_hash(key) for key in settings.secret_keys)
    known = (
        (await session.execute(select(KnownDevice).where(KnownDevice.account_id == account_id)))
        .scalars()
        .all()
    )
    for device in known:
        if device.device_hash == digest:
            device.last_seen_at = now
            return False
    for device in known:
        if device.device_hash in earlier:
            device.device_hash, device.last_seen_at = digest, now
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


def _signed_out_code_for(account: Account | None, purpose: CodePurpose) -> bool:
    """Whether someone not signed in may get, or use, a code of `purpose` for this account: a
    password reset for any account not disabled, an unlock for one its holder locked."""
    if account is None:
        return False
    if purpose == CodePurpose.unlock:
        return account.status == AccountStatus.locked and account.lock_reason != "staff"
    return account.status not in SIGNED_OUT_FOR_GOOD


def _verified_target(account: Account, channel: Channel) -> str | None:
    if channel == "email":
        return account.email if account.email_verified_at else None
    return account.phone if account.phone_verified_at else None


async def count_signed_out_send(
    db: Database,
    limits: RateLimits,
    *,
    login: str,
    purpose: CodePurpose,
    channel: Channel,
    now: datetime,
) -> codes.CodeCount | None:
    """A signed-out request's code send (a reset, an unlock) counted against the account's
    limits before the transaction that sends it, after a read of the account by its login
    (nothing counted when no code would go: an unknown login, no verified contact there, a send
    too soon). Answers nothing: the edge answers alike whatever happened."""
    async with db.read() as s:
        account = await find_by_login(s, login)
        if not _signed_out_code_for(account, purpose):
            return None
        assert account is not None
        target = _verified_target(account, channel)
        if target is None:
            return None
        too_soon = await codes.send_wait(s, account.id, purpose, target, now)
    return await codes.count_send(limits, account.id, purpose, target, too_soon=too_soon)


async def count_signed_out_check(
    db: Database, limits: RateLimits, *, login: str, purpose: CodePurpose
) -> codes.CodeCount | None:
    """A signed-out request's code check (a reset, an unlock) counted against the account's
    limits before the transaction that checks it, after a read of the account by its login
    (nothing counted when no code would be looked at)."""
    async with db.read() as s:
        account = await find_by_login(s, login)
    if account is None or not _signed_out_code_for(account, purpose):
        return None
    return await codes.count_check(limits, account.id, purpose)


async def forgot_password(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    channel: Channel,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> None:
    """Send a reset code to the account's verified contact on `channel`, if there is one (its
    send `counted` before the transaction by `count_signed_out_send`).
    Says nothing either way (the edge answers 202 to everyone), not even when the account has
    had too many codes lately (then none is sent, and the refusal is in its security log)."""
    account = await find_by_login(session, login)
    if account is None or not _signed_out_code_for(account, CodePurpose.password_reset):
        return
    await _send_signed_out_code(
        session,
        settings,
        account,
        CodePurpose.password_reset,
        channel,
        EventKind.password_reset_requested,
        client=client,
        now=now,
        limits=limits,
        counted=counted,
    )


async def _send_signed_out_code(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    purpose: CodePurpose,
    channel: Channel,
    kind: EventKind,
    *,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> None:
    """A code to the account's verified contact on `channel`, for someone not signed in: every
    outcome answers alike, so none raises."""
    target = _verified_target(account, channel)
    if target is None:
        return
    try:
        issued = await codes.issue_code(
            session,
            settings.secret_key,
            account_id=account.id,
            purpose=purpose,
            channel=channel,
            target=target,
            now=now,
            limits=limits,
            counted=counted,
        )
    except codes.ResendTooSoon:
        return
    except codes.TooManyCodes as exc:
        await record_event(
            session,
            kind,
            account_id=account.id,
            client=client,
            success=False,
            details={"channel": channel, "reason": exc.slug},
            now=now,
        )
        return
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
    await record_event(
        session, kind, account_id=account.id, client=client, details={"channel": channel}, now=now
    )


def _login_as_email(login: str) -> str | None:
    kind, value = normalize_login(login)
    return value if kind == "email" else None


async def reset_password(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    code: str,
    new_password: str,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> Account | Refused:
    """Set a new password with a reset code (its check `counted` before the transaction by
    `count_signed_out_check`). The new password's policy is checked before the
    account is looked up (against the login given), so a known and an unknown login answer
    alike; the checks against the account's own username and address come once the code has
    proved who is asking (and undo the code's use: the transaction is rolled back)."""
    check_password_policy(
        new_password, username=login.strip(), email=_login_as_email(login), field="new_password"
    )
    account = await _held_by_login(session, login)
    if account is None or not _signed_out_code_for(account, CodePurpose.password_reset):
        return Refused(codes.InvalidCode())
    used = await use_code(
        session,
        settings,
        account,
        CodePurpose.password_reset,
        code,
        client=client,
        now=now,
        limits=limits,
        hide_limit=True,
        counted=counted,
    )
    if isinstance(used, Refused):
        return used
    check_password_policy(
        new_password, username=account.username, email=account.email, field="new_password"
    )
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
    """A new password; the lock-outs of the account and of its names are lifted (names first,
    then the account: the order sign-in takes them in)."""
    account.password_hash = await hashed(password)
    account.password_changed_at = account.updated_at = now
    secret = settings.secret_key
    await throttle.clear_keys(session, _name_keys(secret, account), now)
    await throttle.clear_keys(session, [throttle.account_key(secret, account.id)], now)
    await session.flush()


@dataclass(frozen=True, slots=True)
class Reauthentication:
    """A re-authentication counted against its limits (`count_reauthentication`) before the
    transaction that checks it, so that a slow or hung Redis holds no row. `over`: the limit
    it passed, refused in the transaction (logged there with the account's failures)."""

    over: TooManyAttempts | None = None


async def count_reauthentication(
    limits: RateLimits, client: ClientInfo, account_id: uuid.UUID
) -> Reauthentication:
    """Count one re-authentication per client address and per account, outside any
    transaction; `ServiceUnavailable` when the counts cannot be reached."""
    try:
        await limits.hit("reauth", client.ip)
        await limits.hit("account-reauth", str(account_id))
    except TooManyAttempts as exc:
        return Reauthentication(exc)
    return Reauthentication()


async def reauthenticate(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    check: Callable[[], Awaitable[NotAuthenticated | None]],
    *,
    kind: EventKind,
    client: ClientInfo,
    now: datetime,
    counted: Reauthentication,
) -> Refused | None:
    """Ask a signed-in customer again for their password or a code (`check` answers the error,
    or None when it matched), guarded like a sign-in: per client address and per account
    (`counted` before the transaction), and on the account's own throttle row — failures there
    count with sign-in failures, so the same growing delay, hourly cap and alert apply
    whichever way the password or second factor is guessed. A refusal is logged as a failed `kind`."""

    async def refuse(error: NotAuthenticated | TooManyAttempts) -> Refused:
        details: dict[str, object] = {"reason": error.slug}
        if row is not None:
            details["consecutive_failures"] = row.failures
        await record_event(
            session,
            kind,
            account_id=account.id,
            client=client,
            success=False,
            details=details,
            now=now,
        )
        return Refused(error)

    row: LoginThrottle | None = None
    if counted.over is not None:
        return await refuse(counted.over)
    row = await throttle.load(session, throttle.account_key(settings.secret_key, account.id), now)
    locked_out = throttle.refusal(row, now)
    if locked_out is not None:
        return await refuse(locked_out)
    error = await check()
    if error is None:
        return None
    throttle.count_failure(row, now)
    refused = await refuse(error)
    await _alert_failures(session, account, row, now)
    return refused


def _password_check(
    account: Account, password: str, field: str
) -> Callable[[], Awaitable[NotAuthenticated | None]]:
    async def check() -> NotAuthenticated | None:
        if await verified(account.password_hash, password):
            return None
        return InvalidCredentials(N_("The current password is wrong."), field=field)

    return check


async def confirm_password(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    password: str,
    *,
    field: str,
    kind: EventKind,
    client: ClientInfo,
    now: datetime,
    counted: Reauthentication,
) -> Refused | None:
    """The signed-in customer's password asked again before a sensitive change (see
    `reauthenticate`: throttled and counted as sign-in failures are); None when it matched."""
    return await reauthenticate(
        session, settings, account, _password_check(account, password, field),
        kind=kind, client=client, now=now, counted=counted,
    )  # fmt: skip


async def confirm_both_factors(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    password: str,
    code: str,
    *,
    kind: EventKind,
    client: ClientInfo,
    now: datetime,
    counted: Reauthentication,
    passkey: Callable[[], Awaitable[bool]] | None = None,
) -> Refused | None:
    """The password again and, when two-step verification is on, its second factor: before
    adding a way to sign in that counts as both factors (a passkey), or turning two-step sign-in
    with a passkey off. With the authenticator app on: a current code or a recovery code
    (`code`). With two-step sign-in with a passkey on: an answer of one of the account's
    passkeys (`passkey`, the check of `passkeys.confirmed_by`) or a recovery code. The password
    alone would let whoever holds a stolen session and the password add their own passkey (or
    drop the passkey step) and skip the second factor for good, which turning the app off
    (`disable_totp`) already refuses. A wrong or missing one: `invalid-second-factor`, field
    `credential` when a passkey's answer was given, else `code`."""
    password_check = _password_check(account, password, "password")
    passkey_step = await passkey_second_factor_on(session, account)

    async def check() -> NotAuthenticated | None:
        wrong = await password_check()
        if wrong is not None:
            return wrong
        if account.totp_enabled_at is None and not passkey_step:
            return None
        if passkey is not None:
            return None if await passkey() else InvalidSecondFactor(field="credential")
        if code and await _second_factor_ok(session, settings, account, code, client, now):
            return None
        return InvalidSecondFactor(field="code")

    return await reauthenticate(
        session, settings, account, check, kind=kind, client=client, now=now, counted=counted
    )


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
    counted: Reauthentication,
) -> str | Refused:
    """Change the password (the current one is required); other sessions end, this one gets a
    new token, which is returned."""
    refused = await reauthenticate(
        session,
        settings,
        account,
        _password_check(account, current, "current_password"),
        kind=EventKind.password_changed,
        client=client,
        now=now,
        counted=counted,
    )
    if refused is not None:
        return refused
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
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> None:
    """Send an unlock code to a verified contact of a self-locked account (its send `counted`
    before the transaction by `count_signed_out_send`). Silent otherwise."""
    account = await find_by_login(session, login)
    if account is None or not _signed_out_code_for(account, CodePurpose.unlock):
        return
    await _send_signed_out_code(
        session,
        settings,
        account,
        CodePurpose.unlock,
        channel,
        EventKind.unlock_requested,
        client=client,
        now=now,
        limits=limits,
        counted=counted,
    )


async def unlock(
    session: AsyncSession,
    settings: Settings,
    *,
    login: str,
    code: str,
    client: ClientInfo,
    now: datetime,
    limits: RateLimits,
    counted: codes.CodeCount | None = None,
) -> Account | Refused:
    """Unlock a self-locked account with its code (the check `counted` before the transaction
    by `count_signed_out_check`)."""
    account = await _held_by_login(session, login)
    if account is None or not _signed_out_code_for(account, CodePurpose.unlock):
        return Refused(codes.InvalidCode())
    used = await use_code(
        session,
        settings,
        account,
        CodePurpose.unlock,
        code,
        client=client,
        now=now,
        limits=limits,
        hide_limit=True,
        counted=counted,
    )
    if isinstance(used, Refused):
        return used
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
    # Nobody was signed in while it was locked; a session that says otherwise does not outlive
    # the unlock (the holder signs in again).
    ended = await revoke_all(session, account.id, reason="account_unlocked", now=now)
    await record_event(
        session,
        EventKind.account_unlocked,
        account_id=account.id,
        client=client,
        details={"by": by, "sessions_ended": ended} if ended else {"by": by},
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
    counted: Reauthentication,
) -> totp.Enrolment | Refused:
    refused = await reauthenticate(
        session,
        settings,
        account,
        _password_check(account, password, "password"),
        kind=EventKind.totp_enrolment_started,
        client=client,
        now=now,
        counted=counted,
    )
    if refused is not None:
        return refused
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
    counted: Reauthentication,
) -> TotpEnabled | Refused:
    if account.totp_enabled_at is not None:
        raise Conflict(N_("Two-step verification is already on."))
    if account.totp_secret_sealed is None:
        raise Conflict(N_("Start setting up two-step verification first."))

    async def check() -> NotAuthenticated | None:
        try:
            accepted = totp.accept_totp(settings.secret_keys, account, code, now)
        except SealBroken:
            # A set-up sealed under a key since dropped: start it again (a new secret).
            raise Conflict(N_("Start setting up two-step verification first.")) from None
        if accepted:
            return None
        # The set-up has no recovery codes yet: the sign-in's wording would speak of them.
        return InvalidSecondFactor(
            N_("That code is not right. Enter the code your app shows now."), field="code"
        )

    refused = await reauthenticate(
        session,
        settings,
        account,
        check,
        kind=EventKind.totp_enabled,
        client=client,
        now=now,
        counted=counted,
    )
    if refused is not None:
        return refused
    account.totp_enabled_at = account.updated_at = now
    replaced = await session.get(PasskeySecondFactor, account.id)
    if replaced is not None:
        # One switch for two-step verification: with the app on, a passkey is still accepted
        # at the second step; turning the app off later turns two-step off altogether.
        await session.delete(replaced)
        await record_event(
            session, EventKind.passkey_second_factor_disabled, account_id=account.id,
            client=client, details={"reason": "totp"}, now=now,
        )  # fmt: skip
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
    counted: Reauthentication,
) -> Refused | None:
    """Turn two-step verification off (or drop an unconfirmed set-up): the password, and the
    authenticator or a recovery code when it is on."""
    if account.totp_enabled_at is None and account.totp_secret_sealed is None:
        raise Conflict(N_("Two-step verification is not on."))
    was_on = account.totp_enabled_at is not None
    password_check = _password_check(account, password, "password")

    async def check() -> NotAuthenticated | None:
        wrong = await password_check()
        if wrong is not None:
            return wrong
        if was_on and not await _second_factor_ok(session, settings, account, code, client, now):
            return InvalidSecondFactor(field="code")
        return None

    refused = await reauthenticate(
        session,
        settings,
        account,
        check,
        kind=EventKind.totp_disabled,
        client=client,
        now=now,
        counted=counted,
    )
    if refused is not None:
        return refused
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
    counted: Reauthentication,
) -> list[str] | Refused:
    """New recovery codes (the old ones stop working); the holder is alerted. For the app's
    two-step verification and for two-step sign-in with a passkey alike."""
    if not await two_step_on(session, account):
        raise Conflict(N_("Two-step verification is not on."))
    refused = await reauthenticate(
        session,
        settings,
        account,
        _password_check(account, password, "password"),
        kind=EventKind.recovery_codes_regenerated,
        client=client,
        now=now,
        counted=counted,
    )
    if refused is not None:
        return refused
    recovery = await totp.new_recovery_codes(session, settings.secret_key, account.id, now)
    await record_event(
        session, EventKind.recovery_codes_regenerated, account_id=account.id, client=client, now=now
    )
    await notify(session, account_id=account.id, template="security.recovery_codes_regenerated")
    return recovery
