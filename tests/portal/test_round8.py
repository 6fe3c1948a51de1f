"""Portal, eighth review round.

- `test_the_records_page_links_the_receipt_of_a_payment_put_on_the_balance_at_once`: the
  "My orders" table of `/account/records` linked an order's receipt only once it had a number
  (`receipt_number`, set by the worker's receipt job) or was fulfilled. A payment finance put
  on the line's balance (`applied`) therefore showed no receipt there until the worker ran,
  while the order's own page already linked it (it asks the ledger, `orders.applied_at`). The
  records page now asks the ledger too, for all its orders in one query.

Staff search (`backoffice.customers`, tested here with the portal's round):

- `test_staff_search_reads_a_national_number_in_the_operator_s_region`: a number typed without
  its country code was searched as its digits anywhere in a stored number: "0917 234 5678" of
  a Philippine operator found the PH line +63 917 234 5678 and also the US line
  +1 917 234 5678 (the wrong customer); a national form whose trunk prefix is not `0` (Russia's
  "8 912 345-67-89") found nobody. Given the operator's region, such a number is now read as
  dialled there (`kit.phone.national_e164`) and searched as that one E.164 number; what is no
  valid number there (a fragment, another country's national form) is searched as text, as
  before.
- `test_staff_search_over_http_uses_the_operator_s_region`: the same through the staff API, the
  operator's region set by `SIMCHARGE_PHONE_REGION`.

Latin-American Spanish:

- `test_a_mexican_reader_writes_and_reads_amounts_with_a_decimal_point` and
  `test_spain_s_spanish_is_unchanged`: every Spanish page wrote and read numbers as Spain does
  (`12,50`), whatever the browser's region; a reader whose browser says `es-MX` (`es-419`,
  `es-US`, `es-PH`) writes `12.50`, which the transfer form then refused ("not understood") or,
  worse, would have read as twelve hundred fifty had it not been strict. One Spanish
  translation stays (`es`); the number and money format (and the strict reading of a transfer's
  amount) follow the regional locale of the browser's `Accept-Language`
  (`kit.i18n.format_locale`). `es-PH`: Babel's `es_PH` writes Spain's comma, the Philippines a
  point, so it is written as `es_419`. The transfer form's examples ("such as 5.00", "such as
  5 or 5.50") said Spain's `5,50` in Spanish, which a Mexican reader's form refuses: they are
  now written in the page's format (new msgids).
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.backoffice.customers import search_customers
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.phone import national_e164
from simcharge.lines.identifiers import luhn_check_digit
from simcharge.lines.service import NewLine, open_line
from tests.backoffice.helpers import new_staff
from tests.backoffice.test_paid_but_got_nothing import _wrong_amount
from tests.factories import create_account
from tests.orders.helpers import new_payer, order_row
from tests.portal.helpers import new_customer, sign_in
from tests.tmf654.helpers import totals


async def test_the_records_page_links_the_receipt_of_a_payment_put_on_the_balance_at_once(
    client: httpx.AsyncClient, db: Database, settings: Settings, shop: None
) -> None:
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    oid = uuid.UUID(order["id"])
    receipt = f"/api/v1/orders/{oid}/receipt"
    client.cookies.set("sc_session", payer.token)
    assert receipt not in (await client.get("/account/records")).text  # not applied: no receipt

    finance = await new_staff(db, settings, "finance")
    client.cookies.clear()
    r = await client.post(f"/api/v1/admin/orders/{oid}/apply-to-wallet",
                          headers=finance.auth, json={"note": "customer asked for credit"})
    assert r.status_code == 200, r.text
    assert (await order_row(db, oid)).receipt_number is None  # the worker has not run

    client.cookies.set("sc_session", payer.token)
    order_page = (await client.get(f"/account/orders/{oid}")).text
    records = (await client.get("/account/records")).text
    assert receipt in order_page
    assert receipt in records, records
    # The link works: the receipt is there (asking for it numbers it).
    r = await client.get(receipt, params={"lang": "en"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/pdf")
    client.cookies.clear()


async def _customers(db: Database) -> dict[str, uuid.UUID]:
    """Three customers whose numbers end alike: a PH line, a US line, a Russian line."""

    async def run(s: AsyncSession) -> dict[str, uuid.UUID]:
        owners = {}
        for name, msisdn in (("ph", "+639172345678"), ("us", "+19172345678"),
                             ("ru", "+79123456789")):
            account = await create_account(s, username=f"r8{name}{uuid.uuid4().hex[:6]}")
            body = f"8901{len(owners) + 1}{msisdn.lstrip('+').rjust(12, '0')}1"
            await open_line(s, NewLine(msisdn=msisdn, iccid=body + luhn_check_digit(body),
                                       currency="USD"), account_id=account.id)
            owners[name] = account.id
        return owners

    return await db.run(run)


async def _search(db: Database, q: str, region: str | None) -> set[uuid.UUID]:
    async with db.read() as s:
        return {a.id for a in await search_customers(s, q, region=region)}


async def test_staff_search_reads_a_national_number_in_the_operator_s_region(
    db: Database,
) -> None:
    owners = await _customers(db)
    ph, us, ru = owners["ph"], owners["us"], owners["ru"]
    # Read in the operator's region: that one number, not another country's that contains it.
    for typed in ("0917 234 5678", "0917-234-5678", "(0917) 2345678", "917 234 5678"):
        assert await _search(db, typed, "PH") == {ph}, typed
    assert await _search(db, "8 912 345-67-89", "RU") == {ru}
    assert await _search(db, "(917) 234-5678", "US") == {us}
    # Written internationally: the same, whatever the region.
    assert await _search(db, "+63 917 234 5678", "US") == {ph}
    assert await _search(db, "0063 917 234 5678", "PH") == {ph}
    # Ambiguous (no valid number of the region): searched as text, as before.
    assert await _search(db, "234 5678", "PH") >= {ph, us}
    assert await _search(db, "07911 123456", "PH") == set()
    # No region: the digits as before (both lines hold them).
    assert await _search(db, "0917 234 5678", None) >= {ph, us}
    assert national_e164("0917 234 5678", None) is None
    assert national_e164("+639172345678", "PH") is None  # E.164 already


async def test_staff_search_over_http_uses_the_operator_s_region(
    db: Database, settings: Settings
) -> None:
    owners = await _customers(db)
    regional = settings.model_copy(update={"phone_region": "PH"})
    app = create_app(regional, db=db, run_worker=False)
    agent = await new_staff(db, regional, "agent")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.get("/api/v1/admin/customers", params={"q": "0917 234 5678"},
                        headers=agent.auth)
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()] == [str(owners["ph"])]


async def _review(
    client: httpx.AsyncClient, line_id: uuid.UUID, to: str, amount: str, accept: str
) -> httpx.Response:
    return await client.get(f"/account/lines/{line_id}/transfer/review",
                            params={"to": to, "what": "monetary", "amount": amount},
                            headers={"accept-language": accept})


def _hidden(html: str, action: str) -> dict[str, str]:
    import re

    form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))


@pytest.mark.parametrize("accept", ["es-MX,es;q=0.9,en;q=0.5", "es-419", "es-US", "es-PH"])
async def test_a_mexican_reader_writes_and_reads_amounts_with_a_decimal_point(
    client: httpx.AsyncClient, db: Database, settings: Settings, shop: None, accept: str
) -> None:
    me = await new_customer(db, settings, language="es")
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    # The pages write money the region's way (the balance, 12.50), in Spanish.
    page = (await client.get("/account", headers={"accept-language": accept})).text
    assert 'lang="es"' in page
    assert "12.50" in page and "12,50" not in page
    # Written the region's way: read as 12.50, shown the region's way, in Spanish.
    shown = await _review(client, me.line.id, friend.line.msisdn, "12.50", accept)
    assert shown.status_code == 200, shown.text
    assert 'lang="es"' in shown.text
    assert "12.50" in shown.text and "12,50" not in shown.text
    # Spain's way is not that (strict: "12,50" is no number here, not twelve hundred fifty).
    refused = await _review(client, me.line.id, friend.line.msisdn, "12,50", accept)
    assert refused.status_code == 422, refused.text
    assert 'id="e-amount"' in refused.text
    # Its examples are written as the form reads them (not Spain's "5,50", refused here).
    assert "5.50" in refused.text and "5,50" not in refused.text
    assert "5.00" in refused.text and "5,00" not in refused.text  # the field's hint
    # Confirmed as the browser posts the review's form: 12.50 moves, once.
    action = f"/account/lines/{me.line.id}/transfer"
    r = await client.post(action, data=_hidden(shown.text, action),
                          headers={"accept-language": accept})
    assert r.status_code == 303, r.text
    assert await totals(db, friend.line.wallet_account_id) == (1250, 0)
    client.cookies.clear()


async def test_spain_s_spanish_is_unchanged(
    client: httpx.AsyncClient, db: Database, settings: Settings, shop: None
) -> None:
    me = await new_customer(db, settings, language="es")
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    for accept in ("es-ES,es;q=0.9", "es", "en-US,en;q=0.9"):
        page = (await client.get("/account", headers={"accept-language": accept})).text
        assert "12,50" in page and "12.50" not in page, accept
        shown = await _review(client, me.line.id, friend.line.msisdn, "12,50", accept)
        assert shown.status_code == 200, (accept, shown.text)
        assert 'data-testid="amount">12,50\xa0US$<' in shown.text, accept
        refused = await _review(client, me.line.id, friend.line.msisdn, "12.50", accept)
        assert refused.status_code == 422, (accept, refused.text)
        assert "5,50" in refused.text and "5,00" in refused.text, accept
    assert await totals(db, friend.line.wallet_account_id) == (0, 0)
    client.cookies.clear()
