"""Passkeys (WebAuthn, verified by py_webauthn): registering one on a signed-in account, signing
in with one, and the holder's list of them.

Each ceremony has its own challenge: 32 random bytes, valid `CHALLENGE_TTL`, used once, stored
only as a keyed hash (`PasskeyChallenge`), like the one-time codes. A registration's challenge
is bound to the account and to the session that asked for it (after the password was given
again); a sign-in's to the client that asked, by a random handle (`Ceremony.handle`) that only
that client holds and that the server keeps as a keyed hash too. The authenticator's answer
names its challenge (in `clientDataJSON`): its row is found by that and spent at once, whatever
happens next, so an answer replayed, or one for a challenge expired or someone else's, is
refused.

A passkey sign-in asks user verification (a PIN or biometric on the authenticator), so it counts
as two-step: the session is opened as after a password and an authenticator code
(`service.start_session`). A locked account is refused as with the password, a closed or
disabled one as an unknown passkey. The per-address sign-in limit applies; the account's
password-failure row does not (someone guessing the password cannot lock its holder out of
their passkey). A signature counter that does not move forward — a copied key — is refused and
logged."""

from __future__ import annotations

import secrets
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.authentication.verify_authentication_response import VerifiedAuthentication
from webauthn.helpers import (
    bytes_to_base64url,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn.registration.verify_registration_response import VerifiedRegistration

from simcharge.accounts.models import SIGNED_OUT_FOR_GOOD, Account, AccountStatus
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import AuthSession, Passkey, PasskeyChallenge
from simcharge.auth.service import (
    AccountLocked,
    Reauthentication,
    SignedIn,
    confirm_both_factors,
    passkey_second_factor_on,
    start_session,
)
from simcharge.config import Settings
from simcharge.errors import (
    BadRequest,
    Conflict,
    NotAuthenticated,
    NotFound,
    Refused,
    ValidationFailed,
)
from simcharge.kit.crypto import constant_time_equals, keyed_hash
from simcharge.kit.translations import N_, translate
from simcharge.notifications.service import notify

CHALLENGE_TTL = timedelta(minutes=5)
NAME_MAX = 64
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
"""The signature algorithms accepted: what platform authenticators and security keys use."""
REGISTER, LOGIN, CONFIRM = "register", "login", "confirm"
DEFAULT_NAME = N_("Passkey")
"""The name of a passkey added without one from a client that does not say what it is: stored
translated in its holder's language (`default_name`)."""


def default_name(language: str) -> str:
    """`DEFAULT_NAME` as the holder reads it: a label they may rename like one they typed."""
    return translate(language, DEFAULT_NAME)[:NAME_MAX]


class PasskeysOff(NotFound):
    slug = "passkeys-off"
    title = N_("Passkeys are not available on this site.")


class PasskeyChallengeInvalid(BadRequest):
    slug = "passkey-challenge-invalid"
    title = N_("This passkey request has expired or was already used; please start again.")


class PasskeyInvalid(ValidationFailed):
    slug = "passkey-invalid"
    title = N_("The passkey's answer could not be checked; please try again.")


class PasskeyRefused(NotAuthenticated):
    slug = "passkey-refused"
    title = N_("This passkey cannot sign in here. Try again, or sign in with your password.")


class PasskeyTaken(Conflict):
    slug = "passkey-taken"
    title = N_("This passkey is already registered.")


class LastPasskeyOfTwoStep(Conflict):
    slug = "passkey-last-second-factor"
    title = N_(
        "This is your last passkey, and two-step sign-in asks for one. Turn two-step sign-in "
        "with a passkey off first, or add another passkey."
    )


@dataclass(frozen=True, slots=True)
class Ceremony:
    """What the browser needs to ask its authenticator (`navigator.credentials.create` or
    `get`): the options, JSON-ready (bytes as base64url); for a sign-in, the handle the answer
    must come back with."""

    options: dict[str, Any]
    expires_at: datetime
    handle: str | None = None


def relying_party(settings: Settings) -> str:
    """The relying party id, or `PasskeysOff` when the site has none (reached by IP address)."""
    rp_id = settings.passkey_rp
    if rp_id is None:
        raise PasskeysOff()
    return rp_id


def clean_name(raw: str) -> str:
    """A passkey's name as typed (NFKC, spaces collapsed), 1 to `NAME_MAX` characters of text."""
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not name or len(name) > NAME_MAX:
        raise ValidationFailed(
            N_("A passkey's name has 1 to {max} characters."), field="name", max=NAME_MAX
        )
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
        raise ValidationFailed(
            N_("This value contains a character that is not allowed."), field="name"
        )
    return name


def challenge_hash(secret: str, challenge: bytes) -> str:
    return keyed_hash(secret, "passkey-challenge", bytes_to_base64url(challenge))


def holder_hash(secret: str, holder: str) -> str:
    return keyed_hash(secret, "passkey-holder", holder)


async def issue_challenge(
    session: AsyncSession,
    settings: Settings,
    *,
    purpose: str,
    account_id: uuid.UUID | None,
    holder: str,
    now: datetime,
) -> bytes:
    """A new challenge; challenges expired a while ago are swept away with it (sign-in options
    are asked for signed out: the table must not grow with them)."""
    await session.execute(
        delete(PasskeyChallenge).where(PasskeyChallenge.expires_at < now - CHALLENGE_TTL)
    )
    challenge = secrets.token_bytes(32)
    session.add(
        PasskeyChallenge(
            purpose=purpose,
            account_id=account_id,
            challenge_hash=challenge_hash(settings.secret_key, challenge),
            holder_hash=holder_hash(settings.secret_key, holder),
            created_at=now,
            expires_at=now + CHALLENGE_TTL,
        )
    )
    await session.flush()
    return challenge


_NOT_OURS = object()
"""What `challenge_spent` answers for a challenge not ours, spent, expired or another holder's."""


async def challenge_spent(
    session: AsyncSession,
    settings: Settings,
    challenge: bytes,
    *,
    purpose: str,
    holder: str,
    now: datetime,
) -> uuid.UUID | object | None:
    """Spend the challenge the answer names (a conditional update: used once, whatever follows,
    even by two answers at once): the account it was issued for (None: for no account, a
    passwordless sign-in's) when it is one of ours for this purpose and holder, still valid;
    else `_NOT_OURS`."""
    spent = (
        await session.execute(
            update(PasskeyChallenge)
            .where(
                PasskeyChallenge.challenge_hash == challenge_hash(settings.secret_key, challenge),
                PasskeyChallenge.purpose == purpose,
                PasskeyChallenge.used_at.is_(None),
            )
            .values(used_at=now)
            .returning(
                PasskeyChallenge.expires_at,
                PasskeyChallenge.holder_hash,
                PasskeyChallenge.account_id,
            )
        )
    ).first()
    if (
        spent is None
        or spent.expires_at <= now
        or not constant_time_equals(spent.holder_hash, holder_hash(settings.secret_key, holder))
    ):
        return _NOT_OURS
    account_id: uuid.UUID | None = spent.account_id
    return account_id


async def spend_challenge(
    session: AsyncSession,
    settings: Settings,
    challenge: bytes,
    *,
    purpose: str,
    holder: str,
    account_id: uuid.UUID | None,
    now: datetime,
) -> bool:
    """Spend the challenge (`challenge_spent`); whether it was valid and issued for
    `account_id`."""
    spent = await challenge_spent(
        session, settings, challenge, purpose=purpose, holder=holder, now=now
    )
    return spent is not _NOT_OURS and spent == account_id


MALFORMED = (WebAuthnException, ValueError, TypeError, KeyError, AttributeError, RecursionError)
"""What py_webauthn's parsers raise on input that is no WebAuthn answer (bad base64url, JSON
of the wrong shape, JSON nested deeper than the parser goes: `clientDataJSON` of 100,000 `[`)."""


def parsed_registration(credential: dict[str, Any]) -> tuple[RegistrationCredential, bytes]:
    """The answer of `navigator.credentials.create()` and the challenge it names, or
    `PasskeyInvalid` when it is no such answer (before anything is looked at or changed)."""
    try:
        parsed = parse_registration_credential_json(credential)
        return parsed, parse_client_data_json(parsed.response.client_data_json).challenge
    except MALFORMED as exc:
        raise PasskeyInvalid(field="credential") from exc


def parsed_authentication(credential: dict[str, Any]) -> tuple[AuthenticationCredential, bytes]:
    """As `parsed_registration`, for the answer of `navigator.credentials.get()`."""
    try:
        parsed = parse_authentication_credential_json(credential)
        return parsed, parse_client_data_json(parsed.response.client_data_json).challenge
    except MALFORMED as exc:
        raise PasskeyInvalid(field="credential") from exc


def transports_of(stored: Sequence[str] | None) -> list[AuthenticatorTransport]:
    """A stored passkey's transports that the library knows (others are dropped)."""
    known = {t.value for t in AuthenticatorTransport}
    return [AuthenticatorTransport(t) for t in stored or () if t in known]


def creation_options(
    settings: Settings,
    *,
    user_id: bytes,
    user_name: str,
    display_name: str,
    challenge: bytes,
    existing: Iterable[tuple[bytes, Sequence[str] | None]],
) -> dict[str, Any]:
    """`navigator.credentials.create()`'s options, JSON-ready: a discoverable passkey with user
    verification, for the holder `user_id`, none of whose `existing` passkeys (credential id,
    transports) may be made again. The same for customers and staff."""
    options = generate_registration_options(
        rp_id=relying_party(settings),
        rp_name=settings.operator_name,
        user_name=user_name,
        user_id=user_id,
        user_display_name=display_name,
        challenge=challenge,
        timeout=int(CHALLENGE_TTL.total_seconds() * 1000),
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            require_resident_key=True,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=credential_id, transports=transports_of(transports))
            for credential_id, transports in existing
        ],
        supported_pub_key_algs=ALGORITHMS,
    )
    return options_to_json_dict(options)


