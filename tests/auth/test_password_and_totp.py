"""Forgotten and changed passwords, two-step verification, locking the account."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.db import Database
from simcharge.kit.clock import clock
from tests.auth.helpers import PASSWORD, Deliver, comparable, login, problem, signup
from tests.conftest import SmtpInbox, last_sms_code

NEW_PASSWORD = "copper-lantern-5512"
START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


async def forgot(
    client: httpx.AsyncClient, login_name: str, channel: str = "email"
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/password/forgot", json={"login": login_name, "channel": channel}
    )


async def reset(
    client: httpx.AsyncClient, login_name: str, code: str, password: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/password/reset",
        json={"login": login_name, "code": code, "new_password": password},
    )


async def test_forgot_answers_alike_whoever_asks(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    known = await forgot(client, customer.username)
    unknown = await forgot(client, "nobody-knows-me")
    no_phone = await forgot(client, customer.username, "sms")
    assert known.status_code == unknown.status_code == no_phone.status_code == 202
    assert known.json() == unknown.json() == no_phone.json()
    inbox.messages.clear()
    await deliver()
    # Only the known account with a verified e-mail address gets a code.
    assert [(m["To"], m["Subject"]) for m in inbox.messages] == [
        (customer.email, "Reset your password")
    ]


async def test_reset_by_email_ends_every_session(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    inbox.messages.clear()
    assert (await forgot(client, str(customer.email))).status_code == 202
    await deliver()
    code = inbox.last_code(str(customer.email))
    assert inbox.to(str(customer.email))[-1]["Subject"] == "Reset your password"
    r = await reset(client, customer.username, code, "password1")
    assert r.status_code == 422 and problem(r)["field"] == "new_password"
    assert (await reset(client, customer.username, code)).status_code == 200  # code still good
    assert (await client.get("/api/v1/me", headers=customer.auth)).status_code == 401
    assert (await login(client, customer.username)).status_code == 401
    assert (await login(client, customer.username, NEW_PASSWORD)).status_code == 200
    assert (await reset(client, customer.username, code, "another-fine-pass-9")).status_code == 422
    await deliver()
    assert "Your password was reset" in [m["Subject"] for m in inbox.to(str(customer.email))]


async def test_reset_by_sms(client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver) -> None:
    customer = await signup(client, inbox, deliver)
    await forgot(client, str(customer.phone), "sms")
    await deliver()
    r = await reset(client, str(customer.phone), last_sms_code(str(customer.phone)))
    assert r.status_code == 200


async def test_codes_expire_allow_five_tries_and_the_newest_wins(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    await forgot(client, customer.username)
    await deliver()
    first = inbox.last_code(str(customer.email))
    clock.freeze(START + timedelta(seconds=30))
    await forgot(client, customer.username)  # too soon: no new code
    await deliver()
    assert inbox.last_code(str(customer.email)) == first
    clock.freeze(START + timedelta(seconds=61))
    await forgot(client, customer.username)
    await deliver()
    second = inbox.last_code(str(customer.email))
    if second != first:
        r = await reset(client, customer.username, first)
        assert r.status_code == 422  # voided by the newer code
    wrong = "999999" if second != "999999" else "888888"
    for _ in range(5):
        assert (await reset(client, customer.username, wrong)).status_code == 422
    assert (await reset(client, customer.username, second)).status_code == 422  # burnt after 5
    clock.freeze(START + timedelta(seconds=200))
    await forgot(client, customer.username)
    await deliver()
    third = inbox.last_code(str(customer.email))
    clock.freeze(START + timedelta(seconds=200, minutes=10, milliseconds=1))
    assert (await reset(client, customer.username, third)).status_code == 422  # expired


async def test_forgot_takes_the_same_minimum_time(
    db: Database, settings: object, inbox: SmtpInbox, client: httpx.AsyncClient, deliver: Deliver
) -> None:
    from simcharge.app import create_app
    from simcharge.config import Settings

    assert isinstance(settings, Settings)
    customer = await signup(client, inbox, deliver)
    app = create_app(
        settings.model_copy(update={"auth_min_response_ms": 300}), db=db, run_worker=False
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for name in (customer.username, "unknown-person"):
            started = time.monotonic()
            assert (await forgot(c, name)).status_code == 202
            assert time.monotonic() - started >= 0.3


async def test_change_password(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    other = {"Authorization": f"Bearer {(await login(client, customer.username)).json()['token']}"}
    r = await client.post(
        "/api/v1/me/password",
        headers=customer.auth,
        json={"current_password": "guess-guess-1", "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 401 and problem(r)["field"] == "current_password"
    r = await client.post(
        "/api/v1/me/password",
        headers=customer.auth,
        json={"current_password": PASSWORD, "new_password": customer.username},
    )
    assert r.status_code == 422
    r = await client.post(
        "/api/v1/me/password",
        headers=customer.auth,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 200
    rotated = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await client.get("/api/v1/me", headers=customer.auth)).status_code == 401
    assert (await client.get("/api/v1/me", headers=other)).status_code == 401
    assert (await client.get("/api/v1/me", headers=rotated)).status_code == 200
    await deliver()
    assert "Your password was changed" in [m["Subject"] for m in inbox.to(str(customer.email))]


async def test_two_step_verification(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    r = await client.post(
        "/api/v1/me/totp", json={"password": "wrong-one-77"}, headers=customer.auth
    )
    assert r.status_code == 401
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/") and r.json()["qr_svg"].startswith(
        "data:image/svg+xml"
    )
    async with db.read() as s:
        sealed = (
            await s.execute(
                select(Account.totp_secret_sealed).where(Account.username == customer.username)
            )
        ).scalar_one()
    assert sealed and secret not in sealed
    totp = pyotp.TOTP(secret)
    r = await client.post("/api/v1/me/totp/confirm", json={"code": "000000"}, headers=customer.auth)
    assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-second-factor"
    r = await client.post(
        "/api/v1/me/totp/confirm", json={"code": totp.at(START)}, headers=customer.auth
    )
    assert r.status_code == 200
    recovery = r.json()["recovery_codes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await client.get("/api/v1/me", headers=customer.auth)).status_code == 401  # rotated
    assert (await client.get("/api/v1/me", headers=auth)).json()["two_step"] is True

    r = await login(client, customer.username)
    assert r.status_code == 401 and problem(r)["type"] == "/problems/second-factor-required"
    # The code used to confirm cannot be replayed, even in its own time window.
    r = await login(client, customer.username, second_factor=totp.at(START))
    assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-second-factor"
    clock.freeze(START + timedelta(seconds=30))
    assert (
        await login(client, customer.username, second_factor=totp.at(START + timedelta(seconds=30)))
    ).status_code == 200
    assert (await login(client, customer.username, second_factor=recovery[0])).status_code == 200
    assert (await login(client, customer.username, second_factor=recovery[0])).status_code == 401
    await deliver()
    subjects = [m["Subject"] for m in inbox.to(str(customer.email))]
    assert "Two-step verification is on" in subjects and "A recovery code was used" in subjects

    clock.freeze(START + timedelta(seconds=90))
    r = await client.post(
        "/api/v1/me/totp/disable", headers=auth, json={"password": PASSWORD, "code": "123123"}
    )
    assert r.status_code == 401
    r = await client.post(
        "/api/v1/me/totp/disable",
        headers=auth,
        json={"password": PASSWORD, "code": totp.at(START + timedelta(seconds=90))},
    )
    assert r.status_code == 200
    assert (await login(client, customer.username)).status_code == 200


async def test_recovery_codes_can_be_replaced(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    secret = (
        await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    ).json()["secret"]
    first = await client.post(
        "/api/v1/me/totp/confirm",
        json={"code": pyotp.TOTP(secret).at(START)},
        headers=customer.auth,
    )
    auth = {"Authorization": f"Bearer {first.json()['token']}"}
    r = await client.post(
        "/api/v1/me/totp/recovery-codes", json={"password": PASSWORD}, headers=auth
    )
    fresh = r.json()["recovery_codes"]
    assert (
        await login(client, customer.username, second_factor=first.json()["recovery_codes"][0])
    ).status_code == 401
    assert (await login(client, customer.username, second_factor=fresh[0])).status_code == 200


async def test_lock_my_account_and_unlock_with_a_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    other = {"Authorization": f"Bearer {(await login(client, customer.username)).json()['token']}"}
    assert (await client.post("/api/v1/me/lock", headers=customer.auth)).status_code == 200
    for auth in (customer.auth, other):
        assert (await client.get("/api/v1/me", headers=auth)).status_code == 401
    r = await login(client, customer.username)
    assert r.status_code == 401 and problem(r)["type"] == "/problems/account-locked"
    # A wrong password on a locked account says nothing more than for anyone else.
    wrong = await login(client, customer.username, "not-it-at-all-1")
    assert problem(wrong)["type"] == "/problems/invalid-credentials"
    inbox.messages.clear()
    asked = await client.post(
        "/api/v1/auth/unlock/request", json={"login": customer.username, "channel": "email"}
    )
    unknown = await client.post(
        "/api/v1/auth/unlock/request", json={"login": "ghost-user", "channel": "email"}
    )
    assert comparable(asked) == comparable(unknown)
    await deliver()
    subjects = [m["Subject"] for m in inbox.to(str(customer.email))]
    assert "Your account is locked" in subjects and "Unlock your account" in subjects
    code = inbox.last_code(str(customer.email))
    r = await client.post(
        "/api/v1/auth/unlock", json={"login": customer.username, "code": "000001"}
    )
    assert r.status_code == 422
    r = await client.post("/api/v1/auth/unlock", json={"login": customer.username, "code": code})
    assert r.status_code == 200
    assert (await login(client, customer.username)).status_code == 200
