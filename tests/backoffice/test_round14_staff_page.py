"""The staff page's role and access selects (fourteenth round): they started on "—" (no
change), an unlabelled choice. They now start on the member's current role and access, each
labelled "(current)"; sent back as they are, they change nothing — so saving a new
authenticator alone neither demotes nor re-enables anyone. The service agrees: a role or access
the member already has is no change (no session ended), on the page and through the API."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import StaffSession, StaffUser
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, staff_row, web_sign_in


def _select(html: str, staff_id: object, name: str) -> str:
    m = re.search(rf'<select id="staff-{staff_id}-{name}"[^>]*>(.*?)</select>', html, re.S)
    assert m, name
    return m.group(1)


async def _live_sessions(db: Database, staff_id: object) -> int:
    async with db.read() as s:
        rows = (await s.execute(select(StaffSession).where(
            StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None)))).scalars()
        return len(list(rows))


async def test_the_selects_start_on_the_current_role_and_access(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    finance = await new_staff(db, settings, "finance")
    await web_sign_in(client, admin)
    page = (await client.get("/backoffice/staff")).text
    role = _select(page, finance.id, "role")
    assert "—" not in role and 'value=""' not in role
    assert re.findall(r'<option value="(\w+)"( selected)?>([^<]*)</option>', role) == [
        ("agent", "", "agent"), ("finance", " selected", "finance (current)"),
        ("admin", "", "admin")]
    access = _select(page, finance.id, "access")
    assert re.findall(r'<option value="(\w+)"( selected)?>([^<]*)</option>', access) == [
        ("on", " selected", "enabled (current)"), ("off", "", "disabled")]


async def test_sent_back_as_they_are_the_selects_change_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "admin")
    csrf = await web_sign_in(client, admin)
    assert await _live_sessions(db, member.id) == 1
    r = await client.post(f"/backoffice/staff/{member.id}",
                          data={"csrf": csrf, "role": "admin", "access": "on"})
    assert r.headers["location"] == "/backoffice/staff?done=staff_unchanged"
    assert await _live_sessions(db, member.id) == 1
    # A new authenticator with the selects as drawn: the role stays, their sessions end.
    r = await client.post(f"/backoffice/staff/{member.id}",
                          data={"csrf": csrf, "role": "admin", "access": "on",
                                "reset_totp": "true"})
    assert r.headers["location"] == "/backoffice/staff?done=staff_changed"
    row = await staff_row(db, member.id)
    assert (row.role, row.active, row.totp_enabled_at) == ("admin", True, None)
    assert await _live_sessions(db, member.id) == 0
    # Switched off, the page now starts on "disabled (current)"; a real change still works.
    r = await client.post(f"/backoffice/staff/{member.id}",
                          data={"csrf": csrf, "role": "agent", "access": "off"})
    assert r.headers["location"] == "/backoffice/staff?done=staff_changed"
    page = (await client.get("/backoffice/staff")).text
    assert '<option value="off" selected>disabled (current)</option>' in _select(
        page, member.id, "access")
    assert '<option value="agent" selected>agent (current)</option>' in _select(
        page, member.id, "role")
    # A refused value is drawn again as typed, with the error, nothing changed.
    r = await client.post(f"/backoffice/staff/{member.id}",
                          data={"csrf": csrf, "role": "boss", "access": "off"})
    assert r.status_code == 422 and "Unknown role." in r.text
    assert (await staff_row(db, member.id)).role == "agent"


async def test_the_api_patch_with_the_current_role_ends_no_session(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    admin = await new_staff(db, settings, "admin")
    member = await new_staff(db, settings, "finance")
    url = f"/api/v1/admin/staff/{member.id}"
    r = await client.patch(url, headers=admin.auth, json={"role": "finance", "active": True})
    assert r.status_code == 200, r.text
    assert await _live_sessions(db, member.id) == 1
    r = await client.patch(url, headers=admin.auth, json={"role": "agent"})
    assert r.status_code == 200 and await _live_sessions(db, member.id) == 0
    async with db.read() as s:
        assert (await s.get(StaffUser, member.id)).role == "agent"  # type: ignore[union-attr]
