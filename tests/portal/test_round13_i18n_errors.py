"""The portal's problem pages speak the language the customer chose, and a form sent after the
session ended offers to sign in back to the form's page.

What was wrong (the walkthrough): a customer who picked Spanish (the footer's switch, or their
account's language) with an English browser got an English page-not-found — the 404 handler
used the API's rule (the browser's `Accept-Language`), not the portal's (the switch's cookie,
then the account's language, then the browser's). A form sent after the session ended showed
"You need to sign in first" with "Back to the start", losing the way back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.tickets.models import Ticket
from tests.portal.helpers import PASSWORD, csrf_of, new_customer, sign_in

ES_NOT_FOUND = "No se ha encontrado nada aquí."
EN_NOT_FOUND = "Nothing was found here."
EN_BROWSER = {"accept": "text/html", "accept-language": "en-US,en;q=0.9"}


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements run meanwhile (on this test's engine)."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", note)


def _lang(html: str) -> str:
    found = re.search(r'<html lang="([^"]+)"', html)
    assert found, html[:300]
    return found.group(1)


# --- 2. The problem pages' language -------------------------------------------------------------


async def test_a_page_not_found_speaks_the_switchs_language_without_a_read(
    client: httpx.AsyncClient, settings: Settings, statements: list[str]
) -> None:
    client.cookies.set("sc_lang", "es")
    r = await client.get("/no-such-page", headers=EN_BROWSER)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert _lang(r.text) == "es" and ES_NOT_FOUND in r.text
    assert r.headers["content-language"] == "es"
    assert statements == []  # no session cookie: the language is found without the database


async def test_without_a_choice_the_browser_decides(client: httpx.AsyncClient) -> None:
    r = await client.get("/no-such-page", headers={"accept": "text/html",
                                                   "accept-language": "fil-PH,fil;q=0.9"})
    assert r.status_code == 404 and _lang(r.text) == "fil" and "Walang nahanap dito." in r.text
    r = await client.get("/no-such-page", headers=EN_BROWSER)
    assert _lang(r.text) == "en" and EN_NOT_FOUND in r.text


async def test_a_signed_in_customer_reads_their_accounts_language(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)
    r = await client.get("/account/no-such-page", headers=EN_BROWSER)
    assert r.status_code == 404 and _lang(r.text) == "es" and ES_NOT_FOUND in r.text
    # The signed-in page: its way back is the account, not the public start.
    assert 'class="btn" href="/account"' in r.text
    # The switch's cookie comes before the account's language, as on every page.
    client.cookies.set("sc_lang", "zh-Hans")
    r = await client.get("/account/no-such-page", headers=EN_BROWSER)
    assert _lang(r.text) == "zh-Hans" and "此处没有内容。" in r.text


async def test_a_form_address_opened_as_a_page_speaks_the_accounts_language(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)
    r = await client.get("/account/notices/read", headers=EN_BROWSER)  # a form's address
    assert r.status_code == 405 and _lang(r.text) == "es"
    assert r.headers["content-type"].startswith("text/html")


async def test_a_session_that_ended_falls_back_to_the_browser(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)
    clock.freeze(utcnow() + timedelta(minutes=settings.session_idle_minutes + 5))
    r = await client.get("/no-such-page", headers=EN_BROWSER)
    assert r.status_code == 404 and _lang(r.text) == "en" and EN_NOT_FOUND in r.text
    assert 'class="btn" href="/"' in r.text  # no longer signed in
    client.cookies.set("sc_session", "garbage")
    r = await client.get("/no-such-page", headers=EN_BROWSER)
    assert r.status_code == 404 and _lang(r.text) == "en"


async def test_the_database_failing_still_answers_in_the_switchs_language(
    client: httpx.AsyncClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = await new_customer(db, settings, language="es")
    sign_in(client, customer)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception("the database is down"))

    monkeypatch.setattr("simcharge.portal.web.find_session", broken)
    client.cookies.set("sc_lang", "fil")
    r = await client.get("/no-such-page", headers=EN_BROWSER)
    assert r.status_code == 404 and _lang(r.text) == "fil" and "Walang nahanap dito." in r.text


async def test_the_api_keeps_accept_language(client: httpx.AsyncClient) -> None:
    """problem+json follows the caller's `Accept-Language` (or `?lang=`), not the portal's
    cookie: an API client is not the portal's visitor."""
    client.cookies.set("sc_lang", "es")
    r = await client.get("/api/v1/no-such-thing", headers={"accept-language": "en"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("/not-found") and body["title"] == EN_NOT_FOUND
    r = await client.get("/api/v1/no-such-thing", headers={"accept-language": "es"})
    assert r.json()["title"] == ES_NOT_FOUND


# --- 3. A form sent after the session ended -----------------------------------------------------


async def _ticket_count(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(Ticket))).scalar_one())


