"""Nchf_ConvergedCharging v3 (`/nchf-convergedcharging/v3`) and the usage batch API."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from simcharge.api.deps import API_PREFIX, DB, AppSettings, Integration, require_scope
from simcharge.api.problems import PROBLEM_SCHEMA, problem_response
from simcharge.auth.apikeys import KeyClient, client_of, log_refused, verify_api_key
from simcharge.auth.models import ApiKey
from simcharge.charging import nchf
from simcharge.charging.batch import UsageBatch, UsageReport, import_usage_records
from simcharge.charging.rating import RatingCache
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Forbidden, NotAuthenticated, SimchargeError
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import N_
from simcharge.metrics import CHARGING_REQUESTS
from simcharge.tmf654.endpoints import UnsupportedMediaType

NCHF_PREFIX = "/nchf-convergedcharging/v3"
NCHF_ROOT = "/nchf-convergedcharging/"
"""Every path under it answers problems as Nchf does (`nchf_error`: with `cause`), another
version's included: a client of the CHF reads `cause` on every problem."""
SCOPE = "charging"

router = APIRouter(prefix=NCHF_PREFIX, tags=["charging (Nchf_ConvergedCharging v3)"])
usage_router = APIRouter(prefix=API_PREFIX, tags=["usage"])
_bearer = HTTPBearer(auto_error=False, description="An API key with the scope `charging`")


def nchf_error(request: Request, exc: SimchargeError) -> JSONResponse:
    """An error answered outside an Nchf route's own refusals (the middleware's: a NUL in a JSON
    body or the query, a 500, the database out of reach; the API key's, checked before the body
    is read: 401 and 403) as Nchf answers errors: ProblemDetails with its
    application error `cause` (TS 29.500 table 5.2.7.2-1) and `invalidParams` — a client of
    the CHF reads `cause`, and the generic problem has none. Bad input becomes Nchf's own 400;
    a 500 or a 503 keeps its problem type (`service-unavailable`: the database out of reach,
    nothing done, try again) with the cause added."""
    if isinstance(exc, nchf.NchfProblem):
        return problem_response(request, exc)
    if exc.status in (400, 422):
        reasons = [
            (e.field, e.detail.format(**e.params) if e.params else e.detail) for e in exc.errors
        ] or [(exc.field or "body", exc.detail)]
        converted = nchf.NchfProblem(
            400,
            "MANDATORY_IE_INCORRECT",
            N_("The charging request is not valid."),
            # The middleware names a member by its dotted path; Nchf by a JSON pointer.
            invalid=[("/" + field.replace(".", "/"), reason) for field, reason in reasons],
        )
        return problem_response(request, converted)
    cause = (
        "NF_CONGESTION" if exc.status == 503
        else "SYSTEM_FAILURE" if exc.status >= 500
        # The API key, the CHF's access token: missing or not valid (401, with the challenge),
        # or lacking the scope `charging` (403). TS 29.500 table 5.2.7.2-1 lists
        # ACCESS_TOKEN_DENIED under 403 and no cause for 401; the 401 carries it too, so that
        # every problem has one.
        else "ACCESS_TOKEN_DENIED" if exc.status in (401, 403)
        # A path no route has (a ChargingDataRef holding "/"), a method none takes.
        else "RESOURCE_URI_STRUCTURE_NOT_FOUND" if exc.status == 404
        else "UNSPECIFIED_MSG_FAILURE" if exc.status == 405
        else "INVALID_MSG_FORMAT"
    )  # fmt: skip
    return problem_response(request, exc, {"cause": cause})


def _is_json(request: Request) -> bool:
    """Whether the body is sent as `application/json` (parameters, a charset, allowed)."""
    given = request.headers.get("content-type") or ""
    return given.split(";", 1)[0].strip().lower() == "application/json"


def _check_media_type(request: Request) -> None:
    """A ChargingDataRequest is JSON (TS 29.500 5.4): a body sent as anything else — XML,
    text, a form, no type at all — is refused unread, 415 (TS 29.500 table 5.2.7.2-1 gives
    it no cause: `INVALID_MSG_FORMAT`, as the other client errors it lists none for), never
    charged."""
    if not _is_json(request):
        raise nchf.NchfProblem(
            415,
            "INVALID_MSG_FORMAT",
            N_("Send the body as application/json."),
            invalid=[("Content-Type", "a ChargingDataRequest is sent as application/json")],
            headers={"Accept-Post": "application/json"},
        )


