"""Giving credit or data from my line in the portal: the terms before, a review with the fee,
then the transfer (the service of `/api/v1/me/lines/{id}/transfers`), errors in every
language, nothing moved by a refusal."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.i18n import LANGUAGES
from simcharge.kit.money import format_money
from simcharge.kit.translations import translate
from simcharge.kit.units import locale_of
from simcharge.lines.models import LineState
from simcharge.lines.service import UnitGrant, grant_units
from tests.portal.helpers import Customer, csrf_of, new_customer, sign_in
from tests.tmf654.helpers import MB, totals

pytestmark = pytest.mark.usefixtures("shop")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Transfers cost 2 % + 0.10 here, so that fees show."""
    return settings.model_copy(update={
        "balance_transfer_fee_percent": Decimal("2"),
        "balance_transfer_fee_fixed": 10,
    })


def page_of(line_id: object) -> str:
    return f"/account/lines/{line_id}/transfer"


def hidden_fields(html: str, action: str) -> dict[str, str]:
    form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))


async def review(
    client: httpx.AsyncClient, me: Customer, to: str, what: str, amount: str
) -> httpx.Response:
    return await client.get(page_of(me.line.id) + "/review",
                            params={"to": to, "what": what, "amount": amount})


async def confirm(client: httpx.AsyncClient, me: Customer, shown: httpx.Response) -> httpx.Response:
    """Press "Give … now" on a review page: its form, as the browser would post it."""
    fields = hidden_fields(shown.text, page_of(me.line.id))
    assert {"csrf", "idempotency_key", "to", "what", "units"} <= fields.keys()
    return await client.post(page_of(me.line.id), data=fields)


