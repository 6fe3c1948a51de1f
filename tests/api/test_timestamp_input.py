"""A time in a query parameter (`before=`) says its offset: one without (a bare day, a local
time) is invalid input named by its field, never a server error — the database keeps instants,
and an instant without its offset is not one."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.auth.helpers import problem
from tests.orders.helpers import new_payer

WITHOUT_OFFSET = ("2026-01-01", "2026-01-01T00:00:00")
# With an offset, but not a time UTC can write: before year 1, after year 9999.
OFF_THE_CALENDAR = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-01:00")


async def _audited(db: Database) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


@pytest.mark.parametrize(
    ("path", "who"),
    [
        ("/api/v1/orders", "customer"),
        ("/api/v1/me/security-events", "customer"),
        ("/api/v1/admin/orders", "staff"),
        ("/api/v1/admin/jobs", "staff"),
        ("/api/v1/admin/lines/{line}/usage", "staff"),
    ],
)
async def test_a_time_without_its_offset_is_refused_with_its_field(
    client: httpx.AsyncClient, db: Database, settings: Settings, path: str, who: str
) -> None:
    payer = await new_payer(db, settings)
    issued = await db.run(
        lambda s: create_api_key(s, "staff", ["orders:read", "jobs:read", "customers:read"])
    )
    auth = payer.auth if who == "customer" else {"Authorization": f"Bearer {issued.token}"}
    url = path.format(line=payer.line.id)
    audited = await _audited(db)
    for before in (*WITHOUT_OFFSET, *OFF_THE_CALENDAR):
        r = await client.get(url, params={"before": before}, headers=auth)
        assert r.status_code == 422, (before, r.text)
        body = problem(r)
        assert body["type"] == "/problems/validation-error"
        assert body["field"] == "before"
        assert [e["field"] for e in body["errors"]] == ["before"]
    assert await _audited(db) == audited  # a refused read of staff is not one they made
    for before in ("2026-01-01T00:00:00Z", "2026-01-01T08:00:00+08:00"):
        r = await client.get(url, params={"before": before}, headers=auth)
        assert r.status_code == 200, (before, r.text)
