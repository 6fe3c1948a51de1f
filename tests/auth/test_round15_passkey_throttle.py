"""Review round 15: a failed passkey at the second step of a sign-in is throttled as a wrong code.

A wrong code given with the password (`POST /auth/login` with `second_factor`) counts on the
client address's `login` limit (the edge), on the throttle row of the name the password was
given under and on the account's row; once the name's row is locked out, the next sign-in under
it is `429 too-many-attempts` with `Retry-After`. A failed passkey answer (`POST
/auth/login/passkey`) counted on the address and the account's row only, and once locked out it
was answered `401 invalid-second-factor`. Now it counts on the very same limits (the pending
sign-in's handle remembers the kind of name the password was given under) and is refused the same
way. On SQLite and PostgreSQL; the address's limit also with Redis (`SIMCHARGE_TEST_REDIS_URL`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth import throttle
from simcharge.auth.models import LoginThrottle
from simcharge.auth.second_step import login_kind_of
from simcharge.auth.throttle import LIMITS, address_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import Customer, Deliver, login, problem
from tests.auth.test_passkey_second_step import answer, turn_on_totp
from tests.auth.test_passkeys import Authenticator, events, with_passkey
from tests.conftest import SmtpInbox

REDIS_URL = os.environ.get("SIMCHARGE_TEST_REDIS_URL")
WRONG_CODE = "000000"


async def offer_as(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """The passkey ceremony of a pending sign-in whose password was given under `name`."""
    r = await login(client, name)
    assert r.status_code == 401, r.text
    body = problem(r)
    assert body["type"].endswith("/second-factor-required")
    offer: dict[str, Any] = body["passkey"]
    return offer


async def failures(db: Database, settings: Settings, customer: Customer) -> dict[str, int]:
    """The consecutive failures on the rows of the account's username, e-mail and itself."""
    async with db.read() as s:
        account = (
            await s.execute(select(Account).where(Account.username == customer.username))
        ).scalar_one()
        assert account.email is not None
        keys = {
            "username": throttle.name_key(settings.secret_key, "username", account.username),
            "email": throttle.name_key(settings.secret_key, "email", account.email),
            "account": throttle.account_key(settings.secret_key, account.id),
        }
        rows = {
            row.key_hash: row.failures
            for row in (
                await s.execute(select(LoginThrottle).where(LoginThrottle.key_hash.in_(keys.values())))
            ).scalars()
        }
    return {name: rows.get(key, 0) for name, key in keys.items()}


async def test_a_failed_passkey_counts_on_the_rows_a_wrong_code_counts_on(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    alice, device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, alice)
    assert alice.email is not None
    stranger = Authenticator()

    r = await login(client, alice.username, second_factor=WRONG_CODE)
    assert problem(r)["type"].endswith("/invalid-second-factor")
    assert await failures(db, settings, alice) == {"username": 1, "email": 0, "account": 1}
    r = await answer(client, await offer_as(client, alice.username), stranger)
    assert r.status_code == 401 and problem(r)["type"].endswith("/invalid-second-factor")
    assert await failures(db, settings, alice) == {"username": 2, "email": 0, "account": 2}

    # Under her e-mail address: that name's row, as a wrong code given with it.
    r = await login(client, alice.email, second_factor=WRONG_CODE)
    assert problem(r)["type"].endswith("/invalid-second-factor")
    assert await failures(db, settings, alice) == {"username": 2, "email": 1, "account": 3}
    offer = await offer_as(client, alice.email)
    assert login_kind_of(offer["ceremony"]) == "email"
    r = await answer(client, offer, stranger)
    assert r.status_code == 401 and problem(r)["type"].endswith("/invalid-second-factor")
    assert await failures(db, settings, alice) == {"username": 2, "email": 2, "account": 4}

    # Her own passkey clears them all, as before.
    r = await answer(client, await offer_as(client, alice.email), device)
    assert r.status_code == 200, r.text
    assert await failures(db, settings, alice) == {"username": 0, "email": 0, "account": 0}


