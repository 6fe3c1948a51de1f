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
