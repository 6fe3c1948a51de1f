"""Receipts and credit notes numbered in the order of their dates.

What was wrong: a receipt was numbered when the worker's job ran or the payer first asked, but
printed its order's credit time: sixteen orders paid at once got numbers out of the order of
their dates, and a receipt first asked for after its year's books closed took the next number of
that closed year. A credit note printed (and took the year of) its refund's completion, while a
refund made at the provider reported before its payment posts its money, and is numbered, later.

Now each is dated when its number is taken (`orders.receipt_issued_at`,
`refunds.credit_note_issued_at`, read under the counter row's lock: `service._issue`), in that
date's operator year; the payment's (the refund's) date is printed beside it. Migration
`0031_receipt_issued_at` gives the documents already numbered the date they print. Real SQLite
and PostgreSQL, the sandbox provider, the PDF as rendered."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import insert, select

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.auth.client import ClientInfo
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.catalog.models import Plan
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.ledger.models import LedgerTransfer
from simcharge.orders.models import Order, ReceiptCounter, Refund
from simcharge.orders.reversals import record_provider_refund, settle_provider_refunds
from simcharge.orders.service import applied_transfer_id, issue_receipt_number
from tests.factories import create_ledger_account, create_line, load_demo_catalog
from tests.migration_helpers import fresh_database, migrate_to, opened
from tests.orders.helpers import Payer, new_payer, order_row, pay_at_sandbox, place

MANILA = "Asia/Manila"
JSON = {"Accept": "application/json"}
BEFORE = "0030_payment_provider_id_unique"

fresh = fresh_database("receiptissued")


def _text(pdf: bytes) -> str:
    """The text of the PDF (fpdf2's two-byte codes read a byte at a time: NULs dropped)."""
    pages = PdfReader(io.BytesIO(pdf)).pages
    return "\n".join(page.extract_text() for page in pages).replace("\x00", "")


def _in_manila(settings: Settings) -> Settings:
    return settings.model_copy(update={"operator_timezone": MANILA})


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer) -> uuid.UUID:
    """An order placed, paid at the sandbox and credited now; its receipt not yet issued."""
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return uuid.UUID(order["id"])


async def _signed_in(db: Database, settings: Settings, payer: Payer) -> Payer:
    """The payer signs in again at the clock's time (their first session has ended)."""
    issued = await db.run(lambda s: open_session(
        s, settings.secret_key, account_id=payer.account_id,
        client=ClientInfo(ip="198.51.100.7", user_agent="pytest"),
        policy=policy(settings), now=clock.now(),
    ))
    return Payer(payer.account_id, issued.token, payer.line, payer.email)


async def test_receipts_issued_at_once_are_dated_in_the_order_of_their_numbers(
    fresh_db: Database, settings: Settings
) -> None:
    """Twelve credited orders whose receipts are all asked for at once (real connections and
    commits; PostgreSQL's writers truly concurrent): gapless numbers, and each receipt's date
    no earlier than the one numbered before it, nor than its own credit."""
    db = fresh_db
    await db.run(load_demo_catalog)
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        payer = await new_payer(db, settings)
        ids = [await _credited(client, settings, payer) for _ in range(12)]
    numbers = await asyncio.gather(
        *(db.run(lambda s, i=i: issue_receipt_number(s, i)) for i in reversed(ids))
    )
    assert all(numbers)
    async with db.read() as s:
        rows = (await s.execute(select(Order).where(Order.id.in_(ids)))).scalars().all()
    by_number = sorted(rows, key=lambda o: str(o.receipt_number))
    year = utcnow().year
    assert [o.receipt_number for o in by_number] == [f"R{year}-{n:06d}" for n in range(1, 13)]
    dates = [o.receipt_issued_at for o in by_number]
    assert all(d is not None for d in dates)
    assert dates == sorted(dates)  # type: ignore[type-var]
    assert all(o.receipt_issued_at >= o.fulfilled_at for o in rows)  # type: ignore[operator]


