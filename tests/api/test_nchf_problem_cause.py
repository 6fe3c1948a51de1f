"""Every ProblemDetails under Nchf carries `cause` (TS 29.500 5.2.7.2), the API key's too.

A 401 or 403 (no API key, one not valid, one without the scope `charging`: checked before the
body is read) came from the generic handler, without `cause`, while a client of the CHF reads it
on every problem. They are `ACCESS_TOKEN_DENIED` now (TS 29.500 table 5.2.7.2-1 lists it under
403 and no cause for 401: the 401 carries it too, with its `WWW-Authenticate` challenge); a path
no route has is `RESOURCE_URI_STRUCTURE_NOT_FOUND`, a method none takes `UNSPECIFIED_MSG_FAILURE`.
`/openapi.json` marks `cause` required. Nothing is written on any of them.
"""

from __future__ import annotations

import httpx
import pytest

from simcharge.db import Database
from tests.charging.helpers import BASE, Nchf, body, make_line, nf_key, open_reservations, rg

REF = "0192e4a0-0000-7000-8000-000000000000"


async def _refusals(db: Database) -> list[tuple[dict[str, str], int]]:
    return [
        ({}, 401),
        ({"Authorization": "Bearer sck_x_y"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        (await nf_key(db, ("lines:read", "usage:write")), 403),
    ]


async def test_401_and_403_carry_access_token_denied(
    client: httpx.AsyncClient, db: Database
) -> None:
    line = await make_line(db)
    doc = body(line.supi, 0, [rg(200, requested={"totalVolume": 1024})])
    for headers, status in await _refusals(db):
        api = Nchf(client, headers)  # each answer validated against the official YAML too
        for r in (await api.create(doc), await api.update(REF, body(line.supi, 1, [])),
                  await api.release(REF, body(line.supi, 1, []))):
            assert r.status_code == status, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["cause"] == "ACCESS_TOKEN_DENIED", problem
            assert problem["status"] == status and problem["type"].endswith(
                "/not-authenticated" if status == 401 else "/forbidden"
            )
            assert "invalidParams" not in problem and problem["request_id"]
            if status == 401:
                assert r.headers["www-authenticate"] == 'Bearer realm="simcharge"'
            else:
                assert "charging" in problem["detail"]
    assert await open_reservations(db) == 0


async def test_the_refusal_speaks_the_callers_language(
    client: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post(f"{BASE}/chargingdata", json={}, headers={"Accept-Language": "es"})
    assert r.status_code == 401 and r.json()["cause"] == "ACCESS_TOKEN_DENIED"
    english = (await client.post(f"{BASE}/chargingdata", json={})).json()["detail"]
    assert r.json()["detail"] != english


async def test_a_path_or_a_method_no_route_has(client: httpx.AsyncClient, db: Database) -> None:
    headers = await nf_key(db)
    for path in (f"{BASE}/chargingdata/a/b/update", f"{BASE}/nothing", f"{BASE}/chargingdata/x"):
        r = await client.post(path, json={}, headers=headers)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["cause"] == "RESOURCE_URI_STRUCTURE_NOT_FOUND"
    # A browser's Accept changes nothing under Nchf: still the ProblemDetails.
    r = await client.get(f"{BASE}/nothing", headers={"Accept": "text/html"})
    assert (r.status_code, r.json()["cause"]) == (404, "RESOURCE_URI_STRUCTURE_NOT_FOUND")
    r = await client.get(f"{BASE}/chargingdata", headers=headers)
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert r.json()["cause"] == "UNSPECIFIED_MSG_FAILURE"


async def test_the_route_s_own_causes_are_unchanged(
    client: httpx.AsyncClient, db: Database
) -> None:
    api = Nchf(client, await nf_key(db))
    r = await api.update(REF, body("imsi-1", 1, []))
    assert (r.status_code, r.json()["cause"]) == (404, "CONTEXT_NOT_FOUND")
    r = await api.create(b"[1, 2", validate_request=False)
    assert (r.status_code, r.json()["cause"]) == (400, "INVALID_MSG_FORMAT")


@pytest.mark.parametrize("path", ["/tmf-api/nothing", "/api/v1/nothing"])
async def test_elsewhere_the_generic_problem_is_kept(client: httpx.AsyncClient, path: str) -> None:
    """Not Nchf: no `cause`; a path under /tmf-api/ none of TMF654's routes has keeps the
    generic problem (its `Error` would turn a POST's 404 into a 400)."""
    r = await client.post(path, json={})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert "cause" not in r.json() and r.json()["type"].endswith("/not-found")


async def test_the_api_key_refusals_elsewhere_have_no_cause(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/usage", json={"records": []})
    assert r.status_code == 401 and "cause" not in r.json()
    r = await client.get("/tmf-api/prepayBalanceManagement/v4/bucket")
    assert r.status_code == 401 and "cause" not in r.json() and r.json()["code"]


async def test_the_openapi_document_requires_cause(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        if not path.startswith(BASE):
            continue
        for operation in item.values():
            for status in ("401", "403", "404", "4XX"):
                schema = operation["responses"][status]["content"]["application/problem+json"][
                    "schema"
                ]
                assert "cause" in schema["required"], (path, status)
            assert "ACCESS_TOKEN_DENIED" in operation["responses"]["401"]["description"]
