"""`/api/v1/auth`: register, verify, sign in and out, forgotten passwords, unlocking."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.api.deps import API_PREFIX, DB, AppSettings, Language
from simcharge.auth import codes, service
from simcharge.auth.client import ClientInfo
from simcharge.auth.deps import (
    Client,
    CurrentCustomer,
    Customer,
    Limits,
    OptionalCustomer,
    clear_session_cookie,
    ensure_device_cookie,
    session_cookie,
    set_session_cookie,
)
from simcharge.auth.models import AuthSession, CodePurpose
from simcharge.auth.schemas import (
    Accepted,
    AccountOut,
    Done,
    ForgotIn,
    LoginIn,
    LoginOut,
    RegisterIn,
    RegisterOut,
    ResendIn,
    ResetIn,
    UnlockIn,
    UnlockRequestIn,
    VerifyIn,
    as_channel,
)
from simcharge.auth.sessions import csrf_token
from simcharge.config import Settings
from simcharge.errors import NotAuthenticated, Refused
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.translations import N_, translate

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"])


async def equalize(settings: AppSettings, started: float) -> None:
    """Register, forgot and unlock requests take at least `auth_min_response_ms`, whatever
    happened, so that the time of the answer does not tell a known account from an unknown one."""
    floor = settings.auth_min_response_ms / 1000
    remaining = floor - (time.monotonic() - started)
    await asyncio.sleep(max(0.0, remaining) + random.uniform(0, floor / 10))  # noqa: S311


def raise_refused(result: object) -> None:
    if isinstance(result, Refused):
        raise result.error


def two_step_method(a: Account, *, passkey_step: bool) -> Literal["app", "passkey"] | None:
    """Which second step a sign-in with the password asks (`passkey_step`: two-step sign-in
    with a passkey is on); the app's comes first, as at sign-in."""
    return "app" if a.totp_enabled_at is not None else "passkey" if passkey_step else None


def account_out(a: Account, *, passkey_step: bool) -> AccountOut:
    """The account as every answer shows it: `two_step` speaks of both second steps, the same
    in the sign-in's answer as in `GET /me`."""
    method = two_step_method(a, passkey_step=passkey_step)
    return AccountOut(
        id=a.id,
        username=a.username,
        display_name=a.display_name,
        email=a.email,
        email_verified=a.email_verified_at is not None,
        email_pending=a.email_pending,
        phone=a.phone,
        phone_verified=a.phone_verified_at is not None,
        phone_pending=a.phone_pending,
        language=a.language,
        status=a.status,
        two_step=method is not None,
        two_step_method=method,
        created_at=a.created_at,
        password_changed_at=a.password_changed_at,
    )


@router.post(
    "/register",
    response_model=RegisterOut,
    status_code=202,
    summary="Create an account; a code goes to each contact",
)
async def register(
    request: Request,
    body: RegisterIn,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
    language: Language,
) -> RegisterOut:
    started = time.monotonic()
    reg = service.Registration(
        username=body.username,
        password=body.password,
        email=body.email,
        phone=body.phone,
        language=body.language or language,
        display_name=body.display_name,
    )
    service.check_registration(reg)  # bad input uses up none of the address's registrations
    await limits.hit("register", client.ip)
    counted = await service.count_registration_codes(limits, reg)
    channels = await db.run(
        lambda s: service.register(
            s, settings, reg, client=client, now=utcnow(), limits=limits, counted=counted
        )
    )
    await equalize(settings, started)
    return RegisterOut(
        channels=channels,
        detail=translate(
            language,
            N_("If the account could be created, we have sent a code to each address you gave."),
        ),
    )


