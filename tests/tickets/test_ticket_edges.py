"""Tickets at their edges: retried and concurrent requests (one ticket, one reply, one notice;
another request under the same key is refused), the back office's update form that changes only
what the agent changed (and can unassign), a queue whose every ticket is on some page, and a
customer's view that staff-only work does not move."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.tickets import service
from simcharge.tickets.models import Ticket, TicketMessage
from simcharge.worker.models import OutboxJob
from tests.backoffice.helpers import csrf_of, new_staff, web_sign_in
from tests.orders.helpers import idem, new_payer


async def _open(client: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> httpx.Response:
    payload = {"subject": "No data abroad", "body": "My data stopped in Manila.", **body}
    return await client.post("/api/v1/me/tickets", json=payload, headers=auth)


async def _jobs(db: Database, template: str, account_id: uuid.UUID) -> list[dict[str, Any]]:
    async with db.read() as s:
        jobs = (await s.execute(select(OutboxJob))).scalars()
        return [
            j.payload
            for j in jobs
            if j.payload.get("template") == template
            and j.payload.get("account_id") == str(account_id)
        ]


async def _staff_messages(db: Database, ticket_id: str) -> list[TicketMessage]:
    async with db.read() as s:
        rows = await s.execute(
            select(TicketMessage).where(
                TicketMessage.ticket_id == uuid.UUID(ticket_id), TicketMessage.author == "staff"
            )
        )
        return list(rows.scalars())


# --- a staff reply, retried ----------------------------------------------------------------


async def test_a_staff_reply_retried_with_its_idempotency_key_is_posted_and_told_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A staff reply retried with its `Idempotency-Key` (a timeout, a proxy's retry) answers the
    first reply again: one message, one "customer service answered" notice (DESIGN promise 2).
    The same key with another text is `idempotency-key-reused`. Before, the key was ignored:
    the reply was stored and sent twice."""
    payer = await new_payer(db, settings)
    ticket = (await _open(client, payer.auth)).json()
    agent = await new_staff(db, settings, "agent")
    key = idem()
    url = f"/api/v1/admin/tickets/{ticket['id']}/messages"
    for _ in range(2):
        r = await client.post(
            url, headers={**agent.auth, **key}, json={"body": "We credited your line."}
        )
        assert r.status_code in (200, 201), r.text
    assert len(await _staff_messages(db, ticket["id"])) == 1
    assert len(await _jobs(db, "ticket.replied", payer.account_id)) == 1
    for other in ({"body": "Something else."}, {"body": "We credited your line.", "internal": True},
                  {"body": "We credited your line.", "status": "resolved"}):  # fmt: skip
        r = await client.post(url, headers={**agent.auth, **key}, json=other)
        assert r.status_code == 422, r.text
        assert r.json()["type"] == "/problems/idempotency-key-reused"
    assert len(await _staff_messages(db, ticket["id"])) == 1


