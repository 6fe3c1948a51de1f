"""Closing an account, what follows at once (`accounts.privacy.close_account`): its tickets still
open are closed with an internal note (staff see why; no one can answer them any more; the
customer is not told of each), its security events lose their addresses and devices (the
events stay, for audit), and nothing of it happens when the closure is refused. Also: the data
export names the account's time zone and number format.

What was wrong: a closed account's open tickets stayed open in customer service's queue,
waiting for a customer who could no longer answer, and its past security events kept every IP
address and browser of the person who had asked to be forgotten."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import SecurityEvent
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.notifications.models import Notice
from simcharge.tickets.models import Ticket, TicketMessage, TicketStatus
from simcharge.tickets.service import open_ticket
from tests.auth.helpers import problem
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.factories import load_demo_catalog
from tests.orders.helpers import Payer, new_payer, place

PASSWORD = "correct horse battery"  # `create_account`'s
NOTE = "Closed: the customer closed their account."
FROM = ClientInfo(ip="203.0.113.9", user_agent="Mozilla/5.0 Firefox/120.0")


async def _tickets(db: Database, payer: Payer) -> dict[str, uuid.UUID]:
    """One ticket of the payer's in each status."""

    async def run(s: AsyncSession) -> dict[str, uuid.UUID]:
        made = {}
        for status in TicketStatus:
            ticket, _ = await open_ticket(
                s, payer.account_id, subject=f"About {status}", body="Where is my data?",
                now=utcnow(),
            )
            ticket.status = status.value
            made[status.value] = ticket.id
        return made

    return await db.run(run)


async def _events(db: Database, account_id: uuid.UUID, n: int = 3) -> None:
    async def run(s: AsyncSession) -> None:
        for _ in range(n):
            await record_event(s, EventKind.login, account_id=account_id, client=FROM)

    await db.run(run)


async def _close(client: httpx.AsyncClient, payer: Payer, password: str = PASSWORD) -> Any:
    return await client.post("/api/v1/me/close", headers=payer.auth, json={"password": password})


async def _messages(db: Database, ticket_id: uuid.UUID) -> list[TicketMessage]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(TicketMessage)
                    .where(TicketMessage.ticket_id == ticket_id)
                    .order_by(TicketMessage.created_at, TicketMessage.id)
                )
            ).scalars()
        )


async def _statuses(db: Database, ids: dict[str, uuid.UUID]) -> dict[str, str]:
    async with db.read() as s:
        rows = await s.execute(select(Ticket.id, Ticket.status).where(Ticket.id.in_(ids.values())))
        by_id = {i: status for i, status in rows}
    return {was: by_id[i] for was, i in ids.items()}


async def test_closing_closes_the_open_tickets_with_a_note_and_forgets_where_events_came_from(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer, other = await new_payer(db, settings), await new_payer(db, settings)
    mine, theirs = await _tickets(db, payer), await _tickets(db, other)
    await _events(db, payer.account_id)
    await _events(db, other.account_id)
    async with db.read() as s:
        notices_before = await s.scalar(select(func.count()).select_from(Notice))
    r = await _close(client, payer)
    assert r.status_code == 200, r.text
    # Every ticket of theirs is closed now; the one closed before keeps its thread as it was.
    assert set((await _statuses(db, mine)).values()) == {"closed"}
    for was, ticket_id in mine.items():
        messages = await _messages(db, ticket_id)
        if was == "closed":
            assert [m.author for m in messages] == ["customer"]
            continue
        note = messages[-1]
        assert (note.author, note.internal, note.staff_id, note.body) == (
            "staff", True, None, NOTE
        )
    # Someone else's tickets are not touched.
    assert await _statuses(db, theirs) == {s.value: s.value for s in TicketStatus}
    # The customer is not told ticket by ticket (no `ticket.*` notice was queued).
    async with db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Notice)) == notices_before
        events = (
            await s.execute(
                select(SecurityEvent).where(SecurityEvent.account_id == payer.account_id)
            )
        ).scalars().all()
        others = (
            await s.execute(
                select(SecurityEvent).where(SecurityEvent.account_id == other.account_id)
            )
        ).scalars().all()
    # The events stay, kinds and outcomes, from nowhere; the closure is among them.
    assert sorted(e.kind for e in events) == ["account_closed", "login", "login", "login"]
    assert all(e.ip is None and e.user_agent is None for e in events)
    assert [(e.ip, e.user_agent) for e in others] == [("203.0.113.9", FROM.short_user_agent)] * 3


async def test_staff_see_why_the_ticket_closed_and_cannot_answer_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    ticket_id = (await _tickets(db, payer))["open"]
    assert (await _close(client, payer)).status_code == 200
    agent = await new_staff(db, settings, "agent")
    r = await client.post(
        f"/api/v1/admin/tickets/{ticket_id}/messages", headers=agent.auth,
        json={"body": "Can we help?"},
    )
    assert r.status_code == 409 and problem(r)["type"] == "/problems/ticket-closed"
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{ticket_id}")
    assert page.status_code == 200
    assert NOTE in page.text and "internal note" in page.text


async def test_a_refused_closure_closes_no_ticket_and_keeps_every_address(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    mine = await _tickets(db, payer)
    await _events(db, payer.account_id)
    r = await _close(client, payer, password="not the password at all")
    assert r.status_code == 401 and problem(r)["field"] == "password"
    order = await place(client, payer)  # money on its way: refused
    r = await _close(client, payer)
    assert r.status_code == 409 and problem(r)["type"] == "/problems/account-closure-blocked"
    assert problem(r)["field"] == "orders" and order["state"] == "pending"
    assert await _statuses(db, mine) == {s.value: s.value for s in TicketStatus}
    for ticket_id in mine.values():
        assert [m.author for m in await _messages(db, ticket_id)] == ["customer"]
    async with db.read() as s:
        logins = (
            await s.execute(
                select(SecurityEvent).where(
                    SecurityEvent.account_id == payer.account_id, SecurityEvent.kind == "login"
                )
            )
        ).scalars().all()
    assert len(logins) == 3 and all(e.ip == "203.0.113.9" for e in logins)


async def test_the_export_names_the_time_zone_and_number_format(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    doc = (await client.get("/api/v1/me/export", headers=payer.auth)).json()
    assert (doc["account"]["time_zone"], doc["account"]["format_locale"]) == (None, None)
    from simcharge.accounts.models import Account

    await db.run(lambda s: s.execute(
        update(Account).where(Account.id == payer.account_id)
        .values(time_zone="Asia/Manila", format_locale="es_MX")
    ))
    doc = (await client.get("/api/v1/me/export", headers=payer.auth)).json()
    assert doc["account"]["time_zone"] == "Asia/Manila"
    assert doc["account"]["format_locale"] == "es_MX"
    assert doc["preferences"] == {
        "language": "en", "time_zone": "Asia/Manila", "format_locale": "es_MX"
    }
