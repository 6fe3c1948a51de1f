"""Editing the catalog: validated like a file, versioned, audited; orders keep what was sold."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import func, select

from simcharge.backoffice.models import AuditEntry
from simcharge.catalog.models import Plan, PlanPrice
from simcharge.charging.models import Tariff
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer, order_row, place


async def _plan(db: Database, code: str) -> tuple[int, dict[str, int]]:
    async with db.read() as s:
        plan = (await s.execute(select(Plan).where(Plan.code == code))).scalar_one()
        prices = {
            p.currency: p.amount
            for p in (
                await s.execute(select(PlanPrice).where(PlanPrice.plan_id == plan.id))
            ).scalars()
        }
    return plan.version, prices


async def test_an_admin_edits_a_plan_and_orders_keep_what_was_sold(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="starter-10")
    version, prices = await _plan(db, "starter-10")
    admin = await new_staff(db, settings, "admin")
    r = await client.get("/api/v1/admin/catalog", headers=admin.auth)
    assert r.status_code == 200
    entry = next(p for p in r.json()["plans"] if p["code"] == "starter-10")
    # saving it unchanged changes nothing
    r = await client.put("/api/v1/admin/catalog/plans/starter-10", headers=admin.auth, json=entry)
    assert r.status_code == 200, r.text
    assert (await _plan(db, "starter-10"))[0] == version
    # a new price through the page: a new version
    csrf = await web_sign_in(client, admin)
    page = await client.get("/backoffice/catalog/plans/starter-10")
    assert page.status_code == 200 and "10.00" in page.text
    changed = {**entry, "prices": {**entry["prices"], "USD": "12.00"}}
    r = await client.post(
        "/backoffice/catalog/plans/starter-10", data={"csrf": csrf, "text": json.dumps(changed)}
    )
    assert r.status_code == 303, r.text
    new_version, new_prices = await _plan(db, "starter-10")
    assert new_version == version + 1 and new_prices["USD"] == 1200
    # the rest of the catalog (the tariffs too) is as it was
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(Tariff))).scalar_one() == 30
    # the order placed before keeps the plan as sold
    row = await order_row(db, order["id"])
    assert row.plan_version == version and row.price == prices["USD"]
    async with db.read() as s:
        entry_audit = (
            await s.execute(select(AuditEntry).where(AuditEntry.action == "catalog.edit"))
        ).scalar_one()
    assert entry_audit.before and entry_audit.before["prices"]["USD"] == "10.00"
    assert entry_audit.after and entry_audit.after["prices"]["USD"] == "12.00"
    page = await client.get("/backoffice/catalog")
    assert "starter-10" in page.text


async def test_invalid_entries_are_refused_with_every_problem_and_change_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    entry = next(
        p
        for p in (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()["plans"]
        if p["code"] == "starter-10"
    )
    version, _ = await _plan(db, "starter-10")
    bad: list[dict[str, Any]] = [
        {**entry, "prices": {"USD": "10.001"}},
        {**entry, "names": {"en": "Only English"}},
        {**entry, "methods": ["no-such-method"]},
        {**entry, "code": "renamed"},
    ]
    for body in bad:
        r = await client.put(
            "/api/v1/admin/catalog/plans/starter-10", headers=admin.auth, json=body
        )
        assert r.status_code == 422, r.text
        assert r.json()["type"] == "/problems/catalog-invalid" and r.json()["problems"]
    assert (await _plan(db, "starter-10"))[0] == version
    csrf = await web_sign_in(client, admin)
    r = await client.post(
        "/backoffice/catalog/plans/starter-10", data={"csrf": csrf, "text": "{not json"}
    )
    assert r.status_code == 422 and "Nothing was saved" in r.text
    # a new plan
    new = {**entry, "code": "weekender-5", "prices": {"USD": "5.00"}, "methods": []}
    r = await client.put("/api/v1/admin/catalog/plans/weekender-5", headers=admin.auth, json=new)
    assert r.status_code == 200 and r.json()["code"] == "weekender-5"
    assert (await _plan(db, "weekender-5"))[0] == 1


async def test_only_admins_edit_the_catalog(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    for role in ("agent", "finance"):
        staff = await new_staff(db, settings, role)
        r = await client.get("/api/v1/admin/catalog", headers=staff.auth)
        assert r.status_code == 403
        r = await client.put("/api/v1/admin/catalog/plans/starter-10", headers=staff.auth, json={})
        assert r.status_code == 403
        client.cookies.clear()
        await web_sign_in(client, staff)
        assert (await client.get("/backoffice/catalog")).status_code == 403
        page = await client.get("/backoffice")
        assert "/backoffice/catalog" not in page.text
