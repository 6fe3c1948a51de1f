"""The security page: password, two-step verification, sessions, sign-in history, alerts,
locking the account (and unlocking it again with a code), downloading a copy of one's data and
closing the account."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any, Protocol

import pyotp
import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import privacy
from simcharge.accounts.endpoints import export_response
from simcharge.accounts.models import Account
from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import error_texts
from simcharge.auth import passkeys, second_step, totp
from simcharge.auth import service as auth
from simcharge.auth.client import ClientInfo
from simcharge.auth.deps import (
    Client,
    Limits,
    clear_device_cookie,
    clear_session_cookie,
    set_session_cookie,
)
from simcharge.auth.endpoints import equalize
from simcharge.auth.events import EventKind, events_of, record_event
from simcharge.auth.models import AuthSession, CodePurpose
from simcharge.auth.service import Reauthentication
from simcharge.auth.sessions import live_sessions, revoke, session_of_account
from simcharge.auth.throttle import RateLimits
from simcharge.auth.totp import Enrolment
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import NotFound, Refused, SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import SealBroken, constant_time_equals, keyed_hash, unseal_any
from simcharge.kit.translations import N_, translate
from simcharge.notifications.service import notices_of
from simcharge.notifications.templates import notice_title
from simcharge.portal.account import _uuid, require
from simcharge.portal.public import _channel
from simcharge.portal.web import Page, Visitor, form_of, redirect, render

router = APIRouter(include_in_schema=False)

EVENT_LABELS: dict[str, str] = {
    EventKind.registered: N_("Account created"),
    EventKind.registration_attempt_on_taken_contact: N_("Someone tried to register with your contact"),
    EventKind.contact_verified: N_("Contact verified"),
    EventKind.contact_change_requested: N_("Contact change requested"),
    EventKind.contact_changed: N_("Contact changed"),
    EventKind.login: N_("Sign-in"),
    EventKind.login_locked_out: N_("Sign-in refused: too many attempts"),
    EventKind.mfa_required: N_("Two-step code asked"),
    EventKind.new_device: N_("Sign-in from a new device"),
    EventKind.logout: N_("Signed out"),
    EventKind.logout_all: N_("Signed out everywhere"),
    EventKind.session_revoked: N_("Session ended"),
    EventKind.session_expired: N_("Session expired"),
    EventKind.password_changed: N_("Password changed"),
    EventKind.password_reset_requested: N_("Password reset asked"),
    EventKind.password_reset: N_("Password reset"),
    EventKind.totp_enrolment_started: N_("Two-step set-up started"),
    EventKind.totp_enabled: N_("Two-step verification turned on"),
    EventKind.totp_disabled: N_("Two-step verification turned off"),
    EventKind.recovery_codes_regenerated: N_("New recovery codes"),
    EventKind.recovery_code_used: N_("Recovery code used"),
    EventKind.account_locked: N_("Account locked"),
    EventKind.unlock_requested: N_("Unlock code asked"),
    EventKind.account_unlocked: N_("Account unlocked"),
    EventKind.line_attach_requested: N_("Line addition asked"),
    EventKind.line_attached: N_("Line added"),
    EventKind.code_rejected: N_("Wrong code entered"),
    EventKind.csrf_refused: N_("Change refused: it did not come from this site"),
    EventKind.alert_sent: N_("Security alert sent"),
    EventKind.account_closed: N_("Account closure"),
    EventKind.passkey_added: N_("Passkey added"),
    EventKind.passkey_renamed: N_("Passkey renamed"),
    EventKind.passkey_removed: N_("Passkey removed"),
    EventKind.passkey_sign_count_regressed: N_("Sign-in refused: the passkey may have been copied"),
    EventKind.passkey_second_factor_enabled: N_("Two-step sign-in with a passkey turned on"),
    EventKind.passkey_second_factor_disabled: N_("Two-step sign-in with a passkey turned off"),
}

REFUSED_LABELS: dict[str, str] = {
    # A refused attempt, said as one (its kind's label reads as done: "Password changed").
    EventKind.password_changed: N_("Password change refused"),
    EventKind.totp_enrolment_started: N_("Two-step set-up refused"),
    EventKind.totp_enabled: N_("Turning on two-step verification refused"),
    EventKind.totp_disabled: N_("Turning off two-step verification refused"),
    EventKind.recovery_codes_regenerated: N_("New recovery codes refused"),
    EventKind.contact_change_requested: N_("Contact change refused"),
    EventKind.line_attached: N_("Line addition refused"),
    EventKind.account_closed: N_("Account closure refused"),
    EventKind.passkey_added: N_("Adding a passkey refused"),
    EventKind.passkey_removed: N_("Removing a passkey refused"),
    EventKind.passkey_second_factor_enabled: N_(
        "Turning on two-step sign-in with a passkey refused"
    ),
    EventKind.passkey_second_factor_disabled: N_(
        "Turning off two-step sign-in with a passkey refused"
    ),
    # Labels that say the refusal already: no "refused" after them.
    EventKind.login_locked_out: EVENT_LABELS[EventKind.login_locked_out],
    EventKind.code_rejected: EVENT_LABELS[EventKind.code_rejected],
    EventKind.csrf_refused: EVENT_LABELS[EventKind.csrf_refused],
    EventKind.passkey_sign_count_regressed: EVENT_LABELS[EventKind.passkey_sign_count_regressed],
    EventKind.registration_attempt_on_taken_contact: EVENT_LABELS[
        EventKind.registration_attempt_on_taken_contact
    ],
}
"""The security log's label of a refused event (`success` false); a kind not here (a sign-in:
a noun, "Sign-in") is its label followed by "refused"."""


async def _security_page(
    request: Request, page: Visitor, db: DB, settings: AppSettings, *, status: int = 200,
    **extra: Any,
) -> Response:
    account_id = require(page)
    assert page.customer is not None
    async with db.read() as s:
        sessions = await live_sessions(s, account_id, policy=auth.policy(settings), now=utcnow())
        events = await events_of(s, account_id, limit=30)
        notices = await notices_of(s, account_id, limit=50)
        keys = await passkeys.passkeys_of(s, account_id)
        passkey_two_step = await second_step.passkey_two_step(s, page.account)
    alerts = []
    for n in notices:
        if n.template.startswith("security."):
            title = notice_title(n.id, n.template, page.language, n.params,
                                 operator=settings.operator_name, base_url=settings.base_url)
            alerts.append({"title": title, "at": n.created_at})
    context: dict[str, Any] = {
        "errors": {}, "error": None, "good": None, "form": None, "renaming": None,
        "removing": None,
    }
    context.update(extra)
    return render(
        request, page, "security.html", status=status, sessions=sessions, events=events,
        labels=EVENT_LABELS, refused_labels=REFUSED_LABELS, alerts=alerts[:10],
        current=page.customer.session.id,
        two_step=page.account.totp_enabled_at is not None, passkeys=keys,
        passkey_two_step=passkey_two_step,
        passkeys_on=settings.passkey_rp is not None, **context,
    )


@router.get("/account/security")
async def security(
    request: Request, page: Page, db: DB, settings: AppSettings, done: str | None = None
) -> Response:
    good = {
        "password": N_("Your password was changed. Your other sessions have ended."),
        "totp_off": N_("Two-step verification is off."),
        "session": N_("The session has ended."),
        "passkey_added": N_("Your passkey was added. You can now sign in with it."),
        "passkey_renamed": N_("The passkey was renamed."),
        "passkey_removed": N_("The passkey was removed; it can no longer sign in."),
        "passkey_two_step_off": N_("Two-step sign-in with a passkey is off."),
    }.get(done or "")
    return await _security_page(request, page, db, settings, good=good)


async def _locked(s: AsyncSession, page: Visitor) -> Account:
    account = await s.get(Account, page.account.id, with_for_update=True)
    assert account is not None
    return account


async def _auth_session(s: AsyncSession, page: Visitor) -> AuthSession:
    assert page.customer is not None
    row = await s.get(AuthSession, page.customer.session.id, with_for_update=True)
    assert row is not None
    return row


def passkey_answer(text: str) -> dict[str, Any] | None:
    """A passkey's answer the page's script put in the form (`credential`, JSON); none when
    empty (no script, or a recovery code typed instead). Not an object: refused as a wrong one."""
    if not text:
        return None
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        answer = None
    return answer if isinstance(answer, dict) else {}


def _refused(result: object) -> None:
    if isinstance(result, Refused):
        raise result.error


@router.post("/account/security/password")
async def change_password(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    require(page)
    form = await form_of(request, page)
    try:
        if form.get("new_password", "") != form.get("confirm_password", ""):
            raise ValidationFailed(
                N_("The two passwords are not the same."), field="confirm_password"
            )

        counted = await auth.count_reauthentication(limits, client, page.account.id)

        async def run(s: AsyncSession) -> str | Refused:
            return await auth.change_password(
                s, settings, await _auth_session(s, page), await _locked(s, page),
                current=form.get("current_password", ""), new=form.get("new_password", ""),
                client=client, now=utcnow(), counted=counted,
            )

        result = await db.run(run)
        _refused(result)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="password",
        )
    assert isinstance(result, str)
    response = redirect("/account/security?done=password")
    set_session_cookie(response, settings, result)
    return response


@router.post("/account/security/totp")
async def start_totp(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    require(page)
    form = await form_of(request, page)
    try:
        counted = await auth.count_reauthentication(limits, client, page.account.id)
        result = await db.run(
            lambda s: _start(s, settings, page, form.get("password", ""), client, counted)
        )
        _refused(result)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="totp",
        )
    assert isinstance(result, Enrolment)
    return render(
        request, page, "totp.html", enrolment=result, errors={}, error=None,
        setup=_setup_token(settings, page, result.secret, int(utcnow().timestamp())),
    )  # fmt: skip


SETUP_SHOWN_FOR = 15 * 60
"""Seconds a set-up's page may be shown again after a wrong code (`confirm_totp`)."""
_SETUP = "totp-setup-page"


