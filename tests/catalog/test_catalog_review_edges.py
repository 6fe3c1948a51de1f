"""The catalog's edges found by the seventh review round. Each docstring says what was wrong and
what is right now."""

from __future__ import annotations

import pytest

from simcharge.catalog.service import CatalogInvalid, parse_catalog
from simcharge.kit.i18n import LANGUAGES


def names(text: str = "X") -> str:
    return "{ " + ", ".join(f'{lang} = "{text}"' for lang in LANGUAGES) + " }"


def catalog(provider: str, currencies: str, prices: str) -> str:
    return f"""
[[payment_methods]]
code = "m"
provider = "{provider}"
currencies = {currencies}
names = {names("M")}

[[plans]]
code = "p10"
prices = {prices}
validity_days = 30
names = {names("Ten")}
"""


@pytest.mark.parametrize("provider", ["alipay", "wechatpay"])
def test_alipay_and_wechat_pay_methods_take_yuan_only(provider: str) -> None:
    """Alipay and WeChat Pay (domestic merchants) take CNY only: their adapters refuse any other
    currency at checkout (`unsupported_currency`). The catalog accepted `provider = "alipay"`,
    `currencies = ["USD"]`, so every order paid with that method was created, priced and shown,
    and then failed when its checkout was opened. The catalog now refuses such a method, naming
    the entry and the field; a CNY method of either provider still loads."""
    text = catalog(provider, '["CNY", "USD"]', '{ USD = "10.00", CNY = "68.00" }')
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(text, source="catalog.toml")
    assert info.value.problems == [
        f"payment_methods[0] (m): currencies: {provider} takes CNY only, not USD"
    ]
    loaded = parse_catalog(catalog(provider, '["CNY"]', '{ CNY = "68.00" }'), source="c.toml")
    assert loaded.payment_methods[0].currencies == ["CNY"]


def test_a_currency_named_twice_by_a_method_is_refused() -> None:
    """`currencies = ["USD", "USD"]` was stored as given (the API listed USD twice); the
    catalog now refuses it as it refuses a code used twice."""
    text = catalog("stripe", '["USD", "USD"]', '{ USD = "10.00" }')
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(text, source="catalog.toml")
    assert info.value.problems == ["payment_methods[0] (m): currencies: USD is named twice"]


def test_one_cross_reference_problem_is_reported_like_several() -> None:
    """Problems found across entries (a plan naming a zone or method that does not exist, a
    code used twice) come from one check of the whole file. Two or more were reported as
    `plans[0] (p10): …` each, but a single one as `catalog: plans[0] (p10): …` — in the CLI
    `catalog.toml: catalog: plans[0] (p10): …`, not the documented `<file>: <entry>: <field>`.
    One is now reported as several are."""
    one = catalog("stripe", '["USD"]', '{ USD = "10.00" }').replace(
        "validity_days = 30", 'validity_days = 30\nmethods = ["cash"]'
    )
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(one, source="catalog.toml")
    assert info.value.problems == ["plans[0] (p10): methods: no payment method 'cash'"]
    assert str(info.value) == "catalog.toml: plans[0] (p10): methods: no payment method 'cash'"
