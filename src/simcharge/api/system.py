"""Health, readiness, metrics, offline API docs and the problem-type pages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import fastapi_offline
import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from simcharge.api.deps import DB
from simcharge.auth.deps import Limits
from simcharge.errors import NotFound, ServiceUnavailable, registered_problem_types
from simcharge.kit.translations import N_
from simcharge.metrics import exposition, refresh_levels

router = APIRouter(tags=["operations"])
log = structlog.get_logger("simcharge.http")
READY_WITHIN = 2.0
"""Seconds the database has to answer `/readyz` (as Redis has): one that hangs is not ready."""

_SWAGGER_ASSETS = Path(fastapi_offline.__file__).parent / "static"
# Swagger UI's page needs its own inline start-up script; only /docs gets this policy.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)


class NotReady(ServiceUnavailable):
    """`/readyz`: the process cannot serve now (its database, or the Redis that holds the rate
    limits, does not answer); a load balancer sends traffic elsewhere until it can."""

    slug = "not-ready"

    def __init__(self, database: str, redis: str | None = None) -> None:
        super().__init__()
        self.database = database
        self.redis = redis

    def extra(self) -> dict[str, Any]:
        if self.redis is None:
            return {"database": self.database}
        return {"database": self.database, "redis": self.redis}


_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
}
_READY = {
    "type": "object",
    "required": ["status", "database"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "database": {"type": "string", "enum": ["ok"]},
        "redis": {"type": "string", "enum": ["ok"]},
    },
}


@router.get(
    "/healthz",
    summary="Liveness: the process is up",
    responses={200: {"content": {"application/json": {"schema": _STATUS}}}},
)
async def healthz() -> dict[str, str]:
    """The process is up (nothing else is checked: a load balancer's or orchestrator's liveness
    probe)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the process can serve (its database answers, and Redis when set)",
    response_class=JSONResponse,
    responses={
        200: {"description": "Ready", "content": {"application/json": {"schema": _READY}}},
        503: {
            "description": "Not ready: the database, or the Redis of the rate limits, does "
            "not answer",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        },
    },
)
async def readyz(db: DB, limits: Limits) -> JSONResponse:
    """The process can serve: its database answers, and Redis too when `SIMCHARGE_REDIS_URL` is
    set (without it every sign-in, registration and code is refused: the rate limits fail
    closed). If not: 503, a `not-ready` problem naming what does not answer."""
    database = "ok"
    try:
        async with asyncio.timeout(READY_WITHIN):  # a database that hangs is not ready either
            await db.ping()
    except Exception as exc:  # noqa: BLE001 - whatever fails, the answer is "not ready"
        log.warning("readyz.database_unreachable", error=type(exc).__name__)
        database = "unreachable"
    redis = await limits.readiness()  # not named when the counts are in memory
    if database != "ok" or redis == "unreachable":
        raise NotReady(database, redis)
    return JSONResponse({"status": "ok", "database": "ok"} | ({"redis": "ok"} if redis else {}))


@router.get(
    "/metrics",
    summary="Prometheus metrics (keep it for the scraper: allow it only from there)",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(db: DB) -> Response:
    """Prometheus metrics; the levels kept in the database are read now (at most every 5 s)."""
    try:
        await refresh_levels(db)
    except Exception:  # the process's own metrics are still worth serving
        log.warning("metrics.levels_unavailable", exc_info=True)
    body, media_type = exposition()
    return Response(body, media_type=media_type)


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} API",
        swagger_js_url="/static/api-docs/swagger-ui-bundle.js",
        swagger_css_url="/static/api-docs/swagger-ui.css",
        swagger_favicon_url="/static/api-docs/favicon.png",
    )
    page.headers["content-security-policy"] = _DOCS_CSP
    return page


@router.get("/problems/{slug}", include_in_schema=False)
async def problem_type(slug: str) -> JSONResponse:
    """What a problem `type` means (RFC 9457 asks that the type URI documents itself)."""
    cls = registered_problem_types().get(slug)
    if cls is None:
        raise NotFound(N_("There is no problem type {slug}."), field="slug", slug=slug)
    return JSONResponse({"type": f"/problems/{slug}", "title": cls.title, "status": cls.status})


def mount_docs_assets(app: FastAPI) -> None:
    app.mount("/static/api-docs", StaticFiles(directory=_SWAGGER_ASSETS), name="api-docs")