async def test_a_receipt_first_asked_for_next_year_is_numbered_and_dated_then(
    db: Database, settings: Settings
) -> None:
    """Credited on 30 December 2026 (Manila), its receipt never issued by the worker, first asked
    for on 2 January 2027: `R2027-000001`, dated 2 January, paid 30 December — the closed year's
    series untouched. The JSON says the same date; asking again changes nothing."""
    operator = _in_manila(settings)
    paid = datetime(2026, 12, 30, 2, 0, tzinfo=UTC)  # 10:00 on 30 December in Manila
    asked = datetime(2027, 1, 2, 1, 0, tzinfo=UTC)  # 09:00 on 2 January in Manila
    app = create_app(operator, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        clock.freeze(paid)
        payer = await new_payer(db, operator)
        order_id = await _credited(client, operator, payer)
        clock.freeze(asked)
        payer = await _signed_in(db, operator, payer)
        r = await client.get(f"/api/v1/orders/{order_id}/receipt", headers=payer.auth)
        assert r.status_code == 200, r.text
        words = _text(r.content)
        row = await order_row(db, order_id)
        assert (row.receipt_number, row.receipt_issued_at, row.fulfilled_at) == (
            "R2027-000001", asked, paid
        )
        assert "R2027-000001" in words, words
        date, paid_line = words.index("Jan 2, 2027, 9:00:00"), words.index("Dec 30, 2026, 10:00:00")
        assert words.index("Date") < date < words.index("Paid") < paid_line, words
        r = await client.get(f"/api/v1/orders/{order_id}/receipt", headers={**payer.auth, **JSON})
        assert r.status_code == 200, r.text
        assert r.json()["number"] == "R2027-000001"
        assert datetime.fromisoformat(r.json()["issued_at"]) == asked
        clock.freeze(asked + timedelta(days=1))
        payer = await _signed_in(db, operator, payer)
        again = await client.get(f"/api/v1/orders/{order_id}/receipt",
                                 headers={**payer.auth, **JSON})
        assert again.json()["issued_at"] == r.json()["issued_at"]
    async with db.read() as s:
        assert await s.get(ReceiptCounter, "receipt:2026") is None
        counter = await s.get(ReceiptCounter, "receipt:2027")
        assert counter is not None and counter.value == 1


async def test_a_provider_refund_posted_later_has_its_credit_note_dated_when_posted(
    db: Database, settings: Settings
) -> None:
    """A refund made at the provider, reported at 23:50 on 31 December (Manila) before its
    payment was known, its money posted at 00:10 on 1 January: its credit note is `C2027-000001`
    dated 1 January (when posted and numbered), the refund's date printed beside it."""
    operator = _in_manila(settings)
    credited = datetime(2026, 12, 31, 1, 0, tzinfo=UTC)
    reported = datetime(2026, 12, 31, 15, 50, tzinfo=UTC)  # 23:50 on 31 December in Manila
    posted = datetime(2026, 12, 31, 16, 10, tzinfo=UTC)  # 00:10 on 1 January in Manila
    app = create_app(operator, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        clock.freeze(credited)
        payer = await new_payer(db, operator)
        order_id = await _credited(client, operator, payer)
        assert await db.run(lambda s: issue_receipt_number(s, order_id, zone=MANILA))
        clock.freeze(reported)

        async def report(s: object) -> uuid.UUID:
            from sqlalchemy.ext.asyncio import AsyncSession

            assert isinstance(s, AsyncSession)
            order = await s.get(Order, order_id, with_for_update=True)
            assert order is not None
            # Reported before its payment was known (`settle_provider_refunds` waits for it).
            paid_at, order.paid_at = order.paid_at, None
            refund = await record_provider_refund(
                s, order, amount=500, currency="USD", key="re_1", provider_refund_id="re_1",
                what="charge.refunded", source="test", now=reported, zone=MANILA,
            )
            order.paid_at = paid_at
            assert refund is not None and refund.credit_note_number is None
            return refund.id

        refund_id = await db.run(report)
        clock.freeze(posted)

        async def settle(s: object) -> None:
            from sqlalchemy.ext.asyncio import AsyncSession

            assert isinstance(s, AsyncSession)
            order = await s.get(Order, order_id, with_for_update=True)
            assert order is not None
            await settle_provider_refunds(s, order, posted, zone=MANILA)

        await db.run(settle)
        async with db.read() as s:
            refund = await s.get(Refund, refund_id)
            assert refund is not None
            assert (refund.credit_note_number, refund.credit_note_issued_at, refund.completed_at) \
                == ("C2027-000001", posted, reported)
        payer = await _signed_in(db, operator, payer)
        r = await client.get(f"/api/v1/refunds/{refund_id}/credit-note", headers=payer.auth)
        assert r.status_code == 200, r.text
        words = _text(r.content)
        date, refunded = words.index("Jan 1, 2027, 12:10:00"), words.index("Dec 31, 2026, 11:50:00")
        assert words.index("Date") < date < words.index("Refunded") < refunded, words
        r = await client.get(f"/api/v1/refunds/{refund_id}/credit-note",
                             headers={**payer.auth, **JSON})
        assert r.json()["number"] == "C2027-000001"
        assert datetime.fromisoformat(r.json()["issued_at"]) == posted


async def test_the_migration_gives_numbered_documents_the_date_they_print(fresh: str) -> None:
    """Rows of a database at 0030, upgraded: a credited order's receipt is dated its credit; one
    finance put on the balance, the time of that transfer; one applied without a transfer
    found, its payment; an unnumbered one stays undated. A numbered credit note is dated its
    refund's completion, an unnumbered one not at all."""
    credit = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    applied = datetime(2026, 3, 9, 1, 2, 3, tzinfo=UTC)
    paid = datetime(2026, 3, 8, 0, 0, tzinfo=UTC)
    done = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    # Written at 0030's schema, as a database upgraded from it holds them (core inserts that
    # name their columns: later migrations' columns do not exist yet).
    await migrate_to(fresh, BEFORE)
    async with opened(fresh) as db, db.transaction() as s:
        await load_demo_catalog(s)
        plan = (await s.execute(select(Plan).limit(1))).scalar_one()
        account_id = uuid.uuid4()
        await s.execute(insert(Account.__table__).values(
            id=account_id, username=f"migr{account_id.hex[:8]}", password_hash="x"
        ))
        line = await create_line(s)
        debit, credit_account = await create_ledger_account(s), await create_ledger_account(s)

        async def order(n: int, **fields: object) -> uuid.UUID:
            order_id = uuid.uuid4()
            await s.execute(insert(Order.__table__).values(
                id=order_id, reference=f"MIGRATION{n:019d}", account_id=account_id,
                line_id=line.id, msisdn=line.msisdn, plan_id=plan.id, plan_code=plan.code,
                plan_version=1, plan_snapshot={}, method_code="sandbox", provider="sandbox",
                currency="USD", price=1000, fee=0, total=1000, expires_at=credit, paid_at=paid,
                **fields,
            ))
            return order_id

        ids = [
            await order(1, state="fulfilled", fulfilled_at=credit, receipt_number="R2026-000001"),
            await order(2, state="paid", receipt_number="R2026-000002"),  # on the balance
            await order(3, state="paid", receipt_number="R2026-000003"),  # its transfer not found
            await order(4, state="fulfilled", fulfilled_at=credit),  # never numbered
        ]
        s.add(LedgerTransfer(
            id=applied_transfer_id(ids[1]), debit_account_id=debit,
            credit_account_id=credit_account, amount=1000, unit="USD", kind="posted",
            code="applied", created_at=applied,
        ))
        refund_ids = [uuid.uuid4(), uuid.uuid4()]
        for n, (refund_id, number) in enumerate(zip(refund_ids, ("C2026-000001", None), strict=True)):
            await s.execute(insert(Refund.__table__).values(
                id=refund_id, order_id=ids[0], reference=f"MIGRATIONREFUND{n}", amount=100,
                currency="USD", requested_by="staff:a", state="succeeded", plan={},
                created_at=credit, completed_at=done, credit_note_number=number,
            ))

    await migrate_to(fresh)

    async with opened(fresh) as db, db.read() as s:
        orders = [await s.get(Order, i) for i in ids]
        notes = [await s.get(Refund, i) for i in refund_ids]
    assert [o.receipt_issued_at for o in orders if o is not None] == [credit, applied, paid, None]
    assert [r.credit_note_issued_at for r in notes if r is not None] == [done, None]


async def test_a_year_turning_while_the_counter_was_awaited_numbers_in_the_new_year(
    client: httpx.AsyncClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The year is read before the counter's lock is taken, the date after it: should midnight
    of 1 January (Manila) fall in between, the old year's number is given back (the counter as
    it was, no gap) and the new year's taken — never an `R2026-…` dated 2027."""
    clock.freeze(datetime(2026, 12, 31, 1, 0, tzinfo=UTC))
    payer = await new_payer(db, settings)
    first = await _credited(client, settings, payer)
    assert await db.run(lambda s: issue_receipt_number(s, first, zone=MANILA)) == "R2026-000001"
    second = await _credited(client, settings, payer)
    before = datetime(2026, 12, 31, 15, 59, 59, 900_000, tzinfo=UTC)  # 23:59:59.9 in Manila
    after = datetime(2026, 12, 31, 16, 0, 0, 100_000, tzinfo=UTC)  # 00:00:00.1 on 1 January
    readings = iter([before, after])
    monkeypatch.setattr(clock, "now", lambda: next(readings, after))
    assert await db.run(lambda s: issue_receipt_number(s, second, zone=MANILA)) == "R2027-000001"
    row = await order_row(db, second)
    assert row.receipt_issued_at == after
    async with db.read() as s:
        old = await s.get(ReceiptCounter, "receipt:2026")
        assert old is not None and old.value == 1
