"""Passkeys in the API: signing in with one (`/api/v1/auth/passkeys/…`), or with one as the
second step after the password (`/api/v1/auth/login/passkey`), and the signed-in customer's own
(`/api/v1/me/passkeys…`, two-step sign-in with a passkey included). The ceremonies themselves
are in `auth.passkeys` and `auth.second_step`."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.auth import passkeys, second_step
from simcharge.auth import service as auth
from simcharge.auth.client import ClientInfo
from simcharge.auth.deps import (
    Client,
    CurrentCustomer,
    Customer,
    Limits,
    session_cookie,
)
from simcharge.auth.endpoints import raise_refused, signed_in_answer
from simcharge.auth.models import AuthSession, Passkey
from simcharge.auth.schemas import Done, LoginOut, PasswordIn, RecoveryCodesOut
from simcharge.auth.throttle import RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import MethodNotAllowed, Refused
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.schemas import Schema
from simcharge.kit.translations import N_

router = APIRouter(prefix=API_PREFIX, tags=["passkeys"])

CREDENTIAL_DOC = (
    "What `navigator.credentials.create()` or `get()` answered, as `PublicKeyCredential.toJSON()` "
    "writes it (binary fields in base64url)."
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CeremonyOut(Schema):
    public_key: dict[str, Any] = Field(
        description="The `publicKey` options for `navigator.credentials.create()` or `get()`, "
        "binary fields in base64url (`PublicKeyCredential.parse…OptionsFromJSON`)."
    )
    expires_at: datetime


class LoginCeremonyOut(CeremonyOut):
    ceremony: str = Field(description="Send it back with the answer (`POST …/login`).")


class PasskeyLoginIn(_In):
    ceremony: str = Field(max_length=128)
    credential: dict[str, Any] = Field(description=CREDENTIAL_DOC)
    mode: Literal["token", "cookie"] = Field(
        default="token", description="As for `POST /api/v1/auth/login`."
    )


class SecondStepIn(_In):
    ceremony: str = Field(
        max_length=128,
        description="`passkey.ceremony` of the `second-factor-required` answer to "
        "`POST /api/v1/auth/login`: this sign-in's, valid a few minutes, used once.",
    )
    credential: dict[str, Any] = Field(description=CREDENTIAL_DOC)
    mode: Literal["token", "cookie"] = Field(
        default="token", description="As for `POST /api/v1/auth/login`."
    )


class PasskeyTwoStepOut(Schema):
    enabled: bool = Field(description="After the password, a sign-in asks for a passkey.")
    enabled_at: datetime | None
    available: bool = Field(
        description="It may be turned on: the account has a passkey and no authenticator app "
        "(with the app on, a passkey is already accepted at the second step)."
    )


class ConfirmedIn(_In):
    """A change that asks the password and, with two-step verification on, its second factor."""

    password: str = Field(max_length=1024, description="The account's password, asked again.")
    code: str = Field(
        default="",
        max_length=64,
        description="With the authenticator app on: a current code or a recovery code. With "
        "two-step sign-in with a passkey on: a recovery code, unless `credential` is given "
        "(else `401 invalid-second-factor`, field `code`).",
    )
    credential: dict[str, Any] | None = Field(
        default=None,
        description="With two-step sign-in with a passkey (or the app) on: one of the account's "
        "passkeys' answer to `POST /me/passkeys/confirm/options`, as `PublicKeyCredential."
        "toJSON()` writes it (not this account's, this session's or verified: `401 "
        "invalid-second-factor`, field `credential`; malformed: `422 passkey-invalid`).",
    )


PasskeyOptionsIn = ConfirmedIn


class PasskeyRemoveIn(ConfirmedIn):
    """Removing a passkey: the password again (required), and with two-step verification on its
    second factor, as `ConfirmedIn` says."""

    password: str = Field(
        min_length=1, max_length=1024, description="The account's password, asked again."
    )


class PasskeyIn(_In):
    credential: dict[str, Any] = Field(description=CREDENTIAL_DOC)
    name: str | None = Field(
        default=None, max_length=256, description="What to call it; unset: the device's name."
    )


class PasskeyRenameIn(_In):
    name: str = Field(max_length=256)


class PasskeyOut(Schema):
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    backed_up: bool = Field(description="Synced to the holder's other devices.")
    transports: list[str]


def passkey_out(p: Passkey) -> PasskeyOut:
    return PasskeyOut.model_validate(p)


# --- signing in -----------------------------------------------------------------------------


@router.post(
    "/auth/passkeys/options",
    response_model=LoginCeremonyOut,
    summary="Start signing in with a passkey: the options for navigator.credentials.get()",
)
async def login_options(
    db: DB, settings: AppSettings, client: Client, limits: Limits
) -> LoginCeremonyOut:
    passkeys.relying_party(settings)
    await limits.hit("login", client.ip)
    ceremony = await db.run(lambda s: passkeys.login_options(s, settings, now=utcnow()))
    assert ceremony.handle is not None
    return LoginCeremonyOut(
        public_key=ceremony.options, expires_at=ceremony.expires_at, ceremony=ceremony.handle
    )


@router.post("/auth/passkeys/login", response_model=LoginOut, summary="Sign in with a passkey")
async def login(
    body: PasskeyLoginIn,
    request: Request,
    response: Response,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> LoginOut:
    """A session as `POST /api/v1/auth/login` opens one, with two-step verification satisfied
    (the authenticator verified its holder)."""
    return await _signed_in_with(
        passkeys.login_with_passkey, body, request, response, db, settings, client, limits
    )


class _SignsIn(Protocol):
    async def __call__(
        self,
        session: AsyncSession,
        settings: Settings,
        *,
        handle: str,
        credential: dict[str, Any],
        client: ClientInfo,
        now: datetime,
        replacing: str | None = None,
    ) -> auth.SignedIn | Refused: ...


async def _signed_in_with(
    finish: _SignsIn,
    body: PasskeyLoginIn | SecondStepIn,
    request: Request,
    response: Response,
    db: Database,
    settings: Settings,
    client: ClientInfo,
    limits: RateLimits,
) -> LoginOut:
    """A passkey ceremony's answer turned into a session (`finish`: passwordless, or the second
    step after a password), counted per address as every sign-in; a browser's session replaces
    the one its cookie held."""
    passkeys.relying_party(settings)
    await limits.hit("login", client.ip)
    cookie = body.mode == "cookie"
    if cookie and client.device_id is None:
        client = replace(client, device_id=uuid7().hex)
    held = request.cookies.get(session_cookie(settings)) if cookie else None
    result = await db.run(
        lambda s: finish(
            s, settings, handle=body.ceremony, credential=body.credential, client=client,
            now=utcnow(), replacing=held,
        )
    )  # fmt: skip
    raise_refused(result)
    assert isinstance(result, auth.SignedIn)
    return signed_in_answer(request, response, settings, result, client, cookie=cookie)


@router.post(
    "/auth/login/passkey",
    response_model=LoginOut,
    summary="Finish a sign-in with a password: a passkey as the second step",
)
async def login_second_step(
    body: SecondStepIn,
    request: Request,
    response: Response,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> LoginOut:
    """The second step of `POST /api/v1/auth/login` when it answered `second-factor-required`
    with a `passkey` ceremony: the answer of `navigator.credentials.get()` to its options (this
    account's passkeys only). A passkey of another account, or an answer that does not verify,
    is refused as a wrong code is (`invalid-second-factor`) and counted where a wrong code is:
    the address's sign-ins (here, as `POST /auth/login` counts them), the rows of the name the
    password was given under and of the account (`second_step.login_second_step`); past them,
    refused as a sign-in is then (`429 too-many-attempts` with `Retry-After`)."""
    return await _signed_in_with(
        second_step.login_second_step, body, request, response, db, settings, client, limits
    )


# --- my passkeys ----------------------------------------------------------------------------


async def _held(s: AsyncSession, customer: Customer) -> tuple[Account, AuthSession]:
    """The customer's account and session, locked (the account first, as sign-in takes it)."""
    account = await s.get(Account, customer.account.id, with_for_update=True)
    auth_session = await s.get(AuthSession, customer.session.id)
    assert account is not None
    assert auth_session is not None
    return account, auth_session


@router.get("/me/passkeys", response_model=list[PasskeyOut], summary="My passkeys")
async def my_passkeys(customer: CurrentCustomer, db: DB) -> list[PasskeyOut]:
    async with db.read() as s:
        rows = await passkeys.passkeys_of(s, customer.account.id)
    return [passkey_out(p) for p in rows]


@router.post(
    "/me/passkeys/confirm/options",
    response_model=CeremonyOut,
    summary="Options to confirm a change with one of my passkeys (navigator.credentials.get())",
)
async def confirm_options(customer: CurrentCustomer, db: DB, settings: AppSettings) -> CeremonyOut:
    """For the second factor of two-step sign-in with a passkey: the answer goes with the
    change as `credential` (adding a passkey, turning the two-step off). Bound to this account
    and this session, valid 5 minutes, used once; `409 no-passkey` without a passkey."""
    passkeys.relying_party(settings)

    async def run(s: AsyncSession) -> passkeys.Ceremony:
        account, auth_session = await _held(s, customer)
        return await passkeys.confirm_options(s, settings, account, auth_session, utcnow())

    result = await db.run(run)
    return CeremonyOut(public_key=result.options, expires_at=result.expires_at)


@router.post(
    "/me/passkeys/options",
    response_model=CeremonyOut,
    summary="Start adding a passkey (the password again): options for navigator.credentials.create()",
)
async def registration_options(
    body: PasskeyOptionsIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> CeremonyOut:
    passkeys.relying_party(settings)
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> passkeys.Ceremony | Refused:
        account, auth_session = await _held(s, customer)
        return await passkeys.registration_options(
            s, settings, account, auth_session, password=body.password, code=body.code,
            credential=body.credential, client=client, now=utcnow(), counted=counted,
        )  # fmt: skip

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, passkeys.Ceremony)
    return CeremonyOut(public_key=result.options, expires_at=result.expires_at)


@router.post(
    "/me/passkeys",
    response_model=PasskeyOut,
    status_code=201,
    summary="Add the passkey the authenticator made",
)
async def add_passkey(
    body: PasskeyIn, customer: CurrentCustomer, db: DB, settings: AppSettings, client: Client
) -> PasskeyOut:
    passkeys.relying_party(settings)

    async def run(s: AsyncSession) -> Passkey | Refused:
        account, auth_session = await _held(s, customer)
        return await passkeys.register_passkey(
            s, settings, account, auth_session, credential=body.credential, name=body.name,
            client=client, now=utcnow(),
        )  # fmt: skip

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, Passkey)
    return passkey_out(result)


