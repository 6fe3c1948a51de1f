"""Back-office sign-in: password, then an authenticator code (enrolled at the first sign-in)."""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import DB, AppSettings
from simcharge.auth.deps import Limits
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import WebActor, must_change_password, staff_cookie
from simcharge.backoffice.models import StaffSession, StaffUser
from simcharge.backoffice.staff import (
    PasswordChanged,
    change_own_password,
    check_password,
    complete_second_step,
    csrf_token,
    end_own_sessions,
    end_session,
    enrolment_of,
    failed_sign_in_name,
    open_staff_session,
    session_for_token,
    start_enrolment,
)
from simcharge.backoffice.web import HEADERS, back, field_texts, render
from simcharge.config import Settings
from simcharge.errors import (
    Refused,
    SimchargeError,
    TooManyAttempts,
    ValidationFailed,
    refuse_nul,
)
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import constant_time_equals
from simcharge.kit.i18n import normalize_language
from simcharge.kit.translations import N_

router = APIRouter(prefix="/backoffice", include_in_schema=False)


def pre_cookie(settings: Settings) -> str:
    """The sign-in form's double-submit token: `__Host-` over https, so a sibling subdomain
    cannot plant one (its path is then `/`)."""
    return "__Host-sc_staff_login" if settings.secure_cookies else "sc_staff_login"


def _pre_path(settings: Settings) -> str:
    return "/" if settings.secure_cookies else "/backoffice"


def _set_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        staff_cookie(settings),
        token,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="strict",
        path="/",
        max_age=settings.staff_session_absolute_hours * 3600,
    )


def _anonymous(request: Request, name: str) -> Actor:
    return Actor(
        name=name[:70] or "anonymous",
        permissions=frozenset(),
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def _login_page(request: Request, *, status: int = 200, csrf: str, error: str | None) -> HTMLResponse:
    """The sign-in page; with "Sign in with a passkey" where passkeys work (a site on a domain)."""
    settings: Settings = request.app.state.settings
    return render(
        request, "login.html", None, status=status, csrf=csrf, error=error,
        passkeys=settings.passkey_rp is not None,
    )  # fmt: skip


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, settings: AppSettings) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = _login_page(request, csrf=token, error=None)
    response.set_cookie(
        pre_cookie(settings),
        token,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="strict",
        path=_pre_path(settings),
        max_age=3600,
    )
    return response


