"""Forgotten and changed passwords, two-step verification, locking the account."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.auth.models import SecurityEvent, VerificationCode
from simcharge.db import Database
from simcharge.kit.clock import clock
from tests.auth.helpers import (
    PASSWORD,
    Deliver,
    argon2_work_of,
    comparable,
    login,
    problem,
    signup,
)
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
    await forgot(client, str(customer.phone), "phone")  # the customer's word for `sms`
    await deliver()
    r = await reset(client, str(customer.phone), last_sms_code(str(customer.phone)))
    assert r.status_code == 200


async def test_reset_answers_alike_for_known_and_unknown_logins(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """The new password's policy is checked before the account is looked up."""
    customer = await signup(client, inbox, deliver)
    for known, unknown in (
        (customer.username, "no-such-person-q"),
        (str(customer.email), "no-such-person@example.com"),
    ):
        # Common, short, long, and the login itself (an e-mail address: long enough).
        for a_password, b_password in (
            *((p, p) for p in ("password", "short", "x" * 129)),
            *([(known, unknown)] if "@" in known else []),
        ):
            a = await reset(client, known, "000000", a_password)
            b = await reset(client, unknown, "000000", b_password)
            assert comparable(a)[0] == comparable(b)[0] == 422, a_password
            assert problem(a)["type"] == problem(b)["type"] == "/problems/validation-error"
            assert problem(a)["field"] == problem(b)["field"] == "new_password"
            assert problem(a)["detail"] == problem(b)["detail"]
    # With an acceptable password: the same "wrong code" for both.
    a = await reset(client, customer.username, "000000")
    b = await reset(client, "no-such-person-q", "000000")
    assert comparable(a)[1] | {"instance": ""} == comparable(b)[1] | {"instance": ""}


