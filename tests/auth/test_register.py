"""Registration and contact verification, end to end: real SMTP, the SMS outbox, the worker."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth.passwords import MAX_LENGTH, MIN_LENGTH, common_passwords
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.translations import translate
from simcharge.worker.models import OutboxJob
from tests.auth.helpers import (
    PASSWORD,
    Customer,
    Deliver,
    argon2_work_of,
    comparable,
    login,
    new_identity,
    problem,
    register,
    signup,
    verify,
)
from tests.conftest import SmtpInbox, last_sms_code


async def accounts(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(Account))).scalar_one())


async def outbox_jobs(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(OutboxJob))).scalar_one())


async def test_register_then_verify_email_and_phone(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    username, email, phone = new_identity()
    r = await register(client, username=username, email=email, phone=phone, language="zh-Hans")
    assert r.status_code == 202 and r.json()["channels"] == ["email", "sms"]
    assert await deliver() >= 2
    mail = inbox.to(str(email))[-1]
    assert mail["Subject"] == "验证您的电子邮件地址"
    assert mail.get_body(preferencelist=("html",)) is not None
    customer = Customer(username, PASSWORD, email, phone)
    r = await verify(client, customer, "email", inbox.last_code(str(email)))
    assert r.status_code == 200 and r.json()["email_verified"] and r.json()["email"] == email
    r = await verify(client, customer, "sms", last_sms_code(str(phone)))
    assert r.status_code == 200 and r.json()["phone_verified"] and r.json()["phone"] == phone
    # Verified contacts now sign in too.
    assert (await login(client, str(email))).status_code == 200
    assert (await login(client, str(phone))).status_code == 200


async def test_unverified_contacts_do_not_sign_in(
    client: httpx.AsyncClient, deliver: Deliver
) -> None:
    username, email, phone = new_identity()
    await register(client, username=username, email=email, phone=phone)
    unknown = await login(client, "nobody-at-all@example.com")
    pending = await login(client, str(email))
    assert comparable(pending) == comparable(unknown)
    assert (await login(client, username)).status_code == 200


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"username": "x", "password": PASSWORD, "email": "a@example.com"}, ["username"]),
        ({"username": "good.name", "password": PASSWORD, "email": "not-an-address"}, ["email"]),
        ({"username": "good.name", "password": PASSWORD, "phone": "12345"}, ["phone"]),
        ({"username": "good.name", "password": PASSWORD}, ["email"]),
        (
            {
                "username": "good.name",
                "password": PASSWORD,
                "email": "a@example.com",
                "language": "fr",
            },
            ["language"],
        ),
        ({"username": "good.name", "password": "short", "email": "a@example.com"}, ["password"]),
        (
            {"username": "good.name", "password": "password123", "email": "a@example.com"},
            ["password"],
        ),
        (
            {"username": "good.name", "password": "Good.Name", "email": "a@example.com"},
            ["password"],
        ),
        ({"username": "good.name", "password": "x" * 129, "email": "a@example.com"}, ["password"]),
        ({"username": "!", "password": "short", "phone": "1"}, ["username", "phone", "password"]),
    ],
)
async def test_bad_registrations_name_every_field_and_create_nothing(
    client: httpx.AsyncClient, db: Database, body: dict[str, str], fields: list[str]
) -> None:
    before = await accounts(db)
    r = await client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 422
    assert [e["field"] for e in problem(r)["errors"]] == fields
    assert await accounts(db) == before


async def test_without_a_language_the_browsers_or_the_operators_is_taken(
    settings: Settings, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    app = create_app(settings.model_copy(update={"default_language": "es"}), db=db,
                     run_worker=False)
    transport = httpx.ASGITransport(app=app)
    said = {"": "es", "zh-TW,zh;q=0.9": "zh-Hant", "de-DE,de;q=0.9": "es"}
    emails: list[str] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for accept_language, expected in said.items():
            username, email, _ = new_identity(with_phone=False)
            emails.append(email)
            r = await client.post(
                "/api/v1/auth/register",
                json={"username": username, "password": PASSWORD, "email": email},
                headers={"accept-language": accept_language} if accept_language else {},
            )
            assert r.status_code == 202
            async with db.read() as s:
                language = (
                    await s.execute(select(Account.language).where(Account.username == username))
                ).scalar_one()
            assert language == expected, accept_language
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["RegisterIn"]
    assert "SIMCHARGE_DEFAULT_LANGUAGE" in schema["properties"]["language"]["description"]
    assert "language" not in schema.get("required", [])
    await deliver()
    [mail] = inbox.to(emails[0])
    assert mail["Subject"] == translate("es", "Verify your e-mail address")


async def test_malformed_register_bodies(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/register", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and problem(r)["type"] == "/problems/bad-request"
    r = await client.post(
        "/api/v1/auth/register", json={"username": "abc", "password": PASSWORD, "admin": True}
    )
    assert r.status_code == 422 and problem(r)["errors"][0]["field"] == "admin"


async def test_unicode_passwords_are_normalised(
    client: httpx.AsyncClient, deliver: Deliver
) -> None:
    username, email, _ = new_identity(with_phone=False)
    # "ﬁ" (U+FB01) normalises (NFKC) to "fi": either spelling signs in.
    r = await register(
        client, username=username, email=email, phone=None, password="ﬁne-wine-1776-vintage"
    )
    assert r.status_code == 202
    assert (await login(client, username, "fine-wine-1776-vintage")).status_code == 200


async def test_a_taken_username_is_said(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await register(
        client, username=customer.username.upper(), email="other@example.com", phone=None
    )
    assert r.status_code == 409 and problem(r)["type"] == "/problems/username-taken"


async def test_a_taken_contact_is_not_revealed(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    holder = await signup(client, inbox, deliver)
    inbox.messages.clear()
    before = await accounts(db)
    fresh_name, fresh_email, _ = new_identity(with_phone=False)
    taken_name, _, _ = new_identity(with_phone=False)
    fresh = await register(client, username=fresh_name, email=fresh_email, phone=None)
    taken = await register(client, username=taken_name, email=holder.email, phone=None)
    assert taken.status_code == fresh.status_code == 202
    assert taken.json() == fresh.json()
    # Both accounts exist, so what follows answers alike too: signing in with the username
    # chosen, and registering it again.
    assert await accounts(db) == before + 2
    signed_in = {}
    for name, address in ((fresh_name, fresh_email), (taken_name, holder.email)):
        r = await login(client, name)
        assert r.status_code == 200
        account = r.json()["account"]
        assert account["email_pending"] == address and account["email_verified"] is False
        signed_in[name] = {"Authorization": f"Bearer {r.json()['token']}"}
        again = await register(client, username=name, email=f"other-{address}", phone=None)
        assert again.status_code == 409 and problem(again)["type"] == "/problems/username-taken"
    await deliver()
    # The holder is told; the newcomer gets no code for an address that is not theirs…
    assert [m["Subject"] for m in inbox.to(str(holder.email))] == [
        "Someone tried to use your e-mail address"
    ]
    assert inbox.last_code(fresh_email)
    # …not even when asking again — which answers as for a free address (too soon after the
    # first code) — and the contact can never be verified.
    for name in (fresh_name, taken_name):
        r = await client.post(
            "/api/v1/auth/verify/resend", json={"channel": "email"}, headers=signed_in[name]
        )
        assert (r.status_code, problem(r)["type"]) == (429, "/problems/code-resend-too-soon")
    await deliver()
    assert [m["Subject"] for m in inbox.to(str(holder.email))] == [
        "Someone tried to use your e-mail address"
    ]
    r = await client.post(
        "/api/v1/auth/verify",
        json={"channel": "email", "code": inbox.last_code(fresh_email)},
        headers=signed_in[taken_name],
    )
    assert r.status_code == 422 and problem(r)["type"] == "/problems/invalid-code"


async def test_registration_does_the_same_work_whether_the_contact_is_taken_or_not(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    holder = await signup(client, inbox, deliver)
    work = []
    for email in ("someone-new@example.com", holder.email):
        name, _, _ = new_identity(with_phone=False)
        jobs_before = await outbox_jobs(db)
        r, cost = await argon2_work_of(register(client, username=name, email=email, phone=None))
        assert r.status_code == 202
        work.append((cost, await outbox_jobs(db) - jobs_before))
    # One argon2id hash each (the new account's password) and as many messages queued (a code
    # to the new address; a warning to the taken address's holder), besides the welcome notice.
    assert work[0] == work[1] == ({"hash": 1, "verify": 0}, 2)


async def test_register_answers_take_the_same_minimum_time(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    from simcharge.app import create_app

    slow = settings.model_copy(update={"auth_min_response_ms": 400})
    app = create_app(slow, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        holder_name, holder_email, _ = new_identity(with_phone=False)
        await register(c, username=holder_name, email=holder_email, phone=None)
        durations = []
        for email in (holder_email, "someone-new@example.com"):
            name, _, _ = new_identity(with_phone=False)
            started = time.monotonic()
            r = await register(c, username=name, email=email, phone=None)
            durations.append(time.monotonic() - started)
            assert r.status_code == 202
    assert all(d >= 0.4 for d in durations)


async def test_registration_is_rate_limited_per_address(client: httpx.AsyncClient) -> None:
    statuses = []
    for _ in range(11):
        name, email, _ = new_identity(with_phone=False)
        statuses.append(
            (await register(client, username=name, email=email, phone=None)).status_code
        )
    assert statuses[:10] == [202] * 10
    assert statuses[10] == 429


async def test_verification_needs_the_right_code_and_the_account(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    username, email, _ = new_identity(with_phone=False)
    await register(client, username=username, email=email, phone=None)
    await deliver()
    customer = Customer(username, PASSWORD, email, None)
    code = inbox.last_code(str(email))
    wrong = "000000" if code != "000000" else "111111"
    r = await verify(client, customer, "email", wrong)
    assert r.status_code == 422 and problem(r)["type"] == "/problems/invalid-code"
    r = await verify(client, Customer(username, "not-the-password", email, None), "email", code)
    assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-credentials"
    r = await client.post("/api/v1/auth/verify", json={"channel": "email", "code": code})
    assert r.status_code == 401
    r = await verify(client, customer, "sms", code)
    assert r.status_code == 422
    assert (await verify(client, customer, "email", code)).status_code == 200
    # Used once, never again.
    assert (await verify(client, customer, "email", code)).status_code == 422


async def test_codes_never_rest_in_the_clear(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    username, email, _ = new_identity(with_phone=False)
    await register(client, username=username, email=email, phone=None)
    async with db.read() as s:
        jobs = (
            (await s.execute(select(OutboxJob).where(OutboxJob.kind == "notifications.code")))
            .scalars()
            .all()
        )
        assert jobs and "sealed" in jobs[-1].payload
    await deliver()
    code = inbox.last_code(str(email))
    async with db.read() as s:
        job = (await s.execute(select(OutboxJob).where(OutboxJob.id == jobs[-1].id))).scalar_one()
        assert job.payload == {}
        dumped = " ".join(
            str(row)
            for row in (await s.execute(select(OutboxJob.payload, OutboxJob.last_error))).all()
        )
        assert code not in dumped
        from simcharge.auth.models import VerificationCode
        from simcharge.notifications.models import MessageLog

        stored = (await s.execute(select(VerificationCode.code_hash))).scalars().all()
        assert stored and all(code not in h for h in stored)
        logged = (
            await s.execute(select(MessageLog.subject, MessageLog.target, MessageLog.error))
        ).all()
        assert logged and all(code not in str(row) for row in logged)


def test_the_breached_list_holds_the_passwords_that_can_match() -> None:
    entries = common_passwords()
    # Only entries the length rule lets through count (shorter ones are refused before): of
    # 30,000 common passwords, the 229 of 12 characters or more.
    assert len(entries) >= 200
    assert all(MIN_LENGTH <= len(e) <= MAX_LENGTH and e == e.casefold() for e in entries)


async def test_a_long_breached_password_is_refused_in_any_case(client: httpx.AsyncClient) -> None:
    breached = sorted(e for e in common_passwords() if len(e) >= 12 and e.isalpha())[0]
    for password in (breached, breached.upper()):
        r = await client.post(
            "/api/v1/auth/register",
            json={"username": "good.name", "password": password, "email": "a@example.com"},
        )
        assert r.status_code == 422 and problem(r)["field"] == "password"
        assert "too common" in problem(r)["errors"][0]["detail"]


async def test_phone_is_a_channel_in_the_api_and_its_description(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    username, _, phone = new_identity()
    await register(client, username=username, email=None, phone=phone)
    await deliver()
    customer = Customer(username, PASSWORD, None, phone)
    r = await verify(client, customer, "phone", last_sms_code(str(phone)))
    assert r.status_code == 200 and r.json()["phone_verified"] is True
    r = await client.post(
        "/api/v1/auth/verify", json={"channel": "pigeon", "code": "1", "login": "a", "password": "b"}
    )
    assert r.status_code == 422 and problem(r)["field"] == "channel"
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for name in ("VerifyIn", "ForgotIn", "ResendIn", "UnlockRequestIn"):
        channel = schemas[name]["properties"]["channel"]
        assert channel["enum"] == ["email", "phone", "sms"], name
        assert "`phone` (the same as `sms`)" in channel["description"]