def verified_creation(
    settings: Settings, parsed: RegistrationCredential, challenge: bytes
) -> VerifiedRegistration:
    """The new passkey of an answer to `creation_options`; `WebAuthnException` when it is not
    one made for `challenge` on this site with the holder verified."""
    return verify_registration_response(
        credential=parsed,
        expected_challenge=challenge,
        expected_rp_id=relying_party(settings),
        expected_origin=settings.passkey_origin_list,
        require_user_verification=True,
        supported_pub_key_algs=ALGORITHMS,
    )


def stored_fields(verified: VerifiedRegistration, parsed: RegistrationCredential) -> dict[str, Any]:
    """What a passkey row keeps of a verified registration (a customer's `Passkey` or a staff
    member's `StaffPasskey`): its credential, key, counter, transports, model, backup state."""
    return {
        "credential_id": verified.credential_id,
        "public_key": verified.credential_public_key,
        "sign_count": verified.sign_count,
        "transports": [t.value for t in parsed.response.transports or []],
        "aaguid": verified.aaguid,
        "backed_up": verified.credential_backed_up,
    }


def request_options(
    settings: Settings,
    challenge: bytes,
    allowed: Iterable[tuple[bytes, Sequence[str] | None]] = (),
) -> dict[str, Any]:
    """`navigator.credentials.get()`'s options, JSON-ready, with user verification: any
    discoverable passkey of this site (the authenticator offers the holder theirs), or only the
    `allowed` ones (credential id, transports: one account's, at the second step)."""
    options = generate_authentication_options(
        rp_id=relying_party(settings),
        challenge=challenge,
        timeout=int(CHALLENGE_TTL.total_seconds() * 1000),
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=credential_id, transports=transports_of(transports))
            for credential_id, transports in allowed
        ],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json_dict(options)


