"""A staff member's own settings (`/backoffice/account`): their passkeys (add, rename, remove) and
their time zone; signing in with a passkey from the sign-in page; an admin removing every
passkey of a colleague (a lost device).

The passkey ceremonies run in the browser (`static/passkeys.js`), which talks to the JSON routes
here: their answers are JSON and their refusals problem+json (the back office's other routes
answer with pages). Their CSRF token comes in the `X-CSRF-Token` header: the session's, or on the
sign-in page the sign-in form's double-submit cookie's."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import DB, AppSettings
from simcharge.api.problems import problem_response, validation_problem
from simcharge.auth.deps import Limits
from simcharge.auth.passkeys import Ceremony, relying_party
from simcharge.backoffice import passkeys
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import StaffCsrfFailed, WebActor, require_web
from simcharge.backoffice.models import StaffPasskey, StaffSession, StaffUser
from simcharge.backoffice.roles import Permission
from simcharge.backoffice.screens_auth import (
    _anonymous,
    _pre_path,
    _set_cookie,
    pre_cookie,
)
from simcharge.backoffice.web import HEADERS, back, field_texts, language_of, render, zone_of
from simcharge.config import Settings
from simcharge.errors import BadRequest, Refused, SimchargeError, refuse_nul
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import constant_time_equals
from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.moments import is_zone
from simcharge.kit.translations import N_
from simcharge.portal.profile import zone_choice, zone_groups

router = APIRouter(prefix="/backoffice", include_in_schema=False)
StaffAdmin = Annotated[Actor, require_web(Permission.staff_manage)]


M = TypeVar("M", bound=BaseModel)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_In):
    ceremony: str = Field(max_length=128)
    credential: dict[str, Any]


class OptionsIn(_In):
    password: str = Field(max_length=1024)
    code: str = Field(max_length=12)


class AddIn(_In):
    credential: dict[str, Any]
    name: str | None = Field(default=None, max_length=256)


async def _body(request: Request, model: type[M]) -> M:
    """The JSON body as `model`, or the API's refusal naming the field. A form's body is no
    JSON: `web_actor` has read it already for its CSRF token, and reading it again would be a
    server error (the thirteenth round's review)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest(N_("The body is not valid JSON."), field="body")
    try:
        raw = await request.json()
    except ValueError:
        raise BadRequest(N_("The body is not valid JSON."), field="body") from None
    refuse_nul(raw if isinstance(raw, dict) else {})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_problem(
            RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])
        ) from None


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=HEADERS)


def _ceremony(c: Ceremony) -> dict[str, Any]:
    answer: dict[str, Any] = {"public_key": c.options, "expires_at": c.expires_at.isoformat()}
    if c.handle is not None:
        answer["ceremony"] = c.handle
    return answer


def _problem(request: Request, exc: SimchargeError) -> Response:
    answer = problem_response(request, exc)
    answer.headers.update(HEADERS)
    return answer


# --- signing in with a passkey ------------------------------------------------------------------


def _login_csrf(request: Request, settings: Settings) -> None:
    """The sign-in form's double-submit token, sent back in the header."""
    expected = request.cookies.get(pre_cookie(settings)) or ""
    presented = request.headers.get("x-csrf-token") or ""
    if not expected or not constant_time_equals(expected, presented):
        raise StaffCsrfFailed()


@router.post("/login/passkey/options", response_model=None)
async def login_options(
    request: Request, db: DB, settings: AppSettings, limits: Limits
) -> Response:
    """The options for `navigator.credentials.get()` and the handle to send back."""
    try:
        relying_party(settings)
        _login_csrf(request, settings)
        await limits.hit("login", request.client.host if request.client else None)
        ceremony = await db.run(lambda s: passkeys.login_options(s, settings, now=utcnow()))
    except SimchargeError as exc:
        return _problem(request, exc)
    return _json(_ceremony(ceremony))


@router.post("/login/passkey", response_model=None)
async def login(request: Request, db: DB, settings: AppSettings, limits: Limits) -> Response:
    """Signed in with the passkey: the session cookie the password and the code would set."""
    client = _anonymous(request, "anonymous")
    try:
        relying_party(settings)
        _login_csrf(request, settings)
        await limits.hit("login", client.ip)
        body = await _body(request, LoginIn)
        result = await db.run(
            lambda s: passkeys.login_with_passkey(
                s, settings, handle=body.ceremony, credential=body.credential, client=client,
                now=utcnow(),
            )
        )  # fmt: skip
        if isinstance(result, Refused):
            raise result.error
        _, issued = result
    except SimchargeError as exc:
        return _problem(request, exc)
    response = _json({"next": "/backoffice"})
    _set_cookie(response, settings, issued.token)
    response.delete_cookie(pre_cookie(settings), path=_pre_path(settings))
    return response


# --- the member's own page ------------------------------------------------------------------


async def _held(s: AsyncSession, actor: Actor) -> tuple[StaffUser, StaffSession]:
    """The member and their session, locked (the member first, as every path takes them)."""
    assert actor.staff_id is not None
    assert actor.session_id is not None
    staff = await s.get(StaffUser, actor.staff_id, with_for_update=True, populate_existing=True)
    row = await s.get(StaffSession, actor.session_id, with_for_update=True, populate_existing=True)
    assert staff is not None
    assert row is not None
    return staff, row


