"""`/api/v1/me`: the signed-in customer's profile, security, lines and notices."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import privacy
from simcharge.accounts import service as accounts
from simcharge.accounts.models import Account
from simcharge.accounts.schemas import (
    CloseIn,
    LineAttachIn,
    LineVerifyIn,
    MeOut,
    NoticeOut,
    NoticesOut,
    OwnLine,
    ProfileIn,
    ReadIn,
)
from simcharge.api.deps import API_PREFIX, DB, AppSettings, Language
from simcharge.auth import codes, passkeys
from simcharge.auth import service as auth
from simcharge.auth.deps import (
    Client,
    CurrentCustomer,
    Customer,
    Limits,
    clear_device_cookie,
    clear_session_cookie,
    set_session_cookie,
)
from simcharge.auth.endpoints import account_out, raise_refused
from simcharge.auth.events import EventKind, events_of, record_event
from simcharge.auth.models import AuthSession, CodePurpose
from simcharge.auth.schemas import (
    CodeIn,
    Done,
    PasswordChangeIn,
    PasswordIn,
    RecoveryCodesOut,
    SecurityEventOut,
    SessionOut,
    TokenOut,
    TotpConfirmOut,
    TotpDisableIn,
    TotpStartOut,
)
from simcharge.auth.sessions import csrf_token, live_sessions, revoke, session_of_account
from simcharge.auth.totp import Enrolment
from simcharge.db import Database
from simcharge.errors import NotFound, Refused, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.schemas import Instant
from simcharge.kit.translations import N_
from simcharge.lines.models import Line
from simcharge.lines.service import line_balances
from simcharge.notifications.service import mark_read, notices_of, reading_of, unread_count
from simcharge.notifications.templates import render

router = APIRouter(prefix=f"{API_PREFIX}/me", tags=["me"])


async def _locked_account(s: AsyncSession, customer: Customer) -> Account:
    account = await s.get(Account, customer.account.id, with_for_update=True)
    assert account is not None
    return account


async def _auth_session(s: AsyncSession, customer: Customer) -> AuthSession:
    row = await s.get(AuthSession, customer.session.id, with_for_update=True)
    assert row is not None
    return row


def _new_token(
    customer: Customer, response: Response, settings: AppSettings, token: str
) -> TokenOut:
    """A rotated session token goes where the old one lived: the cookie, or the answer."""
    if customer.via_cookie:
        set_session_cookie(response, settings, token)
        return TokenOut(token=None, csrf_token=csrf_token(settings.secret_key, customer.session.id))
    return TokenOut(token=token)


def me_out(account: Account, *, passkey_step: bool) -> MeOut:
    """The profile; `two_step` speaks of both second steps (`passkey_step`: two-step sign-in
    with a passkey is on), as the sign-in's `account` does."""
    return MeOut(
        **account_out(account, passkey_step=passkey_step).model_dump(),
        time_zone=account.time_zone,
        format_locale=account.format_locale,
    )


async def _me_out(db: Database, account: Account) -> MeOut:
    async with db.read() as s:
        return me_out(account, passkey_step=await auth.passkey_second_factor_on(s, account))


def check_contact_change_input(account: Account, body: ProfileIn, *, passkey_step: bool) -> None:
    """What a change of contact needs that no count is spent on, as closing the account asks
    it (`privacy.check_closure_input`): the password (`current_password`) and, when two-step
    verification is on — with the app, or two-step sign-in with a passkey (`passkey_step`) —
    its second factor, a code (`code`) or one of the account's passkeys' answer to the confirm
    options (`credential`): `ValidationFailed` naming the missing field. A malformed
    `credential` is `422 passkey-invalid`."""
    if not body.current_password:
        raise ValidationFailed(N_("This field is required."), field="current_password")
    if body.credential is not None:
        passkeys.parsed_authentication(body.credential)
    two_step = account.totp_enabled_at is not None or passkey_step
    if two_step and not body.code.strip() and body.credential is None:
        raise ValidationFailed(N_("This field is required."), field="code")


def _as_current_password(refused: Refused) -> Refused:
    """`confirm_both_factors` names a wrong password `password`; here it is `current_password`."""
    if refused.error.field == "password":
        refused.error.field = "current_password"
    return refused


@router.get("", response_model=MeOut, summary="My profile")
async def me(customer: CurrentCustomer, db: DB) -> MeOut:
    return await _me_out(db, customer.account)


