"""The app's route table: the busiest routes are tried first, and the order never changes which
route answers a request."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Match, Mount

from simcharge import app as app_module
from simcharge.app import arrange_routes, create_app
from simcharge.db import Database


def _paths(app: Any) -> list[str]:
    return [getattr(r, "path", "") for r in app.router.routes]


async def test_the_busiest_routes_are_tried_first(app: Any) -> None:
    paths = _paths(app)
    assert paths[0].startswith("/nchf-convergedcharging/")
    assert paths.index("/api/v1/webhooks/{provider}") < 5
    assert paths.index("/account") < 10
    admin = [i for i, p in enumerate(paths) if p.startswith(("/backoffice", "/api/v1/admin/"))]
    assert admin and min(admin) > max(
        i for i, p in enumerate(paths) if not p.startswith(("/backoffice", "/api/v1/admin/"))
    )


def _sample(path: str) -> str:
    """A concrete path for a route's template: each parameter given a plausible value."""
    return re.sub(r"\{[^}:]+(:path)?\}", "00000000-0000-0000-0000-000000000000", path)


async def test_every_route_answers_the_same_requests_as_in_the_order_they_were_added(
    settings: Any, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    arranged = create_app(settings, db=db, run_worker=False)
    monkeypatch.setattr(app_module, "arrange_routes", lambda app: None)
    added = create_app(settings, db=db, run_worker=False)
    assert _paths(added) != _paths(arranged)  # the arrangement did change the order

    def first_match(app: Any, scope: dict[str, Any]) -> tuple[str, str] | None:
        for route in app.router.routes:
            if route.matches(scope)[0] is Match.FULL:
                return getattr(route, "path", ""), getattr(route, "name", "")
        return None

    checked = 0
    for route in added.router.routes:
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            path = _sample(getattr(route, "path", "/")) + ("/x.css" if isinstance(route, Mount) else "")
            scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
            assert first_match(arranged, scope) == first_match(added, scope), (method, path)
            checked += 1
    assert checked > 200


def test_a_route_whose_first_segment_is_a_parameter_is_refused() -> None:
    app = FastAPI()

    @app.get("/{anything}")
    async def anything() -> None: ...

    with pytest.raises(AssertionError, match="parameter"):
        arrange_routes(app)


def test_an_api_route_with_a_parameter_for_its_name_is_refused() -> None:
    app = FastAPI()

    @app.get("/api/v1/{collection}/x")
    async def collection() -> None: ...

    with pytest.raises(AssertionError, match="parameter"):
        arrange_routes(app)


async def test_a_served_app_takes_what_startup_built_out_of_the_collectors_sight(
    settings: Any, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each web process freezes its startup heap (a full collection then walks only what
    requests create); an app built by tests does not."""
    import gc

    gc.unfreeze()
    plain = create_app(settings, db=db, run_worker=False)
    async with plain.router.lifespan_context(plain):
        assert gc.get_freeze_count() == 0
    served = create_app(settings, db=db, run_worker=False, freeze_heap=True)
    try:
        async with served.router.lifespan_context(served):
            assert gc.get_freeze_count() > 10_000  # modules, mappings, catalogs
    finally:
        gc.unfreeze()
    # `simcharge serve` runs `serve_app`, which asks for it.
    asked: dict[str, Any] = {}
    monkeypatch.setattr(app_module, "create_app", lambda **kw: asked.update(kw) or plain)
    assert app_module.serve_app() is plain and asked == {"freeze_heap": True}


def test_simcharge_serve_runs_the_served_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process: uvicorn itself; several: the dispatcher (tests/kit/test_dispatch.py), which
    returns its exit status."""
    import uvicorn
    from typer.testing import CliRunner

    from simcharge import metrics
    from simcharge.cli import app as cli
    from simcharge.kit import dispatch

    ran: dict[str, Any] = {}
    # Not the metrics directory of several processes (it would be set for the other tests).
    monkeypatch.setattr(metrics, "prepare_multiprocess", lambda processes: None)
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: ran.update(target=target, **kw))
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 0, result.output
    assert ran["target"] == "simcharge.app:serve_app" and ran["factory"] is True
    assert "workers" not in ran

    handed: dict[str, Any] = {}
    monkeypatch.setattr(dispatch, "serve", lambda target, **kw: handed.update(target=target, **kw) or 3)
    result = CliRunner().invoke(cli, ["serve", "--workers", "2", "--graceful-seconds", "7"])
    assert result.exit_code == 3, result.output
    assert handed["target"] == "simcharge.app:serve_app" and handed["factory"] is True
    assert handed["processes"] == 2 and handed["timeout_graceful_shutdown"] == 7
