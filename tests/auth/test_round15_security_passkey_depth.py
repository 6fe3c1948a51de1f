"""Round 15's security review: a passkey answer nested deeper than the JSON parser goes (its
`clientDataJSON` of 100,000 `[`, or the portal's `credential` field of 100,000 `[`) was a 500
(RecursionError) wherever an answer is read. Now it is malformed input: `422 passkey-invalid`
on `credential` before anything is spent or counted, and the portal form's own error. On
SQLite and PostgreSQL, with the software authenticator's real signatures for the answers that
follow and succeed."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.config import Settings
from simcharge.db import Database
from tests.auth.helpers import PASSWORD, Deliver, problem
from tests.auth.test_passkey_second_step import pending, turn_on
from tests.auth.test_passkeys import Authenticator, b64, events, sign_in_options, with_passkey
from tests.backoffice.test_staff_passkeys import login_options, signed_in_with_passkey
from tests.conftest import SmtpInbox
from tests.portal.helpers import csrf_of

DEEP = "[" * 100_000


def deep(answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` with its client data nested 100,000 deep."""
    return {**answer, "response": {**answer["response"], "clientDataJSON": b64(DEEP.encode())}}


def invalid(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    assert problem(r)["type"].endswith("/passkey-invalid")
    assert problem(r)["field"] == "credential"


async def test_the_api_sign_in_refuses_it_and_the_ceremony_still_works(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    _, device = await with_passkey(client, inbox, deliver)
    ceremony = await sign_in_options(client)
    r = await client.post("/api/v1/auth/passkeys/login", json={
        "ceremony": ceremony["ceremony"], "credential": deep(device.get(ceremony["public_key"]))})
    invalid(r)
    # Nothing was spent: the same ceremony signs in.
    r = await client.post("/api/v1/auth/passkeys/login", json={
        "ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"])})
    assert r.status_code == 200, r.text


async def test_the_second_step_refuses_it(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on(client, customer)
    offer = (await pending(client, customer))["passkey"]
    r = await client.post("/api/v1/auth/login/passkey", json={
        "ceremony": offer["ceremony"], "credential": deep(device.get(offer["public_key"]))})
    invalid(r)
    r = await client.post("/api/v1/auth/login/passkey", json={
        "ceremony": offer["ceremony"], "credential": device.get(offer["public_key"])})
    assert r.status_code == 200, r.text


async def test_closing_refuses_it_and_counts_nothing(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    await turn_on(client, customer)
    options = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    answer = deep(device.get(options.json()["public_key"]))
    r = await client.post("/api/v1/me/close", headers=customer.auth,
                          json={"password": PASSWORD, "credential": answer})
    invalid(r)
    assert await events(db, "account_closed") == []
    async with db.read() as s:
        account = (await s.execute(
            select(Account).where(Account.username == customer.username))).scalar_one()
    assert account.status == "active"


async def test_removing_a_passkey_refuses_it(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer, device = await with_passkey(client, inbox, deliver)
    [own] = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    options = await client.post("/api/v1/me/passkeys/confirm/options", headers=customer.auth)
    r = await client.post(
        f"/api/v1/me/passkeys/{own['id']}/remove", headers=customer.auth,
        json={"password": PASSWORD, "credential": deep(device.get(options.json()["public_key"]))},
    )
    invalid(r)
    assert len((await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()) == 1
    assert await events(db, "passkey_removed") == []


async def test_the_back_office_sign_in_refuses_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    _, device, _ = await signed_in_with_passkey(db, settings, client)
    client.cookies.clear()
    csrf, ceremony = await login_options(client)
    r = await client.post(
        "/backoffice/login/passkey",
        json={"ceremony": ceremony["ceremony"],
              "credential": deep(device.get(ceremony["public_key"]))},
        headers={"X-CSRF-Token": csrf},
    )  # fmt: skip
    invalid(r)
    r = await client.post(
        "/backoffice/login/passkey",
        json={"ceremony": ceremony["ceremony"], "credential": device.get(ceremony["public_key"])},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("form", ["close", "remove"])
async def test_the_portal_forms_say_it_beside_the_form(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver, form: str
) -> None:
    from tests.auth.test_passkey_second_step import portal_session_two_step

    customer, device = await with_passkey(client, inbox, deliver)
    second = Authenticator()
    r = await client.post("/api/v1/me/passkeys/options", headers=customer.auth,
                          json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    r = await client.post("/api/v1/me/passkeys", headers=customer.auth, json={
        "credential": second.create(r.json()["public_key"]), "name": "Second"})
    assert r.status_code == 201, r.text
    await turn_on(client, customer)
    await portal_session_two_step(client, customer, device)
    page = await client.get("/account/security")
    assert page.status_code == 200
    own = (await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()
    action = ("/account/security/close" if form == "close"
              else f"/account/security/passkeys/{own[0]['id']}/remove")
    data = {"csrf": csrf_of(page.text), "password": PASSWORD, "credential": DEEP,
            "confirm": "yes"}
    r = await client.post(action, data=data)
    assert r.status_code == 422, r.text[:300]
    error = "e-close-credential" if form == "close" else f"e-rm-credential-{own[0]['id']}"
    assert re.search(rf'id="{error}">The passkey(&#39;|\'|&#x27;)s answer could not be checked',
                     r.text), r.text
    assert len((await client.get("/api/v1/me/passkeys", headers=customer.auth)).json()) == 2
    async with db.read() as s:
        account = (await s.execute(
            select(Account).where(Account.username == customer.username))).scalar_one()
    assert account.status == "active"
