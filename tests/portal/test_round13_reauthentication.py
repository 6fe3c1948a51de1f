"""The portal's side of the thirteenth round's re-authentication, without JavaScript (plain
forms, on SQLite and PostgreSQL): closing the account with two-step sign-in with a passkey on
asks a recovery code (or, through passkeys.js, a passkey: the form carries `data-confirm` and a
hidden `credential`); removing a passkey asks the password (and the second factor); the second
sign-in page shown again after a wrong code carries a fresh passkey ceremony for this pending
sign-in, bound, used once and timed as the first."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.auth.models import Passkey
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD, Deliver, problem, signup
from tests.auth.test_passkey_second_step import account_id, confirmation, turn_on, turn_on_totp
from tests.auth.test_passkeys import Authenticator, count, events, portal_session, with_passkey
from tests.conftest import SmtpInbox
from tests.portal.helpers import csrf_of


def second_step_offer(text: str) -> dict[str, Any] | None:
    """The `#passkey-second-step` ceremony a login page carries, if any."""
    found = re.search(
        r'id="passkey-second-step"[^>]*data-ceremony="([^"]+)" data-public-key=\'([^\']+)\'', text
    )
    if found is None:
        return None
    return {
        "ceremony": html.unescape(found.group(1)),
        "public_key": json.loads(html.unescape(found.group(2))),
    }


async def status_of(db: Database, owner: Any) -> str:
    async with db.read() as s:
        return str((await s.execute(select(Account.status).where(Account.id == owner))).scalar_one())


# --- closing -------------------------------------------------------------------------------------


async def test_the_close_form_asks_a_recovery_code_or_a_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    owner = await account_id(db, customer)
    await portal_session(client, customer)
    codes = await turn_on(client, customer)
    page = await client.get("/account/security")
    form = re.search(r'<form id="passkey-close"[^>]*>', page.text)
    assert form is not None
    assert 'class="passkey-confirm"' in form.group(0)
    assert 'data-confirm="/api/v1/me/passkeys/confirm/options"' in form.group(0)
    assert "Recovery code (or leave empty and confirm with a passkey)" in page.text
    assert 'id="passkey-close-status"' in page.text
    csrf = csrf_of(page.text)
    url = "/account/security/close"

    # The password alone: the field is named, nothing counted or changed.
    r = await client.post(url, data={"csrf": csrf, "password": PASSWORD, "confirm": "yes"})
    assert r.status_code == 422
    assert 'id="e-close-code"' in r.text
    # A wrong recovery code; a malformed passkey answer.
    r = await client.post(
        url, data={"csrf": csrf, "password": PASSWORD, "code": "ZZZZ-ZZZZ", "confirm": "yes"}
    )
    assert r.status_code == 401 and 'id="e-close-code"' in r.text
    r = await client.post(
        url, data={"csrf": csrf, "password": PASSWORD, "credential": '{"id": 1}',
                   "confirm": "yes"},
    )
    assert r.status_code == 422 and 'id="e-close-credential"' in r.text
    # Another session's (the API's) confirm answer: not this session's challenge.
    other = await confirmation(client, customer, device)
    r = await client.post(
        url, data={"csrf": csrf, "password": PASSWORD, "credential": json.dumps(other),
                   "confirm": "yes"},
    )
    assert r.status_code == 401 and 'id="e-close-credential"' in r.text
    assert await status_of(db, owner) == "active"
    assert [e.details["reason"] for e in await events(db, "account_closed")] == [
        "invalid-second-factor", "invalid-second-factor"
    ]

    # A recovery code closes it (no JavaScript needed).
    r = await client.post(
        url, data={"csrf": csrf, "password": PASSWORD, "code": codes[0], "confirm": "yes"}
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/account/closed"
    assert await status_of(db, owner) == "closed"


async def test_the_close_form_takes_this_sessions_passkey_answer(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    """What passkeys.js does on the page: the confirm options asked with the page's session and
    CSRF token, the answer in the form's `credential` field."""
    customer, device = await with_passkey(client, inbox, deliver)
    owner = await account_id(db, customer)
    await portal_session(client, customer)
    await turn_on(client, customer)
    page = await client.get("/account/security")
    csrf = csrf_of(page.text)
    r = await client.post("/api/v1/me/passkeys/confirm/options", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    answer = device.get(r.json()["public_key"])
    r = await client.post("/account/security/close", data={
        "csrf": csrf, "password": PASSWORD, "credential": json.dumps(answer), "confirm": "yes"})
    assert r.status_code == 303, r.text
    assert await status_of(db, owner) == "closed"


# --- removing a passkey --------------------------------------------------------------------------


async def test_the_remove_form_asks_the_password(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    [mine] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    await portal_session(client, customer)
    page = await client.get("/account/security")
    pid = mine["id"]
    assert f'<form id="passkey-remove-{pid}"' in page.text
    assert f'id="f-rm-password-{pid}"' in page.text
    assert f'id="f-rm-code-{pid}"' not in page.text  # no two-step: the password alone
    url = f"/account/security/passkeys/{pid}/remove"
    r = await client.post(url, data={"csrf": csrf_of(page.text)})
    assert r.status_code == 422
    assert f'id="e-rm-password-{pid}"' in r.text and "<details class=\"remove\" open>" in r.text
    r = await client.post(url, data={"csrf": csrf_of(page.text), "password": "wrong-one-333"})
    assert r.status_code == 401
    assert f'id="e-rm-password-{pid}"' in r.text
    assert await count(db, Passkey) == 1
    assert [e.success for e in await events(db, "passkey_removed")] == [False]
    r = await client.post(url, data={"csrf": csrf_of(page.text), "password": PASSWORD})
    assert r.status_code == 303
    assert r.headers["location"] == "/account/security?done=passkey_removed"
    assert await count(db, Passkey) == 0


async def test_the_remove_form_asks_the_apps_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    totp = await turn_on_totp(client, customer)
    clock.advance(seconds=30)
    [mine] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    pid = mine["id"]
    # The portal's sign-in asks the code too.
    shown = await client.get("/login")
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "password": PASSWORD})
    sealed = re.search(r'name="sealed" value="([^"]+)"', r.text)
    assert sealed is not None
    r = await client.post("/login", data={
        "csrf": csrf_of(r.text), "login": customer.username, "sealed": sealed.group(1),
        "second_factor": totp.at(utcnow())})
    assert r.status_code == 303, r.text
    clock.advance(seconds=30)
    page = await client.get("/account/security")
    assert f'id="f-rm-code-{pid}"' in page.text
    url = f"/account/security/passkeys/{pid}/remove"
    r = await client.post(url, data={"csrf": csrf_of(page.text), "password": PASSWORD})
    assert r.status_code == 401 and f'id="e-rm-code-{pid}"' in r.text
    assert await count(db, Passkey) == 1
    r = await client.post(url, data={
        "csrf": csrf_of(page.text), "password": PASSWORD, "code": totp.at(utcnow())})
    assert r.status_code == 303, r.text
    assert await count(db, Passkey) == 0