def verified_assertion(
    settings: Settings, parsed: AuthenticationCredential, challenge: bytes, public_key: bytes
) -> VerifiedAuthentication:
    """The checked answer to `request_options`, signed by the passkey whose key is `public_key`;
    `WebAuthnException` when it is not. Its sign count is the caller's to compare (the library's
    own check would refuse a copied key with no trace of it)."""
    return verify_authentication_response(
        credential=parsed,
        expected_challenge=challenge,
        expected_rp_id=relying_party(settings),
        expected_origin=settings.passkey_origin_list,
        credential_public_key=public_key,
        credential_current_sign_count=0,
        require_user_verification=True,
    )


# --------------------------------------------------------------------------------------------
# Registering a passkey (signed in)


async def counter_went_back(
    session: AsyncSession,
    passkey: Passkey,
    verified: VerifiedAuthentication,
    client: ClientInfo,
    now: datetime,
    *,
    step: str | None = None,
) -> bool:
    """Whether the answer's signature counter did not go past the stored one (a copied key,
    when either counts): then logged as `passkey_sign_count_regressed` (`step`: which ceremony,
    none for a passwordless sign-in) and the answer is to be refused."""
    if not (verified.new_sign_count or passkey.sign_count) or (
        verified.new_sign_count > passkey.sign_count
    ):
        return False
    details: dict[str, Any] = {"passkey_id": str(passkey.id), "stored": passkey.sign_count,
                               "presented": verified.new_sign_count}  # fmt: skip
    if step is not None:
        details["step"] = step
    await record_event(
        session, EventKind.passkey_sign_count_regressed, account_id=passkey.account_id,
        client=client, success=False, details=details, now=now,
    )  # fmt: skip
    return True


