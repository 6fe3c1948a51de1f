"""Who is calling: the client, and the signed-in customer (bearer token or session cookie)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account, AccountStatus
from simcharge.api.deps import DB, AppSettings, speak_for
from simcharge.auth import sessions
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import AuthSession
from simcharge.auth.service import policy
from simcharge.auth.sessions import FoundSession, csrf_valid, session_for_token
from simcharge.auth.throttle import RateLimits
from simcharge.config import Settings
from simcharge.errors import Forbidden, NotAuthenticated
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import N_

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEVICE_COOKIE_AGE = timedelta(days=730)
"""How long the `sc_device` cookie lives when known devices are kept for ever
(`SIMCHARGE_RETENTION_DEVICES_DAYS=0`); else as long as a known device is (`device_cookie_age`)."""


class CsrfFailed(Forbidden):
    slug = "csrf-failed"
    title = N_(
        "The form has expired or did not come from this site; reload the page and try again."
    )


class SessionEnded(NotAuthenticated):
    slug = "session-ended"
    title = N_("Your session has ended; please sign in again.")


def session_cookie(settings: Settings) -> str:
    """`__Host-` prefixed (Secure, no Domain, Path=/) whenever the site is served over https."""
    return "__Host-sc_session" if settings.secure_cookies else "sc_session"


def device_cookie(settings: Settings) -> str:
    return "__Host-sc_device" if settings.secure_cookies else "sc_device"


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        session_cookie(settings),
        token,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="lax",
        path="/",
        max_age=settings.session_absolute_hours * 3600,
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        session_cookie(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def device_cookie_age(settings: Settings) -> timedelta:
    """The `sc_device` cookie lives as long as the record of a known device does
    (`SIMCHARGE_RETENTION_DEVICES_DAYS`, 365 days unseen): past it the device is forgotten and
    its next sign-in alerts as a new one anyway, so a browser need not keep the id longer."""
    days = settings.retention_devices_days
    return timedelta(days=days) if days > 0 else DEVICE_COOKIE_AGE


def ensure_device_cookie(
    request: Request, response: Response, settings: Settings, device_id: str | None
) -> None:
    """The device's id in its cookie, set (a new id) or renewed (the same id) at each sign-in,
    so that a device in use keeps it and one unseen for `device_cookie_age` loses it, as the
    server forgets it (`privacy.retention`'s `known_devices` rule)."""
    if device_id:
        response.set_cookie(
            device_cookie(settings),
            device_id,
            httponly=True,
            secure=settings.secure_cookies,
            samesite="lax",
            path="/",
            max_age=int(device_cookie_age(settings).total_seconds()),
        )


def clear_device_cookie(response: Response, settings: Settings) -> None:
    """The device's id dropped from the browser (the account's closure): nothing of it is kept
    on either side any more."""
    response.delete_cookie(
        device_cookie(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def client_info(request: Request, settings: Settings) -> ClientInfo:
    device = request.cookies.get(device_cookie(settings)) or request.headers.get("x-device-id")
    return ClientInfo(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        device_id=device[:128] if device else None,
    )


async def _client_info(request: Request, settings: AppSettings) -> ClientInfo:
    return client_info(request, settings)


# Dependencies are `async def`: FastAPI runs a plain `def` one in its thread pool, a thread hop
# per request for what only reads the request.
async def rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


Client = Annotated[ClientInfo, Depends(_client_info)]
Limits = Annotated[RateLimits, Depends(rate_limits)]

_bearer = HTTPBearer(auto_error=False, description="A session token from POST /api/v1/auth/login")


@dataclass(frozen=True, slots=True)
class Customer:
    """A signed-in customer: their account and the session they are using."""

    account: Account
    session: AuthSession
    via_cookie: bool


async def find_session(
    db: DB,
    settings: Settings,
    token: str,
    reads: sessions.ReadsWithSession | None = None,
    *,
    background: bool = False,
) -> FoundSession | None:
    """`auth.sessions.find_session` in a read (no transaction, no write): every signed-in
    request, of the API here and of the portal (`portal.web.signed_in`), asks. `background`:
    the request does not renew the session's idle time (`sessions.is_background`)."""
    async with db.read() as s:
        return await sessions.find_session(
            s, settings.secret_key, token, policy=policy(settings), now=utcnow(), reads=reads,
            background=background,
        )  # fmt: skip


async def _resolve(
    request: Request, db: DB, settings: Settings, token: str, via_cookie: bool
) -> Customer:
    challenge = {"WWW-Authenticate": 'Bearer realm="simcharge"'}
    client = client_info(request, settings)
    background = sessions.is_background(request.headers)
    found = await find_session(db, settings, token, background=background)
    if found is None:
        raise SessionEnded(headers=challenge)
    if not found.stale:
        if found.account.status != AccountStatus.active:
            raise SessionEnded(headers=challenge)
        return await _checked(
            request, db, settings, found.account, found.session, client, via_cookie
        )

    async def resolve(session: AsyncSession) -> tuple[Account, AuthSession] | None:
        auth = await session_for_token(
            session,
            settings.secret_key,
            token,
            policy=policy(settings),
            now=utcnow(),
            client=client,
            touch=not background,
        )
        if auth is None:
            return None
        account = await session.get(Account, auth.account_id)
        if account is None or account.status != AccountStatus.active:
            return None
        return account, auth

    resolved = await db.run(resolve)
    if resolved is None:
        raise SessionEnded(headers=challenge)
    account, auth = resolved
    return await _checked(request, db, settings, account, auth, client, via_cookie)


async def _checked(
    request: Request,
    db: DB,
    settings: Settings,
    account: Account,
    auth: AuthSession,
    client: ClientInfo,
    via_cookie: bool,
) -> Customer:
    """The signed-in customer, once a state-changing request by cookie showed its CSRF token."""
    if via_cookie and request.method not in SAFE_METHODS:
        presented = request.headers.get("x-csrf-token")
        if not csrf_valid(settings.secret_key, auth.id, presented):
            await db.run(
                lambda s: record_event(
                    s,
                    EventKind.csrf_refused,
                    account_id=account.id,
                    client=client,
                    success=False,
                    details={"method": request.method, "path": request.url.path},
                )
            )
            raise CsrfFailed()
    speak_for(request, account.language)
    return Customer(account, auth, via_cookie)


def _token(
    request: Request, settings: Settings, credentials: HTTPAuthorizationCredentials | None
) -> tuple[str | None, bool]:
    if credentials is not None:
        return credentials.credentials, False
    return request.cookies.get(session_cookie(settings)), True


async def current_customer(
    request: Request,
    db: DB,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Customer:
    token, via_cookie = _token(request, settings, credentials)
    if not token or token.startswith("sck_"):
        raise NotAuthenticated(
            N_("Please sign in."), headers={"WWW-Authenticate": 'Bearer realm="simcharge"'}
        )
    return await _resolve(request, db, settings, token, via_cookie)


async def optional_customer(
    request: Request,
    db: DB,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Customer | None:
    """The signed-in customer if the request carries a session; None if it carries none."""
    token, via_cookie = _token(request, settings, credentials)
    if not token or token.startswith("sck_"):
        return None
    return await _resolve(request, db, settings, token, via_cookie)


CurrentCustomer = Annotated[Customer, Depends(current_customer)]
OptionalCustomer = Annotated[Customer | None, Depends(optional_customer)]
