"""Staff passkeys: a staff member adds one on their own page (`/backoffice/account`) after giving
their password and a current authenticator code again, and signs in to the back office with it
alone — user verification is required, so it counts as both factors, and the session opened is
the one the password and the code open (`staff.open_staff_session`, fully signed in).

The ceremonies are the customers' (`auth.passkeys`: its options, its parsers, its one-time
challenges and py_webauthn's checks), with two differences of place: the passkeys live in
`staff_passkeys` (a staff credential never opens a customer session, nor the other way round),
and their challenges share `passkey_challenges` under purposes of their own (`staff-register`,
`staff-login`; a customer's challenge cannot answer a staff ceremony). A registration's
challenge is bound to the staff member and their session; a sign-in's to the handle only the
browser that asked holds.

A switched-off member's passkey is refused as an unknown one; a locked member (too many wrong
passwords or codes), or one whose admin-set password has run out, is refused too, as the
password would be. A signature counter that does not move forward is refused and audited. Every
addition, renaming, removal and sign-in (and every refusal) is in the audit log."""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn.helpers.exceptions import WebAuthnException

from simcharge.accounts.service import checked_formats
from simcharge.auth.codes import InvalidCode
from simcharge.auth.passkeys import (
    CHALLENGE_TTL,
    Ceremony,
    PasskeyChallengeInvalid,
    PasskeyInvalid,
    PasskeyRefused,
    PasskeyTaken,
    clean_name,
    creation_options,
    default_name,
    issue_challenge,
    parsed_authentication,
    parsed_registration,
    relying_party,
    request_options,
    spend_challenge,
    stored_fields,
    verified_assertion,
    verified_creation,
)
from simcharge.auth.passwords import verified
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.models import StaffPasskey, StaffSession, StaffUser
from simcharge.backoffice.staff import (
    LOCK_FOR,
    MAX_FAILURES,
    CannotChangeSelf,
    IssuedStaffSession,
    StaffNotFound,
    StaffPasswordWrong,
    StaffSessionEnded,
    _end_half_open,
    accept_code,
    drop_passkeys,
    end_own_sessions,
    open_staff_session,
    reset_password_expired,
)
from simcharge.config import Settings
from simcharge.errors import NotFound, Refused, TooManyAttempts
from simcharge.kit.devices import device_summary
from simcharge.kit.translations import N_

REGISTER, LOGIN = "staff-register", "staff-login"
"""The purposes of staff ceremonies' rows in `passkey_challenges`."""

log = structlog.get_logger("simcharge.backoffice")


def _holder(staff: StaffUser, row: StaffSession) -> str:
    """What a registration's challenge is bound to: this member, in this session."""
    return f"staff:{staff.id}:{row.id}"



async def passkeys_of(session: AsyncSession, staff_id: uuid.UUID) -> Sequence[StaffPasskey]:
    stmt = (
        select(StaffPasskey)
        .where(StaffPasskey.staff_id == staff_id)
        .order_by(StaffPasskey.created_at, StaffPasskey.id)
    )
    return (await session.execute(stmt)).scalars().all()


async def passkey_counts(
    session: AsyncSession, staff_id: uuid.UUID | None = None
) -> dict[uuid.UUID, int]:
    """How many passkeys each staff member holds (those with none are absent); `staff_id`: that
    member's only."""
    stmt = select(StaffPasskey.staff_id, func.count()).group_by(StaffPasskey.staff_id)
    if staff_id is not None:
        stmt = stmt.where(StaffPasskey.staff_id == staff_id)
    return {row[0]: int(row[1]) for row in await session.execute(stmt)}


class StaffPasskeyNotFound(NotFound):
    slug = "staff-passkey-not-found"
    title = N_("No passkey with this id.")


# --- the password and a code, again -----------------------------------------------------------


