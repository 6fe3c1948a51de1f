"""Staff users: creation, sign-in with password and a mandatory TOTP code, sessions.

A sign-in is two steps. The password opens a session with `mfa = False`, which opens nothing
but the second step: enrolment of an authenticator app at the first sign-in (the secret is shown
once, confirmed by a code), a code afterwards. Then the session gets a new token and `mfa`."""

from __future__ import annotations

import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import segno
import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.passwords import check_password_policy, hashed, verified
from simcharge.auth.service import normalize_email
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.models import Role, StaffPasskey, StaffSession, StaffUser
from simcharge.config import Settings
from simcharge.errors import (
    Conflict,
    Forbidden,
    NotAuthenticated,
    NotFound,
    Refused,
    SecondFactorUnavailable,
    TooManyAttempts,
    ValidationFailed,
)
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import SealBroken, keyed_hash, seal, unseal_any
from simcharge.kit.i18n import normalize_language
from simcharge.kit.translations import N_
from simcharge.notifications.service import tell_staff
from simcharge.tickets.service import release_of

MAX_FAILURES = 5
LOCK_FOR = timedelta(minutes=15)
TOUCH_EVERY = timedelta(seconds=60)
STEP = 30

log = structlog.get_logger("simcharge.backoffice")


class StaffLoginFailed(NotAuthenticated):
    slug = "staff-login-failed"
    title = N_("The username, password or code is not correct.")


class StaffSessionEnded(NotAuthenticated):
    slug = "staff-session-ended"
    title = N_("Your staff session has ended; please sign in again.")


class StaffPasswordChangeRequired(Forbidden):
    slug = "staff-password-change-required"
    title = N_(
        "An administrator set your password: choose your own password before you do anything else."
    )


class StaffExists(Conflict):
    slug = "staff-exists"
    title = N_("A staff member with this username already exists.")


@dataclass(frozen=True, slots=True)
class IssuedStaffSession:
    row: StaffSession
    token: str


def policy_of(settings: Settings) -> tuple[timedelta, timedelta]:
    return (
        timedelta(minutes=settings.staff_session_idle_minutes),
        timedelta(hours=settings.staff_session_absolute_hours),
    )


def reset_password_expired(settings: Settings, staff: StaffUser, now: datetime) -> bool:
    """Whether the password someone else set for this member (an admin's reset) is past its
    time (`staff_reset_password_hours`): it no longer signs in, and a session opened with it
    (which may only change it) ends."""
    since = staff.password_set_by_other_at
    return since is not None and since + timedelta(hours=settings.staff_reset_password_hours) <= now


def _token_hash(secret: str, token: str) -> str:
    return keyed_hash(secret, "staff-session", token)


def csrf_token(secret: str, session_id: uuid.UUID) -> str:
    return keyed_hash(secret, "staff-csrf", str(session_id))


DISPLAY_NAME_MAX = 128
"""The longest name a staff member is shown by (`staff_users.display_name`)."""


async def create_staff(
    session: AsyncSession,
    *,
    username: str,
    display_name: str,
    role: str,
    password: str,
    email: str | None = None,
    language: str = "en",
    set_by_other: bool = False,
    now: datetime | None = None,
) -> StaffUser:
    """A new staff member. `set_by_other`: the password is someone else's choice (an admin
    creating an account for a colleague), so the member must change it at first use and it
    expires as a reset one does."""
    name = username.strip().casefold()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise ValidationFailed(
            N_("Use letters, digits, '.', '_' or '-' (at most 64)."), field="username"
        )
    try:
        chosen = Role(role)
    except ValueError:
        raise ValidationFailed(N_("Unknown role."), field="role") from None
    shown = display_name.strip() or name
    if len(shown) > DISPLAY_NAME_MAX or not shown.isprintable():
        raise ValidationFailed(
            N_("At most {limit} characters, none of them control characters."),
            field="display_name", limit=DISPLAY_NAME_MAX,
        )
    if email is not None:
        email = normalize_email(email)
    check_password_policy(password, username=name, email=email)
    exists = await session.execute(select(StaffUser.id).where(StaffUser.username == name))
    if exists.first() is not None:
        raise StaffExists(field="username")
    staff = StaffUser(
        username=name,
        display_name=shown,
        email=email,
        role=chosen.value,
        language=normalize_language(language) or "en",
        password_hash=await hashed(password),
        password_set_by_other_at=(now or utcnow()) if set_by_other else None,
    )
    session.add(staff)
    await session.flush()
    return staff


