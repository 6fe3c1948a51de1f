"""The staff sign-in API is limited per address as the page is (one count for both), and a staff
member's change of language is audited."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import STAFF_PASSWORD, code_for, csrf_of, new_staff, web_sign_in


async def _actions(db: Database, action: str) -> list[AuditEntry]:
    async with db.read() as s:
        return list(
            (await s.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars()
        )


async def test_the_sign_in_api_is_limited_per_address_with_the_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """30 password tries a minute from one address, through the API and the page together;
    then even the right password and code are refused (429), and nothing is signed in."""
    staff = await new_staff(db, settings, "admin")
    assert staff.secret
    for n in range(25):
        r = await client.post("/api/v1/admin/session", json={
            "username": f"nobody{n}", "password": "wrong-password-123", "code": "000000"})  # fmt: skip
        assert r.status_code == 401, r.text
    for n in range(5):
        login = await client.get("/backoffice/login")
        r = await client.post("/backoffice/login", data={
            "username": f"someone{n}", "password": "x" * 10, "csrf": csrf_of(login.text)})  # fmt: skip
        assert r.status_code == 401
    right = {"username": staff.username, "password": STAFF_PASSWORD,
             "code": code_for(staff.secret)}  # fmt: skip
    r = await client.post("/api/v1/admin/session", json=right)
    assert r.status_code == 429, r.text
    assert r.json()["type"] == "/problems/too-many-attempts"
    assert int(r.headers["retry-after"]) >= 1
    assert "token" not in r.json()
    assert [e for e in await _actions(db, "staff.login") if e.staff_id == staff.id] == []
    assert len(await _actions(db, "staff.login_failed")) == 30


async def test_a_change_of_language_is_audited(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent", language="zh-Hans")
    csrf = await web_sign_in(client, staff)
    r = await client.post("/backoffice/language", data={"csrf": csrf, "language": "es"})
    assert r.status_code == 303
    [entry] = await _actions(db, "staff.language")
    assert (entry.actor, entry.staff_id) == (f"staff:{staff.username}", staff.id)
    assert (entry.target_type, entry.target_id) == ("staff", str(staff.id))
    assert (entry.before, entry.after) == ({"language": "zh-Hans"}, {"language": "es"})
    # the same language again changes nothing, and is not recorded again
    r = await client.post("/backoffice/language", data={"csrf": csrf, "language": "es"})
    assert r.status_code == 303
    assert len(await _actions(db, "staff.language")) == 1
    async with db.read() as s:
        row = await s.get(StaffUser, staff.id)
        assert row is not None and row.language == "es"
