"""Currencies with 0 or 3 decimals (JPY, KRW, BHD, KWD…) from the catalog file to the portal's
amount input.

What was wrong:
- The portal's transfer form read "1000.5" yen (or "1.2505" dinars) as a number it did not
  understand and said "Enter the amount as a number, such as 5 or 5.50" — an example yen cannot
  follow. Now it says the currency has no decimals (or at most three), on the amount field.
- The form's hint showed "such as 5.00" for every currency when the page had no locale of its
  own, and an amount not understood was told "such as 5 or 5.50" in any currency; now the
  examples have the currency's decimals (5 or 500 yen, 5.000 or 5.500 dinars).
- The catalog took a PayPal method in a currency PayPal does not take at all (BHD, KWD): the
  error came from PayPal at checkout. Now the catalog refuses it when loaded, naming the field.

The rest pins what already held and must keep holding: minor units are ISO 4217's (1.250 BHD is
1250 fils, 1000 yen are 1000), display uses the currency's decimals, and the catalog refuses a
price or a fee with more decimals than the currency has, naming the entry and the field.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.service import parse_catalog
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.kit.money import (
    LossyConversionError,
    amounts_by_currency,
    format_money,
    from_minor,
    to_minor,
)
from simcharge.lines.service import credit_wallet
from simcharge.portal.transfers import AmountNotUnderstood, _gift, _number, problem_texts
from tests.catalog.test_catalog import MINIMAL, names, problems
from tests.orders.helpers import new_payer
from tests.tmf654.helpers import totals

# --- minor units and display ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("1000", "JPY", 1000), ("1.250", "BHD", 1250), ("0.005", "KWD", 5), ("12.50", "HUF", 1250),
     ("50000", "KRW", 50000), ("1.0", "JPY", 1)],
)
def test_amounts_are_iso_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor(Decimal(amount), currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency"), [("1000.5", "JPY"), ("1.2505", "BHD"), ("0.0001", "KWD")]
)
def test_a_finer_amount_than_the_currency_is_refused(amount: str, currency: str) -> None:
    with pytest.raises(LossyConversionError):
        to_minor(Decimal(amount), currency)


@pytest.mark.parametrize(
    ("minor", "currency", "amount", "shown"),
    [(1000, "JPY", "1000", "¥1,000"), (1250, "BHD", "1.250", "BHD1.250"),
     (5, "KWD", "0.005", "KWD0.005")],
)
def test_display_uses_the_currency_s_decimals(
    minor: int, currency: str, amount: str, shown: str
) -> None:
    assert str(from_minor(minor, currency)) == amount
    assert format_money(minor, currency, "en") == shown


def test_amounts_by_currency_reads_each_currency_in_its_minor_units() -> None:
    assert amounts_by_currency("") == {}
    assert amounts_by_currency("JPY:150, BHD:400,USD:100") == {"JPY": 150, "BHD": 400, "USD": 100}


@pytest.mark.parametrize(
    ("raw", "said"),
    [("JPY", "'JPY' is not CURRENCY:amount"), ("JPY:-1", "'JPY:-1' is not CURRENCY:amount"),
     ("JPY:1.5", "'JPY:1.5' is not"), ("ABC:1", "'ABC' is not an ISO 4217 currency"),
     ("jpy:1", "'jpy' is not an ISO 4217"), ("JPY:1,JPY:2", "JPY is named twice"),
     ("JPY:1,", "'' is not CURRENCY:amount")],
)
def test_amounts_by_currency_refuses_what_it_cannot_read(raw: str, said: str) -> None:
    with pytest.raises(ValueError, match=said.replace(".", r"\.")):
        amounts_by_currency(raw)


# --- the portal's amount input (transfers) --------------------------------------------------


def _values(amount: str) -> dict[str, str]:
    return {"to": "+15005550006", "what": "monetary", "amount": amount}


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("1000", "JPY", 1000), ("1,000", "JPY", 1000), ("1.250", "BHD", 1250), ("5", "BHD", 5000),
     ("5.50", "USD", 550)],
)
def test_the_form_reads_amounts_in_the_currency_s_minor_units(
    amount: str, currency: str, minor: int
) -> None:
    assert _gift(_values(amount), currency, "en").amount == minor


def test_decimal_yen_are_refused_as_such_on_the_amount_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        _gift(_values("1000.5"), "JPY", "en")
    assert not isinstance(caught.value, AmountNotUnderstood)
    summary, fields = problem_texts(caught.value, "en", "JPY")
    assert summary == "Amounts in JPY have no decimals: enter a whole number."
    assert fields == {"amount": summary}


def test_a_fourth_decimal_of_a_dinar_is_refused_as_such() -> None:
    with pytest.raises(ValidationFailed) as caught:
        _gift(_values("1.2505"), "BHD", "en", "en_US")
    summary, fields = problem_texts(caught.value, "en", "BHD", "en_US")
    assert summary == "Amounts in BHD have at most 3 decimals."
    assert fields == {"amount": summary}


@pytest.mark.parametrize(
    ("currency", "locale", "said"),
    [("JPY", None, "such as 5 or 500."), ("JPY", "en_US", "such as 5 or 500."),
     ("BHD", None, "such as 5 or 5.500."), ("USD", "en_US", "such as 5 or 5.50.")],
)
def test_what_is_no_number_is_not_understood_with_examples_in_the_currency(
    currency: str, locale: str | None, said: str
) -> None:
    """The examples were "5 or 5.50" whatever the currency: yen have no decimals, dinars three."""
    with pytest.raises(AmountNotUnderstood) as caught:
        _gift(_values("mil"), currency, "en", locale)
    summary, fields = problem_texts(caught.value, "en", currency, locale)
    assert summary.endswith(said), summary
    assert fields == {"amount": summary}


def test_a_dollar_amount_not_understood_keeps_its_title() -> None:
    with pytest.raises(AmountNotUnderstood) as caught:
        _gift(_values("mil"), "USD", "en")
    assert problem_texts(caught.value, "en", "USD")[0] == (
        "Enter the amount as a number, such as 5 or 5.50.")


@pytest.mark.parametrize(
    ("currency", "example"), [("JPY", "5"), ("USD", "5.00"), ("BHD", "5.000")]
)
def test_the_hint_s_example_has_the_currency_s_decimals(currency: str, example: str) -> None:
    assert _number(from_minor(5 * 10 ** {"JPY": 0, "USD": 2, "BHD": 3}[currency], currency),
                   "en", None) == example


# --- the catalog ----------------------------------------------------------------------------

JPY_METHOD = f"""
[[payment_methods]]
code = "jp"
provider = "stripe"
currencies = ["JPY", "BHD"]
names = {names("Card")}
fee_fixed = {{ JPY = "30", BHD = "0.100" }}
"""


def _with_jpy(**change: str) -> str:
    text = MINIMAL.replace('prices = { USD = "10.00" }',
                           'prices = { USD = "10.00", JPY = "1500", BHD = "3.750" }') + JPY_METHOD
    for old, new in change.items():
        assert old.replace("_", " ") in text or old in text
        text = text.replace(old, new)
    return text


def test_yen_and_dinar_prices_and_fees_load_exactly() -> None:
    catalog = parse_catalog(_with_jpy(), source="catalog.toml")
    assert catalog.plans[0].prices == {
        "USD": Decimal("10.00"), "JPY": Decimal("1500"), "BHD": Decimal("3.750")}
    assert catalog.payment_methods[1].fee_fixed == {"JPY": Decimal("30"), "BHD": Decimal("0.100")}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [('JPY = "1500"', 'JPY = "1500.5"',
      "plans[0] (p10): prices.JPY: 1500.5 has more decimals than JPY allows (0)"),
     ('BHD = "3.750"', 'BHD = "3.7505"',
      "plans[0] (p10): prices.BHD: 3.7505 has more decimals than BHD allows (3)"),
     ('JPY = "30"', 'JPY = "30.5"',
      "payment_methods[1] (jp): fee_fixed.JPY: 30.5 has more decimals than JPY allows (0)"),
     ('BHD = "0.100"', 'BHD = "0.1001"',
      "payment_methods[1] (jp): fee_fixed.BHD: 0.1001 has more decimals than BHD allows (3)"),
     # Stripe takes three-decimal currencies in hundredths only (the last digit 0).
     ('BHD = "3.750"', 'BHD = "3.755"', "prices.BHD: stripe takes BHD in steps of 0.010 only")],
)
def test_a_price_or_fee_finer_than_its_currency_is_refused_with_its_field(
    old: str, new: str, expected: str
) -> None:
    found = problems(_with_jpy().replace(old, new, 1))
    assert any(expected in p for p in found), found


def test_paypal_is_refused_in_a_currency_it_does_not_take() -> None:
    text = _with_jpy().replace('provider = "stripe"\ncurrencies = ["JPY", "BHD"]',
                               'provider = "paypal"\ncurrencies = ["JPY", "BHD"]')
    found = problems(text)
    assert any("payment_methods[1] (jp): currencies: paypal does not take BHD" in p
               for p in found), found


def test_paypal_takes_whole_yen_but_not_decimal_forints() -> None:
    whole = _with_jpy().replace('provider = "stripe"\ncurrencies = ["JPY", "BHD"]',
                                'provider = "paypal"\ncurrencies = ["JPY"]')
    whole = whole.replace(', BHD = "0.100"', "").replace(', BHD = "3.750"', "")
    assert parse_catalog(whole, source="catalog.toml").payment_methods[1].currencies == ["JPY"]
    forints = whole.replace('currencies = ["JPY"]', 'currencies = ["JPY", "HUF"]').replace(
        'JPY = "1500"', 'JPY = "1500", HUF = "3999.50"')
    found = problems(forints)
    assert any("prices.HUF: paypal takes HUF in steps of 1.00 only" in p for p in found), found


# --- the portal's transfer page, end to end, for a line in yen ------------------------------


async def test_the_transfer_page_of_a_yen_line_takes_whole_yen_only(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_payer(db, settings, currency="JPY")
    friend = await new_payer(db, settings, currency="JPY")

    async def fill(s: AsyncSession) -> None:
        await credit_wallet(s, me.line, 5000, source=f"test:{me.line.id}")

    await db.run(fill)
    client.cookies.set("sc_session", me.token)
    page = f"/account/lines/{me.line.id}/transfer"
    form = await client.get(page)
    assert form.status_code == 200
    assert "Credit in JPY (such as 5)" in form.text
    refused = await client.get(page + "/review", params={
        "to": friend.line.msisdn, "what": "monetary", "amount": "1000.5"})
    assert refused.status_code == 422
    assert "Amounts in JPY have no decimals: enter a whole number." in refused.text
    shown = await client.get(page + "/review", params={
        "to": friend.line.msisdn, "what": "monetary", "amount": "1000"})
    assert shown.status_code == 200, shown.text
    assert "¥1,000" in shown.text
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)