@router.patch(
    "",
    response_model=MeOut,
    summary="Change my profile, language, contacts, time zone or number format",
)
async def update_me(
    body: ProfileIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> MeOut:
    # Given (`null` too: it resets) or not: only what the body names changes.
    formats = {f: getattr(body, f) for f in accounts.FORMAT_FIELDS if f in body.model_fields_set}
    accounts.checked_formats(formats)  # bad input is refused before anything is counted
    contacts = body.email is not None or body.phone is not None
    counted: tuple[codes.CodeCount, ...] = ()
    confirmed: tuple[datetime | None, ...] = ()
    """When the password confirmed had been set (`password_changed_at`), once it was."""
    if contacts:
        # Bad input is refused before anything is counted: it uses up no code sends.
        async with db.read() as s:
            passkey_step = await auth.passkey_second_factor_on(s, customer.account)
        check_contact_change_input(customer.account, body, passkey_step=passkey_step)
        auth.check_profile_change(body.language, body.email, body.phone)
        await limits.hit("codes", client.ip)
        reauth = await auth.count_reauthentication(limits, client, customer.account.id)
        current_password = body.current_password or ""

        # A session alone does not move where codes and resets go: a stolen session would
        # otherwise take the account over (a new address, its code, then a reset). The
        # password — and, with two-step verification on, its second factor, as closing the
        # account asks it (`auth.confirm_both_factors`): a stolen session and password must
        # not move the contacts the second factor's recovery goes through — is confirmed in a
        # transaction of its own (a failure is logged and counted with the sign-in failures);
        # only then are the code sends counted, before the transaction that makes the change,
        # so that a transaction run again counts nothing twice and a slow Redis holds no row.
        async def confirm(s: AsyncSession) -> datetime | Refused | None:
            account, now = await _locked_account(s, customer), utcnow()
            refused = await auth.confirm_both_factors(
                s, settings, account, current_password, body.code.strip(),
                kind=EventKind.contact_change_requested, client=client, now=now, counted=reauth,
                passkey=passkeys.confirmed_by(
                    s, settings, account, await _auth_session(s, customer), body.credential,
                    client, now,
                ),
            )  # fmt: skip
            if refused is not None:
                return _as_current_password(refused)
            return account.password_changed_at

        checked = await db.run(confirm)
        raise_refused(checked)
        assert not isinstance(checked, Refused)
        confirmed = (checked,)
        counted = await auth.count_contact_change_sends(
            db, limits, customer.account, email=body.email, phone=body.phone, now=utcnow()
        )

    async def run(s: AsyncSession) -> Account | Refused:
        account = await _locked_account(s, customer)
        if confirmed and account.password_changed_at != confirmed[0]:
            # The password changed between the two transactions: what was confirmed is not
            # the password any more.
            return Refused(
                auth.InvalidCredentials(
                    N_("The current password is wrong."), field="current_password"
                )
            )
        return await accounts.update_profile(
            s,
            settings,
            account,
            display_name=body.display_name,
            language=body.language,
            email=body.email,
            phone=body.phone,
            formats=formats,
            client=client,
            now=utcnow(),
            limits=limits,
            counted=counted,
        )

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, Account)
    return await _me_out(db, result)


@router.get("/sessions", response_model=list[SessionOut], summary="My active sessions")
async def sessions(customer: CurrentCustomer, db: DB, settings: AppSettings) -> list[SessionOut]:
    async with db.read() as s:
        rows = await live_sessions(
            s, customer.account.id, policy=auth.policy(settings), now=utcnow()
        )
    return [
        SessionOut(
            id=r.id,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            expires_at=r.expires_at,
            ip=r.ip,
            user_agent=r.user_agent,
            two_step=r.mfa,
            current=r.id == customer.session.id,
        )
        for r in rows
    ]


@router.delete("/sessions/{session_id}", response_model=Done, summary="End one of my sessions")
async def end_session(
    session_id: uuid.UUID, customer: CurrentCustomer, db: DB, client: Client
) -> Done:
    async def run(s: AsyncSession) -> None:
        row = await session_of_account(s, customer.account.id, session_id)
        if row is None:
            raise NotFound(
                N_("No session with id {session_id}."),
                field="session_id",
                session_id=str(session_id),
            )
        if not await revoke(s, row, "ended_by_customer", utcnow()):
            return  # ended already (the same request again): nothing to do, nothing to log
        await record_event(
            s,
            EventKind.session_revoked,
            account_id=customer.account.id,
            client=client,
            details={"session_id": str(session_id)},
        )

    await db.run(run)
    return Done()


