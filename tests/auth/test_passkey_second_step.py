"""A passkey as the second step after the password, on SQLite and PostgreSQL, with real
signatures (the software authenticator of `test_passkeys`): offered with the
`second-factor-required` answer of an account with TOTP or with two-step sign-in with a passkey,
for this account's passkeys only, bound to this pending sign-in, used once; another account's
passkey refused as a wrong code and counted with wrong codes up to the lock-out; a counter going
back refused and logged. Turning two-step sign-in with a passkey on and off (the password again,
recovery codes, the holder told), and the last passkey it needs kept."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import httpx
import pyotp
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.auth import throttle
from simcharge.auth.models import LoginThrottle, PasskeySecondFactor, RecoveryCode
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD, Customer, Deliver, login, problem, signup
from tests.auth.test_passkeys import (
    Authenticator,
    b64,
    events,
    portal_session,
    with_passkey,
)
from tests.conftest import SmtpInbox
from tests.portal.helpers import csrf_of


async def turn_on_totp(client: httpx.AsyncClient, customer: Customer) -> pyotp.TOTP:
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text
    totp = pyotp.TOTP(r.json()["secret"])
    r = await client.post(
        "/api/v1/me/totp/confirm", json={"code": totp.now()}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    customer.token = r.json()["token"]
    return totp


async def turn_on(client: httpx.AsyncClient, customer: Customer) -> list[str]:
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    codes: list[str] = r.json()["recovery_codes"]
    return codes


async def confirmation(
    client: httpx.AsyncClient, customer: Customer, device: Authenticator
) -> dict[str, Any]:
    """One of the holder's passkeys confirming a change: its answer to the confirm options."""
    r = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    assert r.status_code == 200, r.text
    return device.get(r.json()["public_key"])


async def pending(client: httpx.AsyncClient, customer: Customer) -> dict[str, Any]:
    """The second step due after the password: the problem's body."""
    r = await login(client, customer.username)
    assert r.status_code == 401, r.text
    body = problem(r)
    assert body["type"].endswith("/second-factor-required")
    return body


async def answer(
    client: httpx.AsyncClient, offer: dict[str, Any], device: Authenticator, **get: Any
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login/passkey",
        json={"ceremony": offer["ceremony"], "credential": device.get(offer["public_key"], **get)},
    )


async def account_id(db: Database, customer: Customer) -> Any:
    async with db.read() as s:
        return (
            await s.execute(select(Account.id).where(Account.username == customer.username))
        ).scalar_one()


async def account_row(
    db: Database, settings: Settings, customer: Customer
) -> LoginThrottle | None:
    key = throttle.account_key(settings.secret_key, await account_id(db, customer))
    async with db.read() as s:
        return (
            await s.execute(select(LoginThrottle).where(LoginThrottle.key_hash == key))
        ).scalar_one_or_none()


# --- the second step with TOTP on -------------------------------------------------------------


async def test_with_totp_on_a_passkey_may_replace_the_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, customer)
    body = await pending(client, customer)
    assert body["methods"] == ["totp", "passkey", "recovery_code"]
    assert "passkeys" in body["detail"]
    offer = body["passkey"]
    # This account's passkeys only, with user verification.
    assert [c["id"] for c in offer["public_key"]["allowCredentials"]] == [
        b64(device.credential_id)
    ]
    assert offer["public_key"]["userVerification"] == "required"
    r = await answer(client, offer, device)
    assert r.status_code == 200, r.text
    token = {"Authorization": f"Bearer {r.json()['token']}"}
    sessions = (await client.get("/api/v1/me/sessions", headers=token)).json()
    assert [s["two_step"] for s in sessions if s["current"]] == [True]
    logins = [e for e in await events(db, "login") if e.success]
    assert logins[-1].details["method"] == "password+passkey"
    assert logins[-1].details["mfa"] is True
    # The code still works as before; a wrong one is still refused.
    r = await login(client, customer.username, second_factor="000000")
    assert problem(r)["type"].endswith("/invalid-second-factor")