async def test_the_terms_come_before_and_the_fee_is_shown_before_giving(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    r = await client.get(page_of(me.line.id))
    assert r.status_code == 200
    terms = re.search(r'data-testid="terms">(.*?)</dl>', r.text, re.S)
    assert terms
    assert "2% of the credit given, plus $0.10" in terms.group(1)
    assert "$1.00 to $50.00 per transfer" in terms.group(1)
    assert "at most 5 transfers in any 24 hours (5 left now)" in terms.group(1)
    assert "up to 500 min per transfer" in terms.group(1)
    assert "Nothing given yet." in r.text
    shown = await review(client, me, friend.line.msisdn, "monetary", "5.00")
    assert shown.status_code == 200, shown.text
    assert re.search(r'data-testid="to">\+?[0-9]+<', shown.text)
    assert 'data-testid="amount">$5.00<' in shown.text
    assert 'data-testid="fee">$0.20<' in shown.text
    assert 'data-testid="total">$5.20<' in shown.text
    assert await totals(db, me.line.wallet_account_id) == (1250, 0)  # nothing moved yet
    r = await confirm(client, me, shown)
    assert r.status_code == 303
    assert r.headers["location"].startswith(page_of(me.line.id) + "?done=")
    done = await client.get(r.headers["location"])
    assert f"Done: $5.00 went to {friend.line.msisdn}. Fee: $0.20." in done.text
    assert "at most 5 transfers in any 24 hours (4 left now)" in done.text
    assert await totals(db, me.line.wallet_account_id) == (1250 - 520, 0)
    assert await totals(db, friend.line.wallet_account_id) == (500, 0)
    # The same form again (a double click, a resent form): the same transfer, once.
    again = await confirm(client, me, shown)
    assert again.headers["location"] == r.headers["location"]
    assert await totals(db, me.line.wallet_account_id) == (1250 - 520, 0)
    history = await client.get(page_of(me.line.id))
    assert history.text.count("→ " + friend.line.msisdn) == 1
    # The API lists the same transfer: one service behind both.
    api = await client.get(f"/api/v1/me/lines/{me.line.id}/transfers",
                           headers={"Authorization": f"Bearer {me.token}"})
    assert [t["amount"] for t in api.json()] == [500]


async def test_data_is_given_in_mb_with_the_fixed_fee(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    shown = await review(client, me, friend.line.msisdn, "data", "200")
    assert shown.status_code == 200, shown.text
    assert 'data-testid="amount">200 MB<' in shown.text
    assert 'data-testid="fee">$0.10<' in shown.text
    assert 'data-testid="total"' not in shown.text
    r = await confirm(client, me, shown)
    assert r.status_code == 303
    async with db.read() as s:
        from simcharge.lines.service import line_balances

        theirs = await line_balances(s, friend.line)
    assert [(u.unit, u.remaining) for u in theirs.units] == [("DATA_B", 200 * MB)]
    assert await totals(db, me.line.wallet_account_id) == (1250 - 10, 0)


async def test_a_spanish_reader_writes_amounts_with_a_decimal_comma(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings, language="es")
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    client.cookies.set("sc_lang", "es")
    shown = await review(client, me, friend.line.msisdn, "monetary", "5,50")
    assert shown.status_code == 200, shown.text
    assert 'data-testid="amount">5,50\xa0US$<' in shown.text
    r = await confirm(client, me, shown)
    assert r.status_code == 303
    assert await totals(db, friend.line.wallet_account_id) == (550, 0)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_a_refusal_says_why_in_the_readers_language_and_moves_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings, language: str
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    client.cookies.set("sc_lang", language)
    loc = locale_of(language)
    # Over the money limit: said in money, not in minor units.
    r = await review(client, me, friend.line.msisdn, "monetary", "60")
    assert r.status_code == 409
    said = translate(language, "Give between {low} and {high} of credit at a time.").format(
        low=format_money(100, "USD", loc), high=format_money(5000, "USD", loc))
    assert said in r.text and 'id="e-amount"' in r.text and 'aria-invalid="true"' in r.text
    # Not one of our numbers: by the number's field.
    r = await review(client, me, "+14155559999", "monetary", "5")
    assert r.status_code == 404 and 'id="e-to"' in r.text
    assert translate(language, "{msisdn} is not one of our lines.").format(
        msisdn="+14155559999") in r.text
    # Not a number.
    r = await review(client, me, friend.line.msisdn, "monetary", "five")
    assert r.status_code == 422
    assert translate(language, "Enter the amount as a number, such as 5 or 5.50.") in r.text
    # More data than the line holds.
    r = await review(client, me, friend.line.msisdn, "data", "5000")
    assert r.status_code == 409
    assert translate(language, "There is not enough balance for this.") in r.text
    # To itself.
    r = await review(client, me, me.line.msisdn, "monetary", "5")
    assert r.status_code == 422
    assert translate(language, "A line cannot give to itself.") in r.text
    assert await totals(db, me.line.wallet_account_id) == (1250, 0)
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)


async def test_the_confirmation_checks_again_and_needs_its_token(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    shown = await review(client, me, friend.line.msisdn, "monetary", "10")
    fields = hidden_fields(shown.text, page_of(me.line.id))
    r = await client.post(page_of(me.line.id), data={**fields, "csrf": "forged"})
    assert r.status_code == 403
    # Meanwhile the balance went elsewhere: the service refuses, the form says so.
    other = await review(client, me, friend.line.msisdn, "monetary", "3")
    r = await confirm(client, me, other)
    assert r.status_code == 303
    r = await confirm(client, me, shown)
    assert r.status_code == 409
    assert "There is not enough balance for this." in r.text and 'class="alert bad"' in r.text
    assert await totals(db, friend.line.wallet_account_id) == (300, 0)
    assert await totals(db, me.line.wallet_account_id) == (1250 - 316, 0)


async def test_only_my_own_active_line_gives(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    stranger = await new_customer(db, settings)
    sign_in(client, me)
    assert (await client.get(page_of(stranger.line.id))).status_code == 404
    r = await client.get(page_of(stranger.line.id) + "/review",
                         params={"to": me.line.msisdn, "what": "monetary", "amount": "5"})
    assert r.status_code == 404
    r = await client.post(page_of(stranger.line.id), data={
        "csrf": csrf_of((await client.get(page_of(me.line.id))).text),
        "to": me.line.msisdn, "what": "monetary", "units": "500", "idempotency_key": "k1"})
    assert r.status_code == 404
    assert await totals(db, stranger.line.wallet_account_id) == (1250, 0)

    async def in_grace(s: AsyncSession) -> None:
        line = await s.get(type(me.line), me.line.id)
        assert line is not None
        line.state = LineState.grace.value

    await db.run(in_grace)
    r = await client.get(page_of(me.line.id))
    assert "Only an active line can give balance." in r.text
    assert 'action="/account/lines/' not in r.text.split("<main", 1)[1].split("</main>")[0]


async def test_what_the_line_holds_is_offered(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)

    async def sms(s: AsyncSession) -> None:
        await grant_units(s, me.line, [UnitGrant("SMS", 40, 30, ())], source="test:sms")

    await db.run(sms)
    sign_in(client, me)
    r = await client.get(page_of(me.line.id))
    offered = re.findall(r'name="what" value="(\w+)"', r.text)
    assert offered == ["monetary", "voice", "data", "sms"]
    assert "you have $12.50" in r.text and "you have 40 SMS" in r.text
    bare = await new_customer(db, settings, with_units=False)
    sign_in(client, bare)
    r = await client.get(page_of(bare.line.id))
    assert re.findall(r'name="what" value="(\w+)"', r.text) == ["monetary"]


async def test_an_amount_no_ledger_could_hold_is_not_understood_and_moves_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Babel reads "Infinity", "NaN" and "1e99999999" as numbers: the form answers them as it
    answers "five", on the review and on a confirmation posted without the review's units."""
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    csrf = csrf_of((await client.get(page_of(me.line.id))).text)
    for what in ("monetary", "voice", "data"):
        for amount in ("Infinity", "-Infinity", "NaN", "1e400", "1e99999999", "9" * 30):
            r = await review(client, me, friend.line.msisdn, what, amount)
            assert r.status_code == 422, (what, amount, r.text)
            assert "Enter the amount as a number, such as 5 or 5.50." in r.text
            assert 'id="e-amount"' in r.text
            r = await client.post(page_of(me.line.id), data={
                "csrf": csrf, "to": friend.line.msisdn, "what": what, "amount": amount,
                "idempotency_key": f"{what}-{amount}"})
            assert r.status_code == 422, (what, amount, r.text)
            assert "Enter the amount as a number, such as 5 or 5.50." in r.text
    # The review's units, changed to more MB than a ledger amount can be.
    r = await client.post(page_of(me.line.id), data={
        "csrf": csrf, "to": friend.line.msisdn, "what": "data", "units": "9" * 15,
        "idempotency_key": "k-units"})
    assert r.status_code == 422, r.text
    assert "Enter the amount as a number, such as 5 or 5.50." in r.text
    assert await totals(db, me.line.wallet_account_id) == (1250, 0)
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)


async def test_units_that_are_not_ascii_digits_are_not_the_reviews_units(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """"²" and "①" are digits to `str.isdigit` but not to `int`: the confirmation reads them as
    no units at all, and so asks for the amount."""
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    csrf = csrf_of((await client.get(page_of(me.line.id))).text)
    for units in ("\u00b2", "\u2460", "\uff15"):  # superscript two, circled one, fullwidth five
        r = await client.post(page_of(me.line.id), data={
            "csrf": csrf, "to": friend.line.msisdn, "what": "monetary", "units": units,
            "idempotency_key": f"k-{ord(units)}"})
        assert r.status_code == 422, (units, r.text)
        assert 'id="e-amount"' in r.text and "This field is required." in r.text
    assert await totals(db, me.line.wallet_account_id) == (1250, 0)
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)