@router.get(
    "/security-events",
    response_model=list[SecurityEventOut],
    summary="Sign-ins, changes and alerts of my account, newest first",
)
async def security_events(
    customer: CurrentCustomer,
    db: DB,
    limit: int = Query(default=50, ge=1, le=200),
    before: Instant | None = Query(
        default=None, description="The next page: the last event's `created_at`…"
    ),
    before_id: uuid.UUID | None = Query(
        default=None, description="… and its `id` (events at the same time)"
    ),
) -> list[SecurityEventOut]:
    async with db.read() as s:
        rows = await events_of(
            s, customer.account.id, limit=limit, before=before, before_id=before_id
        )
    return [SecurityEventOut.model_validate(r) for r in rows]


@router.post(
    "/password",
    response_model=TokenOut,
    summary="Change my password (other sessions end; this one gets a new token)",
)
async def change_password(
    body: PasswordChangeIn,
    customer: CurrentCustomer,
    response: Response,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> TokenOut:
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> str | Refused:
        return await auth.change_password(
            s,
            settings,
            await _auth_session(s, customer),
            await _locked_account(s, customer),
            current=body.current_password,
            new=body.new_password,
            client=client,
            now=utcnow(),
            counted=counted,
        )

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, str)
    return _new_token(customer, response, settings, result)


@router.post(
    "/totp",
    response_model=TotpStartOut,
    summary="Start two-step verification: a secret for an authenticator app",
)
async def start_totp(
    body: PasswordIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> TotpStartOut:
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> Enrolment | Refused:
        return await auth.start_totp(
            s,
            settings,
            await _locked_account(s, customer),
            password=body.password,
            client=client,
            now=utcnow(),
            counted=counted,
        )

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, Enrolment)
    return TotpStartOut(secret=result.secret, otpauth_uri=result.uri, qr_svg=result.qr_svg)


@router.post(
    "/totp/confirm",
    response_model=TotpConfirmOut,
    summary="Turn two-step verification on with a first code; get recovery codes",
)
async def confirm_totp(
    body: CodeIn,
    customer: CurrentCustomer,
    response: Response,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> TotpConfirmOut:
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> auth.TotpEnabled | Refused:
        return await auth.confirm_totp(
            s,
            settings,
            await _auth_session(s, customer),
            await _locked_account(s, customer),
            code=body.code,
            client=client,
            now=utcnow(),
            counted=counted,
        )

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, auth.TotpEnabled)
    token = _new_token(customer, response, settings, result.token)
    return TotpConfirmOut(
        recovery_codes=result.recovery_codes, token=token.token, csrf_token=token.csrf_token
    )


