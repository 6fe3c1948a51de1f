"""Races in identity, on PostgreSQL (concurrent writers): a sign-in that waited for a reset, a
lock or another sign-in sees what they changed; two registrations of one name, or two accounts
verifying one address, at once, end in a clear refusal, never a 500."""

from __future__ import annotations

import asyncio

import httpx
import pyotp
import pytest

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth import codes, service, totp
from simcharge.auth.client import ClientInfo
from simcharge.auth.models import CodePurpose
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.auth.helpers import PASSWORD, login
from tests.conftest import TEST_SECRET
from tests.factories import create_account

NEW_PASSWORD = "copper-lantern-5512"
HERE = ClientInfo(ip="192.0.2.7", user_agent="pytest-races/1.0")


async def _customer(db: Database, name: str, *, with_totp: bool = False) -> tuple[Account, str]:
    secret = ""

    async def make(s):  # type: ignore[no-untyped-def]
        nonlocal secret
        now = utcnow()
        account = await create_account(
            s, username=name, password=PASSWORD, email=f"{name}@example.com",
            email_verified_at=now, created_at=now, updated_at=now,
        )
        if with_totp:
            enrolment, sealed = totp.new_enrolment(TEST_SECRET, account, "op")
            secret = enrolment.secret
            account.totp_secret_sealed, account.totp_enabled_at = sealed, now
        return account

    account = await db.run(make)
    return account, secret


@pytest.mark.postgres_only
async def test_a_totp_code_signs_in_once_even_under_two_names_at_once(
    fresh_db: Database, settings: Settings
) -> None:
    """Each TOTP time step is accepted once. A second sign-in with the same code, under the
    account's e-mail while the first (username) commits, must be refused."""
    _, secret = await _customer(fresh_db, "racetotp", with_totp=True)
    app = create_app(settings, db=fresh_db, run_worker=False)
    code = pyotp.TOTP(secret).now()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        async with fresh_db.transaction() as s:
            first = await service.login(
                s, settings, login="racetotp", password=PASSWORD, second_factor=code,
                client=HERE, now=utcnow(),
            )
            assert isinstance(first, service.SignedIn)
            second = asyncio.create_task(
                login(client, "racetotp@example.com", second_factor=code)
            )
            await asyncio.sleep(1.0)
            assert not second.done()  # waits for the account, held by the first
        r = await second
    assert r.status_code == 401, r.text  # the code's step is used: not twice


@pytest.mark.postgres_only
async def test_a_sign_in_with_the_old_password_racing_a_reset_is_refused(
    fresh_db: Database, settings: Settings
) -> None:
    """A reset ends every session and the old password stops working. A sign-in with the old
    password (under a login name not used before) that waits for the reset's lock must fail."""
    await _customer(fresh_db, "racereset")
    app = create_app(settings, db=fresh_db, run_worker=False)
    limits = app.state.rate_limits
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await login(client, "racereset")).status_code == 200  # the account's row exists

        async def issue(s):  # type: ignore[no-untyped-def]
            account = await service.find_by_login(s, "racereset")
            return (
                await codes.issue_code(
                    s, settings.secret_key, account_id=account.id,
                    purpose=CodePurpose.password_reset, channel="email",
                    target="racereset@example.com", now=utcnow(), limits=limits,
                )
            ).code

        code = await fresh_db.run(issue)
        async with fresh_db.transaction() as s:
            done = await service.reset_password(
                s, settings, login="racereset", code=code, new_password=NEW_PASSWORD,
                client=HERE, now=utcnow(), limits=limits,
            )
            assert isinstance(done, Account)
            old = asyncio.create_task(login(client, "racereset@example.com", PASSWORD))
            await asyncio.sleep(1.0)
            assert not old.done()
        r = await old
        if r.status_code == 200:
            me = await client.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {r.json()['token']}"}
            )
            assert me.status_code == 401, "a session opened with the old password outlives the reset"
    assert r.status_code == 401, r.text


