"""Round 13's walkthrough of the portal, as the pages say it: a credited order states what it
gave (each bucket's own end date, not the line's soonest) and links to customer service with the
order chosen; the help form tells orders apart; the top-up review says what the package gives;
data is given in GB or MB, converted exactly; records name the other line of a gift (masked) and
give the date filter its own words. On SQLite and PostgreSQL (the suite's fixtures)."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from babel.dates import format_date
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Bucket
from simcharge.lines.service import UnitGrant, grant_units, line_balances
from simcharge.portal.records import masked
from tests.portal.helpers import Customer, csrf_of, new_customer, sign_in
from tests.portal.test_accessibility_edges import fulfilled_order
from tests.tmf654.helpers import MB, totals

pytestmark = pytest.mark.usefixtures("shop")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Transfers cost 2 % + 0.10 here, so that a fee is a record too."""
    return settings.model_copy(update={
        "balance_transfer_fee_percent": Decimal("2"),
        "balance_transfer_fee_fixed": 10,
    })


def day(moment: datetime) -> str:
    return str(format_date(moment.astimezone(UTC).date(), "medium", locale="en"))


def outcome_of(page: str) -> str:
    return page.split('data-testid="outcome"', 1)[1].split("</div>", 1)[0]


# --- 3 and 8: the credited order's page ---------------------------------------------------------

async def test_a_credited_order_says_what_it_gave_with_its_own_end_dates(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The line already holds 2 GB for 30 days and 1 GB ending in 5 days: the order's 3 GB end
    in 30 days from now, which the page says; the line's totals carry no end date (the soonest
    of all its buckets, which it said before: "Data: 6 GB · valid until <in 5 days>")."""
    me = await new_customer(db, settings)
    await db.run(lambda s: grant_units(s, me.line, [UnitGrant("DATA_B", 1024**3, 5, ())],
                                       source="demo:older"))
    sign_in(client, me)
    order_id = await fulfilled_order(client, settings, me.line.id)
    async with db.read() as s:
        mine = {b.unit: b for b in (await s.execute(
            select(Bucket).where(Bucket.source == f"order:{order_id}"))).scalars()}
    assert mine["DATA_B"].initial_amount == 3 * 1024**3
    page = (await client.get(f"/account/orders/{order_id}")).text
    said = outcome_of(page)
    granted = said.split('data-testid="granted">', 1)[1].split("</ul>", 1)[0]
    ends = day(mine["DATA_B"].expires_at)  # type: ignore[arg-type]
    assert f"3 GB, valid until {ends}" in granted
    assert f"250 min, valid until {ends}" in granted
    assert f"50 SMS, valid until {ends}" in granted
    assert "This top-up gave:" in said
    # The line's totals: the older buckets added, no end date beside them.
    holds = said.split("now holds:", 1)[1]
    assert "Data: <strong>6 GB</strong></li>" in holds
    assert "valid until" not in holds
    assert day(utcnow() + timedelta(days=5)) not in said
    # 8: customer service, with this order chosen on the help form.
    link = re.search(r'<a href="(/account/help\?order=[^"]+)" data-testid="contact">', page)
    assert link and link.group(1) == f"/account/help?order={order_id}"
    form = (await client.get(link.group(1))).text
    assert re.search(rf'<option value="{order_id}" selected>', form)


async def test_a_used_up_order_says_the_package_as_sold(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Once its buckets are no longer held (used or expired), the page says what was sold:
    each grant for its days."""
    me = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    order_id = await fulfilled_order(client, settings, me.line.id)

    async def expire(s: object) -> None:
        from sqlalchemy import update
        from sqlalchemy.ext.asyncio import AsyncSession

        assert isinstance(s, AsyncSession)
        await s.execute(update(Bucket).where(Bucket.source == f"order:{order_id}")
                        .values(expires_at=utcnow() - timedelta(minutes=1)))

    await db.run(expire)
    said = outcome_of((await client.get(f"/account/orders/{order_id}")).text)
    granted = said.split('data-testid="granted">', 1)[1].split("</ul>", 1)[0]
    for part in ("250 min for 30 days", "3 GB for 30 days", "50 SMS for 30 days"):
        assert part in granted, part