@router.post(
    "/verify",
    response_model=AccountOut,
    summary="Verify an e-mail address or phone number with its code",
)
async def verify(
    body: VerifyIn,
    customer: OptionalCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> AccountOut:
    """Signed in, or with `login` (the username until a contact is verified) and password —
    checked exactly as at sign-in: the same lock-out, log and per-address sign-in limit."""
    await limits.hit("verify", client.ip)
    if customer is None and not (body.login and body.password):
        raise NotAuthenticated(N_("Sign in, or give your login and password with the code."))
    channel = as_channel(body.channel)
    counted: codes.CodeCount | None
    if customer is None:
        await limits.hit("login", client.ip)
        checked = await db.run(
            lambda s: service.credentials_to_verify(
                s,
                settings,
                login=body.login or "",
                password=body.password or "",
                client=client,
                now=utcnow(),
            )
        )
        raise_refused(checked)
        assert not isinstance(checked, Refused)
        account_id = checked
        counted = await codes.count_check(limits, account_id, service.verify_purpose(channel))
    else:
        account_id = customer.account.id
        counted = await service.count_verification_check(limits, customer.account, channel)

    async def run(s: AsyncSession) -> AccountOut | Refused:
        if customer is None:
            done = await service.verify_contact_signed_out(
                s,
                settings,
                account_id=account_id,
                channel=channel,
                code=body.code,
                client=client,
                now=utcnow(),
                limits=limits,
                counted=counted,
            )
        else:
            account = await s.get(Account, account_id, with_for_update=True)
            assert account is not None
            done = await service.verify_contact(
                s, settings, account, channel, body.code, client=client, now=utcnow(),
                limits=limits, counted=counted,
            )  # fmt: skip
        if isinstance(done, Refused):
            return done
        return account_out(done, passkey_step=await service.passkey_second_factor_on(s, done))

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, AccountOut)
    return result


