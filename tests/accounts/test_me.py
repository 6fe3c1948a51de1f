"""The customer's own account: profile, contacts, lines, notices."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.schemas import READ_AT_ONCE
from simcharge.db import Database
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from simcharge.notifications.transports import dev_mailbox
from tests.auth.helpers import (
    PASSWORD,
    Deliver,
    login,
    new_identity,
    problem,
    register,
    signup,
    verify,
)
from tests.auth.helpers import Customer as C
from tests.conftest import SmtpInbox, last_sms_code
from tests.factories import create_line


async def test_profile_and_language(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    me = (await client.get("/api/v1/me", headers=customer.auth)).json()
    assert me["username"] == customer.username and me["email_verified"] and me["phone_verified"]
    assert "password_hash" not in me and "totp_secret_sealed" not in me
    r = await client.patch(
        "/api/v1/me", headers=customer.auth, json={"language": "zh-Hant", "display_name": "林"}
    )
    assert r.json()["language"] == "zh-Hant" and r.json()["display_name"] == "林"
    r = await client.patch("/api/v1/me", headers=customer.auth, json={"language": "klingon"})
    assert r.status_code == 422 and problem(r)["field"] == "language"
    # Errors now speak the customer's language.
    r = await client.get(
        "/api/v1/me/lines/00000000-0000-7000-8000-000000000000", headers=customer.auth
    )
    assert r.status_code == 404 and problem(r)["title"] == "此處沒有內容。"


def _contact(**change: str | None) -> dict[str, str | None]:
    """A contact change, with the password it needs."""
    return {**change, "current_password": PASSWORD}


async def test_changing_the_email_address(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    old = str(customer.email)
    new = f"new-{old}"
    r = await client.patch("/api/v1/me", headers=customer.auth, json=_contact(email=new))
    assert r.json()["email"] == old and r.json()["email_pending"] == new
    await deliver()
    assert [m["Subject"] for m in inbox.to(old)][
        -1
    ] == "A change of your contact details was requested"
    code = inbox.last_code(new)
    r = await client.post(
        "/api/v1/auth/verify", headers=customer.auth, json={"channel": "email", "code": code}
    )
    assert r.status_code == 200 and r.json()["email"] == new and r.json()["email_pending"] is None
    await deliver()
    assert inbox.to(old)[-1]["Subject"] == "Your contact details were changed"
    assert (await login(client, new)).status_code == 200
    assert (await login(client, old)).status_code == 401
    r = await client.patch("/api/v1/me", headers=customer.auth, json=_contact(email="broken"))
    assert r.status_code == 422 and problem(r)["field"] == "email"


async def test_a_session_alone_does_not_move_the_contacts(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Whoever holds a stolen session cannot point the codes and resets elsewhere: a new e-mail
    address or number needs the password, checked as at sign-in (failures counted, logged)."""
    customer = await signup(client, inbox, deliver)
    for body, status, field in (
        ({"email": "thief@example.com"}, 422, "current_password"),
        ({"phone": "+14155550000", "current_password": ""}, 422, "current_password"),
        ({"email": "thief@example.com", "current_password": "not-the-password"}, 401,
         "current_password"),
    ):  # fmt: skip
        r = await client.patch("/api/v1/me", headers=customer.auth, json=body)
        assert r.status_code == status, r.text
        assert problem(r)["field"] == field
    me = (await client.get("/api/v1/me", headers=customer.auth)).json()
    assert me["email_pending"] is None and me["phone_pending"] is None
    await deliver()
    assert not inbox.to("thief@example.com")
    events = (await client.get("/api/v1/me/security-events", headers=customer.auth)).json()
    refused = [e for e in events if e["kind"] == "contact_change_requested"]
    assert refused and refused[0]["success"] is False
    # The name and the language need no password.
    r = await client.patch("/api/v1/me", headers=customer.auth, json={"display_name": "Ana"})
    assert r.status_code == 200 and r.json()["display_name"] == "Ana"