async def test_the_remove_form_with_two_step_by_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await portal_session(client, customer)
    codes = await turn_on(client, customer)
    r = await client.post(
        "/api/v1/me/passkeys/options",
        json={"password": PASSWORD, "credential": await confirmation(client, customer, device)},
        headers=customer.auth,
    )
    second = Authenticator()
    r = await client.post(
        "/api/v1/me/passkeys",
        json={"credential": second.create(r.json()["public_key"]), "name": "second"},
        headers=customer.auth,
    )
    assert r.status_code == 201, r.text
    first_id, second_id = (
        p["id"] for p in (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    )
    page = await client.get("/account/security")
    form = re.search(rf'<form id="passkey-remove-{second_id}"[^>]*>', page.text)
    assert form is not None and 'data-confirm="/api/v1/me/passkeys/confirm/options"' in form.group(0)
    csrf = csrf_of(page.text)
    r = await client.post(f"/account/security/passkeys/{second_id}/remove",
                          data={"csrf": csrf, "password": PASSWORD})
    assert r.status_code == 401 and f'id="e-rm-code-{second_id}"' in r.text
    # The passkey being removed answers for itself (what passkeys.js sends).
    ask = await client.post("/api/v1/me/passkeys/confirm/options", headers={"X-CSRF-Token": csrf})
    r = await client.post(f"/account/security/passkeys/{second_id}/remove", data={
        "csrf": csrf, "password": PASSWORD,
        "credential": json.dumps(second.get(ask.json()["public_key"]))})
    assert r.status_code == 303, r.text
    # The last one stays while two-step asks for it, whatever the password.
    r = await client.post(f"/account/security/passkeys/{first_id}/remove",
                          data={"csrf": csrf, "password": "wrong-one-333", "code": codes[0]})
    assert r.status_code == 409 and "This is your last passkey" in r.text
    assert await count(db, Passkey) == 1


# --- the second sign-in page ------------------------------------------------------------------


async def test_after_a_wrong_code_the_second_page_offers_the_passkey_again(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on(client, customer)
    shown = await client.get("/login")
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "password": PASSWORD})
    assert r.status_code == 200
    first = second_step_offer(r.text)
    assert first is not None

    async def wrong_code(page: str) -> httpx.Response:
        found = re.search(r'name="sealed" value="([^"]+)"', page)
        assert found is not None
        return await client.post("/login", data={
            "csrf": csrf_of(page), "login": customer.username, "sealed": found.group(1),
            "methods": "passkey,recovery_code", "second_factor": "NOPE-NOPE"})

    r = await wrong_code(r.text)
    assert r.status_code == 401
    assert "Recovery code" in r.text and 'id="e-second_factor"' in r.text
    again = second_step_offer(r.text)
    assert again is not None and again["ceremony"] != first["ceremony"]
    assert again["public_key"]["challenge"] != first["public_key"]["challenge"]
    # This account's passkeys only, as the first.
    assert again["public_key"]["allowCredentials"] == first["public_key"]["allowCredentials"]
    assert "/static/portal/passkeys.js" in r.text

    # The fresh ceremony is the pending sign-in's: another client's handle is refused, and the
    # answer is spent with it.
    credential = device.get(again["public_key"])
    r2 = await client.post("/api/v1/auth/login/passkey",
                           json={"ceremony": "not-the-handle", "credential": credential})
    assert problem(r2)["type"].endswith("/passkey-challenge-invalid")
    r3 = await wrong_code(r.text)
    fresh = second_step_offer(r3.text)
    assert fresh is not None
    ok = await client.post("/api/v1/auth/login/passkey", json={
        "ceremony": fresh["ceremony"], "credential": device.get(fresh["public_key"])})
    assert ok.status_code == 200, ok.text
    replay = await client.post("/api/v1/auth/login/passkey", json={
        "ceremony": fresh["ceremony"], "credential": device.get(fresh["public_key"])})
    assert problem(replay)["type"].endswith("/passkey-challenge-invalid")

    # Timed as the first: five minutes.
    r4 = await wrong_code(r3.text)
    late = second_step_offer(r4.text)
    assert late is not None
    clock.freeze(utcnow() + timedelta(minutes=5, seconds=1))
    r5 = await client.post("/api/v1/auth/login/passkey", json={
        "ceremony": late["ceremony"], "credential": device.get(late["public_key"])})
    assert problem(r5)["type"].endswith("/passkey-challenge-invalid")


async def test_no_ceremony_without_passkeys_nor_after_a_wrong_password(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    await turn_on_totp(client, customer)
    shown = await client.get("/login")
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "password": PASSWORD})
    found = re.search(r'name="sealed" value="([^"]+)"', r.text)
    assert found is not None
    r = await client.post("/login", data={
        "csrf": csrf_of(r.text), "login": customer.username, "sealed": found.group(1),
        "second_factor": "000000"})
    assert r.status_code == 401
    assert 'id="passkey-second-step"' not in r.text  # the account has no passkey
    # The API's wrong-code answer carries no ceremony (the portal alone asks for one).
    api = await client.post("/api/v1/auth/login", json={
        "login": customer.username, "password": PASSWORD, "second_factor": "000000"})
    assert problem(api)["type"].endswith("/invalid-second-factor")
    assert "passkey" not in problem(api)
    # A wrong password: the first page again, no second step at all.
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "password": "not-it-at-all"})
    assert r.status_code == 401 and 'id="passkey-second-step"' not in r.text
