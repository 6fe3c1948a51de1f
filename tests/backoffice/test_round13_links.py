"""Round 13, links between screens: a bucket's `order:<id>` source as the order's reference linked
to its panel; the customer's tickets say what each is about; recent adjustments link their line;
a search by an order reference, ticket number or phone number shows what matched with a direct
link (the audit still keeps no contact); after an action staff land on what they acted on; and
`then` is only followed to a screen the member's role may see."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import Staff, adjust_key_of, csrf_of, new_staff, web_sign_in
from tests.orders.helpers import (
    Payer,
    fulfilled,
    new_payer,
    open_ticket,
)


async def _ticket(client: httpx.AsyncClient, payer: Payer, **about: str) -> dict[str, Any]:
    return await open_ticket(client, payer, subject="A question", body="About my line.", **about)


def _lands(location: str, path: str, anchor: str) -> None:
    """A redirect to `path`, saying what was done, opening at `#anchor`."""
    assert re.fullmatch(rf"{re.escape(path)}\?done=[a-z_]+#{re.escape(anchor)}", location), (
        location
    )


async def test_a_buckets_order_source_is_the_orders_reference_linked_to_its_panel(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    link = f'<a href="/backoffice/customers/{payer.account_id}#order-{order["id"]}">{order["reference"]}</a>'
    table = page.text.split('id="line-', 1)[1].split("</table>", 1)[0]
    assert link in table
    assert f"order:{order['id']}" not in table  # no raw source left in the buckets' table
    assert f'id="order-{order["id"]}"' in page.text


async def test_the_customers_tickets_say_what_each_is_about(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    await _ticket(client, payer, order_id=order["id"])
    await _ticket(client, payer, line_id=str(payer.line.id))
    await _ticket(client, payer)
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    tickets = page.text.split('<h2 id="tickets">', 1)[1].split("</table>", 1)[0]
    assert f'#order-{order["id"]}">{order["reference"]}</a>' in tickets
    assert f'#line-{payer.line.id}">{payer.line.msisdn}</a>' in tickets
    assert "—" in tickets  # the one about nothing in particular


async def test_recent_adjustments_link_their_line(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    agent = await new_staff(db, settings, "agent")
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    r = await client.post(
        f"/backoffice/lines/{payer.line.id}/adjust",
        data={"csrf": csrf, "target": "wallet", "amount": "1.00", "reason": "goodwill",
              "idem": adjust_key_of(page.text, payer.line.id)},
    )  # fmt: skip
    assert r.status_code == 303
    # lands on the line it adjusted
    _lands(r.headers["location"], f"/backoffice/customers/{payer.account_id}", f"line-{payer.line.id}")
    page = await client.get("/backoffice/adjustments")
    recent = page.text.split('id="recent"', 1)[1]
    link = f'<a href="/backoffice/customers/{payer.account_id}#line-{payer.line.id}">{payer.line.msisdn}</a>'
    assert link in recent


async def test_a_search_shows_what_matched_with_a_direct_link(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    ticket = await _ticket(client, payer, order_id=order["id"])
    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)

    def matches(html: str) -> str:
        found = re.search(r'<ul data-testid="matches">.*?</ul>', html, re.S)
        assert found is not None, "no list of what matched"
        return found.group(0)

    by_reference = await client.get("/backoffice/customers", params={"q": order["reference"]})
    page = f"/backoffice/customers/{payer.account_id}"
    assert f'href="{page}#order-{order["id"]}">{order["reference"]}</a>' in matches(
        by_reference.text
    )
    assert f"/backoffice/customers/{payer.account_id}" in by_reference.text  # still the customer

    by_ticket = await client.get("/backoffice/customers", params={"q": ticket["number"].lower()})
    assert f'href="/backoffice/tickets/{ticket["id"]}">{ticket["number"]}</a>' in matches(by_ticket.text)

    by_number = await client.get("/backoffice/customers", params={"q": payer.line.msisdn})
    line = payer.line
    assert f'href="{page}#line-{line.id}">{line.msisdn}</a>' in matches(by_number.text)

    by_id = await client.get("/backoffice/customers", params={"q": order["id"]})
    assert f'#order-{order["id"]}"' in matches(by_id.text)

    by_name = await client.get("/backoffice/customers", params={"q": payer.email})
    assert 'data-testid="matches"' not in by_name.text  # the customer's own contacts: the list

    # the audit keeps what kind of thing was typed, never the words: no contact, as before
    async with db.read() as s:
        rows = (
            await s.execute(select(AuditEntry).where(AuditEntry.action == "customer.search"))
        ).scalars().all()
    assert len(rows) == 5
    for row in rows:
        assert set(row.details) == {"kind", "length", "found", "accounts"}
        assert payer.line.msisdn not in str(row.details) and payer.email not in str(row.details)
        assert row.details["accounts"] == [str(payer.account_id)]


async def _agent_on_page(
    client: httpx.AsyncClient, db: Database, settings: Settings, role: str = "agent"
) -> tuple[Payer, dict[str, Any], Staff, str]:
    payer = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    staff = await new_staff(db, settings, role)
    csrf = await web_sign_in(client, staff)
    return payer, order, staff, csrf


async def test_checking_an_order_lands_on_its_panel_where_it_was_asked(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer, order, _, csrf = await _agent_on_page(client, db, settings)
    ticket = await _ticket(client, payer, order_id=order["id"])
    for then in (f"/backoffice/customers/{payer.account_id}", f"/backoffice/tickets/{ticket['id']}"):
        r = await client.post(
            f"/backoffice/orders/{order['id']}/check", data={"csrf": csrf, "then": then}
        )
        assert r.status_code == 303
        _lands(r.headers["location"], then, f"order-{order['id']}")


@pytest.mark.parametrize(
    "then",
    [
        "/backoffice/reports",  # a page an agent may not see
        "/backoffice/audit",
        "/backoffice/staff",
        "https://example.com/backoffice/",
        "//example.com/backoffice/customers",
        "/backoffice/customers/../reports",
        "",
    ],
)
async def test_a_then_the_member_may_not_see_is_not_followed(
    client: httpx.AsyncClient, db: Database, settings: Settings, then: str
) -> None:
    payer, order, _, csrf = await _agent_on_page(client, db, settings)
    r = await client.post(
        f"/backoffice/orders/{order['id']}/check", data={"csrf": csrf, "then": then}
    )
    assert r.status_code == 303
    # the page the action belongs to: the order's panel on its customer's page
    _lands(r.headers["location"], f"/backoffice/customers/{payer.account_id}", f"order-{order['id']}")
    landed = await client.get(r.headers["location"].split("#")[0])
    assert landed.status_code == 200


async def test_finance_lands_on_the_order_after_a_refund_and_never_on_a_crafted_then(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer, order, _, csrf = await _agent_on_page(client, db, settings, role="finance")
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    key = re.search(
        rf'action="/backoffice/orders/{order["id"]}/refund".*?name="idem" value="([^"]+)"',
        page.text,
        re.S,
    )
    assert key is not None
    r = await client.post(
        f"/backoffice/orders/{order['id']}/refund",
        data={"csrf": csrf_of(page.text), "amount": "1.00", "reason": "goodwill",
              "idem": key.group(1), "then": f"/backoffice/customers/{payer.account_id}"},
    )  # fmt: skip
    assert r.status_code == 303, r.text
    _lands(r.headers["location"], f"/backoffice/customers/{payer.account_id}", f"order-{order['id']}")
    # a page finance may see but no form comes from is not followed either
    r = await client.post(
        f"/backoffice/orders/{order['id']}/check",
        data={"csrf": csrf, "then": "/backoffice/reports"},
    )
    _lands(r.headers["location"], f"/backoffice/customers/{payer.account_id}", f"order-{order['id']}")


async def test_an_unknown_order_checked_is_still_not_found(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    _, _, _, csrf = await _agent_on_page(client, db, settings)
    r = await client.post(
        f"/backoffice/orders/{uuid.uuid4()}/check",
        data={"csrf": csrf, "then": "/backoffice/reports"},
    )
    assert r.status_code == 404
