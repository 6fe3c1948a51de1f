"""Editing the catalog (plans, methods, tariffs): validated like a file, versioned, audited; orders
keep the plan as sold, usage records the tariff version they were charged at."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import func, select

from simcharge.backoffice.catalog import as_file, export_catalog
from simcharge.backoffice.models import AuditEntry
from simcharge.catalog.models import Plan, PlanPrice
from simcharge.catalog.service import load_catalog, validate_catalog
from simcharge.charging.models import Tariff, TariffVersion
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


async def _tariff_versions(db: Database, code: str) -> list[tuple[int, int, bool]]:
    service, zone, currency = code.split(".")
    async with db.read() as s:
        rows = (
            await s.execute(
                select(TariffVersion)
                .where(
                    TariffVersion.service == service,
                    TariffVersion.zone == zone,
                    TariffVersion.currency == currency,
                )
                .order_by(TariffVersion.version)
            )
        ).scalars()
        return [(v.version, v.price, v.valid_until is None) for v in rows]


async def test_an_admin_edits_a_tariff_and_each_change_is_a_version(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    catalog = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()
    entry = next(
        t for t in catalog["tariffs"]
        if (t["service"], t["zone"], t["currency"]) == ("voice", "europe", "USD")
    )
    url = "/api/v1/admin/catalog/tariffs/voice.europe.USD"
    [(first, price, current)] = await _tariff_versions(db, "voice.europe.USD")
    assert first == 1 and current
    # unchanged: no new version, nothing audited
    r = await client.put(url, headers=admin.auth, json=entry)
    assert r.status_code == 200, r.text
    assert await _tariff_versions(db, "voice.europe.USD") == [(1, price, True)]
    # a new price and a minimum: version 2; version 1 is closed, kept
    changed = {**entry, "price": "0.30", "minimum": "0.05"}
    del changed["service"]  # the code says which tariff it is
    r = await client.put(url, headers=admin.auth, json=changed)
    assert r.status_code == 200, r.text
    assert r.json()["price"] == "0.30" and r.json()["minimum"] == "0.05"
    assert await _tariff_versions(db, "voice.europe.USD") == [(1, price, False), (2, 30, True)]
    async with db.read() as s:
        tariff = (
            await s.execute(
                select(Tariff).where(
                    Tariff.service == "voice", Tariff.zone == "europe", Tariff.currency == "USD"
                )
            )
        ).scalar_one()
        assert (tariff.version, tariff.price, tariff.minimum) == (2, 30, 5)
        [audit] = (
            await s.execute(select(AuditEntry).where(AuditEntry.action == "catalog.edit"))
        ).scalars().all()
    assert (audit.target_type, audit.target_id) == ("tariff", "voice.europe.USD")
    assert audit.before and audit.before["price"] == entry["price"]
    assert audit.after and audit.after["price"] == "0.30"
    assert audit.details["version"] == 2 and audit.actor == f"staff:{admin.username}"
    r = await client.get(f"{url}/versions", headers=admin.auth)
    assert [(v["version"], v["price"], v["valid_until"] is None) for v in r.json()] == [
        (2, 30, True), (1, price, False)
    ]
    assert (
        await client.get("/api/v1/admin/catalog/tariffs/voice.mars.USD/versions", headers=admin.auth)
    ).status_code == 404
    # a new tariff (a new wallet currency): version 1
    new = {"price": "0.04", "per": "message"}
    r = await client.put(
        "/api/v1/admin/catalog/tariffs/sms.home.EUR", headers=admin.auth, json=new
    )
    assert r.status_code == 200, r.text
    assert await _tariff_versions(db, "sms.home.EUR") == [(1, 4, True)]
    # validated like the catalog file: every problem, nothing stored
    bad: list[tuple[str, dict[str, Any]]] = [
        (url, {**entry, "price": "0.001"}),
        (url, {**entry, "per": "hour"}),
        (url, {**entry, "rounding": "0/1"}),
        (url, {**entry, "service": "data"}),
        (url, {**entry, "code": "voice.europe.USD"}),
        ("/api/v1/admin/catalog/tariffs/voice.mars.USD", {"price": "0.10", "per": "minute"}),
        ("/api/v1/admin/catalog/tariffs/voice.europe.XYZ", {"price": "0.10", "per": "minute"}),
    ]
    for path, body in bad:
        r = await client.put(path, headers=admin.auth, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["type"] == "/problems/catalog-invalid" and r.json()["problems"], body
    assert [v[0] for v in await _tariff_versions(db, "voice.europe.USD")] == [1, 2]
    assert await _tariff_versions(db, "voice.mars.USD") == []
    # a tariff left out of a catalog load is removed, its version closed; loaded again later,
    # it continues its numbering
    full = as_file(await db.run(export_catalog))  # the file's form: without versions
    without = {**full, "tariffs": [t for t in full["tariffs"] if t["currency"] != "EUR"]}
    await db.run(lambda s: load_catalog(s, validate_catalog(without, source="test")))
    assert await _tariff_versions(db, "sms.home.EUR") == [(1, 4, False)]
    await db.run(lambda s: load_catalog(s, validate_catalog(full, source="test")))
    assert await _tariff_versions(db, "sms.home.EUR") == [(1, 4, False), (2, 4, True)]


async def test_tariffs_on_the_catalog_pages(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    page = await client.get("/backoffice/catalog")
    assert 'href="/backoffice/catalog/tariffs/data.asia.CNY"' in page.text
    page = await client.get("/backoffice/catalog/tariffs/sms.home.USD")
    assert page.status_code == 200 and "&#34;per&#34;: &#34;message&#34;" in page.text
    assert "In force from" in page.text
    r = await client.post(
        "/backoffice/catalog/tariffs/sms.home.USD",
        data={"csrf": csrf, "text": json.dumps({"price": "0.06", "per": "message"})},
    )
    assert r.status_code == 303, r.text
    assert [v[:2] for v in await _tariff_versions(db, "sms.home.USD")] == [(1, 5), (2, 6)]
    page = await client.get("/backoffice/catalog/tariffs/sms.home.USD")
    assert page.text.count("<td>2</td>") == 1 and "$0.06" in page.text
    r = await client.post(
        "/backoffice/catalog/tariffs/sms.home.USD",
        data={"csrf": csrf, "text": json.dumps({"price": "-1", "per": "message"})},
    )
    assert r.status_code == 422 and "Nothing was saved" in r.text and "price" in r.text
    # a new one: from its code to its form, prefilled
    r = await client.get(
        "/backoffice/catalog/new", params={"kind": "tariffs", "code": "data.europe.CNY"}
    )
    assert r.status_code == 303
    page = await client.get(r.headers["location"])
    assert "data.europe.CNY" in page.text and "&#34;zone&#34;: &#34;europe&#34;" in page.text
    r = await client.get("/backoffice/catalog/new", params={"kind": "tariffs", "code": " "})
    assert r.status_code == 422
    r = await client.get("/backoffice/catalog/new", params={"kind": "zones", "code": "x"})
    # a kind that is none of the form's choices: the form again, that field marked
    assert r.status_code == 422 and 'id="new-kind-error"' in r.text
