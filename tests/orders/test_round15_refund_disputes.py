"""A dispute lost while a refund of ours is on its way (review round 15).

What was wrong: a 2000 order, staff ask a refund of 1500; before the provider confirms it,
Stripe says the payer's dispute of 2000 is lost. The dispute was recorded as a refund by the
provider of what was left counting only done refunds (2000), and the refund, confirmed
afterwards, was posted too: `refunded_amount` 3500 for 2000 paid, `revenue:sales` debited 3500
for a 2000 sale, two credit notes (2000 + 1500) against one 2000 receipt.

Now an order is never refunded past what was paid, whatever the order of events: the part of a
refund of ours that completes past what was left is what the provider paid the payer twice —
`clearing → loss:disputes:<CUR>`, code `dispute_loss`, no credit note for it — and the refund
counts only what was left (`refunds._past_what_was_paid`). A refund refused after the dispute is
voided as any other: nothing is re-split. Also: the transfers a refund held are posted under the
codes they were held with (`refund_fee`, `clawback`), no longer all as `refund`.

Real databases (both), orders paid at the sandbox (PayPal's fee: the sale and the fee split);
the dispute stored as the Stripe adapter stores it and applied (`reversals.apply_refund_news`),
the provider's answers applied as the worker applies them (`refunds.complete_refund`).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger import chart
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Line
from simcharge.orders.models import Order, ProviderEvent, Refund
from simcharge.orders.refunds import ask_for_refund, complete_refund
from simcharge.orders.reversals import apply_refund_news, note_refunded_status
from simcharge.payments.codec import dispute_to_json
from simcharge.payments.providers import (
    Dispute,
    ListedRefund,
    PaymentState,
    PaymentStatus,
    RefundResult,
)
from simcharge.payments.providers import RefundState as ProviderRefundState
from simcharge.portal.records import records_page
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
)

POSTED = ("posted", "post_pending")


async def _credited(client: httpx.AsyncClient, db: Database, settings: Settings,
                    payer: Payer | None = None) -> Order:
    """A fulfilled traveller-20 order paid with PayPal's fee (at the sandbox)."""
    payer = payer or await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20", method="paypal")
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    row = await order_row(db, order["id"])
    assert row.fee > 0 and row.paid_amount == row.total
    return row


async def _ask(db: Database, order_id: uuid.UUID, amount: int) -> str:
    async def run(s: AsyncSession) -> str:
        refund, made = await ask_for_refund(
            s, order_id, amount=amount, reason="asked by the payer", requested_by="staff:test",
            now=utcnow(),
        )  # fmt: skip
        assert made
        return refund.reference

    return await db.run(run)


async def _answer(db: Database, order_id: uuid.UUID, reference: str, amount: int,
                  ok: bool) -> str:
    """The provider's final answer about one of our refunds, as the worker applies it."""
    state = ProviderRefundState.succeeded if ok else ProviderRefundState.failed
    result = RefundResult(reference, f"re_{reference[-8:]}", state, amount, "USD",
                          {} if ok else {"error": "charge_disputed"})
    return await db.run(lambda s: complete_refund(s, order_id, result, utcnow()))


async def _lost(db: Database, order: Order, amount: int, dispute_id: str) -> str:
    """Stripe's `charge.dispute.closed` with `status: lost`, stored then applied."""
    dispute = Dispute(dispute_id, amount, "usd", "fraudulent", "lost", None, order.reference)

    async def run(s: AsyncSession) -> str:
        event = ProviderEvent(
            provider="stripe", event_id=f"evt_{uuid.uuid4().hex[:12]}",
            event_type="charge.dispute.closed", order_id=order.id, payload={},
            dispute=dispute_to_json(dispute),
        )  # fmt: skip
        s.add(event)
        await s.flush()
        return await apply_refund_news(s, event, utcnow())

    return await db.run(run)


