"""Tariffs in the catalog file, and the arithmetic of rating."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.service import DEMO_CATALOG, CatalogInvalid, load_catalog, parse_catalog
from simcharge.charging.consumption import affordable_units, max_raw
from simcharge.charging.models import Tariff
from simcharge.charging.rating import Rate, load_rating_table
from simcharge.ledger import chart
from simcharge.ledger.models import LedgerAccount
from tests.charging.helpers import DEMO_WITHOUT_TARIFFS

DEMO = DEMO_CATALOG.read_text(encoding="utf-8")
BASE = DEMO_WITHOUT_TARIFFS


def with_tariffs(text: str) -> str:
    return BASE + "\n" + text


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(text, source="c.toml")
    return caught.value.problems


def tariff(**fields: str) -> str:
    values = {
        "service": "voice",
        "zone": "home",
        "currency": "USD",
        "price": "0.10",
        "per": "minute",
    }
    values.update(fields)
    body = "\n".join(f'{k} = "{v}"' for k, v in values.items() if v != "-")
    return f"[[tariffs]]\n{body}\n"


def test_the_demo_catalog_has_tariffs_everywhere() -> None:
    catalog = parse_catalog(DEMO, source="demo.toml")
    keys = {(t.service, t.zone, t.currency) for t in catalog.tariffs}
    assert len(keys) == 5 * 3 * 2
    row = next(t for t in catalog.tariffs if t.zone == "europe" and t.service == "voice").as_row()
    assert (row["price"], row["per_units"], row["first_increment"], row["next_increment"]) == (
        20,
        60,
        60,
        60,
    )
    data = next(t for t in catalog.tariffs if t.service == "data").as_row()
    assert (data["per_units"], data["first_increment"], data["next_increment"]) == (
        1024 * 1024,
        1024,
        1024,
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"zone": "mars"}, "tariffs[0] (voice mars USD): zone: no zone 'mars'"),
        ({"per": "MB"}, "tariffs[0]: per: 'MB' is not one of second, minute"),
        ({"rounding": "60x"}, "tariffs[0]: rounding: '60x' is not an increment"),
        ({"rounding": "1/2/3"}, "tariffs[0]: rounding: '1/2/3' is not first/next"),
        ({"price": "0.001"}, "tariffs[0]: price: "),
        ({"price": "-1"}, "tariffs[0]: price: Input should be greater than or equal to 0"),
        ({"currency": "XXY"}, "tariffs[0]: currency: XXY is not an ISO 4217 currency"),
        ({"service": "fax"}, "tariffs[0]: service: "),
        ({"service": "sms", "per": "message", "rounding": "1/1"}, "rounding: messages are counted"),
        ({"service": "data", "per": "MB", "rounding": "60"}, "rounding: '60' is not an increment"),
        ({"minimum": "0.005"}, "tariffs[0]: minimum: "),
    ],
)
def test_a_bad_tariff_names_its_field(fields: dict[str, str], expected: str) -> None:
    found = problems(with_tariffs(tariff(**fields)))
    assert any(p.startswith(expected) or expected in p for p in found), found


def test_the_same_tariff_twice() -> None:
    found = problems(with_tariffs(tariff() + tariff(price="0.20")))
    assert [p.removeprefix("catalog: ") for p in found] == [
        "tariffs[1] (voice home USD): the same as tariffs[0]"
    ]


def test_rounding_and_cost() -> None:
    per_minute = Rate("voice", "home", "USD", 20, 60, 60, 60, 0)
    assert [per_minute.rated(q) for q in (0, 1, 60, 61, 120, 121)] == [0, 60, 60, 120, 120, 180]
    assert per_minute.cost(120) == 40
    per_second = Rate("voice", "home", "USD", 5, 60, 1, 1, 3)
    assert per_second.rated(61) == 61
    assert per_second.cost(61) == 6  # ceil(61 * 5 / 60)
    assert per_second.cost(1) == 3  # the minimum
    assert per_second.cost(0) == 0
    assert max_raw(per_minute, 119) == 60 and max_raw(per_minute, 59) == 0
    assert affordable_units(per_minute, 100) == 300
    assert affordable_units(per_second, 2) == 0  # below the minimum
    assert affordable_units(per_second, 10, 60, 5) == 120  # 15 cents in all buy 180 s
    free = Rate("sms", "home", "USD", 0, 1, 1, 1, 0)
    assert affordable_units(free, 0) > 10**12


def test_a_rate_kept_by_a_charging_session_reads_back_the_same() -> None:
    rate = Rate("data", "roam-eu", "EUR", 150, 1048576, 1024, 512, 1)
    kept = json.loads(json.dumps(rate.stored()))  # as the session's JSON column holds it
    assert Rate.from_stored("data", "EUR", kept) == rate
    # the layout sessions already in the database hold: the zone, then the numbers in order
    assert kept == ["roam-eu", 150, 1048576, 1024, 512, 1]
    assert Rate.from_stored("voice", "USD", ["home", 20, 60, 60, 1, 0]) == Rate(
        "voice", "home", "USD", 20, 60, 60, 1, 0
    )


async def test_loading_is_idempotent_and_creates_every_shard(session: AsyncSession) -> None:
    report = await load_catalog(session, parse_catalog(DEMO, source="demo.toml"))
    assert sum(1 for c in report.created if c.startswith("tariff ")) == 30
    again = await load_catalog(session, parse_catalog(DEMO, source="demo.toml"))
    assert not [c for c in again.created + again.updated if c.startswith("tariff")]
    changed = DEMO.replace(
        'price = "0.20"\nper = "minute"\nrounding = "60/60"',
        'price = "0.25"\nper = "minute"\nrounding = "60/60"',
        1,
    )
    changed = changed.split('[[tariffs]]\nservice = "sms"\nzone = "world"\ncurrency = "CNY"')[0]
    third = await load_catalog(session, parse_catalog(changed, source="c.toml"))
    assert [u for u in third.updated if u.startswith("tariff")] == ["tariff voice/europe/USD"]
    assert third.retired == ["tariff sms/world/CNY"]
    table = await load_rating_table(session)
    rate = table.rate("voice", "europe", "USD")
    assert rate is not None and rate.price == 25
    assert table.zone_of("FR") == "europe" and table.zone_of("AQ") == "world"
    assert table.zone_of(None) == "world"
    ids = {chart.consumption("DATA_B", i).id for i in range(chart.SHARDS)}
    ids |= {chart.usage_revenue("CNY", i).id for i in range(chart.SHARDS)}
    found = (
        await session.execute(select(LedgerAccount.id).where(LedgerAccount.id.in_(ids)))
    ).scalars()
    assert set(found) == ids
    assert len((await session.execute(select(Tariff))).scalars().all()) == 29