async def passkeys_of(session: AsyncSession, account_id: uuid.UUID) -> Sequence[Passkey]:
    stmt = select(Passkey).where(Passkey.account_id == account_id).order_by(Passkey.created_at)
    return (await session.execute(stmt)).scalars().all()


async def registration_options(
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
) -> Ceremony | Refused:
    """Options to make a passkey for `account`, once its password was given again, and a
    current code or recovery code when two-step verification with an app is on (guarded and
    counted as every re-entered password: `service.confirm_both_factors`). With two-step
    sign-in with a passkey on, the second factor is one of its passkeys' answer to
    `confirm_options` (`credential`) or a recovery code. The challenge is bound to the account
    and to this session. The account's passkeys are excluded (an authenticator that holds one
    says so instead of making a second)."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    refused = await confirm_both_factors(
        session, settings, account, password, code, kind=EventKind.passkey_added,
        client=client, now=now, counted=counted,
        passkey=confirmed_by(session, settings, account, auth, credential, client, now),
    )  # fmt: skip
    if refused is not None:
        return refused
    existing = await passkeys_of(session, account.id)
    challenge = await issue_challenge(
        session, settings, purpose=REGISTER, account_id=account.id, holder=str(auth.id), now=now
    )
    options = creation_options(
        settings,
        user_id=account.id.bytes,
        user_name=account.username,
        display_name=account.display_name or account.username,
        challenge=challenge,
        existing=((p.credential_id, p.transports) for p in existing),
    )
    return Ceremony(options, now + CHALLENGE_TTL)



async def confirm_options(
    session: AsyncSession, settings: Settings, account: Account, auth: AuthSession, now: datetime
) -> Ceremony:
    """Options to confirm a change with one of the account's own passkeys (the second factor
    of an account with two-step sign-in with a passkey: before another passkey is added, or the
    two-step turned off): a challenge bound to the account and to this session, used once."""
    relying_party(settings)
    own = await passkeys_of(session, account.id)
    if not own:
        raise NoPasskeyToConfirm()
    challenge = await issue_challenge(
        session, settings, purpose=CONFIRM, account_id=account.id, holder=str(auth.id), now=now
    )
    options = request_options(settings, challenge, ((p.credential_id, p.transports) for p in own))
    return Ceremony(options, now + CHALLENGE_TTL)


def confirmed_by(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    auth: AuthSession,
    credential: dict[str, Any] | None,
    client: ClientInfo,
    now: datetime,
) -> Callable[[], Awaitable[bool]] | None:
    """The check of `credential`, the answer to `confirm_options` (None when none was given):
    its challenge spent (once, whatever follows) and issued to this account and session, signed
    by one of the account's passkeys with user verification, its counter gone forward."""
    if credential is None:
        return None

    async def check() -> bool:
        # Malformed: `422 passkey-invalid` (field `credential`), nothing spent or counted.
        parsed, challenge = parsed_authentication(credential)
        if not await spend_challenge(
            session, settings, challenge, purpose=CONFIRM, holder=str(auth.id),
            account_id=account.id, now=now,
        ):  # fmt: skip
            return False
        passkey = (
            await session.execute(
                select(Passkey)
                .where(Passkey.credential_id == parsed.raw_id, Passkey.account_id == account.id)
                .with_for_update()
            )
        ).scalar_one_or_none()
        handle = parsed.response.user_handle
        if passkey is None or (handle is not None and handle != account.id.bytes):
            return False
        try:
            verified = verified_assertion(settings, parsed, challenge, passkey.public_key)
        except WebAuthnException:
            return False
        if await counter_went_back(session, passkey, verified, client, now, step="confirm"):
            return False
        passkey.sign_count = verified.new_sign_count
        passkey.last_used_at = now
        return True

    return check