async def _reported(db: Database, order: Order, reference: str, amount: int) -> bool:
    """The provider's status of the payment listing our refund as done (a report that comes
    between our refund's request and its confirmation)."""
    status = PaymentStatus(
        PaymentState.partially_refunded, order.reference, None, None, order.total, "USD",
        None, None, {}, refunded_amount=amount,
        refunds=(ListedRefund(f"re_{reference[-8:]}", amount, reference),),
    )  # fmt: skip

    async def run(s: AsyncSession) -> bool:
        row = await s.get(Order, order.id, with_for_update=True)
        assert row is not None
        return await note_refunded_status(s, row, status, source="test", now=utcnow())

    return await db.run(run)


@dataclass
class Books:
    refunded: int
    state: str
    done: int  # the amounts of the order's done refunds, summed
    credit_notes: list[int]  # the amounts of those that have a credit note
    sales_back: int
    fees_back: int
    loss: int
    held: int  # pending transfers of its refunds never posted nor voided


async def _books(db: Database, order_id: uuid.UUID) -> Books:
    """What the order's refunds and disputes wrote, read from the rows and the ledger."""
    async with db.read() as s:
        order = await s.get(Order, order_id)
        assert order is not None
        refunds = (
            await s.execute(select(Refund).where(Refund.order_id == order_id))
        ).scalars().all()
        refs = [f"refund:{r.id}" for r in refunds] + [f"order:{order_id}:dispute"]
        transfers = (
            await s.execute(select(LedgerTransfer).where(LedgerTransfer.reference.in_(refs)))
        ).scalars().all()
        ids = {t.debit_account_id for t in transfers} | {t.credit_account_id for t in transfers}
        keys = {
            a.id: (a.key or "").split("#")[0]
            for a in (
                await s.execute(select(LedgerAccount).where(LedgerAccount.id.in_(ids)))
            ).scalars()
        }
    moved = [t for t in transfers if t.kind in POSTED]

    def out_of(key: str) -> int:
        return sum(t.amount for t in moved if keys[t.debit_account_id] == key)

    resolved = {t.pending_id for t in transfers if t.pending_id is not None}
    done = [r for r in refunds if r.state == "succeeded"]
    return Books(
        refunded=order.refunded_amount,
        state=order.state,
        done=sum(r.amount for r in done),
        credit_notes=sorted(r.amount for r in done if r.credit_note_number),
        sales_back=out_of("revenue:sales:USD"),
        fees_back=out_of("revenue:fees:USD"),
        loss=out_of("loss:disputes:USD"),
        held=sum(1 for t in transfers if t.kind == "pending" and t.id not in resolved),
    )


async def _ledger_verified(db: Database) -> None:
    await assert_ledger_balanced(db)
    async with db.read() as s:
        report = await verify_ledger(s)
    assert report.ok, report.violations