async def reauthenticate(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    row: StaffSession,
    staff: StaffUser,
    *,
    password: str,
    code: str,
    purpose: str,
    now: datetime,
) -> Refused | None:
    """The password and a current authenticator code given again (`purpose`: what for, in the
    audit log). A wrong one counts as a failed sign-in does (toward the lockout; locking ends the
    half-open sessions); while locked nothing is looked at. `staff` and `row` are locked by the
    caller (the member first). A refusal is returned, to be raised after commit."""
    if row.revoked_at is not None or not staff.active:
        return Refused(StaffSessionEnded())
    if staff.locked_until is not None and staff.locked_until > now:
        wait = math.ceil((staff.locked_until - now).total_seconds())
        await audit.record(
            session, actor, "staff.reauthentication_failed", target_type="staff",
            target_id=staff.id, details={"for": purpose, "locked": True}, now=now,
        )  # fmt: skip
        return Refused(TooManyAttempts(wait, field="password"))
    step = None
    if not await verified(staff.password_hash, password):
        step = "password"
    elif not accept_code(settings, staff, code, now):
        step = "code"
    if step is None:
        await session.flush()  # the code's step, spent
        return None
    staff.failed_logins += 1
    locked = staff.failed_logins >= MAX_FAILURES
    if locked:
        staff.locked_until, staff.failed_logins = now + LOCK_FOR, 0
        await _end_half_open(session, staff.id, now)
    await audit.record(
        session, actor, "staff.reauthentication_failed", target_type="staff",
        target_id=staff.id, details={"for": purpose, "step": step, "locked": locked}, now=now,
    )  # fmt: skip
    await session.flush()
    if step == "password":
        return Refused(StaffPasswordWrong(field="password"))
    return Refused(InvalidCode())


# --- adding one -------------------------------------------------------------------------------


async def registration_options(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    row: StaffSession,
    staff: StaffUser,
    *,
    password: str,
    code: str,
    now: datetime,
) -> Ceremony | Refused:
    """Options to make a passkey for `staff`, once their password and a current code were given
    again; the challenge is bound to them and this session. Their passkeys are excluded."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    refused = await reauthenticate(
        session, settings, actor, row, staff, password=password, code=code,
        purpose="passkey_add", now=now,
    )  # fmt: skip
    if refused is not None:
        return refused
    existing = await passkeys_of(session, staff.id)
    challenge = await issue_challenge(
        session, settings, purpose=REGISTER, account_id=None, holder=_holder(staff, row), now=now
    )
    options = creation_options(
        settings,
        user_id=staff.id.bytes,
        user_name=staff.username,
        display_name=staff.display_name or staff.username,
        challenge=challenge,
        existing=((p.credential_id, p.transports) for p in existing),
    )
    return Ceremony(options, now + CHALLENGE_TTL)


async def register_passkey(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    row: StaffSession,
    staff: StaffUser,
    *,
    credential: dict[str, Any],
    name: str | None,
    now: datetime,
) -> StaffPasskey | Refused:
    """Store the passkey the authenticator made for the challenge of `registration_options`.
    Unnamed, it is called after the browser ("Chrome · Linux"), else "Passkey" in the member's
    language. Malformed input is refused before anything changes; an answer that does not
    verify spends its challenge all the same."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    label = clean_name(
        name
        if name is not None and name.strip()
        else device_summary(actor.user_agent) or default_name(staff.language)
    )
    parsed, challenge = parsed_registration(credential)
    if row.revoked_at is not None or not staff.active:
        return Refused(StaffSessionEnded())
    if not await spend_challenge(
        session, settings, challenge, purpose=REGISTER, holder=_holder(staff, row),
        account_id=None, now=now,
    ):  # fmt: skip
        return await _add_refused(session, actor, staff, PasskeyChallengeInvalid(field="credential"), now)
    try:
        verified_answer = verified_creation(settings, parsed, challenge)
    except WebAuthnException:
        return await _add_refused(session, actor, staff, PasskeyInvalid(field="credential"), now)
    passkey = StaffPasskey(
        staff_id=staff.id, name=label, created_at=now, **stored_fields(verified_answer, parsed)
    )
    try:
        async with session.begin_nested():
            session.add(passkey)
            await session.flush()
    except IntegrityError:
        return await _add_refused(session, actor, staff, PasskeyTaken(field="credential"), now)
    await audit.record(
        session, actor, "staff.passkey_added", target_type="staff", target_id=staff.id,
        details={"passkey_id": str(passkey.id), "name": passkey.name,
                 "backed_up": passkey.backed_up},
        now=now,
    )  # fmt: skip
    return passkey