async def _account_page(
    request: Request,
    db: DB,
    actor: Actor,
    *,
    failed: SimchargeError | None = None,
    form: str | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    settings = request.app.state.settings
    assert actor.staff is not None
    async with db.read() as s:
        held = await passkeys.passkeys_of(s, actor.staff.id)
        fresh = await s.get(StaffUser, actor.staff.id)
    assert fresh is not None
    locale = BABEL_LOCALES.get(language_of(request, actor), "en")
    now = utcnow()
    current = fresh.time_zone if is_zone(fresh.time_zone) else None
    error, errors = field_texts(request, actor, failed) if failed else (None, {})
    return render(
        request, "account.html", actor, status=failed.status if failed else 200,
        passkeys=held, passkeys_on=settings.passkey_rp is not None,
        operator_zone=zone_choice(settings.operator_timezone, locale, now),
        current_zone=zone_choice(current, locale, now) if current else None,
        zone_groups=zone_groups(locale, now), shown_zone=zone_of(settings, actor),
        chosen_zone=(values or {}).get("time_zone", current or ""),
        error=error, errors=errors, form=form, values=values or {},
    )  # fmt: skip


@router.get("/account", response_class=HTMLResponse)
async def account_page(request: Request, db: DB, actor: WebActor) -> HTMLResponse:
    return await _account_page(request, db, actor)


@router.post("/account/time-zone", response_model=None)
async def time_zone(
    request: Request,
    db: DB,
    actor: WebActor,
    time_zone: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The zone the back office writes this member's times in; empty: the operator's."""
    assert actor.staff_id is not None
    staff_id = actor.staff_id
    chosen = time_zone.strip() or None
    try:
        await db.run(lambda s: passkeys.set_time_zone(s, actor, staff_id, chosen, now=utcnow()))
    except SimchargeError as exc:
        return await _account_page(
            request, db, actor, failed=exc, form="zone", values={"time_zone": time_zone}
        )
    return back("/backoffice/account", "time_zone")


@router.post("/account/passkeys/options", response_model=None)
async def passkey_options(
    request: Request, db: DB, settings: AppSettings, limits: Limits, actor: WebActor
) -> Response:
    """The password and a current code again; the options for `navigator.credentials.create()`."""
    try:
        relying_party(settings)
        body = await _body(request, OptionsIn)
        await limits.hit("login", actor.ip)  # as a sign-in's password step

        async def run(s: AsyncSession) -> Ceremony | Refused:
            staff, row = await _held(s, actor)
            return await passkeys.registration_options(
                s, settings, actor, row, staff, password=body.password, code=body.code,
                now=utcnow(),
            )  # fmt: skip

        result = await db.run(run)
        if isinstance(result, Refused):
            raise result.error
        answer = _ceremony(result)
    except SimchargeError as exc:
        return _problem(request, exc)
    return _json(answer)


@router.post("/account/passkeys", response_model=None)
async def add_passkey(
    request: Request, db: DB, settings: AppSettings, actor: WebActor
) -> Response:
    """Store the passkey the authenticator made."""
    try:
        relying_party(settings)
        body = await _body(request, AddIn)

        async def run(s: AsyncSession) -> StaffPasskey | Refused:
            staff, row = await _held(s, actor)
            return await passkeys.register_passkey(
                s, settings, actor, row, staff, credential=body.credential, name=body.name,
                now=utcnow(),
            )  # fmt: skip

        added = await db.run(run)
        if isinstance(added, Refused):
            raise added.error
        answer = {"id": str(added.id), "name": added.name}
    except SimchargeError as exc:
        return _problem(request, exc)
    return _json(answer | {"next": "/backoffice/account?done=passkey_added"}, 201)


@router.post("/account/passkeys/{passkey_id}/rename", response_model=None)
async def rename_passkey(
    request: Request,
    passkey_id: uuid.UUID,
    db: DB,
    actor: WebActor,
    name: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    assert actor.staff_id is not None
    staff_id = actor.staff_id
    try:
        await db.run(
            lambda s: passkeys.rename_passkey(s, actor, staff_id, passkey_id, name, now=utcnow())
        )
    except SimchargeError as exc:
        return await _account_page(
            request, db, actor, failed=exc, form=f"rename-{passkey_id}", values={"name": name}
        )
    return back("/backoffice/account", "passkey_renamed")


@router.post("/account/passkeys/{passkey_id}/remove", response_model=None)
async def remove_passkey(
    request: Request,
    passkey_id: uuid.UUID,
    db: DB,
    settings: AppSettings,
    limits: Limits,
    actor: WebActor,
    password: Annotated[str, Form(max_length=1024)] = "",
    code: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Remove one of the member's passkeys, their password and a current code given again."""

    async def run(s: AsyncSession) -> Refused | None:
        staff, row = await _held(s, actor)
        return await passkeys.remove_passkey(
            s, settings, actor, row, staff, passkey_id, password=password, code=code,
            now=utcnow(),
        )  # fmt: skip

    try:
        await limits.hit("login", actor.ip)
        refused = await db.run(run)
        if refused is not None:
            raise refused.error
    except SimchargeError as exc:
        page = await _account_page(request, db, actor, failed=exc, form=f"remove-{passkey_id}")
        page.headers.update(exc.headers)
        return page
    return back("/backoffice/account", "passkey_removed")


# --- an admin, for a colleague ---------------------------------------------------------------


@router.post("/staff/{staff_id}/passkeys/remove", response_model=None)
async def remove_staff_passkeys(staff_id: uuid.UUID, db: DB, actor: StaffAdmin) -> Response:
    """Remove every passkey of another staff member (a lost device); their sessions end."""
    await db.run(lambda s: passkeys.remove_all_passkeys(s, actor, staff_id, now=utcnow()))
    return back("/backoffice/staff", "staff_passkeys_removed")
