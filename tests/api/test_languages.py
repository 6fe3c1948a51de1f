"""Which language the API answers in: `?lang=`, else the signed-in customer's (or staff
member's) own, else `Accept-Language`, else the operator's `SIMCHARGE_DEFAULT_LANGUAGE` — for
problems raised by an endpoint and for those of validation, before the endpoint runs, alike; and
the default reaches every answer made before anyone chose (the middleware's, TMF654's, the back
office's)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi.routing import APIRoute

from simcharge.api.deps import get_language
from simcharge.app import create_app
from simcharge.auth.deps import current_customer, optional_customer
from simcharge.backoffice.deps import api_actor, web_actor
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.translations import translate
from tests.factories import load_demo_catalog
from tests.orders.helpers import idem, new_payer
from tests.tmf654.helpers import BASE, api_key

INVALID = "Some input is not valid."


def _said(language: str, text: str, **params: Any) -> str:
    said = translate(language, text).format(**params)
    assert params or language == "en" or said != text, (language, text)  # it is translated
    return said


async def test_a_customers_problems_speak_their_language_before_and_in_the_endpoint(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings, language="zh-Hans")
    zh = "zh-Hans"
    orders = "/api/v1/orders"

    async def post(body: str, query: str = "", **headers: str) -> dict[str, Any]:
        r = await client.post(orders + query, content=body, headers={
            **payer.auth, **idem(), "content-type": "application/json", **headers})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        found: dict[str, Any] = r.json()
        return found

    # Validation, before the endpoint runs: the account's language, over Accept-Language.
    body = await post("{}", **{"accept-language": "es"})
    assert body["title"] == _said(zh, INVALID)
    assert body["errors"][0] == {"field": "plan", "detail": _said(zh, "This field is required.")}
    # pydantic's own kinds of error are said in it too, with their limits.
    body = await post('{"plan": 5, "method": "sandbox"}')
    assert body["errors"] == [{"field": "plan", "detail": _said(zh, "Enter text.")}]
    r = await client.get(f"{orders}?limit=abc", headers=payer.auth)
    assert r.json()["errors"] == [{"field": "limit", "detail": _said(zh, "Enter a whole number.")}]
    r = await client.get(f"{orders}?limit=500", headers=payer.auth)
    assert r.json()["errors"] == [
        {"field": "limit", "detail": _said(zh, "Enter {le} or less.", le=100)}]
    r = await client.get(f"{orders}?line_id=nope", headers=payer.auth)
    assert r.json()["errors"] == [
        {"field": "line_id", "detail": _said(zh, "This is not a valid id.")}]
    # `?lang=` is the one choice over the account's.
    body = await post("{}", "?lang=es")
    assert body["title"] == _said("es", INVALID)
    # In the endpoint: the same.
    r = await client.get(f"{orders}/{uuid.uuid4()}", headers={**payer.auth,
                                                               "accept-language": "en"})
    assert r.status_code == 404 and r.json()["title"] == _said(zh, "There is no such order.")


async def test_answers_made_before_anyone_chose_speak_the_operators_default(
    settings: Settings, db: Database
) -> None:
    spanish = settings.model_copy(update={"default_language": "es"})
    app = create_app(spanish, db=db, run_worker=False)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internals")

    key = await api_key(db, "balance:read", "balance:write")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        # The middleware's: a NUL refused, an unexpected error.
        r = await c.get("/api/v1/plans?q=%00")
        assert (r.status_code, r.json()["title"]) == (422, _said("es", INVALID))
        r = await c.get("/boom")
        assert (r.status_code, r.json()["title"]) == (
            500, _said("es", "Something went wrong on our side; it has been logged."))
        r = await c.get("/boom", headers={"accept-language": "zh-TW"})
        assert r.json()["title"] == _said("zh-Hant", "Something went wrong on our side; it has been logged.")
        # TMF654's.
        r = await c.get(f"{BASE}/bucket/{uuid.uuid4()}", headers=key)
        assert (r.status_code, r.json()["reason"]) == (404, _said("es", "No such bucket."))
        r = await c.post(f"{BASE}/topupBalance", headers=key, json={"usageType": "monetary"})
        assert r.status_code == 400 and r.json()["errors"][0]["detail"] == _said(
            "es", "This field is required.")
        # The back office's sign-in page.
        r = await c.get("/backoffice/login")
        assert r.status_code == 200 and '<html lang="es">' in r.text


def _needs(dependant: Any, who: set[Any]) -> bool:
    return dependant.call in who or any(_needs(d, who) for d in dependant.dependencies)


def test_who_is_signed_in_is_known_before_the_language_is_chosen(settings: Settings) -> None:
    """`Language` is read where the endpoint declares it: on a route that also has a customer or
    a staff member, they must come first, or the endpoint speaks without their choice."""
    app = create_app(settings)
    who = {current_customer, optional_customer, api_actor, web_actor}
    checked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        calls = [d.call for d in route.dependant.dependencies]
        if get_language not in calls:
            continue
        signed = [i for i, d in enumerate(route.dependant.dependencies) if _needs(d, who)]
        if signed:
            checked += 1
            assert max(signed) < calls.index(get_language), route.path
    assert checked >= 5
