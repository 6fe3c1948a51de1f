"""Round 15's security review: `GET /api/v1/admin/api-keys?offset=9223372036854775808` was a
500 (a number beyond the database's integer). `offset` is bounded (0 to 1,000,000) as `limit`
is (1 to 500): beyond, `422 validation-error` naming it, nothing read. On SQLite and
PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.endpoints import MAX_OFFSET
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff

API = "/api/v1/admin/api-keys"


@pytest.mark.parametrize(
    "bad",
    [{"offset": "9223372036854775808"}, {"offset": "9223372036854775807"},
     {"offset": str(MAX_OFFSET + 1)}, {"offset": "1" + "0" * 400}, {"offset": "-1"},
     {"limit": "9223372036854775808"}, {"limit": "501"}],
)
async def test_a_page_beyond_the_bounds_is_refused_naming_its_field(
    client: httpx.AsyncClient, db: Database, settings: Settings, bad: dict[str, str]
) -> None:
    admin = await new_staff(db, settings, "admin")
    r = await client.get(API, headers=admin.auth, params=bad)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/validation-error")
    assert body["field"] == next(iter(bad)), body


async def test_the_largest_offset_is_an_empty_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    await db.run(lambda s: create_api_key(s, "crm", ["lines:read"]))
    r = await client.get(API, headers=admin.auth, params={"offset": MAX_OFFSET, "limit": 500})
    assert r.status_code == 200, r.text
    assert r.json() == [] and r.headers["X-Total-Count"] == "1"
    r = await client.get(API, headers=admin.auth, params={"offset": 0})
    assert [k["name"] for k in r.json()] == ["crm"]
