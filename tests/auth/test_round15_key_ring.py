"""The secret key ring: rotating `SIMCHARGE_SECRET_KEY` (the old key kept in
`SIMCHARGE_SECRET_KEY_PREVIOUS`) locks no one with two-step sign-in out.

Before, the TOTP secrets were sealed and the recovery codes hashed under the one key: after a
restart with a new key, a valid code or recovery code answered 500 (`SealBroken` unhandled).
Now both are read with the ring, a TOTP secret an older key opened is sealed again under the
current one when a code from it is accepted (`simcharge secrets reseal` does it for all), a code
queued in the outbox under the old key is still sent (and accepted), and a value no key opens
answers `503 second-factor-unavailable` — never a 500, nothing counted — logged as
`crypto.seal_broken` with its purpose."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth import totp
from simcharge.auth.models import RecoveryCode
from simcharge.auth.reseal import reseal
from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.kit import crypto
from simcharge.kit.clock import clock, utcnow
from simcharge.kit.crypto import SealBroken, key_id, seal, unseal, unseal_any
from simcharge.notifications.service import SEND_CODE
from simcharge.worker.models import OutboxJob
from simcharge.worker.runner import Worker
from tests.auth.helpers import PASSWORD, Customer, Deliver, login, problem, register, signup, verify
from tests.backoffice.helpers import STAFF_PASSWORD, code_for, csrf_of, new_staff
from tests.conftest import SmtpInbox
from tests.test_cli import invoke

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
KEY_B = "the-new-secret-key-of-round-fifteen-0123456789"
KEY_C = "a-third-secret-key-never-used-for-anything-987654"


class Recorder:
    """Stands in for `kit.crypto.log` (structlog caches a module's bound logger on first use,
    so `capture_logs` would not see it)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    found = Recorder()
    monkeypatch.setattr(crypto, "log", found)
    return found


def rotated(settings: Settings, key: str, *previous: str) -> Settings:
    """The same settings after a restart with `key`, and `previous` in the ring."""
    return settings.model_copy(update={
        "secret_key": key,
        "secret_key_previous": SecretStr(",".join(previous)) if previous else None,
    })  # fmt: skip


