"""Round 15's security review, the API side of the profile (SQLite and PostgreSQL):

- A change of e-mail address or phone number (`PATCH /api/v1/me`) asks, with two-step on, the
  second factor exactly as closing the account does (`auth.confirm_both_factors`): the app's
  code or a recovery code; with two-step sign-in with a passkey, one of the passkeys' answer to
  the confirm options or a recovery code. Missing: `422` field `code` before anything is
  counted; wrong: `401 invalid-second-factor`, logged and counted; malformed passkey answer:
  `422 passkey-invalid`. Nothing changes until both are right. The display name, the language
  and the time zone still need neither.
- A display name with a control or format character (but the joiners) is refused, `422` naming
  `display_name`, at a profile change and at registration."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.auth.models import SecurityEvent
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD, Customer, Deliver, new_identity, problem, signup
from tests.auth.test_passkeys import b64, with_passkey
from tests.conftest import SmtpInbox

ATTACKER = "attacker-x@evil.example"
CONTROLS = "\u202eJuan\u0007\u001b[31m\n<b>"


async def _with_app(client: httpx.AsyncClient, customer: Customer) -> tuple[str, list[str]]:
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    r = await client.post(
        "/api/v1/me/totp/confirm", json={"code": pyotp.TOTP(secret).now()},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    customer.token = r.json()["token"]
    clock.advance(seconds=30)  # the confirming code's step is spent
    return secret, list(r.json()["recovery_codes"])


async def _account(db: Database, customer: Customer) -> Account:
    async with db.read() as s:
        found = (
            await s.execute(select(Account).where(Account.username == customer.username))
        ).scalar_one()
    return found


async def _attempts(db: Database, account_id: uuid.UUID) -> list[bool]:
    async with db.read() as s:
        rows = await s.execute(
            select(SecurityEvent.success)
            .where(SecurityEvent.account_id == account_id,
                   SecurityEvent.kind == "contact_change_requested")
            .order_by(SecurityEvent.created_at)
        )
        return [bool(x) for x in rows.scalars().all()]


async def _patch(client: httpx.AsyncClient, customer: Customer, **body: Any) -> httpx.Response:
    return await client.patch("/api/v1/me", json=body, headers=customer.auth)


async def test_with_the_app_on_a_new_address_asks_its_code_too(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """The review's repro: the password alone moved the address of an account with the app."""
    maria = await signup(client, inbox, deliver)
    secret, recovery = await _with_app(client, maria)
    account = await _account(db, maria)
    # The password alone: the code is required, before anything is counted or logged.
    r = await _patch(client, maria, email=ATTACKER, current_password=PASSWORD)
    assert r.status_code == 422, r.text
    assert problem(r)["type"].endswith("/validation-error") and problem(r)["field"] == "code"
    r = await _patch(client, maria, phone="+14155550177", current_password=PASSWORD, code="  ")
    assert r.status_code == 422 and problem(r)["field"] == "code"
    assert await _attempts(db, account.id) == []
    # A wrong code: refused as closing the account refuses it, logged and counted.
    r = await _patch(client, maria, email=ATTACKER, current_password=PASSWORD, code="000000")
    assert r.status_code == 401, r.text
    assert problem(r)["type"].endswith("/invalid-second-factor") and problem(r)["field"] == "code"
    # A right code with a wrong password: the password's field, as before.
    r = await _patch(client, maria, email=ATTACKER, current_password="not-the-password-9",
                     code=pyotp.TOTP(secret).at(utcnow()))
    assert r.status_code == 401 and problem(r)["field"] == "current_password"
    assert await _attempts(db, account.id) == [False, False]
    after = await _account(db, maria)
    assert after.email == maria.email and after.email_pending is None
    assert after.phone == maria.phone and after.phone_pending is None
    # The display name, language and time zone ask neither the password nor the code.
    r = await _patch(client, maria, display_name="Maria", language="es", time_zone="Asia/Manila")
    assert r.status_code == 200, r.text
    # Both factors: the change is made (pending until its code is entered).
    clock.advance(seconds=30)
    r = await _patch(client, maria, email=f"new-{maria.email}", current_password=PASSWORD,
                     code=pyotp.TOTP(secret).at(utcnow()))
    assert r.status_code == 200, r.text
    assert r.json()["email_pending"] == f"new-{maria.email}"
    # A recovery code does too, once.
    r = await _patch(client, maria, phone="+14155550178", current_password=PASSWORD,
                     code=recovery[0])
    assert r.status_code == 200, r.text
    assert r.json()["phone_pending"] == "+14155550178"
    r = await _patch(client, maria, phone="+14155550179", current_password=PASSWORD,
                     code=recovery[0])
    assert r.status_code == 401 and problem(r)["field"] == "code"
    assert (await _account(db, maria)).phone_pending == "+14155550178"
    assert await _attempts(db, account.id) == [False, False, True, True, False]


