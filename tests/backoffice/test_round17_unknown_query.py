"""Every back-office admin list refuses a query parameter it does not take (seventeenth round):
only `/admin/audit` did, and a misspelt filter elsewhere (`?state=open` for `?status=open`)
answered the whole unfiltered list as if it were the filtered one. Refused: `422
validation-error` naming the parameter and listing those the route takes; nothing is read or
audited. What each takes, and `lang`, which every route reads, are accepted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff
from tests.tmf654.helpers import new_holder

# (path, parameters it takes, a parameter it does not take, one it takes listed in the error)
LISTS: list[tuple[str, dict[str, Any], str, str]] = [
    ("/api/v1/admin/tickets", {"status": "open", "order": "waiting"}, "state", "status"),
    ("/api/v1/admin/customers", {"q": "someone"}, "query", "q"),
    ("/api/v1/admin/lines/{line}/usage", {"service": "data"}, "kind", "service"),
    ("/api/v1/admin/customers/{account}/adjustments", {"limit": "5"}, "line_id", "before_id"),
    ("/api/v1/admin/adjustments", {}, "state", ""),
    ("/api/v1/admin/attention", {"flag": "stuck_pending"}, "flags", "flag"),
    ("/api/v1/admin/staff", {}, "role", ""),
    ("/api/v1/admin/staff/{staff}/passkeys", {}, "all", ""),
    ("/api/v1/admin/api-keys", {"limit": "5", "offset": "0"}, "page", "offset"),
    ("/api/v1/admin/reports/topups", {"from": "2026-11-01"}, "since", "from"),
    ("/api/v1/admin/reports/trial-balance", {"to": "2026-11-30"}, "as_of", "to"),
    ("/api/v1/admin/catalog/tariffs/{tariff}/versions", {}, "zone", ""),
]


async def _audited(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


@pytest.mark.parametrize(("path", "takes", "unknown", "listed"), LISTS)
async def test_each_admin_list_refuses_a_parameter_it_does_not_take(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    path: str,
    takes: dict[str, Any],
    unknown: str,
    listed: str,
) -> None:
    admin = await new_staff(db, settings, "admin")
    holder = await new_holder(db)
    catalog = await client.get("/api/v1/admin/catalog", headers=admin.auth)
    [tariff, *_] = catalog.json()["tariffs"]
    url = path.format(
        line=holder.line.id,
        account=holder.account_id,
        staff=admin.id,
        tariff=f"{tariff['service']}.{tariff['zone']}.{tariff['currency']}",
    )
    before = await _audited(db)

    r = await client.get(url, headers=admin.auth, params={**takes, unknown: "x"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["type"] == "/problems/validation-error" and body["field"] == unknown
    [error] = body["errors"]
    assert error["field"] == unknown
    assert error["detail"].startswith("Unknown parameter: use one of ")
    if listed:
        assert listed in error["detail"]
    assert await _audited(db) == before  # nothing read, so nothing audited

    # Alone, too (no filter beside it): the whole list was the answer.
    r = await client.get(url, headers=admin.auth, params={unknown: "x"})
    assert r.status_code == 422 and r.json()["field"] == unknown

    # What it takes, with the language every route reads, is answered.
    r = await client.get(url, headers=admin.auth, params={**takes, "lang": "es"})
    assert r.status_code == 200, r.text


async def test_who_may_not_read_the_list_is_refused_as_such_first(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")  # no staff.manage, no reports.read
    for url in ("/api/v1/admin/staff", "/api/v1/admin/reports/topups"):
        r = await client.get(url, headers=agent.auth, params={"nonsense": "1"})
        assert r.status_code == 403, r.text
        assert r.json()["type"] == "/problems/forbidden"
    r = await client.get("/api/v1/admin/tickets", params={"nonsense": "1"})
    assert r.status_code == 401
