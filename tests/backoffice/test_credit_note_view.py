"""Staff open a refund's credit note from the order panel.

What was missing: credit notes (ninth review round) reached the payer by e-mail and the API, but
the back office, which links an order's receipt, had no way to show the credit note a customer
asks about. The order panel's refunds table now names each refund's credit note and links the
very PDF the payer gets (in the payer's language), the read audited as `credit_note.view`; a
refund without one (still pending) has no link, and a refund that is none is 404."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.orders.helpers import idem, new_payer, pay_at_sandbox, place, run_worker


async def _audit(db: Database, action: str) -> list[AuditEntry]:
    async with db.read() as s:
        rows = await s.execute(select(AuditEntry).where(AuditEntry.action == action))
        return list(rows.scalars())


async def test_staff_open_a_refund_s_credit_note_from_the_order(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    finance = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    staff_api = {"Authorization": f"Bearer {finance.token}"}
    payer = await new_payer(db, settings, language="zh-Hant")
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    await run_worker(app, db, settings)
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff_api, **idem()}, json={"amount": 100, "reason": "test"})
    assert r.status_code == 202, r.text
    await run_worker(app, db, settings)
    [done] = (await client.get(f"/api/v1/orders/{order['id']}", headers=payer.auth)).json()[
        "refunds"
    ]
    number = done["credit_note_number"]
    assert number and number.startswith("C"), done

    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert f'href="/backoffice/refunds/{done["id"]}/credit-note">{number}</a>' in page.text

    r = await client.get(f"/backoffice/refunds/{done['id']}/credit-note")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == f'inline; filename="credit-note-{number}.pdf"'
    assert r.headers["cache-control"] == "private, no-store"
    mine = await client.get(done["credit_note_url"], headers=payer.auth)
    assert mine.status_code == 200 and mine.content == r.content
    [entry] = await _audit(db, "credit_note.view")
    assert (entry.actor, entry.target_type, entry.target_id) == (
        f"staff:{agent.username}", "refund", done["id"]
    )
    assert entry.details == {"language": "zh-Hant"}

    r = await client.get(f"/backoffice/refunds/{uuid.uuid4()}/credit-note")
    assert r.status_code == 404
    assert len(await _audit(db, "credit_note.view")) == 1


async def test_a_pending_refund_has_no_credit_note_link_or_document(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    finance = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    staff_api = {"Authorization": f"Bearer {finance.token}"}
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff_api, **idem()}, json={"amount": 100, "reason": "test"})
    assert r.status_code == 202, r.text
    refund_id = r.json()["id"]  # asked, not yet sent by the worker: pending

    agent = await new_staff(db, settings, "agent")
    await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert "/credit-note" not in page.text
    r = await client.get(f"/backoffice/refunds/{refund_id}/credit-note")
    assert r.status_code == 404
    assert not await _audit(db, "credit_note.view")
