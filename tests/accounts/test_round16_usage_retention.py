"""Round 16 (DPO review): usage records' traffic and location detail is kept only as long as a
bill can be challenged (`SIMCHARGE_RETENTION_USAGE_DETAIL_DAYS`, 365): past it the sweep empties
`country` and `zone` and cuts `started_at` to its day; the record stays with what it used and
cost (the ledger is not touched), its id and `external_id`. The back office's usage page and
its API still show such a record."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.retention import sweep
from simcharge.charging.models import UsageRecord
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.factories import create_line

DAY = timedelta(days=1)
RULE = "usage_records.detail"


def _record(line_id: uuid.UUID, at: datetime, **more: Any) -> UsageRecord:
    return UsageRecord(
        id=uuid.uuid4(), source="batch", external_id=f"cdr-{uuid.uuid4().hex[:12]}",
        line_id=line_id, service="data", country="PH", zone="asia", quantity=2048, rated=2048,
        from_buckets=1024, from_wallet=1024, charge=7, currency="USD", unbilled=0,
        taken=[[str(uuid.uuid4()), 1024]], started_at=at, **more,
    )


async def _seed(db: Database, now: datetime) -> tuple[Any, UsageRecord, UsageRecord]:
    async def run(s: AsyncSession) -> tuple[Any, UsageRecord, UsageRecord]:
        line = await create_line(s, account_id=None)
        old = _record(line.id, (now - 366 * DAY).replace(hour=17, minute=42, second=9,
                                                          microsecond=123000))
        new = _record(line.id, now - 364 * DAY)
        s.add_all([old, new])
        await s.flush()
        return line, old, new

    return await db.run(run)


async def _get(db: Database, row: UsageRecord) -> UsageRecord:
    async with db.read() as s:
        found = await s.get(UsageRecord, row.id, populate_existing=True)
    assert found is not None
    return found


def _money(r: UsageRecord) -> tuple[Any, ...]:
    return (r.id, r.source, r.external_id, r.line_id, r.service, r.quantity, r.rated,
            r.from_buckets, r.from_wallet, r.charge, r.currency, r.unbilled, r.taken)


async def test_past_the_period_the_detail_goes_and_the_charge_stays(
    db: Database, settings: Settings
) -> None:
    now = utcnow()
    _, old, new = await _seed(db, now)
    counted = await sweep(db, settings, now=now, dry_run=True)
    assert counted.changed[RULE] == 1
    assert (await _get(db, old)).zone == "asia"  # a dry run changes nothing

    report = await sweep(db, settings, now=now)
    assert report.changed[RULE] == 1
    stripped = await _get(db, old)
    assert (stripped.country, stripped.zone) == (None, "")
    day = old.started_at.replace(hour=0, minute=0, second=0, microsecond=0)
    assert stripped.started_at.replace(tzinfo=None) == day.replace(tzinfo=None)
    assert _money(stripped) == _money(old)
    kept = await _get(db, new)
    assert (kept.country, kept.zone, kept.started_at) == ("PH", "asia", new.started_at)
    # Idempotent: a stripped record is not taken again.
    assert (await sweep(db, settings, now=now)).changed[RULE] == 0
    assert (await sweep(db, settings, now=now, dry_run=True)).changed[RULE] == 0


async def test_a_setting_of_zero_keeps_the_detail(db: Database, settings: Settings) -> None:
    now = utcnow()
    _, old, _ = await _seed(db, now)
    forever = settings.model_copy(update={"retention_usage_detail_days": 0})
    report = await sweep(db, forever, now=now + 3650 * DAY)
    assert RULE in report.kept and RULE not in report.changed
    assert (await _get(db, old)).zone == "asia"


def test_a_negative_setting_is_refused() -> None:
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(retention_usage_detail_days=-1)
    assert caught.value.errors()[0]["loc"] == ("retention_usage_detail_days",)


async def test_the_usage_page_and_its_api_show_a_stripped_record(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    now = utcnow()
    line, old, _ = await _seed(db, now)
    await sweep(db, settings, now=now)
    staff = await new_staff(db, settings, "agent")
    r = await client.get(f"/api/v1/admin/lines/{line.id}/usage",
                         headers={"Authorization": f"Bearer {staff.token}"})
    assert r.status_code == 200, r.text
    shown = {u["id"]: u for u in r.json()}
    assert (shown[str(old.id)]["country"], shown[str(old.id)]["zone"]) == (None, "")
    assert shown[str(old.id)]["charge"] == 7
    assert shown[str(old.id)]["external_id"] == old.external_id
    await web_sign_in(client, staff)
    page = await client.get(f"/backoffice/lines/{line.id}/usage")
    assert page.status_code == 200, page.text
    assert page.text.count("<tr>") >= 2
