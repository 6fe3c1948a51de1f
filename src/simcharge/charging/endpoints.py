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

from simcharge.api.deps import API_PREFIX, DB, AppSettings, Integration, require_scope
from simcharge.api.problems import problem_response
from simcharge.auth.apikeys import log_refused, verify_api_key
from simcharge.charging import nchf
from simcharge.charging.batch import UsageBatch, UsageReport, import_usage_records
from simcharge.charging.rating import RatingCache
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import Forbidden, NotAuthenticated, SimchargeError
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import N_
from simcharge.metrics import CHARGING_REQUESTS

NCHF_PREFIX = "/nchf-convergedcharging/v3"
SCOPE = "charging"

router = APIRouter(prefix=NCHF_PREFIX, tags=["charging (Nchf_ConvergedCharging v3)"])
usage_router = APIRouter(prefix=API_PREFIX, tags=["usage"])
_bearer = HTTPBearer(auto_error=False, description="An API key with the scope `charging`")


def nchf_error(request: Request, exc: SimchargeError) -> JSONResponse:
    """An error answered before an Nchf route runs (the middleware's: a NUL in a JSON body or the
    query, a 500, the database out of reach) as Nchf answers errors: ProblemDetails with its
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
        else "INVALID_MSG_FORMAT"
    )  # fmt: skip
    return problem_response(request, exc, {"cause": cause})


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
        self.found: dict[str, tuple[float, str, datetime | None]] = {}

    def get(self, digest: str, ttl: float) -> str | None:
        hit = self.found.get(digest)
        if hit is None or time.monotonic() - hit[0] > ttl:
            return None
        if hit[2] is not None and hit[2] <= utcnow():
            return None
        return hit[1]

    def put(self, digest: str, prefix: str, expires_at: datetime | None) -> None:
        if len(self.found) > 1000:
            self.found.clear()
        self.found[digest] = (time.monotonic(), prefix, expires_at)


async def network_function(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The API key prefix of the calling network function (scope `charging`)."""
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
    prefix = cache.get(digest, ttl) if ttl > 0 else None
    if prefix is not None:
        return prefix
    key = await db.run(lambda s: verify_api_key(s, credentials.credentials))
    ip = request.client.host if request.client else None
    if key is None:
        log_refused(credentials.credentials, reason="invalid", ip=ip)
        raise NotAuthenticated(N_("The API key is not valid."), headers=challenge)
    if SCOPE not in key.scopes:
        log_refused(credentials.credentials, reason="scope", ip=ip, scope=SCOPE)
        raise Forbidden(N_("This API key lacks the scope {scope}."), scope=SCOPE)
    cache.put(digest, key.prefix, key.expires_at)
    return key.prefix


NF = Annotated[str, Depends(network_function)]

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


@router.post("/chargingdata", status_code=201, openapi_extra=_REQUEST_BODY)
async def create_charging_data(request: Request, client: NF) -> Response:
    """Nchf_ConvergedCharging_Create: open a charging data resource and grant the first quotas."""
    db, settings = _app_state(request)
    body = await request.body()
    cache = rating_cache(request, settings)

    async def run(s: Any) -> nchf.NchfAnswer:
        table = await cache.get(s)
        return await nchf.create_charging_data(s, settings, table, client=client, body=body)

    with _counted("create"):
        answer = await db.run(run)
    location = f"{str(request.base_url).rstrip('/')}{NCHF_PREFIX}/chargingdata/{answer.ref}"
    return JSONResponse(answer.body, status_code=201, headers={"Location": location})


async def _update(request: Request, client: str, ref: str, *, release: bool) -> nchf.NchfAnswer:
    db, settings = _app_state(request)
    body = await request.body()
    cache = rating_cache(request, settings)

    async def run(s: Any) -> nchf.NchfAnswer:
        table = await cache.get(s)
        return await nchf.update_charging_data(
            s, settings, table, client=client, ref=ref, body=body, release=release
        )

    with _counted("release" if release else "update"):
        answer: nchf.NchfAnswer = await db.run(run)
    return answer


@router.post("/chargingdata/{ChargingDataRef}/update", openapi_extra=_REQUEST_BODY)
async def update_charging_data(request: Request, client: NF, ChargingDataRef: str) -> Response:
    """Nchf_ConvergedCharging_Update: report used units, get new quotas."""
    answer = await _update(request, client, ChargingDataRef, release=False)
    return JSONResponse(answer.body, status_code=200)


@router.post(
    "/chargingdata/{ChargingDataRef}/release", status_code=204, openapi_extra=_REQUEST_BODY
)
async def release_charging_data(request: Request, client: NF, ChargingDataRef: str) -> Response:
    """Nchf_ConvergedCharging_Release: report the last used units; every reservation released."""
    await _update(request, client, ChargingDataRef, release=True)
    return Response(status_code=204)


@usage_router.post("/usage", response_model=UsageReport)
async def submit_usage(
    batch: UsageBatch,
    db: DB,
    settings: AppSettings,
    _caller: Annotated[Integration, require_scope("usage:write")],
) -> UsageReport:
    """Rate and charge a batch of usage records (offline charging). Idempotent by record id:
    a record already charged is counted in `duplicates` and not charged again. Bad records are
    reported by index and do not stop the others."""
    with _counted("usage"):
        return await import_usage_records(db, settings, batch.records_as_rows())
