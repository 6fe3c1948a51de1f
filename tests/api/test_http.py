"""The HTTP skeleton: health, metrics, docs, problem+json for every kind of error, API keys."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.auth import apikeys
from simcharge.auth.apikeys import create_api_key, revoke_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from tests.factories import create_line, load_demo_catalog

PROBLEM = "application/problem+json"


async def api_key(db: Database, *scopes: str) -> str:
    async def create(s: AsyncSession) -> str:
        return (await create_api_key(s, "test", list(scopes))).token

    return await db.run(create)


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


async def test_readiness_fails_when_the_database_is_unreachable(settings: Settings) -> None:
    broken = Database.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/nothing", null_pool=True)
    app = create_app(settings, db=broken, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/readyz")
    assert r.status_code == 503 and r.json()["database"] == "unreachable"
    await broken.dispose()


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/plans")
    body = (await client.get("/metrics")).text
    assert 'simcharge_http_requests_total{method="GET",route="/api/v1/plans",status="200"}' in body
    assert "simcharge_http_request_duration_seconds_bucket" in body


async def test_openapi_and_offline_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/api/v1/plans", "/api/v1/payment-methods", "/api/v1/lines/{line_id}/balances"} <= set(
        spec["paths"]
    )
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/static/api-docs/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text
    asset = await client.get("/static/api-docs/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "/problems/not-found"
    r = await client.delete("/api/v1/plans")
    assert r.status_code == 405 and r.json()["type"] == "/problems/method-not-allowed"
    assert "GET" in r.headers["allow"]


async def test_problem_types_document_themselves(client: httpx.AsyncClient) -> None:
    r = await client.get("/problems/validation-error")
    assert r.json() == {
        "type": "/problems/validation-error",
        "title": "Some input is not valid.",
        "status": 422,
    }
    assert (await client.get("/problems/transfer-rejected")).json()["status"] == 409
    assert (await client.get("/problems/no-such-thing")).status_code == 404


async def test_request_id_and_security_headers(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    odd = await client.get("/healthz", headers={"X-Request-Id": "<script>"})
    assert odd.headers["x-request-id"] != "<script>"
    # No cache keeps an answer (tokens, codes, balances) unless its route says so.
    assert r.headers["cache-control"] == "no-store"
    assert (await client.get("/api/v1/plans")).headers["cache-control"] == "no-store"
    assert (await client.get("/nope")).headers["cache-control"] == "no-store"


async def test_database_errors_do_not_carry_the_statements_parameters(db: Database) -> None:
    async def failing(s: AsyncSession) -> None:
        await s.execute(text("INSERT INTO no_such_table VALUES (:secret)"),
                        {"secret": "hunter2-secret"})  # fmt: skip

    with pytest.raises(DBAPIError) as raised:
        await db.run(failing)
    assert "no_such_table" in str(raised.value)
    assert "hunter2-secret" not in str(raised.value)


async def test_an_unexpected_error_is_a_500_problem_without_a_trace(
    settings: Settings, db: Database
) -> None:
    app = create_app(settings, db=db, run_worker=False)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/boom")
    assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "/problems/internal-error"
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]


async def test_catalog_is_public_and_speaks_the_callers_language(
    client: httpx.AsyncClient, db: Database
) -> None:
    await db.run(load_demo_catalog)
    plans = (
        await client.get("/api/v1/plans", headers={"Accept-Language": "zh-TW,zh;q=0.8"})
    ).json()
    assert plans[0]["name"] == "入門方案"
    plans = (await client.get("/api/v1/plans?lang=es")).json()
    assert plans[0]["name"] == "Inicial"
    assert plans[0]["prices"][1] == {"currency": "USD", "minor": 1000, "value": "10.00"}
    methods = {m["code"]: m for m in (await client.get("/api/v1/payment-methods")).json()}
    assert methods["paypal"]["fee"] == {
        "percent": "3.49",
        "fixed": [{"currency": "USD", "minor": 49, "value": "0.49"}],
    }
    zones = (await client.get("/api/v1/zones")).json()
    assert any(z["is_default"] for z in zones)


async def test_lines_need_an_api_key_with_the_right_scope(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await client.get("/api/v1/lines", params={"msisdn": "+14155550101"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["type"] == "/problems/not-authenticated"
    bad = await client.get(
        "/api/v1/lines", params={"msisdn": "+1"}, headers={"Authorization": "Bearer sck_nope_nope"}
    )
    assert bad.status_code == 401
    wrong = await api_key(db, "catalog:read")
    logged: list[dict[str, Any]] = []

    class Recorder:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append({"event": event, **fields})

    monkeypatch.setattr(apikeys, "audit", Recorder())
    r = await client.get(
        "/api/v1/lines", params={"msisdn": "+1"}, headers={"Authorization": f"Bearer {wrong}"}
    )
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    tampered = wrong[:-2] + ("AA" if not wrong.endswith("AA") else "BB")
    r = await client.get(
        "/api/v1/lines", params={"msisdn": "+1"}, headers={"Authorization": f"Bearer {tampered}"}
    )
    assert r.status_code == 401
    # Each refusal is logged (ASVS 7.1.3) with the key's public prefix, never its secret part.
    refused = [e for e in logged if e["event"] == "apikey.refused"]
    prefix, secret = wrong.split("_", 2)[1:]
    assert [(e["reason"], e["key_prefix"], e["scope"]) for e in refused] == [
        ("scope", prefix, "lines:read"), ("invalid", prefix, None)]
    assert all(e["ip"] for e in refused)
    assert secret[:-2] not in str(logged)
    await db.run(lambda s: revoke_api_key(s, wrong.split("_", 2)[1]))
    r = await client.get(
        "/api/v1/lines", params={"msisdn": "+1"}, headers={"Authorization": f"Bearer {wrong}"}
    )
    assert r.status_code == 401


async def test_balances_of_a_line(client: httpx.AsyncClient, db: Database) -> None:
    token = await api_key(db, "lines:read")
    auth = {"Authorization": f"Bearer {token}"}

    async def setup(s: AsyncSession) -> tuple[str, str]:
        line = await create_line(s, msisdn="+14155558001")
        await credit_wallet(s, line, 725, source="t")
        await grant_units(s, line, [UnitGrant("DATA_B", 2048, 30)], source="t")
        return str(line.id), line.msisdn

    line_id, msisdn = await db.run(setup)
    found = (
        await client.get("/api/v1/lines", params={"msisdn": "+1 415-555-8001"}, headers=auth)
    ).json()
    assert found["id"] == line_id
    assert "activation_code" not in found
    r = await client.get(f"/api/v1/lines/{line_id}/balances", headers=auth)
    body = r.json()
    assert body["msisdn"] == msisdn and body["wallet"] == {
        "currency": "USD",
        "available": 725,
        "reserved": 0,
    }
    assert body["units"][0]["unit"] == "DATA_B" and body["units"][0]["remaining"] == 2048
    assert body["units"][0]["buckets"][0]["expires_at"] is not None


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/api/v1/lines/not-a-uuid", {}, 422, "line_id"),
        ("/api/v1/lines/01a211fe-ec1d-7bfb-802f-c7528316330a", {}, 404, "line_id"),
        ("/api/v1/lines", {}, 422, "msisdn"),
        ("/api/v1/lines", {"msisdn": "12"}, 422, "msisdn"),
        ("/api/v1/lines", {"msisdn": "+14155559999"}, 404, "msisdn"),
    ],
)
async def test_bad_line_requests_name_the_field(
    client: httpx.AsyncClient,
    db: Database,
    path: str,
    params: dict[str, str],
    status: int,
    field: str,
) -> None:
    token = await api_key(db, "lines:read")
    r = await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["field"] == field


async def test_without_a_choice_answers_speak_the_operators_default_language(
    settings: Settings, db: Database
) -> None:
    await db.run(load_demo_catalog)
    app = create_app(
        settings.model_copy(update={"default_language": "es"}), db=db, run_worker=False
    )
    said = {
        "": "Inicial",
        "de-DE,de;q=0.9": "Inicial",
        "zh-TW,zh;q=0.8": "入門方案",
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for accept_language, name in said.items():
            headers = {"Accept-Language": accept_language} if accept_language else {}
            plans = (await c.get("/api/v1/plans", headers=headers)).json()
            assert plans[0]["name"] == name, accept_language
        # an explicit choice still wins
        plans = (await c.get("/api/v1/plans?lang=en", headers={"Accept-Language": "es"})).json()
        assert plans[0]["name"] == "Starter"
        # and so do problems answered before any endpoint chose a language
        spanish = (await c.get("/api/v1/nowhere")).json()["title"]
        english = (await c.get("/api/v1/nowhere", headers={"Accept-Language": "en"})).json()
        assert spanish != english["title"] and english["status"] == 404
