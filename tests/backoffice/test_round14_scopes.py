"""API-key scopes `catalog:read` and `ledger:read` (fourteenth round): offered when a key was
made, they opened no route. Now `catalog:read` reads the catalog (and a tariff's versions),
`ledger:read` the trial balance — and nothing else; `catalog:write` still reads what it edits
and `reports:read` still reads the trial balance."""

from __future__ import annotations

import httpx

from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff


async def _key(db: Database, *scopes: str) -> dict[str, str]:
    issued = await db.run(lambda s: create_api_key(s, "tool", list(scopes)))
    return {"Authorization": f"Bearer {issued.token}"}


async def test_catalog_read_reads_the_catalog_and_edits_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    key = await _key(db, "catalog:read")
    r = await client.get("/api/v1/admin/catalog", headers=key)
    assert r.status_code == 200, r.text
    plan = next(p for p in r.json()["plans"] if p["code"] == "starter-10")
    [tariff, *_] = r.json()["tariffs"]
    code = f"{tariff['service']}.{tariff['zone']}.{tariff['currency']}"
    r = await client.get(f"/api/v1/admin/catalog/tariffs/{code}/versions", headers=key)
    assert r.status_code == 200 and r.json(), r.text
    r = await client.put("/api/v1/admin/catalog/plans/starter-10", headers=key,
                         json={**plan, "active": False})
    assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    after = await client.get("/api/v1/admin/catalog", headers=key)
    assert next(p for p in after.json()["plans"] if p["code"] == "starter-10") == plan
    for path in ("/api/v1/admin/reports/trial-balance", "/api/v1/admin/reports/topups",
                 "/api/v1/admin/customers?q=x"):
        assert (await client.get(path, headers=key)).status_code == 403, path
    # catalog:write reads what it edits, as before.
    writer = await _key(db, "catalog:write")
    assert (await client.get("/api/v1/admin/catalog", headers=writer)).status_code == 200


async def test_ledger_read_reads_the_trial_balance_only(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    key = await _key(db, "ledger:read")
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=key,
                         params={"to": "2026-11-30"})
    assert r.status_code == 200 and isinstance(r.json(), list), r.text
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=key,
                         params={"to": "2026-11-30", "format": "csv"})
    assert r.status_code == 200 and r.text.startswith("unit,code,account,debits_minor")
    r = await client.get("/api/v1/admin/reports/trial-balance", headers=key,
                         params={"to": "not-a-day"})
    assert r.status_code == 422 and r.json()["field"] == "to"
    for path in ("/api/v1/admin/reports/topups", "/api/v1/admin/reports/lines",
                 "/api/v1/admin/catalog"):
        assert (await client.get(path, headers=key)).status_code == 403, path
    # reports:read keys, finance and admins still read it; agents do not.
    assert (await client.get("/api/v1/admin/reports/trial-balance",
                             headers=await _key(db, "reports:read"))).status_code == 200
    for role, status in (("finance", 200), ("admin", 200), ("agent", 403)):
        staff = await new_staff(db, settings, role)
        r = await client.get("/api/v1/admin/reports/trial-balance", headers=staff.auth)
        assert r.status_code == status, role


async def test_the_scope_descriptions_say_what_they_open(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    from simcharge.auth.apikeys import SCOPES
    from simcharge.backoffice.roles import SCOPE_PERMISSIONS

    # Every scope offered to staff opens something (the back office's or another API's).
    back_office = set(SCOPE_PERMISSIONS)
    elsewhere = {"lines:read", "charging", "usage:write", "balance:read", "balance:write",
                 "balance:adjust"}
    assert set(SCOPES) == back_office | elsewhere
    assert "trial balance" in SCOPES["ledger:read"]
