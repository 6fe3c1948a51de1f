"""Round 17: after a contact change the verify page asks no channel. The change fixes it — a new
number's code goes by SMS, a new address's by e-mail — so the form carries it (hidden) and the
code alone verifies; a wrong code is refused with nothing changed and the form still fixed. Two
contacts waiting (both changed at once) or none known (signed out, after registering): the
customer says where the code arrived, as before."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import update

from simcharge.accounts.models import Account
from simcharge.config import Settings
from simcharge.db import Database
from tests.conftest import SmtpInbox, last_sms_code
from tests.portal.helpers import PASSWORD, new_customer, post_form, sign_in

NEW_PHONE = "+14155550171"
NEW_EMAIL = "round17.new@example.com"
RADIOS = re.compile(r'<input type="radio" name="channel"')


async def _account(db: Database, account_id: uuid.UUID) -> Account:
    async with db.read() as s:
        found = await s.get(Account, account_id)
    assert found is not None
    return found


async def _details(client: httpx.AsyncClient, **data: str) -> httpx.Response:
    return await post_form(client, "/account/profile", "/account/profile/details", data)


def _fixed(html: str) -> str | None:
    """The channel the verify form carries without asking, if it does (the forms below it, a
    new code and the cancel button, carry theirs too)."""
    form = html.split('action="/verify"', 1)[1].split("</form>", 1)[0]
    found = re.search(r'<input type="hidden" name="channel" value="(\w+)">', form)
    return found.group(1) if found else None


async def test_a_new_number_goes_straight_to_its_sms_code(
    client: httpx.AsyncClient, db: Database, settings: Settings, deliver: Callable[[], Awaitable[int]]
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await _details(client, email=customer.email, phone=NEW_PHONE, current_password=PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1"
    verify = (await client.get(r.headers["location"])).text
    assert f"A code was sent to {NEW_PHONE}." in verify
    assert _fixed(verify) == "sms"
    assert not RADIOS.search(verify) and "Where did the code arrive?" not in verify
    await deliver()
    code = last_sms_code(NEW_PHONE)

    # A wrong code: refused beside the code, nothing verified, the form still fixed to SMS.
    wrong = "000000" if code != "000000" else "111111"
    r = await post_form(client, "/verify", "/verify", {"channel": "sms", "code": wrong})
    assert r.status_code in (400, 401, 422)
    assert _fixed(r.text) == "sms" and not RADIOS.search(r.text)
    assert re.search(r'id="e-code"', r.text)
    account = await _account(db, customer.account_id)
    assert account.phone is None and account.phone_pending == NEW_PHONE

    # The code as the form sends it (the hidden channel): verified.
    r = await post_form(client, "/verify", "/verify", {"channel": _fixed(verify) or "", "code": code})
    assert r.status_code == 303 and r.headers["location"] == "/account?verified=1"
    account = await _account(db, customer.account_id)
    assert account.phone == NEW_PHONE and account.phone_pending is None


async def test_a_new_address_goes_straight_to_its_email_code(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Callable[[], Awaitable[int]]
) -> None:
    customer = await new_customer(db, settings)
    # A verified number already: the new address is the only contact waiting.
    await db.run(lambda s: s.execute(
        update(Account).where(Account.id == customer.account_id).values(phone="+14155550170")
    ))
    sign_in(client, customer)
    r = await _details(client, email=NEW_EMAIL, phone="+14155550170", current_password=PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1"
    verify = (await client.get("/verify?sent=1")).text
    assert f"A code was sent to {NEW_EMAIL}." in verify
    assert _fixed(verify) == "email" and not RADIOS.search(verify)
    # The new code and the cancel button are for that address alone.
    assert verify.count('action="/verify/resend"') == 1
    assert verify.count('action="/account/profile/cancel"') == 1
    await deliver()
    r = await post_form(client, "/verify", "/verify",
                        {"channel": "email", "code": inbox.last_code(NEW_EMAIL)})
    assert r.status_code == 303 and r.headers["location"] == "/account?verified=1"
    account = await _account(db, customer.account_id)
    assert account.email == NEW_EMAIL and account.email_pending is None


async def test_two_contacts_waiting_still_ask_which(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await _details(client, email=NEW_EMAIL, phone=NEW_PHONE, current_password=PASSWORD)
    assert r.status_code == 303
    verify = (await client.get("/verify?sent=1")).text
    assert _fixed(verify) is None
    assert len(RADIOS.findall(verify)) == 2 and "Where did the code arrive?" in verify


async def test_signed_out_the_channel_is_asked(client: httpx.AsyncClient) -> None:
    verify = (await client.get("/verify?sent=1")).text
    assert _fixed(verify) is None and len(RADIOS.findall(verify)) == 2