async def test_the_help_form_tells_orders_apart_and_keeps_only_own_orders(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    other = await new_customer(db, settings)
    sign_in(client, me)
    order_id = await fulfilled_order(client, settings, me.line.id)
    form = (await client.get(f"/account/help?order={order_id}")).text
    option = re.search(rf'<option value="{order_id}" selected>([^<]+)</option>', form)
    assert option, form
    text = html.unescape(option.group(1))
    # Date · state · total · number · reference.
    assert text.startswith(day(utcnow()))
    shown = re.search(r'<code data-testid="reference">(.*?)</code>',
                      (await client.get(f"/account/orders/{order_id}")).text)
    assert shown
    reference = re.sub(r"<[^>]+>", "", shown.group(1))  # the page groups it by four
    assert re.fullmatch(r"SC[A-Z2-7]{26}", reference)
    assert text.endswith(f" · Credited · $20.00 · {me.line.msisdn} · {reference}"), text
    # Someone else's order (or no order) is not added, nor an error.
    client.cookies.clear()
    sign_in(client, other)
    r = await client.get(f"/account/help?order={order_id}")
    assert r.status_code == 200
    assert str(order_id) not in r.text.split('id="f-order"', 1)[1].split("</select>", 1)[0]
    r = await client.get("/account/help?order=not-an-id")
    assert r.status_code == 200
    assert "selected" not in r.text.split('id="f-order"', 1)[1].split("</select>", 1)[0]


# --- 9: the top-up review -----------------------------------------------------------------------

async def test_the_top_up_review_says_what_the_package_gives(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    sign_in(client, me)
    query = {"line": str(me.line.id), "plan": "explorer-50", "method": "sandbox", "msisdn": ""}
    r = await client.get("/account/topup/review", params=query)
    assert r.status_code == 200, r.text
    contents = re.search(r'data-testid="contents">([^<]+)<', r.text)
    assert contents and html.unescape(contents.group(1)) == (
        "$5.00 of credit, 700 min, 10 GB, and 100 SMS")
    assert 'data-testid="validity">60 days<' in r.text
    r = await client.get("/account/topup/review", params={**query, "plan": "traveller-20"})
    contents = re.search(r'data-testid="contents">([^<]+)<', r.text)
    assert contents and html.unescape(contents.group(1)) == "250 min, 3 GB, and 50 SMS"


# --- 4: data in GB or MB ------------------------------------------------------------------------

def page_of(line_id: object) -> str:
    return f"/account/lines/{line_id}/transfer"


def hidden_fields(page: str, action: str) -> dict[str, str]:
    form = page.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))


async def review(
    client: httpx.AsyncClient, me: Customer, to: str, amount: str, unit: str | None, *,
    language_what: str = "data",
) -> httpx.Response:
    params = {"to": to, "what": language_what, "amount": amount}
    if unit is not None:
        params["data_unit"] = unit
    return await client.get(page_of(me.line.id) + "/review", params=params)


