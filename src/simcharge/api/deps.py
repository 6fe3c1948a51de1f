"""FastAPI dependencies shared by every router."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from simcharge.auth.apikeys import log_refused, verify_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Forbidden, NotAuthenticated
from simcharge.kit.i18n import pick_language
from simcharge.kit.translations import N_

API_PREFIX = "/api/v1"


# The dependencies below are `async def` although they await nothing: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop on every request for a dictionary lookup.


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def request_language(request: Request) -> str:
    """The language of the API's answers and problems: `?lang=` if given and supported, else the
    signed-in customer's own (`account_language`, known once the customer is), else the best
    match for `Accept-Language`, else the operator's `SIMCHARGE_DEFAULT_LANGUAGE` — the portal's
    rule, with `?lang=` for its cookie."""
    settings: Settings = request.app.state.settings
    return pick_language(
        request.query_params.get("lang"),
        getattr(request.state, "account_language", None),
        accept_language=request.headers.get("accept-language"),
        default=settings.default_language,
    )


def speak_for(request: Request, account_language: str) -> None:
    """The signed-in customer is known: this request's answers and problems speak their
    language from now on (unless `?lang=` says otherwise)."""
    request.state.account_language = account_language
    request.state.language = request_language(request)


async def get_language(request: Request) -> str:
    language = request_language(request)
    request.state.language = language
    return language


DB = Annotated[Database, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
Language = Annotated[str, Depends(get_language)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `sck_…`")


@dataclass(frozen=True, slots=True)
class Integration:
    """A caller authenticated by an API key."""

    key_prefix: str
    name: str
    scopes: frozenset[str]
    client_id: uuid.UUID
    """The key's client, across rotations (`ApiKey.client_id`): read with the key, so that a
    route scoping by client (TMF654's idempotency keys) need not look it up again."""


def require_scope(scope: str) -> Any:
    async def dependency(
        request: Request,
        db: DB,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Integration:
        challenge = {"WWW-Authenticate": 'Bearer realm="simcharge"'}
        if credentials is None:
            raise NotAuthenticated(
                N_("An API key is required (Authorization: Bearer sck_…)."), headers=challenge
            )
        key = await db.run(lambda s: verify_api_key(s, credentials.credentials))
        ip = request.client.host if request.client else None
        if key is None:
            log_refused(credentials.credentials, reason="invalid", ip=ip)
            raise NotAuthenticated(N_("The API key is not valid."), headers=challenge)
        if scope not in key.scopes:
            log_refused(credentials.credentials, reason="scope", ip=ip, scope=scope)
            raise Forbidden(N_("This API key lacks the scope {scope}."), scope=scope)
        return Integration(key.prefix, key.name, frozenset(key.scopes), key.client_id)

    return Depends(dependency)