@router.post("/totp/disable", response_model=Done, summary="Turn two-step verification off")
async def disable_totp(
    body: TotpDisableIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> Done:
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> Refused | None:
        return await auth.disable_totp(
            s,
            settings,
            await _locked_account(s, customer),
            password=body.password,
            code=body.code,
            client=client,
            now=utcnow(),
            counted=counted,
        )

    raise_refused(await db.run(run))
    return Done()


@router.post(
    "/totp/recovery-codes", response_model=RecoveryCodesOut, summary="Replace my recovery codes"
)
async def recovery_codes(
    body: PasswordIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> RecoveryCodesOut:
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> list[str] | Refused:
        return await auth.regenerate_recovery_codes(
            s,
            settings,
            await _locked_account(s, customer),
            password=body.password,
            client=client,
            now=utcnow(),
            counted=counted,
        )

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, list)
    return RecoveryCodesOut(recovery_codes=result)


@router.post("/lock", response_model=Done, summary="Lock my account now: every session ends")
async def lock(
    customer: CurrentCustomer, response: Response, db: DB, settings: AppSettings, client: Client
) -> Done:
    async def run(s: AsyncSession) -> int:
        return await auth.lock_account(
            s, await _locked_account(s, customer), reason="customer", client=client, now=utcnow()
        )

    await db.run(run)
    clear_session_cookie(response, settings)
    return Done()


def export_response(document: dict[str, object], now: datetime) -> JSONResponse:
    """An export as a download that no cache keeps (the portal's button gets the same)."""
    return JSONResponse(
        document,
        headers={
            "content-disposition": f'attachment; filename="my-data-{now:%Y%m%d}.json"',
            "cache-control": "private, no-store",
        },
    )


@router.get(
    "/export",
    summary="A copy of everything held about my account (JSON, a download)",
    response_class=JSONResponse,
)
async def export(customer: CurrentCustomer, db: DB, limits: Limits) -> JSONResponse:
    await privacy.count_export(limits, customer.account.id)
    now = utcnow()
    async with db.read() as s:
        account = await s.get(Account, customer.account.id)
        assert account is not None
        document = await privacy.export_account(s, account, now=now)
    return export_response(document, now)


@router.post(
    "/close",
    response_model=Done,
    summary="Close my account: password (and the second factor) again; lines detached, personal "
    "data erased",
)
async def close(
    body: CloseIn,
    customer: CurrentCustomer,
    response: Response,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> Done:
    # Bad input (a missing password or second factor, a malformed passkey answer) is refused
    # before anything is counted.
    async with db.read() as s:
        passkey_step = await auth.passkey_second_factor_on(s, customer.account)
    privacy.check_closure_input(
        customer.account, body.password, body.code, body.credential, passkey_step=passkey_step
    )
    counted = await auth.count_reauthentication(limits, client, customer.account.id)

    async def run(s: AsyncSession) -> privacy.Closed | Refused:
        account = await _locked_account(s, customer)
        return await privacy.close_account(
            s,
            settings,
            account,
            password=body.password,
            code=body.code,
            credential=body.credential,
            auth_session=await _auth_session(s, customer),
            client=client,
            now=utcnow(),
            counted=counted,
        )

    raise_refused(await db.run(run))
    clear_session_cookie(response, settings)
    clear_device_cookie(response, settings)
    return Done()


async def _own_line_view(s: AsyncSession, line: Line) -> OwnLine:
    return OwnLine(
        id=line.id,
        msisdn=line.msisdn,
        iccid=line.iccid,
        label=line.label,
        activation_code=line.activation_code,
        balances=await line_balances(s, line),
    )


@router.get("/lines", response_model=list[OwnLine], summary="My lines and what they hold")
async def my_lines(customer: CurrentCustomer, db: DB) -> list[OwnLine]:
    async with db.read() as s:
        return [
            await _own_line_view(s, line)
            for line in await accounts.own_lines(s, customer.account.id)
        ]


@router.get("/lines/{line_id}", response_model=OwnLine, summary="One of my lines")
async def my_line(line_id: uuid.UUID, customer: CurrentCustomer, db: DB) -> OwnLine:
    async with db.read() as s:
        return await _own_line_view(s, await accounts.own_line(s, customer.account.id, line_id))


@router.post(
    "/lines",
    response_model=Done,
    status_code=202,
    summary="Add one of the operator's lines: a code goes to it by SMS",
)
async def add_line(
    body: LineAttachIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> Done:
    await limits.hit("codes", client.ip)
    counted = await accounts.count_line_attach(db, limits, customer.account, body.msisdn, utcnow())
    await db.run(
        lambda s: accounts.request_line_attach(
            s, settings, customer.account, body.msisdn, client=client, now=utcnow(), limits=limits,
            counted=counted,
        )
    )
    return Done()


@router.post("/lines/verify", response_model=OwnLine, summary="Add the line with its SMS code")
async def verify_line(
    body: LineVerifyIn,
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    client: Client,
    limits: Limits,
) -> OwnLine:
    await limits.hit("verify", client.ip)
    counted = await codes.count_check(limits, customer.account.id, CodePurpose.attach_line)

    async def run(s: AsyncSession) -> OwnLine | Refused:
        result = await accounts.confirm_line_attach(
            s,
            settings,
            customer.account,
            body.msisdn,
            body.code,
            client=client,
            now=utcnow(),
            limits=limits,
            counted=counted,
        )
        if isinstance(result, Refused):
            return result
        return await _own_line_view(s, result)

    result = await db.run(run)
    raise_refused(result)
    assert isinstance(result, OwnLine)
    return result


@router.get("/notices", response_model=NoticesOut, summary="My notices, newest first")
async def notices(
    customer: CurrentCustomer,
    db: DB,
    settings: AppSettings,
    language: Language,
    limit: int = Query(default=50, ge=1, le=200),
    unread_only: bool = False,
) -> NoticesOut:
    async with db.read() as s:
        rows = await notices_of(s, customer.account.id, limit=limit, unread_only=unread_only)
        unread = await unread_count(s, customer.account.id)
    lang = customer.account.language or language
    reading = reading_of(customer.account, settings)
    out = []
    for n in rows:
        text = render(
            n.template,
            lang,
            {"operator": settings.operator_name, "base_url": settings.base_url, **n.params},
            zone=reading.zone,
            locale=reading.locale,
        )
        out.append(
            NoticeOut(
                id=n.id,
                template=n.template,
                title=text.subject,
                body=text.text,
                params=n.params,
                line_id=n.line_id,
                created_at=n.created_at,
                read_at=n.read_at,
            )
        )
    return NoticesOut(unread=unread, notices=out)


@router.post("/notices/read", response_model=Done, summary="Mark notices read")
async def read_notices(body: ReadIn, customer: CurrentCustomer, db: DB) -> Done:
    await db.run(lambda s: mark_read(s, customer.account.id, body.ids, utcnow()))
    return Done()
