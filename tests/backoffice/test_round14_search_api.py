"""The admin API's customer search says what matched (fourteenth round), as the search page
does: each customer found carries `matched`, the orders, tickets and lines of theirs the query
named (empty when found by name or contact)."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff
from tests.backoffice.test_round13_links import _ticket
from tests.orders.helpers import fulfilled, new_payer


async def test_the_search_api_says_what_matched(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    other = await new_payer(db, settings)
    order = await fulfilled(client, settings, payer)
    ticket = await _ticket(client, payer, order_id=order["id"])
    agent = await new_staff(db, settings, "agent")

    async def search(q: str) -> list[dict[str, object]]:
        r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": q})
        assert r.status_code == 200, r.text
        return list(r.json())

    [found] = await search(order["reference"])
    assert found["id"] == str(payer.account_id)
    assert found["matched"] == [{"kind": "order", "id": order["id"], "label": order["reference"]}]
    [found] = await search(order["id"])
    assert found["matched"] == [{"kind": "order", "id": order["id"], "label": order["reference"]}]
    # As the receipt prints it (in fours) and read out in lower case: the same order.
    reference = order["reference"]
    spoken = " ".join(reference[i : i + 4] for i in range(0, len(reference), 4)).lower()
    [found] = await search(spoken)
    assert found["matched"] == [{"kind": "order", "id": order["id"], "label": order["reference"]}]
    [found] = await search(ticket["number"].lower())
    assert found["matched"] == [{"kind": "ticket", "id": ticket["id"], "label": ticket["number"]}]
    [found] = await search(payer.line.msisdn)
    assert {"kind": "line", "id": str(payer.line.id), "label": payer.line.msisdn} in found[
        "matched"]
    # Found by a contact: nothing else matched.
    [found] = await search(payer.email)
    assert found["id"] == str(payer.account_id) and found["matched"] == []
    # Another customer's things never show under this one; nothing found: an empty list.
    [found] = await search(other.line.msisdn)
    assert found["id"] == str(other.account_id)
    assert all(m["id"] != order["id"] for m in found["matched"])  # type: ignore[index]
    assert await search("zz-nothing-at-all") == []
    # A query too short is refused, nothing searched or audited.
    r = await client.get("/api/v1/admin/customers", headers=agent.auth, params={"q": "x"})
    assert r.status_code == 422 and r.json()["field"] == "q"
    async with db.read() as s:
        rows = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "customer.search"))).scalars().all()
    assert len(rows) == 8  # every search above
    assert all(order["reference"] not in str(r.details) for r in rows)
    assert all(spoken not in str(r.details) for r in rows)