async def test_the_reviewers_race_refunds_no_more_than_was_paid(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The walkthrough's script: a refund of three quarters asked, the dispute of everything
    lost, then the refund confirmed."""
    payer = await new_payer(db, settings)
    order = await _credited(client, db, settings, payer)
    total, fee = order.total, order.fee
    asked = total * 3 // 4
    reference = await _ask(db, order.id, asked)
    assert await _lost(db, order, total, "dp_race") == "flagged"
    assert await _answer(db, order.id, reference, asked, ok=True) == "refunded"

    books = await _books(db, order.id)
    assert (books.refunded, books.state, books.done) == (total, "refunded", total)
    assert books.credit_notes == [total]  # the dispute's; none for the refund past it
    assert (books.sales_back, books.fees_back) == (total - fee, fee)  # revenue: one sale
    assert books.loss == asked  # the provider paid the payer that twice
    assert books.held == 0
    async with db.read() as s:
        ours = (
            await s.execute(select(Refund).where(Refund.reference == reference))
        ).scalar_one()
        loss = (
            await s.execute(
                select(LedgerTransfer).where(
                    LedgerTransfer.reference == f"refund:{ours.id}",
                    LedgerTransfer.code == "dispute_loss",
                )
            )
        ).scalar_one()
    assert (ours.state, ours.amount, ours.credit_note_number) == ("succeeded", 0, None)
    assert (ours.plan["asked"], ours.plan["beyond_paid"]) == (asked, asked)
    assert loss.amount == asked and loss.kind == "posted"
    # The payer sees the dispute's refund, not ours that it absorbed whole (0.00, no note).
    r = await client.get(f"/api/v1/orders/{order.id}", headers=payer.auth)
    assert r.status_code == 200, r.text
    shown = r.json()["refunds"]
    assert reference not in {x["reference"] for x in shown}
    assert [x["amount"]["minor"] for x in shown] == [total], shown
    row = await order_row(db, order.id)
    assert row.attention == "chargeback"
    assert reference in (row.attention_note or "") and "loss" in (row.attention_note or "")
    await _ledger_verified(db)
    # Told again (the notification repeated): nothing more.
    assert await _answer(db, order.id, reference, asked, ok=True) == "already"
    assert await _books(db, order.id) == books


async def test_a_refund_past_what_a_partial_dispute_left_is_split(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Half disputed and lost, then a refund of three quarters confirmed: a half is a refund
    (its credit note for that half, the fee given back in full), a quarter the operator's loss."""
    order = await _credited(client, db, settings)
    total, fee = order.total, order.fee
    asked, disputed = total * 3 // 4, total // 2
    reference = await _ask(db, order.id, asked)
    await _lost(db, order, disputed, "dp_half")
    await _answer(db, order.id, reference, asked, ok=True)
    books = await _books(db, order.id)
    assert (books.refunded, books.done, books.loss) == (total, total, asked - (total - disputed))
    assert books.credit_notes == sorted([disputed, total - disputed])
    assert (books.sales_back, books.fees_back) == (total - fee, fee)
    await _ledger_verified(db)


@dataclass(frozen=True)
class Case:
    asked: tuple[int, ...]  # our refunds, in quarters of the total
    ok: tuple[bool, ...]  # whether the provider made each
    disputed: int  # the dispute lost, in quarters
    events: tuple[str, ...]  # "c0", "c1" (a refund's answer), "d" (the dispute), "p" (a report)


def _cases() -> list[Case]:
    cases = []
    for asked, disputed in itertools.product(((3,), (4,), (2, 1)), (4, 2)):
        for ok in itertools.product((True, False), repeat=len(asked)):
            names = [f"c{i}" for i in range(len(asked))] + ["d"]
            if len(asked) == 1 and ok[0]:
                names.append("p")  # the provider's report lists a refund it made
            for events in itertools.permutations(names):
                cases.append(Case(asked, ok, disputed, events))
    return cases


CASES = _cases()


@pytest.mark.parametrize("part", range(4))
async def test_whatever_the_order_of_events_an_order_is_never_refunded_past_what_was_paid(
    client: httpx.AsyncClient, db: Database, settings: Settings, part: int
) -> None:
    """Every order of the events — our refunds' answers (made or refused), the dispute's loss,
    a report of the payment between them — over a refund of three quarters, one of everything,
    or two (a half and a quarter), and a dispute of everything or of a half: what the provider
    paid out is what was refunded plus the operator's loss; what was refunded is what was paid
    at most (all of it when the provider paid out as much), its sale and fee given back as one
    sale, its credit notes that much, and nothing is left held."""
    payer = await new_payer(db, settings)
    for case in CASES[part::4]:
        order = await _credited(client, db, settings, payer)
        total, fee = order.total, order.fee
        quarter = total // 4
        amounts = [total if q == 4 else q * quarter for q in case.asked]
        disputed = total if case.disputed == 4 else case.disputed * quarter
        references = [await _ask(db, order.id, a) for a in amounts]
        for event in case.events:
            if event == "d":
                await _lost(db, order, disputed, f"dp_{uuid.uuid4().hex[:8]}")
            elif event == "p":
                await _reported(db, order, references[0], amounts[0])
            else:
                i = int(event[1:])
                await _answer(db, order.id, references[i], amounts[i], case.ok[i])
        paid_out = disputed + sum(a for a, ok in zip(amounts, case.ok, strict=True) if ok)
        books = await _books(db, order.id)
        assert books.refunded == min(paid_out, total), case
        assert books.done == books.refunded, case
        assert books.loss == paid_out - books.refunded, case
        assert sum(books.credit_notes) == books.refunded and 0 not in books.credit_notes, case
        assert books.sales_back + books.fees_back == books.refunded, case
        assert books.fees_back <= fee and books.sales_back <= total - fee, case
        if books.refunded == total:
            assert (books.state, books.fees_back) == ("refunded", fee), case
        assert books.held == 0, case
    await _ledger_verified(db)


async def test_a_done_refund_posts_each_transfer_under_the_code_it_was_held_with(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """The fee's share is `refund_fee` and what is taken back from the line `clawback` once
    posted, as when they were held (every posting was `refund` before); a refused refund's
    voids stay `refund_voided`."""
    order = await _credited(client, db, settings)
    half = order.total // 2
    made = await _ask(db, order.id, half)
    refused = await _ask(db, order.id, half)
    await _answer(db, order.id, made, half, ok=True)
    await _answer(db, order.id, refused, half, ok=False)
    async with db.read() as s:
        rows = (
            await s.execute(select(Refund).where(Refund.order_id == order.id))
        ).scalars().all()
        by_reference = {r.reference: r for r in rows}
        codes: dict[str, set[tuple[str, str]]] = {}
        for reference, refund in by_reference.items():
            transfers = (
                await s.execute(
                    select(LedgerTransfer).where(
                        LedgerTransfer.reference == f"refund:{refund.id}"
                    )
                )
            ).scalars().all()
            held = {t.id: t.code for t in transfers if t.kind == "pending"}
            for t in transfers:
                if t.pending_id is not None:
                    assert t.kind != "post_pending" or t.code == held[t.pending_id]
            codes[reference] = {(t.kind, t.code) for t in transfers}
    assert codes[made] == {
        ("pending", "refund"), ("pending", "refund_fee"), ("pending", "clawback"),
        ("post_pending", "refund"), ("post_pending", "refund_fee"),
        ("post_pending", "clawback"),
    }  # fmt: skip
    assert {kind for kind, _ in codes[refused]} == {"pending", "void_pending"}
    assert {code for kind, code in codes[refused] if kind == "void_pending"} == {"refund_voided"}
    # The line's records show what was taken back as part of the refund, under "Refund".
    async with db.read() as s:
        line = await s.get(Line, order.line_id)
        assert line is not None
        page = await records_page(s, [line], kind="refund")
    assert page.records and {rec.kind for rec in page.records} == {"refund"}
    assert all(rec.amount < 0 for rec in page.records)
    # The report of the ledger reads the fee given back under its own code.
    fees = chart.keys("revenue:fees:USD")
    async with db.read() as s:
        fee_back = (
            await s.execute(
                select(LedgerTransfer.amount)
                .join(LedgerAccount, LedgerAccount.id == LedgerTransfer.debit_account_id)
                .where(
                    LedgerAccount.key.in_(fees),
                    LedgerTransfer.kind == "post_pending",
                    LedgerTransfer.code == "refund_fee",
                )
            )
        ).scalars().all()
    assert fee_back == [by_reference[made].plan["fee"]]
    await _ledger_verified(db)


def test_the_orderings_cover_each_event_before_and_after_the_others() -> None:
    """The property's cases: every permutation, so each answer comes before and after the
    dispute (and the report between them)."""
    assert len(CASES) == len(set(CASES))
    one = [c for c in CASES if c.asked == (3,) and c.ok == (True,) and c.disputed == 4]
    assert {c.events for c in one} == set(itertools.permutations(("c0", "d", "p")))
    assert any(c.ok == (False, True) and c.events[0] == "d" for c in CASES)
