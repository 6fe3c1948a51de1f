"""Transfer terms per wallet currency: the same value whatever the currency's decimals.

What is wrong: `SIMCHARGE_BALANCE_TRANSFER_MIN_AMOUNT`, `…_MAX_AMOUNT` and `…_FEE_FIXED` are minor
units whatever the wallet's currency, so the defaults (100 to 5000: 1.00 to 50.00 US dollars) are
100 to 5000 yen (about 0.65 to 32 dollars) and 0.100 to 5.000 Bahraini dinars (about 0.27 to 13
dollars). SMS had no maximum per transfer, data and voice no minimum.

The fix: `SIMCHARGE_BALANCE_TRANSFER_MIN_AMOUNTS`, `…_MAX_AMOUNTS` and `…_FEE_FIXED_AMOUNTS`
(`CUR:minor units,…`, as `SIMCHARGE_ADJUSTMENT_APPROVAL_CURRENCIES`; a currency not listed uses
the settings above), read by `kit.money.amounts_by_currency`; `…_MIN_DATA_MB`,
`…_MIN_VOICE_MINUTES`, `…_MAX_SMS`.
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.config import Settings, settings_problems
from simcharge.db import Database
from simcharge.kit.money import amounts_by_currency, from_minor
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from tests.orders.helpers import Payer, assert_ledger_balanced, idem, new_payer
from tests.tmf654.helpers import MB, totals

PROPOSED_MINIMUMS = "CNY:700,HKD:800,TWD:3000,PHP:5000,JPY:150,KRW:1500,BHD:400,KWD:300"
PROPOSED_MAXIMUMS = (
    "CNY:35000,HKD:40000,TWD:150000,PHP:280000,JPY:7500,KRW:70000,BHD:19000,KWD:15000"
)


def test_the_proposed_defaults_are_read_in_each_currency_s_minor_units() -> None:
    low, high = amounts_by_currency(PROPOSED_MINIMUMS), amounts_by_currency(PROPOSED_MAXIMUMS)
    assert set(low) == set(high)
    assert all(low[c] < high[c] for c in low)
    # The same value (about 1 and 50 US dollars) in every currency: yen and won have no
    # decimals, dinars three.
    assert str(from_minor(low["JPY"], "JPY")) == "150"
    assert str(from_minor(low["BHD"], "BHD")) == "0.400"
    assert str(from_minor(high["KWD"], "KWD")) == "15.000"
    assert str(from_minor(high["KRW"], "KRW")) == "70000"


def test_an_empty_setting_lists_no_currency() -> None:
    assert amounts_by_currency("") == {} == amounts_by_currency("  ")


@pytest.mark.parametrize(
    ("raw", "said"),
    [("JPY=150", "not CURRENCY:amount"), ("JPY:1e3", "not CURRENCY:amount"),
     ("JPY:", "not CURRENCY:amount"), ("YEN:150", "not an ISO 4217 currency"),
     ("BHD:400,BHD:500", "BHD is named twice"), ("JPY:1234567890123456789", "not CURRENCY")],
)
def test_a_setting_that_cannot_be_read_is_refused_naming_the_part(raw: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        amounts_by_currency(raw)


def _transfer_settings(**change: object) -> Settings:
    return Settings(_env_file=None, **change)  # type: ignore[call-arg, arg-type]


def test_each_wallet_currency_has_its_own_limits_and_fee() -> None:
    config = _transfer_settings(
        balance_transfer_fee_fixed=10, balance_transfer_fee_fixed_amounts="JPY:10,BHD:100")
    assert config.transfer_money_terms("USD") == (100, 5000, 10)
    assert config.transfer_money_terms("EUR") == (100, 5000, 10)
    assert config.transfer_money_terms("JPY") == (150, 7500, 10)
    assert config.transfer_money_terms("BHD") == (400, 19000, 100)
    assert config.transfer_money_terms("KWD") == (300, 15000, 10)


@pytest.mark.parametrize(
    ("change", "said"),
    [({"balance_transfer_min_amounts": "JPY:9000"}, "JPY exceeds its maximum"),
     ({"balance_transfer_max_amounts": "YEN:100"}, "'YEN' is not an ISO 4217 currency"),
     ({"balance_transfer_fee_fixed_amounts": "JPY:1,JPY:2"}, "JPY is named twice"),
     ({"balance_transfer_min_amounts": "JPY=150"}, "BALANCE_TRANSFER_MIN_AMOUNTS"),
     ({"balance_transfer_min_voice_minutes": 501}, "MIN_VOICE_MINUTES exceeds the maximum")],
)
def test_a_per_currency_setting_that_makes_no_sense_is_refused(
    change: dict[str, object], said: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _transfer_settings(**change)
    assert any(said in p for p in settings_problems(caught.value)), settings_problems(caught.value)


async def _funded(db: Database, settings: Settings, currency: str, minor: int) -> Payer:
    payer = await new_payer(db, settings, currency=currency)

    async def fill(s: AsyncSession) -> None:
        await credit_wallet(s, payer.line, minor, source=f"test:{payer.line.id}")
        await grant_units(s, payer.line, [UnitGrant("SMS", 1000, 10),
                                          UnitGrant("DATA_B", 300 * MB, 10)],
                          source=f"test:{payer.line.id}")

    await db.run(fill)
    return payer


@pytest.mark.parametrize(
    ("currency", "low", "high", "too_little", "shown"),
    [("JPY", 150, 7500, 100, "between 150 and 7500 JPY"),
     ("BHD", 400, 19000, 300, "between 0.400 and 19.000 BHD"),
     ("USD", 100, 5000, 99, "between 1.00 and 50.00 USD")],
)
async def test_a_money_transfer_s_limits_are_the_same_value_in_every_currency(
    client: httpx.AsyncClient, db: Database, settings: Settings, currency: str, low: int,
    high: int, too_little: int, shown: str,
) -> None:
    """100 minor units were the least anyone could give in any currency: 1.00 dollar, but 100
    yen (0.65 dollar) and 0.100 dinar (0.27 dollar) — and at most 5000 yen or 5.000 dinars."""
    me = await _funded(db, settings, currency, 100 * high)
    friend = await new_payer(db, settings, currency=currency)
    url = f"/api/v1/me/lines/{me.line.id}/transfers"
    terms = (await client.get(f"{url}/terms", headers=me.auth)).json()
    assert (terms["min_amount"]["minor"], terms["max_amount"]["minor"]) == (low, high)
    for amount in (too_little, high + 1):
        r = await client.post(url, json={"to": friend.line.msisdn, "usage_type": "monetary",
                                         "amount": amount}, headers={**me.auth, **idem()})
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "/problems/transfer-limit-exceeded"
        assert shown in r.json()["detail"] and r.json()["field"] == "amount"
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)
    r = await client.post(url, json={"to": friend.line.msisdn, "usage_type": "monetary",
                                     "amount": low}, headers={**me.auth, **idem()})
    assert r.status_code == 201, r.text
    assert await totals(db, friend.line.wallet_account_id) == (low, 0)
    await assert_ledger_balanced(db)


async def test_sms_have_a_maximum_and_data_a_minimum_per_transfer(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    config = settings.model_copy(update={"balance_transfer_max_sms": 50,
                                         "balance_transfer_min_data_mb": 100})
    me = await _funded(db, config, "USD", 10_000)
    friend = await new_payer(db, config)
    app = create_app(config, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as ours:
        url = f"/api/v1/me/lines/{me.line.id}/transfers"
        for what, amount, said in (("sms", 51, "At most 50 messages"),
                                   ("data", 99, "At least 100 MB")):
            r = await ours.post(url, json={"to": friend.line.msisdn, "usage_type": what,
                                           "amount": amount}, headers={**me.auth, **idem()})
            assert r.status_code == 409, r.text
            assert r.json()["type"] == "/problems/transfer-limit-exceeded"
            assert said in r.json()["detail"] and r.json()["field"] == "amount"
        r = await ours.post(url, json={"to": friend.line.msisdn, "usage_type": "sms",
                                       "amount": 50}, headers={**me.auth, **idem()})
        assert r.status_code == 201, r.text
    await assert_ledger_balanced(db)
