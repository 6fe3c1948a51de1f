"""Signing in and sessions: enumeration, brute force, cookies, CSRF, timeouts, devices."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth import throttle
from simcharge.auth.models import AuthSession, LoginThrottle, SecurityEvent
from simcharge.auth.sessions import token_hash
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from tests.auth.helpers import (
    PASSWORD,
    Customer,
    Deliver,
    argon2_work_of,
    comparable,
    login,
    problem,
    signup,
)
from tests.conftest import TEST_SECRET, SmtpInbox

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


async def test_sign_in_with_username_email_or_phone(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    for name in (
        customer.username,
        customer.username.upper(),
        str(customer.email),
        str(customer.email).upper(),
        str(customer.phone),
    ):
        r = await login(client, name)
        assert r.status_code == 200, name
        body = r.json()
        assert len(body["token"]) >= 43 and body["csrf_token"] is None
        me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
        assert me.json()["username"] == customer.username


async def test_wrong_password_and_unknown_login_look_alike(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    wrong, known_work = await argon2_work_of(login(client, customer.username, "not-the-pass-9"))
    unknown, unknown_work = await argon2_work_of(
        login(client, "no-such-user-anywhere", "not-the-pass-9")
    )
    assert wrong.status_code == unknown.status_code == 401
    assert comparable(wrong)[1] | {"instance": ""} == comparable(unknown)[1] | {"instance": ""}
    assert problem(wrong)["type"] == "/problems/invalid-credentials"
    # The same work too: an unknown login is checked against a dummy argon2id hash.
    assert known_work == unknown_work == {"hash": 0, "verify": 1}


async def test_failures_slow_down_every_login_name_alike(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    for name in (customer.username, "ghost-account"):
        statuses = [(await login(client, name, "wrong-password-1")).status_code for _ in range(6)]
        # Five free failures, then the sixth must wait: 429 with Retry-After, for both.
        assert statuses == [401] * 5 + [429]
    r = await login(client, customer.username)  # even the right password waits
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 2
    assert problem(r)["type"] == "/problems/too-many-attempts"
    clock.freeze(START + timedelta(seconds=3))
    assert (await login(client, customer.username)).status_code == 200
    await deliver()
    subjects = [m["Subject"] for m in inbox.to(str(customer.email))]
    assert "Failed sign-in attempts" in subjects


async def verify_signed_out(
    client: httpx.AsyncClient, login_name: str, password: str, code: str = "000000"
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/verify",
        json={"channel": "email", "code": code, "login": login_name, "password": password},
    )


async def test_verifying_signed_out_checks_the_password_like_a_sign_in(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """`/auth/verify` with a login and password is no way around the sign-in lock-out."""
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    inbox.messages.clear()
    # Failures there count where sign-in failures count…
    for i in range(5):
        r = await verify_signed_out(client, customer.username, f"guess-number-{i}")
        assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-credentials"
    assert (await login(client, customer.username)).status_code == 429
    # …and the lock-out of sign-in holds there: not even the right password is tried.
    r = await verify_signed_out(client, customer.username, PASSWORD)
    assert r.status_code == 429 and problem(r)["type"] == "/problems/too-many-attempts"
    # The holder was alerted, and every failure is in the security log.
    await deliver()
    assert "Failed sign-in attempts" in [m["Subject"] for m in inbox.to(str(customer.email))]
    async with db.read() as s:
        rows = (
            await s.execute(
                select(SecurityEvent).where(SecurityEvent.success.is_(False))
            )
        ).scalars().all()
    via_verify = [r for r in rows if r.details.get("via") == "verify"]
    assert sorted(r.kind for r in via_verify) == ["login"] * 5 + ["login_locked_out"]
    clock.freeze(START + timedelta(seconds=3))
    r = await verify_signed_out(client, customer.username, PASSWORD)
    assert r.status_code == 422 and problem(r)["type"] == "/problems/invalid-code"


async def test_the_lock_out_counts_per_account_across_its_names(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    known = [customer.username, str(customer.email), str(customer.phone)]
    unknown = ["ghost-of-nobody", "ghost-of-nobody@example.com", "+14155550999"]
    answers = {}
    for names in (known, unknown):
        seen = []
        for i in range(9):  # three rounds of username, e-mail, phone
            r, work = await argon2_work_of(login(client, names[i % 3], "wrong-password-1"))
            seen.append((comparable(r)[0], problem(r)["type"], work))
        answers[names[0]] = seen
    # Each name alone has had at most three failures, so for an unknown name every answer is
    # a plain "wrong"; a known account's names answer exactly alike…
    assert answers[known[0]] == answers[unknown[0]]
    assert {a[:2] for a in answers[known[0]]} == {(401, "/problems/invalid-credentials")}
    # …although its password was tried only five times: after the fifth failure the account
    # waits, whichever of its names is used — even the right password is not tried.
    for name in known:
        assert (await login(client, name)).status_code == 401
    clock.freeze(START + timedelta(seconds=3))
    assert (await login(client, customer.username)).status_code == 200


async def test_never_more_than_a_hundred_failures_an_hour_per_account(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)

    async def used_up_hour(s: AsyncSession) -> None:
        account = (
            await s.execute(select(Account).where(Account.username == customer.username))
        ).scalar_one()
        row = await throttle.load(s, throttle.account_key(TEST_SECRET, account.id), START)
        row.window_start, row.window_failures = START - timedelta(minutes=30), throttle.HOURLY_CAP

    # A hundred failures this hour, spread over the account's names (no name near its own cap).
    await db.run(used_up_hour)
    for name in (customer.username, str(customer.email), str(customer.phone)):
        assert (await login(client, name)).status_code == 401
    clock.freeze(START + timedelta(minutes=31))
    assert (await login(client, str(customer.phone))).status_code == 200


def test_the_delay_grows_and_the_hour_is_capped() -> None:
    row = LoginThrottle(key_hash="k", failures=0, window_failures=0)
    now = START
    waits = []
    for _ in range(9):
        assert throttle.refusal(row, now) is None
        throttle.count_failure(row, now)
        waits.append((row.locked_until - now).total_seconds() if row.locked_until else 0)
        now = row.locked_until or now
    assert waits == [0, 0, 0, 0, 2, 4, 8, 16, 32]
    throttle.count_failure(row, now)
    for _ in range(200):
        throttle.count_failure(row, now)
    assert (row.locked_until - now) == throttle.MAX_DELAY  # type: ignore[operator]
    # Past every lock-out, but still within the hour after 100 failures: refused.
    row.locked_until = None
    refusal = throttle.refusal(row, now + timedelta(minutes=30))
    assert refusal is not None and refusal.status == 429
    assert throttle.refusal(row, row.window_start + throttle.HOUR) is None  # type: ignore[operator]
    throttle.clear(row, now)
    assert row.failures == 0 and row.locked_until is None


async def test_logins_are_rate_limited_per_client_address(client: httpx.AsyncClient) -> None:
    statuses = [
        (await login(client, f"nobody{i}", "whatever-pass-1")).status_code for i in range(31)
    ]
    assert statuses[:30] == [401] * 30 and statuses[30] == 429


async def test_cookie_sessions_are_host_only_secure_and_need_csrf(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    https = settings.model_copy(update={"base_url": "https://top.example"})
    app = create_app(https, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://top.example"
    ) as c:
        from simcharge.worker.runner import Worker

        async def deliver() -> int:
            return await Worker(db, https, concurrency=4).drain()

        customer = await signup(c, inbox, deliver)
        r = await login(c, customer.username, mode="cookie")
        assert r.status_code == 200 and r.json()["token"] is None
        cookies = r.headers.get_list("set-cookie")
        session = next(h for h in cookies if h.startswith("__Host-sc_session="))
        for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
            assert attribute.lower() in session.lower()
        assert "domain" not in session.lower()
        assert any(h.startswith("__Host-sc_device=") for h in cookies)
        csrf = r.json()["csrf_token"]
        assert (await c.get("/api/v1/me")).status_code == 200
        refused = await c.patch("/api/v1/me", json={"display_name": "M"})
        assert refused.status_code == 403 and problem(refused)["type"] == "/problems/csrf-failed"
        forged = await c.patch(
            "/api/v1/me", json={"display_name": "M"}, headers={"X-CSRF-Token": "x" * 64}
        )
        assert forged.status_code == 403
        ok = await c.patch("/api/v1/me", json={"display_name": "M"}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["display_name"] == "M"
        # Both refusals are in the security log.
        events = (await c.get("/api/v1/me/security-events")).json()
        refused = [e for e in events if e["kind"] == "csrf_refused"]
        assert len(refused) == 2 and not any(e["success"] for e in refused)
        assert refused[0]["details"] == {"method": "PATCH", "path": "/api/v1/me"}


async def test_bearer_sessions_need_no_csrf_and_api_keys_are_not_sessions(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await client.patch("/api/v1/me", json={"language": "es"}, headers=customer.auth)
    assert r.status_code == 200 and r.json()["language"] == "es"
    assert (await client.get("/api/v1/me")).status_code == 401
    r = await client.get("/api/v1/me", headers={"Authorization": "Bearer sck_abc_def"})
    assert r.status_code == 401
    r = await client.get("/api/v1/me", headers={"Authorization": "Bearer made-up-token"})
    assert r.status_code == 401 and problem(r)["type"] == "/problems/session-ended"


async def test_a_session_cookie_set_before_login_is_never_adopted(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    planted = "attacker-chosen-session-value"
    client.cookies.set("sc_session", planted)
    r = await login(client, customer.username, mode="cookie")
    issued = r.cookies.get("sc_session")
    assert issued and issued != planted
    client.cookies.clear()
    client.cookies.set("sc_session", planted)
    r = await client.get("/api/v1/me")
    assert r.status_code == 401
    client.cookies.clear()
    # Each sign-in gets a new token.
    assert (await login(client, customer.username)).json()["token"] != customer.token


async def test_session_tokens_are_stored_only_as_keyed_hashes(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    r = await login(client, customer.username)
    token, session_id = r.json()["token"], r.json()["session_id"]
    async with db.read() as s:
        rows = (await s.execute(select(AuthSession))).scalars().all()
    [row] = [row for row in rows if str(row.id) == session_id]
    assert len(token) >= 43  # 256 bits, URL-safe base64
    assert row.token_hash == token_hash(TEST_SECRET, token) and len(row.token_hash) == 64
    # No column of any session holds a token as issued.
    stored = " ".join(str(v) for row in rows for v in vars(row).values())
    assert token not in stored and str(customer.token) not in stored


async def test_idle_and_absolute_timeouts(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    clock.freeze(START + timedelta(minutes=29))
    assert (await client.get("/api/v1/me", headers=customer.auth)).status_code == 200
    clock.freeze(START + timedelta(minutes=29 + 31))
    r = await client.get("/api/v1/me", headers=customer.auth)
    assert r.status_code == 401 and problem(r)["type"] == "/problems/session-ended"
    token = (await login(client, customer.username)).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    t = START + timedelta(minutes=60)
    while t < START + timedelta(minutes=60, hours=11, seconds=59 * 60):
        t += timedelta(minutes=25)
        clock.freeze(t)
        if (await client.get("/api/v1/me", headers=auth)).status_code != 200:
            break
    assert t >= START + timedelta(minutes=60, hours=12)
    r = await client.get("/api/v1/me", headers=auth)
    assert r.status_code == 401
    # Both ends are in the security log.
    fresh = {"Authorization": f"Bearer {(await login(client, customer.username)).json()['token']}"}
    events = (await client.get("/api/v1/me/security-events", headers=fresh)).json()
    ended = [e["details"]["reason"] for e in events if e["kind"] == "session_expired"]
    assert sorted(ended) == ["absolute_timeout", "idle_timeout"]


async def test_a_request_within_a_minute_of_the_last_use_writes_nothing(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Every signed-in request reads its session and account in one query; only once a minute
    is its use written down (the idle timeout counts from it)."""
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        clock.freeze(START + timedelta(seconds=30))
        assert (await client.get("/api/v1/me", headers=customer.auth)).status_code == 200
        quiet = list(statements)
        statements.clear()
        clock.freeze(START + timedelta(seconds=90))
        assert (await client.get("/api/v1/me", headers=customer.auth)).status_code == 200
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    verbs = {statement.split(None, 1)[0].upper() for statement in quiet}
    assert verbs and not {"INSERT", "UPDATE", "DELETE"} & verbs
    # The session and its account in one query.
    [identity] = [st for st in quiet if "auth_sessions" in st or "FROM accounts" in st]
    assert "JOIN accounts" in identity
    assert any(st.upper().startswith("UPDATE AUTH_SESSIONS") for st in statements)  # a minute on
    async with db.read() as s:
        row = (await s.execute(select(AuthSession).where(
            AuthSession.token_hash == token_hash(TEST_SECRET, str(customer.token))))).scalar_one()
    assert row.last_seen_at == START + timedelta(seconds=90)


