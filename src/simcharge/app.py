"""The application factory: settings, database, routers, error handling, in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, FastAPI

from simcharge import __version__
from simcharge.accounts.endpoints import router as me_router
from simcharge.api.middleware import PageTurns, RequestContextMiddleware
from simcharge.api.problems import document_problems, install_problem_handlers
from simcharge.api.system import mount_docs_assets
from simcharge.api.system import router as system_router
from simcharge.auth.endpoints import router as auth_router
from simcharge.auth.passkey_endpoints import router as passkey_router
from simcharge.auth.throttle import RateLimits
from simcharge.backoffice.endpoints import router as backoffice_api_router
from simcharge.backoffice.journal import router as ledger_journal_router
from simcharge.backoffice.provider_events import router as provider_events_router
from simcharge.backoffice.screens import install_backoffice
from simcharge.backoffice.screens import router as backoffice_router
from simcharge.backoffice.screens_account import router as backoffice_account_router
from simcharge.backoffice.screens_admin import router as backoffice_admin_router
from simcharge.backoffice.screens_auth import router as backoffice_auth_router
from simcharge.backoffice.screens_customers import router as backoffice_customers_router
from simcharge.backoffice.screens_reports import router as backoffice_reports_router
from simcharge.backoffice.screens_tickets import router as backoffice_tickets_router
from simcharge.catalog.endpoints import router as catalog_router
from simcharge.charging.endpoints import NCHF_ROOT, nchf_error, usage_router
from simcharge.charging.endpoints import router as nchf_router
from simcharge.config import Environment, Settings, get_settings
from simcharge.db import Database, Timeouts
from simcharge.kit.logging import configure_logging
from simcharge.lines.endpoints import router as lines_router
from simcharge.notifications.endpoints import dev_router
from simcharge.orders.admin import router as orders_admin_router
from simcharge.orders.endpoints import router as orders_router
from simcharge.payments.endpoints import router as webhooks_router
from simcharge.payments.endpoints import sandbox_router
from simcharge.payments.registry import Providers
from simcharge.portal import install as install_portal
from simcharge.tickets.endpoints import router as tickets_router
from simcharge.tmf654.endpoints import router as tmf654_router
from simcharge.tmf654.endpoints import tmf_error
from simcharge.tmf654.transfers import router as line_transfers_router
from simcharge.worker.admin import router as jobs_admin_router

ROUTERS: tuple[APIRouter, ...] = (
    system_router,
    auth_router,
    passkey_router,
    me_router,
    catalog_router,
    lines_router,
    orders_router,
    orders_admin_router,
    jobs_admin_router,
    webhooks_router,
    nchf_router,
    usage_router,
    tmf654_router,
    line_transfers_router,
    backoffice_api_router,
    ledger_journal_router,
    backoffice_auth_router,
    backoffice_account_router,
    backoffice_router,
    backoffice_tickets_router,
    backoffice_customers_router,
    backoffice_admin_router,
    backoffice_reports_router,
    provider_events_router,
    tickets_router,
)


def add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Add each router's routes to the app as they are (each router carries its own prefix):
    the app's route table then holds full path templates, which metrics label requests with."""
    for router in routers:
        app.router.routes.extend(router.routes)


# Starlette tries the routes in order, a regular expression each (~2.5 µs): with 210 routes the
# user center, added last, was tried after 175 others on every view. No route's first path
# segment is a parameter, so routes with different first segments never compete and only the
# order among those that share one (kept as added) decides a match. The busiest come first.
_FIRST = (
    "/nchf-convergedcharging/", "/api/v1/webhooks/", "/api/v1/usage", "/account", "/static/",
    "/api/v1/me", "/api/v1/orders", "/api/v1/lines", "/api/v1/", "/tmf-api/", "/login", "/",
)
_LAST = ("/backoffice", "/api/v1/admin/")


def _rank(route: object) -> int:
    path = getattr(route, "path", "")
    if any(path.startswith(prefix) for prefix in _LAST):
        return len(_FIRST) + 1
    return next((i for i, prefix in enumerate(_FIRST) if path.startswith(prefix)), len(_FIRST))


def arrange_routes(app: FastAPI) -> None:
    """The busiest routes first (see `_FIRST`); a stable sort, so routes that share a first path
    segment keep the order they were added in whenever they could compete."""
    for route in app.router.routes:
        # Ranks differ by the first segment, and under /api/v1/ by the third: no route may
        # have a parameter there, or it could compete with a route of another rank.
        parts = getattr(route, "path", "/").split("/")
        head = parts[1:4] if parts[1] == "api" else parts[1:2]
        assert not any("{" in part for part in head), f"{route}: a parameter in {head}"
    app.router.routes.sort(key=_rank)


def serve_app() -> FastAPI:
    """The app as `simcharge serve` runs it in each web process (uvicorn's factory)."""
    return create_app(freeze_heap=True)


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    run_worker: bool | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app. Tests pass their own `db`; `run_worker` defaults to the setting.
    `freeze_heap`: at startup, what the process has built so far is taken out of the garbage
    collector's sight (`serve_app`)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    owns_db = db is None
    database = db or Database.from_url(
        settings.database_url, pool_size=settings.db_pool_size, echo=settings.db_echo,
        timeouts=Timeouts.for_web(settings),
    )
    worker_wanted = settings.worker_in_process if run_worker is None else run_worker
    # One HTTP client for every provider call of this process (connection reuse; respx in tests).
    http = httpx.AsyncClient(timeout=httpx.Timeout(20, connect=5))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        if worker_wanted:
            from simcharge.worker.runner import Worker

            worker = Worker(
                database, settings, http=http, concurrency=settings.worker_in_process_concurrency
            )
            app.state.worker = worker
            task = asyncio.create_task(worker.run(stop))
        if freeze_heap:
            # Modules, mappings, compiled statements, catalogs: built once, kept for the life of
            # the process. Frozen, a full collection walks only what requests create; before, it
            # walked ~250,000 objects, 60-80 ms every few seconds under load, and every request
            # of the process waited for it.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            await http.aclose()
            if owns_db:
                await database.dispose()

    app = FastAPI(
        title=settings.operator_name,
        version=__version__,
        description="simcharge: prepaid eSIM top-ups, balances and charging.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    # A slash too many is no redirect to the request's `Host` (Starlette's default, before any
    # authentication, and to http:// behind a TLS proxy): pages are sent on relatively by the
    # 404 handler (`api.problems._without_slash`), the APIs answer 404.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.db = database
    app.state.rate_limits = RateLimits(settings.redis_url)
    app.state.http = http
    app.state.providers = Providers(settings, http, database)
    install_problem_handlers(app)
    # Errors answered before a route runs (the middleware's refusals, a 500) in the shape of
    # the API under the path: TMF654 answers with its `Error` resource, Nchf with its `cause`.
    app.state.error_answers = ((NCHF_ROOT, nchf_error), ("/tmf-api/", tmf_error))
    document_problems(app)
    install_backoffice(app)
    add_routes(app, *ROUTERS)
    if settings.env is Environment.development:
        # Never elsewhere: the page shows every code sent (a staging server runs as `test`).
        add_routes(app, dev_router)
    if settings.sandbox_on:
        add_routes(app, sandbox_router)
    install_portal(app)
    mount_docs_assets(app)
    arrange_routes(app)
    # Inside the request context: a page's wait for its turn counts in its latency and log.
    app.add_middleware(PageTurns, at_once=settings.portal_pages_at_once)
    app.add_middleware(
        RequestContextMiddleware,
        hsts=settings.env is Environment.production,
        default_language=settings.default_language,
        max_body=settings.max_body_bytes,
    )
    return app