def _setup_token(settings: Settings, page: Visitor, secret: str, issued: int) -> str:
    """What the set-up's page carries (`setup`) to be shown again after a wrong code: when it
    was first shown, and a MAC of that time, the session it was shown to and the secret. Only
    the session that gave the password and saw the key can have the key shown again, for
    `SETUP_SHOWN_FOR` (the sixteenth round's security review: another session of the account —
    a stolen cookie — posting a wrong code was shown the key, then turned two-step on with it)."""
    assert page.customer is not None
    mac = keyed_hash(
        settings.secret_key, _SETUP,
        f"{page.customer.session.id}:{issued}:{secret}",
    )  # fmt: skip
    return f"{issued}.{mac}"


def _shown_again(settings: Settings, page: Visitor, secret: str, token: str) -> int | None:
    """When the set-up was first shown, if `token` is this session's for this secret and still
    fresh; None otherwise."""
    issued_text, _, _mac = token.partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12:
        return None
    issued = int(issued_text)
    if not 0 <= utcnow().timestamp() - issued <= SETUP_SHOWN_FOR:
        return None
    expected = _setup_token(settings, page, secret, issued)
    return issued if constant_time_equals(expected, token) else None


async def _start(
    s: AsyncSession, settings: AppSettings, page: Visitor, password: str, client: Client,
    counted: auth.Reauthentication,
) -> Enrolment | Refused:
    return await auth.start_totp(
        s, settings, await _locked(s, page), password=password, client=client, now=utcnow(),
        counted=counted,
    )


