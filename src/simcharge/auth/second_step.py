"""A passkey as the second step of a sign-in with a password, and two-step sign-in with a passkey
for customers who keep a password but use no authenticator app.

When the password was right and the second step is due (`service.login` answers
`second-factor-required`), an account with passkeys is offered a ceremony for this sign-in only
(`second_step_offer`): a challenge bound to the account and to a random handle that only the
client that gave the password holds (the *pending sign-in*; kept as keyed hashes, used once,
valid `passkeys.CHALLENGE_TTL`), and options that allow this account's passkeys alone. The
answer (`login_second_step`) must come back with that handle and be signed by one of the
account's passkeys with user verification; anything else — another account's passkey, a wrong
signature, a counter that went back — is refused as a wrong code is (`invalid-second-factor`)
and counted where a wrong code given with the password is: per client address at the edge
(`login`), and on the throttle rows of the name the password was given under (the handle
remembers its kind) and of the account — so the same growing delay, hourly cap, alert and
lock-out answer (`too-many-attempts` with `Retry-After`) apply whichever second step is guessed.

Two-step sign-in with a passkey (`enable` / `disable`) is the switch for an account without
TOTP: the password is asked again to turn it on or off, recovery codes are issued when it is
turned on (as when the app is), and the holder is told either way. With the app on it is not
needed (a passkey is accepted at the second step anyway): turning the app on replaces it
(`service.confirm_totp`)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn.helpers.exceptions import WebAuthnException

from simcharge.accounts.models import SIGNED_OUT_FOR_GOOD, Account, AccountStatus
from simcharge.auth import totp
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import AuthSession, Passkey, PasskeySecondFactor
from simcharge.auth.passkeys import (
    CHALLENGE_TTL,
    LastPasskeyOfTwoStep,
    PasskeyChallengeInvalid,
    challenge_spent,
    confirmed_by,
    counter_went_back,
    issue_challenge,
    parsed_authentication,
    passkeys_of,
    relying_party,
    remove_passkey,
    request_options,
    verified_assertion,
)
from simcharge.auth.service import (
    LOGIN_KINDS,
    AccountLocked,
    Reauthentication,
    SignedIn,
    confirm_both_factors,
    confirm_password,
    passkey_second_factor_on,
    second_step_failed,
    second_step_locked_out,
    second_step_passed,
    second_step_throttle,
    start_session,
)
from simcharge.config import Settings
from simcharge.errors import Conflict, NotFound, Refused
from simcharge.kit.translations import N_
from simcharge.notifications.service import notify

SECOND_STEP = "second_step"


class PasskeyTwoStepNeedsPasskey(Conflict):
    slug = "passkey-two-step-needs-passkey"
    title = N_("Add a passkey first: two-step sign-in will ask for one.")


class PasskeyTwoStepWithApp(Conflict):
    slug = "passkey-two-step-with-app"
    title = N_(
        "Two-step verification with an authenticator app is on: your passkeys are already "
        "accepted as the second step."
    )


class PasskeyTwoStepAlreadyOn(Conflict):
    slug = "passkey-two-step-on"
    title = N_("Two-step sign-in with a passkey is already on.")


class PasskeyTwoStepOff(Conflict):
    slug = "passkey-two-step-off"
    title = N_("Two-step sign-in with a passkey is not on.")


# --------------------------------------------------------------------------------------------
# The second step of a sign-in


async def second_step_offer(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    now: datetime,
    login_kind: str | None = None,
) -> dict[str, Any] | None:
    """The passkey ceremony of this pending sign-in (its password was just found right), JSON-
    ready: `ceremony` (the handle to send back with the answer), `public_key` (the options,
    allowing this account's passkeys only) and `expires_at`; None when the account has no
    passkey or the site none (reached by IP address). `login_kind`: the kind of name the
    password was given under (`username`, `email`, `phone`), carried by the handle after a dot
    (bound with the rest of it by its keyed hash: `login_kind_of`) so that a failed answer is
    counted on that name's row, as a wrong code is."""
    if settings.passkey_rp is None:
        return None
    own = await passkeys_of(session, account.id)
    if not own:
        return None
    handle = secrets.token_urlsafe(32) + (f".{login_kind}" if login_kind in LOGIN_KINDS else "")
    challenge = await issue_challenge(
        session, settings, purpose=SECOND_STEP, account_id=account.id, holder=handle, now=now
    )
    options = request_options(settings, challenge, ((p.credential_id, p.transports) for p in own))
    return {
        "ceremony": handle,
        "public_key": options,
        "expires_at": (now + CHALLENGE_TTL).isoformat(),
    }


def login_kind_of(handle: str) -> str | None:
    """The kind of name a pending sign-in's password was given under, from its handle (trusted
    only once the handle's challenge was spent: the keyed hash bound the whole handle)."""
    _, dot, kind = handle.rpartition(".")
    return kind if dot and kind in LOGIN_KINDS else None


async def _spend(
    session: AsyncSession, settings: Settings, challenge: bytes, handle: str, now: datetime
) -> uuid.UUID | None:
    """Spend the second step's challenge the answer names (once, whatever follows); the account
    of its pending sign-in when it is one of ours, still valid, and `handle` is its client's."""
    spent = await challenge_spent(
        session, settings, challenge, purpose=SECOND_STEP, holder=handle, now=now
    )
    return spent if isinstance(spent, uuid.UUID) else None


async def login_second_step(
    session: AsyncSession,
    settings: Settings,
    *,
    handle: str,
    credential: dict[str, Any],
    client: ClientInfo,
    now: datetime,
    replacing: str | None = None,
) -> SignedIn | Refused:
    """Finish a sign-in whose password was right with the authenticator's answer to its
    `second_step_offer` (`handle` comes back with it). `replacing`: as for `service.login`."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    parsed, challenge = parsed_authentication(credential)
    account_id = await _spend(session, settings, challenge, handle, now)
    if account_id is None:
        await record_event(
            session, EventKind.login, account_id=None, client=client, success=False,
            details={"method": "password+passkey", "reason": "challenge"}, now=now,
        )  # fmt: skip
        return Refused(PasskeyChallengeInvalid(field="credential"))
    # The account first, then its throttle rows and its passkey: the order sign-in takes them in.
    account = await session.get(Account, account_id, with_for_update=True, populate_existing=True)
    assert account is not None  # challenges go with their account (`privacy.erase`)
    # The rows a wrong code given with the password counts on: its name's and the account's.
    rows = await second_step_throttle(
        session, settings, account, now, login_kind=login_kind_of(handle)
    )
    if account.status in SIGNED_OUT_FOR_GOOD:
        return await second_step_failed(
            session, account, rows, client, now, reason="account_closed", counted=False
        )
    # Locked out: refused unlooked-at, counted no further, answered as a sign-in is then.
    locked_out = await second_step_locked_out(session, account, rows, client, now)
    if locked_out is not None:
        return locked_out
    passkey = (
        await session.execute(
            select(Passkey)
            .where(Passkey.credential_id == parsed.raw_id, Passkey.account_id == account.id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if passkey is None:  # unknown, or another account's: as a wrong code
        return await second_step_failed(session, account, rows, client, now, reason="unknown")
    handle_given = parsed.response.user_handle
    if handle_given is not None and handle_given != account.id.bytes:
        return await second_step_failed(session, account, rows, client, now, reason="user")
    try:
        verified = verified_assertion(settings, parsed, challenge, passkey.public_key)
    except WebAuthnException:
        return await second_step_failed(session, account, rows, client, now, reason="invalid")
    if await counter_went_back(session, passkey, verified, client, now, step="second"):
        return await second_step_failed(
            session, account, rows, client, now, reason="sign_count_regressed"
        )
    if account.status == AccountStatus.locked:
        await record_event(
            session, EventKind.login, account_id=account.id, client=client, success=False,
            details={"method": "password+passkey", "reason": "account_locked"}, now=now,
        )  # fmt: skip
        return Refused(AccountLocked())
    passkey.sign_count = verified.new_sign_count
    passkey.backed_up = verified.credential_backed_up
    passkey.last_used_at = now
    await second_step_passed(session, settings, account, rows, now)
    return await start_session(
        session, settings, account, client=client, now=now, mfa=True, replacing=replacing,
        method="password+passkey",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Turning two-step sign-in with a passkey on and off


@dataclass(frozen=True, slots=True)
class PasskeyTwoStep:
    """Whether two-step sign-in with a passkey is on, since when, and what it may be."""

    enabled_at: datetime | None
    passkeys: int
    totp: bool


async def passkey_two_step(session: AsyncSession, account: Account) -> PasskeyTwoStep:
    row = await session.get(PasskeySecondFactor, account.id)
    return PasskeyTwoStep(
        enabled_at=row.enabled_at if row is not None else None,
        passkeys=len(await passkeys_of(session, account.id)),
        totp=account.totp_enabled_at is not None,
    )


async def enable(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    *,
    password: str,
    client: ClientInfo,
    now: datetime,
    counted: Reauthentication,
) -> list[str] | Refused:
    """Turn two-step sign-in with a passkey on (the password asked again, as for every
    sensitive change); the new recovery codes, shown once. Refused, before the password is
    tried, with the app on, when it is on already, or without a passkey."""
    relying_party(settings)  # passkeys off: nothing to ask for at the second step
    if account.totp_enabled_at is not None:
        raise PasskeyTwoStepWithApp()
    if await passkey_second_factor_on(session, account):
        raise PasskeyTwoStepAlreadyOn()
    if not await passkeys_of(session, account.id):
        raise PasskeyTwoStepNeedsPasskey()
    refused = await confirm_password(
        session, settings, account, password, field="password",
        kind=EventKind.passkey_second_factor_enabled, client=client, now=now, counted=counted,
    )  # fmt: skip
    if refused is not None:
        return refused
    session.add(PasskeySecondFactor(account_id=account.id, enabled_at=now))
    account.updated_at = now
    recovery = await totp.new_recovery_codes(session, settings.secret_key, account.id, now)
    await record_event(
        session, EventKind.passkey_second_factor_enabled, account_id=account.id, client=client,
        now=now,
    )  # fmt: skip
    await notify(session, account_id=account.id, template="security.passkey_two_step_enabled")
    return recovery


async def disable(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    auth: AuthSession,
    *,
    password: str,
    code: str = "",
    credential: dict[str, Any] | None = None,
    client: ClientInfo,
    now: datetime,
    counted: Reauthentication,
) -> Refused | None:
    """Turn two-step sign-in with a passkey off: the password and its second factor (one of the
    passkeys' answer to `passkeys.confirm_options`, or a recovery code), as turning the app off
    asks the app's code; the recovery codes go with it, and the holder is told as when the
    app's two-step verification is turned off."""
    row = await session.get(PasskeySecondFactor, account.id, with_for_update=True)
    if row is None:
        raise PasskeyTwoStepOff()
    refused = await confirm_both_factors(
        session, settings, account, password, code,
        kind=EventKind.passkey_second_factor_disabled, client=client, now=now, counted=counted,
        passkey=confirmed_by(session, settings, account, auth, credential, client, now),
    )  # fmt: skip
    if refused is not None:
        return refused
    await session.delete(row)
    account.updated_at = now
    await totp.forget_recovery_codes(session, account.id)
    await record_event(
        session, EventKind.passkey_second_factor_disabled, account_id=account.id,
        client=client, details={"reason": "holder"}, now=now,
    )  # fmt: skip
    await notify(session, account_id=account.id, template="security.totp_disabled")
    return None


# --------------------------------------------------------------------------------------------
# Removing a passkey


async def check_removable(
    session: AsyncSession, account: Account, passkey_id: uuid.UUID
) -> None:
    """The refusals that come before any re-authentication is asked or spent: another
    account's (or no) passkey, and the last one while two-step sign-in with a passkey asks for
    one (the portal asks it before its passkey confirmation is used)."""
    own = await passkeys_of(session, account.id)
    if not any(p.id == passkey_id for p in own):
        raise NotFound(N_("No passkey with this id."), field="passkey_id")
    if len(own) == 1 and await passkey_second_factor_on(session, account):
        raise LastPasskeyOfTwoStep(field="passkey_id")


async def remove_confirmed(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    auth: AuthSession,
    passkey_id: uuid.UUID,
    *,
    password: str,
    code: str = "",
    credential: dict[str, Any] | None = None,
    client: ClientInfo,
    now: datetime,
    counted: Reauthentication,
) -> Refused | None:
    """Remove one of the account's passkeys once the holder re-authenticated (ASVS V3.7.1): the
    password and, with two-step verification on (the app, or two-step sign-in with a passkey),
    its second factor, as `confirm_both_factors` asks it (a code, a recovery code, or one of the
    passkeys' answer to `passkeys.confirm_options` — the one being removed may answer).

    Refused before the password is tried: another account's (or no) passkey (`404`, field
    `passkey_id`, as anyone else's is "not found"), and the last passkey while two-step sign-in
    with a passkey asks for one (`409 passkey-last-second-factor`). A refused re-authentication
    is logged as a failed `passkey_removed` and counted with sign-in failures."""
    await check_removable(session, account, passkey_id)
    refused = await confirm_both_factors(
        session, settings, account, password, code, kind=EventKind.passkey_removed,
        client=client, now=now, counted=counted,
        passkey=confirmed_by(session, settings, account, auth, credential, client, now),
    )  # fmt: skip
    if refused is not None:
        return refused
    await remove_passkey(session, account, passkey_id, client=client, now=now)
    return None