@router.post("/verify/resend", response_model=Done, summary="Send the verification code again")
async def resend(
    body: ResendIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> Done:
    await limits.hit("codes", client.ip)
    channel, now = as_channel(body.channel), utcnow()
    counted = await service.count_verification_send(db, limits, customer.account, channel, now)

    async def run(s: AsyncSession) -> None:
        account = await s.get(Account, customer.account.id, with_for_update=True)
        assert account is not None
        await service.resend_verification(
            s, settings, account, channel, now, client=client, limits=limits, counted=counted
        )

    await db.run(run)
    return Done()


@router.post("/login", response_model=LoginOut, summary="Sign in")
async def login(
    body: LoginIn,
    request: Request,
    response: Response,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> LoginOut:
    await limits.hit("login", client.ip)
    if body.mode == "cookie" and client.device_id is None:
        client = replace(client, device_id=uuid7().hex)
    # A cookie sign-in takes the place of the session whose cookie the browser held: it ends.
    held = request.cookies.get(session_cookie(settings)) if body.mode == "cookie" else None
    result = await db.run(
        lambda s: service.login(
            s,
            settings,
            login=body.login,
            password=body.password,
            second_factor=body.second_factor,
            client=client,
            now=utcnow(),
            replacing=held,
        )
    )
    raise_refused(result)
    assert isinstance(result, service.SignedIn)
    return signed_in_answer(
        request, response, settings, result, client, cookie=body.mode == "cookie"
    )


def signed_in_answer(
    request: Request,
    response: Response,
    settings: Settings,
    result: service.SignedIn,
    client: ClientInfo,
    *,
    cookie: bool,
) -> LoginOut:
    """The answer to a sign-in, by password or passkey: the session's token in the body, or (a
    browser's `cookie` mode) in the session cookie with the CSRF token in the body."""
    issued = result.issued
    if cookie:
        set_session_cookie(response, settings, issued.token)
        ensure_device_cookie(request, response, settings, client.device_id)
    return LoginOut(
        session_id=issued.session.id,
        token=None if cookie else issued.token,
        csrf_token=csrf_token(settings.secret_key, issued.session.id) if cookie else None,
        expires_at=issued.session.expires_at,
        new_device=result.new_device,
        account=account_out(result.account, passkey_step=result.passkey_step),
    )


async def _logout(customer: Customer, db: DB, client: ClientInfo, *, everywhere: bool) -> None:
    async def run(s: AsyncSession) -> None:
        auth = await s.get(AuthSession, customer.session.id)
        assert auth is not None
        await service.logout(s, auth, client=client, now=utcnow(), everywhere=everywhere)

    await db.run(run)


@router.post("/logout", response_model=Done, summary="End this session")
async def logout(
    customer: CurrentCustomer, response: Response, db: DB, settings: AppSettings, client: Client
) -> Done:
    await _logout(customer, db, client, everywhere=False)
    clear_session_cookie(response, settings)
    return Done()


@router.post("/logout-all", response_model=Done, summary="End every session of this account")
async def logout_all(
    customer: CurrentCustomer, response: Response, db: DB, settings: AppSettings, client: Client
) -> Done:
    await _logout(customer, db, client, everywhere=True)
    clear_session_cookie(response, settings)
    return Done()


@router.post(
    "/password/forgot",
    response_model=Accepted,
    status_code=202,
    summary="Send a password reset code to a registered contact",
)
async def forgot(
    body: ForgotIn,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
    language: Language,
) -> Accepted:
    started = time.monotonic()
    await limits.hit("codes", client.ip)
    channel, now = as_channel(body.channel), utcnow()
    counted = await service.count_signed_out_send(
        db, limits, login=body.login, purpose=CodePurpose.password_reset, channel=channel, now=now
    )
    await db.run(
        lambda s: service.forgot_password(
            s,
            settings,
            login=body.login,
            channel=channel,
            client=client,
            now=now,
            limits=limits,
            counted=counted,
        )
    )
    await equalize(settings, started)
    return Accepted(
        detail=translate(
            language, N_("If this account has a verified contact there, we have sent it a code.")
        )
    )


@router.post("/password/reset", response_model=Done, summary="Set a new password with the code")
async def reset(
    body: ResetIn, db: DB, settings: AppSettings, client: Client, limits: Limits, language: Language
) -> Done:
    await limits.hit("verify", client.ip)
    counted = await service.count_signed_out_check(
        db, limits, login=body.login, purpose=CodePurpose.password_reset
    )
    result = await db.run(
        lambda s: service.reset_password(
            s,
            settings,
            login=body.login,
            code=body.code,
            new_password=body.new_password,
            client=client,
            now=utcnow(),
            limits=limits,
            counted=counted,
        )
    )
    raise_refused(result)
    return Done(
        detail=translate(
            language,
            N_(
                "Your password was changed and all sessions were ended. Sign in with the new password."
            ),
        )
    )


@router.post(
    "/unlock/request",
    response_model=Accepted,
    status_code=202,
    summary="Send an unlock code for a locked account",
)
async def unlock_request(
    body: UnlockRequestIn,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
    language: Language,
) -> Accepted:
    started = time.monotonic()
    await limits.hit("codes", client.ip)
    channel, now = as_channel(body.channel), utcnow()
    counted = await service.count_signed_out_send(
        db, limits, login=body.login, purpose=CodePurpose.unlock, channel=channel, now=now
    )
    await db.run(
        lambda s: service.request_unlock(
            s,
            settings,
            login=body.login,
            channel=channel,
            client=client,
            now=now,
            limits=limits,
            counted=counted,
        )
    )
    await equalize(settings, started)
    return Accepted(
        detail=translate(
            language,
            N_(
                "If this account is locked and has a verified contact there, we have sent it a code."
            ),
        )
    )


@router.post("/unlock", response_model=Done, summary="Unlock the account with the code")
async def unlock(
    body: UnlockIn, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Done:
    await limits.hit("verify", client.ip)
    counted = await service.count_signed_out_check(
        db, limits, login=body.login, purpose=CodePurpose.unlock
    )
    result = await db.run(
        lambda s: service.unlock(
            s,
            settings,
            login=body.login,
            code=body.code,
            client=client,
            now=utcnow(),
            limits=limits,
            counted=counted,
        )
    )
    raise_refused(result)
    return Done()