async def test_exhausted_a_failed_passkey_is_refused_as_wrong_codes_are(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, db: Database,
    settings: Settings,
) -> None:
    clock.freeze(utcnow())
    # Bob guesses codes: five wrong, then even the right password waits.
    bob, _ = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, bob)
    for _ in range(throttle.FREE_FAILURES):
        r = await login(client, bob.username, second_factor=WRONG_CODE)
        assert problem(r)["type"].endswith("/invalid-second-factor")
    after_codes = await login(client, bob.username)
    assert after_codes.status_code == 429

    # Alice's second step is guessed with passkeys: the same refusal once as many failed.
    alice, device = await with_passkey(client, inbox, deliver)
    await turn_on_totp(client, alice)
    assert alice.email is not None
    held_back = await offer_as(client, alice.username)
    held_by_email = await offer_as(client, alice.email)
    stranger = Authenticator()
    for _ in range(throttle.FREE_FAILURES):
        r = await answer(client, await offer_as(client, alice.username), stranger)
        assert problem(r)["type"].endswith("/invalid-second-factor")
    assert await failures(db, settings, alice) == {
        "username": throttle.FREE_FAILURES, "email": 0, "account": throttle.FREE_FAILURES,
    }  # fmt: skip
    after_passkeys = await answer(client, held_back, device)  # her own: not looked at
    for refused in (after_passkeys, await login(client, alice.username)):
        assert refused.status_code == after_codes.status_code == 429
        assert refused.headers["retry-after"] == after_codes.headers["retry-after"] == "2"
        body, expected = problem(refused), problem(after_codes)
        assert (body["type"], body["title"]) == (expected["type"], expected["title"])
        assert body["type"].endswith("/too-many-attempts")
    locked_out = [e for e in await events(db, "login_locked_out")
                  if e.details.get("method") == "password+passkey"]  # fmt: skip
    assert len(locked_out) == 1

    # Reached through another of her names, the account's row alone is locked: refused
    # unlooked-at as a wrong code (the password under that name is refused then), not counted.
    r = await answer(client, held_by_email, device)
    assert r.status_code == 401 and problem(r)["type"].endswith("/invalid-second-factor")
    r = await login(client, alice.email, second_factor=WRONG_CODE)
    assert problem(r)["type"].endswith("/invalid-credentials")
    assert (await failures(db, settings, alice))["email"] == 1  # the wrong code's, not the passkey's

    clock.freeze(utcnow() + timedelta(minutes=1))
    r = await answer(client, await offer_as(client, alice.username), device)
    assert r.status_code == 200, r.text


def test_the_kind_of_name_is_read_from_a_handle_only_when_it_is_one() -> None:
    token = secrets.token_urlsafe(32)
    assert [login_kind_of(f"{token}.{k}") for k in ("username", "email", "phone")] == [
        "username", "email", "phone"
    ]  # fmt: skip
    for handle in (token, f"{token}.", f"{token}.account", f"{token}.email.x", ""):
        assert login_kind_of(handle) is None, handle


# --- the client address's limit, with Redis as in production -----------------------------------


@asynccontextmanager
async def _redis_client(
    settings: Settings, db: Database
) -> AsyncIterator[tuple[Any, str, httpx.AsyncClient]]:
    app = create_app(settings.model_copy(update={"redis_url": REDIS_URL}), db=db, run_worker=False)
    # An address (a /64) of its own: the Redis database outlives the test, and is shared by the
    # SQLite and PostgreSQL runs.
    ip = f"2001:db8:{secrets.randbits(16):x}:{secrets.randbits(16):x}::1"
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield app, ip, c


async def _left(app: Any, ip: str) -> int:
    """The sign-ins this address has left this minute."""
    limits = app.state.rate_limits
    stats = await limits.limiter.get_window_stats(LIMITS["login"][0], "login", address_key(ip))
    return int(stats.remaining)


@pytest.mark.skipif(not REDIS_URL, reason="SIMCHARGE_TEST_REDIS_URL is not set")
async def test_a_failed_passkey_counts_on_the_address_as_a_wrong_code_and_is_refused_alike(
    settings: Settings, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    async with _redis_client(settings, db) as (app, ip, c):
        alice, _ = await with_passkey(c, inbox, deliver)
        await turn_on_totp(c, alice)
        offer = await offer_as(c, alice.username)
        before = await _left(app, ip)
        assert (await login(c, alice.username, second_factor=WRONG_CODE)).status_code == 401
        assert await _left(app, ip) == before - 1
        assert (await answer(c, offer, Authenticator())).status_code == 401
        assert await _left(app, ip) == before - 2

        # Out of sign-ins: one more of either is refused alike, before anything is looked at.
        offer = await offer_as(c, alice.username)
        for _ in range(await _left(app, ip)):
            await app.state.rate_limits.hit("login", ip)
        by_code = await login(c, alice.username, second_factor=WRONG_CODE)
        by_passkey = await answer(c, offer, Authenticator())
        for refused in (by_code, by_passkey):
            assert refused.status_code == 429
            assert problem(refused)["type"].endswith("/too-many-attempts")
            assert int(refused.headers["retry-after"]) >= 1
        assert abs(int(by_code.headers["retry-after"]) - int(by_passkey.headers["retry-after"])) <= 1
        # Neither reached the throttle rows.
        assert (await failures(db, settings, alice))["account"] == 2