async def _add_refused(
    session: AsyncSession,
    actor: Actor,
    staff: StaffUser,
    error: PasskeyChallengeInvalid | PasskeyInvalid | PasskeyTaken,
    now: datetime,
) -> Refused:
    await audit.record(
        session, actor, "staff.passkey_add_failed", target_type="staff", target_id=staff.id,
        details={"reason": error.slug}, now=now,
    )  # fmt: skip
    return Refused(error)


# --- renaming and removing --------------------------------------------------------------------


async def _own(session: AsyncSession, staff_id: uuid.UUID, passkey_id: uuid.UUID) -> StaffPasskey:
    """One of the member's passkeys, locked (anyone else's is "not found")."""
    passkey = (
        await session.execute(
            select(StaffPasskey)
            .where(StaffPasskey.id == passkey_id, StaffPasskey.staff_id == staff_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if passkey is None:
        raise StaffPasskeyNotFound(field="passkey_id")
    return passkey


async def rename_passkey(
    session: AsyncSession,
    actor: Actor,
    staff_id: uuid.UUID,
    passkey_id: uuid.UUID,
    name: str,
    *,
    now: datetime,
) -> StaffPasskey:
    label = clean_name(name)
    passkey = await _own(session, staff_id, passkey_id)
    if passkey.name == label:
        return passkey
    before = passkey.name
    passkey.name = label
    await session.flush()
    await audit.record(
        session, actor, "staff.passkey_renamed", target_type="staff", target_id=staff_id,
        before={"name": before}, after={"name": label},
        details={"passkey_id": str(passkey.id)}, now=now,
    )  # fmt: skip
    return passkey


async def remove_passkey(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    row: StaffSession,
    staff: StaffUser,
    passkey_id: uuid.UUID,
    *,
    password: str,
    code: str,
    now: datetime,
) -> Refused | None:
    """Remove one of the member's passkeys, their password and a current code given again (a
    session left open on someone else's screen cannot take their passkeys away). Someone else's
    passkey is "not found", before anything is asked or counted."""
    passkey = await _own(session, staff.id, passkey_id)
    refused = await reauthenticate(
        session, settings, actor, row, staff, password=password, code=code,
        purpose="passkey_remove", now=now,
    )  # fmt: skip
    if refused is not None:
        return refused
    await session.delete(passkey)
    await session.flush()
    await audit.record(
        session, actor, "staff.passkey_removed", target_type="staff", target_id=staff.id,
        details={"passkey_id": str(passkey_id), "name": passkey.name}, now=now,
    )  # fmt: skip
    return None


# --- an admin, for another member (the back office's staff page, the admin API, the CLI) ------


async def _other_member(session: AsyncSession, actor: Actor, staff_id: uuid.UUID) -> StaffUser:
    """The member an admin acts on, locked (the member first, then their passkeys); their own
    passkeys they manage on their own page, with their password and a code."""
    staff = await session.get(StaffUser, staff_id, with_for_update=True)
    if staff is None:
        raise StaffNotFound(field="staff_id")
    if actor.staff_id == staff.id:
        raise CannotChangeSelf(field="staff_id")
    return staff


async def member_passkeys(session: AsyncSession, staff_id: uuid.UUID) -> Sequence[StaffPasskey]:
    """A member's passkeys, oldest first, as an admin sees them (the API never shows a public
    key or a credential id); an unknown member is "not found"."""
    if await session.get(StaffUser, staff_id) is None:
        raise StaffNotFound(field="staff_id")
    return await passkeys_of(session, staff_id)


async def remove_member_passkey(
    session: AsyncSession, actor: Actor, staff_id: uuid.UUID, passkey_id: uuid.UUID,
    *, now: datetime,
) -> StaffPasskey:  # fmt: skip
    """An admin removes one passkey of another member (one device of several lost, a passkey
    they no longer use). Nothing else changes: their sessions stay, as their other passkeys and
    their password do — removing all of them is the answer to a compromise. A passkey that is
    not this member's is "not found", as an unknown one. Audited as the member's own removal is
    (`staff.passkey_removed`), by the admin."""
    staff = await _other_member(session, actor, staff_id)
    passkey = await _own(session, staff.id, passkey_id)
    await session.delete(passkey)
    await session.flush()
    await audit.record(
        session, actor, "staff.passkey_removed", target_type="staff", target_id=staff.id,
        details={"passkey_id": str(passkey_id), "name": passkey.name}, now=now,
    )  # fmt: skip
    return passkey


@dataclass(frozen=True, slots=True)
class PasskeysRemoved:
    removed: int
    sessions_ended: int


async def remove_all_passkeys(
    session: AsyncSession, actor: Actor, staff_id: uuid.UUID, *, now: datetime
) -> PasskeysRemoved:
    """An admin removes every passkey of another staff member (a lost or stolen device); as
    with their other changes of a member, every session of theirs ends (one the lost device
    holds too) — when there was one to remove. Audited with the count before and after."""
    staff = await _other_member(session, actor, staff_id)
    held = await drop_passkeys(session, staff.id)
    ended = await end_own_sessions(session, staff.id, now) if held else []
    await session.flush()
    await audit.record(
        session, actor, "staff.passkeys_removed", target_type="staff", target_id=staff.id,
        before={"passkeys": len(held)}, after={"passkeys": 0},
        details={"passkey_ids": [str(i) for i in held], "sessions_ended": len(ended)},
        now=now,
    )  # fmt: skip
    return PasskeysRemoved(len(held), len(ended))


# --- signing in -------------------------------------------------------------------------------


async def login_options(session: AsyncSession, settings: Settings, *, now: datetime) -> Ceremony:
    """Options to sign in with any staff passkey of this site (discoverable credentials), and
    the handle the answer must come back with."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    handle = secrets.token_urlsafe(32)
    challenge = await issue_challenge(
        session, settings, purpose=LOGIN, account_id=None, holder=handle, now=now
    )
    return Ceremony(request_options(settings, challenge), now + CHALLENGE_TTL, handle)


async def login_with_passkey(
    session: AsyncSession,
    settings: Settings,
    *,
    handle: str,
    credential: dict[str, Any],
    client: Actor,
    now: datetime,
) -> tuple[StaffUser, IssuedStaffSession] | Refused:
    """Sign in with the authenticator's answer to the challenge of `login_options`: a session
    fully signed in (both factors), audited as `staff.login` with `method: passkey`. `client`:
    who is asking as the audit log names an anonymous one (the address, the browser)."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    parsed, challenge = parsed_authentication(credential)
    if not await spend_challenge(
        session, settings, challenge, purpose=LOGIN, holder=handle, account_id=None, now=now
    ):
        return await _login_refused(
            session, client, None, PasskeyChallengeInvalid(field="credential"), "challenge", now
        )
    found = (
        await session.execute(
            select(StaffPasskey).where(StaffPasskey.credential_id == parsed.raw_id)
        )
    ).scalar_one_or_none()
    if found is None:
        return await _login_refused(session, client, None, PasskeyRefused(), "unknown", now)
    # The member first, then their passkey: the order every path takes them in.
    staff = await session.get(
        StaffUser, found.staff_id, with_for_update=True, populate_existing=True
    )
    passkey = await session.get(
        StaffPasskey, found.id, with_for_update=True, populate_existing=True
    )
    if staff is None or passkey is None:
        return await _login_refused(session, client, None, PasskeyRefused(), "unknown", now)
    if not staff.active:
        # Refused as an unknown passkey: the page says nothing of the member.
        return await _login_refused(session, client, staff, PasskeyRefused(), "disabled", now)
    handle_given = parsed.response.user_handle
    if handle_given is not None and handle_given != staff.id.bytes:
        return await _login_refused(session, client, staff, PasskeyRefused(), "user", now)
    try:
        answer = verified_assertion(settings, parsed, challenge, passkey.public_key)
    except WebAuthnException:
        return await _login_refused(session, client, staff, PasskeyRefused(), "invalid", now)
    if (answer.new_sign_count or passkey.sign_count) and (
        answer.new_sign_count <= passkey.sign_count
    ):
        await audit.record(
            session, _as(client, staff), "staff.passkey_sign_count_regressed",
            target_type="staff", target_id=staff.id, now=now,
            details={"passkey_id": str(passkey.id), "stored": passkey.sign_count,
                     "presented": answer.new_sign_count},
        )  # fmt: skip
        return Refused(PasskeyRefused())
    if staff.locked_until is not None and staff.locked_until > now:
        return await _login_refused(session, client, staff, PasskeyRefused(), "locked", now)
    if reset_password_expired(settings, staff, now):
        log.warning("staff.reset_password_expired", staff_id=str(staff.id))
        return await _login_refused(
            session, client, staff, PasskeyRefused(), "reset_password_expired", now
        )
    passkey.sign_count = answer.new_sign_count
    passkey.backed_up = answer.credential_backed_up
    passkey.last_used_at = now
    staff.last_login_at = now
    issued = await open_staff_session(
        session, settings, staff, ip=client.ip, user_agent=client.user_agent, now=now, mfa=True
    )
    await audit.record(
        session, _as(client, staff, issued.row.id), "staff.login", target_type="staff",
        target_id=staff.id, details={"method": "passkey", "passkey_id": str(passkey.id)},
        now=now,
    )  # fmt: skip
    return staff, issued


def _as(client: Actor, staff: StaffUser, session_id: uuid.UUID | None = None) -> Actor:
    return Actor(
        name=f"staff:{staff.username}",
        permissions=frozenset(),
        staff=staff,
        session_id=session_id,
        ip=client.ip,
        user_agent=client.user_agent,
    )


async def _login_refused(
    session: AsyncSession,
    client: Actor,
    staff: StaffUser | None,
    error: PasskeyChallengeInvalid | PasskeyRefused,
    reason: str,
    now: datetime,
) -> Refused:
    await audit.record(
        session, _as(client, staff) if staff is not None else client, "staff.login_failed",
        target_type="staff" if staff is not None else None,
        target_id=staff.id if staff is not None else None,
        details={"step": "passkey", "reason": reason}, now=now,
    )  # fmt: skip
    return Refused(error)


# --- the member's time zone -------------------------------------------------------------------


async def set_time_zone(
    session: AsyncSession, actor: Actor, staff_id: uuid.UUID, chosen: str | None, *, now: datetime
) -> StaffUser:
    """The zone the back office writes the member's times in: an IANA name the time zone
    database knows, or None (the operator's). Anything else is refused, naming `time_zone`,
    before anything changes."""
    zone = checked_formats({"time_zone": chosen})["time_zone"]
    staff = await session.get(StaffUser, staff_id, with_for_update=True)
    if staff is None:
        raise StaffNotFound(field="staff_id")
    if staff.time_zone == zone:
        return staff
    before = staff.time_zone
    staff.time_zone = zone
    await session.flush()
    await audit.record(
        session, actor, "staff.time_zone", target_type="staff", target_id=staff.id,
        before={"time_zone": before}, after={"time_zone": zone}, now=now,
    )  # fmt: skip
    return staff
