"""A NUL character in input (PostgreSQL cannot store one in text) is invalid input, never a
server error — in the query string and in a JSON body alike (found by schemathesis)."""

from __future__ import annotations

import httpx

from simcharge.auth.apikeys import create_api_key
from simcharge.db import Database
from tests.auth.helpers import problem


async def test_a_nul_in_the_query_string_is_refused_with_its_field(
    client: httpx.AsyncClient, db: Database
) -> None:
    issued = await db.run(lambda s: create_api_key(s, "staff", ["orders:read"]))
    staff = {"Authorization": f"Bearer {issued.token}"}
    r = await client.get("/api/v1/admin/orders?attention=true&msisdn=%00&limit=120", headers=staff)
    assert r.status_code == 422, r.text
    body = problem(r)
    assert body["type"].endswith("/validation-error")
    assert body["field"] == "msisdn"
    assert "request_id" in body


async def test_a_nul_in_a_json_body_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/login", json={"login": "some\u0000one@example.com", "password": "x" * 12}
    )
    assert r.status_code == 422, r.text
    assert problem(r)["field"] == "login"


async def test_a_nul_in_the_path_is_refused_before_any_route_reads_it(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Found by the thirteenth round's review: on PostgreSQL a `%00` in an admin route's path
    parameter (a tariff's code, an API key's prefix) reached the database and answered 500."""
    issued = await db.run(
        lambda s: create_api_key(s, "staff", ["catalog:write", "orders:read"])
    )
    staff = {"Authorization": f"Bearer {issued.token}"}
    for method, path in (
        ("GET", "/api/v1/admin/catalog/tariffs/%00/versions"),
        ("POST", "/api/v1/admin/api-keys/a%00b/rotate"),
        ("POST", "/api/v1/admin/api-keys/%00/revoke"),
        ("GET", "/api/v1/orders/%00"),
    ):
        r = await client.request(method, path, headers=staff, json={})
        assert r.status_code == 422, (path, r.text)
        body = problem(r)
        assert body["type"].endswith("/validation-error") and body["field"] == "path"