async def usage_media_type(request: Request) -> None:
    """The usage batch is JSON: a body sent as another type (or none) is 415, not read as
    JSON anyway (without a type, it was) nor reported as a body that is no object."""
    if not _is_json(request):
        raise UnsupportedMediaType(
            field="Content-Type", headers={"Accept-Post": "application/json"}
        )


def _app_state(request: Request) -> tuple[Database, Settings]:
    """The app's database and settings. Read here rather than through the `DB` and
    `AppSettings` dependencies: FastAPI runs a plain-function dependency in a worker thread,
    two thread hand-offs for each of the network's many requests a second."""
    state = request.app.state
    return state.db, state.settings


def rating_cache(request: Request, settings: Settings) -> RatingCache:
    cache: RatingCache | None = getattr(request.app.state, "charging_rating", None)
    if cache is None:
        cache = RatingCache(settings.charging_rating_cache_seconds)
        request.app.state.charging_rating = cache
    return cache


class _KeyCache:
    """Verified charging keys, kept `ttl` seconds: the network calls many times a second, and
    a revoked key stops working within `ttl` (`SIMCHARGE_CHARGING_API_KEY_CACHE_SECONDS`); one
    that expires stops at its expiry, not `ttl` after it."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[float, KeyClient, datetime | None]] = {}

    def get(self, digest: str, ttl: float) -> KeyClient | None:
        hit = self.found.get(digest)
        if hit is None or time.monotonic() - hit[0] > ttl:
            return None
        if hit[2] is not None and hit[2] <= utcnow():
            return None
        return hit[1]

    def put(self, digest: str, client: KeyClient, expires_at: datetime | None) -> None:
        if len(self.found) > 1000:
            self.found.clear()
        self.found[digest] = (time.monotonic(), client, expires_at)


async def network_function(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> KeyClient:
    """The client of the calling network function's API key (scope `charging`): its sessions
    are the client's, so that they go on with the key's successor after a rotation."""
    db, settings = _app_state(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="simcharge"'}
    if credentials is None:
        raise NotAuthenticated(
            N_("An API key is required (Authorization: Bearer sck_…)."), headers=challenge
        )
    cache: _KeyCache | None = getattr(request.app.state, "charging_keys", None)
    if cache is None:
        cache = request.app.state.charging_keys = _KeyCache()
    digest = hashlib.sha256(credentials.credentials.encode()).hexdigest()
    ttl = settings.charging_api_key_cache_seconds
    known = cache.get(digest, ttl) if ttl > 0 else None
    if known is not None:
        return known

    async def check(s: Any) -> tuple[ApiKey | None, KeyClient | None]:
        key = await verify_api_key(s, credentials.credentials)
        return key, (await client_of(s, key) if key is not None else None)

    key, client = await db.run(check)
    ip = request.client.host if request.client else None
    if key is None:
        log_refused(credentials.credentials, reason="invalid", ip=ip)
        raise NotAuthenticated(N_("The API key is not valid."), headers=challenge)
    if SCOPE not in key.scopes:
        log_refused(credentials.credentials, reason="scope", ip=ip, scope=SCOPE)
        raise Forbidden(N_("This API key lacks the scope {scope}."), scope=SCOPE)
    assert client is not None
    cache.put(digest, client, key.expires_at)
    return client


NF = Annotated[KeyClient, Depends(network_function)]

_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "ChargingDataRequest (3GPP TS 32.291, Nchf_ConvergedCharging "
                    "3.1.6)",
                }
            }
        },
    }
}


class GrantedUnit(BaseModel):
    """The quota granted, in the unit the rating group's service counts."""

    time: int | None = Field(default=None, description="Seconds (voice)")
    totalVolume: int | None = Field(default=None, description="Bytes (data)")
    serviceSpecificUnits: int | None = Field(default=None, description="Messages (SMS)")


class FinalUnitIndication(BaseModel):
    finalUnitAction: str = Field(description="`TERMINATE`: nothing more can be granted after this")