async def open_staff_session(
    session: AsyncSession,
    settings: Settings,
    staff: StaffUser,
    *,
    ip: str | None,
    user_agent: str | None,
    now: datetime,
    mfa: bool,
) -> IssuedStaffSession:
    token = secrets.token_urlsafe(32)
    _, absolute = policy_of(settings)
    if not mfa:
        # One half-open session (password given, code not yet) per staff member: each would
        # otherwise bring its own tries at the code.
        await _end_half_open(session, staff.id, now)
    row = StaffSession(
        staff_id=staff.id,
        token_hash=_token_hash(settings.secret_key, token),
        mfa=mfa,
        created_at=now,
        last_seen_at=now,
        expires_at=now + absolute,
        ip=ip,
        user_agent=(user_agent or "")[:255] or None,
    )
    session.add(row)
    await session.flush()
    return IssuedStaffSession(row, token)


async def failed_sign_in_name(session: AsyncSession, typed: str) -> str:
    """Who a failed sign-in is recorded as: `staff:<username>` when the name typed is a staff
    member's, else `anonymous` — what was typed may be a password in the wrong field, and the
    audit log keeps everything for good."""
    name = typed.strip().casefold()
    if not name or "\x00" in name:
        return "anonymous"
    known = (await session.execute(select(StaffUser.id).where(StaffUser.username == name))).first()
    return f"staff:{name}" if known else "anonymous"


