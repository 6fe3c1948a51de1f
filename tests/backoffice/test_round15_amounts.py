"""The back office reads a typed amount strictly, as the portal does (round 15).

What was wrong: `parse_amount` gave what was typed to Babel and `Decimal`, which read `1_0` as
ten, `1E+1` as ten, `+5` as five, `.5` as a half, and Arabic-Indic or full-width digits as
digits: an adjustment or a refund could be made of a number staff never typed as the page
writes numbers. Now only ASCII digits, the page's own grouping (by thousands) and decimal
separators, and — for an adjustment, which may take back — a leading `-` are an amount
(`kit.numbers.written_number`, shared with the portal); anything else is refused with the
form's message, beside the field, and nothing is written."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.backoffice.models import Adjustment
from simcharge.backoffice.screens_customers import parse_amount
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.kit.translations import translate
from simcharge.orders.models import Refund
from tests.backoffice.helpers import adjust_key_of, new_staff, web_sign_in
from tests.backoffice.test_customers_and_money import _paid
from tests.orders.helpers import new_payer
from tests.tmf654.helpers import new_holder, totals

BAD = [
    "1_0",  # an underscore: Python's `Decimal` reads ten
    "1E+1",  # an exponent
    "1e1",
    "+5",  # a plus sign
    ".5",  # no digit before the decimal separator
    "5.",  # none after it
    "٥",  # Arabic-Indic five
    "١٠",  # Arabic-Indic ten
    "５",  # full-width five
    "۵",  # Persian five
    "--5",
    "- 5",
    "5-",
    "1,0,0",  # a separator in the wrong place
    "1 000",  # a space is not English grouping
    "NaN",
    "Infinity",
    "0x10",
    "",
    " ",
]
MESSAGE = "This is not a valid amount."


@pytest.mark.parametrize("raw", BAD)
def test_parse_amount_refuses_each_bad_spelling(raw: str) -> None:
    for language in ("en", "es", "zh-Hans"):
        with pytest.raises(ValidationFailed) as refused:
            parse_amount(raw, "USD", language)
        assert refused.value.field == "amount"


@pytest.mark.parametrize(
    ("raw", "language", "unit", "minor"),
    [
        ("5", "en", "USD", 500),
        ("1,000.50", "en", "USD", 100050),
        ("1000.50", "en", "USD", 100050),
        ("-2.25", "en", "USD", -225),
        (" 3 ", "en", "USD", 300),  # spaces around it are not part of it
        ("1.000,50", "es", "USD", 100050),
        ("1000,50", "es", "USD", 100050),
        ("-0,50", "es", "USD", -50),
        ("1,2", "es", "USD", 120),
        ("2", "en", "VOICE_S", 120),  # minutes
        ("-3", "en", "DATA_B", -3 * 1_048_576),  # MB
        ("1,000", "en", "JPY", 1000),
    ],
)
def test_parse_amount_reads_the_pages_own_number_format(
    raw: str, language: str, unit: str, minor: int
) -> None:
    assert parse_amount(raw, unit, language) == minor


def test_the_other_languages_separators_are_not_this_pages() -> None:
    for raw, language in (("1.000,50", "en"), ("1,000.50", "es"), ("-1,000.5", "es"),
                          ("1,00", "en"), ("1.00", "es")):  # not a group of thousands
        with pytest.raises(ValidationFailed):
            parse_amount(raw, "USD", language)


async def _count(db: Database, model: type[Adjustment] | type[Refund]) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.mark.parametrize("language", ["en", "es"])
async def test_each_bad_spelling_is_refused_on_the_adjustment_form(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    holder = await new_holder(db)
    agent = await new_staff(db, settings, "agent", language=language)
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{holder.account_id}")
    key = adjust_key_of(page.text, holder.line.id)
    url = f"/backoffice/lines/{holder.line.id}/adjust"
    said = translate(language, MESSAGE)
    for raw in BAD:
        r = await client.post(url, data={"csrf": csrf, "target": "wallet", "amount": raw,
                                         "reason": "goodwill", "idem": key})
        assert r.status_code == 422, (raw, r.text)
        assert f'id="adjust-{holder.line.id}-amount-error">{said}' in r.text, raw
    assert await _count(db, Adjustment) == 0
    assert await totals(db, holder.line.wallet_account_id) == (2000, 0)
    # the page's own spelling is taken, a taking back too
    good = "1.50" if language == "en" else "1,50"
    r = await client.post(url, data={"csrf": csrf, "target": "wallet", "amount": good,
                                     "reason": "goodwill", "idem": key})
    assert r.status_code == 303, r.text
    back = "-0.25" if language == "en" else "-0,25"
    r = await client.post(url, data={"csrf": csrf, "target": "wallet", "amount": back,
                                     "reason": "goodwill", "idem": uuid.uuid4().hex})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        amounts = sorted((await s.execute(select(Adjustment.amount))).scalars())
    assert amounts == [-25, 150]
    assert await totals(db, holder.line.wallet_account_id) == (2125, 0)


@pytest.mark.parametrize("language", ["en", "es"])
async def test_each_bad_spelling_is_refused_on_the_refund_form(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    finance = await new_staff(db, settings, "finance", language=language)
    csrf = await web_sign_in(client, finance)
    customer = f"/backoffice/customers/{payer.account_id}"
    url = f"/backoffice/orders/{order['id']}/refund"
    said = translate(language, MESSAGE)
    for raw in [b for b in BAD if b.strip()]:  # an empty amount asks for one or the box
        r = await client.post(url, data={"csrf": csrf, "amount": raw, "reason": "asked",
                                         "then": customer, "idem": uuid.uuid4().hex})
        assert r.status_code == 422, (raw, r.text)
        assert f'id="refund-{order["id"]}-amount-error">{said}' in r.text, raw
    # a minus refunds nothing (an adjustment's "take back" means nothing here): not an amount
    # on this form, refused as the other spellings are
    r = await client.post(url, data={"csrf": csrf, "amount": "-1", "reason": "asked",
                                     "then": customer, "idem": uuid.uuid4().hex})
    assert r.status_code == 422 and f'id="refund-{order["id"]}-amount-error">{said}' in r.text
    assert await _count(db, Refund) == 0
    good = "1.00" if language == "en" else "1,00"
    r = await client.post(url, data={"csrf": csrf, "amount": good, "reason": "asked",
                                     "then": customer, "idem": uuid.uuid4().hex})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        assert list((await s.execute(select(Refund.amount))).scalars()) == [100]


def test_an_unsigned_amount_takes_no_minus() -> None:
    """`signed=False` (what a refund form means): `-5` is not an amount, `5` is."""
    with pytest.raises(ValidationFailed):
        parse_amount("-5", "USD", "en", signed=False)
    assert parse_amount("5", "USD", "en", signed=False) == 500