async def test_the_timeouts_are_settings(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    short = settings.model_copy(update={"session_idle_minutes": 5, "session_absolute_hours": 1})
    app = create_app(short, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        from simcharge.worker.runner import Worker

        async def deliver() -> int:
            return await Worker(db, short, concurrency=4).drain()

        clock.freeze(START)
        customer: Customer = await signup(c, inbox, deliver)
        clock.freeze(START + timedelta(minutes=4))
        assert (await c.get("/api/v1/me", headers=customer.auth)).status_code == 200
        clock.freeze(START + timedelta(minutes=4 + 5))
        assert (await c.get("/api/v1/me", headers=customer.auth)).status_code == 401
        r = await login(c, customer.username, mode="cookie")
        assert int(r.headers["set-cookie"].split("Max-Age=")[1].split(";")[0]) == 3600
        auth = {"Authorization": f"Bearer {(await login(c, customer.username)).json()['token']}"}
        t = START + timedelta(minutes=9)
        for minutes in (4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56):
            clock.freeze(t + timedelta(minutes=minutes))
            assert (await c.get("/api/v1/me", headers=auth)).status_code == 200
        clock.freeze(t + timedelta(minutes=60))
        assert (await c.get("/api/v1/me", headers=auth)).status_code == 401


async def test_logout_and_logout_all(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    second = {"Authorization": f"Bearer {(await login(client, customer.username)).json()['token']}"}
    third = {"Authorization": f"Bearer {(await login(client, customer.username)).json()['token']}"}
    assert (await client.post("/api/v1/auth/logout", headers=second)).status_code == 200
    assert (await client.get("/api/v1/me", headers=second)).status_code == 401
    assert (await client.get("/api/v1/me", headers=third)).status_code == 200
    assert (await client.post("/api/v1/auth/logout-all", headers=customer.auth)).status_code == 200
    for auth in (customer.auth, third):
        assert (await client.get("/api/v1/me", headers=auth)).status_code == 401


async def test_sessions_list_and_ending_one(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    other = await login(client, customer.username, headers={"User-Agent": "Phone/2.0"})
    other_auth = {"Authorization": f"Bearer {other.json()['token']}"}
    rows = (await client.get("/api/v1/me/sessions", headers=customer.auth)).json()
    assert len(rows) == 2 and sum(r["current"] for r in rows) == 1
    assert {r["user_agent"] for r in rows} == {"pytest-browser/1.0", "Phone/2.0"}
    r = await client.delete(
        f"/api/v1/me/sessions/{other.json()['session_id']}", headers=customer.auth
    )
    assert r.status_code == 200
    assert (await client.get("/api/v1/me", headers=other_auth)).status_code == 401


async def test_one_customer_cannot_touch_anothers_sessions(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    alice = await signup(client, inbox, deliver)
    bob = await signup(client, inbox, deliver)
    bobs = (await client.get("/api/v1/me/sessions", headers=bob.auth)).json()
    r = await client.delete(f"/api/v1/me/sessions/{bobs[0]['id']}", headers=alice.auth)
    assert r.status_code == 404 and problem(r)["field"] == "session_id"
    assert (await client.get("/api/v1/me", headers=bob.auth)).status_code == 200
    alices = (await client.get("/api/v1/me/sessions", headers=alice.auth)).json()
    assert {s["id"] for s in alices}.isdisjoint({s["id"] for s in bobs})


async def test_a_new_device_is_announced_once(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    inbox.messages.clear()
    r = await login(client, customer.username, headers={"User-Agent": "Unknown-Tablet/9"})
    assert r.json()["new_device"] is True
    again = await login(client, customer.username, headers={"User-Agent": "Unknown-Tablet/9"})
    assert again.json()["new_device"] is False
    await deliver()
    alerts = [
        m for m in inbox.to(str(customer.email)) if m["Subject"] == "New sign-in to your account"
    ]
    assert len(alerts) == 1
    text = alerts[0].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    # A user agent of no browser or system we know is not quoted: it stays in the security log.
    assert "new device: an unknown device (" in text and "Unknown-Tablet/9" not in text


async def test_every_decision_is_logged_without_secrets(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    await login(client, customer.username, "wrong-password-2", headers={"User-Agent": "Evil/1"})
    events = (await client.get("/api/v1/me/security-events", headers=customer.auth)).json()
    kinds = [(e["kind"], e["success"]) for e in events]
    assert ("login", False) in kinds and ("login", True) in kinds and ("registered", True) in kinds
    failed = next(e for e in events if e["kind"] == "login" and not e["success"])
    assert failed["user_agent"] == "Evil/1" and failed["ip"]
    async with db.read() as s:
        rows = (await s.execute(select(SecurityEvent))).scalars().all()
    dump = " ".join(f"{r.kind} {r.details} {r.user_agent}" for r in rows)
    assert (
        PASSWORD not in dump and "wrong-password-2" not in dump and str(customer.token) not in dump
    )


async def test_the_password_hash_is_upgraded_when_the_parameters_change(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    from argon2 import PasswordHasher

    from simcharge.accounts.models import Account

    customer = await signup(client, inbox, deliver)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)

    async def weaken(s: object) -> None:
        from sqlalchemy import update

        await s.execute(
            update(Account)
            .where(Account.username == customer.username)  # type: ignore[attr-defined]
            .values(password_hash=weak)
        )

    await db.run(weaken)  # type: ignore[arg-type]
    assert (await login(client, customer.username)).status_code == 200
    async with db.read() as s:
        stored = (
            await s.execute(
                select(Account.password_hash).where(Account.username == customer.username)
            )
        ).scalar_one()
    assert stored != weak and stored.startswith("$argon2id$") and "m=65536" in stored


@pytest.mark.parametrize(
    "body", [{}, {"login": "x"}, {"login": "x", "password": "y", "mode": "jwt"}]
)
async def test_malformed_logins(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    r = await client.post("/api/v1/auth/login", json=body)
    assert r.status_code == 422 and problem(r)["type"] == "/problems/validation-error"


def test_clock_is_utc() -> None:
    assert utcnow().tzinfo is not None


@pytest.mark.postgres_only
async def test_concurrent_first_failures_for_one_login_all_count(
    fresh_db: Database, settings: Settings
) -> None:
    """Sign-ins for a login name that has no throttle row yet, at the same moment: each one finds
    or makes the same row (none fails on the unique key) and each failure is counted."""
    app = create_app(settings, db=fresh_db, run_worker=False)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.40", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answers = await asyncio.gather(
            *(login(client, "nobody-yet-at-once", "wrong-password-1") for _ in range(4))
        )
    assert [r.status_code for r in answers] == [401] * 4
    async def failures(session: AsyncSession) -> list[int]:
        return list((await session.scalars(select(LoginThrottle.failures))).all())

    assert await fresh_db.run(failures) == [4]
