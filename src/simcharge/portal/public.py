"""Pages anyone may see: home, register, verify, sign in, forgotten password, language."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import service as accounts
from simcharge.accounts.models import Account
from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import error_texts
from simcharge.auth import codes, service
from simcharge.auth.deps import (
    Client,
    Limits,
    clear_session_cookie,
    ensure_device_cookie,
    session_cookie,
    set_session_cookie,
)
from simcharge.auth.endpoints import equalize
from simcharge.auth.models import AuthSession, CodePurpose
from simcharge.catalog.service import list_methods, list_plans
from simcharge.errors import NotFound, Refused, SimchargeError, ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import seal, unseal
from simcharge.kit.i18n import LANGUAGES, normalize_language
from simcharge.kit.ids import uuid7
from simcharge.kit.translations import N_, translate
from simcharge.payments.registry import Providers
from simcharge.portal.web import (
    LANGUAGE_COOKIE_AGE,
    Page,
    carried,
    carry,
    drop_carried,
    fee_text,
    form_of,
    language_cookie,
    redirect,
    render,
    safe_next,
)

router = APIRouter(include_in_schema=False)

Channel = Literal["email", "sms"]
PENDING_LOGIN_SECONDS = 300


def _channel(raw: str | None) -> Channel:
    """`sms` (the API's `phone` too) or `email`."""
    return "sms" if raw in ("sms", "phone") else "email"


@router.get("/")
async def home(request: Request, page: Page, db: DB) -> Response:
    providers: Providers = request.app.state.providers

    def served(m: object) -> bool:
        return providers.serving(m) is not None  # type: ignore[arg-type]

    async with db.read() as s:
        plans = await list_plans(s, page.language, served)
        methods = await list_methods(s, page.language, served)
    return render(
        request, page, "home.html", plans=plans, methods=methods,
        fees={m.code: fee_text(m, page.language, page.locale) for m in methods},
    )


@router.get("/language/{code}")
async def choose_language(
    code: str, request: Request, settings: AppSettings, next: str | None = None
) -> Response:
    """The switcher's link (signed out): remembered in a cookie. A GET changes nothing else."""
    language = normalize_language(code)
    if language is None or language not in LANGUAGES:
        raise NotFound(field="code")
    response = redirect(safe_next(next, "/"))
    _remember_language(response, settings, language)
    return response


@router.post("/language")
async def choose_language_signed_in(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    """The switcher of a signed-in customer: the pages and the account's language (what its
    e-mails, SMS and receipts use) change together."""
    form = await form_of(request, page)
    language = normalize_language(form.get("code"))
    if language is None or language not in LANGUAGES:
        raise NotFound(field="code")
    customer = page.customer
    if customer is not None:

        async def run(s: AsyncSession) -> None:
            account = await s.get(Account, customer.account.id, with_for_update=True)
            assert account is not None
            await accounts.update_profile(
                s, settings, account, language=language, client=client, now=utcnow(),
                limits=limits,
            )

        await db.run(run)
    response = redirect(safe_next(form.get("next"), "/"))
    _remember_language(response, settings, language)
    return response


def _remember_language(response: Response, settings: AppSettings, language: str) -> None:
    response.set_cookie(
        language_cookie(settings),
        language,
        max_age=LANGUAGE_COOKIE_AGE,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
        path="/",
    )


# --- register and verify ------------------------------------------------------------------------


@router.get("/register")
async def register_form(request: Request, page: Page) -> Response:
    if page.customer is not None:
        return redirect("/account")
    return render(request, page, "register.html", values={"language": page.language}, errors={})


@router.post("/register")
async def register(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    form = await form_of(request, page)
    started = time.monotonic()
    if client.device_id is None:  # the browser registering is the account's first known device
        client = replace(client, device_id=uuid7().hex)
    values = {k: form.get(k, "").strip() for k in ("username", "email", "phone", "language")}
    language = values["language"] if values["language"] in LANGUAGES else page.language
    try:
        reg = service.Registration(
            username=values["username"],
            password=form.get("password", ""),
            email=values["email"] or None,
            phone=values["phone"] or None,
            language=language,
        )
        service.check_registration(reg)  # bad input uses up none of the address's registrations
        await limits.hit("register", client.ip)
        counted = await service.count_registration_codes(limits, reg)
        await db.run(
            lambda s: service.register(
                s, settings, reg, client=client, now=utcnow(), limits=limits, counted=counted
            )
        )
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(
            request, page, "register.html", status=exc.status, values=values, errors=errors,
            headers=exc.headers, error=summary,
        )
    await equalize(settings, started)
    response = carry(
        redirect("/verify?sent=1", page, settings), settings, "verify", values["username"]
    )
    ensure_device_cookie(request, response, settings, client.device_id)
    return response


@router.get("/verify")
async def verify_form(
    request: Request, page: Page, settings: AppSettings, sent: str | None = None
) -> Response:
    """The login comes from the registration in a cookie (see `carry`), not in the URL."""
    login = carried(request, settings, "verify")
    return render(request, page, "verify.html", values={"login": login}, errors={}, sent=bool(sent))


@router.post("/verify")
async def verify(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    """Signed in: the code alone; otherwise with the login and password, as the API takes it."""
    form = await form_of(request, page)
    values = {"login": form.get("login", "").strip(), "channel": _channel(form.get("channel"))}
    customer = page.customer
    if customer is None and client.device_id is None:  # remembered as the account's device
        client = replace(client, device_id=uuid7().hex)
    channel = _channel(form.get("channel"))
    code = form.get("code", "").strip()
    counted: codes.CodeCount | None

    async def run(s: AsyncSession) -> Account | Refused:
        if customer is None:
            return await service.verify_contact_signed_out(
                s, settings, account_id=account_id, channel=channel, code=code,
                client=client, now=utcnow(), limits=limits, counted=counted,
            )
        account = await s.get(Account, customer.account.id, with_for_update=True)
        assert account is not None
        return await service.verify_contact(
            s, settings, account, channel, code, client=client, now=utcnow(), limits=limits,
            counted=counted,
        )

    try:
        await limits.hit("verify", client.ip)
        if customer is None:  # a password is checked: a sign-in, as far as the address goes
            await limits.hit("login", client.ip)
            checked = await db.run(
                lambda s: service.credentials_to_verify(
                    s, settings, login=values["login"], password=form.get("password", ""),
                    client=client, now=utcnow(),
                )
            )
            if isinstance(checked, Refused):
                raise checked.error
            account_id = checked
            counted = await codes.count_check(limits, account_id, service.verify_purpose(channel))
        else:
            counted = await service.count_verification_check(limits, customer.account, channel)
        result = await db.run(run)
        if isinstance(result, Refused):
            raise result.error
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(
            request, page, "verify.html", status=exc.status, values=values, errors=errors,
            headers=exc.headers, error=summary, sent=False,
        )
    response = redirect(
        "/account?verified=1" if customer else "/login?verified=1", page, settings
    )
    if customer is None:
        ensure_device_cookie(request, response, settings, client.device_id)
    return drop_carried(response, settings, "verify")


@router.post("/verify/resend")
async def resend_code(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    """A new code to a contact not yet verified (signed in only: the account is known)."""
    form = await form_of(request, page)
    customer = page.customer
    if customer is None:
        return redirect("/login?next=/verify")
    channel = _channel(form.get("channel"))
    now = utcnow()

    async def run(s: AsyncSession) -> None:
        account = await s.get(Account, customer.account.id, with_for_update=True)
        assert account is not None
        await service.resend_verification(
            s, settings, account, channel, now, client=client, limits=limits, counted=counted
        )

    try:
        await limits.hit("codes", client.ip)
        counted = await service.count_verification_send(db, limits, customer.account, channel, now)
        await db.run(run)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(
            request, page, "verify.html", status=exc.status, values={"channel": channel},
            headers=exc.headers, errors=errors, error=summary, sent=False,
        )
    return redirect("/verify?sent=1")


# --- sign in and out ------------------------------------------------------------------------------


@router.get("/login")
async def login_form(
    request: Request, page: Page, settings: AppSettings, next: str | None = None,
    verified: str | None = None, reset: str | None = None, unlocked: str | None = None,
) -> Response:
    if page.customer is not None:
        return redirect(safe_next(next))
    notice = None
    if verified:
        notice = N_("Your contact is verified. Sign in to continue.")
    elif reset:
        notice = N_("Your password was changed and all sessions were ended. Sign in with the new password.")
    elif unlocked:
        notice = N_("Your account is unlocked. Sign in to continue.")
    return render(
        request, page, "login.html", values={"next": safe_next(next)}, errors={},
        notice=notice, step="password", passkeys_on=settings.passkey_rp is not None,
    )


def _seal_password(settings: AppSettings, login: str, password: str) -> str:
    """The password, sealed for the few minutes between the two steps of a sign-in with
    two-step verification: the second page never holds it in the clear."""
    stamp = int(time.time())
    return seal(settings.secret_key, "portal-login", f"{stamp}\n{login}\n{password}".encode())


def _unseal_password(settings: AppSettings, login: str, sealed: str) -> str | None:
    try:
        stamp, who, password = unseal(settings.secret_key, "portal-login", sealed).decode().split(
            "\n", 2
        )
    except (ValueError, UnicodeDecodeError):
        return None
    if who != login or time.time() - int(stamp) > PENDING_LOGIN_SECONDS:
        return None
    return password


@router.post("/login")
async def login(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    form = await form_of(request, page)
    login_name = form.get("login", "").strip()
    values = {"login": login_name, "next": safe_next(form.get("next"))}
    password = form.get("password", "")
    if form.get("sealed"):
        password = _unseal_password(settings, login_name, form["sealed"]) or ""
    second = form.get("second_factor", "").strip() or None
    if client.device_id is None:
        client = replace(client, device_id=uuid7().hex)
    # The session this browser held until now (even one past its time) ends with the sign-in.
    held = request.cookies.get(session_cookie(settings))
    try:
        await limits.hit("login", client.ip)
        result = await db.run(
            lambda s: service.login(
                s, settings, login=login_name, password=password, second_factor=second,
                client=client, now=utcnow(), replacing=held, offer_again=True,
            )
        )
        if isinstance(result, Refused):
            raise result.error
    except service.SecondFactorRequired as due:
        # The second step: the app's code or a recovery code in the form; a passkey (this
        # account's, for this sign-in only) through passkeys.js where the browser has them.
        return render(
            request, page, "login.html", values=values, errors={}, step="second_factor",
            sealed=_seal_password(settings, login_name, password), notice=None,
            methods=due.methods, offer=due.passkey, passkeys_on=due.passkey is not None,
        )
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        step = "second_factor" if isinstance(exc, service.InvalidSecondFactor) else "password"
        return render(
            request, page, "login.html", status=exc.status, values=values, errors=errors,
            headers=exc.headers, error=summary, step=step, notice=None,
            sealed=_seal_password(settings, login_name, password) if step != "password" else "",
            passkeys_on=settings.passkey_rp is not None,
            methods=form.get("methods", "totp").split(","),
            # A wrong code: the pending sign-in's fresh passkey ceremony, so the passkey stays
            # on offer (bound, timed and used once as the first).
            offer=exc.passkey if isinstance(exc, service.InvalidSecondFactor) else None,
        )
    response = redirect(values["next"])
    set_session_cookie(response, settings, result.issued.token)
    ensure_device_cookie(request, response, settings, client.device_id)
    return response


@router.post("/logout")
async def logout(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client
) -> Response:
    await form_of(request, page)
    customer = page.customer
    if customer is not None:

        async def run(s: AsyncSession) -> None:
            auth = await s.get(AuthSession, customer.session.id)
            assert auth is not None
            await service.logout(s, auth, client=client, now=utcnow(), everywhere=False)

        await db.run(run)
    response = redirect("/")
    clear_session_cookie(response, settings)
    return response


# --- forgotten password ---------------------------------------------------------------------------


@router.get("/forgot")
async def forgot_form(request: Request, page: Page) -> Response:
    return render(request, page, "forgot.html", values={"channel": "email"}, errors={})


@router.post("/forgot")
async def forgot(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    form = await form_of(request, page)
    started = time.monotonic()
    login_name, channel = form.get("login", "").strip(), _channel(form.get("channel"))
    if not login_name:
        errors = {"login": translate(page.language, N_("This field is required."))}
        return render(
            request, page, "forgot.html", status=422, values={"channel": channel}, errors=errors
        )
    try:
        await limits.hit("codes", client.ip)
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(
            request, page, "forgot.html", status=exc.status, values={"login": login_name,
            "channel": channel}, errors=errors, error=summary, headers=exc.headers,
        )
    now = utcnow()
    counted = await service.count_signed_out_send(
        db, limits, login=login_name, purpose=CodePurpose.password_reset, channel=channel, now=now
    )
    await db.run(
        lambda s: service.forgot_password(
            s, settings, login=login_name, channel=channel, client=client, now=now,
            limits=limits, counted=counted,
        )
    )
    await equalize(settings, started)
    # The address or number goes to the next page in a cookie, not in its URL (where browser
    # history, proxies and logs would keep it: ASVS 8.3.1).
    response = redirect("/reset?" + urlencode({"channel": channel}), page, settings)
    return carry(response, settings, "reset", login_name)


@router.get("/reset")
async def reset_form(
    request: Request, page: Page, settings: AppSettings, channel: str = "email"
) -> Response:
    login = carried(request, settings, "reset")
    return render(
        request, page, "reset.html", values={"login": login, "channel": _channel(channel)},
        errors={},
    )


@router.post("/reset")
async def reset(
    request: Request, page: Page, db: DB, settings: AppSettings, client: Client, limits: Limits
) -> Response:
    form = await form_of(request, page)
    values = {"login": form.get("login", "").strip(), "channel": _channel(form.get("channel"))}
    new_password = form.get("new_password", "")
    try:
        if new_password != form.get("confirm_password", ""):
            raise ValidationFailed(
                N_("The two passwords are not the same."), field="confirm_password"
            )
        await limits.hit("verify", client.ip)
        counted = await service.count_signed_out_check(
            db, limits, login=values["login"], purpose=CodePurpose.password_reset
        )
        result = await db.run(
            lambda s: service.reset_password(
                s, settings, login=values["login"], code=form.get("code", "").strip(),
                new_password=new_password, client=client, now=utcnow(), limits=limits,
                counted=counted,
            )
        )
        if isinstance(result, Refused):
            raise result.error
    except SimchargeError as exc:
        summary, errors = error_texts(exc, page.language)
        return render(
            request, page, "reset.html", status=exc.status, values=values, errors=errors,
            headers=exc.headers, error=summary,
        )
    response = redirect("/login?reset=1")
    clear_session_cookie(response, settings)
    return drop_carried(response, settings, "reset")


# --- assets ---------------------------------------------------------------------------------------


@router.get("/assets/theme.css")
async def theme(settings: AppSettings) -> Response:
    """The operator's colours as CSS variables (a file, so the CSP needs no inline style)."""
    css = (
        f":root{{--brand:{settings.brand_color};--tint:{settings.brand_accent};}}\n"
    )
    return Response(css, media_type="text/css", headers={"cache-control": "public, max-age=300"})


@router.get("/assets/logo")
async def logo(settings: AppSettings) -> Response:
    path = settings.operator_logo
    if path is None or not path.is_file():
        raise NotFound(field="logo")
    media = "image/svg+xml" if path.suffix.lower() == ".svg" else "image/png"
    return FileResponse(path, media_type=media, headers={"cache-control": "public, max-age=300"})

