"""Round 15's security review, the portal's forms (SQLite and PostgreSQL):

- "Your details" (`POST /account/profile/details`): with two-step on, a new e-mail address or
  phone number asks the second factor as the close-account form does — the app's code field;
  with two-step sign-in with a passkey, one of the passkeys (`passkeys.js`, its answer in
  `credential`) or a recovery code. Each refusal beside its field, nothing changed.
- A display name with control or format characters is refused beside its field.
- The transfer's amount is read strictly (`…/transfer/review`): ASCII digits and the page's
  separators only — `1_0`, `1E+1`, Arabic-Indic digits, a sign are not understood."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pyotp
import pytest
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.auth.models import SecurityEvent
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD as API_PASSWORD
from tests.auth.helpers import Deliver
from tests.auth.test_passkey_second_step import portal_session_two_step, turn_on
from tests.auth.test_passkeys import with_passkey
from tests.conftest import SmtpInbox
from tests.portal.helpers import PASSWORD, csrf_of, new_customer, post_form, sign_in, two_step_on

ATTACKER = "attacker-x@evil.example"
NOT_UNDERSTOOD = "Enter the amount as a number, such as 5 or 5.50."


def _field_error(html: str, name: str) -> str:
    found = re.search(rf'<p class="error" id="e-{name}">([^<]*)</p>', html)
    assert found, f"no error beside {name}"
    return found.group(1)


async def _account(db: Database, account_id: uuid.UUID) -> Account:
    async with db.read() as s:
        found = await s.get(Account, account_id)
    assert found is not None
    return found


async def _details(client: httpx.AsyncClient, **data: str) -> httpx.Response:
    return await post_form(client, "/account/profile", "/account/profile/details", data)


async def test_with_the_app_on_the_details_form_asks_its_code_for_a_contact(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    page = (await client.get("/account/profile")).text
    assert 'id="f-code"' not in page  # two-step off: the password alone, as before
    secret, recovery, token = await two_step_on(client)
    client.cookies.set("sc_session", token)
    clock.advance(seconds=30)  # the confirming code's step is spent
    page = (await client.get("/account/profile")).text
    assert 'id="f-code" name="code"' in page and 'autocomplete="one-time-code"' in page
    assert "Code from your authenticator app, or a recovery code" in page
    assert "passkeys.js" not in page and "passkey-confirm" not in page
    # The password alone: the code is required, beside its field; nothing changed or counted.
    r = await _details(client, display_name="", email=ATTACKER, current_password=PASSWORD)
    assert r.status_code == 422, r.text
    assert _field_error(r.text, "code") == "This field is required."
    assert f'value="{ATTACKER}"' in r.text  # kept as typed
    # A wrong code: as closing the account says it.
    r = await _details(client, display_name="", email=ATTACKER, current_password=PASSWORD,
                       code="000000")
    assert r.status_code == 401
    assert _field_error(r.text, "code") == "The authenticator or recovery code is wrong."
    account = await _account(db, customer.account_id)
    assert account.email == customer.email and account.email_pending is None
    async with db.read() as s:
        logged = (await s.execute(select(SecurityEvent.success).where(
            SecurityEvent.account_id == customer.account_id,
            SecurityEvent.kind == "contact_change_requested"))).scalars().all()
    assert list(logged) == [False]
    # The display name alone needs neither.
    r = await _details(client, display_name="Maria", email=customer.email)
    assert r.status_code == 303 and r.headers["location"] == "/account/profile?saved=details"
    # Both: the new address is pending, on to its code.
    r = await _details(client, display_name="Maria", email=f"new-{customer.email}",
                       current_password=PASSWORD, code=pyotp.TOTP(secret).at(utcnow()))
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1", r.text
    assert (await _account(db, customer.account_id)).email_pending == f"new-{customer.email}"
    # A recovery code does too.
    r = await _details(client, display_name="Maria", email=f"new-{customer.email}",
                       phone="+14155550191", current_password=PASSWORD, code=recovery[0])
    assert r.status_code == 303, r.text
    assert (await _account(db, customer.account_id)).phone_pending == "+14155550191"


async def test_with_two_step_sign_in_with_a_passkey_the_form_asks_a_passkey(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    codes = await turn_on(client, customer)
    await portal_session_two_step(client, customer, device)
    page = (await client.get("/account/profile")).text
    assert 'id="profile-details" method="post" action="/account/profile/details" novalidate ' \
        'class="passkey-confirm" data-confirm="/api/v1/me/passkeys/confirm/options"' in page
    assert '<input type="hidden" name="credential" value="">' in page
    assert 'id="profile-details-status"' in page and "/static/portal/passkeys.js" in page
    assert "Recovery code (or leave empty and confirm with a passkey)" in page
    async with db.read() as s:
        account_id = (await s.execute(select(Account.id).where(
            Account.username == customer.username))).scalar_one()
    email = customer.email or ""
    # No passkey, no recovery code: the code's field.
    r = await _details(client, email=ATTACKER, current_password=API_PASSWORD)
    assert r.status_code == 422 and _field_error(r.text, "code") == "This field is required."
    # No passkey's answer (not JSON, or nested past the parser): the credential's error.
    for credential in ("{not json", "[" * 100_000):
        r = await _details(client, email=ATTACKER, current_password=API_PASSWORD,
                           credential=credential)
        assert r.status_code == 422, r.text[:300]
        assert "answer could not be checked" in _field_error(r.text, "credential")
    assert (await _account(db, account_id)).email_pending is None
    # One of the passkeys, as passkeys.js sends it.
    page = (await client.get("/account/profile")).text
    ask = await client.post("/api/v1/me/passkeys/confirm/options",
                            headers={"x-csrf-token": csrf_of(page)})
    assert ask.status_code == 200, ask.text
    answer = json.dumps(device.get(ask.json()["public_key"]))
    r = await client.post("/account/profile/details", data={
        "csrf": csrf_of(page), "email": f"new-{email}", "current_password": API_PASSWORD,
        "credential": answer})
    assert r.status_code == 303 and r.headers["location"] == "/verify?sent=1", r.text
    assert (await _account(db, account_id)).email_pending == f"new-{email}"
    # The same answer again: its challenge is spent.
    r = await client.post("/account/profile/details", data={
        "csrf": csrf_of(page), "email": ATTACKER, "current_password": API_PASSWORD,
        "credential": answer})
    assert r.status_code == 401
    assert _field_error(r.text, "credential") == "The authenticator or recovery code is wrong."
    # A recovery code instead.
    r = await _details(client, email=f"new2-{email}", current_password=API_PASSWORD, code=codes[0])
    assert r.status_code == 303, r.text
    assert (await _account(db, account_id)).email_pending == f"new2-{email}"


@pytest.mark.parametrize("name", ["\u202eJuan\u0007\u001b[31m<b>", "Juan\u200b", "a\u2066b"])
async def test_the_details_form_refuses_control_characters_in_the_name(
    client: httpx.AsyncClient, db: Database, settings: Settings, name: str
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    r = await _details(client, display_name=name, email=customer.email)
    assert r.status_code == 422
    assert _field_error(r.text, "display_name") == (
        "A name cannot contain control or invisible formatting characters."
    )
    assert 'aria-invalid="true"' in r.text
    assert (await _account(db, customer.account_id)).display_name is None
    r = await _details(client, display_name="می\u200cخواهم", email=customer.email)
    assert r.status_code == 303
    assert (await _account(db, customer.account_id)).display_name == "می\u200cخواهم"


# --- transfer amounts -----------------------------------------------------------------------


async def _review(
    client: httpx.AsyncClient, line_id: uuid.UUID, to: str, what: str, amount: str,
    **extra: str,
) -> httpx.Response:
    return await client.get(f"/account/lines/{line_id}/transfer/review",
                            params={"to": to, "what": what, "amount": amount, **extra})


# "-5" is understood, and refused for what it is: "The amount must be more than zero."
# (tests/portal/test_round13_pages.py).
LOOSE = ["1_0", "1E+1", "1e1", "١٠", "۱۰", "１０", "+5", "5.", ".5", "5..0", "1.0.0",
         "1,0000", "١٠.٥", "0x10", " 5 5", "5\u00a0000", "--5", "-+5"]


@pytest.mark.parametrize("what", ["monetary", "data", "voice"])
async def test_loosely_written_amounts_are_not_understood(
    client: httpx.AsyncClient, db: Database, settings: Settings, what: str
) -> None:
    me = await new_customer(db, settings)
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    for amount in LOOSE:
        r = await _review(client, me.line.id, friend.line.msisdn, what, amount, data_unit="MB")
        assert r.status_code == 422, (amount, r.text[:300])
        assert NOT_UNDERSTOOD in r.text and 'id="e-amount"' in r.text, amount
        assert 'data-testid="amount">' not in r.text, amount
    # Written plainly, as before: understood (shown, or refused for a limit, not as a number).
    for amount in ("10", "2.5" if what == "monetary" else "1,000", "1,000.50"[:5]):
        r = await _review(client, me.line.id, friend.line.msisdn, what, amount, data_unit="MB")
        assert NOT_UNDERSTOOD not in r.text, (amount, r.text[:400])


async def test_a_spanish_reader_is_read_as_strictly(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    me = await new_customer(db, settings, language="es")
    friend = await new_customer(db, settings, with_units=False)
    sign_in(client, me)
    r = await _review(client, me.line.id, friend.line.msisdn, "monetary", "5,50")
    assert r.status_code == 200 and 'data-testid="amount">5,50\xa0US$<' in r.text
    for amount in ("5_50", "5,5,0", "٥,٥٠", "5E0"):
        r = await _review(client, me.line.id, friend.line.msisdn, "monetary", amount)
        assert r.status_code == 422, amount
        assert 'id="e-amount"' in r.text and 'data-testid="amount">' not in r.text
