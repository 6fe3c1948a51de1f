"""The customer side's fourteenth round, without JavaScript (plain forms, on SQLite and
PostgreSQL): the GB/MB choice of a transfer belongs to data only — not offered where the line
holds no data, not read, checked nor carried to the review for credit, minutes or SMS; a
contact added where none was verified may be cancelled, unless it is the account's only one;
an order's reference is shown in groups of four (stored and in the API as it was)."""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth import service as auth
from simcharge.auth.client import ClientInfo
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.lines.service import line_balances
from simcharge.orders.models import Order
from simcharge.portal.web import grouped
from tests.conftest import last_sms_code
from tests.portal.helpers import PASSWORD, new_customer, post_form, sign_in
from tests.portal.test_accessibility_edges import fulfilled_order
from tests.portal.test_round13_pages import hidden_fields, page_of
from tests.tmf654.helpers import totals

pytestmark = pytest.mark.usefixtures("shop")


async def test_the_unit_is_offered_only_where_data_can_be_given(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    sign_in(client, me)
    form = (await client.get(page_of(me.line.id))).text
    # Shown (for the form without JavaScript), marked as data's for portal.js.
    assert re.search(r'<div class="field" id="field-data_unit" data-shown-with="data">', form)
    bare = await new_customer(db, settings, with_units=False)
    sign_in(client, bare)
    form = (await client.get(page_of(bare.line.id))).text
    assert 'name="what" value="data"' not in form
    assert 'id="f-data_unit"' not in form and "Data in" not in form


@pytest.mark.parametrize(("what", "amount", "said"), [
    ("monetary", "2.50", "$2.50"), ("voice", "5", "5 min")])
async def test_a_unit_sent_with_something_else_is_ignored(
    client: httpx.AsyncClient, db: Database, settings: Settings, what: str, amount: str,
    said: str,
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    # The form without JavaScript sends the unit's choice whatever is given; even one that is
    # no unit: it is not data's, so it is not read.
    for unit in ("GB", "TB"):
        shown = await client.get(page_of(me.line.id) + "/review", params={
            "to": friend.line.msisdn, "what": what, "amount": amount, "data_unit": unit})
        assert shown.status_code == 200, shown.text
        assert f'data-testid="amount">{said}<' in shown.text
        fields = hidden_fields(shown.text, page_of(me.line.id))
        assert "data_unit" not in fields  # nor in the way back to the form
        back = re.search(r'<a href="([^"]+)">Change</a>', shown.text)
        assert back is not None and "data_unit" not in back.group(1)
    r = await client.post(page_of(me.line.id), data={**fields, "data_unit": "TB"})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        theirs = await line_balances(s, friend.line)
    if what == "monetary":
        assert theirs.wallet.available == 250
    else:
        assert [(u.unit, u.remaining) for u in theirs.units] == [("VOICE_S", 300)]


async def test_with_data_the_unit_is_still_checked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    r = await client.get(page_of(me.line.id) + "/review", params={
        "to": friend.line.msisdn, "what": "data", "amount": "1", "data_unit": "TB"})
    assert r.status_code == 422
    assert '<p class="error" id="e-data_unit">Choose GB or MB.</p>' in r.text
    assert 'name="data_unit" aria-invalid="true"' in r.text
    async with db.read() as s:
        assert (await line_balances(s, friend.line)).units == []
    assert await totals(db, me.line.wallet_account_id) == (1250, 0)


# --- a contact added where none was verified may be cancelled ---------------------------------

PHONE = "+14155550188"


async def _account(db: Database, account_id: uuid.UUID) -> Account:
    async with db.read() as s:
        account = await s.get(Account, account_id)
        assert account is not None
        return account


async def _set(db: Database, account_id: uuid.UUID, **values: Any) -> None:
    async def run(s: AsyncSession) -> None:
        await s.execute(update(Account).where(Account.id == account_id).values(**values))

    await db.run(run)


def _contact(page: str, channel: str) -> str:
    return page.split(f'data-testid="contact-{channel}">', 1)[1].split("</dd>", 1)[0]


async def test_a_phone_added_where_none_was_verified_may_be_cancelled(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Any
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await post_form(client, "/account/profile", "/account/profile/details", {
        "display_name": "", "email": customer.email, "phone": PHONE,
        "current_password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1"
    await deliver()
    code = last_sms_code(PHONE)
    phone = _contact((await client.get("/account/profile")).text, "sms")
    assert 'action="/account/profile/cancel"' in phone and "Cancel the change" in phone
    r = await post_form(client, "/account/profile", "/account/profile/cancel",
                        {"channel": "sms"})
    assert r.status_code == 303 and r.headers["location"] == "/account/profile?saved=cancelled"
    shown = (await client.get(r.headers["location"])).text
    assert "The change is cancelled." in shown and PHONE not in shown
    account = await _account(db, customer.account_id)
    assert (account.phone, account.phone_pending, account.email) == (None, None, customer.email)
    # Its code is void; cancelled again, there is nothing left to cancel.
    r = await post_form(client, "/verify", "/verify", {"channel": "sms", "code": code})
    assert r.status_code in (400, 401, 422)
    assert (await _account(db, customer.account_id)).phone is None
    r = await post_form(client, "/account/profile", "/account/profile/cancel",
                        {"channel": "sms"})
    assert r.status_code == 422 and "There is nothing to verify on this channel." in r.text


async def test_the_accounts_only_contact_is_replaced_not_cancelled(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    pending = customer.email
    await _set(db, customer.account_id, email=None, email_verified_at=None, email_pending=pending)
    sign_in(client, customer)
    page = (await client.get("/account/profile")).text
    assert "Cancel the change" not in _contact(page, "email")
    assert "Cancel the change" not in (await client.get("/verify")).text
    r = await post_form(client, "/account/profile", "/account/profile/cancel",
                        {"channel": "email"})
    assert r.status_code == 409 and 'class="alert bad"' in r.text
    assert ("This is the only e-mail address or phone number of your account: replace it "
            "rather than cancel it.") in r.text
    account = await _account(db, customer.account_id)
    assert (account.email, account.email_pending) == (None, pending)
    # With a number pending too, either may go: the other is left to reach the holder by.
    await _set(db, customer.account_id, phone_pending=PHONE)
    page = (await client.get("/account/profile")).text
    assert "Cancel the change" in _contact(page, "email")
    r = await post_form(client, "/account/profile", "/account/profile/cancel",
                        {"channel": "sms"})
    assert r.status_code == 303, r.text
    account = await _account(db, customer.account_id)
    assert (account.email_pending, account.phone_pending) == (pending, None)


async def test_the_service_refuses_by_its_type_and_field(
    db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    await _set(db, customer.account_id, email=None, email_verified_at=None,
               email_pending="only@example.com")
    client_info = ClientInfo(ip="198.51.100.9", user_agent="pytest")

    async def cancel(s: AsyncSession, channel: Literal["email", "sms"]) -> None:
        account = await s.get(Account, customer.account_id, with_for_update=True)
        assert account is not None
        await auth.cancel_pending_contact(s, account, channel, client=client_info, now=utcnow())

    with pytest.raises(auth.OnlyContactPending) as only:
        await db.run(lambda s: cancel(s, "email"))
    assert (only.value.slug, only.value.field, only.value.status) == (
        "contact-only-one", "channel", 409)
    with pytest.raises(ValidationFailed) as nothing:
        await db.run(lambda s: cancel(s, "sms"))
    assert nothing.value.field == "channel"
    assert (await _account(db, customer.account_id)).email_pending == "only@example.com"


# --- an order's reference in groups of four ---------------------------------------------------


def test_a_reference_is_grouped_by_four_and_escaped() -> None:
    shown = grouped("SCAB2CDE3FGH4IJK5LMN6OPQ7RST")
    assert str(shown) == (
        '<span class="groups"><span>SCAB</span><span>2CDE</span><span>3FGH</span>'
        "<span>4IJK</span><span>5LMN</span><span>6OPQ</span><span>7RST</span></span>")
    assert re.sub(r"<[^>]+>", "", str(shown)) == "SCAB2CDE3FGH4IJK5LMN6OPQ7RST"
    assert "<b>" not in str(grouped("<b>x</b>")) and "&lt;b&gt;" in str(grouped("<b>x</b>"))
    assert str(grouped("SC12")) == '<span class="groups"><span>SC12</span></span>'


async def test_the_order_page_shows_the_reference_grouped_the_api_unchanged(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings)
    sign_in(client, me)
    order_id = await fulfilled_order(client, settings, me.line.id)
    page = (await client.get(f"/account/orders/{order_id}")).text
    shown = re.search(r'<code data-testid="reference">(.*?)</code>', page)
    assert shown
    groups = re.findall(r"<span>([A-Z2-7]{1,4})</span>", shown.group(1))
    assert len(groups) == 7 and all(len(g) == 4 for g in groups)
    async with db.read() as s:
        stored = (await s.execute(select(Order.reference).where(Order.id == order_id))).scalar_one()
    assert "".join(groups) == stored and len(stored) == 28
    r = await client.get(f"/api/v1/orders/{order_id}", headers={
        "Authorization": f"Bearer {me.token}"})
    assert r.status_code == 200 and r.json()["reference"] == stored