async def test_a_password_equal_to_the_account_is_refused_once_the_code_proves_who_asks(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    await forgot(client, str(customer.phone), "sms")
    await deliver()
    code = last_sms_code(str(customer.phone))
    # Signed out by phone number, the e-mail address as the new password: refused after the
    # code (the login given did not show it), and the code is still good.
    r = await reset(client, str(customer.phone), code, str(customer.email))
    assert r.status_code == 422 and problem(r)["field"] == "new_password"
    assert (await reset(client, str(customer.phone), code)).status_code == 200


async def test_codes_expire_allow_five_tries_and_the_newest_wins(
    client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
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
    async with db.read() as s:
        rows = (
            await s.execute(
                select(VerificationCode)
                .where(VerificationCode.purpose == "password_reset")
                .order_by(VerificationCode.created_at)
            )
        ).scalars().all()
    assert [r.voided_at is not None for r in rows] == [True, False]  # the newer voids the older
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


async def test_a_code_is_good_for_its_ten_minutes(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    await forgot(client, customer.username)
    await deliver()
    code = inbox.last_code(str(customer.email))
    clock.freeze(START + timedelta(minutes=9, seconds=59))
    assert (await reset(client, customer.username, code)).status_code == 200


async def test_a_code_works_only_for_its_purpose(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    customer = await signup(client, inbox, deliver)
    assert (await client.post("/api/v1/me/lock", headers=customer.auth)).status_code == 200
    await client.post(
        "/api/v1/auth/unlock/request", json={"login": customer.username, "channel": "email"}
    )
    await deliver()
    unlock_code = inbox.last_code(str(customer.email))
    # An unlock code does not reset the password (nor verify a contact)…
    r = await reset(client, customer.username, unlock_code)
    assert r.status_code == 422 and problem(r)["type"] == "/problems/invalid-code"
    # …and was not spent by the attempt: it unlocks.
    r = await client.post(
        "/api/v1/auth/unlock", json={"login": customer.username, "code": unlock_code}
    )
    assert r.status_code == 200


async def test_code_sends_and_checks_are_limited_per_client_address(
    client: httpx.AsyncClient,
) -> None:
    sends = [(await forgot(client, f"anyone-{i}")).status_code for i in range(11)]
    assert sends == [202] * 10 + [429]
    checks = [
        (
            await client.post("/api/v1/auth/unlock", json={"login": f"anyone-{i}", "code": "1"})
        ).status_code
        for i in range(31)
    ]
    assert checks == [422] * 30 + [429]


def from_address(app: object, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_code_sends_are_limited_per_account(
    app: object, client: httpx.AsyncClient, db: Database, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver, with_phone=False)
    inbox.messages.clear()
    answers = []
    for i in range(6):  # a minute apart (past the resend cool-down), each from its own address
        clock.freeze(START + timedelta(seconds=61 * i))
        async with from_address(app, f"198.51.100.{i + 1}") as c:
            answers.append(comparable(await forgot(c, customer.username)))
    assert all(a == answers[0] for a in answers)  # nothing tells the sixth apart
    await deliver()
    assert [m["Subject"] for m in inbox.messages] == ["Reset your password"] * 5
    async with db.read() as s:
        refused = (
            await s.execute(
                select(SecurityEvent).where(
                    SecurityEvent.kind == "password_reset_requested",
                    SecurityEvent.success.is_(False),
                )
            )
        ).scalars().all()
    assert [e.details["reason"] for e in refused] == ["too-many-codes"]


async def test_code_checks_are_limited_per_account(
    app: object, client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver, with_phone=False)
    addresses = (f"203.0.113.{n}" for n in range(1, 100))

    async def check(login_name: str, code: str) -> httpx.Response:
        async with from_address(app, next(addresses)) as c:
            return await reset(c, login_name, code)

    async def new_code(after: int) -> str:
        clock.freeze(START + timedelta(seconds=after))
        await forgot(client, customer.username)
        await deliver()
        return inbox.last_code(str(customer.email))

    first = await new_code(0)
    wrong = "999999" if first != "999999" else "888888"
    for _ in range(5):  # burns the first code
        assert (await check(customer.username, wrong)).status_code == 422
    second = await new_code(61)
    wrong = "999999" if second != "999999" else "888888"
    for _ in range(4):
        assert (await check(customer.username, wrong)).status_code == 422
    third = await new_code(122)
    wrong = "999999" if third != "999999" else "888888"
    assert (await check(customer.username, wrong)).status_code == 422  # the tenth check
    # The eleventh, from yet another address, with the right code: not even looked at, and
    # answered exactly like a wrong code for an unknown login.
    right = await check(customer.username, third)
    unknown = await check("no-such-person-q", third)
    assert comparable(right)[1] | {"instance": ""} == comparable(unknown)[1] | {"instance": ""}
    token = (await login(client, customer.username)).json()["token"]
    log = (
        await client.get("/api/v1/me/security-events", headers={"Authorization": f"Bearer {token}"})
    ).json()
    newest = next(e for e in log if e["kind"] == "code_rejected")
    assert newest["details"] == {"purpose": "password_reset", "reason": "too-many-codes"}


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
            r, work = await argon2_work_of(forgot(c, name))
            assert r.status_code == 202
            assert time.monotonic() - started >= 0.3
            assert work == {"hash": 0, "verify": 0}  # no costly step on either path


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
    # Digits to `str.isdigit` but not ASCII (superscripts): a wrong code, not a 500.
    r = await client.post("/api/v1/me/totp/confirm", json={"code": "²³¹²³¹"}, headers=customer.auth)
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
    await deliver()
    assert "Two-step verification is off" in [m["Subject"] for m in inbox.to(str(customer.email))]
    log = (await client.get("/api/v1/me/security-events", headers=auth)).json()
    assert [(e["kind"], e["success"]) for e in log if e["kind"] == "totp_disabled"] == [
        ("totp_disabled", True),
        ("totp_disabled", False),
    ]


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
        "/api/v1/me/totp/recovery-codes", json={"password": "not-it-at-all-1"}, headers=auth
    )
    assert r.status_code == 401 and problem(r)["field"] == "password"
    r = await client.post(
        "/api/v1/me/totp/recovery-codes", json={"password": PASSWORD}, headers=auth
    )
    fresh = r.json()["recovery_codes"]
    assert (
        await login(client, customer.username, second_factor=first.json()["recovery_codes"][0])
    ).status_code == 401
    assert (await login(client, customer.username, second_factor=fresh[0])).status_code == 200
    await deliver()
    assert "New recovery codes were made" in [m["Subject"] for m in inbox.to(str(customer.email))]
    # The alerts sent are in the security log too, with their channels.
    log = (await client.get("/api/v1/me/security-events", headers=auth)).json()
    assert [(e["success"], e["details"].get("reason")) for e in log
            if e["kind"] == "recovery_codes_regenerated"] == [
        (True, None),
        (False, "invalid-credentials"),
    ]
    alerts = {e["details"]["alert"]: e["details"]["channels"] for e in log if e["kind"] == "alert_sent"}
    assert alerts["recovery_codes_regenerated"] == ["portal", "email", "sms"]
    assert alerts["totp_enabled"] == ["portal", "email", "sms"]


async def change_password(
    client: httpx.AsyncClient, auth: dict[str, str], current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/me/password",
        headers=auth,
        json={"current_password": current, "new_password": new},
    )


async def test_a_wrong_current_password_counts_like_a_failed_sign_in(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    inbox.messages.clear()
    for i in range(3):
        assert (await login(client, customer.username, f"guess-{i}-xyz")).status_code == 401
    for i in range(2):
        r = await change_password(client, customer.auth, f"guess-{i}-abc")
        assert r.status_code == 401 and problem(r)["field"] == "current_password"
    # Five failures on the account, wherever: the sixth guess waits, here and at sign-in.
    r = await change_password(client, customer.auth, PASSWORD)
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 2
    assert (await login(client, customer.username)).status_code == 401  # not even tried
    await deliver()
    assert "Failed sign-in attempts" in [m["Subject"] for m in inbox.to(str(customer.email))]
    log = (await client.get("/api/v1/me/security-events", headers=customer.auth)).json()
    refused = [e["details"]["reason"] for e in log if e["kind"] == "password_changed"]
    assert refused == ["too-many-attempts", "invalid-credentials", "invalid-credentials"]
    clock.freeze(START + timedelta(seconds=3))
    assert (await change_password(client, customer.auth, PASSWORD)).status_code == 200


async def test_wrong_authenticator_codes_when_turning_it_off_are_throttled(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    secret = (
        await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    ).json()["secret"]
    wrong = await client.post("/api/v1/me/totp/confirm", json={"code": "1"}, headers=customer.auth)
    assert wrong.status_code == 401
    r = await client.post(
        "/api/v1/me/totp/confirm", json={"code": pyotp.TOTP(secret).at(START)}, headers=customer.auth
    )
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    for code in ("000001", "000002", "000003", "000004"):
        r = await client.post(
            "/api/v1/me/totp/disable", headers=auth, json={"password": PASSWORD, "code": code}
        )
        assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-second-factor"
    good = pyotp.TOTP(secret).at(START + timedelta(seconds=30))  # the next step: accepted now
    r = await client.post(
        "/api/v1/me/totp/disable", headers=auth, json={"password": PASSWORD, "code": good}
    )
    assert r.status_code == 429  # five failures (the confirmation's too): even a good code waits
    log = (await client.get("/api/v1/me/security-events", headers=auth)).json()
    assert ("totp_enabled", False) in [(e["kind"], e["success"]) for e in log]
    clock.freeze(START + timedelta(seconds=3))
    r = await client.post(
        "/api/v1/me/totp/disable", headers=auth, json={"password": PASSWORD, "code": good}
    )
    assert r.status_code == 200


async def test_reentered_passwords_are_limited_per_account_and_per_address(
    app: object, client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    async def start_totp(customer_auth: dict[str, str], ip: str) -> int:
        async with from_address(app, ip) as c:
            r = await c.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer_auth)
            return r.status_code

    one = await signup(client, inbox, deliver)
    # Per account: ten a minute, from wherever.
    answers = [await start_totp(one.auth, f"198.51.100.{i}") for i in range(1, 12)]
    assert answers == [200] * 10 + [429]
    # Per address: ten a minute, whichever accounts.
    two = await signup(client, inbox, deliver)
    three = await signup(client, inbox, deliver)
    answers = [await start_totp(c.auth, "192.0.2.77") for c in (two, three) * 5]
    answers.append(await start_totp(two.auth, "192.0.2.77"))
    assert answers == [200] * 10 + [429]
    log = (await client.get("/api/v1/me/security-events", headers=two.auth)).json()
    assert {"kind": "totp_enrolment_started", "success": False} in [
        {"kind": e["kind"], "success": e["success"]} for e in log
    ]


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
