"""Staff e-mail a refund's credit note again (a payer who lost it, or whose mail bounced), as
they can a receipt: before, a credit note could only be downloaded in the back office and
forwarded by hand. The API and the page each queue the credit note's e-mail once per press,
audited; a refund with no credit note is refused with the reason, nothing queued."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from simcharge.auth.apikeys import create_api_key
from simcharge.backoffice.models import AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import Refund
from simcharge.worker.models import OutboxJob
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.conftest import SmtpInbox
from tests.factories import load_demo_catalog
from tests.orders.helpers import Payer, idem, new_payer, pay_at_sandbox, place, run_worker


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer) -> dict[str, Any]:
    order = await place(client, payer, plan="explorer-50")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return order


async def _refund(client: httpx.AsyncClient, key: dict[str, str], order_id: str) -> str:
    r = await client.post(
        f"/api/v1/admin/orders/{order_id}/refunds", headers={**key, **idem()},
        json={"amount": 500, "reason": "goodwill"},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _jobs(db: Database, refund_id: str) -> int:
    async with db.read() as s:
        jobs = (
            await s.execute(select(OutboxJob).where(OutboxJob.kind == "orders.credit_note"))
        ).scalars()
        return len([j for j in jobs if j.payload["refund_id"] == refund_id])


async def test_staff_send_a_credit_note_again(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    await db.run(load_demo_catalog)
    finance = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    key = {"Authorization": f"Bearer {finance.token}"}
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer)
    await run_worker(app, db, settings)  # the receipt
    refund_id = await _refund(client, key, order["id"])
    await run_worker(app, db, settings)  # the refund done, its credit note e-mailed
    async with db.read() as s:
        done = await s.get(Refund, uuid.UUID(refund_id))
    assert done is not None and done.credit_note_number is not None
    number = done.credit_note_number
    assert any(number in str(m["Subject"]) for m in inbox.to(payer.email))
    inbox.messages.clear()

    agent = await new_staff(db, settings, "agent")
    r = await client.post(
        f"/api/v1/admin/refunds/{refund_id}/resend-credit-note",
        headers={**agent.auth, "user-agent": "crm-tool/3.1"},
    )
    assert r.status_code == 202, r.text
    csrf = await web_sign_in(client, agent)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")  # its order panels
    assert page.status_code == 200, page.text
    assert f'action="/backoffice/refunds/{refund_id}/resend-credit-note"' in page.text
    r = await client.post(
        f"/backoffice/refunds/{refund_id}/resend-credit-note",
        data={"csrf": csrf, "then": f"/backoffice/customers/{payer.account_id}",
              "idem": "resend-once-1"},
    )
    assert r.status_code == 303
    assert r.headers["location"] == (
        f"/backoffice/customers/{payer.account_id}?done=credit_note_resent#order-{order['id']}"
    )
    await run_worker(app, db, settings)
    mails = inbox.to(payer.email)
    assert len(mails) == 2
    for mail in mails:
        assert number in str(mail["Subject"])
        [attachment] = list(mail.iter_attachments())
        assert attachment.get_filename() == f"credit-note-{number}.pdf"
    async with db.read() as s:
        resent = (
            await s.execute(
                select(AuditEntry)
                .where(AuditEntry.action == "refund.resend_credit_note")
                .order_by(AuditEntry.at, AuditEntry.id)
            )
        ).scalars().all()
    assert [(e.actor, e.target_id) for e in resent] == [
        (f"staff:{agent.username}", refund_id)
    ] * 2
    assert resent[0].user_agent == "crm-tool/3.1"
    assert resent[0].details == {"credit_note": number, "order": order["reference"]}


async def test_a_refund_without_a_credit_note_is_refused_and_nothing_is_queued(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await db.run(load_demo_catalog)
    finance = await db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
    key = {"Authorization": f"Bearer {finance.token}"}
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer)
    await run_worker(app, db, settings)
    refund_id = await _refund(client, key, order["id"])  # still on its way: no credit note
    agent = await new_staff(db, settings, "agent")
    before = await _jobs(db, refund_id)
    r = await client.post(
        f"/api/v1/admin/refunds/{refund_id}/resend-credit-note", headers=agent.auth
    )
    assert r.status_code == 409 and r.json()["type"] == "/problems/no-credit-note"
    assert r.json()["field"] == "refund_id"
    r = await client.post(
        f"/api/v1/admin/refunds/{uuid.uuid4()}/resend-credit-note", headers=agent.auth
    )
    assert r.status_code == 404 and r.json()["type"] == "/problems/refund-not-found"
    r = await client.post(
        f"/api/v1/admin/refunds/{refund_id}/resend-credit-note", headers=key
    )  # a key that may refund but not resend
    assert r.status_code == 403
    assert await _jobs(db, refund_id) == before
    async with db.read() as s:
        audited = (
            await s.execute(
                select(AuditEntry).where(AuditEntry.action == "refund.resend_credit_note")
            )
        ).scalars().all()
    assert audited == []
