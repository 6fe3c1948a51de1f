"""Back-office money at its edges: amounts typed in the page's number format, a refund of a
payment made in another currency than the order's, a NUL in a form, a refund sent twice, an
adjustment naming a ticket that is not the customer's."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from simcharge.backoffice.models import Adjustment, AuditEntry
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.models import Refund
from tests.backoffice.helpers import adjust_key_of, csrf_of, new_staff, web_sign_in
from tests.backoffice.test_customers_and_money import _paid
from tests.orders.helpers import (
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    sandbox_object,
    signed_event,
)
from tests.tmf654.helpers import new_holder, totals


async def _adjusted(client: httpx.AsyncClient, db: Database, holder: object, csrf: str,
                    typed: str) -> list[int]:
    line = holder.line  # type: ignore[attr-defined]
    page = await client.get(f"/backoffice/customers/{holder.account_id}")  # type: ignore[attr-defined]
    await client.post(f"/backoffice/lines/{line.id}/adjust", data={
        "csrf": csrf, "target": "wallet", "amount": typed, "reason": "goodwill",
        "idem": adjust_key_of(page.text, line.id)})
    async with db.read() as s:
        return [a.amount for a in (await s.execute(
            select(Adjustment).where(Adjustment.line_id == line.id))).scalars()]


async def test_staff_amounts_are_read_in_their_page_s_number_format(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """In Spanish `1,50` is one and a half; `1.50` is not understood (never a hundred times as
    much, never fifty times as little). In English, the other way round."""
    agent = await new_staff(db, settings, "agent", language="es")
    csrf = await web_sign_in(client, agent)
    for typed, moved in (("1,50", [150]), ("1.50", []), ("1.000,50", [100050])):
        holder = await new_holder(db)
        assert await _adjusted(client, db, holder, csrf, typed) == moved, typed
    english = await new_staff(db, settings, "agent", language="en")
    client.cookies.clear()
    csrf = await web_sign_in(client, english)
    for typed, moved in (("1.50", [150]), ("1,5", []), ("-2", [-200])):
        holder = await new_holder(db)
        assert await _adjusted(client, db, holder, csrf, typed) == moved, typed


async def test_a_refund_typed_on_the_page_is_in_the_currency_paid(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await pay_at_sandbox(client, settings, order)
    body, headers = signed_event(settings, "payment.succeeded", await sandbox_object(
        db, row.reference, amount=3000, currency="JPY"))
    assert (await client.post("/api/v1/webhooks/sandbox", content=body,
                              headers=headers)).status_code == 200
    row = await order_row(db, order["id"])
    assert (row.state, row.paid_amount, row.paid_currency) == ("paid", 3000, "JPY")
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    page = await client.get(f"/backoffice/customers/{payer.account_id}")
    assert "(JPY)" in page.text  # the form says what it takes
    r = await client.post(f"/backoffice/orders/{row.id}/refund", data={
        "csrf": csrf, "amount": "1000", "reason": "part back", "idem": uuid.uuid4().hex})
    assert r.status_code == 303, r.text
    async with db.read() as s:
        refunds = (await s.execute(select(Refund).where(Refund.order_id == row.id))).scalars()
        assert [(x.amount, x.currency) for x in refunds] == [(1000, "JPY")]


async def test_a_nul_in_a_back_office_form_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    page = await client.get("/backoffice/login")
    r = await client.post("/backoffice/login", data={
        "username": "ad\x00min", "password": "whatever-123", "csrf": csrf_of(page.text)})
    assert r.status_code == 422, r.status_code
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    r = await client.post(f"/backoffice/orders/{order['id']}/refund", data={
        "csrf": csrf, "amount": "1", "reason": "x", "idem": "k\x00"})
    assert r.status_code == 422, r.status_code
    async with db.read() as s:
        assert (await s.execute(select(Refund.id))).first() is None


async def test_a_refund_sent_twice_is_one_refund_and_one_audit_entry(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    payer = await new_payer(db, settings)
    order = await _paid(client, db, settings, payer)
    finance = await new_staff(db, settings, "finance")
    csrf = await web_sign_in(client, finance)
    form = {"csrf": csrf, "amount": "1.00", "reason": "goodwill", "idem": f"k-{order['id']}"}
    for _ in range(2):
        r = await client.post(f"/backoffice/orders/{order['id']}/refund", data=form)
        assert r.status_code == 303
    body = {"amount": 100, "reason": "api"}
    key = {"Idempotency-Key": f"api-{order['id']}"}
    for _ in range(2):
        r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                              headers={**finance.auth, **key}, json=body)
        assert r.status_code == 202, r.text
    async with db.read() as s:
        refunds = (await s.execute(select(Refund).where(
            Refund.order_id == uuid.UUID(order["id"])))).scalars().all()
        entries = (await s.execute(select(AuditEntry).where(
            AuditEntry.action == "order.refund",
            AuditEntry.target_id == order["id"]))).scalars().all()
    assert (len(refunds), len(entries)) == (2, 2)


async def test_an_adjustment_naming_a_ticket_not_the_customer_s_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    holder = await new_holder(db)
    agent = await new_staff(db, settings, "agent")
    r = await client.post(
        f"/api/v1/admin/lines/{holder.line.id}/adjustments",
        headers={**agent.auth, "Idempotency-Key": uuid.uuid4().hex},
        json={"target": "wallet", "amount": 100, "reason": "r", "ticket_id": str(uuid.uuid4())})
    assert r.status_code == 422 and r.json()["field"] == "ticket_id", r.text
    assert await totals(db, holder.line.wallet_account_id) == (2000, 0)