@router.patch("/me/passkeys/{passkey_id}", response_model=PasskeyOut, summary="Rename a passkey")
async def rename_passkey(
    passkey_id: uuid.UUID, body: PasskeyRenameIn, customer: CurrentCustomer, db: DB,
    client: Client,
) -> PasskeyOut:  # fmt: skip
    async def run(s: AsyncSession) -> Passkey:
        account, _ = await _held(s, customer)
        return await passkeys.rename_passkey(
            s, account, passkey_id, body.name, client=client, now=utcnow()
        )

    return passkey_out(await db.run(run))


@router.post(
    "/me/passkeys/{passkey_id}/remove",
    response_model=Done,
    summary="Remove a passkey (the password again, and the second factor with two-step on)",
)
async def remove_passkey(
    passkey_id: uuid.UUID,
    body: PasskeyRemoveIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> Done:
    """Re-authenticated as every change to the ways in (ASVS V3.7.1): the password, and with
    two-step verification on its second factor — with the app, a current code or a recovery
    code (`code`); with two-step sign-in with a passkey, one of the passkeys' answer to
    `POST /me/passkeys/confirm/options` (`credential`) or a recovery code. Throttled and counted
    as every re-entered password. Another account's passkey: `404`; the last one while two-step
    sign-in with a passkey is on: `409 passkey-last-second-factor` (both before the password is
    tried). The holder is told."""
    if body.credential is not None:
        passkeys.parsed_authentication(body.credential)  # malformed: 422, nothing counted
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> Refused | None:
        account, auth_session = await _held(s, customer)
        return await second_step.remove_confirmed(
            s, settings, account, auth_session, passkey_id, password=body.password,
            code=body.code.strip(), credential=body.credential, client=client, now=utcnow(),
            counted=counted,
        )  # fmt: skip

    raise_refused(await db.run(run))
    return Done()


@router.delete(
    "/me/passkeys/{passkey_id}",
    response_model=Done,
    summary="Moved: removing a passkey is POST /api/v1/me/passkeys/{passkey_id}/remove",
    responses={405: {"description": "Always: the removal asks the password again, in a body."}},
)
async def remove_passkey_moved(passkey_id: uuid.UUID, customer: CurrentCustomer) -> Done:
    """Removing a passkey asks the password again (and the second factor with two-step on): a
    body some clients cannot send with `DELETE`. This answers `405 method-not-allowed` naming
    the route to use; nothing is read or changed."""
    raise MethodNotAllowed(
        N_("Removing a passkey asks for your password again: send it with POST to {route}."),
        headers={"Allow": "PATCH"}, route=f"/api/v1/me/passkeys/{passkey_id}/remove",
    )  # fmt: skip


# --- two-step sign-in with a passkey --------------------------------------------------------


def _two_step_out(state: second_step.PasskeyTwoStep) -> PasskeyTwoStepOut:
    return PasskeyTwoStepOut(
        enabled=state.enabled_at is not None,
        enabled_at=state.enabled_at,
        available=state.passkeys > 0 and not state.totp,
    )


@router.get(
    "/me/passkeys/two-step",
    response_model=PasskeyTwoStepOut,
    summary="Whether two-step sign-in with a passkey is on",
)
async def passkey_two_step(customer: CurrentCustomer, db: DB) -> PasskeyTwoStepOut:
    async with db.read() as s:
        return _two_step_out(await second_step.passkey_two_step(s, customer.account))


@router.post(
    "/me/passkeys/two-step",
    response_model=RecoveryCodesOut,
    summary="Turn on two-step sign-in with a passkey (the password again); get recovery codes",
)
async def enable_passkey_two_step(
    body: PasswordIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> RecoveryCodesOut:
    """After the password, a sign-in then asks for one of the account's passkeys (or a recovery
    code). For an account with a passkey and without an authenticator app."""
    passkeys.relying_party(settings)
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> list[str] | Refused:
        account, _ = await _held(s, customer)
        return await second_step.enable(
            s, settings, account, password=body.password, client=client, now=utcnow(),
            counted=counted,
        )  # fmt: skip

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, list)
    return RecoveryCodesOut(recovery_codes=result)


@router.post(
    "/me/passkeys/two-step/disable",
    response_model=Done,
    summary="Turn off two-step sign-in with a passkey (the password and a passkey's answer or a "
    "recovery code)",
)
async def disable_passkey_two_step(
    body: ConfirmedIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> Done:
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> Refused | None:
        account, auth_session = await _held(s, customer)
        return await second_step.disable(
            s, settings, account, auth_session, password=body.password, code=body.code,
            credential=body.credential, client=client, now=utcnow(), counted=counted,
        )  # fmt: skip

    raise_refused(await db.run(run))
    return Done()
