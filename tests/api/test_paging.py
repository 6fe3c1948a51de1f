"""Lists paged newest first by (created_at, id): a page may end among rows made at the same
moment (one transaction, one clock reading), and the next page must neither skip nor repeat
them — the customer's orders and security events, staff's orders and jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.apikeys import create_api_key
from simcharge.auth.events import EventKind, record_event
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.worker.models import OutboxJob
from simcharge.worker.service import enqueue
from tests.factories import load_demo_catalog
from tests.orders.helpers import new_payer, place

Page = Callable[[dict[str, Any]], Awaitable[httpx.Response]]


async def _walk(page: Page, *, items: str | None, cursor: str | None) -> list[str]:
    """Every id, page by page of 2: from the answer's `next_before`/`next_before_id`
    (`cursor`: the answer names them), else from the last item's `created_at` and `id`."""
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(10):
        r = await page(params)
        assert r.status_code == 200, r.text
        found = r.json()[items] if items else r.json()
        seen += [x["id"] for x in found]
        if cursor:
            if r.json()["next_before"] is None:
                return seen
            params = {"limit": 2, "before": r.json()["next_before"],
                      "before_id": r.json()["next_before_id"]}
        else:
            if len(found) < 2:
                return seen
            params = {"limit": 2, "before": found[-1]["created_at"], "before_id": found[-1]["id"]}
    raise AssertionError("the pages never end")


async def test_pages_neither_skip_nor_repeat_rows_made_at_the_same_moment(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    at = datetime.now(UTC).replace(microsecond=123456)
    clock.freeze(at)
    orders = {(await place(client, payer))["id"] for _ in range(5)}

    async def five_events(s: AsyncSession) -> None:
        for _ in range(5):
            await record_event(s, EventKind.login, account_id=payer.account_id, now=at)

    await db.run(five_events)

    async def five_jobs(s: AsyncSession) -> set[str]:
        for _ in range(5):
            await enqueue(s, "test.paging", {}, run_at=at.replace(year=2100))
        found = await s.execute(select(OutboxJob.id).where(OutboxJob.kind == "test.paging"))
        return {str(i) for i in found.scalars()}

    jobs = await db.run(five_jobs)
    assert len(jobs) == 5
    staff = {"Authorization": "Bearer " + (await db.run(lambda s: create_api_key(
        s, "ops", ["orders:read", "jobs:read"]))).token}

    def get(path: str, headers: dict[str, str], **fixed: Any) -> Page:
        async def page(params: dict[str, Any]) -> httpx.Response:
            return await client.get(path, params={**fixed, **params}, headers=headers)
        return page

    mine = await _walk(get("/api/v1/orders", payer.auth), items="items", cursor="next")
    assert sorted(mine) == sorted(orders) and len(mine) == 5
    theirs = await _walk(get("/api/v1/admin/orders", staff), items=None, cursor=None)
    assert sorted(theirs) == sorted(orders) and len(theirs) == 5
    events = await _walk(get("/api/v1/me/security-events", payer.auth), items=None, cursor=None)
    assert len(events) == len(set(events)) == 5
    queued = await _walk(get("/api/v1/admin/jobs", staff, kind="test.paging"), items=None,
                         cursor=None)
    assert sorted(queued) == sorted(jobs)
