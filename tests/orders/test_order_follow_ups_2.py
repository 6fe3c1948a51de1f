"""Orders: follow-ups of review round 7, second wave.

What was wrong, and is right now:

- A refund's reason is what a staff member typed in the back office's refund form (or what
  `reversals` wrote of a provider's own refund: a dispute's id and cause): internal notes. The
  customer's `GET /api/v1/orders/{id}` returned it as `refunds[].reason`. Now the customer's
  refunds carry no reason; the staff's (`/api/v1/admin/orders…`, the back office) still do.
- `LineNotTopUpable` (a terminated line) always named `field=msisdn`, also for a quote or an
  order that named its line by `line_id` (and sent no `msisdn`). It now names the field the
  client sent.
- `GET /api/v1/admin/orders?msisdn=` compared the text as given with the stored E.164 number:
  a number with spaces, without its `+`, or whose `+` arrived as a space (unencoded in a query
  string) found nothing, and at most 16 characters were taken. The number is now normalised as
  every number is (`kit.phone.normalize_e164`), and one that is no number is refused (422,
  field `msisdn`).
- Finance put a payment taken and not credited on the line's balance; the order page told the
  payer "we have not credited it yet" (and offered no receipt) until the worker numbered the
  receipt. It now knows from the ledger's `applied` transfer (`orders.service.applied_at`), at
  once.

Real database (both, when the PostgreSQL URL is set), real signatures; the sandbox provider.
"""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import LineState
from simcharge.orders.fulfilment import RECEIPT_JOB
from simcharge.orders.models import Order, Refund
from simcharge.worker.models import OutboxJob as Job
from tests.auth.helpers import problem
from tests.backoffice.helpers import new_staff
from tests.backoffice.test_paid_but_got_nothing import _wrong_amount
from tests.orders.helpers import idem, new_payer, order_row, place
from tests.orders.test_refunds import _paid_order, _staff

INTERNAL = "Chargeback risk: customer was abusive on the phone, refund to close the ticket"


async def test_a_refund_reason_is_not_shown_to_the_customer(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Staff write the refund's reason for each other ("Reason" in the back office's form):
    the customer's order said it word for word in `refunds[].reason`. Now the customer's API
    and order page say nothing of it; the staff's API still has it."""
    staff = await _staff(db, "refunds:write", "orders:read")
    payer = await new_payer(db, settings)
    order = await _paid_order(client, db, settings, payer, plan="starter-10")
    r = await client.post(f"/api/v1/admin/orders/{order['id']}/refunds",
                          headers={**staff, **idem()}, json={"amount": 300, "reason": INTERNAL})
    assert r.status_code == 202, r.text
    assert r.json()["reason"] == INTERNAL  # the staff who asked see what they wrote

    mine = await client.get(f"/api/v1/orders/{order['id']}", headers=payer.auth)
    assert mine.status_code == 200
    assert [x["reference"] for x in mine.json()["refunds"]] == [r.json()["reference"]]
    assert "reason" not in mine.json()["refunds"][0]
    assert INTERNAL not in mine.text
    listed = await client.get("/api/v1/orders", headers=payer.auth)
    assert INTERNAL not in listed.text
    client.cookies.set("sc_session", payer.token)
    assert INTERNAL not in (await client.get(f"/account/orders/{order['id']}")).text
    assert INTERNAL not in (await client.get("/account")).text
    client.cookies.clear()

    theirs = await client.get(f"/api/v1/admin/orders/{order['id']}", headers=staff)
    assert [x["reason"] for x in theirs.json()["refunds"]] == [INTERNAL]
    async with db.read() as s:
        row = (await s.execute(select(Refund))).scalar_one()
    assert row.reason == INTERNAL  # kept: only the customer's views leave it out


