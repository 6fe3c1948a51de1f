"""Loading the catalog from TOML: validation that names file, entry and field; reloading."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.repository import CatalogRepository
from simcharge.catalog.service import (
    DEMO_CATALOG,
    CatalogInvalid,
    fee_for,
    list_methods,
    list_plans,
    load_catalog,
    parse_catalog,
    read_catalog_file,
)
from simcharge.kit.i18n import LANGUAGES
from simcharge.ledger import chart
from tests.factories import ledger_account

DEMO = DEMO_CATALOG.read_text(encoding="utf-8")


def names(text: str = "X") -> str:
    return "{ " + ", ".join(f'{lang} = "{text}"' for lang in LANGUAGES) + " }"


MINIMAL = f"""
[[payment_methods]]
code = "card"
provider = "stripe"
currencies = ["USD"]
names = {names("Card")}

[[plans]]
code = "p10"
prices = {{ USD = "10.00" }}
validity_days = 30
names = {names("Ten")}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(text, source="catalog.toml")
    assert all(not p.startswith("catalog.toml") for p in info.value.problems)
    assert str(info.value).startswith("catalog.toml: ")
    return info.value.problems


def test_demo_catalog_matches_the_brief() -> None:
    c = parse_catalog(DEMO, source="demo.toml")
    usd = sorted(p.prices["USD"] for p in c.plans)
    assert [str(a) for a in usd] == ["10.00", "20.00", "50.00", "100.00"]
    assert all("CNY" in p.prices for p in c.plans)
    minutes = [sum(b.minutes or 0 for b in p.buckets) for p in c.plans]
    data = [sum(b.gigabytes or 0 for b in p.buckets) for p in c.plans]
    assert minutes == sorted(minutes) and len(set(minutes)) == 4
    assert data == sorted(data) and len(set(data)) == 4
    methods = {m.code: m for m in c.payment_methods}
    assert methods["card"].currencies == ["USD"] and methods["card"].fee_percent == 0
    assert methods["paypal"].fee_percent > 0
    assert methods["alipay"].currencies == ["CNY"] and methods["wechatpay"].currencies == ["CNY"]


def test_bad_toml_is_reported_with_its_position() -> None:
    [problem] = problems("[[plans]\ncode=")
    assert problem.startswith("not valid TOML")


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        (
            'prices = { USD = "10.00" }',
            'prices = { USD = "10.001" }',
            "plans[0] (p10): prices.USD: 10.001 has more decimals than USD allows (2)",
        ),
        (
            'prices = { USD = "10.00" }',
            'prices = { QQQ = "10.00" }',
            "prices.QQQ: QQQ is not an ISO 4217 currency",
        ),
        ('prices = { USD = "10.00" }', 'prices = { USD = "0" }', "prices.USD: must be above zero"),
        ('provider = "stripe"', 'provider = "visa"', "payment_methods[0] (card): provider"),
        ('currencies = ["USD"]', "currencies = []", "payment_methods[0] (card): currencies"),
        ('code = "p10"', 'code = "P 10"', "plans[0] (P 10): code"),
        (
            "validity_days = 30",
            "validity_days = 30\nbonus = 1",
            "plans[0] (p10): bonus: Extra inputs",
        ),
        (
            "validity_days = 30",
            'validity_days = 30\nmethods = ["cash"]',
            "plans[0] (p10): methods: no payment method 'cash'",
        ),
        (
            "validity_days = 30",
            "validity_days = 30\nbuckets = [{ minutes = 5, sms = 2 }]",
            "plans[0] (p10): buckets[0]: give exactly one of",
        ),
        (
            "validity_days = 30",
            'validity_days = 30\nbuckets = [{ minutes = 5, zones = ["mars"] }]',
            "plans[0] (p10): buckets[0].zones: no zone 'mars'",
        ),
        ("validity_days = 30", "validity_days = 0", "a plan must grant something"),
    ],
)
def test_validation_errors_name_the_entry_and_the_field(
    replace: str, by: str, expected: str
) -> None:
    assert replace in MINIMAL
    found = problems(MINIMAL.replace(replace, by))
    assert any(expected in p for p in found), found


def test_missing_translations_are_named() -> None:
    text = MINIMAL.replace(f"names = {names('Ten')}", 'names = { en = "Ten", es = "Diez" }')
    [problem] = problems(text)
    assert problem.startswith("plans[0] (p10): names")
    assert "missing text for zh-Hans, zh-Hant, fil" in problem


def test_duplicate_codes_and_methods_without_a_price_in_their_currency() -> None:
    text = MINIMAL + MINIMAL.split("[[plans]]")[1].join(["[[plans]]", ""])
    assert any("plans[1] (p10): code: used twice" in p for p in problems(text))
    cny = MINIMAL.replace('currencies = ["USD"]', 'currencies = ["CNY"]').replace(
        "validity_days = 30", 'validity_days = 30\nmethods = ["card"]'
    )
    assert any("card takes CNY, but the plan has no price in it" in p for p in problems(cny))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogInvalid, match="cannot read the file"):
        read_catalog_file(tmp_path / "nope.toml")