async def test_the_back_office_reply_form_carries_a_one_time_key_and_a_double_post_sends_once(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The ticket page's reply form carries a one-time key (`idem`): a double click or a resent
    form is one reply and one notice. Before, the page made the key but the form never carried
    it, and the answer was posted and sent twice."""
    payer = await new_payer(db, settings)
    ticket = (await _open(client, payer.auth)).json()
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{ticket['id']}")
    form = page.text.split(f'action="/backoffice/tickets/{ticket["id"]}/reply"')[1].split(
        "</form>"
    )[0]
    assert 'name="idem"' in form, "the reply form has no one-time key"
    data = {"csrf": csrf_of(page.text), "body": "Credited, sorry!"}
    data["idem"] = form.split('name="idem" value="')[1].split('"')[0]
    for _ in range(2):
        r = await client.post(f"/backoffice/tickets/{ticket['id']}/reply", data=data)
        assert r.status_code == 303
    assert len(await _staff_messages(db, ticket["id"])) == 1
    assert len(await _jobs(db, "ticket.replied", payer.account_id)) == 1


# --- two requests with one key at once ----------------------------------------------------


@pytest.mark.postgres_only
async def test_two_opens_with_one_key_at_once_answer_one_ticket_never_a_500(
    fresh_db: Database, settings: Settings
) -> None:
    """Two "open a ticket" requests with one `Idempotency-Key` at the same moment (a double tap
    on a flaky network; the portal's "not credited?" pressed twice) open one ticket, and the
    second answers it (200). Before, both missed the key, the second INSERT waited on the
    first's unique `request_key` and failed with IntegrityError: a 500. Now the insert runs in
    a savepoint and a clash on the key is read as the retry it is."""
    payer = await new_payer(fresh_db, settings)
    app = create_app(settings, db=fresh_db, run_worker=False)
    key = "double-tap-1"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        async with fresh_db.transaction() as s:
            await service.open_ticket(
                s, payer.account_id, subject="No data abroad",
                body="My data stopped in Manila.", idempotency_key=key, now=utcnow(),
            )  # fmt: skip
            second = asyncio.create_task(
                _open(client, {**payer.auth, "Idempotency-Key": key})
            )
            await asyncio.sleep(1.0)
        r = await second
    assert r.status_code == 200, r.text
    async with fresh_db.read() as s:
        assert len((await s.execute(select(Ticket))).scalars().all()) == 1


# --- same key, another text ----------------------------------------------------------------


async def test_a_retry_with_the_same_key_and_another_body_is_a_key_reused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Promise 2: "Same key, other body: a clear 409/422 error." Opening a ticket again with
    the same key and another first message is `idempotency-key-reused`. Before, only subject,
    order and line were compared: the first ticket was answered and the new text dropped."""
    payer = await new_payer(db, settings)
    key = idem()
    r = await _open(client, {**payer.auth, **key}, body="First text")
    assert r.status_code == 201
    r = await _open(client, {**payer.auth, **key}, body="A completely different problem")
    assert r.status_code in (409, 422), r.text
    assert r.json()["type"] == "/problems/idempotency-key-reused"


# --- the back office's update form --------------------------------------------------------


def _update_form(html: str, ticket_id: str) -> dict[str, str]:
    """What the browser submits from the ticket page's update form when the agent changes
    nothing but what the test then sets: its hidden inputs, and each select's selected option
    (else its first)."""
    form = html.split(f'action="/backoffice/tickets/{ticket_id}/update"')[1].split("</form>")[0]
    data = {"csrf": csrf_of(html)}
    data.update(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))
    for name, options in re.findall(r'<select [^>]*name="(\w+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', options) or re.search(
            r'<option value="([^"]*)"', options
        )
        assert chosen
        data[name] = chosen.group(1)
    return data


async def test_a_stale_update_form_does_not_undo_the_customers_reply_or_a_colleagues_assignment(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The ticket page's update form changes only what the agent changed on it (the page
    carries the values it was drawn with): an agent who only raises the priority on a page
    drawn before the customer answered and a colleague took the ticket leaves the ticket open
    and the colleague's. Before, the form wrote back all three fields as drawn: the customer's
    reply fell out of the open queue and the colleague's assignment was undone."""
    payer = await new_payer(db, settings)
    ticket = (await _open(client, payer.auth)).json()
    tid = ticket["id"]
    agent = await new_staff(db, settings, "agent")
    colleague = await new_staff(db, settings, "agent")
    r = await client.post(
        f"/api/v1/admin/tickets/{tid}/messages", headers=agent.auth,
        json={"body": "Which country are you in?"},
    )  # fmt: skip
    assert r.json()["status"] == "waiting_on_customer"
    assert r.json()["assignee"] == agent.username  # the reply assigned it to the agent
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{tid}")  # drawn now: waiting, the agent's
    # meanwhile: the customer answers (open again), a colleague takes the ticket
    r = await client.post(
        f"/api/v1/me/tickets/{tid}/messages", headers=payer.auth, json={"body": "The Philippines"}
    )
    assert r.json()["status"] == "open"
    r = await client.patch(
        f"/api/v1/admin/tickets/{tid}", headers=colleague.auth,
        json={"assignee": colleague.username},
    )  # fmt: skip
    assert r.status_code == 200
    # the first agent only raises the priority, from the page drawn before
    data = {**_update_form(page.text, tid), "priority": "urgent"}
    r = await client.post(f"/backoffice/tickets/{tid}/update", data=data)
    async with db.read() as s:
        row = await s.get(Ticket, uuid.UUID(tid))
        assert row is not None
        after = (row.status, row.assignee_id)
    # refused as stale (409) or applied to the priority only; never the old status/assignee
    assert after == ("open", colleague.id), (r.status_code, after)


# --- the queue has no unreachable end -----------------------------------------------------


async def test_the_longest_waiting_open_ticket_is_reachable_from_the_queue(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The queue pages on: past a page of 100 a "Next page" link (`rel="next"`) leads on, and
    `GET /api/v1/admin/tickets` takes `before` and `before_id`, so every ticket is reachable.
    Before, both lists stopped at their limit, newest first, and nothing said the list was cut.
    (Since the sixteenth round the queue lists the longest waiting first, the API latest
    activity first: `test_round16_queue`.)"""
    payer = await new_payer(db, settings)

    async def many(s: Any) -> str:
        first = ""
        for i in range(101):
            t, _ = await service.open_ticket(
                s, payer.account_id, subject=f"q{i}", body="help", now=utcnow()
            )
            first = first or t.number
        return first

    oldest = await db.run(many)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/tickets?status=open")
    assert page.status_code == 200
    assert oldest in page.text or 'rel="next"' in page.text, "the oldest open ticket is on no page"
    # follow the queue to its end: every ticket once, the longest waiting first
    seen: list[str] = []
    while True:
        seen += re.findall(r">(T-[A-Z0-9]{8})</a>", page.text)
        more = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        if more is None:
            break
        page = await client.get(more.group(1).replace("&amp;", "&"))
        assert page.status_code == 200
    assert len(seen) == len(set(seen)) == 101 and seen[0] == oldest
    # the API, a page at a time
    numbers: list[str] = []
    params: dict[str, str] = {"status": "open", "limit": "40"}
    while True:
        r = await client.get("/api/v1/admin/tickets", params=params, headers=agent.auth)
        assert r.status_code == 200, r.text
        numbers += [t["number"] for t in r.json()]
        if len(r.json()) < 40:
            break
        params |= {"before": r.json()[-1]["updated_at"], "before_id": r.json()[-1]["id"]}
    assert numbers == seen[::-1]


# --- what the customer sees does not move with staff-only work ----------------------------


async def test_an_internal_note_does_not_change_what_the_customer_sees(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A ticket's `updated_at` (the customer's API, the Help page's "· <time>", the order of
    their list) moves only with what the customer can see — a message, a reply, a new status —
    not with an internal note, a priority or an assignee. Before, a note moved it: the
    customer saw their ticket "updated" with nothing new in it."""
    payer = await new_payer(db, settings)
    ticket = (await _open(client, payer.auth)).json()
    agent = await new_staff(db, settings, "agent")
    await asyncio.sleep(0.01)
    r = await client.post(
        f"/api/v1/admin/tickets/{ticket['id']}/messages", headers=agent.auth,
        json={"body": "customer seems to be abusing refunds", "internal": True},
    )  # fmt: skip
    assert r.status_code == 201
    r = await client.patch(
        f"/api/v1/admin/tickets/{ticket['id']}", headers=agent.auth,
        json={"priority": "urgent", "assignee": agent.username},
    )  # fmt: skip
    assert r.status_code == 200
    mine = (await client.get(f"/api/v1/me/tickets/{ticket['id']}", headers=payer.auth)).json()
    assert mine["updated_at"] == ticket["updated_at"]
    # a note that changes the status shows (the status does): the time moves with it
    await asyncio.sleep(0.01)
    r = await client.post(
        f"/api/v1/admin/tickets/{ticket['id']}/messages", headers=agent.auth,
        json={"body": "duplicate of another ticket", "internal": True, "status": "resolved"},
    )  # fmt: skip
    mine = (await client.get(f"/api/v1/me/tickets/{ticket['id']}", headers=payer.auth)).json()
    assert mine["status"] == "resolved"
    assert datetime.fromisoformat(mine["updated_at"]) > datetime.fromisoformat(ticket["updated_at"])


# --- unassigning from the back office ---------------------------------------------------


async def test_the_back_office_can_unassign_a_ticket(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The update form's "—" (an empty value) unassigns the ticket, as the API's
    `"assignee": ""` does. Before, FastAPI turned the empty form value into the field's default
    `None`, read as "leave as is": from the back office a ticket could never be unassigned."""
    payer = await new_payer(db, settings)
    ticket = (await _open(client, payer.auth)).json()
    tid = ticket["id"]
    agent = await new_staff(db, settings, "agent")
    r = await client.patch(
        f"/api/v1/admin/tickets/{tid}", headers=agent.auth, json={"assignee": agent.username}
    )
    assert r.json()["assignee"] == agent.username
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{tid}")
    data = {**_update_form(page.text, tid), "assignee": ""}
    r = await client.post(f"/backoffice/tickets/{tid}/update", data=data)
    assert r.status_code == 303
    async with db.read() as s:
        row = await s.get(Ticket, uuid.UUID(tid))
        assert row is not None and row.assignee_id is None