def _pending_enrolment(settings: Settings, account: Account) -> Enrolment | None:
    """The set-up started and not yet confirmed, to show again as `start_totp` showed it (the
    same secret: the app that scanned it keeps working); None when there is none to go on
    with — two-step verification on already, no set-up, or one no key of the ring opens."""
    if account.totp_enabled_at is not None or not account.totp_secret_sealed:
        return None
    try:
        secret, _ = unseal_any(settings.secret_keys, totp.PURPOSE, account.totp_secret_sealed)
    except SealBroken:
        return None
    uri = pyotp.TOTP(secret.decode()).provisioning_uri(
        name=account.username, issuer_name=settings.operator_name
    )
    qr = segno.make(uri, error="m").svg_data_uri(scale=4)
    return Enrolment(secret.decode(), uri, qr)


@router.post("/account/security/totp/confirm")
async def confirm_totp(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    require(page)
    form = await form_of(request, page)

    async def run(s: AsyncSession) -> auth.TotpEnabled | Refused:
        return await auth.confirm_totp(
            s, settings, await _auth_session(s, page), await _locked(s, page),
            code=form.get("code", "").strip(), client=client, now=utcnow(), counted=counted,
        )

    try:
        counted = await auth.count_reauthentication(limits, client, page.account.id)
        result = await db.run(run)
        _refused(result)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        # A wrong code (or too many): the same set-up again, its QR code and key, to type the
        # code the app shows now; no set-up to go on with (already on, or sealed under a key
        # since dropped): the security page says why.
        async with db.read() as s:
            account = await s.get(Account, page.account.id)
        enrolment = _pending_enrolment(settings, account) if account is not None else None
        issued = (
            _shown_again(settings, page, enrolment.secret, form.get("setup", ""))
            if enrolment is not None and isinstance(exc, auth.InvalidSecondFactor)
            else None
        )
        if enrolment is not None and issued is not None:
            # Only to the session that gave the password and saw the key, while fresh, and for
            # a wrong code (not a refusal for too many: the form is not to be tried again now).
            return render(
                request, page, "totp.html", status=exc.status, headers=exc.headers,
                enrolment=enrolment, errors=errors, error=summary,
                setup=_setup_token(settings, page, enrolment.secret, issued),
            )  # fmt: skip
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="totp",
        )
    assert isinstance(result, auth.TotpEnabled)
    response = render(request, page, "recovery_codes.html", codes=result.recovery_codes)
    set_session_cookie(response, settings, result.token)
    return response