async def test_changing_the_phone_number(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    old, new = str(customer.phone), "+14155559876"
    r = await client.patch("/api/v1/me", headers=customer.auth, json=_contact(phone="+1 415-555-9876"))
    assert r.json()["phone"] == old and r.json()["phone_pending"] == new
    await deliver()
    # The old number is told at once, by SMS; the new one gets the code.
    assert "A change of your phone number to +1415***9876 was requested." in sms_to(old)[-1]
    code = last_sms_code(new)
    # Until the code is entered, the old number is the one that signs in.
    assert (await login(client, new)).status_code == 401
    r = await client.post(
        "/api/v1/auth/verify", headers=customer.auth, json={"channel": "phone", "code": code}
    )
    assert r.status_code == 200 and r.json()["phone"] == new and r.json()["phone_pending"] is None
    await deliver()
    assert "Your phone number was changed to +1415***9876." in sms_to(old)[-1]
    assert (await login(client, new)).status_code == 200
    assert (await login(client, old)).status_code == 401


def sms_to(number: str) -> list[str]:
    return [m.text for m in dev_mailbox if m.channel == "sms" and m.to == number]


async def test_a_contact_of_another_account_gets_no_code_and_its_holder_is_told(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    first = await signup(client, inbox, deliver)
    second = await signup(client, inbox, deliver)
    inbox.messages.clear()
    r = await client.patch("/api/v1/me", headers=second.auth, json=_contact(email=first.email))
    # The answer is the one of any change (the address is pending), and reveals nothing.
    assert r.status_code == 200 and r.json()["email_pending"] == first.email
    await deliver()
    assert [m["Subject"] for m in inbox.to(str(first.email))] == [
        "Someone tried to use your e-mail address"
    ]
    r = await client.post(
        "/api/v1/auth/verify", headers=second.auth, json={"channel": "email", "code": "123456"}
    )
    assert r.status_code == 422


async def test_a_contact_taken_meanwhile_is_refused_at_verification(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Two accounts wait for the same new address (a pending contact belongs to no one): the
    first code entered wins it; the other code is then refused."""
    first = await signup(client, inbox, deliver)
    second = await signup(client, inbox, deliver)
    shared = "shared-address@example.com"
    await client.patch("/api/v1/me", headers=second.auth, json=_contact(email=shared))
    await deliver()
    seconds_code = inbox.last_code(shared)
    await client.patch("/api/v1/me", headers=first.auth, json=_contact(email=shared))
    await deliver()
    firsts_code = inbox.last_code(shared)
    r = await client.post(
        "/api/v1/auth/verify", headers=first.auth, json={"channel": "email", "code": firsts_code}
    )
    assert r.status_code == 200 and r.json()["email"] == shared
    r = await client.post(
        "/api/v1/auth/verify", headers=second.auth, json={"channel": "email", "code": seconds_code}
    )
    assert r.status_code == 409 and problem(r)["type"] == "/problems/contact-taken"


async def test_adding_a_line_with_an_sms_code(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)

    async def stock(s: AsyncSession) -> str:
        line = await create_line(
            s, msisdn="+14155553001", activation_code="LPA:1$smdp.example.com$AB-1"
        )
        await credit_wallet(s, line, 900, source="t")
        await grant_units(s, line, [UnitGrant("VOICE_S", 3000, 30)], source="t")
        return line.msisdn

    msisdn = await db.run(stock)
    r = await client.post(
        "/api/v1/me/lines", headers=customer.auth, json={"msisdn": "+1 415-555-3001"}
    )
    assert r.status_code == 202
    await deliver()
    code = last_sms_code(msisdn)
    wrong = await client.post(
        "/api/v1/me/lines/verify",
        headers=customer.auth,
        json={"msisdn": msisdn, "code": "000000" if code != "000000" else "111111"},
    )
    assert wrong.status_code == 422
    r = await client.post(
        "/api/v1/me/lines/verify", headers=customer.auth, json={"msisdn": msisdn, "code": code}
    )
    assert r.status_code == 200
    line = r.json()
    assert line["balances"]["wallet"]["available"] == 900
    assert line["activation_code"] == "LPA:1$smdp.example.com$AB-1"
    assert [
        x["msisdn"] for x in (await client.get("/api/v1/me/lines", headers=customer.auth)).json()
    ] == [msisdn]
    assert (
        await client.get(f"/api/v1/me/lines/{line['id']}", headers=customer.auth)
    ).status_code == 200
    r = await client.post("/api/v1/me/lines", headers=customer.auth, json={"msisdn": msisdn})
    assert r.status_code == 409


async def test_lines_are_private(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    owner = await signup(client, inbox, deliver)
    stranger = await signup(client, inbox, deliver)

    async def stock(s: AsyncSession) -> str:
        from simcharge.accounts.repository import AccountRepository

        account = await AccountRepository(s).by_username(owner.username)
        assert account is not None
        return str((await create_line(s, msisdn="+14155553002", account_id=account.id)).id)

    line_id = await db.run(stock)
    assert (await client.get(f"/api/v1/me/lines/{line_id}", headers=owner.auth)).status_code == 200
    r = await client.get(f"/api/v1/me/lines/{line_id}", headers=stranger.auth)
    assert r.status_code == 404 and problem(r)["field"] == "line_id"
    assert (await client.get("/api/v1/me/lines", headers=stranger.auth)).json() == []
    # Holding the SIM (the SMS code) is not enough to take another customer's line.
    await client.post("/api/v1/me/lines", headers=stranger.auth, json={"msisdn": "+14155553002"})
    await deliver()
    r = await client.post(
        "/api/v1/me/lines/verify",
        headers=stranger.auth,
        json={"msisdn": "+14155553002", "code": last_sms_code("+14155553002")},
    )
    assert r.status_code == 409 and problem(r)["type"] == "/problems/line-attached-elsewhere"
    assert (await client.get(f"/api/v1/me/lines/{line_id}", headers=owner.auth)).status_code == 200


async def test_unknown_numbers_and_bad_input(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await client.post(
        "/api/v1/me/lines", headers=customer.auth, json={"msisdn": "+14155553999"}
    )
    assert r.status_code == 404 and problem(r)["field"] == "msisdn"
    r = await client.post("/api/v1/me/lines", headers=customer.auth, json={"msisdn": "hello"})
    assert r.status_code == 422 and problem(r)["field"] == "msisdn"
    r = await client.get("/api/v1/me/lines/not-a-uuid", headers=customer.auth)
    assert r.status_code == 422 and problem(r)["field"] == "line_id"


async def test_a_verified_phone_that_is_our_line_joins_the_account(
    client: httpx.AsyncClient, db: Database, deliver: Deliver
) -> None:
    await db.run(lambda s: create_line(s, msisdn="+14155553003"))
    username, _, _ = new_identity(with_phone=False)
    await register(client, username=username, email=None, phone="+14155553003")
    await deliver()
    customer = C(username, PASSWORD, None, "+14155553003")
    assert (await verify(client, customer, "sms", last_sms_code("+14155553003"))).status_code == 200
    token = (await login(client, username)).json()["token"]
    lines = (
        await client.get("/api/v1/me/lines", headers={"Authorization": f"Bearer {token}"})
    ).json()
    assert [x["msisdn"] for x in lines] == ["+14155553003"]


async def test_notices_in_the_portal(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver, language="es")
    await login(client, customer.username, headers={"User-Agent": "Otro/1"})
    await deliver()
    body = (await client.get("/api/v1/me/notices", headers=customer.auth)).json()
    titles = [n["title"] for n in body["notices"]]
    assert (
        "Nuevo inicio de sesión en tu cuenta" in titles
        and "Te damos la bienvenida a simcharge" in titles
    )
    assert body["unread"] == len(body["notices"])
    first = body["notices"][0]["id"]
    await client.post("/api/v1/me/notices/read", headers=customer.auth, json={"ids": [first]})
    assert (await client.get("/api/v1/me/notices", headers=customer.auth)).json()["unread"] == body[
        "unread"
    ] - 1
    # Too many ids at once: refused, nothing marked.
    r = await client.post("/api/v1/me/notices/read", headers=customer.auth,
                          json={"ids": [str(uuid.uuid4()) for _ in range(READ_AT_ONCE + 1)]})  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "ids"
    assert (await client.get("/api/v1/me/notices", headers=customer.auth)).json()["unread"] == body[
        "unread"
    ] - 1
    await client.post("/api/v1/me/notices/read", headers=customer.auth, json={})
    assert (await client.get("/api/v1/me/notices?unread_only=true", headers=customer.auth)).json()[
        "notices"
    ] == []
