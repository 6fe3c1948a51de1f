"""Who is acting in the back office: a staff session (browser cookie or bearer token) or an API
key; and what they may do. Every refusal of a permission is itself written to the audit log."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from simcharge.api.deps import DB, AppSettings, speak_for
from simcharge.auth.apikeys import log_refused, verify_api_key
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.roles import Permission, permissions_of, permissions_of_scopes
from simcharge.backoffice.staff import (
    StaffPasswordChangeRequired,
    StaffSessionEnded,
    csrf_token,
    session_for_token,
    switched_off,
)
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Forbidden, NotAuthenticated, refuse_nul
from simcharge.kit.clock import utcnow
from simcharge.kit.crypto import constant_time_equals
from simcharge.kit.translations import N_

audit_log = structlog.get_logger("simcharge.audit")

_bearer = HTTPBearer(
    auto_error=False,
    description="A staff token (POST /api/v1/admin/session) or an API key `sck_…`",
)


class LoginRequired(Exception):
    """A back-office page was asked for without a (fully) signed-in staff session."""

    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


class PasswordChangeRequired(LoginRequired):
    """A staff member whose password someone else set asked for another page than their
    password page: they go there first."""


WEB_WHILE_PASSWORD_SET_BY_OTHER = frozenset({"/backoffice/password", "/backoffice/logout"})
"""What a staff member whose password an admin set may reach until they choose their own."""
API_WHILE_PASSWORD_SET_BY_OTHER = frozenset(
    {("POST", "/api/v1/admin/password"), ("DELETE", "/api/v1/admin/session")}
)


def must_change_password(actor: Actor) -> bool:
    return actor.staff is not None and actor.staff.password_set_by_other_at is not None


class StaffCsrfFailed(Forbidden):
    slug = "staff-csrf-failed"
    title = N_("The form has expired; reload the page and try again.")


def staff_cookie(settings: Settings) -> str:
    return "__Host-sc_staff" if settings.secure_cookies else "sc_staff"


def _client(request: Request) -> tuple[str | None, str | None]:
    return (request.client.host if request.client else None), request.headers.get("user-agent")


async def _staff_actor(
    request: Request, db: Database, settings: Settings, token: str, *, need_mfa: bool
) -> Actor | None:
    found = await db.run(lambda s: session_for_token(s, settings, token, utcnow()))
    if found is None:
        return None
    row, staff = found
    if need_mfa and not row.mfa:
        return None
    ip, ua = _client(request)
    speak_for(request, staff.language)
    return Actor(
        name=f"staff:{staff.username}",
        permissions=permissions_of(staff.role) if row.mfa else frozenset(),
        staff=staff,
        session_id=row.id,
        ip=ip,
        user_agent=ua,
    )


async def api_actor(
    request: Request,
    db: DB,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    challenge = {"WWW-Authenticate": 'Bearer realm="simcharge-admin"'}
    if credentials is None:
        raise NotAuthenticated(N_("A staff token or an API key is required."), headers=challenge)
    token = credentials.credentials
    ip, ua = _client(request)
    if token.startswith("sck_"):
        key = await db.run(lambda s: verify_api_key(s, token))
        if key is None:
            log_refused(token, reason="invalid", ip=ip)
            raise NotAuthenticated(N_("The API key is not valid."), headers=challenge)
        return Actor(
            name=f"apikey:{key.prefix}",
            permissions=permissions_of_scopes(key.scopes),
            ip=ip,
            user_agent=ua,
            scopes=frozenset(key.scopes),
        )
    actor = await _staff_actor(request, db, settings, token, need_mfa=True)
    if actor is None:
        # As a refused API key is (ASVS 7.1.3): the address, never the token.
        audit_log.warning("staff.token_refused", ip=ip)
        raise StaffSessionEnded(headers=challenge)
    if must_change_password(actor) and (
        (request.method, request.url.path) not in API_WHILE_PASSWORD_SET_BY_OTHER
    ):
        raise StaffPasswordChangeRequired()
    return actor


async def web_actor(request: Request, db: DB, settings: AppSettings) -> Actor:
    """The signed-in staff member of a back-office page; a write must carry the form's CSRF
    token (bound to the session)."""
    token = request.cookies.get(staff_cookie(settings))
    actor = await _staff_actor(request, db, settings, token, need_mfa=False) if token else None
    if actor is None:
        # A member switched off while signed in is told why on the sign-in page (`words.DONE`).
        off = token is not None and await db.run(lambda s: switched_off(s, settings, token))
        raise LoginRequired("/backoffice/login?done=access_off" if off else "/backoffice/login")
    if not actor.permissions:
        raise LoginRequired("/backoffice/login/code")
    request.state.actor = actor
    if must_change_password(actor) and request.url.path not in WEB_WHILE_PASSWORD_SET_BY_OTHER:
        raise PasswordChangeRequired("/backoffice/password")
    if request.method not in ("GET", "HEAD"):
        form = await request.form()
        refuse_nul(form)
        presented = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
        assert actor.session_id is not None
        expected = csrf_token(settings.secret_key, actor.session_id)
        if not presented or not constant_time_equals(expected, presented):
            raise StaffCsrfFailed()
    return actor


async def _refuse(db: Database, actor: Actor, permission: Permission, path: str) -> None:
    await db.run(
        lambda s: audit.record(
            s,
            actor,
            "access.denied",
            details={"permission": permission.value, "path": path},
        )
    )
    if actor.staff is None:  # an API key: what it lacks is a scope, not a role
        raise Forbidden(
            N_("This API key's scopes do not allow this ({permission})."),
            permission=permission.value,
        )
    raise Forbidden(
        N_("Your role does not allow this ({permission})."),
        permission=permission.value,
    )


class ApiPermission:
    """An API dependency: the actor, if they hold `permission` (readable on the route, so a test
    can walk every route and know what it asks for)."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(
        self, request: Request, db: DB, actor: Annotated[Actor, Depends(api_actor)]
    ) -> Actor:
        if not actor.can(self.permission):
            await _refuse(db, actor, self.permission, request.url.path)
        return actor


class WebPermission:
    """A page dependency: the signed-in staff member, if they hold `permission`."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(
        self, request: Request, db: DB, actor: Annotated[Actor, Depends(web_actor)]
    ) -> Actor:
        if not actor.can(self.permission):
            await _refuse(db, actor, self.permission, request.url.path)
        return actor


def require(permission: Permission) -> Any:
    """`Annotated[Actor, require(P.x)]`: an API route open to whoever holds `x`."""
    return Depends(ApiPermission(permission))


def require_web(permission: Permission) -> Any:
    """`Annotated[Actor, require_web(P.x)]`: a page open to the signed-in staff holding `x`."""
    return Depends(WebPermission(permission))


WebActor = Annotated[Actor, Depends(web_actor)]