async def test_a_terminated_line_named_by_id_is_refused_on_line_id(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A quote or an order for one's own terminated line, named by `line_id`, was refused with
    `field=msisdn`, a field the client never sent (a form would mark the wrong input). Now the
    refusal names `line_id`; a gift to a terminated number still names `msisdn`; nothing is
    ordered."""
    payer = await new_payer(db, settings, line_state=LineState.terminated)
    body = {"plan": "starter-10", "method": "card", "line_id": str(payer.line.id)}
    for path, headers in (("/api/v1/quotes", payer.auth), ("/api/v1/orders", {**payer.auth,
                                                                             **idem()})):
        r = await client.post(path, json=body, headers=headers)
        assert r.status_code == 409, r.text
        assert problem(r)["type"].endswith("/line-not-top-upable")
        assert problem(r)["field"] == "line_id", (path, r.text)

    friend = await new_payer(db, settings)
    gift = {"plan": "starter-10", "method": "card", "msisdn": payer.line.msisdn}
    r = await client.post("/api/v1/orders", json=gift, headers={**friend.auth, **idem()})
    assert r.status_code == 409 and problem(r)["field"] == "msisdn", r.text
    async with db.read() as s:
        assert (await s.execute(select(Order))).scalars().all() == []


async def test_admin_orders_find_a_number_however_it_is_written(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`?msisdn=` matched the stored E.164 text exactly: "+1 415 …" with spaces, the number
    without its `+`, or `?msisdn=+1415…` sent unencoded (the `+` arrives as a space) found
    no order. Now each finds it; a value that is no number is refused (422, `msisdn`), not
    answered with an empty list that says "no such order"."""
    staff = await _staff(db, "orders:read")
    payer = await new_payer(db, settings)
    other = await new_payer(db, settings)
    order = await place(client, payer)
    await place(client, other)
    number = payer.line.msisdn
    assert number.startswith("+1") and len(number) == 12
    spaced = f"+1 {number[2:5]} {number[5:8]} {number[8:]}"
    written = (spaced, number[1:], f"00{number[1:]}", f"+1 ({number[2:5]}) {number[5:8]}-{number[8:]}")
    for value in written:
        r = await client.get("/api/v1/admin/orders", params={"msisdn": value}, headers=staff)
        assert r.status_code == 200, (value, r.text)
        assert [o["id"] for o in r.json()] == [order["id"]], value
    # Unencoded: the query string's `+` is a space.
    r = await client.get(f"/api/v1/admin/orders?msisdn={number}", headers=staff)
    assert r.status_code == 200 and [o["id"] for o in r.json()] == [order["id"]], r.text

    for bad in ("not a number", "+1 555", "12"):
        r = await client.get("/api/v1/admin/orders", params={"msisdn": bad}, headers=staff)
        assert r.status_code == 422, (bad, r.text)
        assert problem(r)["field"] == "msisdn", (bad, r.text)


async def test_the_order_page_knows_at_once_that_the_payment_is_on_the_balance(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The order page told apart "put on the balance" from "not credited yet" by the receipt's
    number, which the worker sets after finance applied the payment: until it ran, the payer
    read "we have not credited it yet … our team is looking into it", with no receipt and a
    "paid but not credited?" button, although the money was on their balance. Now the page
    asks the ledger (`applied_at`): right at once, with the receipt's link (asking for the
    receipt numbers it)."""
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    oid = uuid.UUID(order["id"])
    client.cookies.set("sc_session", payer.token)
    before = (await client.get(f"/account/orders/{oid}")).text
    assert "have not credited it yet" in before  # the page as it was for a payment not applied

    finance = await new_staff(db, settings, "finance")
    client.cookies.clear()
    r = await client.post(f"/api/v1/admin/orders/{oid}/apply-to-wallet",
                          headers=finance.auth, json={"note": "customer asked for credit"})
    assert r.status_code == 200, r.text
    # The worker has not run: the receipt job waits, the order has no number yet.
    assert (await order_row(db, oid)).receipt_number is None
    async with db.read() as s:
        queued = (await s.execute(select(Job).where(Job.kind == RECEIPT_JOB))).scalars().all()
    assert [j.payload["order_id"] for j in queued] == [str(oid)]

    client.cookies.set("sc_session", payer.token)
    page = (await client.get(f"/account/orders/{oid}")).text
    client.cookies.clear()
    assert "so the payment was put on the line" in page, page
    assert "have not credited it yet" not in page
    assert f"/api/v1/orders/{oid}/receipt" in page
    assert "Paid but not credited?" not in page
