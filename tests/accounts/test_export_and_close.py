"""A customer's own data: "download my data" and "close my account" (GDPR arts. 15/17/20,
ASVS 8.3.2).

What was missing: simcharge had no way for a customer to get a copy of what the operator holds
about them, nor to close their account — `GET /api/v1/me/export` and `POST /api/v1/me/close`
answered 404, the security page had neither, and a closed account (status `closed`) was
unknown to sign-in and registration."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pyotp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.accounts.repository import AccountRepository
from simcharge.auth.models import AuthSession, KnownDevice, SecurityEvent
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lines.models import Line
from simcharge.lines.service import credit_wallet, line_balances
from simcharge.orders.models import Order, OrderState, Refund
from tests.auth.helpers import (
    PASSWORD,
    Deliver,
    comparable,
    login,
    problem,
    register,
    signup,
    verify,
)
from tests.auth.helpers import Customer as C
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.conftest import SmtpInbox, last_sms_code
from tests.factories import create_line, load_demo_catalog
from tests.orders.helpers import new_payer, place
from tests.portal.helpers import csrf_of, new_customer, sign_in


async def _account(db: Database, username: str) -> Account:
    async with db.read() as s:
        account = await AccountRepository(s).by_username(username)
    assert account is not None
    return account


async def _line_of(db: Database, account_id: uuid.UUID, balance: int = 700) -> Line:
    async def run(s: AsyncSession) -> Line:
        line = await create_line(s, account_id=account_id)
        await credit_wallet(s, line, balance, source=f"t:{line.id}")
        return line

    return await db.run(run)


async def _close(
    client: httpx.AsyncClient, auth: dict[str, str], **body: Any
) -> httpx.Response:
    return await client.post("/api/v1/me/close", headers=auth, json=body)


# --- download my data ------------------------------------------------------------------------


async def test_the_export_holds_the_customers_own_data_and_no_one_elses(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    other = await new_payer(db, settings)
    own = await place(client, payer)
    # A gift the customer pays for another's line is theirs; one another pays for theirs is not.
    gift = await place(client, payer, msisdn=other.line.msisdn)
    received = await place(client, other, msisdn=payer.line.msisdn)
    r = await client.get("/api/v1/me/export", headers=payer.auth)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["content-disposition"].startswith('attachment; filename="my-data-')
    doc = r.json()
    assert doc["format"] == "simcharge.account-export/1"
    assert doc["account"]["id"] == str(payer.account_id)
    assert doc["account"]["email"] == payer.email
    assert [line["msisdn"] for line in doc["lines"]] == [payer.line.msisdn]
    assert doc["lines"][0]["balances"]["wallet"]["currency"] == "USD"
    assert {o["reference"] for o in doc["orders"]} == {own["reference"], gift["reference"]}
    assert received["reference"] not in r.text and other.email not in r.text
    mine = next(o for o in doc["orders"] if o["reference"] == own["reference"])
    assert mine["state"] == "pending" and mine["payment"]["state"] == "pending"
    assert mine["total"] == own["total"]["minor"] and mine["refunds"] == []
    # No provider's reference, hosted page, QR payload or raw notification.
    assert set(mine["payment"]) == {"provider", "state", "created_at"}
    assert "/sandbox/pay/" not in r.text and own["next_action"]["url"] not in r.text
    assert [e["kind"] for e in doc["security_events"]] == []  # made in the database: no log yet
    assert doc["sessions"][0]["ip"] == "198.51.100.7"
    assert "password_hash" not in r.text and "totp_secret" not in r.text


async def test_the_export_of_a_registered_customer_has_their_history(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    doc = (await client.get("/api/v1/me/export", headers=customer.auth)).json()
    assert doc["account"]["username"] == customer.username
    assert doc["account"]["phone"] == customer.phone and doc["account"]["phone_verified_at"]
    kinds = [e["kind"] for e in doc["security_events"]]
    assert kinds[0] == "registered" and "login" in kinds
    assert next(n["template"] for n in doc["notices"]) == "account.welcome"
    assert {m["channel"] for m in doc["messages_sent"]} == {"email", "sms"}
    assert all("*" in m["to"] for m in doc["messages_sent"])  # masked, as the log keeps them
    assert doc["known_devices"][0]["user_agent"] == "pytest-browser/1.0"


async def test_the_export_needs_a_session_and_is_rate_limited(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    r = await client.get("/api/v1/me/export")
    assert r.status_code == 401 and problem(r)["type"] == "/problems/not-authenticated"
    payer = await new_payer(db, settings)
    for _ in range(5):
        assert (await client.get("/api/v1/me/export", headers=payer.auth)).status_code == 200
    r = await client.get("/api/v1/me/export", headers=payer.auth)
    assert r.status_code == 429 and problem(r)["type"] == "/problems/too-many-attempts"
    assert int(r.headers["retry-after"]) > 0
    # Per account: another customer is not held back.
    other = await new_payer(db, settings)
    assert (await client.get("/api/v1/me/export", headers=other.auth)).status_code == 200


# --- close my account ------------------------------------------------------------------------


async def test_closing_an_account(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    assert customer.email and customer.phone
    account = await _account(db, customer.username)
    line = await _line_of(db, account.id, balance=700)
    second_session = (await login(client, customer.username)).json()["token"]
    r = await _close(client, customer.auth, password=PASSWORD)
    assert r.status_code == 200, r.text
    # Every session has ended.
    for token in (customer.token, second_session):
        r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    # The confirmation went to the address and number the account had, before they were erased.
    await deliver()
    assert inbox.to(customer.email)[-1]["Subject"] == "Your simcharge account is closed"
    async with db.read() as s:
        closed = await s.get(Account, account.id)
        assert closed is not None
        kept = await s.get(Line, line.id)
        assert kept is not None
        balances = await line_balances(s, kept)
        sessions = (
            await s.execute(select(AuthSession).where(AuthSession.account_id == account.id))
        ).scalars().all()
        devices = (
            await s.execute(select(KnownDevice).where(KnownDevice.account_id == account.id))
        ).scalars().all()
        event = (
            await s.execute(
                select(SecurityEvent).where(
                    SecurityEvent.account_id == account.id, SecurityEvent.kind == "account_closed"
                )
            )
        ).scalar_one()
    # The line and its balance stay with the number, detached from the login.
    assert kept.account_id is None and balances.wallet.available == 700
    assert closed.status == "closed" and closed.username == f"closed-{account.id.hex}"
    assert (closed.email, closed.phone, closed.email_verified_at, closed.phone_verified_at) == (
        None, None, None, None,
    )
    assert closed.display_name is None and closed.totp_secret_sealed is None
    assert closed.password_hash == "!closed"
    assert sessions and all(x.revoked_at and x.ip is None and x.user_agent is None
                            for x in sessions)
    assert devices == []
    # The security log says it happened, and nothing personal.
    assert event.success and event.ip is None and event.user_agent is None
    assert event.details == {"lines_detached": 1, "sessions_ended": 2}
    assert customer.username not in str(event.details)


async def test_a_closed_account_signs_in_as_no_one_and_its_names_are_free_again(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    assert customer.email and customer.phone
    assert (await _close(client, customer.auth, password=PASSWORD)).status_code == 200
    await deliver()
    assert "closed" in inbox.to(customer.email)[-1]["Subject"]
    unknown = await login(client, f"nobody-{uuid.uuid4().hex[:8]}")
    for name in (customer.username, customer.email, customer.phone):
        r = await login(client, name)
        # Exactly what an unknown login gets: no one learns that the account was there.
        assert comparable(r) == comparable(unknown), name
    r = await login(client, f"closed-{(await _account_id_of_tombstone(db))}", PASSWORD)
    assert comparable(r) == comparable(unknown)
    # Someone new takes the username, the address and the number.
    r = await register(
        client, username=customer.username, email=customer.email, phone=customer.phone
    )
    assert r.status_code == 202, r.text
    await deliver()
    newcomer = C(customer.username, PASSWORD, customer.email, customer.phone)
    r = await verify(client, newcomer, "email", inbox.last_code(customer.email))
    assert r.status_code == 200, r.text
    r = await verify(client, newcomer, "sms", last_sms_code(customer.phone))
    assert r.status_code == 200, r.text
    r = await login(client, customer.email)
    assert r.status_code == 200
    me = (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['token']}"}))
    assert me.json()["phone_verified"] and me.json()["email_verified"]


async def _account_id_of_tombstone(db: Database) -> str:
    async with db.read() as s:
        found = (
            await s.execute(select(Account.id).where(Account.status == "closed").limit(1))
        ).scalar_one()
    return found.hex


async def test_closing_needs_the_password_and_a_wrong_one_changes_nothing(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await _close(client, customer.auth)
    assert r.status_code == 422 and problem(r)["errors"][0]["field"] == "password"
    r = await _close(client, customer.auth, password="")
    assert r.status_code == 422 and problem(r)["field"] == "password"
    r = await _close(client, customer.auth, password=PASSWORD, extra="x")
    assert r.status_code == 422
    r = await _close(client, customer.auth, password="not-the-password-1")
    assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-credentials"
    assert problem(r)["field"] == "password"
    assert (await client.get("/api/v1/me", headers=customer.auth)).status_code == 200
    account = await _account(db, customer.username)
    assert account.status == "active" and account.email == customer.email
    events = (await client.get("/api/v1/me/security-events", headers=customer.auth)).json()
    assert events[0]["kind"] == "account_closed" and events[0]["success"] is False
    r = await _close(client, {})
    assert r.status_code == 401


async def test_closing_with_two_step_verification_needs_a_code(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    started = await client.post(
        "/api/v1/me/totp", headers=customer.auth, json={"password": PASSWORD}
    )
    secret = started.json()["secret"]
    confirmed = await client.post(
        "/api/v1/me/totp/confirm", headers=customer.auth,
        json={"code": pyotp.TOTP(secret).now()},
    )
    assert confirmed.status_code == 200, confirmed.text
    customer.token = confirmed.json()["token"]
    recovery = confirmed.json()["recovery_codes"][0]
    r = await _close(client, customer.auth, password=PASSWORD)
    assert r.status_code == 422 and problem(r)["field"] == "code"
    r = await _close(client, customer.auth, password=PASSWORD, code="000000")
    assert r.status_code == 401 and problem(r)["field"] == "code"
    assert (await _account(db, customer.username)).status == "active"
    r = await _close(client, customer.auth, password=PASSWORD, code=recovery)
    assert r.status_code == 200, r.text
    account_id = await _account_id(db)
    async with db.read() as s:
        closed = await s.get(Account, account_id)
    assert closed is not None and closed.totp_enabled_at is None


async def _account_id(db: Database) -> uuid.UUID:
    """The account closed in this test."""
    async with db.read() as s:
        found = (
            await s.execute(
                select(SecurityEvent.account_id).where(SecurityEvent.kind == "account_closed")
            )
        ).scalars().first()
    assert found is not None
    return found


async def test_closing_is_refused_while_money_is_on_its_way(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    password = "correct horse battery"
    r = await _close(client, payer.auth, password=password)
    assert r.status_code == 409 and problem(r)["type"] == "/problems/account-closure-blocked"
    assert problem(r)["field"] == "orders"
    order_id = uuid.UUID(order["id"])

    async def refunding(s: AsyncSession) -> None:
        await s.execute(
            update(Order).where(Order.id == order_id).values(
                state=OrderState.fulfilled.value, paid_at=utcnow(), fulfilled_at=utcnow()
            )
        )
        s.add(Refund(
            order_id=order_id, reference=f"R-{uuid.uuid4().hex[:10]}", amount=100,
            currency=order["total"]["currency"], state="pending", requested_by="staff:test",
        ))

    await db.run(refunding)
    r = await _close(client, payer.auth, password=password)
    assert r.status_code == 409 and problem(r)["field"] == "refunds"
    # Nothing changed: still signed in, the line still the customer's.
    assert (await client.get("/api/v1/me/lines", headers=payer.auth)).json()[0]["msisdn"] == (
        payer.line.msisdn
    )

    async def refunded(s: AsyncSession) -> None:
        await s.execute(update(Refund).where(Refund.order_id == order_id).values(state="succeeded"))

    await db.run(refunded)
    assert (await _close(client, payer.auth, password=password)).status_code == 200
    # The financial records stay, on the (now pseudonymous) account.
    async with db.read() as s:
        kept = await s.get(Order, order_id)
    assert kept is not None and kept.account_id == payer.account_id
    # Customer service sees the account as closed, with its orders and nothing personal.
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert page.status_code == 200, page.text
    assert '<span class="badge closed">closed by its holder</span>' in page.text
    assert f"closed-{payer.account_id.hex}" in page.text and order["reference"] in page.text
    assert payer.email not in page.text


# --- the portal ------------------------------------------------------------------------------


async def test_the_security_page_downloads_the_data_and_closes_the_account(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    customer = await new_customer(db, settings)
    sign_in(client, customer)
    page = await client.get("/account/security")
    assert page.status_code == 200
    assert 'href="/account/security/export"' in page.text
    assert 'action="/account/security/close"' in page.text
    r = await client.get("/account/security/export")
    assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.json()["account"]["username"] == customer.username
    csrf = csrf_of(page.text)
    # Without the box ticked, or with a wrong password: the page again, nothing closed.
    r = await client.post(
        "/account/security/close", data={"csrf": csrf, "password": "correct horse battery"}
    )
    assert r.status_code == 422 and "Tick the box" in r.text
    r = await client.post(
        "/account/security/close",
        data={"csrf": csrf, "password": "wrong horse battery", "confirm": "yes"},
    )
    assert r.status_code == 401 and 'id="e-close-password"' in r.text
    r = await client.post(
        "/account/security/close", data={"password": "correct horse battery", "confirm": "yes"}
    )
    assert r.status_code == 403  # no CSRF token
    assert (await client.get("/account/security")).status_code == 200
    r = await client.post(
        "/account/security/close",
        data={"csrf": csrf, "password": "correct horse battery", "confirm": "yes"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/account/closed"
    shown = await client.get("/account/closed")
    assert shown.status_code == 200 and "Your account is closed" in shown.text
    client.cookies.set("sc_session", customer.token)
    r = await client.get("/account/security")
    assert r.status_code in (303, 401)
    async with db.read() as s:
        line = await s.get(Line, customer.line.id)
    assert line is not None and line.account_id is None