@router.post("/account/security/totp/disable")
async def disable_totp(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    require(page)
    form = await form_of(request, page)

    async def run(s: AsyncSession) -> Refused | None:
        return await auth.disable_totp(
            s, settings, await _locked(s, page), password=form.get("password", ""),
            code=form.get("code", "").strip(), client=client, now=utcnow(), counted=counted,
        )

    try:
        counted = await auth.count_reauthentication(limits, client, page.account.id)
        _refused(await db.run(run))
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="totp_off",
        )
    return redirect("/account/security?done=totp_off")


@router.post("/account/security/recovery-codes")
async def recovery_codes(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    return await _showing_codes(
        request, page, db, settings, client, limits, auth.regenerate_recovery_codes, form="codes"
    )


class _GivesCodes(Protocol):
    async def __call__(
        self,
        session: AsyncSession,
        settings: Settings,
        account: Account,
        *,
        password: str,
        client: ClientInfo,
        now: datetime,
        counted: Reauthentication,
    ) -> list[str] | Refused: ...


async def _showing_codes(
    request: Request,
    page: Visitor,
    db: Database,
    settings: Settings,
    client: ClientInfo,
    limits: RateLimits,
    action: _GivesCodes,
    *,
    form: str,
) -> Response:
    """A change asking the password again whose answer is new recovery codes (new codes; two-step
    sign-in with a passkey turned on): the codes shown once, or the security page with the
    refusal at the form `form`."""
    require(page)
    fields = await form_of(request, page)

    async def run(s: AsyncSession) -> list[str] | Refused:
        return await action(
            s, settings, await _locked(s, page), password=fields.get("password", ""),
            client=client, now=utcnow(), counted=counted,
        )  # fmt: skip

    try:
        counted = await auth.count_reauthentication(limits, client, page.account.id)
        result = await db.run(run)
        _refused(result)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form=form,
        )  # fmt: skip
    assert isinstance(result, list)
    return render(request, page, "recovery_codes.html", codes=result)


@router.post("/account/security/sessions/{session_id}/end")
async def end_session(
    session_id: str, request: Request, page: Page, db: DB, client: Client
) -> Response:
    account_id = require(page)
    await form_of(request, page)
    sid = _uuid(session_id, "session_id")

    async def run(s: AsyncSession) -> None:
        row = await session_of_account(s, account_id, sid)
        if row is None:
            raise NotFound(field="session_id")
        if not await revoke(s, row, "ended_by_customer", utcnow()):
            return  # ended already (the form sent again): nothing to do, nothing to log
        await record_event(
            s, EventKind.session_revoked, account_id=account_id, client=client,
            details={"session_id": str(sid)},
        )

    await db.run(run)
    assert page.customer is not None
    if sid == page.customer.session.id:
        return redirect("/login")
    return redirect("/account/security?done=session")


@router.post("/account/security/sessions/end-all")
async def end_all_sessions(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client
) -> Response:
    require(page)
    await form_of(request, page)

    async def run(s: AsyncSession) -> None:
        await auth.logout(s, await _auth_session(s, page), client=client, now=utcnow(),
                          everywhere=True)

    await db.run(run)
    response = redirect("/login")
    clear_session_cookie(response, settings)
    return response