async def test_an_account_without_passkeys_is_offered_none(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    await turn_on_totp(client, customer)
    body = await pending(client, customer)
    assert body["methods"] == ["totp", "recovery_code"]
    assert "passkey" not in body
    assert body["detail"] == "Enter the code from your authenticator app, or a recovery code."


async def test_the_ceremony_is_this_sign_ins_and_used_once(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, customer)
    offer = (await pending(client, customer))["passkey"]
    credential = device.get(offer["public_key"])
    # Another client's handle (or none it was given) with this answer: refused, and spent.
    r = await client.post(
        "/api/v1/auth/login/passkey", json={"ceremony": "not-the-handle", "credential": credential}
    )
    assert r.status_code == 400
    assert problem(r)["type"].endswith("/passkey-challenge-invalid")
    r = await client.post(
        "/api/v1/auth/login/passkey", json={"ceremony": offer["ceremony"], "credential": credential}
    )
    assert problem(r)["type"].endswith("/passkey-challenge-invalid")

    # Used once.
    offer = (await pending(client, customer))["passkey"]
    body = {"ceremony": offer["ceremony"], "credential": device.get(offer["public_key"])}
    assert (await client.post("/api/v1/auth/login/passkey", json=body)).status_code == 200
    again = await client.post("/api/v1/auth/login/passkey", json=body)
    assert again.status_code == 400
    assert problem(again)["type"].endswith("/passkey-challenge-invalid")

    # A passwordless sign-in's ceremony is no pending sign-in (nor the other way round).
    ceremony = (await client.post("/api/v1/auth/passkeys/options")).json()
    r = await client.post(
        "/api/v1/auth/login/passkey",
        json={"ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"])},
    )
    assert problem(r)["type"].endswith("/passkey-challenge-invalid")
    offer = (await pending(client, customer))["passkey"]
    r = await client.post(
        "/api/v1/auth/passkeys/login",
        json={"ceremony": offer["ceremony"], "credential": device.get(offer["public_key"])},
    )
    assert problem(r)["type"].endswith("/passkey-challenge-invalid")

    # For a few minutes.
    offer = (await pending(client, customer))["passkey"]
    clock.freeze(utcnow() + timedelta(minutes=5, seconds=1))
    late = await answer(client, offer, device)
    assert problem(late)["type"].endswith("/passkey-challenge-invalid")


async def test_another_accounts_passkey_is_refused_as_a_wrong_code_and_counted(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    alice, alice_device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, alice)
    _, bob_device = await with_passkey(client, inbox, deliver)
    offer = (await pending(client, alice))["passkey"]
    r = await answer(client, offer, bob_device)
    assert r.status_code == 401
    wrong_code = await login(client, alice.username, second_factor="000000")
    assert problem(r)["type"] == problem(wrong_code)["type"]
    assert problem(r)["type"].endswith("/invalid-second-factor")
    assert problem(r)["title"] == problem(wrong_code)["title"]
    row = await account_row(db, settings, alice)
    assert row is not None and row.failures == 2  # the passkey and the code, alike
    failed = [e for e in await events(db, "login") if e.details.get("method") == "password+passkey"]
    assert [(e.success, e.details["reason"]) for e in failed] == [(False, "unknown")]

    # Alice's own passkey, but the answer signed by another key: refused and counted.
    forged = Authenticator(credential_id=alice_device.credential_id)
    forged.user_handle = alice_device.user_handle
    r = await answer(client, (await pending(client, alice))["passkey"], forged)
    assert problem(r)["type"].endswith("/invalid-second-factor")
    row = await account_row(db, settings, alice)
    assert row is not None and row.failures == 3

    # Her passkey signs her in, and the count starts again.
    r = await answer(client, (await pending(client, alice))["passkey"], alice_device)
    assert r.status_code == 200, r.text
    row = await account_row(db, settings, alice)
    assert row is not None and row.failures == 0


