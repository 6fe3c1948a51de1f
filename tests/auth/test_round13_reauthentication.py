"""Customers' re-authentication made consistent (thirteenth round), on SQLite and PostgreSQL with
real signatures (the software authenticator of `test_passkeys`):

- closing the account with two-step sign-in with a passkey on asks its second factor too (one
  of the passkeys' answer to the confirm options, or a recovery code), as the app's code is
  asked with the app on;
- removing a passkey asks the password again and, with two-step on, its second factor
  (`POST /me/passkeys/{id}/remove`; `DELETE` answers `405` naming it);
- `GET /me`'s `two_step` speaks of both methods (`two_step_method`).

Every refusal changes nothing: a wrong password, a wrong or missing second factor, another
account's passkey, a replayed confirm answer, malformed input (`422`, counted nowhere)."""

from __future__ import annotations

from typing import Any

import httpx
import pyotp
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.auth import throttle
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import PASSWORD, Customer, Deliver, problem, signup
from tests.auth.test_passkey_second_step import (
    account_id,
    account_row,
    confirmation,
    turn_on,
    turn_on_totp,
)
from tests.auth.test_passkeys import Authenticator, events, with_passkey
from tests.conftest import SmtpInbox

CLOSE = "/api/v1/me/close"


def removal(passkey_id: str) -> str:
    return f"/api/v1/me/passkeys/{passkey_id}/remove"


async def my_passkeys(client: httpx.AsyncClient, customer: Customer) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/me/passkeys", headers=customer.auth)
    assert r.status_code == 200, r.text
    keys: list[dict[str, Any]] = r.json()
    return keys


async def another_passkey(
    client: httpx.AsyncClient, customer: Customer, device: Authenticator, *, name: str = "second",
    confirm: bool = True,
) -> Authenticator:
    """A second passkey, added with the first one's answer when two-step asks for it."""
    body: dict[str, Any] = {"password": PASSWORD}
    if confirm:
        body["credential"] = await confirmation(client, customer, device)
    r = await client.post("/api/v1/me/passkeys/options", json=body, headers=customer.auth)
    assert r.status_code == 200, r.text
    second = Authenticator()
    r = await client.post(
        "/api/v1/me/passkeys",
        json={"credential": second.create(r.json()["public_key"]), "name": name},
        headers=customer.auth,
    )
    assert r.status_code == 201, r.text
    return second


async def status_of(db: Database, owner: Any) -> str:
    async with db.read() as s:
        return str((await s.execute(select(Account.status).where(Account.id == owner))).scalar_one())


async def failures(db: Database, settings: Settings, customer: Customer) -> int:
    row = await account_row(db, settings, customer)
    return 0 if row is None else row.failures


# --- closing the account ----------------------------------------------------------------------


