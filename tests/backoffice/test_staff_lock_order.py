"""The staff member's row before their sessions, on every path.

The page's code step locked the half-open session and then the staff member, and the API's
sign-in ended the member's half-open sessions before it wrote the member's row, while an admin's
change (`change_staff`), a password set by an admin and the member's own password change lock
the member and then end their sessions: an admin's change at the moment of a sign-in deadlocked
on PostgreSQL (40P01; `Database.run` retried it a second later). The password step read the
member without a lock, so two wrong passwords at once both counted from the same number: one
failure was lost toward the lockout. Now every path takes the member's row first, and a code
step or an own password change that waited for an admin's change which ended its session does
nothing (before, the password changed through a session already ended)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry, StaffSession, StaffUser
from simcharge.backoffice.staff import change_staff
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.backoffice.helpers import STAFF_PASSWORD, code_for, csrf_of, new_staff
from tests.locks import app_client, deadlocks, until_waiting


@pytest.mark.postgres_only("row locks: SQLite has one writer at a time")
async def test_a_code_step_and_an_admin_change_at_once_do_not_deadlock(
    fresh_db: Database, settings: Settings
) -> None:
    """Was: the code step held its half-open session and waited for the member, whom the admin's
    change held while it waited to end that session: a deadlock. Now the code step waits for
    the member first, holding nothing; the admin's change ends the half-open session, and the
    code step that then runs signs nothing in (no `staff.login`, no signed-in session)."""
    db = fresh_db
    member = await new_staff(db, settings, "agent")
    admin = await new_staff(db, settings, "admin")
    before = deadlocks()
    async with app_client(db, settings) as client:
        page = await client.get("/backoffice/login")
        r = await client.post("/backoffice/login", data={
            "username": member.username, "password": STAFF_PASSWORD, "csrf": csrf_of(page.text)})  # fmt: skip
        assert r.headers["location"] == "/backoffice/login/code"
        page = await client.get("/backoffice/login/code")
        async with db.transaction() as holder:
            # The admin's change, as `change_staff` runs it: the member first…
            await holder.get(StaffUser, member.id, with_for_update=True)
            code_step = asyncio.create_task(client.post("/backoffice/login/code", data={
                "code": code_for(member.secret or ""), "csrf": csrf_of(page.text)}))  # fmt: skip
            await until_waiting(db, 1)
            # … then their sessions, while the code step waits.
            await change_staff(holder, member.id, by=admin.id, role="finance", now=utcnow())
        r = await asyncio.wait_for(code_step, 30)
    assert deadlocks() == before
    assert r.status_code == 303 and r.headers["location"] != "/backoffice", r.headers
    async with db.read() as s:
        logins = await s.execute(select(AuditEntry.id).where(
            AuditEntry.action == "staff.login", AuditEntry.target_id == str(member.id)))  # fmt: skip
        assert logins.first() is None
        live = await s.execute(select(StaffSession.id).where(
            StaffSession.staff_id == member.id, StaffSession.revoked_at.is_(None)))  # fmt: skip
        assert live.first() is None


@pytest.mark.postgres_only("row locks: SQLite has one writer at a time")
async def test_an_api_sign_in_and_an_admin_change_at_once_do_not_deadlock(
    fresh_db: Database, settings: Settings
) -> None:
    """Was: the API's sign-in ended the member's half-open session (a password step left on
    the page) and then waited for the member's row, held by an admin's change waiting to end
    that session: a deadlock. Now the sign-in waits for the member before anything else, and
    signs in once the change is made (under the new role)."""
    db = fresh_db
    member = await new_staff(db, settings, "agent")
    admin = await new_staff(db, settings, "admin")
    before = deadlocks()
    async with app_client(db, settings) as client:
        page = await client.get("/backoffice/login")
        r = await client.post("/backoffice/login", data={
            "username": member.username, "password": STAFF_PASSWORD, "csrf": csrf_of(page.text)})  # fmt: skip
        assert r.headers["location"] == "/backoffice/login/code"  # a half-open session
        async with db.transaction() as holder:
            await holder.get(StaffUser, member.id, with_for_update=True)
            signing_in = asyncio.create_task(client.post("/api/v1/admin/session", json={
                "username": member.username, "password": STAFF_PASSWORD,
                "code": code_for(member.secret or "")}))  # fmt: skip
            await until_waiting(db, 1)
            await change_staff(holder, member.id, by=admin.id, role="finance", now=utcnow())
        r = await asyncio.wait_for(signing_in, 30)
    assert deadlocks() == before
    assert r.status_code == 200, r.text
    async with db.read() as s:
        live = await s.execute(select(StaffSession.mfa).where(
            StaffSession.staff_id == member.id, StaffSession.revoked_at.is_(None)))  # fmt: skip
        assert list(live.scalars()) == [True]


@pytest.mark.postgres_only("row locks: SQLite has one writer at a time")
async def test_two_wrong_passwords_at_once_both_count(
    fresh_db: Database, settings: Settings
) -> None:
    """Was: each password step read the member's failure count unlocked and wrote it plus one,
    so two wrong passwords at once counted one failure (guesses sent in parallel wore the
    lockout down more slowly). Now each waits for the member's row and counts on what the
    other wrote."""
    db = fresh_db
    member = await new_staff(db, settings, "agent")
    async with app_client(db, settings) as client, app_client(db, settings) as other:
        pages = [await c.get("/backoffice/login") for c in (client, other)]
        async with db.transaction() as holder:
            await holder.get(StaffUser, member.id, with_for_update=True)
            attempts = [
                asyncio.create_task(
                    c.post(
                        "/backoffice/login",
                        data={
                            "username": member.username,
                            "password": "wrong-password-9999",
                            "csrf": csrf_of(p.text),
                        },
                    )
                )
                for c, p in zip((client, other), pages, strict=True)
            ]
            await until_waiting(db, 2)
        answers = await asyncio.wait_for(asyncio.gather(*attempts), 30)
    assert [a.status_code for a in answers] == [401, 401]
    async with db.read() as s:
        row = await s.get(StaffUser, member.id)
        assert row is not None and row.failed_logins == 2


@pytest.mark.postgres_only("row locks: SQLite has one writer at a time")
async def test_an_own_password_change_that_waited_for_an_admin_switching_the_member_off(
    fresh_db: Database, settings: Settings
) -> None:
    """Was: a member's own password change that waited for the member's row while an admin
    switched them off (every session ended) went on once the admin's change committed: the
    password was changed, and a new token given, through a session already ended. Now it is
    refused as an ended session (`401 staff-session-ended`) and the password stays."""
    db = fresh_db
    member = await new_staff(db, settings, "agent")
    admin = await new_staff(db, settings, "admin")
    async with db.read() as s:
        found = await s.get(StaffUser, member.id)
        assert found is not None
        hash_before = found.password_hash
    async with app_client(db, settings) as client:
        async with db.transaction() as holder:
            await holder.get(StaffUser, member.id, with_for_update=True)
            changing = asyncio.create_task(client.post(
                "/api/v1/admin/password", headers=member.auth,
                json={"current_password": STAFF_PASSWORD, "new_password": "quiet-meadow-8812"}))  # fmt: skip
            await until_waiting(db, 1)
            await change_staff(holder, member.id, by=admin.id, active=False, now=utcnow())
        r = await asyncio.wait_for(changing, 30)
    assert r.status_code == 401, r.text
    assert r.json()["type"].endswith("staff-session-ended")
    async with db.read() as s:
        found = await s.get(StaffUser, member.id)
        assert found is not None and found.password_hash == hash_before