class MultipleUnitInformation(BaseModel):
    ratingGroup: int
    resultCode: str = Field(
        description="`SUCCESS`, `QUOTA_LIMIT_REACHED`, `END_USER_SERVICE_DENIED` or `RATING_FAILED`"
    )
    grantedUnit: GrantedUnit | None = None
    validityTime: int | None = Field(default=None, description="Seconds the quota is valid")
    finalUnitIndication: FinalUnitIndication | None = None


class ChargingDataResponse(BaseModel):
    """ChargingDataResponse (TS 32.291 6.1.6.2.1.3) as this CHF answers it: the members it sets."""

    invocationTimeStamp: datetime
    invocationSequenceNumber: int
    multipleUnitInformation: list[MultipleUnitInformation] | None = None


_NCHF_PROBLEM: dict[str, Any] = {
    "application/problem+json": {
        "schema": {
            "title": "ProblemDetails",
            "description": "ProblemDetails (TS 29.571) with the application error `cause` "
            "(TS 32.291 6.1.7.3, TS 29.500 5.2.7.2) and `invalidParams`.",
            "type": "object",
            "required": ["type", "title", "status", "detail", "cause"],
            "properties": {
                # The RFC 9457 members, as every problem of ours has them.
                **{
                    name: PROBLEM_SCHEMA["properties"][name]
                    for name in ("type", "title", "status", "detail", "instance")
                },
                "cause": {
                    "type": "string",
                    "description": "USER_UNKNOWN, CHARGING_FAILED, CONTEXT_NOT_FOUND, "
                    "MANDATORY_IE_MISSING, MANDATORY_IE_INCORRECT, INVALID_MSG_FORMAT, "
                    "ACCESS_TOKEN_DENIED (401, 403: the API key), "
                    "RESOURCE_URI_STRUCTURE_NOT_FOUND (404: no such path), "
                    "UNSPECIFIED_MSG_FAILURE (405), SYSTEM_FAILURE, NF_CONGESTION. On every "
                    "problem.",
                },
                "invalidParams": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["param"],
                        "properties": {
                            "param": {"type": "string", "description": "A JSON pointer"},
                            "reason": {"type": "string"},
                        },
                    },
                },
            },
            "additionalProperties": True,
        }
    }
}


def _problems(**said: str) -> dict[int | str, dict[str, Any]]:
    """The problems a route answers (status → when), each a ProblemDetails with `cause`. "4XX"
    stands for the rest (a body too large, too many requests), and keeps FastAPI from listing a
    422 these routes never answer."""
    return {
        int(k[1:]) if k[1:].isdigit() else k[1:]: {"description": v, "content": _NCHF_PROBLEM}
        for k, v in said.items()
    }


_AUTH = {
    "_401": "ACCESS_TOKEN_DENIED: no API key, or not a valid one",
    "_403": "ACCESS_TOKEN_DENIED: the API key lacks the scope `charging`",
    "_500": "SYSTEM_FAILURE",
    "_503": "NF_CONGESTION: the database out of reach; nothing done, try again",
    "_415": "INVALID_MSG_FORMAT: the body is not sent as application/json",
    "_4XX": "Another client error (a body too large): INVALID_MSG_FORMAT",
}
_REF_PARAMETER: dict[str, Any] = {
    "parameters": [
        {
            "name": "ChargingDataRef",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "The charging data resource, from the create's `Location`",
        }
    ]
}


@contextlib.contextmanager
def _counted(operation: str) -> Iterator[None]:
    """Count a charging request by outcome: `ok`, the problem's slug, or `error`."""
    try:
        yield
    except SimchargeError as exc:
        CHARGING_REQUESTS.labels(operation, exc.slug).inc()
        raise
    except Exception:
        CHARGING_REQUESTS.labels(operation, "error").inc()
        raise
    CHARGING_REQUESTS.labels(operation, "ok").inc()