async def test_wrong_passkeys_lock_out_like_wrong_codes(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    alice, alice_device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, alice)
    held_back = (await pending(client, alice))["passkey"]
    stranger = Authenticator()
    inbox.messages.clear()
    for _ in range(throttle.FREE_FAILURES):
        offer = (await pending(client, alice))["passkey"]
        assert (await answer(client, offer, stranger)).status_code == 401
    # The holder is alerted at the fifth failure in a row, as for wrong codes.
    await deliver()
    assert "Failed sign-in attempts" in [m["Subject"] for m in inbox.to(alice.email or "")]
    # Locked out: even her own passkey is refused now, unlooked-at and counted no further, as
    # a sign-in under that name is after wrong codes: 429 with Retry-After (round 15; before,
    # `invalid-second-factor`, the name's row not counted).
    r = await answer(client, held_back, alice_device)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert problem(r)["type"].endswith("/too-many-attempts")
    row = await account_row(db, settings, alice)
    assert row is not None and row.failures == throttle.FREE_FAILURES
    r = await login(client, alice.username)
    assert problem(r)["type"].endswith("/too-many-attempts")
    clock.freeze(utcnow() + timedelta(minutes=1))
    r = await answer(client, (await pending(client, alice))["passkey"], alice_device)
    assert r.status_code == 200, r.text


async def test_a_counter_going_back_at_the_second_step_is_refused_and_logged(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, customer)
    assert (await answer(client, (await pending(client, customer))["passkey"], device,
                         count=9)).status_code == 200  # fmt: skip
    r = await answer(client, (await pending(client, customer))["passkey"], device, count=9)
    assert r.status_code == 401
    assert problem(r)["type"].endswith("/invalid-second-factor")
    [event] = await events(db, "passkey_sign_count_regressed")
    assert (event.details["stored"], event.details["presented"], event.details["step"]) == (
        9, 9, "second"
    )
    row = await account_row(db, settings, customer)
    assert row is not None and row.failures == 1


async def test_malformed_answers_are_refused_and_spend_nothing(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, customer)
    offer = (await pending(client, customer))["passkey"]
    for credential in ({}, {"id": "x", "rawId": "!!", "response": {}}):
        r = await client.post(
            "/api/v1/auth/login/passkey",
            json={"ceremony": offer["ceremony"], "credential": credential},
        )
        assert r.status_code == 422, r.text
        assert problem(r)["type"].endswith("/passkey-invalid")
        assert problem(r)["field"] == "credential"
    r = await client.post("/api/v1/auth/login/passkey", json={"ceremony": offer["ceremony"]})
    assert r.status_code == 422
    assert (await answer(client, offer, device)).status_code == 200


# --- two-step sign-in with a passkey ----------------------------------------------------------