@router.post("/account/security/passkeys/{passkey_id}/rename")
async def rename_passkey(
    passkey_id: str, request: Request, page: Page, db: DB, settings: AppSettings, client: Client
) -> Response:
    require(page)
    form = await form_of(request, page)
    pid = _uuid(passkey_id, "passkey_id")
    try:
        await db.run(lambda s: _renamed(s, page, pid, form.get("name", ""), client))
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="passkey", renaming=str(pid),
        )
    return redirect("/account/security?done=passkey_renamed")


async def _renamed(
    s: AsyncSession, page: Visitor, passkey_id: uuid.UUID, name: str, client: Client
) -> None:
    await passkeys.rename_passkey(
        s, await _locked(s, page), passkey_id, name, client=client, now=utcnow()
    )


@router.post("/account/security/passkeys/{passkey_id}/remove")
async def remove_passkey(
    passkey_id: str, request: Request, page: Page, db: DB, settings: AppSettings, client: Client,
    limits: Limits,
) -> Response:  # fmt: skip
    """Removing one asks the password again and, with two-step verification on, its second
    factor (`second_step.remove_confirmed`: the app's code or a recovery code; with two-step
    sign-in with a passkey, one of the passkeys through passkeys.js, or a recovery code); the
    holder is told. The last one is kept while two-step sign-in asks for it
    (`passkeys.LastPasskeyOfTwoStep`)."""
    require(page)
    form = await form_of(request, page)
    pid = _uuid(passkey_id, "passkey_id")
    credential = passkey_answer(form.get("credential", ""))

    async def run(s: AsyncSession) -> Refused | None:
        return await second_step.remove_confirmed(
            s, settings, await _locked(s, page), await _auth_session(s, page), pid,
            password=form.get("password", ""), code=form.get("code", "").strip(),
            credential=credential, client=client, now=utcnow(), counted=counted,
        )  # fmt: skip

    try:
        # The last passkey of two-step is refused first: no password or passkey spent on it.
        await db.run(lambda s: second_step.check_removable(s, page.account, pid))
        if not form.get("password"):
            raise ValidationFailed(N_("This field is required."), field="password")
        if credential is not None:
            passkeys.parsed_authentication(credential)  # malformed: refused, nothing counted
        counted = await auth.count_reauthentication(limits, client, page.account.id)
        _refused(await db.run(run))
    except passkeys.LastPasskeyOfTwoStep as exc:
        summary, _ = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, error=summary, form="passkey_two_step",
        )  # fmt: skip
    except NotFound:
        raise
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="passkey_remove", removing=str(pid),
        )  # fmt: skip
    return redirect("/account/security?done=passkey_removed")


