"""Round 13, tickets: a ticket about a line shows the line (number, state, balances, links to its
usage and to the customer page's line) and the customer's language; the customer link opens
what the ticket is about; an unknown queue filter is refused, not read as "no ticket"."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.auth.helpers import problem
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import (
    Payer,
    fulfilled,
    new_payer,
    open_ticket,
)


async def _ticket(client: httpx.AsyncClient, payer: Payer, **about: str) -> dict[str, Any]:
    return await open_ticket(
        client, payer, subject="My data stopped", body="Nothing works since noon.", **about
    )


async def test_a_ticket_about_a_line_shows_the_line_and_the_customers_language(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings, language="es")
    await fulfilled(client, settings, payer)
    ticket = await _ticket(client, payer, line_id=str(payer.line.id))
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)

    page = await client.get(f"/backoffice/tickets/{ticket['id']}")
    assert page.status_code == 200
    panel = re.search(r'<section[^>]*data-testid="ticket-line".*?</section>', page.text, re.S)
    assert panel is not None, "no line panel on the ticket page"
    line = payer.line
    assert line.msisdn in panel.group(0)
    assert "Wallet" in panel.group(0) and "Bucket" in panel.group(0)
    assert "No units left." not in panel.group(0)  # the plan's buckets are listed
    assert f'href="/backoffice/lines/{line.id}/usage"' in panel.group(0)
    assert f'href="/backoffice/customers/{payer.account_id}#line-{line.id}"' in panel.group(0)
    # the customer link opens the line's section; the language to answer in is said
    assert f'href="/backoffice/customers/{payer.account_id}#line-{line.id}"' in page.text
    said = re.search(r'data-testid="customer-language">([^<]*)<', page.text)
    assert said is not None and "Spanish (es)" in said.group(1)
    # the customer page's section the links open exists
    customer = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert f'id="line-{line.id}"' in customer.text


async def test_the_customers_language_is_named_in_the_staff_members(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings, language="es")
    ticket = await _ticket(client, payer, line_id=str(payer.line.id))
    agent = await new_staff(db, settings, "agent", language="zh-Hans")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{ticket['id']}")
    said = re.search(r'data-testid="customer-language">([^<]*)<', page.text)
    assert said is not None and "西班牙语 (es)" in said.group(1)
    # a line without buckets says so
    assert "ticket-line" in page.text


async def test_a_ticket_about_an_order_links_the_customer_page_at_the_order(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    ticket = await _ticket(client, payer, order_id=order["id"])
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/tickets/{ticket['id']}")
    link = f'href="/backoffice/customers/{payer.account_id}#order-{order["id"]}"'
    assert link in page.text
    assert order["reference"] in page.text
    assert "ticket-line" not in page.text  # no line panel for a ticket about an order
    customer = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert f'id="order-{order["id"]}"' in customer.text


async def test_an_unknown_queue_filter_is_refused_with_the_filter_marked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    await _ticket(client, payer)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    async with db.read() as s:
        before = len((await s.execute(select(AuditEntry.id))).all())

    r = await client.get("/backoffice/tickets", params={"status": "any"})
    assert r.status_code == 422
    assert 'id="filter-status" name="status" aria-invalid="true"' in r.text
    assert 'id="filter-status-error"' in r.text
    assert "No tickets." not in r.text  # not the wrong answer "none"
    assert 'role="alert"' in r.text

    r = await client.get("/backoffice/tickets", params={"priority": "asap"})
    assert r.status_code == 422
    assert 'id="filter-priority" name="priority" aria-invalid="true"' in r.text

    # nothing was read, so nothing was audited as read
    async with db.read() as s:
        assert len((await s.execute(select(AuditEntry.id))).all()) == before

    # the listed values still filter
    for status in ("open", "waiting_on_customer", "resolved", "closed", ""):
        ok = await client.get("/backoffice/tickets", params={"status": status})
        assert ok.status_code == 200, status
    ok = await client.get("/backoffice/tickets", params={"status": "open", "priority": "normal"})
    assert ok.status_code == 200 and "aria-invalid" not in ok.text


async def test_the_api_refuses_an_unknown_ticket_filter(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    agent = await new_staff(db, settings, "agent")
    r = await client.get("/api/v1/admin/tickets", params={"status": "any"}, headers=agent.auth)
    assert r.status_code == 422
    body = problem(r)
    assert body["type"].endswith("validation-error")
    assert any(e.get("field") == "status" for e in body.get("errors", [])) or body.get(
        "field"
    ) == "status", body
    r = await client.get("/api/v1/admin/tickets", params={"priority": "asap"}, headers=agent.auth)
    assert r.status_code == 422


async def test_the_queue_says_what_each_ticket_is_about(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    by_order = await _ticket(client, payer, order_id=order["id"])
    by_line = await _ticket(client, payer, line_id=str(payer.line.id))
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get("/backoffice/tickets")
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<tr><td><a href="/backoffice/tickets/([0-9a-f-]+)">.*?</tr>', page.text, re.S)
    }
    assert f'#order-{order["id"]}">{order["reference"]}</a>' in rows[by_order["id"]]
    assert f'#line-{payer.line.id}">{payer.line.msisdn}</a>' in rows[by_line["id"]]
    assert uuid.UUID(by_line["id"])
