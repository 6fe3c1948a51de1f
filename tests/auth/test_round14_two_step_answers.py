"""The customer side's fourteenth round, on SQLite and PostgreSQL with real signatures (the
software authenticator of `test_passkeys`):

- the sign-in's answer (`account.two_step`, `account.two_step_method`) speaks of both second
  steps, as `GET /me` does — after the password and the app's code, after the password and a
  passkey or a recovery code, after a passkey alone — and so does `POST /auth/verify`'s;
- removing the last passkey while two-step sign-in with a passkey is on is refused before any
  re-authentication is asked or spent: the portal offers no removal form for it (none that
  would ask a passkey only to be refused), and a removal posted anyway is refused first,
  whatever else it carries (no password nor passkey answer tried or counted)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pyotp
from sqlalchemy import select

from simcharge.auth.models import Passkey
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD, Deliver, login, problem, signup
from tests.auth.test_passkey_second_step import (
    account_row,
    answer,
    confirmation,
    pending,
    turn_on,
    turn_on_totp,
)
from tests.auth.test_passkeys import count, events, portal_session, sign_in, with_passkey
from tests.conftest import SmtpInbox, last_sms_code
from tests.portal.helpers import csrf_of


def said(body: dict[str, Any]) -> tuple[bool, str | None]:
    return body["two_step"], body["two_step_method"]


async def me(client: httpx.AsyncClient, token: str) -> tuple[bool, str | None]:
    r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return said(r.json())


async def test_the_sign_in_answer_says_what_me_says(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    r = await login(client, customer.username)
    assert r.status_code == 200 and said(r.json()["account"]) == (False, None)
    assert await me(client, r.json()["token"]) == (False, None)

    codes = await turn_on(client, customer)
    # The password and a passkey; the password and a recovery code; a passkey alone.
    r = await answer(client, (await pending(client, customer))["passkey"], device)
    assert r.status_code == 200, r.text
    assert said(r.json()["account"]) == (True, "passkey")
    assert await me(client, r.json()["token"]) == said(r.json()["account"])
    r = await login(client, customer.username, second_factor=codes[0])
    assert r.status_code == 200 and said(r.json()["account"]) == (True, "passkey")
    r = await sign_in(client, device)
    assert r.status_code == 200 and said(r.json()["account"]) == (True, "passkey")
    assert await me(client, r.json()["token"]) == (True, "passkey")
    # Cookie mode answers the same.
    offer = (await pending(client, customer))["passkey"]
    r = await client.post("/api/v1/auth/login/passkey", json={
        "ceremony": offer["ceremony"], "credential": device.get(offer["public_key"]),
        "mode": "cookie"})
    assert r.status_code == 200 and said(r.json()["account"]) == (True, "passkey")
    client.cookies.clear()


async def test_the_apps_sign_in_answer_says_app(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    totp: pyotp.TOTP = await turn_on_totp(client, customer)
    r = await login(client, customer.username)
    assert r.status_code == 401  # the code is asked; no account in a refusal
    assert "account" not in problem(r)
    clock.advance(seconds=30)  # the code that turned the app on is used
    r = await login(client, customer.username, second_factor=totp.at(utcnow()))
    assert r.status_code == 200, r.text
    assert said(r.json()["account"]) == (True, "app")
    assert await me(client, r.json()["token"]) == (True, "app")


async def test_the_verify_answer_says_it_too(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on(client, customer)
    phone = "+14155550177"
    # A new contact with two-step on asks both factors (round 15): the passkey confirms it.
    r = await client.patch("/api/v1/me", json={
        "phone": phone, "current_password": PASSWORD,
        "credential": await confirmation(client, customer, device)}, headers=customer.auth)
    assert r.status_code == 200, r.text
    await deliver()
    r = await client.post("/api/v1/auth/verify", json={
        "channel": "sms", "code": last_sms_code(phone)}, headers=customer.auth)
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == phone and said(r.json()) == (True, "passkey")
    assert device


# --- the last passkey of two-step ----------------------------------------------------------


async def test_the_portal_offers_no_removal_for_the_last_passkey_of_two_step(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await portal_session(client, customer)
    await turn_on(client, customer)
    [only] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    page = await client.get("/account/security")
    assert f'id="passkey-remove-{only["id"]}"' not in page.text
    assert f'action="/account/security/passkeys/{only["id"]}/remove"' not in page.text
    kept = re.search(rf'<p class="small muted" id="passkey-last-{only["id"]}">([^<]+)</p>',
                     page.text)
    assert kept is not None and kept.group(1).startswith("This is your last passkey")
    # Posted anyway, with a passkey's answer and a wrong password: refused first — the answer
    # is not used up (it still confirms something else), the password neither tried nor
    # counted, nothing logged.
    csrf = csrf_of(page.text)
    ask = await client.post("/api/v1/me/passkeys/confirm/options", headers={"X-CSRF-Token": csrf})
    credential = device.get(ask.json()["public_key"])
    for password in ("wrong-password-99", ""):
        r = await client.post(f"/account/security/passkeys/{only['id']}/remove", data={
            "csrf": csrf, "password": password, "credential": json.dumps(credential)})
        assert r.status_code == 409 and "This is your last passkey" in r.text
    assert await count(db, Passkey) == 1
    assert await events(db, "passkey_removed") == []
    row = await account_row(db, settings, customer)
    assert row is None or row.failures == 0
    r = await client.post("/api/v1/me/passkeys/two-step/disable",
                          json={"password": PASSWORD, "credential": credential},
                          headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    # Two-step off: the removal form is back.
    page = await client.get("/account/security")
    assert f'id="passkey-remove-{only["id"]}"' in page.text
    assert f'id="passkey-last-{only["id"]}"' not in page.text


async def test_another_accounts_passkey_is_not_found_before_anything_is_asked(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    _, stranger = await with_passkey(client, inbox, deliver)
    customer, _ = await with_passkey(client, inbox, deliver)
    await portal_session(client, customer)
    page = await client.get("/account/security")
    [theirs] = [p for p in (await client.get(
        "/api/v1/me/passkeys", headers=customer.auth)).json()]
    async with db.read() as s:
        ids = (await s.execute(select(Passkey.id))).scalars().all()
    other = next(str(i) for i in ids if str(i) != theirs["id"])
    r = await client.post(f"/account/security/passkeys/{other}/remove",
                          data={"csrf": csrf_of(page.text), "password": ""})
    assert r.status_code == 404
    assert await count(db, Passkey) == 2 and stranger