async def test_loading_twice_changes_nothing_and_changes_bump_the_version(
    session: AsyncSession,
) -> None:
    first = await load_catalog(session, parse_catalog(DEMO, source="demo"))
    assert "plan starter-10" in first.created
    again = await load_catalog(session, parse_catalog(DEMO, source="demo"))
    assert again.created == again.updated == again.retired == []
    changed = DEMO.replace(
        'prices = { USD = "10.00", CNY = "68.00" }', 'prices = { USD = "11.00", CNY = "68.00" }'
    )
    report = await load_catalog(session, parse_catalog(changed, source="demo"))
    assert report.updated == ["plan starter-10"]
    repo = CatalogRepository(session)
    plan = await repo.plan_by_code("starter-10")
    assert plan is not None and plan.version == 2
    assert (await repo.prices_of(plan.id))["USD"] == 1100


async def test_an_entry_only_moved_in_the_file_keeps_its_version(session: AsyncSession) -> None:
    """A plan added above the others moves them down the file: their order follows, but what
    they sell did not change, so their version — which open quotes hold to — stays."""
    import tomllib

    from simcharge.catalog.service import validate_catalog

    await load_catalog(session, parse_catalog(DEMO, source="demo"))
    data = tomllib.loads(DEMO)
    data["plans"].insert(0, {**data["plans"][0], "code": "promo-5", "prices": {"USD": "5.00"}})
    data["payment_methods"].reverse()
    report = await load_catalog(session, validate_catalog(data, source="moved"))
    assert report.created == ["plan promo-5"] and report.updated == []
    repo = CatalogRepository(session)
    for code in ("starter-10", "traveller-20"):
        plan = await repo.plan_by_code(code)
        assert plan is not None and plan.version == 1
    assert [p.code for p in await list_plans(session, "en")][:2] == ["promo-5", "starter-10"]
    methods = [m.code for m in await list_methods(session, "en")]
    assert methods == [m["code"] for m in data["payment_methods"] if m.get("enabled", True)]


async def test_a_plan_lists_only_the_methods_that_take_one_of_its_currencies(
    session: AsyncSession,
) -> None:
    import tomllib

    from simcharge.catalog.service import validate_catalog

    data = tomllib.loads(DEMO)
    data["plans"].append({**data["plans"][0], "code": "yuan-only", "prices": {"CNY": "68.00"}})
    await load_catalog(session, validate_catalog(data, source="yuan"))
    repo = CatalogRepository(session)
    [plan] = [p for p in await list_plans(session, "en") if p.code == "yuan-only"]
    assert plan.methods
    for code in plan.methods:
        method = await repo.method_by_code(code)
        assert method is not None and "CNY" in method.currencies
    usd_only = [m.code for m in await list_methods(session, "en")
                if "CNY" not in (await repo.method_by_code(m.code)).currencies]  # type: ignore[union-attr]
    assert usd_only and not set(usd_only) & set(plan.methods)


async def test_entries_left_out_are_retired_not_deleted(session: AsyncSession) -> None:
    await load_catalog(session, parse_catalog(DEMO, source="demo"))
    report = await load_catalog(session, parse_catalog(MINIMAL, source="minimal"))
    assert "plan starter-10" in report.retired and "method paypal" in report.retired
    plans = [p.code for p in await list_plans(session, "en")]
    assert plans == ["p10"]
    repo = CatalogRepository(session)
    retired = await repo.plan_by_code("starter-10")
    assert retired is not None and not retired.active


async def test_views_fees_and_operator_accounts(session: AsyncSession) -> None:
    await load_catalog(session, parse_catalog(DEMO, source="demo"))
    plans = await list_plans(session, "zh-Hant")
    assert plans[0].name == "入門方案"
    assert {(m.currency, m.value) for m in plans[0].prices} == {("USD", "10.00"), ("CNY", "68.00")}
    assert {g.unit for g in plans[0].grants} == {"VOICE_S", "DATA_B", "SMS"}
    methods = {m.code: m for m in await list_methods(session, "es")}
    assert methods["paypal"].fee.percent == "3.49"
    assert methods["alipay"].name == "Alipay"
    paypal = await CatalogRepository(session).method_by_code("paypal")
    assert paypal is not None
    # 3.49 % of 10.00 = 0.349 → 0.35, plus 0.49 fixed.
    assert fee_for(paypal, 1000, "USD") == 84
    card = await CatalogRepository(session).method_by_code("card")
    assert card is not None and fee_for(card, 1000, "USD") == 0
    # Clearing and revenue accounts exist for every method's currency.
    account = await ledger_account(session, chart.clearing("alipay", "CNY").id)
    assert account.key == "clearing:alipay:CNY" and account.unit == "CNY"