@router.post("/login", response_model=None)
async def login(
    request: Request,
    db: DB,
    settings: AppSettings,
    limits: Limits,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    expected = request.cookies.get(pre_cookie(settings)) or ""
    if not expected or not constant_time_equals(expected, csrf):
        return _login_page(request, status=403, csrf=expected, error="csrf")
    refuse_nul({"username": username, "password": password})
    ip = request.client.host if request.client else None
    ua = request.headers.get("user-agent")
    now = utcnow()
    try:  # per address, as customers' sign-in: the lockout is per staff member
        await limits.hit("login", ip)
    except TooManyAttempts as exc:
        busy = _login_page(request, status=429, csrf=expected, error="busy")
        busy.headers.update(exc.headers)
        return busy

    async def attempt(s: AsyncSession) -> str | None:
        staff = await check_password(s, settings, username, password, now)
        if staff is None:
            await audit.record(
                s,
                _anonymous(request, await failed_sign_in_name(s, username)),
                "staff.login_failed",
                details={"step": "password"},
            )
            return None
        issued = await open_staff_session(
            s, settings, staff, ip=ip, user_agent=ua, now=now, mfa=False
        )
        return issued.token

    token = await db.run(attempt)
    if token is None:
        return _login_page(request, status=401, csrf=expected, error="login")
    response = back("/backoffice/login/code")
    _set_cookie(response, settings, token)
    response.delete_cookie(pre_cookie(settings), path=_pre_path(settings))
    return response


async def _half_signed_in(
    request: Request, db: DB, settings: Settings
) -> tuple[StaffSession, StaffUser] | None:
    token = request.cookies.get(staff_cookie(settings))
    if not token:
        return None
    found = await db.run(lambda s: session_for_token(s, settings, token, utcnow()))
    return found


@router.get("/login/code", response_model=None)
async def code_page(request: Request, db: DB, settings: AppSettings) -> Response:
    found = await _half_signed_in(request, db, settings)
    if found is None:
        return back("/backoffice/login")
    row, staff = found
    if row.mfa:
        return back("/backoffice")
    enrol = None
    if staff.totp_enabled_at is None:

        async def enrolment(s: AsyncSession) -> tuple[str, str, str]:
            fresh = await s.get(StaffUser, staff.id, with_for_update=True)
            assert fresh is not None
            known = enrolment_of(settings, fresh)
            return known if known is not None else start_enrolment(settings, fresh)

        enrol = await db.run(enrolment)
    return render(
        request,
        "code.html",
        None,
        csrf=csrf_token(settings.secret_key, row.id),
        enrol=enrol,
        error=request.query_params.get("error"),
        staff_name=staff.display_name,
    )


@router.post("/login/code", response_model=None)
async def code_submit(
    request: Request,
    db: DB,
    settings: AppSettings,
    code: Annotated[str, Form(max_length=12)] = "",
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    found = await _half_signed_in(request, db, settings)
    if found is None:
        return back("/backoffice/login")
    row, staff = found
    if not constant_time_equals(csrf_token(settings.secret_key, row.id), csrf):
        return back("/backoffice/login/code?error=csrf")
    now = utcnow()
    ip = request.client.host if request.client else None
    ua = request.headers.get("user-agent")

    async def second(s: AsyncSession) -> str | None:
        # The member before the session, as every path takes them (an admin's change, a
        # password change): the other way round, the two could deadlock.
        fresh = await s.get(StaffUser, staff.id, with_for_update=True, populate_existing=True)
        fresh_row = await s.get(StaffSession, row.id, with_for_update=True, populate_existing=True)
        assert fresh_row is not None
        assert fresh is not None
        enrolling = fresh.totp_enabled_at is None
        token = await complete_second_step(s, settings, fresh_row, fresh, code, now)
        actor = Actor(
            name=f"staff:{fresh.username}",
            permissions=frozenset(),
            staff=fresh,
            session_id=fresh_row.id,
            ip=ip,
            user_agent=ua,
        )
        if token is None:
            await audit.record(s, actor, "staff.login_failed", details={"step": "code"})
        else:
            await audit.record(
                s,
                actor,
                "staff.totp_enrolled" if enrolling else "staff.login",
                target_type="staff",
                target_id=fresh.id,
                details={"method": "password+totp"},  # as a passkey's notes "passkey"
            )
        return token

    token = await db.run(second)
    if token is None:
        return RedirectResponse("/backoffice/login/code?error=code", 303, headers=HEADERS)
    response = back("/backoffice")
    _set_cookie(response, settings, token)
    return response


@router.post("/logout", response_model=None)
async def logout(
    db: DB,
    settings: AppSettings,
    actor: WebActor,
    session: Annotated[uuid.UUID | None, Form()] = None,
    everywhere: Annotated[bool, Form()] = False,
) -> Response:
    """Sign out: this session; every session of the staff member's (`everywhere`: a browser
    left signed in elsewhere, a token a tool holds); or one other session of theirs
    (`session`, listed on the home page), which keeps this one signed in."""
    assert actor.session_id is not None
    assert actor.staff_id is not None
    sid, staff_id = actor.session_id, actor.staff_id
    other = None if everywhere or session == sid else session

    async def end(s: AsyncSession) -> None:
        now = utcnow()
        if everywhere:
            ended = await end_own_sessions(s, staff_id, now)
            details: dict[str, object] = {"everywhere": True, "ended": len(ended)}
        elif other is not None:
            ended = await end_own_sessions(s, staff_id, now, only=other)
            if not ended:
                return  # not theirs, or already ended: nothing changed
            await audit.record(
                s,
                actor,
                "staff.session_ended",
                target_type="staff",
                target_id=staff_id,
                details={"session": str(other)},
            )
            return
        else:
            await end_session(s, sid, now)
            details = {}
        await audit.record(
            s, actor, "staff.logout", target_type="staff", target_id=staff_id, details=details
        )

    await db.run(end)
    if other is not None:
        return back("/backoffice", "session")
    response = back("/backoffice/login")
    response.delete_cookie(
        staff_cookie(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/language", response_model=None)
async def language(
    db: DB, actor: WebActor, language: Annotated[str, Form(max_length=16)] = ""
) -> Response:
    """The staff member's language for the back office."""
    chosen = normalize_language(language) or "en"
    assert actor.staff_id is not None
    staff_id = actor.staff_id

    async def save(s: AsyncSession) -> None:
        staff = await s.get(StaffUser, staff_id, with_for_update=True)
        assert staff is not None
        if staff.language == chosen:
            return
        before = staff.language
        staff.language = chosen
        await audit.record(
            s,
            actor,
            "staff.language",
            target_type="staff",
            target_id=staff_id,
            before={"language": before},
            after={"language": chosen},
        )

    await db.run(save)
    return back("/backoffice")


@router.get("/password", response_class=HTMLResponse)
async def password_page(request: Request, actor: WebActor) -> HTMLResponse:
    return render(
        request, "password.html", actor, errors={}, error=None, forced=must_change_password(actor)
    )


@router.post("/password", response_model=None)
async def password_change(
    request: Request,
    db: DB,
    settings: AppSettings,
    limits: Limits,
    actor: WebActor,
    current_password: Annotated[str, Form(max_length=1024)] = "",
    new_password: Annotated[str, Form(max_length=1024)] = "",
    confirm_password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """The signed-in staff member's own password (`staff.change_own_password`): a wrong current
    one counts as a failed sign-in; every other session ends and this one gets a new token."""
    assert actor.session_id is not None
    assert actor.staff_id is not None
    sid, staff_id = actor.session_id, actor.staff_id

    async def run(s: AsyncSession) -> PasswordChanged | Refused:
        staff = await s.get(StaffUser, staff_id, with_for_update=True)
        row = await s.get(StaffSession, sid, with_for_update=True)
        assert staff is not None
        assert row is not None
        return await change_own_password(
            s, settings, actor, row, staff,
            current=current_password, new=new_password, now=utcnow(),
        )  # fmt: skip

    try:
        if new_password != confirm_password:
            raise ValidationFailed(
                N_("The two passwords are not the same."), field="confirm_password"
            )
        await limits.hit("login", actor.ip)  # as a sign-in's password step
        done = await db.run(run)
        if isinstance(done, Refused):
            raise done.error
    except SimchargeError as exc:
        error, errors = field_texts(request, actor, exc)
        page = render(
            request, "password.html", actor, status=exc.status, errors=errors, error=error,
            forced=must_change_password(actor),
        )  # fmt: skip
        page.headers.update(exc.headers)
        return page
    response = back("/backoffice/password", "password")
    _set_cookie(response, settings, done.token)
    return response
