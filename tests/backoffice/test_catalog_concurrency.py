"""Two admins editing the catalog at once: edits are serialised (each reads the catalog only
once the other committed, so neither undoes the other's change), and an edit made from an older
read of the same entry is refused by its `version` (409 `catalog-entry-changed`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice import catalog as bo_catalog
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.catalog import export_catalog, find_entry, save_entry
from simcharge.backoffice.models import AuditEntry
from simcharge.catalog.models import PaymentMethod, Plan, PlanPrice
from simcharge.catalog.schemas import CatalogFile
from simcharge.catalog.service import LoadReport
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.factories import load_demo_catalog


async def _price(db: Database, code: str, currency: str) -> tuple[int, int]:
    async with db.read() as s:
        plan = (await s.execute(select(Plan).where(Plan.code == code))).scalar_one()
        price = (await s.execute(select(PlanPrice.amount).where(
            PlanPrice.plan_id == plan.id, PlanPrice.currency == currency))).scalar_one()  # fmt: skip
    return price, plan.version


async def _edits(db: Database) -> list[tuple[str, str | None]]:
    async with db.read() as s:
        rows = (await s.execute(select(AuditEntry).where(AuditEntry.action == "catalog.edit")
                                .order_by(AuditEntry.at))).scalars()  # fmt: skip
        return [(e.actor, e.target_id) for e in rows]


async def _waiting_for_the_catalog(db: Database) -> bool:
    """Someone waits for an advisory lock in this database (the catalog's)."""
    async with db.read() as s:
        found = await s.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"))  # fmt: skip
        return bool(found.scalar_one())


@pytest.mark.postgres_only
async def test_two_admins_saving_two_entries_at_once_keep_both_changes(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob saves one plan; his save has read the catalog when Alice saves another. Alice's save
    waits for Bob's to commit and then reads the catalog with his change; without the wait, Bob's
    load of the catalog he read would put Alice's plan back as it was."""
    db = fresh_db
    await db.run(load_demo_catalog)
    alice = Actor(name="staff:alice", permissions=frozenset())
    bob = Actor(name="staff:bob", permissions=frozenset())
    async with db.read() as s:
        catalog = await export_catalog(s)
    starter = find_entry(catalog, "plans", "starter-10")
    assert starter is not None
    other = next(p for p in catalog["plans"] if p["code"] != "starter-10")
    usd, _ = await _price(db, "starter-10", "USD")
    alices = {**starter, "prices": {**starter["prices"], "USD": "12.00"}}
    bobs = {**other, "active": not other["active"]}

    read = asyncio.Event()
    alice_done = asyncio.Event()
    real_load = bo_catalog.load_catalog
    paused: list[bool] = []

    async def load_after_a_pause(s: AsyncSession, file: CatalogFile) -> LoadReport:
        if not paused:  # Bob's save: it has read the catalog; Alice saves now
            paused.append(True)
            read.set()
            for _ in range(1000):  # until Alice is done, or waits for Bob's save
                if alice_done.is_set() or await _waiting_for_the_catalog(db):
                    break
                await asyncio.sleep(0.01)
        return await real_load(s, file)

    monkeypatch.setattr(bo_catalog, "load_catalog", load_after_a_pause)

    async def bob_saves() -> None:
        await db.run(lambda s: save_entry(s, bob, "plans", other["code"], json.dumps(bobs)))

    async def alice_saves() -> None:
        await read.wait()
        await db.run(lambda s: save_entry(s, alice, "plans", "starter-10", json.dumps(alices)))
        alice_done.set()

    await asyncio.wait_for(asyncio.gather(bob_saves(), alice_saves()), timeout=60)
    assert usd != 1200
    price, _ = await _price(db, "starter-10", "USD")
    assert price == 1200, "Alice's price was undone by Bob's save of another plan"
    async with db.read() as s:
        changed = (await s.execute(select(Plan).where(Plan.code == other["code"]))).scalar_one()
    assert changed.active is bobs["active"]
    assert await _edits(db) == [("staff:bob", other["code"]), ("staff:alice", "starter-10")]


async def _entry(client: httpx.AsyncClient, admin: Any, kind: str, code: str) -> dict[str, Any]:
    catalog = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()
    return next(e for e in catalog[kind] if e["code"] == code)


async def test_an_edit_from_an_older_read_is_refused_by_its_version(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    other_admin = await new_staff(db, settings, "admin")
    url = "/api/v1/admin/catalog/plans/starter-10"
    mine = await _entry(client, admin, "plans", "starter-10")
    theirs = await _entry(client, other_admin, "plans", "starter-10")
    version = mine["version"]
    assert isinstance(version, int) and theirs == mine
    # the other admin saves first: a new version
    r = await client.put(url, headers=other_admin.auth,
                         json={**theirs, "prices": {**theirs["prices"], "USD": "12.00"}})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == version + 1 and r.json()["prices"]["USD"] == "12.00"
    # mine, made from the older read, would undo it: refused, nothing stored
    r = await client.put(url, headers=admin.auth,
                         json={**mine, "prices": {**mine["prices"], "USD": "11.00"}})
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["type"] == "/problems/catalog-entry-changed"
    assert problem["problems"] == [
        f"version: read at {version}, it is at {version + 1} now; read it again"
    ]
    assert await _price(db, "starter-10", "USD") == (1200, version + 1)
    assert [actor for actor, _ in await _edits(db)] == [f"staff:{other_admin.username}"]
    # read again, it is saved
    fresh = await _entry(client, admin, "plans", "starter-10")
    r = await client.put(url, headers=admin.auth,
                         json={**fresh, "prices": {**fresh["prices"], "USD": "11.00"}})
    assert r.status_code == 200 and r.json()["version"] == version + 2
    # without a version, the edit is not compared (it is still serialised)
    no_version = {k: v for k, v in fresh.items() if k != "version"}
    r = await client.put(url, headers=admin.auth, json=no_version)
    assert r.status_code == 200, r.text
    assert r.json()["prices"]["USD"] == "12.00" and r.json()["version"] == version + 3
    # a version is a number; a new code ignores one copied along from another entry
    r = await client.put(url, headers=admin.auth, json={**fresh, "version": "3"})
    assert r.status_code == 422 and r.json()["type"] == "/problems/catalog-invalid"
    copy = {**fresh, "code": "weekender-5", "prices": {"USD": "5.00"}, "methods": []}
    r = await client.put("/api/v1/admin/catalog/plans/weekender-5", headers=admin.auth, json=copy)
    assert r.status_code == 200 and r.json()["version"] == 1
    # a payment method and a tariff carry theirs too
    sandbox = await _entry(client, admin, "payment_methods", "sandbox")
    async with db.read() as s:
        method = (await s.execute(select(PaymentMethod).where(
            PaymentMethod.code == "sandbox"))).scalar_one()  # fmt: skip
    assert sandbox["version"] == method.version
    r = await client.put("/api/v1/admin/catalog/payment_methods/sandbox", headers=admin.auth,
                         json={**sandbox, "version": method.version + 1, "enabled": False})
    assert r.status_code == 409 and r.json()["type"] == "/problems/catalog-entry-changed"
    catalog = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()
    tariff = catalog["tariffs"][0]
    code = f"{tariff['service']}.{tariff['zone']}.{tariff['currency']}"
    r = await client.put(f"/api/v1/admin/catalog/tariffs/{code}", headers=admin.auth,
                         json={**tariff, "version": tariff["version"] + 1})
    assert r.status_code == 409, r.text


async def test_the_page_keeps_the_version_it_showed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    entry = await _entry(client, admin, "plans", "starter-10")
    page = await client.get("/backoffice/catalog/plans/starter-10")
    assert f"&#34;version&#34;: {entry['version']}" in page.text
    r = await client.put("/api/v1/admin/catalog/plans/starter-10", headers=admin.auth,
                         json={**entry, "validity_days": 31})
    assert r.status_code == 200, r.text
    # the page's text, read before that save, is refused with the problem shown, kept
    stale = json.dumps({**entry, "validity_days": 45})
    r = await client.post(
        "/backoffice/catalog/plans/starter-10", data={"csrf": csrf, "text": stale}
    )
    # a conflict with the catalog as it is now: 409, as the API says (422 until the entry's
    # form came back through `forms.in_place`)
    assert r.status_code == 409 and "Nothing was saved" in r.text
    assert "read it again" in r.text and "45" in r.text
    assert (await _entry(client, admin, "plans", "starter-10"))["validity_days"] == 31
