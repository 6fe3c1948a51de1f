"""Catalog edits the catalog must refuse — negative fees and limits, amounts too large to be
money (or to be computed with), buckets no ledger amount holds — through the API, the page and
`simcharge catalog load` alike: `422 catalog-invalid` naming the entry and field, nothing
stored, never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry
from simcharge.catalog.models import PaymentMethod, Plan
from simcharge.charging.models import Tariff
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.test_cli import invoke

DEMO = Path(__file__).parents[2] / "src/simcharge/catalog/demo.toml"
TOO_LARGE = ("100000000000000000000", "10000000000.01", "1e999999999")


async def _versions(db: Database) -> list[tuple[str, int]]:
    async with db.read() as s:
        found = [(p.code, p.version) for p in (await s.execute(select(Plan))).scalars()]
        found += [(m.code, m.version) for m in (await s.execute(select(PaymentMethod))).scalars()]
        found += [
            (f"{t.service}.{t.zone}.{t.currency}", t.version)
            for t in (await s.execute(select(Tariff))).scalars()
        ]
        assert not (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "catalog.edit"))).first()  # fmt: skip
    return sorted(found)


async def _refused(
    client: httpx.AsyncClient, admin: Any, path: str, body: dict[str, Any], expected: str
) -> None:
    r = await client.put(f"/api/v1/admin/catalog/{path}", headers=admin.auth, json=body)
    assert r.status_code == 422, (body, r.text)
    problem = r.json()
    assert problem["type"] == "/problems/catalog-invalid"
    assert any(expected in p for p in problem["problems"]), (expected, problem["problems"])


async def test_negative_fees_and_limits_are_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    before = await _versions(db)
    cat = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()
    sandbox = next(m for m in cat["payment_methods"] if m["code"] == "sandbox")
    path = "payment_methods/sandbox"
    where = "payment_methods[4] (sandbox)"
    await _refused(client, admin, path, {**sandbox, "fee_fixed": {"USD": "-9.00"}},
                   f"{where}: fee_fixed.USD: must be at least zero")
    await _refused(client, admin, path, {**sandbox, "fee_fixed": {"USD": "-15.00"}},
                   "fee_fixed.USD: must be at least zero")
    await _refused(client, admin, path,
                   {**sandbox, "limits": {"USD": {"min": "-5.00", "max": "-1.00"}}},
                   f"{where}: limits.USD.min: Input should be greater than 0")
    await _refused(client, admin, path, {**sandbox, "limits": {"USD": {"max": "0.00"}}},
                   "limits.USD.max: Input should be greater than 0")
    await _refused(client, admin, path,
                   {**sandbox, "limits": {"USD": {"min": "9.00", "max": "5.00"}}},
                   "limits.USD: min is above max")
    assert await _versions(db) == before


async def test_amounts_too_large_and_huge_buckets_are_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    before = await _versions(db)
    cat = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()
    starter = next(p for p in cat["plans"] if p["code"] == "starter-10")
    sandbox = next(m for m in cat["payment_methods"] if m["code"] == "sandbox")
    tariff = next(t for t in cat["tariffs"] if t["service"] == "voice")
    code = f"{tariff['service']}.{tariff['zone']}.{tariff['currency']}"
    most = "at most 10000000000.00 USD" if tariff["currency"] == "USD" else "at most"
    for amount in TOO_LARGE:
        await _refused(client, admin, "plans/starter-10",
                       {**starter, "prices": {**starter["prices"], "USD": amount}},
                       "plans[0] (starter-10): prices.USD: at most 10000000000.00 USD")
        await _refused(client, admin, "plans/starter-10",
                       {**starter, "wallet_credit": {"USD": amount}},
                       "wallet_credit.USD: at most 10000000000.00 USD")
        await _refused(client, admin, "payment_methods/sandbox",
                       {**sandbox, "fee_fixed": {"USD": amount}}, "fee_fixed.USD: at most")
        await _refused(client, admin, "payment_methods/sandbox",
                       {**sandbox, "limits": {"USD": {"max": amount}}}, "limits.USD.max: at most")
        await _refused(client, admin, f"tariffs/{code}", {**tariff, "price": amount},
                       f"price: {most}")
        await _refused(client, admin, f"tariffs/{code}", {**tariff, "minimum": amount},
                       f"minimum: {most}")
    await _refused(client, admin, "plans/starter-10",
                   {**starter, "prices": {**starter["prices"], "USD": "1e-999999999"}},
                   "prices.USD: 1E-999999999 has more decimals than USD allows")
    for bucket in ({"gigabytes": 10**12}, {"megabytes": 10**9}, {"minutes": 10**7},
                   {"sms": 10**7}):
        [(unit, _)] = bucket.items()
        await _refused(client, admin, "plans/starter-10", {**starter, "buckets": [bucket]},
                       f"plans[0] (starter-10): buckets[0].{unit}: Input should be less than")
    assert await _versions(db) == before


async def test_the_page_refuses_them_too(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    before = await _versions(db)
    csrf = await web_sign_in(client, admin)
    cat = (await client.get("/api/v1/admin/catalog", headers=admin.auth)).json()
    starter = next(p for p in cat["plans"] if p["code"] == "starter-10")
    for text, expected in (
        (json.dumps({**starter, "prices": {"USD": "1e999999999"}}), "prices.USD: at most"),
        (json.dumps({**starter, "buckets": [{"gigabytes": 10**12}]}), "buckets[0].gigabytes"),
        # an integer of thousands of digits is no JSON simcharge reads
        ('{"validity_days": ' + "9" * 5000 + "}", "not valid JSON"),
    ):
        r = await client.post(
            "/backoffice/catalog/plans/starter-10", data={"csrf": csrf, "text": text}
        )
        assert r.status_code == 422, r.text[:300]
        assert "Nothing was saved" in r.text and expected in r.text
    assert await _versions(db) == before


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ('USD = "10.00"', 'USD = "1e999999999"', "plans[0] (starter-10): prices.USD: at most"),
        ("{ gigabytes = 1,", "{ gigabytes = 1000000000000,", "buckets[1].gigabytes"),
        ('fee_fixed = { USD = "0.49" }', 'fee_fixed = { USD = "-0.49" }',
         "payment_methods[1] (paypal): fee_fixed.USD: must be at least zero"),
        ("validity_days = 30", "validity_days = " + "9" * 5000, "not valid TOML"),
    ],
)
def test_catalog_load_refuses_them(
    cli_env: str, tmp_path: Path, replace: str, by: str, expected: str
) -> None:
    demo = DEMO.read_text(encoding="utf-8")
    assert replace in demo
    bad = tmp_path / "bad.toml"
    bad.write_text(demo.replace(replace, by, 1), encoding="utf-8")
    code, out = invoke("catalog", "load", str(bad))
    assert code == 2, out
    assert f"{bad}: " in out and expected in out