async def test_wrong_codes_at_a_contact_change_lock_out_as_closing_would(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    secret, _ = await _with_app(client, customer)
    refused = []
    for _ in range(12):
        r = await _patch(client, customer, email=ATTACKER, current_password=PASSWORD,
                         code="000000")
        refused.append(problem(r)["type"].rsplit("/", 1)[-1])
        if r.status_code != 401:
            break
    # Counted with the sign-in failures: the account's lock-out comes, as for any re-entry.
    assert refused[0] == "invalid-second-factor"
    assert refused[-1] != "invalid-second-factor", refused
    r = await _patch(client, customer, email=ATTACKER, current_password=PASSWORD,
                     code=pyotp.TOTP(secret).at(utcnow()))
    assert r.status_code != 200
    assert (await _account(db, customer)).email_pending is None


async def test_with_two_step_sign_in_with_a_passkey_a_new_contact_asks_a_passkey(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    recovery = r.json()["recovery_codes"]
    account = await _account(db, customer)
    r = await _patch(client, customer, email=ATTACKER, current_password=PASSWORD)
    assert r.status_code == 422 and problem(r)["field"] == "code"
    # Malformed: 422 passkey-invalid, nothing counted.
    r = await _patch(client, customer, email=ATTACKER, current_password=PASSWORD,
                     credential={"id": "x"})
    assert r.status_code == 422 and problem(r)["type"].endswith("/passkey-invalid")
    assert await _attempts(db, account.id) == []
    # Another session's challenge (none asked here): a wrong second factor, on `credential`.
    options = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    assert options.status_code == 200, options.text
    answer = device.get(options.json()["public_key"])
    forged = {**answer, "id": b64(b"other"), "rawId": b64(b"other")}
    r = await _patch(client, customer, email=ATTACKER, current_password=PASSWORD,
                     credential=forged)
    assert r.status_code == 401, r.text
    assert problem(r)["type"].endswith("/invalid-second-factor")
    assert problem(r)["field"] == "credential"
    assert (await _account(db, customer)).email_pending is None
    # The challenge was spent by that answer: the real one is refused now too.
    r = await _patch(client, customer, email=ATTACKER, current_password=PASSWORD,
                     credential=answer)
    assert r.status_code == 401 and problem(r)["field"] == "credential"
    # One of its passkeys, on a fresh challenge: done.
    options = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    r = await _patch(client, customer, email=f"new-{customer.email}", current_password=PASSWORD,
                     credential=device.get(options.json()["public_key"]))
    assert r.status_code == 200, r.text
    assert r.json()["email_pending"] == f"new-{customer.email}"
    # Or a recovery code.
    r = await _patch(client, customer, phone="+14155550181", current_password=PASSWORD,
                     code=recovery[0])
    assert r.status_code == 200, r.text
    assert await _attempts(db, account.id) == [False, False, True, True]


async def test_without_two_step_the_password_alone_still_does(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await _patch(client, customer, email=f"new-{customer.email}", current_password=PASSWORD)
    assert r.status_code == 200, r.text
    r = await _patch(client, customer, email=ATTACKER, current_password="not-the-password-9")
    assert r.status_code == 401 and problem(r)["field"] == "current_password"
    r = await _patch(client, customer, email=ATTACKER)
    assert r.status_code == 422 and problem(r)["field"] == "current_password"


# --- display names --------------------------------------------------------------------------


REFUSED_NAMES = [CONTROLS, "Juan\u202e", "tab\there", "zero\u200bwidth",
                 "bom\ufeff", "Juan\n", "\u2066iso\u2069", "soft\u00adhyphen", "\u0085next",
                 "line\u2028sep", "para\u2029sep"]


@pytest.mark.parametrize("name", REFUSED_NAMES)
async def test_a_display_name_with_control_or_format_characters_is_refused(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver, name: str
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await _patch(client, customer, display_name=name, language="es")
    assert r.status_code == 422, r.text
    body = problem(r)
    assert body["type"].endswith("/validation-error")
    assert body["field"] == "display_name"
    assert body["detail"] == (
        "A name cannot contain control or invisible formatting characters."
    )
    account = await _account(db, customer)
    assert account.display_name is None and account.language == "en"  # nothing changed


@pytest.mark.parametrize("name", ["María José", "林小明", "می\u200cخواهم", "क्\u200dष", "O'Brien-Smith"])
async def test_names_of_every_script_with_their_joiners_are_taken(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, name: str
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await _patch(client, customer, display_name=name)
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == name


async def test_registration_refuses_such_a_name_and_creates_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    username, email, _ = new_identity(with_phone=False)
    r = await client.post("/api/v1/auth/register", json={
        "username": username, "password": PASSWORD, "email": email, "display_name": CONTROLS})
    assert r.status_code == 422, r.text
    assert problem(r)["field"] == "display_name"
    assert problem(r)["detail"] == (
        "A name cannot contain control or invisible formatting characters."
    )
    async with db.read() as s:
        assert (await s.execute(select(Account).where(Account.username == username))).first() \
            is None
    r = await client.post("/api/v1/auth/register", json={
        "username": username, "password": PASSWORD, "email": email,
        "display_name": "می\u200cخواهم"})
    assert r.status_code == 202, r.text