class Restarted:
    """An app instance on other settings, with its own client (a restart of the site)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.app = create_app(settings, db=db, run_worker=False)

    async def __aenter__(self) -> httpx.AsyncClient:
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver"
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


async def _enrolled(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> tuple[Customer, pyotp.TOTP, list[str]]:
    """A customer with the authenticator app on (under the app's key) and their recovery
    codes; the clock at START (the code of START spent)."""
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    assert r.status_code == 200, r.text
    app = pyotp.TOTP(r.json()["secret"])
    r = await client.post(
        "/api/v1/me/totp/confirm", json={"code": app.at(START)}, headers=customer.auth
    )
    assert r.status_code == 200, r.text
    return customer, app, r.json()["recovery_codes"]


async def _sealed(db: Database, username: str) -> str:
    async with db.read() as s:
        found = (
            await s.execute(select(Account.totp_secret_sealed).where(Account.username == username))
        ).scalar_one()
    assert found
    return found


async def _account_id(db: Database, username: str) -> uuid.UUID:
    async with db.read() as s:
        found: uuid.UUID = (
            await s.execute(select(Account.id).where(Account.username == username))
        ).scalar_one()
    return found


def at(step: int) -> datetime:
    """START plus `step` time steps of 30 s, with the clock there."""
    moment = START + timedelta(seconds=30 * step)
    clock.freeze(moment)
    return moment


# --- customers -------------------------------------------------------------------------------


async def test_a_customer_signs_in_after_a_rotation_with_the_old_key_in_the_ring(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Deliver,
) -> None:  # fmt: skip
    key_a = settings.secret_key
    customer, app, recovery = await _enrolled(client, inbox, deliver)
    sealed_a = await _sealed(db, customer.username)
    unseal(key_a, "totp-secret", sealed_a)  # sealed under A

    async with Restarted(rotated(settings, KEY_B, key_a), db) as b:
        # A code of the app: signed in, and the secret is sealed again under B.
        r = await login(b, customer.username, second_factor=app.at(at(1)))
        assert r.status_code == 200, r.text
        sealed_b = await _sealed(db, customer.username)
        assert sealed_b != sealed_a
        assert unseal(KEY_B, "totp-secret", sealed_b) == unseal(key_a, "totp-secret", sealed_a)
        with pytest.raises(SealBroken):
            unseal(key_a, "totp-secret", sealed_b)
        # A recovery code hashed under A: signed in, spent once.
        r = await login(b, customer.username, second_factor=recovery[0])
        assert r.status_code == 200, r.text
        r = await login(b, customer.username, second_factor=recovery[0])
        assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-second-factor"
        # A wrong code is still a wrong code.
        r = await login(b, customer.username, second_factor="000000")
        assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-second-factor"

    # A dropped: the app goes on working (its secret was sealed again at the sign-in)…
    async with Restarted(rotated(settings, KEY_B), db) as b_only:
        r = await login(b_only, customer.username, second_factor=app.at(at(2)))
        assert r.status_code == 200, r.text
        # …but a recovery code hashed under A is no longer good (a hash cannot be re-hashed:
        # why README says to keep A until `secrets reseal` counts no account under it).
        r = await login(b_only, customer.username, second_factor=recovery[1])
        assert r.status_code == 401 and problem(r)["type"] == "/problems/invalid-second-factor"


async def test_a_known_device_stays_known_across_a_rotation(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Deliver,
) -> None:  # fmt: skip
    """Devices are remembered as keyed hashes: under B with A in the ring, a device noted under
    A is not "new" (no alert to every customer after a rotation) and is noted again under B, so
    that it stays known once A is dropped; a device never seen is new under any key."""
    customer = await signup(client, inbox, deliver)
    tablet = {"User-Agent": "Known-Tablet/1"}
    assert (await login(client, customer.username, headers=tablet)).json()["new_device"] is True

    async with Restarted(rotated(settings, KEY_B, settings.secret_key), db) as b:
        r = await login(b, customer.username, headers=tablet)
        assert r.status_code == 200 and r.json()["new_device"] is False, r.text
        r = await login(b, customer.username, headers={"User-Agent": "Other-Phone/2"})
        assert r.json()["new_device"] is True
    async with Restarted(rotated(settings, KEY_B), db) as b_only:
        r = await login(b_only, customer.username, headers=tablet)
        assert r.status_code == 200 and r.json()["new_device"] is False, r.text
    # Without the ring, a device noted under A only would have been new: the case it prevents.
    async with Restarted(rotated(settings, "c" * 48), db) as c_only:
        r = await login(c_only, customer.username, headers=tablet)
        assert r.json()["new_device"] is True


async def test_reseal_lets_the_old_key_go_and_counts_recovery_codes_per_key(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Deliver, recorder: Recorder,
) -> None:  # fmt: skip
    key_a = settings.secret_key
    customer, app, recovery = await _enrolled(client, inbox, deliver)
    other, other_app, _ = await _enrolled(client, inbox, deliver)
    account_id = await _account_id(db, customer.username)

    ring = rotated(settings, KEY_B, key_a).secret_keys
    dry = await reseal(db, ring, dry_run=True)
    assert dry.sealed["customer TOTP secrets"].resealed == 2
    unseal(key_a, "totp-secret", await _sealed(db, customer.username))  # nothing changed
    report = await reseal(db, ring)
    assert report.current_key == key_id(KEY_B)
    assert vars(report.sealed["customer TOTP secrets"]) == {
        "resealed": 2, "current": 0, "broken": 0
    }
    assert report.recovery[key_id(key_a)] == 2 and report.recovery[key_id(KEY_B)] == 0
    assert not recorder.events  # nothing broken
    # Run again: nothing to do (idempotent).
    again = await reseal(db, ring)
    assert vars(again.sealed["customer TOTP secrets"]) == {
        "resealed": 0, "current": 2, "broken": 0
    }
    unseal(KEY_B, "totp-secret", await _sealed(db, customer.username))

    # New recovery codes under B: `reseal` counts the account under B, not A.
    async def renew(s: AsyncSession) -> list[str]:
        return await totp.new_recovery_codes(s, KEY_B, account_id, utcnow())

    renewed = await db.run(renew)
    counted = await reseal(db, ring)
    assert counted.recovery[key_id(key_a)] == 1 and counted.recovery[key_id(KEY_B)] == 1

    # A dropped: both apps still sign in, with a code or a renewed recovery code.
    async with Restarted(rotated(settings, KEY_B), db) as b_only:
        assert (await login(
            b_only, customer.username, second_factor=app.at(at(1)))).status_code == 200
        assert (await login(
            b_only, other.username, second_factor=other_app.at(at(1)))).status_code == 200
        assert (await login(
            b_only, customer.username, second_factor=renewed[0])).status_code == 200
        r = await login(b_only, customer.username, second_factor=recovery[2])
        assert r.status_code == 401


async def test_recovery_codes_made_before_they_were_tagged_still_work_and_count_as_unknown(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Deliver,
) -> None:  # fmt: skip
    """A code hashed the old way (a plain keyed hash, before key ids were recorded) is good
    under its key; `reseal` cannot tell its key."""
    key_a = settings.secret_key
    customer, _, _ = await _enrolled(client, inbox, deliver)
    account_id = await _account_id(db, customer.username)

    async def plain(s: AsyncSession) -> None:
        value = f"{account_id}|ABCDEFGHJK"
        s.add(RecoveryCode(
            account_id=account_id, created_at=utcnow(),
            code_hash=crypto.keyed_hash(key_a, "recovery-code", value),
        ))  # fmt: skip

    await db.run(plain)
    report = await reseal(db, (KEY_B, key_a), dry_run=True)
    assert report.recovery["unknown"] == 1 and report.recovery[key_id(key_a)] == 1
    async with Restarted(rotated(settings, KEY_B, key_a), db) as b:
        r = await login(b, customer.username, second_factor="abcde-fghjk")
        assert r.status_code == 200, r.text


async def test_no_key_opens_the_secret_a_clear_503_not_a_500_nothing_counted(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Deliver, recorder: Recorder,
) -> None:  # fmt: skip
    key_a = settings.secret_key
    customer, app, recovery = await _enrolled(client, inbox, deliver)
    async with Restarted(rotated(settings, KEY_B), db) as b_only:
        for n in range(1, 7):  # more than the failures that would lock the name
            r = await login(b_only, customer.username, second_factor=app.at(at(n)))
            assert r.status_code == 503, r.text
            body = problem(r)
            assert body["type"] == "/problems/second-factor-unavailable"
            assert body["status"] == 503 and r.headers["retry-after"] == "300"
        # A recovery code hashed under A is no better (and says the same).
        r = await login(b_only, customer.username, second_factor=recovery[0])
        assert r.status_code == 503
        # The password is still checked first: a wrong one is a wrong password.
        r = await login(b_only, customer.username, "not-the-password-1", second_factor="123456")
        assert r.status_code == 401
        # Turning two-step off is refused alike (signed in by a recovery code made under B).
        account_id = await _account_id(db, customer.username)

        async def renew(s: AsyncSession) -> list[str]:
            return await totp.new_recovery_codes(s, KEY_B, account_id, utcnow())

        renewed = await db.run(renew)
        # …which still signs in: a recovery code is tried when the secret cannot be opened.
        r = await login(b_only, customer.username, second_factor=renewed[0])
        assert r.status_code == 200, r.text
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        r = await b_only.post("/api/v1/me/totp/disable", headers=auth,
                              json={"password": PASSWORD, "code": app.at(at(9))})  # fmt: skip
        assert r.status_code == 503 and problem(r)["type"] == "/problems/second-factor-unavailable"
    assert ("crypto.seal_broken", {"purpose": "totp-secret", "keys_tried": 1}) in recorder.events
    assert all(key_a not in str(kw) and KEY_B not in str(kw) for _, kw in recorder.events)
    # Nothing was counted against them: with A back in the ring, the app signs in at once.
    async with Restarted(rotated(settings, KEY_B, key_a), db) as b:
        r = await login(b, customer.username, second_factor=app.at(at(10)))
        assert r.status_code == 200, r.text


async def test_a_set_up_under_a_dropped_key_is_started_again(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    deliver: Deliver,
) -> None:  # fmt: skip
    clock.freeze(START)
    customer = await signup(client, inbox, deliver)
    r = await client.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=customer.auth)
    app = pyotp.TOTP(r.json()["secret"])
    async with Restarted(rotated(settings, KEY_B), db) as b_only:
        r = await login(b_only, customer.username)
        assert r.status_code == 200, r.text  # not on yet: the password alone
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        r = await b_only.post(
            "/api/v1/me/totp/confirm", json={"code": app.at(START)}, headers=auth
        )
        assert r.status_code == 409, r.text
        assert "Start setting up" in problem(r)["detail"]
        r = await b_only.post("/api/v1/me/totp", json={"password": PASSWORD}, headers=auth)
        assert r.status_code == 200
        fresh = pyotp.TOTP(r.json()["secret"])
        r = await b_only.post(
            "/api/v1/me/totp/confirm", json={"code": fresh.at(at(1))}, headers=auth
        )
        assert r.status_code == 200, r.text


# --- codes in the outbox ---------------------------------------------------------------------


async def _drain(db: Database, settings: Settings) -> int:
    worker = Worker(db, settings, concurrency=4)
    try:
        return await worker.drain()
    finally:
        await worker.close()


async def test_a_code_queued_under_the_old_key_is_sent_and_accepted_after_the_rotation(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    recorder: Recorder,
) -> None:  # fmt: skip
    key_a = settings.secret_key
    username, email = f"ring{uuid.uuid4().hex[:8]}", f"ring{uuid.uuid4().hex[:6]}@example.com"
    r = await register(client, username=username, email=email, phone=None)
    assert r.status_code == 202, r.text  # the code is queued, sealed under A
    async with db.read() as s:
        [job] = (await s.execute(select(OutboxJob).where(OutboxJob.kind == SEND_CODE))).scalars()
    unseal(key_a, "outbox-code", job.payload["sealed"])

    b_settings = rotated(settings, KEY_B, key_a)
    assert await _drain(db, b_settings) >= 1
    code = inbox.last_code(email)
    async with Restarted(b_settings, db) as b:
        customer = Customer(username, PASSWORD, email, None)
        r = await verify(b, customer, "email", code)
        assert r.status_code == 200, r.text
    assert not [e for e, _ in recorder.events if e == "crypto.seal_broken"]


async def test_reseal_seals_a_queued_code_again_and_one_no_key_opens_is_not_sent(
    client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox,
    recorder: Recorder,
) -> None:  # fmt: skip
    key_a = settings.secret_key
    first = f"ringa{uuid.uuid4().hex[:6]}@example.com"
    assert (await register(client, username=f"ra{uuid.uuid4().hex[:8]}", email=first,
                           phone=None)).status_code == 202  # fmt: skip
    report = await reseal(db, (KEY_B, key_a))
    assert vars(report.sealed["queued codes"]) == {"resealed": 1, "current": 0, "broken": 0}
    assert await _drain(db, rotated(settings, KEY_B)) >= 1  # A dropped: sent all the same
    assert inbox.last_code(first)

    second = f"ringb{uuid.uuid4().hex[:6]}@example.com"
    assert (await register(client, username=f"rb{uuid.uuid4().hex[:8]}", email=second,
                           phone=None)).status_code == 202  # fmt: skip
    await _drain(db, rotated(settings, KEY_B))  # A dropped before `reseal`: buried, not sent
    assert inbox.to(second) == []
    async with db.read() as s:
        jobs = (await s.execute(select(OutboxJob).where(OutboxJob.kind == SEND_CODE))).scalars()
        dead = [j for j in jobs if j.status == "dead"]
    assert len(dead) == 1 and dead[0].payload == {}
    assert ("crypto.seal_broken", {"purpose": "outbox-code", "keys_tried": 1}) in recorder.events


# --- staff -----------------------------------------------------------------------------------


async def test_staff_sign_in_after_a_rotation_and_after_reseal(
    db: Database, settings: Settings
) -> None:
    key_a = settings.secret_key
    staff = await new_staff(db, settings, "agent")
    other = await new_staff(db, settings, "admin")
    assert staff.secret and other.secret

    async with Restarted(rotated(settings, KEY_B, key_a), db) as b:
        r = await b.post("/api/v1/admin/session", json={
            "username": staff.username, "password": STAFF_PASSWORD,
            "code": code_for(staff.secret)})  # fmt: skip
        assert r.status_code == 200, r.text
    row = await _staff(db, staff.id)
    assert row.totp_secret_sealed
    assert unseal(KEY_B, "staff-totp", row.totp_secret_sealed).decode() == staff.secret

    report = await reseal(db, (KEY_B, key_a))
    assert vars(report.sealed["staff TOTP secrets"]) == {"resealed": 1, "current": 1, "broken": 0}
    async with Restarted(rotated(settings, KEY_B), db) as b_only:
        r = await b_only.post("/api/v1/admin/session", json={
            "username": other.username, "password": STAFF_PASSWORD,
            "code": code_for(other.secret)})  # fmt: skip
        assert r.status_code == 200, r.text


async def _staff(db: Database, staff_id: uuid.UUID) -> StaffUser:
    async with db.read() as s:
        row = await s.get(StaffUser, staff_id)
    assert row is not None
    return row


async def test_staff_whose_secret_no_key_opens_get_a_clear_503_on_the_api_and_the_page(
    db: Database, settings: Settings, recorder: Recorder
) -> None:
    staff = await new_staff(db, settings, "finance")
    assert staff.secret
    async with Restarted(rotated(settings, KEY_C), db) as c_only:
        for _ in range(6):  # past the failures that would lock them: none is counted
            r = await c_only.post("/api/v1/admin/session", json={
                "username": staff.username, "password": STAFF_PASSWORD,
                "code": code_for(staff.secret)})  # fmt: skip
            assert r.status_code == 503, r.text
            assert problem(r)["type"] == "/problems/second-factor-unavailable"
        page = await c_only.get("/backoffice/login")
        r = await c_only.post("/backoffice/login", data={
            "username": staff.username, "password": STAFF_PASSWORD,
            "csrf": csrf_of(page.text)})  # fmt: skip
        assert r.status_code == 303, r.text
        page = await c_only.get("/backoffice/login/code")
        assert page.status_code == 200
        r = await c_only.post("/backoffice/login/code", data={
            "code": code_for(staff.secret), "csrf": csrf_of(page.text)})  # fmt: skip
        assert r.status_code == 503
        assert "text/html" in r.headers["content-type"]
        assert "Two-step verification cannot be checked" in r.text
    row = await _staff(db, staff.id)
    assert row.failed_logins == 0 and row.locked_until is None
    assert ("crypto.seal_broken", {"purpose": "staff-totp", "keys_tried": 1}) in recorder.events


async def test_staff_enrolment_under_a_dropped_key_starts_again(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent", enrolled=False)

    async def half(s: AsyncSession) -> None:
        from simcharge.backoffice.staff import start_enrolment

        row = await s.get(StaffUser, staff.id)
        assert row is not None
        start_enrolment(settings, row)  # sealed under A, never confirmed

    await db.run(half)
    async with Restarted(rotated(settings, KEY_B), db) as b_only:
        page = await b_only.get("/backoffice/login")
        r = await b_only.post("/backoffice/login", data={
            "username": staff.username, "password": STAFF_PASSWORD,
            "csrf": csrf_of(page.text)})  # fmt: skip
        assert r.status_code == 303, r.text
        page = await b_only.get("/backoffice/login/code")
        assert page.status_code == 200
        import re

        found = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page.text)
        assert found, "a new secret is shown"
        r = await b_only.post("/backoffice/login/code", data={
            "code": code_for(found.group(1)), "csrf": csrf_of(page.text)})  # fmt: skip
        assert r.status_code == 303 and r.headers["location"] == "/backoffice"
    row = await _staff(db, staff.id)
    assert row.totp_secret_sealed
    assert unseal(KEY_B, "staff-totp", row.totp_secret_sealed).decode() == found.group(1)


# --- the ring itself, the settings, the command ----------------------------------------------


def test_the_ring_reads_under_any_key_and_writes_under_the_current_one() -> None:
    sealed = seal("key-a" * 8, "p", b"hello")
    assert unseal_any(("key-b" * 8, "key-a" * 8), "p", sealed) == (b"hello", False)
    assert unseal_any("key-a" * 8, "p", sealed) == (b"hello", True)
    assert crypto.resealed(("key-a" * 8,), "p", sealed) is None
    again = crypto.resealed(("key-b" * 8, "key-a" * 8), "p", sealed)
    assert again is not None and unseal("key-b" * 8, "p", again) == b"hello"
    with pytest.raises(SealBroken):
        unseal_any(("key-b" * 8,), "p", sealed)
    with pytest.raises(SealBroken):
        unseal_any(("key-a" * 8,), "other-purpose", sealed)
    with pytest.raises(ValueError, match="at least the current key"):
        crypto.as_ring(())
    stored = crypto.keyed_hash("key-a" * 8, "p", "v")
    assert crypto.keyed_hash_matches(("key-b" * 8, "key-a" * 8), "p", "v", stored)
    assert not crypto.keyed_hash_matches(("key-b" * 8,), "p", "v", stored)
    tagged = crypto.tagged_hash("key-a" * 8, "p", "v")
    assert len(tagged) == 64 and crypto.hash_key_id(tagged) == key_id("key-a" * 8)
    assert tagged in crypto.tagged_hashes(("key-b" * 8, "key-a" * 8), "p", "v")
    assert stored in crypto.tagged_hashes(("key-b" * 8, "key-a" * 8), "p", "v")
    assert key_id("key-a" * 8) != key_id("key-b" * 8) and len(key_id("x")) == 8


def test_the_previous_keys_setting() -> None:
    base = {"_env_file": None, "secret_key": KEY_B}
    assert Settings(**base).secret_keys == (KEY_B,)  # type: ignore[arg-type]
    s = Settings(**base, secret_key_previous=f" {KEY_C} ,,{KEY_B}, short")  # type: ignore[arg-type]
    assert s.secret_keys == (KEY_B, KEY_C, "short")  # outside production: as given
    assert KEY_C not in repr(s)  # a secret: never in a repr or a log
    prod = {**base, "env": "production", "base_url": "https://top.example"}
    assert Settings(**prod, secret_key_previous=KEY_C).secret_keys == (  # type: ignore[arg-type]
        KEY_B, KEY_C)
    for bad in ("short-key", f"{KEY_C},dev-insecure-change-me"):
        with pytest.raises(ValidationError, match="SIMCHARGE_SECRET_KEY_PREVIOUS") as caught:
            Settings(**prod, secret_key_previous=bad)  # type: ignore[arg-type]
        assert "short-key" not in str(caught.value) and KEY_C not in str(caught.value)


def test_secrets_reseal_on_the_command_line(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_a = "the-old-key-of-the-command-line-test-0123456789"
    ids: list[uuid.UUID] = []

    async def seed(key: str) -> None:
        db = Database.from_url(cli_env)
        try:
            async def run(s: AsyncSession) -> None:
                row = StaffUser(
                    username=f"s{uuid.uuid4().hex[:8]}", display_name="S", role="agent",
                    password_hash="x", language="en",
                    totp_secret_sealed=seal(key, "staff-totp", b"SECRETSECRETSECRET"),
                )  # fmt: skip
                s.add(row)
                await s.flush()
                ids.append(row.id)

            await db.run(run)
        finally:
            await db.dispose()

    def command(key: str, previous: str | None, *args: str) -> tuple[int, str]:
        monkeypatch.setenv("SIMCHARGE_SECRET_KEY", key)
        if previous is None:
            monkeypatch.delenv("SIMCHARGE_SECRET_KEY_PREVIOUS", raising=False)
        else:
            monkeypatch.setenv("SIMCHARGE_SECRET_KEY_PREVIOUS", previous)
        get_settings.cache_clear()
        try:
            return invoke("secrets", "reseal", *args)
        finally:
            get_settings.cache_clear()

    asyncio.run(seed(key_a))
    code, out = command(KEY_B, key_a, "--dry-run")
    assert code == 0, out
    assert "would seal again 1" in out and f"current key {key_id(KEY_B)}" in out
    code, out = command(KEY_B, key_a)
    assert code == 0, out
    assert "staff TOTP secrets" in out and "sealed again 1, already current 0" in out
    assert key_a not in out and KEY_B not in out
    code, out = command(KEY_B, key_a)
    assert code == 0 and "sealed again 0, already current 1" in out  # idempotent
    # A value no key opens: said, exit 1, the others done.
    asyncio.run(seed(KEY_C))
    code, out = command(KEY_B, None)
    assert code == 1 and "opened by no key 1" in out and "SIMCHARGE_SECRET_KEY_PREVIOUS" in out

    async def read() -> tuple[list[StaffUser], list[AuditEntry]]:
        db = Database.from_url(cli_env)
        try:
            async with db.read() as s:
                return (
                    list((await s.execute(select(StaffUser))).scalars()),
                    list((await s.execute(
                        select(AuditEntry).where(AuditEntry.action == "secrets.reseal")
                    )).scalars()),
                )  # fmt: skip
        finally:
            await db.dispose()

    staff, entries = asyncio.run(read())
    by_id = {st.id: st for st in staff}
    sealed = by_id[ids[0]].totp_secret_sealed
    assert sealed and unseal(KEY_B, "staff-totp", sealed) == b"SECRETSECRETSECRET"
    assert len(entries) == 3 and entries[0].actor == f"cli:{getpass.getuser()}"
    assert all(key_a not in str(e.details) and KEY_B not in str(e.details) for e in entries)