def _sign_in_link(html: str) -> str:
    found = re.search(r'<a class="btn" href="([^"]+)" data-testid="sign-in-again">', html)
    assert found, html
    return found.group(1).replace("&amp;", "&")


async def _form_after_session_ended(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str = "en"
) -> tuple[str, dict[str, str]]:
    customer = await new_customer(db, settings, language=language)
    sign_in(client, customer)
    page = await client.get("/account/help")
    assert page.status_code == 200
    form = {"csrf": csrf_of(page.text), "subject": "My data", "body": "It stopped working."}
    clock.freeze(utcnow() + timedelta(minutes=settings.session_idle_minutes + 5))
    return customer.username, form


async def test_a_form_sent_after_the_session_ended_offers_to_sign_in_back_to_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    username, form = await _form_after_session_ended(client, db, settings)
    before = await _ticket_count(db)
    r = await client.post("/account/help", data=form,
                          headers={"referer": "http://testserver/account/help?order=x"})
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html")
    assert "The form was not sent because you are not signed in" in r.text
    assert "Back to the start" not in r.text
    link = _sign_in_link(r.text)
    assert urlsplit(link).path == "/login"
    assert parse_qs(urlsplit(link).query) == {"next": ["/account/help?order=x"]}
    assert await _ticket_count(db) == before  # nothing was sent
    # Following the link: the sign-in form carries the page, and signing in goes back to it.
    login = await client.get(link)
    assert login.status_code == 200
    assert 'name="next" value="/account/help?order=x"' in login.text
    r = await client.post("/login", data={"csrf": csrf_of(login.text), "login": username,
                                          "password": PASSWORD, "next": "/account/help?order=x"})
    assert r.status_code == 303 and r.headers["location"] == "/account/help?order=x"


async def test_without_a_referer_the_page_above_the_forms_address(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    _, form = await _form_after_session_ended(client, db, settings)
    r = await client.post("/account/help/0190aaaa-0000-7000-8000-000000000000/reply", data=form)
    assert r.status_code == 401
    assert parse_qs(urlsplit(_sign_in_link(r.text)).query) == {
        "next": ["/account/help/0190aaaa-0000-7000-8000-000000000000"]
    }


@pytest.mark.parametrize(
    "referer",
    [
        "https://evil.example/account/help",  # another site
        "http://testserver//evil.example/x",  # a path that is another origin
        "http://testserver/login?next=/account",  # the sign-in page itself
        "javascript:alert(1)",
        "not a url",
    ],
)
async def test_a_referer_from_elsewhere_is_not_followed(
    client: httpx.AsyncClient, db: Database, settings: Settings, referer: str
) -> None:
    _, form = await _form_after_session_ended(client, db, settings)
    r = await client.post("/account/help", data=form, headers={"referer": referer})
    assert r.status_code == 401
    assert parse_qs(urlsplit(_sign_in_link(r.text)).query) == {"next": ["/account/help"]}


async def test_the_page_speaks_the_browsers_language_once_signed_out(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    _, form = await _form_after_session_ended(client, db, settings, language="es")
    client.cookies.set("sc_lang", "es")
    r = await client.post("/account/help", data=form, headers={"accept-language": "en"})
    assert r.status_code == 401 and _lang(r.text) == "es"
    assert "Iniciar sesión" in r.text  # the button (its msgid exists)


async def test_a_page_asked_for_after_the_session_ended_still_goes_to_sign_in(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await _form_after_session_ended(client, db, settings)
    r = await client.get("/account/help?x=1")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Faccount%2Fhelp%3Fx%3D1"