async def test_closing_with_two_step_by_passkey_asks_the_passkey_or_a_recovery_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    owner = await account_id(db, customer)
    codes = await turn_on(client, customer)
    _, stranger = await with_passkey(client, inbox, deliver)

    # The password alone: the second factor is missing, refused before anything is counted.
    r = await client.post(CLOSE, json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 422, r.text
    assert problem(r)["type"].endswith("/validation-error") and problem(r)["field"] == "code"
    assert await events(db, "account_closed") == []

    # Malformed answer: 422 passkey-invalid, nothing counted or spent.
    r = await client.post(
        CLOSE, json={"password": PASSWORD, "credential": {"id": "x"}}, headers=customer.auth
    )
    assert r.status_code == 422, r.text
    assert problem(r)["type"].endswith("/passkey-invalid") and problem(r)["field"] == "credential"
    assert await events(db, "account_closed") == []
    assert await failures(db, settings, customer) == 0

    # A wrong password with the holder's own passkey: the password is named.
    r = await client.post(
        CLOSE,
        json={"password": "not-the-password-9", "credential": await confirmation(
            client, customer, device)},
        headers=customer.auth,
    )
    assert r.status_code == 401 and problem(r)["field"] == "password", r.text

    # Another account's passkey answering this account's challenge: a wrong second factor.
    ask = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    foreign = stranger.get(ask.json()["public_key"])
    r = await client.post(
        CLOSE, json={"password": PASSWORD, "credential": foreign}, headers=customer.auth
    )
    assert r.status_code == 401, r.text
    assert problem(r)["type"].endswith("/invalid-second-factor")
    assert problem(r)["field"] == "credential"

    # A wrong recovery code.
    r = await client.post(
        CLOSE, json={"password": PASSWORD, "code": "AAAA-BBBB"}, headers=customer.auth
    )
    assert r.status_code == 401 and problem(r)["field"] == "code", r.text

    # A replayed answer: its challenge was spent by the change it confirmed.
    spent = await confirmation(client, customer, device)
    r = await client.post(
        "/api/v1/me/passkeys/options", json={"password": PASSWORD, "credential": spent},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        CLOSE, json={"password": PASSWORD, "credential": spent}, headers=customer.auth
    )
    assert r.status_code == 401 and problem(r)["field"] == "credential", r.text

    # Every refusal changed nothing, and each was counted as a sign-in failure would be.
    assert await status_of(db, owner) == "active"
    assert len(await my_passkeys(client, customer)) == 1
    assert await failures(db, settings, customer) == 4
    refused = [e.details["reason"] for e in await events(db, "account_closed")]
    assert refused == ["invalid-credentials"] + ["invalid-second-factor"] * 3
    assert codes  # unused: the passkey closes it

    # The passkey's answer closes it.
    r = await client.post(
        CLOSE,
        json={"password": PASSWORD, "credential": await confirmation(client, customer, device)},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    assert await status_of(db, owner) == "closed"


async def test_closing_with_the_app_takes_its_code_or_a_passkey(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    owner = await account_id(db, customer)
    await turn_on_totp(client, customer)
    clock.advance(seconds=30)  # the confirming code's step is spent
    r = await client.post(CLOSE, json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 422 and problem(r)["field"] == "code", r.text
    r = await client.post(CLOSE, json={"password": PASSWORD, "code": "000000"},
                          headers=customer.auth)
    assert r.status_code == 401 and problem(r)["field"] == "code", r.text
    assert await status_of(db, owner) == "active"
    # As `confirm_both_factors` takes it: one of the passkeys may answer instead of the app.
    r = await client.post(
        CLOSE,
        json={"password": PASSWORD, "credential": await confirmation(client, customer, device)},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    assert await status_of(db, owner) == "closed"


async def test_without_two_step_closing_asks_the_password_alone(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    owner = await account_id(db, customer)
    r = await client.post(CLOSE, json={"password": ""}, headers=customer.auth)
    assert r.status_code == 422 and problem(r)["field"] == "password"
    r = await client.post(CLOSE, json={"password": PASSWORD, "extra": 1}, headers=customer.auth)
    assert r.status_code == 422
    assert await status_of(db, owner) == "active"
    r = await client.post(CLOSE, json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text


# --- removing a passkey -----------------------------------------------------------------------


async def test_delete_answers_405_naming_the_route_and_removes_nothing(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    [mine] = await my_passkeys(client, customer)
    r = await client.delete(f"/api/v1/me/passkeys/{mine['id']}", headers=customer.auth)
    assert r.status_code == 405, r.text
    assert problem(r)["type"].endswith("/method-not-allowed")
    assert f"/api/v1/me/passkeys/{mine['id']}/remove" in problem(r)["detail"]
    assert r.headers["allow"] == "PATCH"
    assert len(await my_passkeys(client, customer)) == 1
    assert await events(db, "passkey_removed") == []
    r = await client.delete(f"/api/v1/me/passkeys/{mine['id']}")
    assert r.status_code == 401  # signed in only


async def test_removing_asks_the_password_throttled_and_counted(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    [mine] = await my_passkeys(client, customer)
    url = removal(mine["id"])
    for body, field in (({}, "password"), ({"password": ""}, "password"),
                        ({"password": PASSWORD, "credential": {"rawId": "!!"}}, "credential"),
                        ({"password": PASSWORD, "what": "else"}, None)):
        r = await client.post(url, json=body, headers=customer.auth)
        assert r.status_code == 422, (body, r.text)
        if field is not None:
            assert field in r.text
    assert await events(db, "passkey_removed") == []
    r = await client.post(url, json={"password": "not-the-password-9"}, headers=customer.auth)
    assert r.status_code == 401, r.text
    assert problem(r)["type"].endswith("/invalid-credentials")
    assert problem(r)["field"] == "password"
    assert await failures(db, settings, customer) == 1
    assert [(e.success, e.details["reason"]) for e in await events(db, "passkey_removed")] == [
        (False, "invalid-credentials")
    ]
    assert len(await my_passkeys(client, customer)) == 1
    # Counted with sign-in failures: past the free ones, even the right password waits.
    for _ in range(throttle.FREE_FAILURES - 1):
        r = await client.post(url, json={"password": "not-the-password-9"}, headers=customer.auth)
        assert r.status_code == 401
    r = await client.post(url, json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 429, r.text
    assert problem(r)["type"].endswith("/too-many-attempts")
    assert len(await my_passkeys(client, customer)) == 1
    clock.advance(seconds=60)
    inbox.messages.clear()
    r = await client.post(url, json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text
    assert await my_passkeys(client, customer) == []
    await deliver()
    assert "A passkey was removed from your account" in [
        m["Subject"] for m in inbox.to(customer.email or "")
    ]


async def test_removing_with_the_app_on_asks_its_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database
) -> None:
    customer, _ = await with_passkey(client, inbox, deliver)
    totp = await turn_on_totp(client, customer)
    clock.advance(seconds=30)
    [mine] = await my_passkeys(client, customer)
    url = removal(mine["id"])
    for body in ({"password": PASSWORD}, {"password": PASSWORD, "code": "000000"}):
        r = await client.post(url, json=body, headers=customer.auth)
        assert r.status_code == 401, r.text
        assert problem(r)["type"].endswith("/invalid-second-factor")
        assert problem(r)["field"] == "code"
    r = await client.post(url, json={"password": "wrong-password-22", "code": totp.at(utcnow())},
                          headers=customer.auth)
    assert r.status_code == 401 and problem(r)["field"] == "password"
    assert len(await my_passkeys(client, customer)) == 1
    r = await client.post(url, json={"password": PASSWORD, "code": totp.at(utcnow())},
                          headers=customer.auth)
    assert r.status_code == 200, r.text
    assert await my_passkeys(client, customer) == []


async def test_removing_with_two_step_by_passkey_asks_a_passkey_or_a_recovery_code(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings, app: Any,
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    codes = await turn_on(client, customer)
    second = await another_passkey(client, customer, device)
    _, stranger = await with_passkey(client, inbox, deliver)
    first_id, second_id = (p["id"] for p in await my_passkeys(client, customer))

    r = await client.post(removal(second_id), json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 401 and problem(r)["field"] == "code", r.text
    ask = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    r = await client.post(
        removal(second_id),
        json={"password": PASSWORD, "credential": stranger.get(ask.json()["public_key"])},
        headers=customer.auth,
    )
    assert r.status_code == 401, r.text
    assert (problem(r)["type"].endswith("/invalid-second-factor"), problem(r)["field"]) == (
        True, "credential"
    )
    r = await client.post(
        removal(second_id), json={"password": PASSWORD, "credential": {}}, headers=customer.auth
    )
    assert r.status_code == 422 and problem(r)["type"].endswith("/passkey-invalid")
    assert len(await my_passkeys(client, customer)) == 2
    assert await failures(db, settings, customer) == 2

    # The passkey being removed may answer for itself; its answer is spent with it.
    answer = await confirmation(client, customer, second)
    r = await client.post(
        removal(second_id), json={"password": PASSWORD, "credential": answer},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    assert [p["id"] for p in await my_passkeys(client, customer)] == [first_id]

    # The last one stays while two-step asks for it — refused before the password is tried.
    r = await client.post(
        removal(first_id), json={"password": "wrong-password-22", "code": codes[0]},
        headers=customer.auth,
    )
    assert r.status_code == 409 and problem(r)["type"].endswith("/passkey-last-second-factor")
    assert await failures(db, settings, customer) == 2  # the 409 counted nothing

    # A third passkey; removing the first one with the second's replayed answer is refused,
    # with a recovery code it goes. (A new minute for the re-authentications' limits.)
    await app.state.rate_limits.reset()
    await another_passkey(client, customer, device, name="third")
    r = await client.post(
        removal(first_id), json={"password": PASSWORD, "credential": answer},
        headers=customer.auth,
    )
    assert r.status_code == 401 and problem(r)["field"] == "credential", r.text
    assert len(await my_passkeys(client, customer)) == 2
    r = await client.post(
        removal(first_id), json={"password": PASSWORD, "code": codes[0]}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    assert [p["name"] for p in await my_passkeys(client, customer)] == ["third"]
    removed = [e.success for e in await events(db, "passkey_removed")]
    assert removed == [False, False, True, False, True]


# --- GET /me ----------------------------------------------------------------------------------


async def test_me_says_which_second_step_is_on(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)

    async def me() -> tuple[bool, str | None]:
        body = (await client.get("/api/v1/me", headers=customer.auth)).json()
        return body["two_step"], body["two_step_method"]

    assert await me() == (False, None)
    codes = await turn_on(client, customer)
    assert await me() == (True, "passkey")
    r = await client.patch("/api/v1/me", json={"display_name": "Pat"}, headers=customer.auth)
    assert r.status_code == 200, r.text
    assert (r.json()["two_step"], r.json()["two_step_method"]) == (True, "passkey")
    r = await client.post(
        "/api/v1/me/passkeys/two-step/disable", json={"password": PASSWORD, "code": codes[0]},
        headers=customer.auth,
    )
    assert r.status_code == 200, r.text
    assert await me() == (False, None)
    await turn_on_totp(client, customer)
    assert await me() == (True, "app")
    assert device  # (the passkey stays; with the app on it is accepted at the second step)


async def test_the_app_holders_me_is_unchanged(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, with_phone=False)
    totp: pyotp.TOTP = await turn_on_totp(client, customer)
    body = (await client.get("/api/v1/me", headers=customer.auth)).json()
    assert body["two_step"] is True and body["two_step_method"] == "app"
    assert totp