async def test_two_step_sign_in_with_a_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    state = (await client.get("/api/v1/me/passkeys/two-step", headers=customer.auth)).json()
    assert state == {"enabled": False, "enabled_at": None, "available": True}
    # The password again, counted as every re-authentication.
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": "not-the-password-1"},
        headers=customer.auth,
    )
    assert r.status_code == 401
    assert problem(r)["field"] == "password"
    assert [e.success for e in await events(db, "passkey_second_factor_enabled")] == [False]
    inbox.messages.clear()
    codes = await turn_on(client, customer)
    assert len(codes) == 10
    await deliver()
    assert "Two-step sign-in with a passkey is on" in [
        m["Subject"] for m in inbox.to(customer.email or "")
    ]
    state = (await client.get("/api/v1/me/passkeys/two-step", headers=customer.auth)).json()
    assert state["enabled"] is True and state["enabled_at"] is not None
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 409
    assert problem(r)["type"].endswith("/passkey-two-step-on")

    # After the password: a passkey or a recovery code.
    body = await pending(client, customer)
    assert body["methods"] == ["passkey", "recovery_code"]
    assert body["detail"] == "Confirm with one of your passkeys, or enter a recovery code."
    assert (await answer(client, body["passkey"], device)).status_code == 200
    r = await login(client, customer.username, second_factor="123456")
    assert problem(r)["type"].endswith("/invalid-second-factor")
    r = await login(client, customer.username, second_factor=codes[0])
    assert r.status_code == 200, r.text
    r = await login(client, customer.username, second_factor=codes[0])
    assert problem(r)["type"].endswith("/invalid-second-factor")  # used once

    # The recovery codes may be replaced, as with the app.
    r = await client.post(
        "/api/v1/me/totp/recovery-codes", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 200, r.text

    # Off: the password again and a passkey's answer (the password alone is refused, as the
    # app's code is asked to turn the app off); the codes go, the holder is told, the password
    # alone signs in.
    r = await client.post(
        "/api/v1/me/passkeys/two-step/disable", json={"password": "wrong-password-22"},
        headers=customer.auth,
    )
    assert r.status_code == 401
    r = await client.post(
        "/api/v1/me/passkeys/two-step/disable", json={"password": PASSWORD},
        headers=customer.auth,
    )
    assert r.status_code == 401 and problem(r)["field"] == "code", r.text
    inbox.messages.clear()
    r = await client.post(
        "/api/v1/me/passkeys/two-step/disable",
        json={"password": PASSWORD, "credential": await confirmation(client, customer, device)},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    await deliver()
    assert "Two-step verification is off" in [m["Subject"] for m in inbox.to(customer.email or "")]
    assert (await login(client, customer.username)).status_code == 200
    owner = await account_id(db, customer)
    async with db.read() as s:
        left = await s.execute(select(RecoveryCode).where(RecoveryCode.account_id == owner))
        assert left.scalars().all() == []
    kinds = [(e.kind, e.success) for e in await events(db, "passkey_second_factor_disabled")]
    assert kinds == [("passkey_second_factor_disabled", False),
                     ("passkey_second_factor_disabled", False),
                     ("passkey_second_factor_disabled", True)]
    r = await client.post(
        "/api/v1/me/passkeys/two-step/disable", json={"password": PASSWORD},
        headers=customer.auth,
    )
    assert r.status_code == 409
    assert problem(r)["type"].endswith("/passkey-two-step-off")


async def test_it_needs_a_passkey_and_no_app(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    bare = await signup(client, inbox, deliver, with_phone=False)
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": PASSWORD}, headers=bare.auth
    )
    assert r.status_code == 409
    assert problem(r)["type"].endswith("/passkey-two-step-needs-passkey")
    customer, _ = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, customer)
    state = (await client.get("/api/v1/me/passkeys/two-step", headers=customer.auth)).json()
    assert state["available"] is False
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 409
    assert problem(r)["type"].endswith("/passkey-two-step-with-app")
    # Nothing was tried: no failed re-authentication logged.
    assert await events(db, "passkey_second_factor_enabled") == []
    r = await client.post("/api/v1/me/passkeys/two-step", json={"password": PASSWORD})
    assert r.status_code == 401  # signed in only


async def test_the_last_passkey_of_two_step_cannot_be_removed(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    codes = await turn_on(client, customer)
    [only] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    r = await client.post(
        f"/api/v1/me/passkeys/{only['id']}/remove", json={"password": PASSWORD},
        headers=customer.auth,
    )
    assert r.status_code == 409
    assert problem(r)["type"].endswith("/passkey-last-second-factor")
    assert problem(r)["field"] == "passkey_id"
    assert len((await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()) == 1
    assert await events(db, "passkey_removed") == []
    # With a second one (added with the first one's answer: the two-step's second factor),
    # either may go; then the last stays again.
    r = await client.post(
        "/api/v1/me/passkeys/options", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 401 and problem(r)["field"] == "code", r.text
    r = await client.post(
        "/api/v1/me/passkeys/options",
        json={"password": PASSWORD, "credential": await confirmation(client, customer, device)},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        "/api/v1/me/passkeys",
        json={"credential": Authenticator().create(r.json()["public_key"]), "name": "second"},
        headers=customer.auth,
    )
    assert r.status_code == 201, r.text
    # Removing one asks the second factor too (thirteenth round): here a recovery code.
    r = await client.post(
        f"/api/v1/me/passkeys/{only['id']}/remove",
        json={"password": PASSWORD, "code": codes[1]}, headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    [last] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    r = await client.post(
        f"/api/v1/me/passkeys/{last['id']}/remove", json={"password": PASSWORD},
        headers=customer.auth,
    )
    assert r.status_code == 409
    # Two-step off (with a recovery code this time): the last one goes.
    r = await client.post(
        "/api/v1/me/passkeys/two-step/disable", json={"password": PASSWORD, "code": codes[0]},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"/api/v1/me/passkeys/{last['id']}/remove", json={"password": PASSWORD},
        headers=customer.auth,
    )
    assert r.status_code == 200


async def test_turning_the_app_on_replaces_two_step_with_a_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on(client, customer)
    await turn_on_totp(client, customer)
    async with db.read() as s:
        assert (await s.execute(select(PasskeySecondFactor))).scalars().all() == []
    [event] = [e for e in await events(db, "passkey_second_factor_disabled")]
    assert event.details == {"reason": "totp"}
    body = await pending(client, customer)
    assert body["methods"] == ["totp", "passkey", "recovery_code"]
    assert (await answer(client, body["passkey"], device)).status_code == 200


# --- the portal's pages and forms -------------------------------------------------------------


async def test_the_portal_turns_it_on_and_off_and_keeps_the_last_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await portal_session(client, customer)
    page = await client.get("/account/security")
    assert "Turn on two-step sign-in with a passkey" in page.text
    on = "/account/security/passkeys/two-step"
    r = await client.post(on, data={"csrf": csrf_of(page.text), "password": "wrong-one-333"})
    assert r.status_code == 401
    assert 'id="e-pk-on-password"' in r.text and 'aria-invalid="true"' in r.text
    r = await client.post(on, data={"csrf": csrf_of(page.text), "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.text.count("-") >= 10  # the ten recovery codes, shown once
    page = await client.get("/account/security")
    assert "Turn two-step sign-in with a passkey off" in page.text
    # The last passkey stays while two-step asks for it: said on the page, nothing removed.
    [only] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    r = await client.post(
        f"/account/security/passkeys/{only['id']}/remove",
        data={"csrf": csrf_of(page.text), "password": PASSWORD},
    )
    assert r.status_code == 409
    assert "This is your last passkey" in r.text
    assert len((await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()) == 1

    # The sign-in form: the password, then the passkey (this account's, in the page) or a code.
    client.cookies.clear()
    shown = await client.get("/login")
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "password": PASSWORD})
    assert r.status_code == 200
    assert "Confirm with one of your passkeys, or enter a recovery code." in r.text
    assert 'id="passkey-second-step"' in r.text and "/static/portal/passkeys.js" in r.text
    assert b64(device.credential_id) in r.text
    sealed = re.search(r'name="sealed" value="([^"]+)"', r.text)
    assert sealed is not None
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "sealed": sealed.group(1),
        "second_factor": "ABCDE-FGHIJ", "methods": "passkey,recovery_code"})
    assert r.status_code == 401
    assert "The authenticator or recovery code is wrong." in r.text
    assert 'for="f-second_factor">Recovery code<' in r.text

    client.cookies.clear()
    await portal_session_two_step(client, customer, device)
    page = await client.get("/account/security")
    off = "/account/security/passkeys/two-step/off"
    r = await client.post(off, data={"csrf": csrf_of(page.text), "password": PASSWORD})
    assert r.status_code == 401  # the password alone: the page again, the code field marked
    assert 'id="e-pk-off-code"' in r.text and 'aria-invalid="true"' in r.text
    r = await client.post(off, data={
        "csrf": csrf_of(page.text), "password": PASSWORD, "credential": "{not json"})
    assert r.status_code == 422 and 'id="e-pk-off-credential"' in r.text  # no passkey's answer
    ask = await client.post(
        "/api/v1/me/passkeys/confirm/options", headers={"x-csrf-token": csrf_of(page.text)}
    )
    assert ask.status_code == 200, ask.text
    answer = json.dumps(device.get(ask.json()["public_key"]))
    r = await client.post(
        off, data={"csrf": csrf_of(page.text), "password": PASSWORD, "credential": answer}
    )
    assert r.headers["location"] == "/account/security?done=passkey_two_step_off"
    page = await client.get(r.headers["location"])
    assert "Two-step sign-in with a passkey is off." in page.text
    labels = await client.get("/account/security")
    assert "Two-step sign-in with a passkey turned off" in labels.text


async def portal_session_two_step(
    client: httpx.AsyncClient, customer: Customer, device: Authenticator
) -> None:
    """The browser's session cookie after the password and the passkey, as passkeys.js gets it."""
    shown = await client.get("/login")
    r = await client.post("/login", data={
        "csrf": csrf_of(shown.text), "login": customer.username, "password": PASSWORD})
    offer = (await pending(client, customer))["passkey"]
    r = await client.post(
        "/api/v1/auth/login/passkey",
        json={"ceremony": offer["ceremony"], "credential": device.get(offer["public_key"]),
              "mode": "cookie"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["token"] is None and r.json()["csrf_token"]