class NoPasskeyToConfirm(Conflict):
    slug = "no-passkey"
    title = N_("You have no passkey to confirm with.")


async def register_passkey(
    session: AsyncSession,
    settings: Settings,
    account: Account,
    auth: AuthSession,
    *,
    credential: dict[str, Any],
    name: str | None,
    client: ClientInfo,
    now: datetime,
) -> Passkey | Refused:
    """Store the passkey the authenticator made for the challenge of `registration_options`
    (with user verification); the holder is told. Malformed input is refused before anything
    changes; an answer that does not verify spends its challenge all the same."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    label = clean_name(
        name
        if name is not None and name.strip()
        else client.device_summary or default_name(account.language)
    )
    parsed, challenge = parsed_registration(credential)
    if not await spend_challenge(
        session, settings, challenge, purpose=REGISTER, holder=str(auth.id),
        account_id=account.id, now=now,
    ):  # fmt: skip
        return await _registration_refused(
            session, account, client, now, PasskeyChallengeInvalid(field="credential")
        )
    try:
        verified = verified_creation(settings, parsed, challenge)
    except WebAuthnException:
        return await _registration_refused(
            session, account, client, now, PasskeyInvalid(field="credential")
        )
    passkey = Passkey(
        account_id=account.id, name=label, created_at=now, **stored_fields(verified, parsed)
    )
    try:
        async with session.begin_nested():
            session.add(passkey)
            await session.flush()
    except IntegrityError:
        return await _registration_refused(
            session, account, client, now, PasskeyTaken(field="credential")
        )
    await record_event(
        session, EventKind.passkey_added, account_id=account.id, client=client,
        details={"passkey_id": str(passkey.id)}, now=now,
    )  # fmt: skip
    await notify(session, account_id=account.id, template="security.passkey_added")
    return passkey


async def _registration_refused(
    session: AsyncSession,
    account: Account,
    client: ClientInfo,
    now: datetime,
    error: PasskeyChallengeInvalid | PasskeyInvalid | PasskeyTaken,
) -> Refused:
    await record_event(
        session, EventKind.passkey_added, account_id=account.id, client=client, success=False,
        details={"reason": error.slug}, now=now,
    )  # fmt: skip
    return Refused(error)


# --------------------------------------------------------------------------------------------
# Signing in with a passkey


async def login_options(session: AsyncSession, settings: Settings, *, now: datetime) -> Ceremony:
    """Options to sign in with any passkey of this site (discoverable credentials: the
    authenticator offers the holder theirs), and the handle the answer must come back with."""
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
    client: ClientInfo,
    now: datetime,
    replacing: str | None = None,
) -> SignedIn | Refused:
    """Sign in with the authenticator's answer to the challenge of `login_options` (whose
    `handle` comes back with it). `replacing`: as for `service.login`."""
    relying_party(settings)  # passkeys off: refused before anything is read or written
    parsed, challenge = parsed_authentication(credential)
    if not await spend_challenge(
        session, settings, challenge, purpose=LOGIN, holder=handle, account_id=None, now=now
    ):
        return await _login_refused(
            session, None, client, now, PasskeyChallengeInvalid(field="credential"), "challenge"
        )
    found = (
        await session.execute(select(Passkey).where(Passkey.credential_id == parsed.raw_id))
    ).scalar_one_or_none()
    if found is None:
        return await _login_refused(session, None, client, now, PasskeyRefused(), "unknown")
    # The account first, then its passkey: the order a rename or a removal takes them in.
    account = await session.get(
        Account, found.account_id, with_for_update=True, populate_existing=True
    )
    passkey = await session.get(Passkey, found.id, with_for_update=True, populate_existing=True)
    if account is None or passkey is None or account.status in SIGNED_OUT_FOR_GOOD:
        return await _login_refused(session, None, client, now, PasskeyRefused(), "unknown")
    handle_given = parsed.response.user_handle
    if handle_given is not None and handle_given != account.id.bytes:
        return await _login_refused(session, account, client, now, PasskeyRefused(), "user")
    try:
        verified = verified_assertion(settings, parsed, challenge, passkey.public_key)
    except WebAuthnException:
        return await _login_refused(session, account, client, now, PasskeyRefused(), "invalid")
    if await counter_went_back(session, passkey, verified, client, now):
        return Refused(PasskeyRefused())
    if account.status == AccountStatus.locked:
        return await _login_refused(
            session, account, client, now, AccountLocked(), "account_locked"
        )
    passkey.sign_count = verified.new_sign_count
    passkey.backed_up = verified.credential_backed_up
    passkey.last_used_at = now
    return await start_session(
        session, settings, account, client=client, now=now, mfa=True, replacing=replacing,
        method="passkey",
    )  # fmt: skip


async def _login_refused(
    session: AsyncSession,
    account: Account | None,
    client: ClientInfo,
    now: datetime,
    error: PasskeyChallengeInvalid | PasskeyRefused | AccountLocked,
    reason: str,
) -> Refused:
    await record_event(
        session, EventKind.login, account_id=account.id if account else None, client=client,
        success=False, details={"method": "passkey", "reason": reason}, now=now,
    )  # fmt: skip
    return Refused(error)


# --------------------------------------------------------------------------------------------
# The holder's passkeys


async def _own(session: AsyncSession, account: Account, passkey_id: uuid.UUID) -> Passkey:
    """One of the account's passkeys, locked (anyone else's is "not found")."""
    passkey = (
        await session.execute(
            select(Passkey)
            .where(Passkey.id == passkey_id, Passkey.account_id == account.id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if passkey is None:
        raise NotFound(N_("No passkey with this id."), field="passkey_id")
    return passkey


async def rename_passkey(
    session: AsyncSession,
    account: Account,
    passkey_id: uuid.UUID,
    name: str,
    *,
    client: ClientInfo,
    now: datetime,
) -> Passkey:
    label = clean_name(name)
    passkey = await _own(session, account, passkey_id)
    if passkey.name == label:
        return passkey
    passkey.name = label
    await session.flush()
    await record_event(
        session, EventKind.passkey_renamed, account_id=account.id, client=client,
        details={"passkey_id": str(passkey.id)}, now=now,
    )  # fmt: skip
    return passkey


async def remove_passkey(
    session: AsyncSession,
    account: Account,
    passkey_id: uuid.UUID,
    *,
    client: ClientInfo,
    now: datetime,
) -> None:
    """Remove a passkey (it signs in no more); the holder is told. The password remains, so
    removing the last one is fine — unless two-step sign-in with a passkey is on: then the last
    one is refused (`LastPasskeyOfTwoStep`) rather than leave a second step no device can give
    (the holder turns it off first, with their password)."""
    passkey = await _own(session, account, passkey_id)
    if await passkey_second_factor_on(session, account) and len(
        await passkeys_of(session, account.id)
    ) == 1:
        raise LastPasskeyOfTwoStep(field="passkey_id")
    await session.delete(passkey)
    await session.flush()
    await record_event(
        session, EventKind.passkey_removed, account_id=account.id, client=client,
        details={"passkey_id": str(passkey_id)}, now=now,
    )  # fmt: skip
    await notify(session, account_id=account.id, template="security.passkey_removed")
