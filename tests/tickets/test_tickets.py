"""Tickets: the customer's side (ownership), the staff's side (reply, note, assign, status,
priority — audited), notices by e-mail and in the portal, and the order a ticket is about."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.notifications.models import Notice
from simcharge.orders.models import OrderState
from simcharge.tickets.models import Ticket
from tests.backoffice.helpers import csrf_of, new_staff, web_sign_in
from tests.conftest import SmtpInbox
from tests.orders.helpers import idem, new_payer, order_row, pay_at_sandbox, place


async def _open(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> httpx.Response:
    payload = {"subject": "I paid but got nothing", "body": "Money taken, no data.", **body}
    return await client.post("/api/v1/me/tickets", json=payload, headers=auth)


async def test_a_customer_opens_a_ticket_about_an_order_and_only_sees_their_own(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    other = await new_payer(db, settings)
    order = await place(client, payer)
    key = idem()
    r = await _open(client, {**payer.auth, **key}, order_id=order["id"])
    assert r.status_code == 201, r.text
    ticket = r.json()
    assert ticket["number"].startswith("T-") and ticket["status"] == "open"
    assert [m["author"] for m in ticket["messages"]] == ["customer"]
    # the same request again: the same ticket
    again = await _open(client, {**payer.auth, **key}, order_id=order["id"])
    assert again.status_code == 200 and again.json()["id"] == ticket["id"]
    assert again.headers["idempotent-replayed"] == "true"
    # someone else's order, line or ticket: not found
    r = await _open(client, other.auth, order_id=order["id"])
    assert r.status_code == 404 and r.json()["type"] == "/problems/order-not-found"
    r = await _open(client, other.auth, line_id=str(payer.line.id))
    assert r.status_code == 404
    r = await client.get(f"/api/v1/me/tickets/{ticket['id']}", headers=other.auth)
    assert r.status_code == 404 and r.json()["type"] == "/problems/ticket-not-found"
    r = await client.post(
        f"/api/v1/me/tickets/{ticket['id']}/messages", headers=other.auth, json={"body": "hello"}
    )
    assert r.status_code == 404
    assert (await client.get("/api/v1/me/tickets", headers=other.auth)).json() == []
    assert len((await client.get("/api/v1/me/tickets", headers=payer.auth)).json()) == 1
    # bad input changes nothing
    for body in (
        {"subject": " ", "body": "x"},
        {"subject": "x", "body": ""},
        {"subject": "x" * 201, "body": "x"},
        {"subject": "a\x00b", "body": "x"},
    ):
        r = await client.post("/api/v1/me/tickets", json=body, headers=payer.auth)
        assert r.status_code == 422, r.text
    r = await client.post("/api/v1/me/tickets", json={"subject": "x", "body": "y"})
    assert r.status_code == 401
    async with db.read() as s:
        assert len((await s.execute(select(Ticket))).scalars().all()) == 1


async def test_staff_reply_note_assign_and_the_customer_is_told(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    inbox: SmtpInbox,
    deliver: Any,
) -> None:
    payer = await new_payer(db, settings)
    ticket = (await _open(client, payer.auth, line_id=str(payer.line.id))).json()
    agent = await new_staff(db, settings, "agent")
    url = f"/api/v1/admin/tickets/{ticket['id']}"
    r = await client.post(
        f"{url}/messages",
        headers=agent.auth,
        json={"body": "Looking at the payment now.", "internal": True},
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"{url}/messages", headers=agent.auth, json={"body": "We found it and credited your line."}
    )
    assert r.status_code == 201
    staff_view = r.json()
    assert staff_view["status"] == "waiting_on_customer"
    assert staff_view["assignee"] == agent.username
    assert [m["internal"] for m in staff_view["messages"]] == [False, True, False]
    # the customer does not see the note
    mine = (await client.get(f"/api/v1/me/tickets/{ticket['id']}", headers=payer.auth)).json()
    assert [m["author"] for m in mine["messages"]] == ["customer", "staff"]
    assert "Looking at" not in str(mine)
    await deliver()
    subjects = [m["Subject"] for m in inbox.to(payer.email)]
    assert any(ticket["number"] in s and "received" in s for s in subjects)
    assert any(ticket["number"] in s and "answered" in s for s in subjects)
    async with db.read() as s:
        notices = (
            (await s.execute(select(Notice.template).where(Notice.account_id == payer.account_id)))
            .scalars()
            .all()
        )
    assert "ticket.replied" in notices
    # the customer replies: back to open
    r = await client.post(
        f"/api/v1/me/tickets/{ticket['id']}/messages",
        headers=payer.auth,
        json={"body": "Thanks, it works now."},
    )
    assert r.status_code == 201 and r.json()["status"] == "open"
    # status, priority, assignee
    r = await client.patch(
        url, headers=agent.auth, json={"status": "resolved", "priority": "high", "assignee": ""}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["priority"], r.json()["assignee"]) == (
        "resolved",
        "high",
        None,
    )
    for body, field in (
        ({"status": "done"}, "status"),
        ({"priority": "asap"}, "priority"),
        ({"assignee": "nobody"}, "assignee"),
    ):
        r = await client.patch(url, headers=agent.auth, json=body)
        assert r.status_code in (404, 422) and r.json()["field"] == field
    r = await client.patch(url, headers=agent.auth, json={"status": "closed"})
    r = await client.post(
        f"/api/v1/me/tickets/{ticket['id']}/messages",
        headers=payer.auth,
        json={"body": "One more thing"},
    )
    assert r.status_code == 409 and r.json()["type"] == "/problems/ticket-closed"
    async with db.read() as s:
        actions = (
            (
                await s.execute(
                    select(AuditEntry.action)
                    .where(AuditEntry.target_id == ticket["id"])
                    .order_by(AuditEntry.at)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["ticket.note", "ticket.reply", "ticket.update", "ticket.update"]
    # the list filters
    r = await client.get("/api/v1/admin/tickets?status=closed", headers=agent.auth)
    assert [t["id"] for t in r.json()] == [ticket["id"]]
    r = await client.get(f"/api/v1/admin/tickets/{uuid.uuid4()}", headers=agent.auth)
    assert r.status_code == 404


async def test_the_ticket_page_shows_the_payment_and_checks_with_the_provider(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    # the customer paid at the provider, but no webhook arrived yet
    await pay_at_sandbox(client, settings, order)
    ticket = (await _open(client, payer.auth, order_id=order["id"])).json()
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{ticket['id']}")
    assert page.status_code == 200
    assert order["reference"] in page.text and "Check with provider" in page.text
    assert "Refund amount" not in page.text  # agents do not refund
    r = await client.post(
        f"/backoffice/orders/{order['id']}/check",
        data={"csrf": csrf, "then": f"/backoffice/tickets/{ticket['id']}"},
    )
    assert r.status_code == 303
    assert (await order_row(db, order["id"])).state == OrderState.fulfilled
    async with db.read() as s:
        entry = (
            await s.execute(select(AuditEntry).where(AuditEntry.action == "order.check"))
        ).scalar_one()
    assert entry.before and entry.before["state"] == "pending"
    assert entry.after and entry.after["state"] == "fulfilled"
    # reply from the page; the queue lists it
    page = await client.get(f"/backoffice/tickets/{ticket['id']}")
    r = await client.post(
        f"/backoffice/tickets/{ticket['id']}/reply",
        data={"csrf": csrf_of(page.text), "body": "Credited, sorry!", "status": "resolved"},
    )
    assert r.status_code == 303
    page = await client.get(f"/backoffice/tickets/{ticket['id']}")
    assert "Credited, sorry!" in page.text and "resolved" in page.text
    queue = await client.get("/backoffice/tickets?status=resolved")
    assert ticket["number"] in queue.text
    r = await client.post(
        f"/backoffice/tickets/{ticket['id']}/update",
        data={"csrf": csrf_of(page.text), "priority": "urgent", "assignee": agent.username},
    )
    assert r.status_code == 303
    # a missing ticket is a page, not JSON
    r = await client.get(f"/backoffice/tickets/{uuid.uuid4()}")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]


async def test_a_gift_order_does_not_let_the_payer_name_the_receivers_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    receiver = await new_payer(db, settings)
    gift = await place(client, payer, msisdn=receiver.line.msisdn)
    # The gift is the payer's order; the receiver's line is not their line, with it or without
    # it, and a wrong guess of the line's id answers the same as a right one.
    for line_id in (str(receiver.line.id), str(uuid.uuid4())):
        r = await _open(client, payer.auth, order_id=gift["id"], line_id=line_id)
        assert r.status_code == 404, r.text
        assert r.json()["type"] == "/problems/not-found"
    # About the gift order alone: fine. With their own line, which the gift is not for: refused.
    r = await _open(client, payer.auth, order_id=gift["id"])
    assert r.status_code == 201 and r.json()["line_id"] is None
    r = await _open(client, payer.auth, order_id=gift["id"], line_id=str(payer.line.id))
    assert r.status_code == 422 and r.json()["field"] == "line_id"
    async with db.read() as s:
        tickets = (await s.execute(select(Ticket).where(Ticket.line_id.is_not(None)))).scalars()
        assert list(tickets) == []


async def test_a_retry_naming_another_line_is_a_key_reused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    key = idem()
    r = await _open(client, {**payer.auth, **key}, line_id=str(payer.line.id))
    assert r.status_code == 201
    r = await _open(client, {**payer.auth, **key})
    assert r.status_code == 422 and r.json()["type"] == "/problems/idempotency-key-reused"
    assert len((await client.get("/api/v1/me/tickets", headers=payer.auth)).json()) == 1