async def test_data_is_given_in_gb_converted_exactly(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    form = (await client.get(page_of(me.line.id))).text
    # GB is the form's choice at first, as the pages show data.
    assert re.search(r'<select id="f-data_unit" name="data_unit"><option value="GB" selected>',
                     form)
    shown = await review(client, me, friend.line.msisdn, "1.5", "GB")
    assert shown.status_code == 200, shown.text
    assert 'data-testid="amount">1.5 GB<' in shown.text
    fields = hidden_fields(shown.text, page_of(me.line.id))
    assert fields["units"] == "1536" and fields["data_unit"] == "GB"
    r = await client.post(page_of(me.line.id), data=fields)
    assert r.status_code == 303, r.text
    async with db.read() as s:
        theirs = await line_balances(s, friend.line)
    assert [(u.unit, u.remaining) for u in theirs.units] == [("DATA_B", 1536 * MB)]
    # MB still, when chosen; and without a choice (a link of before).
    for unit in ("MB", None):
        shown = await review(client, me, friend.line.msisdn, "300", unit)
        assert shown.status_code == 200 and 'data-testid="amount">300 MB<' in shown.text
        assert hidden_fields(shown.text, page_of(me.line.id))["units"] == "300"


@pytest.mark.parametrize(
    ("amount", "unit", "field", "said"),
    [
        ("1.1", "GB", "amount", "Give data in whole MB, such as 1.5 GB or 500 MB (1 GB is 1,024 MB)."),
        ("0.5", "MB", "amount", "Give data in whole MB, such as 1.5 GB or 500 MB (1 GB is 1,024 MB)."),
        ("1", "TB", "data_unit", "Choose GB or MB."),
        ("one", "GB", "amount", "Enter the amount as a number, such as 5 or 5.50."),
        ("-1", "GB", "amount", "The amount must be more than zero."),
        ("9" * 20, "GB", "amount", "Enter the amount as a number, such as 5 or 5.50."),
    ],
)
async def test_bad_data_amounts_are_refused_by_their_field_and_nothing_moves(
    client: httpx.AsyncClient, db: Database, settings: Settings,
    amount: str, unit: str, field: str, said: str,
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    r = await review(client, me, friend.line.msisdn, amount, unit)
    assert r.status_code == 422, r.text
    assert f'<p class="error" id="e-{field}">{html.escape(said, quote=False)}</p>' in r.text
    assert f'id="f-{field}" name="{field}"' in r.text
    # The confirmation refuses it the same way (a form posted without the review's units).
    csrf = csrf_of((await client.get(page_of(me.line.id))).text)
    r = await client.post(page_of(me.line.id), data={
        "csrf": csrf, "to": friend.line.msisdn, "what": "data", "amount": amount,
        "data_unit": unit, "idempotency_key": uuid.uuid4().hex})
    assert r.status_code == 422 and f'id="e-{field}"' in r.text
    async with db.read() as s:
        assert (await line_balances(s, friend.line)).units == []
        mine = await line_balances(s, me.line)
    assert [(u.unit, u.remaining) for u in mine.units if u.unit == "DATA_B"] == [
        ("DATA_B", 2 * 1024**3)]
    assert await totals(db, me.line.wallet_account_id) == (1250, 0)


# --- 5 and 6: records ---------------------------------------------------------------------------

def test_a_number_is_masked_with_at_least_half_of_its_digits_and_four_hidden() -> None:
    """Round 16: first three and last four of an 8-digit number (Hong Kong, Singapore,
    Denmark) hid one digit — ten guesses. Now at least half of the national number, and at
    least four digits, are hidden, a dot each."""
    assert masked("+14155550102") == "+1 415 ••• ••02"
    assert masked("+639171234567") == "+63 917 ••• ••67"
    assert masked("+8613812345678") == "+86 138 •••• ••78"  # 11 digits: 6 hidden
    assert masked("+493012345678901") == "+49 301 •••••• •901"  # 13 digits: 7 hidden
    assert masked("+85251234567") == "+852 •••• ••67"  # 8 digits: the last two only
    assert masked("+6581234567") == "+65 •••• ••67"
    assert masked("+4520123456") == "+45 •••• ••56"
    assert masked("+8521234567") == "+852 ••• ••67"
    assert masked("+999123") == "•• ••23"  # not a number phonenumbers reads: its digits
    assert masked("12345") == "• •••5"  # five digits: four hidden
    # Whatever the length of the national number (n): at least half of it, and four, hidden.
    for number, n in (("+14155550102", 10), ("+85251234567", 8), ("+8613812345678", 11),
                      ("+493012345678901", 13), ("+8521234567", 7), ("12345", 5)):
        hidden = masked(number).count("•")
        assert hidden >= 4 and 2 * hidden >= n, (number, masked(number))


async def give(
    client: httpx.AsyncClient, me: Customer, to: str, what: str, amount: str
) -> None:
    shown = await client.get(page_of(me.line.id) + "/review",
                             params={"to": to, "what": what, "amount": amount, "data_unit": "MB"})
    assert shown.status_code == 200, shown.text
    r = await client.post(page_of(me.line.id), data=hidden_fields(shown.text, page_of(me.line.id)))
    assert r.status_code == 303, r.text


def kinds_of(page: str) -> list[str]:
    """The records table's "Kind" cells, their tags removed."""
    table = page.split('id="t-records"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>.*?</tr>", table, re.S)
    return [re.sub(r"<[^>]+>", " ", re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[2]).strip()
            for row in rows]


async def test_records_name_the_other_line_of_a_gift_masked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    await give(client, me, friend.line.msisdn, "monetary", "5")
    await give(client, me, friend.line.msisdn, "data", "100")
    mine = (await client.get("/account/records?kind=transfer")).text
    kinds = [" ".join(k.split()) for k in kinds_of(mine)]
    to_friend = f"Transfer between lines given to {masked(friend.line.msisdn)}"
    assert kinds.count(to_friend) == 2, kinds
    assert kinds.count("Transfer between lines transfer fee") == 2, kinds
    # Nothing more of theirs: not their number in full, their name or their e-mail.
    assert friend.line.msisdn not in mine
    assert friend.username not in mine and friend.email not in mine
    # The receiver reads it the other way round, with the giver's number masked.
    client.cookies.clear()
    sign_in(client, friend)
    theirs = (await client.get("/account/records")).text
    kinds = [" ".join(k.split()) for k in kinds_of(theirs)]
    assert kinds.count(f"Transfer between lines received from {masked(me.line.msisdn)}") == 2
    assert me.line.msisdn not in theirs and me.username not in theirs


async def test_a_gift_between_own_lines_names_the_other_line_in_full(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Both lines are the customer's: both numbers in full, even when the filter shows one."""
    from tests.factories import create_line

    me = await new_customer(db, settings)
    from simcharge.lines.models import LineState

    second = await db.run(lambda s: create_line(s, account_id=me.account_id,
                                                state=LineState.active))
    sign_in(client, me)
    await give(client, me, second.msisdn, "monetary", "2")
    page = (await client.get(f"/account/records?kind=transfer&line={me.line.id}")).text
    kinds = [" ".join(k.split()) for k in kinds_of(page)]
    assert f"Transfer between lines given to {second.msisdn}" in kinds
    page = (await client.get("/account/records?kind=transfer")).text
    kinds = [" ".join(k.split()) for k in kinds_of(page)]
    assert f"Transfer between lines received from {me.line.msisdn}" in kinds


@pytest.mark.parametrize("language", ["en", "zh-Hant", "zh-Hans", "es", "fil"])
async def test_the_records_date_filter_is_not_the_transfers_from(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    """"From" of the date filter has its own context ("date"): Chinese said "source" (來源)."""
    me = await new_customer(db, settings, language=language)
    sign_in(client, me)
    page = (await client.get("/account/records")).text
    label = re.search(r'<label for="f-from">([^<]+)</label>', page)
    assert label
    from simcharge.kit.translations import translations

    catalog = translations(language)
    assert label.group(1) == catalog.pgettext("date", "From")
    if language == "en":
        assert label.group(1) == "From"
    else:  # a word of dates, whatever the transfers' "From" is (Spanish: "Desde" for both)
        assert label.group(1) not in ("From", "来源", "來源"), label.group(1)
