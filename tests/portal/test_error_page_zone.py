"""The portal's error page says its times in the reader's zone, as every portal page does.

What was missing: the page that answers a refusal for now (a rate limit, a lock-out) did not say
until when, and the visitor the error handler built itself when it had none wrote its times in
UTC, not even in the operator's zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from httpx import ASGITransport
from sqlalchemy import update
from starlette.requests import Request

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import NotFound, TooManyAttempts
from simcharge.kit.clock import clock, utcnow
from simcharge.kit.moments import moment_text
from simcharge.portal import problem_page
from tests.portal.helpers import new_customer, sign_in

NOW = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)  # Dec 7 in Manila


def _frozen() -> datetime:
    """The clock stopped now (to the second): the page's time is now + `Retry-After`, exactly."""
    now = utcnow().replace(microsecond=0)
    clock.freeze(now)
    return now


def _said(html: str) -> str:
    found = re.search(r'<p data-testid="retry-at">(.*?)</p>', html, re.S)
    assert found, "the page does not say when to try again"
    return found.group(1).replace("&#39;", "'")


async def _export_until_refused(client: httpx.AsyncClient) -> httpx.Response:
    """The data export: 5 an hour per account; the sixth is refused on the error page."""
    for _ in range(5):
        r = await client.get("/account/security/export")
        assert r.status_code == 200, r.text
    return await client.get("/account/security/export")


async def _app_client(settings: Settings, db: Database) -> tuple[Any, httpx.AsyncClient]:
    app = create_app(settings, db=db, run_worker=False)
    return app, httpx.AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver")


async def test_a_refusal_says_until_when_in_the_accounts_zone(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="es")
    await db.run(lambda s: s.execute(
        update(Account).where(Account.id == customer.account_id)
        .values(time_zone="Asia/Manila", format_locale="es_MX")
    ))
    sign_in(client, customer)
    now = _frozen()
    r = await _export_until_refused(client)
    assert r.status_code == 429 and r.headers["content-type"].startswith("text/html")
    wait = int(r.headers["retry-after"])  # the page's answer keeps the header
    assert 0 < wait <= 3600
    until = now + timedelta(seconds=wait)
    shown = moment_text("es", until, "es_MX", "Asia/Manila")
    assert shown.endswith("UTC+08:00") and "m." in shown  # Mexico's "p.m.", Manila's time
    said = _said(r.text)
    assert shown in said, (said, shown)
    assert moment_text("es", until, "es_MX", "UTC") not in r.text


async def test_an_account_without_a_zone_reads_the_operators(
    db: Database, settings: Settings
) -> None:
    mexico = settings.model_copy(update={"operator_timezone": "America/Mexico_City"})
    _, client = await _app_client(mexico, db)
    async with client:
        customer = await new_customer(db, mexico)
        sign_in(client, customer)
        now = _frozen()
        r = await _export_until_refused(client)
    assert r.status_code == 429
    until = now + timedelta(seconds=int(r.headers["retry-after"]))
    shown = moment_text("en", until, None, "America/Mexico_City")
    assert shown.endswith("UTC\u221206:00") and shown in _said(r.text)


async def test_an_error_with_nothing_to_wait_for_says_no_time(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await client.get("/account/orders/01900000-0000-7000-8000-000000000000")
    assert r.status_code == 404 and 'data-testid="retry-at"' not in r.text
    assert "retry-after" not in r.headers


async def test_the_page_built_without_a_visitor_uses_the_operators_zone(
    db: Database, settings: Settings
) -> None:
    """When finding out who is visiting itself failed (the database), the error page has no
    visitor of the request's: it is the operator's zone's, no longer UTC's."""
    manila = settings.model_copy(update={"operator_timezone": "Asia/Manila"})
    app, client = await _app_client(manila, db)
    await client.aclose()
    request = Request({
        "type": "http", "method": "GET", "path": "/account", "raw_path": b"/account",
        "query_string": b"", "headers": [], "app": app, "scheme": "http",
        "server": ("testserver", 80),
    })
    request.state.portal = True
    request.state.language = "en"
    clock.freeze(NOW)
    page = problem_page(request, TooManyAttempts(90))
    assert page.status_code == 429 and page.headers["retry-after"] == "90"
    body = bytes(page.body).decode()
    shown = moment_text("en", NOW + timedelta(seconds=90), None, "Asia/Manila")
    assert shown == "Dec 7, 2026, 4:01:30\u202fAM UTC+08:00" and shown in _said(body)
    assert problem_page(request, NotFound()).status_code == 404