async def check_password(
    session: AsyncSession, settings: Settings, username: str, password: str, now: datetime
) -> StaffUser | None:
    """The staff member if the password is right (and the account active and not locked, and
    the password, if someone else set it, not past its time). The member's row is locked before
    anything else, as on every path (their row, then their sessions), and read as it is once
    held: two wrong passwords at once count two failures."""
    if "\x00" in username:
        await verified(None, password)
        return None
    staff = (
        await session.execute(
            select(StaffUser)
            .where(StaffUser.username == username.strip().casefold())
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    ok = await verified(staff.password_hash if staff else None, password)
    if staff is None:
        return None
    if not staff.active or (staff.locked_until is not None and staff.locked_until > now):
        return None
    if ok and reset_password_expired(settings, staff, now):
        # The right password, but an admin's one left unused too long: refused as a wrong one
        # (the sign-in page says no more), and the reason is in the log for the admins.
        log.warning("staff.reset_password_expired", staff_id=str(staff.id),
                    set_at=staff.password_set_by_other_at.isoformat()
                    if staff.password_set_by_other_at else None)
        return None
    if not ok:
        staff.failed_logins += 1
        if staff.failed_logins >= MAX_FAILURES:
            staff.locked_until, staff.failed_logins = now + LOCK_FOR, 0
        await session.flush()
        return None
    return staff


TOTP_PURPOSE = "staff-totp"


def _secret(settings: Settings, staff: StaffUser) -> tuple[str, bool] | None:
    """The member's TOTP secret, read with the key ring, and whether the current key sealed it.
    `SealBroken` when no key of the ring opens it."""
    if not staff.totp_secret_sealed:
        return None
    plaintext, current = unseal_any(settings.secret_keys, TOTP_PURPOSE, staff.totp_secret_sealed)
    return plaintext.decode(), current


def start_enrolment(settings: Settings, staff: StaffUser) -> tuple[str, str, str]:
    """A new secret for a staff member not yet enrolled: (secret, otpauth URI, QR data URI).
    Kept sealed on the row until a code confirms it."""
    secret = pyotp.random_base32(32)
    uri = pyotp.TOTP(secret).provisioning_uri(
        name=staff.username, issuer_name=f"{settings.operator_name} back office"
    )
    staff.totp_secret_sealed = seal(settings.secret_key, TOTP_PURPOSE, secret.encode())
    return secret, uri, segno.make(uri, error="m").svg_data_uri(scale=4)


def enrolment_of(settings: Settings, staff: StaffUser) -> tuple[str, str, str] | None:
    """The enrolment under way (None: none, or one no key of the ring opens any more — the
    code page then starts a new one)."""
    try:
        opened = _secret(settings, staff)
    except SealBroken:
        return None
    if opened is None:
        return None
    secret = opened[0]
    uri = pyotp.TOTP(secret).provisioning_uri(
        name=staff.username, issuer_name=f"{settings.operator_name} back office"
    )
    return secret, uri, segno.make(uri, error="m").svg_data_uri(scale=4)


def accept_code(settings: Settings, staff: StaffUser, code: str, now: datetime) -> bool:
    """A current code not used before (each 30 s step once; one step of drift either way). The
    secret is read with the key ring; one an older key opened is sealed again under the current
    key once a code from it is accepted. A secret no key opens: an enrolment not confirmed yet
    answers False (the code page starts a new one); a confirmed one raises
    `SecondFactorUnavailable` (503: not a wrong code, nothing counted; README, "Rotating the secret key")."""
    try:
        opened = _secret(settings, staff)
    except SealBroken:
        if staff.totp_enabled_at is None:
            return False
        raise SecondFactorUnavailable() from None
    candidate = code.strip().replace(" ", "")
    if opened is None or not (candidate.isascii() and candidate.isdigit() and len(candidate) == 6):
        return False
    secret, by_current_key = opened
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP
    for step in (current - 1, current, current + 1):
        if step <= (staff.totp_last_step if staff.totp_last_step is not None else -1):
            continue
        if secrets.compare_digest(totp.at(step * STEP), candidate):
            staff.totp_last_step = step
            if not by_current_key:
                staff.totp_secret_sealed = seal(settings.secret_key, TOTP_PURPOSE, secret.encode())
            return True
    return False


async def complete_second_step(
    session: AsyncSession,
    settings: Settings,
    row: StaffSession,
    staff: StaffUser,
    code: str,
    now: datetime,
) -> str | None:
    """Check the code; on success the session is fully signed in under a new token (returned).
    A locked staff member's code is not even looked at; the failure that locks them ends every
    half-open session of theirs. Nor is the code of a session ended meanwhile (an admin's
    change the step waited for) or of a member switched off. `staff` is locked before `row`
    (the order of every path: the member, then their sessions)."""
    if row.revoked_at is not None or not staff.active:
        return None
    if staff.locked_until is not None and staff.locked_until > now:
        row.revoked_at = now
        await session.flush()
        return None
    if not accept_code(settings, staff, code, now):
        staff.failed_logins += 1
        if staff.failed_logins >= MAX_FAILURES:
            staff.locked_until, staff.failed_logins = now + LOCK_FOR, 0
            await _end_half_open(session, staff.id, now)
        await session.flush()
        return None
    if staff.totp_enabled_at is None:
        staff.totp_enabled_at = now
    staff.failed_logins = 0
    staff.last_login_at = now
    token = secrets.token_urlsafe(32)
    row.token_hash = _token_hash(settings.secret_key, token)
    row.mfa = True
    row.last_seen_at = now
    await session.flush()
    return token


async def sign_in(
    session: AsyncSession,
    settings: Settings,
    *,
    username: str,
    password: str,
    code: str,
    ip: str | None,
    user_agent: str | None,
    now: datetime,
) -> tuple[StaffUser, IssuedStaffSession] | None:
    """Both steps at once (the API): only for staff already enrolled."""
    staff = await check_password(session, settings, username, password, now)
    if staff is None or staff.totp_enabled_at is None:
        return None
    issued = await open_staff_session(
        session, settings, staff, ip=ip, user_agent=user_agent, now=now, mfa=False
    )
    token = await complete_second_step(session, settings, issued.row, staff, code, now)
    if token is None:
        return None
    return staff, IssuedStaffSession(issued.row, token)


async def switched_off(session: AsyncSession, settings: Settings, token: str) -> bool:
    """Whether `token` is a session (ended or not) of a member whose access is switched off:
    the sign-in page then says why they were signed out."""
    found = await session.execute(
        select(StaffUser.active)
        .join(StaffSession, StaffSession.staff_id == StaffUser.id)
        .where(StaffSession.token_hash == _token_hash(settings.secret_key, token))
    )
    return found.scalar_one_or_none() is False


async def session_for_token(
    session: AsyncSession, settings: Settings, token: str, now: datetime
) -> tuple[StaffSession, StaffUser] | None:
    row = (
        await session.execute(
            select(StaffSession).where(
                StaffSession.token_hash == _token_hash(settings.secret_key, token)
            )
        )
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    idle, _ = policy_of(settings)
    if row.expires_at <= now or row.last_seen_at + idle <= now:
        row.revoked_at = now
        await session.flush()
        return None
    staff = await session.get(StaffUser, row.staff_id)
    if staff is None:
        return None
    if not staff.active:
        # Switched off however it happened: the session ends rather than waiting, still open,
        # for the member to be switched on again.
        row.revoked_at = now
        await session.flush()
        return None
    if reset_password_expired(settings, staff, now):
        row.revoked_at = now
        await session.flush()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        await session.flush()
    return row, staff


async def _end_half_open(session: AsyncSession, staff_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(StaffSession)
        .where(
            StaffSession.staff_id == staff_id,
            StaffSession.mfa.is_(False),
            StaffSession.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )


async def end_session(session: AsyncSession, session_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(StaffSession)
        .where(StaffSession.id == session_id, StaffSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def open_sessions(
    session: AsyncSession, settings: Settings, staff_id: uuid.UUID, now: datetime
) -> list[StaffSession]:
    """A staff member's sessions still open (signed in with the code, neither ended nor timed
    out): browsers and API tokens, the latest used first — for them to see where they are
    signed in."""
    idle, _ = policy_of(settings)
    rows = await session.execute(
        select(StaffSession)
        .where(
            StaffSession.staff_id == staff_id,
            StaffSession.mfa.is_(True),
            StaffSession.revoked_at.is_(None),
            StaffSession.expires_at > now,
            StaffSession.last_seen_at > now - idle,
        )
        .order_by(StaffSession.last_seen_at.desc(), StaffSession.id)
    )
    return list(rows.scalars())


async def end_own_sessions(
    session: AsyncSession,
    staff_id: uuid.UUID,
    now: datetime,
    *,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """End a staff member's sessions — every one ("sign out everywhere"), every one but `keep`
    (a password changed), or `only` that one if it is theirs. Returns the sessions ended (none
    for another's or an ended one)."""
    stmt = update(StaffSession).where(
        StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None)
    )
    if only is not None:
        stmt = stmt.where(StaffSession.id == only)
    if keep is not None:
        stmt = stmt.where(StaffSession.id != keep)
    ended = await session.execute(
        stmt.values(revoked_at=now)
        .returning(StaffSession.id)
        .execution_options(synchronize_session=False)
    )
    return list(ended.scalars())


async def drop_passkeys(session: AsyncSession, staff_id: uuid.UUID) -> list[uuid.UUID]:
    """Delete every passkey of a staff member; returns the ids of those deleted. The member's row
    is locked by the caller (the member first, then what is theirs)."""
    dropped = await session.execute(
        delete(StaffPasskey)
        .where(StaffPasskey.staff_id == staff_id)
        .returning(StaffPasskey.id)
        .execution_options(synchronize_session=False)
    )
    return list(dropped.scalars())


# --- administration -----------------------------------------------------------------------


class StaffNotFound(NotFound):
    slug = "staff-member-not-found"
    title = N_("There is no such staff member.")


class CannotChangeSelf(Conflict):
    slug = "staff-cannot-change-self"
    title = N_("You cannot change your own role, access or authenticator here.")


def staff_facts(staff: StaffUser) -> dict[str, object]:
    return {
        "role": staff.role,
        "active": staff.active,
        "totp": staff.totp_enabled_at is not None,
        "locked_until": staff.locked_until.isoformat() if staff.locked_until else None,
    }


def change_facts(staff: StaffUser, before: dict[str, object]) -> dict[str, object]:
    """The facts after `change_staff`, to audit beside its `before`: with the passkeys (none
    now) when a new authenticator was asked for, which removes them; with the tickets assigned
    (none now) when switching them off released some."""
    return (
        staff_facts(staff)
        | ({"passkeys": 0} if "passkeys" in before else {})
        | ({"tickets_assigned": 0} if "tickets_assigned" in before else {})
    )


async def change_staff(
    session: AsyncSession,
    staff_id: uuid.UUID,
    *,
    by: uuid.UUID | None,
    role: str | None = None,
    active: bool | None = None,
    reset_totp: bool = False,
    now: datetime,
) -> tuple[StaffUser, dict[str, object]]:
    """Change a staff member's role, switch their access off or on, or make them enrol a new
    authenticator (a lost phone): each ends every session of theirs (switched on again, none
    from before comes back). A new authenticator removes their passkeys too: it is asked for
    when a device is lost or may be in someone else's hands, and a passkey on it would sign in
    on its own. Returns them and the facts before (with `passkeys`, how many they held, when a
    new authenticator was asked for; `change_facts` gives the facts after). A role or access
    the member already has changes nothing (the staff page's selects start on the current
    ones, so saving a new authenticator alone must not end more than it means to)."""
    staff = await session.get(StaffUser, staff_id, with_for_update=True)
    if staff is None:
        raise StaffNotFound(field="staff_id")
    if by == staff.id:
        raise CannotChangeSelf(field="staff_id")
    before = staff_facts(staff)
    if role is not None:
        try:
            wanted = Role(role).value
        except ValueError:
            raise ValidationFailed(N_("Unknown role."), field="role") from None
        role = None if wanted == staff.role else wanted
        if role is not None:
            staff.role = role
    if active is not None and active == staff.active:
        active = None
    if active is not None:
        staff.active = active
        if active:
            staff.failed_logins, staff.locked_until = 0, None
        else:
            # Their tickets still open go back to nobody (under "unassigned"), each audited
            # as by whoever switched them off, in this transaction.
            released = await release_of(session, staff, await _acting(session, by), now=now)
            if released:
                before["tickets_assigned"] = released
    if reset_totp:
        staff.totp_secret_sealed = staff.totp_enabled_at = staff.totp_last_step = None
        before["passkeys"] = len(await drop_passkeys(session, staff.id))
    if role is not None or active is not None or reset_totp:
        await session.execute(
            update(StaffSession)
            .where(StaffSession.staff_id == staff.id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    await session.flush()
    return staff, before


async def _acting(session: AsyncSession, by: uuid.UUID | None) -> Actor:
    """Who `change_staff` acts as, for the audit entries it writes itself (only staff members
    with `staff.manage` change staff: no API key has it)."""
    acting = await session.get(StaffUser, by) if by is not None else None
    name = f"staff:{acting.username}" if acting is not None else "staff"
    return Actor(name=name, permissions=frozenset(), staff=acting)


# --- passwords ------------------------------------------------------------------------------


class StaffPasswordWrong(ValidationFailed):
    slug = "staff-password-wrong"
    title = N_("The current password is wrong.")


class OwnPasswordNotReset(Conflict):
    slug = "staff-own-password"
    title = N_("Change your own password with your current password.")


@dataclass(frozen=True, slots=True)
class PasswordChanged:
    token: str
    """This session's new token: the one it came with no longer works."""
    ended: int
    """The staff member's other sessions ended."""


async def change_own_password(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    row: StaffSession,
    staff: StaffUser,
    *,
    current: str,
    new: str,
    now: datetime,
) -> PasswordChanged | Refused:
    """A signed-in staff member changes their password (ASVS 2.1.5, 2.1.6): the current one is
    required and a wrong one is a failed sign-in (it counts toward the lockout, and locking ends
    the half-open sessions; while locked nothing is looked at); the new one follows the
    customers' policy. Every other session of theirs ends, this one gets a new token. Audited
    (`staff.password_changed`, `staff.password_change_failed`), never with a password. `row`
    and `staff` are locked by the caller (the member first). A refusal is returned, to be raised
    after commit. A session ended meanwhile (an admin's change the request waited for: the
    member switched off, their role changed) changes nothing: `staff-session-ended`."""
    if row.revoked_at is not None or not staff.active:
        return Refused(StaffSessionEnded())
    if staff.locked_until is not None and staff.locked_until > now:
        wait = math.ceil((staff.locked_until - now).total_seconds())
        await audit.record(
            session, actor, "staff.password_change_failed", target_type="staff",
            target_id=staff.id, details={"locked": True}, now=now,
        )  # fmt: skip
        return Refused(TooManyAttempts(wait, field="current_password"))
    if not await verified(staff.password_hash, current):
        staff.failed_logins += 1
        locked = staff.failed_logins >= MAX_FAILURES
        if locked:
            staff.locked_until, staff.failed_logins = now + LOCK_FOR, 0
            await _end_half_open(session, staff.id, now)
        await audit.record(
            session, actor, "staff.password_change_failed", target_type="staff",
            target_id=staff.id, details={"locked": locked}, now=now,
        )  # fmt: skip
        await session.flush()
        return Refused(StaffPasswordWrong(field="current_password"))
    check_password_policy(new, username=staff.username, email=staff.email, field="new_password")
    if await verified(staff.password_hash, new):
        # Above all after an admin's reset: "changing" it to itself would keep a password
        # someone else knows.
        raise ValidationFailed(
            N_("Choose a new password, not the current one."), field="new_password"
        )
    staff.password_hash = await hashed(new)
    staff.failed_logins = 0
    staff.password_set_by_other_at = None
    ended = await end_own_sessions(session, staff.id, now, keep=row.id)
    token = secrets.token_urlsafe(32)
    row.token_hash = _token_hash(settings.secret_key, token)
    row.last_seen_at = now
    await audit.record(
        session, actor, "staff.password_changed", target_type="staff", target_id=staff.id,
        details={"sessions_ended": len(ended)}, now=now,
    )  # fmt: skip
    await _tell_password_changed(session, staff, "self", now)
    await session.flush()
    return PasswordChanged(token, len(ended))


async def set_password(
    session: AsyncSession, actor: Actor, staff: StaffUser, new: str, now: datetime
) -> tuple[int, int]:
    """Someone else sets a staff member's password (an admin, or `simcharge staff password`):
    the customers' policy; the lockout is lifted (the guesses were at the old password) and every
    session of theirs ends. Their passkeys are removed as well: a reset means starting over (a
    lost device, a suspected compromise), and a passkey on the lost device would sign in
    without the password. Audited as `staff.password_reset` with how many sessions ended and
    passkeys were removed, never with the password. Returns (sessions ended, passkeys removed).
    The member must change it at first use (ASVS 2.1, 2.3.1): until they do, a session of theirs
    reaches only their password page (and signing out), and the password signs in for
    `staff_reset_password_hours` only."""
    check_password_policy(new, username=staff.username, email=staff.email, field="new_password")
    staff.password_hash = await hashed(new)
    staff.failed_logins, staff.locked_until = 0, None
    staff.password_set_by_other_at = now
    ended = await end_own_sessions(session, staff.id, now)
    dropped = await drop_passkeys(session, staff.id)
    await audit.record(
        session, actor, "staff.password_reset", target_type="staff", target_id=staff.id,
        details={"sessions_ended": len(ended), "passkeys_removed": len(dropped)}, now=now,
    )  # fmt: skip
    await _tell_password_changed(session, staff, "admin", now)
    await session.flush()
    return len(ended), len(dropped)


async def _tell_password_changed(
    session: AsyncSession, staff: StaffUser, by: str, now: datetime
) -> None:
    """ASVS 2.2.3: a member with an e-mail address is told their password changed (`by`:
    `self` or `admin`), in their language; one without has only the audit log."""
    if not staff.email:
        return
    await tell_staff(
        session,
        staff_id=staff.id,
        to=staff.email,
        language=staff.language or "en",
        template="staff.password_changed",
        params={"username": staff.username, "by": by},
        dedupe_key=f"staff.password_changed:{staff.id}:{now.isoformat()}",
    )


async def reset_staff_password(
    session: AsyncSession, actor: Actor, staff_id: uuid.UUID, new: str, now: datetime
) -> StaffUser:
    """An admin sets another staff member's password (`set_password`); their own they change
    with the current one."""
    staff = await session.get(StaffUser, staff_id, with_for_update=True)
    if staff is None:
        raise StaffNotFound(field="staff_id")
    if actor.staff_id == staff.id:
        raise OwnPasswordNotReset(field="staff_id")
    await set_password(session, actor, staff, new, now)
    return staff
