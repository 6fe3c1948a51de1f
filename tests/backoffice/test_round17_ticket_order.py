"""The admin tickets API offers the queue page's order (seventeenth round): `order=waiting` is
the tickets waiting for customer service first — urgent, high, normal, low, each the longest
waiting first — then the others, latest activity first; a page at a time with the cursor of
where it ended (`after_priority`, `after`, `after_id` among the open ones, `before`,
`before_id` among the others). An order that is none of the two, or a cursor that is half
given or given with the other order, is `422 validation-error` naming it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.tickets.models import Ticket
from tests.backoffice.helpers import new_staff

URL = "/api/v1/admin/tickets"
# (number, status, priority, minutes ago of its last activity)
TICKETS = [
    ("T-LOWOLD", "open", "low", 500),
    ("T-NORMNEW", "open", "normal", 10),
    ("T-NORMOLD", "open", "normal", 300),
    ("T-URGNEW", "open", "urgent", 5),
    ("T-URGOLD", "open", "urgent", 50),
    ("T-HIGH", "open", "high", 20),
    ("T-WAITCUS", "waiting_on_customer", "urgent", 1),
    ("T-RESOLVED", "resolved", "high", 100),
    ("T-CLOSED", "closed", "low", 2),
]
WAITING_ORDER = ["T-URGOLD", "T-URGNEW", "T-HIGH", "T-NORMOLD", "T-NORMNEW", "T-LOWOLD",
                 "T-WAITCUS", "T-CLOSED", "T-RESOLVED"]  # fmt: skip


async def _tickets(db: Database) -> uuid.UUID:
    now = utcnow()

    async def run(s: AsyncSession) -> uuid.UUID:
        account = Account(id=uuid7(), username=f"q{uuid.uuid4().hex[:8]}", password_hash="!")
        s.add(account)
        await s.flush()
        s.add_all(
            Ticket(number=n, account_id=account.id, subject=n, status=st, priority=p,
                   updated_at=now - timedelta(minutes=ago))
            for n, st, p, ago in TICKETS
        )  # fmt: skip
        await s.flush()
        return account.id

    return await db.run(run)


def _next(page: list[dict[str, Any]]) -> dict[str, str]:
    """Where the next page of `order=waiting` starts: as the API's description says."""
    last = page[-1]
    if last["status"] == "open":
        return {"after_priority": last["priority"], "after": last["updated_at"],
                "after_id": last["id"]}  # fmt: skip
    return {"before": last["updated_at"], "before_id": last["id"]}


async def test_order_waiting_is_the_queue_pages_order_page_by_page(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    account_id = await _tickets(db)
    agent = await new_staff(db, settings, "agent")
    mine = {"account_id": str(account_id)}

    r = await client.get(URL, headers=agent.auth, params={**mine, "order": "waiting"})
    assert r.status_code == 200, r.text
    assert [t["number"] for t in r.json()] == WAITING_ORDER
    # The default is still latest activity first.
    r = await client.get(URL, headers=agent.auth, params=mine)
    latest = [n for n, *_ in sorted(TICKETS, key=lambda t: t[3])]
    assert [t["number"] for t in r.json()] == latest
    r = await client.get(URL, headers=agent.auth, params={**mine, "order": "latest"})
    assert [t["number"] for t in r.json()] == latest

    # Two at a time: the pages join up, among the open ones and across to the others.
    for size in (1, 2, 4):
        seen: list[str] = []
        params: dict[str, str] = {**mine, "order": "waiting", "limit": str(size)}
        while True:
            r = await client.get(URL, headers=agent.auth, params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            seen += [t["number"] for t in page]
            if len(page) < size:
                break
            params = {**mine, "order": "waiting", "limit": str(size), **_next(page)}
        assert seen == WAITING_ORDER, size

    # With a filter: the open ones only, in the queue's order.
    r = await client.get(URL, headers=agent.auth,
                         params={**mine, "order": "waiting", "status": "open"})  # fmt: skip
    assert [t["number"] for t in r.json()] == WAITING_ORDER[:6]
    r = await client.get(URL, headers=agent.auth,
                         params={**mine, "order": "waiting", "priority": "urgent"})  # fmt: skip
    assert [t["number"] for t in r.json()] == ["T-URGOLD", "T-URGNEW", "T-WAITCUS"]

    async with db.read() as s:
        details = (await s.execute(select(AuditEntry.details).where(
            AuditEntry.action == "ticket.list").order_by(AuditEntry.at))).scalars().all()  # fmt: skip
    assert details[0]["order"] == "waiting" and "order" not in details[1]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"order": "oldest"}, "order"),
        ({"order": ""}, "order"),
        ({"order": "WAITING"}, "order"),
        ({"after_priority": "urgent", "after": "2026-12-01T10:00:00Z",
          "after_id": str(uuid.uuid4())}, "after_priority"),  # without order=waiting
        ({"order": "latest", "after": "2026-12-01T10:00:00Z"}, "after"),
        ({"order": "waiting", "after_priority": "urgent"}, "after"),
        ({"order": "waiting", "after_priority": "urgent", "after": "2026-12-01T10:00:00Z"},
         "after_id"),
        ({"order": "waiting", "after": "2026-12-01T10:00:00Z", "after_id": str(uuid.uuid4())},
         "after_priority"),
        ({"order": "waiting", "after_priority": "soon", "after": "2026-12-01T10:00:00Z",
          "after_id": str(uuid.uuid4())}, "after_priority"),
        ({"order": "waiting", "after_priority": "low", "after": "today",
          "after_id": str(uuid.uuid4())}, "after"),
    ],
)
async def test_a_bad_order_or_cursor_is_refused_naming_it(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    params: dict[str, str],
    field: str,
) -> None:
    await _tickets(db)
    agent = await new_staff(db, settings, "agent")
    r = await client.get(URL, headers=agent.auth, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/validation-error"
    assert r.json()["field"] == field
    async with db.read() as s:  # nothing listed, nothing audited
        listed = (await s.execute(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "ticket.list"))).scalar_one()  # fmt: skip
    assert listed == 0