@router.post("/account/security/passkeys/two-step")
async def enable_passkey_two_step(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    """Turn two-step sign-in with a passkey on (the password again); the recovery codes shown
    once, as when the app's two-step verification is turned on."""
    return await _showing_codes(
        request, page, db, settings, client, limits, second_step.enable, form="passkey_two_step"
    )


@router.post("/account/security/passkeys/two-step/off")
async def disable_passkey_two_step(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    require(page)
    form = await form_of(request, page)

    credential = passkey_answer(form.get("credential", ""))

    async def run(s: AsyncSession) -> Refused | None:
        return await second_step.disable(
            s, settings, await _locked(s, page), await _auth_session(s, page),
            password=form.get("password", ""), code=form.get("code", "").strip(),
            credential=credential, client=client, now=utcnow(), counted=counted,
        )  # fmt: skip

    try:
        counted = await auth.count_reauthentication(limits, client, page.account.id)
        _refused(await db.run(run))
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="passkey_two_step_off",
        )
    return redirect("/account/security?done=passkey_two_step_off")


@router.post("/account/security/lock")
async def lock(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client
) -> Response:
    require(page)
    form = await form_of(request, page)
    if form.get("confirm") != "yes":
        summary = N_("Tick the box to confirm that you want to lock your account.")
        return await _security_page(
            request, page, db, settings, status=422,
            errors={"confirm": translate(page.language, summary)}, form="lock", error=summary,
        )

    async def run(s: AsyncSession) -> int:
        return await auth.lock_account(
            s, await _locked(s, page), reason="customer", client=client, now=utcnow()
        )

    await db.run(run)
    response = redirect("/unlock?locked=1")
    clear_session_cookie(response, settings)
    return response


@router.get("/account/security/export")
async def export(page: Page, db: DB, limits: Limits) -> Response:
    """The same document as `GET /api/v1/me/export`, as a download."""
    account_id = require(page)
    await privacy.count_export(limits, account_id)
    now = utcnow()
    async with db.read() as s:
        account = await s.get(Account, account_id)
        assert account is not None
        document = await privacy.export_account(s, account, now=now)
    return export_response(document, now)


@router.post("/account/security/close")
async def close(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    require(page)
    form = await form_of(request, page)
    password, code = form.get("password", ""), form.get("code", "").strip()
    # With two-step sign-in with a passkey: one of them through passkeys.js (`data-confirm`),
    # or a recovery code typed (without JavaScript too).
    credential = passkey_answer(form.get("credential", ""))
    try:
        if form.get("confirm") != "yes":
            raise ValidationFailed(
                N_("Tick the box to confirm that you want to close your account."),
                field="confirm",
            )
        async with db.read() as s:
            passkey_step = await auth.passkey_second_factor_on(s, page.account)
        privacy.check_closure_input(
            page.account, password, code, credential, passkey_step=passkey_step
        )
        counted = await auth.count_reauthentication(limits, client, page.account.id)

        async def run(s: AsyncSession) -> privacy.Closed | Refused:
            account = await _locked(s, page)
            return await privacy.close_account(
                s, settings, account, password=password, code=code, credential=credential,
                auth_session=await _auth_session(s, page), client=client, now=utcnow(),
                counted=counted,
            )  # fmt: skip

        _refused(await db.run(run))
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return await _security_page(
            request, page, db, settings, status=exc.status, errors=errors, error=summary,
            headers=exc.headers, form="close",
        )
    response = redirect("/account/closed")
    clear_session_cookie(response, settings)
    clear_device_cookie(response, settings)
    return response


@router.get("/account/closed")
async def closed(request: Request, page: Page) -> Response:
    """Where closing the account leads, signed out (the page says only what happened)."""
    return render(request, page, "account_closed.html")


# --- unlocking (signed out: the account is locked) -----------------------------------------------


@router.get("/unlock")
async def unlock_form(request: Request, page: Page, locked: str | None = None) -> Response:
    return render(
        request, page, "unlock.html", values={"channel": "email"}, errors={}, error=None,
        locked=bool(locked), sent=False,
    )


@router.post("/unlock/request")
async def unlock_request(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    form = await form_of(request, page)
    started = time.monotonic()
    login, channel = form.get("login", "").strip(), _channel(form.get("channel"))
    values = {"login": login, "channel": channel}
    try:
        await limits.hit("codes", client.ip)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(request, page, "unlock.html", status=exc.status, values=values,
                      headers=exc.headers, errors=errors, error=summary, locked=False, sent=False)
    now = utcnow()
    counted = await auth.count_signed_out_send(
        db, limits, login=login, purpose=CodePurpose.unlock, channel=channel, now=now
    )
    await db.run(
        lambda s: auth.request_unlock(
            s, settings, login=login, channel=channel, client=client, now=now,
            limits=limits, counted=counted,
        )
    )
    await equalize(settings, started)
    return render(request, page, "unlock.html", values=values, errors={}, error=None,
                  locked=False, sent=True)


@router.post("/unlock")
async def unlock(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    form = await form_of(request, page)
    values = {"login": form.get("login", "").strip(), "channel": _channel(form.get("channel"))}
    try:
        await limits.hit("verify", client.ip)
        counted = await auth.count_signed_out_check(
            db, limits, login=values["login"], purpose=CodePurpose.unlock
        )
        result = await db.run(
            lambda s: auth.unlock(
                s, settings, login=values["login"], code=form.get("code", "").strip(),
                client=client, now=utcnow(), limits=limits, counted=counted,
            )
        )
        _refused(result)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(request, page, "unlock.html", status=exc.status, values=values,
                      headers=exc.headers, errors=errors, error=summary, locked=False, sent=True)
    return redirect("/login?unlocked=1")
