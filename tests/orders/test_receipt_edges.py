"""Receipts' edges found by the fifth review round: a right-to-left name, one day of validity, the
exact decimals of a currency, a partly refunded order's page. Each docstring says what was wrong."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import httpx
from sqlalchemy import delete, select, update

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.orders.fulfilment import RECEIPT_JOB
from simcharge.orders.models import Order, ReceiptDocument
from simcharge.orders.receipts import ReceiptFacts, render_pdf
from simcharge.worker.models import OutboxJob as Job
from tests.auth.helpers import problem
from tests.backoffice.helpers import new_staff
from tests.backoffice.test_paid_but_got_nothing import _wrong_amount
from tests.orders.helpers import new_payer, order_row
from tests.orders.test_receipts import _paid, _text

FACTS = ReceiptFacts(
    language="en", operator="simcharge", number="R2026-000001",
    issued_at=datetime(2026, 12, 5, 9, 30, tzinfo=UTC), order_reference="ORD-1",
    payer="someone", msisdn="+972501234567", plan="Traveller", grants=["5 GB"],
    method="Card", price="$20.00", fee="$0.00", total="$20.00", status="Paid",
)


def test_a_hebrew_name_is_not_printed_backwards() -> None:
    """DejaVu Sans has Hebrew and Arabic glyphs, so `_payer` kept such a name, but the receipt is
    drawn without the bidi algorithm: "דוד כהן" printed as "ןהכ דוד" (Arabic also unjoined). A
    right-to-left name is now printed as the username, as a name the fonts cannot draw is."""
    from simcharge.accounts.models import Account
    from simcharge.orders.receipts import _payer

    for name in ("דוד כהן", "محمد علي", "Ana דוד"):
        assert _payer(Account(username="someone", display_name=name)) == "someone", name
    assert _payer(Account(username="someone", display_name="José Núñez")) == "José Núñez"
    assert _payer(Account(username="someone", display_name="陈静")) == "陈静"
    # Drawn as given, the name comes back reversed from the PDF: why it is not drawn.
    text = _text(render_pdf(replace(FACTS, payer="someone")))
    assert "someone" in next(x for x in text.splitlines() if x.startswith("Customer"))


def test_a_one_day_validity_is_not_plural() -> None:
    """The receipt's "Includes" says "valid {days} days" with no plural form: a one-day
    package's allowance reads "valid 1 days" (the e-mails use `{% pluralize %}`)."""
    from simcharge.orders.receipts import _units

    text = _units("en", {"amount": 10, "unit": "SMS", "validity_days": 1})
    assert "1 days" not in text, text


async def test_receipt_prints_the_exact_amount_of_a_two_decimal_currency(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Stored amounts have ISO 4217's exponent (IDR, HUF: 2; IQD: 3), but `format_money` calls
    Babel's `format_currency` with CLDR's display digits (IDR, HUF, IQD: 0): a fee of
    IDR 2,617.50 prints "IDR2,618" — the receipt states amounts that were not charged, and
    price + fee no longer add up to the total printed."""
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer)
    oid = uuid.UUID(order["id"])
    await db.run(lambda s: s.execute(update(Order).where(Order.id == oid).values(
        currency="IDR", price=7_500_000, fee=261_750, total=7_761_750)))
    await db.run(lambda s: s.execute(delete(ReceiptDocument).where(
        ReceiptDocument.order_id == oid)))
    r = await client.get(f"/api/v1/orders/{oid}/receipt?lang=en", headers=payer.auth)
    assert r.status_code == 200
    text = _text(r.content)
    assert "2,617.50" in text, text
    assert "77,617.50" in text, text


async def test_the_order_page_of_a_partly_refunded_order_does_not_say_refunded(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """`portal/templates/order.html` has no branch for `partially_refunded`: it falls to the
    `else`, "This order was refunded." — a customer refunded $5 of $20 reads that all of it came
    back (the receipt it links says "Partly refunded"; the page shows no refunded amount)."""
    payer = await new_payer(db, settings)
    order = await _paid(client, settings, payer)
    oid = uuid.UUID(order["id"])
    await db.run(lambda s: s.execute(update(Order).where(Order.id == oid).values(
        state="partially_refunded", refunded_amount=500)))
    client.cookies.set("sc_session", payer.token)
    page = await client.get(f"/account/orders/{oid}")
    assert page.status_code == 200
    assert "This order was refunded." not in page.text
    assert "$5.00" in page.text


async def test_a_payment_put_on_the_balance_has_a_receipt(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Money taken and not credited (`paid`), then put on the line's wallet by finance: the
    payer's money became their credit, so they get a receipt for it — numbered, saying what was
    paid and that it is on the balance, e-mailed by the receipt job, linked from their pages.
    Before, the order had no receipt ("we have not credited it yet … our team is looking into
    it", a 409), and the back office's "resend receipt" answered `no-receipt`."""
    payer = await new_payer(db, settings)
    order = await _wrong_amount(client, db, settings, payer)
    oid = uuid.UUID(order["id"])
    json_please = {**payer.auth, "Accept": "application/json"}
    r = await client.get(f"/api/v1/orders/{oid}/receipt", headers=json_please)
    assert (r.status_code, problem(r)["type"].rsplit("/", 1)[-1]) == (409, "receipt-awaits-credit")

    finance = await new_staff(db, settings, "finance")
    r = await client.post(f"/api/v1/admin/orders/{oid}/apply-to-wallet",
                          headers=finance.auth, json={"note": "customer asked for credit"})
    assert r.status_code == 200, r.text
    async with db.read() as s:
        queued = (await s.execute(select(Job).where(Job.kind == RECEIPT_JOB))).scalars().all()
    assert [j.payload["order_id"] for j in queued] == [str(oid)]

    r = await client.get(f"/api/v1/orders/{oid}/receipt", headers=json_please)
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["number"].startswith("R")
    assert receipt["includes"] == ["$19.99 put on the line's balance"]
    assert (await order_row(db, oid)).receipt_number == receipt["number"]
    text = _text((await client.get(f"/api/v1/orders/{oid}/receipt", headers=payer.auth)).content)
    assert "Put on the balance" in text and "19.99" in text, text

    client.cookies.set("sc_session", payer.token)
    page = (await client.get(f"/account/orders/{oid}")).text
    assert "so the payment was put on the line" in page
    assert f"/api/v1/orders/{oid}/receipt" in page
    assert f"/api/v1/orders/{oid}/receipt" in (await client.get("/account/records")).text
    client.cookies.clear()

    r = await client.post(f"/api/v1/admin/orders/{oid}/resend-receipt", headers=finance.auth)
    assert r.status_code in (200, 202, 204), r.text


def test_a_long_operator_name_wraps_within_the_page() -> None:
    """The operator's name was drawn with `cell()` at 20 pt, which never wraps: a full legal
    name ran off the right edge (193 mm of text for 190 mm of page). It wraps now: the name
    comes back from the PDF on two lines, every word of it kept."""
    name = "Compañía Filipina de Telecomunicaciones Móviles S.A."
    text = _text(render_pdf(replace(FACTS, operator=name)))
    lines = [" ".join(x.split()) for x in text.splitlines() if x.strip()]
    first = next(i for i, x in enumerate(lines) if x.startswith("Compañía"))
    assert lines[first] != name and " ".join(lines[first : first + 2]) == name, lines[:4]
