"""Sixteenth round, the ticket queue: what waits longest first (urgent first), a cap on a
customer's open tickets and a rate for opening and answering, and the tickets of a staff member
switched off. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.tickets import service
from simcharge.tickets.models import Ticket, TicketMessage
from simcharge.worker.models import OutboxJob
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import new_payer

T0 = utcnow() - timedelta(days=3)


async def _seed(db: Database, account_id: uuid.UUID, n: int, *, start: Any, status: str = "open",
                priority: str = "normal") -> list[Ticket]:
    """`n` tickets of the account, a minute apart from `start` (no cap: staff-side seeding)."""

    async def run(s: AsyncSession) -> list[Ticket]:
        made = []
        for i in range(n):
            t, _ = await service.open_ticket(
                s, account_id, subject=f"s{i}", body="help", now=start + timedelta(minutes=i)
            )
            t.status, t.priority = status, priority
            made.append(t)
        return made

    return await db.run(run)


def _expected(tickets: list[Ticket]) -> list[uuid.UUID]:
    rank = service.PRIORITY_RANK
    waiting = sorted((t for t in tickets if t.status == "open"),
                     key=lambda t: (rank[t.priority], t.updated_at, t.id))
    rest = sorted((t for t in tickets if t.status != "open"),
                  key=lambda t: (t.updated_at, t.id), reverse=True)
    return [t.id for t in waiting + rest]


async def test_the_queue_lists_urgent_then_the_longest_waiting_and_pages_through_all(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """One customer's 130 tickets opened in a burst no longer push the oldest waiting ones, an
    urgent one among them, to page 2: urgent first, then the longest waiting, then the tickets
    not waiting for customer service (latest activity first). Every ticket is on one page,
    once, whichever way it is followed (the page of 100, or the service 7 at a time across the
    boundary between the two parts)."""
    flood, patient, other = [await new_payer(db, settings) for _ in range(3)]
    old = await _seed(db, patient.account_id, 3, start=T0)
    urgent = await _seed(db, other.account_id, 1, start=T0 + timedelta(hours=1), priority="urgent")
    low = await _seed(db, other.account_id, 1, start=T0 - timedelta(hours=1), priority="low")
    answered = await _seed(db, other.account_id, 2, start=T0 + timedelta(hours=2),
                           status="waiting_on_customer")
    done = await _seed(db, patient.account_id, 1, start=T0 + timedelta(hours=3), status="resolved")
    burst = await _seed(db, flood.account_id, 130, start=T0 + timedelta(days=1))
    everything = old + urgent + low + answered + done + burst
    expected = _expected(everything)
    assert expected[:4] == [urgent[0].id, old[0].id, old[1].id, old[2].id]

    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/tickets")
    assert page.status_code == 200
    ids = re.findall(r'href="/backoffice/tickets/([0-9a-f-]{36})"', page.text)
    assert [uuid.UUID(i) for i in ids[:4]] == expected[:4]
    assert 'id="filter-order"' in page.text and "Urgent first, then the longest waiting" in page.text
    seen: list[str] = []
    while True:
        seen += re.findall(r'href="/backoffice/tickets/([0-9a-f-]{36})"', page.text)
        more = re.search(r'<a rel="next" href="([^"]+)">([^<]+)</a>', page.text)
        if more is None:
            break
        assert more.group(2) == "Next page"
        page = await client.get(more.group(1).replace("&amp;", "&"))
        assert page.status_code == 200
    assert [uuid.UUID(i) for i in seen] == expected

    # the service, 7 at a time: the page boundary falls in each part and between them
    async with db.read() as s:
        got: list[uuid.UUID] = []
        after, before, before_id = None, None, None
        while True:
            rows = await service.find_tickets(
                s, service.TicketFilter(), limit=7, order=service.QueueOrder.waiting,
                after=after, before=before, before_id=before_id,
            )
            got += [t.id for t in rows]
            if len(rows) < 7:
                break
            last = rows[-1]
            if last.status == "open":
                after = service.WaitingAfter(last.priority, last.updated_at, last.id)
            else:
                before, before_id = last.updated_at, last.id
    assert got == expected

    # "Latest activity first": all of them by updated_at, "Older" goes on
    latest = await client.get("/backoffice/tickets", params={"order": "latest"})
    ids = re.findall(r'href="/backoffice/tickets/([0-9a-f-]{36})"', latest.text)
    by_time = sorted(everything, key=lambda t: (t.updated_at, t.id), reverse=True)
    assert [uuid.UUID(i) for i in ids] == [t.id for t in by_time[:100]]
    assert re.search(r'<a rel="next" href="[^"]*order=latest[^"]*">Older</a>', latest.text)

    # a filter on another status: latest activity first; on `open`: only the waiting part
    r = await client.get("/backoffice/tickets", params={"status": "waiting_on_customer"})
    ids = re.findall(r'href="/backoffice/tickets/([0-9a-f-]{36})"', r.text)
    assert [uuid.UUID(i) for i in ids] == [answered[1].id, answered[0].id]
    r = await client.get("/backoffice/tickets", params={"status": "open", "priority": "urgent"})
    ids = re.findall(r'href="/backoffice/tickets/([0-9a-f-]{36})"', r.text)
    assert [uuid.UUID(i) for i in ids] == [urgent[0].id]


async def test_an_unknown_order_or_page_priority_is_refused_with_nothing_listed(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    await _seed(db, payer.account_id, 1, start=T0)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    for params in ({"order": "oldest"}, {"after_priority": "critical", "after": T0.isoformat(),
                                         "after_id": str(uuid.uuid4())}):
        r = await client.get("/backoffice/tickets", params=params)
        assert r.status_code == 422, params
        below = r.text.split('method="get" action="/backoffice/tickets">')[1].split("</form>")[1]
        assert "/backoffice/tickets/" not in below and "No tickets." not in below
    r = await client.get("/backoffice/tickets", params={"order": "x\x00"})
    assert r.status_code == 422 and r.json()["field"] == "order"
    r = await client.get("/backoffice/tickets", params={"order": "oldest"})
    assert 'id="filter-order" name="order" aria-invalid="true"' in r.text


@pytest.mark.postgres_only
async def test_the_waiting_part_reads_the_status_index_on_postgresql(db: Database) -> None:
    """EXPLAIN: the tickets waiting for customer service are read from `ix_tickets_status`
    (`status = 'open'`), then sorted by priority; no index of their own, no migration."""
    stmt = service._filtered(select(Ticket), service.TicketFilter()).where(
        Ticket.status == "open"
    ).order_by(service._rank, Ticket.updated_at, Ticket.id).limit(101)
    async with db.read() as s:
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = stmt.compile(s.bind, compile_kwargs={"literal_binds": True})
        plan = "\n".join(r[0] for r in await s.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_tickets_status" in plan, plan


# --- a cap per customer, and a rate ----------------------------------------------------------


async def _open(client: httpx.AsyncClient, auth: dict[str, str], n: int, **headers: str) -> Any:
    return await client.post("/api/v1/me/tickets", headers={**auth, **headers},
                             json={"subject": f"Question {n}", "body": "Where is my data?"})


async def _count(db: Database, model: Any) -> int:
    async with db.read() as s:
        return len((await s.execute(select(model))).scalars().all())


async def test_at_most_five_open_tickets_then_409_and_nothing_written(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    first = await _open(client, payer.auth, 0, **{"Idempotency-Key": "k0"})
    assert first.status_code == 201
    for n in range(1, 5):
        assert (await _open(client, payer.auth, n)).status_code == 201
    tickets, jobs = await _count(db, Ticket), await _count(db, OutboxJob)
    r = await _open(client, payer.auth, 5)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == "/problems/too-many-open-tickets"
    assert body["detail"] == (
        "Your open requests have reached the limit (5): add to one of them, or wait for an answer."
    )
    assert (await _count(db, Ticket), await _count(db, OutboxJob)) == (tickets, jobs)
    # a retry of one of the five is still answered it
    again = await _open(client, payer.auth, 0, **{"Idempotency-Key": "k0"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # waiting for the customer's answer still counts; resolved does not
    agent = await new_staff(db, settings, "agent")
    r = await client.post(f"/api/v1/admin/tickets/{first.json()['id']}/messages",
                          headers=agent.auth, json={"body": "Which line?"})
    assert r.status_code == 201
    assert (await _open(client, payer.auth, 6)).status_code == 409
    r = await client.patch(f"/api/v1/admin/tickets/{first.json()['id']}", headers=agent.auth,
                           json={"status": "resolved"})
    assert r.status_code == 200
    assert (await _open(client, payer.auth, 7)).status_code == 201
    # another customer is not concerned
    other = await new_payer(db, settings)
    assert (await _open(client, other.auth, 0)).status_code == 201


async def test_opening_and_answering_are_rate_limited_per_account(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """10 a minute, new tickets and answers together: the 11th is `429 too-many-attempts` with
    `Retry-After`, and writes nothing."""
    payer = await new_payer(db, settings)
    opened = [(await _open(client, payer.auth, n)).json()["id"] for n in range(3)]
    for _ in range(7):
        r = await client.post(f"/api/v1/me/tickets/{opened[0]}/messages", headers=payer.auth,
                              json={"body": "Any news?"})
        assert r.status_code == 201
    messages = await _count(db, TicketMessage)
    r = await client.post(f"/api/v1/me/tickets/{opened[1]}/messages", headers=payer.auth,
                          json={"body": "Hello?"})
    assert r.status_code == 429 and r.json()["type"] == "/problems/too-many-attempts"
    assert int(r.headers["retry-after"]) >= 1
    r = await _open(client, payer.auth, 9)
    assert r.status_code == 429
    assert await _count(db, TicketMessage) == messages
    assert await _count(db, Ticket) == 3
    # counted per account: another customer opens as usual
    other = await new_payer(db, settings)
    assert (await _open(client, other.auth, 0)).status_code == 201


@pytest.mark.postgres_only
async def test_ten_opens_at_once_make_five_tickets(
    fresh_db: Database, settings: Settings
) -> None:
    """The account's row is locked while counting: a burst at once is counted one by one, not
    each against its own snapshot (which let them all through)."""
    payer = await new_payer(fresh_db, settings)
    app = create_app(settings, db=fresh_db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        answers = await asyncio.gather(*(_open(c, payer.auth, n) for n in range(10)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 5 + [409] * 5, codes
    async with fresh_db.read() as s:
        assert len((await s.execute(select(Ticket))).scalars().all()) == 5


# --- a staff member switched off ------------------------------------------------------------


async def test_switching_a_member_off_releases_their_open_tickets_audited(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent2 = await new_staff(db, settings, "agent")
    admin = await new_staff(db, settings, "admin")
    held = await _seed(db, payer.account_id, 2, start=T0)
    resolved = await _seed(db, payer.account_id, 1, start=T0, status="resolved")
    closed = await _seed(db, payer.account_id, 1, start=T0, status="closed")
    mine = held + resolved + closed

    async def assign(s: AsyncSession) -> None:
        await s.execute(update(Ticket).where(Ticket.id.in_([t.id for t in mine]))
                        .values(assignee_id=agent2.id))

    await db.run(assign)
    # refused (an admin cannot switch themself off): nothing released
    r = await client.patch(f"/api/v1/admin/staff/{admin.id}", headers=admin.auth,
                           json={"active": False})
    assert r.status_code == 409
    r = await client.patch(f"/api/v1/admin/staff/{agent2.id}", headers=admin.auth,
                           json={"active": False})
    assert r.status_code == 200, r.text
    async with db.read() as s:
        rows = {t.id: t for t in (await s.execute(select(Ticket))).scalars()}
        entries = (await s.execute(select(AuditEntry).where(
            AuditEntry.action.in_(("ticket.update", "staff.change"))))).scalars().all()
    assert [rows[t.id].assignee_id for t in held + resolved] == [None] * 3
    assert rows[closed[0].id].assignee_id == agent2.id  # who handled it stays
    assert all(rows[t.id].updated_at == t.updated_at for t in mine)  # the customer sees nothing
    released = [e for e in entries if e.action == "ticket.update"]
    assert sorted(str(e.target_id) for e in released) == sorted(str(t.id) for t in held + resolved)
    for e in released:
        assert e.before and e.after
        assert e.before["assignee_id"] == str(agent2.id) and e.after["assignee_id"] is None
        assert e.details == {"reason": "assignee_switched_off", "staff": agent2.username}
        assert e.actor == f"staff:{admin.username}"
    change = next(e for e in entries if e.action == "staff.change")
    assert change.before and change.after
    assert change.before["tickets_assigned"] == 3 and change.after["tickets_assigned"] == 0
    # switched on again: none come back
    r = await client.patch(f"/api/v1/admin/staff/{agent2.id}", headers=admin.auth,
                           json={"active": True})
    assert r.status_code == 200
    async with db.read() as s:
        assert (await s.get(Ticket, held[0].id)).assignee_id is None  # type: ignore[union-attr]


async def test_a_ticket_of_a_member_switched_off_before_counts_as_unassigned(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A member switched off before the sixteenth round kept their tickets: the `unassigned`
    filter counts them as nobody's."""
    payer = await new_payer(db, settings)
    gone = await new_staff(db, settings, "agent")
    agent = await new_staff(db, settings, "agent")
    kept, theirs = await _seed(db, payer.account_id, 2, start=T0)

    async def legacy(s: AsyncSession) -> None:
        await s.execute(update(Ticket).where(Ticket.id == kept.id).values(assignee_id=gone.id))
        await s.execute(update(Ticket).where(Ticket.id == theirs.id)
                        .values(assignee_id=agent.id))
        await s.execute(update(StaffUser).where(StaffUser.id == gone.id).values(active=False))

    await db.run(legacy)
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/tickets", params={"unassigned": "true"})
    assert str(kept.id) in page.text and str(theirs.id) not in page.text
    async with db.read() as s:
        found = await service.find_tickets(s, service.TicketFilter(unassigned=True))
    assert [t.id for t in found] == [kept.id]
