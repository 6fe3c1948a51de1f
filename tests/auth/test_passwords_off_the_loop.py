"""The argon2id work of sign-ins and password changes runs in a worker thread, not on the
event loop (found by the chaos run of the eighth review round).

- `test_customer_password_work_runs_off_the_event_loop`, `test_staff_password_work_runs_off_the_event_loop`:
  `hash_password` / `verify_password` (tenths of a second of CPU each) ran on the event loop,
  so one sign-in stalled every other request of its web process — a concurrent sign-in's Redis
  count then overran its deadline and was refused 503 with Redis healthy. Now every hash and
  check made for a request runs in a thread (`passwords.hashed` / `verified`): registration,
  sign-in (an unknown name too), a re-asked password, a password change; staff sign-in and
  their own change.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import httpx
import pytest

from simcharge.auth import passwords
from simcharge.config import Settings
from simcharge.db import Database
from tests.auth.helpers import PASSWORD, login, signup
from tests.backoffice.helpers import STAFF_PASSWORD, csrf_of, new_staff
from tests.conftest import SmtpInbox


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(what, whether on the event loop's thread) for every argon2 hash and check made."""
    loop_thread = threading.get_ident()
    seen: list[tuple[str, bool]] = []
    real_hash, real_verify = passwords.hash_password, passwords.verify_password

    def hash_password(password: str) -> str:
        seen.append(("hash", threading.get_ident() == loop_thread))
        return real_hash(password)

    def verify_password(password_hash: str | None, password: str) -> bool:
        seen.append(("verify", threading.get_ident() == loop_thread))
        return real_verify(password_hash, password)

    monkeypatch.setattr(passwords, "hash_password", hash_password)
    monkeypatch.setattr(passwords, "verify_password", verify_password)
    return seen


async def test_customer_password_work_runs_off_the_event_loop(
    client: httpx.AsyncClient,
    inbox: SmtpInbox,
    deliver: Callable[[], Awaitable[int]],
    threads: list[tuple[str, bool]],
) -> None:
    customer = await signup(client, inbox, deliver)  # registers, verifies, signs in
    assert (await login(client, "nobody-by-this-name")).status_code == 401
    r = await client.post(
        "/api/v1/me/password",
        headers={"Authorization": f"Bearer {customer.token}"},
        json={"current_password": PASSWORD, "new_password": "tangerine-lantern-4471"},
    )
    assert r.status_code in (200, 204), r.text
    kinds = {what for what, _ in threads}
    assert kinds == {"hash", "verify"}, threads
    assert not [t for t in threads if t[1]], threads


async def test_staff_password_work_runs_off_the_event_loop(
    client: httpx.AsyncClient, db: Database, settings: Settings, threads: list[tuple[str, bool]]
) -> None:
    staff = await new_staff(db, settings, "agent")
    threads.clear()  # the factory's own hashing is not a request's
    page = await client.get("/backoffice/login")
    r = await client.post(
        "/backoffice/login",
        data={"username": staff.username, "password": STAFF_PASSWORD, "csrf": csrf_of(page.text)},
    )
    assert r.status_code == 303, r.text
    r = await client.post(
        "/api/v1/admin/password",
        headers=staff.auth,
        json={"current_password": STAFF_PASSWORD, "new_password": "tangerine-lantern-4471"},
    )
    assert r.status_code == 200, r.text
    assert {what for what, _ in threads} == {"hash", "verify"}, threads
    assert not [t for t in threads if t[1]], threads