@pytest.mark.postgres_only
async def test_two_registrations_of_one_username_at_once(
    fresh_db: Database, settings: Settings
) -> None:
    """A double-submitted registration: the second answers `username-taken`, never a 500."""
    app = create_app(settings, db=fresh_db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        async with fresh_db.transaction() as s:
            await service.register(
                s, settings,
                service.Registration(username="twiceuser", password=PASSWORD, email="a1@example.com"),
                client=HERE, now=utcnow(), limits=app.state.rate_limits,
            )  # fmt: skip
            other = asyncio.create_task(
                client.post(
                    "/api/v1/auth/register",
                    json={"username": "twiceuser", "password": PASSWORD, "email": "a2@example.com"},
                )
            )
            await asyncio.sleep(1.5)
        r = await other
    assert r.status_code == 409, r.text


@pytest.mark.postgres_only
async def test_two_accounts_verifying_one_address_at_once(
    fresh_db: Database, settings: Settings
) -> None:
    """Two accounts with the same address pending, both codes entered at once: the second is
    `contact-taken`, never a 500."""
    app = create_app(settings, db=fresh_db, run_worker=False)
    limits = app.state.rate_limits
    shared = "shared-box@example.com"

    async def pending(s, name):  # type: ignore[no-untyped-def]
        now = utcnow()
        account = await create_account(
            s, username=name, password=PASSWORD, email_pending=shared, created_at=now,
            updated_at=now,
        )
        issued = await codes.issue_code(
            s, settings.secret_key, account_id=account.id, purpose=CodePurpose.verify_email,
            channel="email", target=shared, now=now, limits=limits,
        )
        return account.id, issued.code

    a_id, a_code = await fresh_db.run(lambda s: pending(s, "sharer1"))
    _, b_code = await fresh_db.run(lambda s: pending(s, "sharer2"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        async with fresh_db.transaction() as s:
            a = await s.get(Account, a_id, with_for_update=True)
            assert a is not None
            done = await service.verify_contact(
                s, settings, a, "email", a_code, client=HERE, now=utcnow(), limits=limits
            )
            assert isinstance(done, Account)
            other = asyncio.create_task(
                client.post(
                    "/api/v1/auth/verify",
                    json={"channel": "email", "code": b_code, "login": "sharer2",
                          "password": PASSWORD},
                )
            )
            await asyncio.sleep(1.5)
        r = await other
    assert r.status_code == 409, r.text


@pytest.mark.postgres_only
async def test_a_sign_in_during_lock_my_account_is_refused_and_no_session_outlives_the_unlock(
    fresh_db: Database, settings: Settings
) -> None:
    """"Lock my account" ends every session. A sign-in that runs while the lock commits waits
    for it and is refused (the account is locked); and an unlock ends any session that says it
    was opened meanwhile — the holder signs in again."""
    account, _ = await _customer(fresh_db, "racelock")
    app = create_app(settings, db=fresh_db, run_worker=False)
    limits = app.state.rate_limits
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        before = await login(client, "racelock", PASSWORD)
        assert before.status_code == 200
        async with fresh_db.transaction() as s:
            locked = await s.get(Account, account.id, with_for_update=True)
            assert locked is not None
            await service.lock_account(s, locked, reason="customer", client=HERE, now=utcnow())
            intruder = asyncio.create_task(login(client, "racelock", PASSWORD))
            await asyncio.sleep(1.0)
            assert not intruder.done()  # waits for the account, held by the lock
        r = await intruder
        assert r.status_code != 200 and "token" not in r.json(), r.text

        # A session alive while locked (opened by the race the lock order now prevents):
        # brought back to life by hand, then ended by the unlock.
        token = {"Authorization": f"Bearer {before.json()['token']}"}

        async def alive_again(s):  # type: ignore[no-untyped-def]
            from sqlalchemy import update

            from simcharge.auth.models import AuthSession

            await s.execute(update(AuthSession).where(AuthSession.account_id == account.id)
                            .values(revoked_at=None, revoked_reason=None))

        await fresh_db.run(alive_again)

        async def issue(s):  # type: ignore[no-untyped-def]
            return (
                await codes.issue_code(
                    s, settings.secret_key, account_id=account.id, purpose=CodePurpose.unlock,
                    channel="email", target="racelock@example.com", now=utcnow(), limits=limits,
                )
            ).code

        code = await fresh_db.run(issue)
        r = await client.post("/api/v1/auth/unlock", json={"login": "racelock", "code": code})
        assert r.status_code == 200, r.text
        me = await client.get("/api/v1/me", headers=token)
    assert me.status_code == 401, "a session from before the unlock lives on"
