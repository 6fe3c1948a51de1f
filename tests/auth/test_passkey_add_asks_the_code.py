"""With two-step verification (an authenticator app) on, adding a passkey asks for a current code
or a recovery code as well as the password: a passkey signs in as both factors, so the password
alone let whoever held a stolen session and the password add their own passkey and skip the code
for good — which turning two-step verification off already refused (found by the twelfth
round's review)."""

from __future__ import annotations

import httpx
import pyotp
from sqlalchemy import func, select

from simcharge.auth.models import Passkey, PasskeySecondFactor
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD, Customer, Deliver, problem, signup
from tests.auth.test_passkeys import Authenticator, with_passkey
from tests.conftest import SmtpInbox


async def _with_totp(client: httpx.AsyncClient, customer: Customer) -> tuple[str, list[str]]:
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text
    secret = str(r.json()["secret"])
    r = await client.post(
        "/api/v1/me/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    customer.token = r.json()["token"]
    return secret, list(r.json()["recovery_codes"])


async def _passkeys(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(Passkey))).scalar_one())


async def test_the_password_alone_no_longer_adds_a_passkey_when_two_step_is_on(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    secret, recovery = await _with_totp(client, customer)
    clock.advance(seconds=30)  # the confirming code's step is spent
    for body in ({"password": PASSWORD}, {"password": PASSWORD, "code": "000000"}):
        r = await client.post("/api/v1/me/passkeys/options", json=body, headers=customer.auth)
        assert r.status_code == 401, r.text
        assert problem(r)["type"].endswith("/invalid-second-factor")
        assert problem(r)["field"] == "code"
    r = await client.post(
        "/api/v1/me/passkeys/options",
        json={"password": "not-the-password-at-all", "code": pyotp.TOTP(secret).at(utcnow())},
        headers=customer.auth,
    )
    assert r.status_code == 401 and problem(r)["field"] == "password", r.text
    assert await _passkeys(db) == 0

    for n, code in enumerate((pyotp.TOTP(secret).at(utcnow()), recovery[0]), start=1):
        r = await client.post(
            "/api/v1/me/passkeys/options",
            json={"password": PASSWORD, "code": code},
            headers=customer.auth,
        )
        assert r.status_code == 200, r.text
        device = Authenticator()
        r = await client.post(
            "/api/v1/me/passkeys",
            json={"credential": device.create(r.json()["public_key"]), "name": f"mine {n}"},
            headers=customer.auth,
        )
        assert r.status_code == 201, r.text
        assert await _passkeys(db) == n


async def test_without_two_step_the_password_is_enough(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    r = await client.post(
        "/api/v1/me/passkeys/options", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 200, r.text


async def test_two_step_with_a_passkey_is_in_the_export_and_gone_with_the_account(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    doc = (await client.get("/api/v1/me/export", headers=customer.auth)).json()
    assert doc["account"]["two_step_with_passkey_since"] is None
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    recovery = r.json()["recovery_codes"]
    doc = (await client.get("/api/v1/me/export", headers=customer.auth)).json()
    assert doc["account"]["two_step_with_passkey_since"] is not None
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(PasskeySecondFactor))).scalar_one() == 1
    # Closing asks the second factor too (thirteenth round): here a recovery code.
    r = await client.post(
        "/api/v1/me/close", headers=customer.auth,
        json={"password": PASSWORD, "code": recovery[0]},
    )
    assert r.status_code in (200, 202), r.text
    async with db.read() as s:
        assert (await s.execute(select(func.count()).select_from(PasskeySecondFactor))).scalar_one() == 0


async def _confirm(
    client: httpx.AsyncClient, customer: Customer, device: Authenticator
) -> dict[str, object]:
    r = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    assert r.status_code == 200, r.text
    return device.get(r.json()["public_key"])


async def test_with_two_step_by_passkey_a_change_asks_one_of_its_own_passkeys(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    """The same gap with two-step sign-in with a passkey on: adding a passkey (or turning the
    two-step off) with the password alone. Its second factor is one of the account's passkeys'
    answer to the confirm options — this account's, this session's, used once — or a recovery
    code."""
    customer, device = await with_passkey(client, inbox, deliver)
    other, stranger = await with_passkey(client, inbox, deliver)
    r = await client.post(
        "/api/v1/me/passkeys/two-step", json={"password": PASSWORD}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    options = "/api/v1/me/passkeys/options"

    r = await client.post(options, json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 401 and problem(r)["field"] == "code", r.text
    # Another account's passkey answering this account's challenge: refused as a wrong code.
    ask = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    foreign = stranger.get(ask.json()["public_key"])
    r = await client.post(
        options, json={"password": PASSWORD, "credential": foreign}, headers=customer.auth
    )
    assert r.status_code == 401, r.text
    assert (problem(r)["type"].endswith("/invalid-second-factor"), problem(r)["field"]) == (
        True, "credential",
    )
    # Another account's challenge answered by this account's passkey: not this session's.
    theirs = await client.post("/api/v1/me/passkeys/confirm/options", headers=other.auth)
    r = await client.post(
        options,
        json={"password": PASSWORD, "credential": device.get(theirs.json()["public_key"])},
        headers=customer.auth,
    )
    assert r.status_code == 401 and problem(r)["field"] == "credential", r.text
    # A malformed answer: bad input, nothing spent.
    r = await client.post(
        options, json={"password": PASSWORD, "credential": {"id": "x"}}, headers=customer.auth
    )
    assert r.status_code == 422 and problem(r)["type"].endswith("/passkey-invalid"), r.text
    assert await _passkeys(db) == 2

    # Its own passkey's answer: once.
    answer = await _confirm(client, customer, device)
    r = await client.post(
        options, json={"password": PASSWORD, "credential": answer}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        options, json={"password": PASSWORD, "credential": answer}, headers=customer.auth
    )
    assert r.status_code == 401 and problem(r)["field"] == "credential", r.text  # replayed


async def test_the_confirm_options_need_a_session_and_a_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    assert (await client.post("/api/v1/me/passkeys/confirm/options")).status_code == 401
    bare = await signup(client, inbox, deliver, with_phone=False)
    r = await client.post("/api/v1/me/passkeys/confirm/options", headers=bare.auth)
    assert r.status_code == 409 and problem(r)["type"].endswith("/no-passkey"), r.text