@router.post(
    "/chargingdata",
    status_code=201,
    openapi_extra=_REQUEST_BODY,
    response_model=ChargingDataResponse,
    response_model_exclude_none=True,
    responses={
        201: {
            "description": "Created; `Location` names the resource",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        },
        **_problems(
            _400="MANDATORY_IE_MISSING, MANDATORY_IE_INCORRECT, INVALID_MSG_FORMAT, or "
            "CHARGING_FAILED (no subscriber)",
            _404="USER_UNKNOWN: no line of ours in service has this subscriber",
            **_AUTH,
        ),
    },
)
async def create_charging_data(request: Request, client: NF) -> Response:
    """Nchf_ConvergedCharging_Create: open a charging data resource and grant the first quotas."""
    db, settings = _app_state(request)
    _check_media_type(request)
    body = await request.body()
    cache = rating_cache(request, settings)

    async def run(s: Any) -> nchf.NchfAnswer:
        table = await cache.get(s)
        return await nchf.create_charging_data(
            s, settings, table, client=client.id, client_aliases=client.prefixes, body=body
        )

    with _counted("create"):
        answer = await db.run(run)
    # Our own address (SIMCHARGE_BASE_URL), never one built from the client's Host header.
    location = f"{settings.base_url.rstrip('/')}{NCHF_PREFIX}/chargingdata/{answer.ref}"
    return JSONResponse(answer.body, status_code=201, headers={"Location": location})


async def _update(
    request: Request, client: KeyClient, ref: str, *, release: bool
) -> nchf.NchfAnswer:
    db, settings = _app_state(request)
    _check_media_type(request)
    body = await request.body()
    cache = rating_cache(request, settings)

    async def run(s: Any) -> nchf.NchfAnswer:
        table = await cache.get(s)
        return await nchf.update_charging_data(
            s, settings, table, client=client.id, client_aliases=client.prefixes, ref=ref,
            body=body, release=release,
        )

    with _counted("release" if release else "update"):
        answer: nchf.NchfAnswer = await db.run(run)
    return answer


_UPDATE_PROBLEMS = _problems(
    _400="MANDATORY_IE_MISSING, MANDATORY_IE_INCORRECT, INVALID_MSG_FORMAT, or CHARGING_FAILED "
    "(a sequence number answered already, or not after the last one)",
    _404="CONTEXT_NOT_FOUND: no such resource, or it is closed or timed out",
    **_AUTH,
)


def _ref(request: Request) -> str:
    """The path's ChargingDataRef (read here, not as a parameter FastAPI validates: it would
    document a 422 these routes never answer — any text is looked up, and unknown is 404)."""
    return str(request.path_params["ChargingDataRef"])


@router.post(
    "/chargingdata/{ChargingDataRef}/update",
    openapi_extra={**_REQUEST_BODY, **_REF_PARAMETER},
    response_model=ChargingDataResponse,
    response_model_exclude_none=True,
    responses={200: {"description": "The new quotas"}, **_UPDATE_PROBLEMS},
)
async def update_charging_data(request: Request, client: NF) -> Response:
    """Nchf_ConvergedCharging_Update: report used units, get new quotas."""
    answer = await _update(request, client, _ref(request), release=False)
    return JSONResponse(answer.body, status_code=200)


@router.post(
    "/chargingdata/{ChargingDataRef}/release",
    status_code=204,
    openapi_extra={**_REQUEST_BODY, **_REF_PARAMETER},
    responses={204: {"description": "Released"}, **_UPDATE_PROBLEMS},
)
async def release_charging_data(request: Request, client: NF) -> Response:
    """Nchf_ConvergedCharging_Release: report the last used units; every reservation released."""
    await _update(request, client, _ref(request), release=True)
    return Response(status_code=204)


@usage_router.post("/usage", response_model=UsageReport, response_model_exclude_none=True)
async def submit_usage(
    batch: UsageBatch,
    db: DB,
    settings: AppSettings,
    _caller: Annotated[Integration, require_scope("usage:write")],
    _json: Annotated[None, Depends(usage_media_type)],
) -> UsageReport:
    """Rate and charge a batch of usage records (offline charging). Idempotent by record id:
    a record already charged is counted in `duplicates` and not charged again. Bad records are
    reported by their index in `records` (`record`, from 0) and do not stop the others."""
    with _counted("usage"):
        return await import_usage_records(db, settings, batch.records_as_rows(), indexed=True)
