"""Each staff member's own time zone, on SQLite and PostgreSQL: chosen on their settings page from
the portal's list, the back office writes their times in it (naming it); none is the operator's
zone. An unknown zone is refused (422, the field named, nothing changed). Reports still count the
operator's days and say so; the admin API still speaks UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.app import create_app
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.models import AuditEntry, StaffSession
from simcharge.backoffice.web import zone_of
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.kit.moments import moment_text
from tests.backoffice.helpers import new_staff, staff_row, web_sign_in

OPERATOR = "America/Mexico_City"
AT = datetime(2026, 12, 7, 0, 30, tzinfo=UTC)


async def _last_seen(db: Database, staff_id: Any) -> datetime:
    async with db.read() as s:
        rows = await s.execute(
            select(StaffSession.last_seen_at).where(StaffSession.staff_id == staff_id)
        )
        return max(rows.scalars())


async def test_a_staff_member_sees_times_in_their_own_zone(
    settings: Settings, db: Database
) -> None:
    clock.freeze(AT)
    operator = settings.model_copy(update={"operator_timezone": OPERATOR})
    app = create_app(operator, db=db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        staff = await new_staff(db, operator, "admin")
        csrf = await web_sign_in(client, staff)
        seen = await _last_seen(db, staff.id)
        home = await client.get("/backoffice")
        assert moment_text("en", seen, None, OPERATOR) in home.text  # none chosen: the operator's
        page = await client.get("/backoffice/account")
        assert '<option value="Asia/Tokyo">' in page.text  # the portal's list of zones
        assert '<option value="" selected>' in page.text

        r = await client.post("/backoffice/account/time-zone",
                              data={"csrf": csrf, "time_zone": "Asia/Tokyo"})
        assert r.status_code == 303
        assert r.headers["location"] == "/backoffice/account?done=time_zone"
        assert (await staff_row(db, staff.id)).time_zone == "Asia/Tokyo"
        home = await client.get("/backoffice")
        tokyo = moment_text("en", seen, None, "Asia/Tokyo")
        assert tokyo.endswith("UTC+09:00") and tokyo in home.text  # the zone named
        assert moment_text("en", seen, None, OPERATOR) not in home.text
        page = await client.get("/backoffice/account")
        assert '<option value="Asia/Tokyo" selected>' in page.text

        # Reports still count the operator's days, and say so.
        reports = await client.get("/backoffice/reports")
        assert reports.status_code == 200
        assert f"Days are the operator's days, in {OPERATOR}" in reports.text

        # The admin API still speaks UTC.
        r = await client.get("/api/v1/admin/audit", headers=staff.auth)
        entry = next(e for e in r.json() if e["action"] == "staff.time_zone")
        assert datetime.fromisoformat(entry["at"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert (entry["before"], entry["after"]) == (
            {"time_zone": None}, {"time_zone": "Asia/Tokyo"}
        )

        # Empty: back to the operator's zone.
        r = await client.post("/backoffice/account/time-zone", data={"csrf": csrf, "time_zone": ""})
        assert r.status_code == 303
        assert (await staff_row(db, staff.id)).time_zone is None
        assert moment_text("en", seen, None, OPERATOR) in (await client.get("/backoffice")).text


async def test_an_unknown_zone_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    staff = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, staff)
    r = await client.post("/backoffice/account/time-zone",
                          data={"csrf": csrf, "time_zone": "Asia/Manila"})
    assert r.status_code == 303
    for bad in ("Asia/Atlantis", "utc+8", "../etc/passwd", "x" * 65):
        r = await client.post("/backoffice/account/time-zone", data={"csrf": csrf, "time_zone": bad})
        assert r.status_code == 422, bad
        assert r.headers["content-type"].startswith("text/html")
        if len(bad) <= 64:
            assert 'id="zone-time_zone-error"' in r.text, bad
            assert 'aria-invalid="true"' in r.text
            assert "Choose a time zone by its IANA name" in r.text
    r = await client.post("/backoffice/account/time-zone",
                          data={"csrf": csrf, "time_zone": "Asia/Atlantis\x00"})
    assert r.status_code in (400, 422)
    r = await client.post("/backoffice/account/time-zone",
                          data={"csrf": "forged", "time_zone": "Asia/Tokyo"})
    assert r.status_code == 403
    assert (await staff_row(db, staff.id)).time_zone == "Asia/Manila"
    async with db.read() as s:
        changes = (await s.execute(
            select(AuditEntry).where(AuditEntry.action == "staff.time_zone")
        )).scalars().all()  # fmt: skip
    assert len(changes) == 1


def test_a_zone_the_database_no_longer_knows_falls_back_to_the_operators(
    settings: Settings,
) -> None:
    """A zone stored once and later dropped from the time zone database is never an error."""
    from simcharge.backoffice.models import StaffUser

    staff = StaffUser(username="x", display_name="X", role="agent", password_hash="-",
                      time_zone="Mars/Olympus_Mons")  # fmt: skip
    actor = Actor(name="staff:x", permissions=frozenset(), staff=staff)
    assert zone_of(settings, actor) == settings.operator_timezone
    staff.time_zone = "Asia/Tokyo"
    assert zone_of(settings, actor) == "Asia/Tokyo"
    assert zone_of(settings, None) == settings.operator_timezone
