"""The admin API's keys as an operator's script uses them (fourteenth round, found by an
integrator's walkthrough): the list pages (`limit`, `offset`, `X-Total-Count`) as the other admin
lists do; revoking a rotated key answers with what replaced it, as the list shows it; a key
whose scopes lack a permission is told so, not that its "role" does not allow it."""

from __future__ import annotations

import httpx

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff

API = "/api/v1/admin/api-keys"


async def test_the_key_list_pages(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    made = [
        (await db.run(lambda s, n=n: create_api_key(s, f"crm-{n}", ["lines:read"]))).key.prefix
        for n in range(3)
    ]
    r = await client.get(API, headers=admin.auth, params={"limit": 2})
    assert r.status_code == 200, r.text
    assert r.headers["X-Total-Count"] == "3"
    first = [k["prefix"] for k in r.json()]
    assert first == made[::-1][:2]  # the newest first
    r = await client.get(API, headers=admin.auth, params={"limit": 2, "offset": 2})
    assert [k["prefix"] for k in r.json()] == made[:1]
    assert r.headers["X-Total-Count"] == "3"
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "abc"}):
        r = await client.get(API, headers=admin.auth, params=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["field"] == next(iter(bad)), r.json()


async def test_revoking_a_rotated_key_says_what_replaced_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    old = (await db.run(lambda s: create_api_key(s, "billing", ["lines:read"]))).key.prefix
    r = await client.post(f"{API}/{old}/rotate", headers=admin.auth, json={"overlap": "1h"})
    assert r.status_code == 200, r.text
    new = r.json()["key"]["prefix"]
    r = await client.post(f"{API}/{old}/revoke", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert (r.json()["prefix"], r.json()["replaced_by"]) == (old, new)
    listed = {k["prefix"]: k for k in (await client.get(API, headers=admin.auth)).json()}
    assert listed[old]["replaced_by"] == new and listed[old]["state"] == r.json()["state"]


async def test_a_key_without_the_scope_is_told_its_scopes_do_not_allow_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    key = await db.run(lambda s: create_api_key(s, "crm", ["lines:read"]))
    r = await client.get(API, headers={"Authorization": f"Bearer {key.token}"})
    assert r.status_code == 403
    assert "API key's scopes do not allow this" in r.json()["detail"]
    assert "role" not in r.json()["detail"]
    # A staff member without the permission is still told about their role.
    agent = await new_staff(db, settings, "agent")
    r = await client.get(API, headers=agent.auth)
    assert r.status_code == 403 and "Your role does not allow this" in r.json()["detail"]
