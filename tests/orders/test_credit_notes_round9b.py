"""Credit notes: the refunds done before them, and the refunds made at the provider.

What was missing:
- A refund completed before credit notes existed (migration 0015) kept `credit_note_number`
  NULL: its payer saw no credit note on the order until someone asked for it by the refund's id,
  and its number then came from whenever that was. `simcharge receipts backfill-credit-notes`
  (`orders.service.backfill_credit_notes`) now numbers every such refund of a receipted order, in
  the order of completion, each in its completion year's series, a refund per transaction (safe
  beside the worker: no gap, no number twice), audited, e-mailing nothing; run again it numbers
  nothing.
- A refund made at the provider (its dashboard) got a credit note but the payer was told
  nothing. Now the payer gets the `order.refunded` notice with the credit note attached, as for
  one of ours, once — a duplicate notification sends nothing again — and not when the money
  went back through a dispute (a reversal, or an order whose payment was disputed)."""

from __future__ import annotations

import asyncio
import functools
import getpass
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from typer.testing import CliRunner

from simcharge.app import create_app
from simcharge.backoffice.audit import command_line_actor
from simcharge.backoffice.models import AuditEntry
from simcharge.cli import app as app_of_the_command
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.notifications.service import DELIVER
from simcharge.orders.models import Order, ProviderEvent, ReceiptCounter, Refund, SandboxPayment
from simcharge.orders.refunds import CREDIT_NOTE_JOB, complete_refund, request_refund
from simcharge.orders.reversals import note_refunded_status, refund_not_ours
from simcharge.orders.service import backfill_credit_notes, issue_credit_note
from simcharge.payments.providers import PaymentState, PaymentStatus, RefundResult, RefundState
from simcharge.worker.models import OutboxJob
from tests.conftest import SmtpInbox
from tests.factories import load_demo_catalog
from tests.orders.helpers import (
    Payer,
    assert_ledger_balanced,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    run_worker,
    sandbox_object,
    signed_event,
)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app_of_the_command, list(args))
    return result.exit_code, result.output


ACTOR = command_line_actor("receipts backfill-credit-notes")


async def _credited(client: httpx.AsyncClient, settings: Settings, payer: Payer,
                    plan: str = "traveller-20") -> uuid.UUID:
    order = await place(client, payer, plan=plan)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled", r.text
    return uuid.UUID(order["id"])


async def _uncredited(client: httpx.AsyncClient, db: Database, settings: Settings,
                      payer: Payer) -> uuid.UUID:
    """19.99 paid for a 20.00 order: taken, never credited (no receipt)."""
    order = await place(client, payer, plan="traveller-20")
    row = await order_row(db, order["id"])
    await db.run(lambda s: s.execute(update(SandboxPayment).where(
        SandboxPayment.reference == row.reference).values(amount=1999, state="paid")))
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "paid"
    return uuid.UUID(order["id"])


def _succeeded(refund: Refund) -> RefundResult:
    return RefundResult(refund_id=refund.reference, provider_refund_id=f"rf_{refund.reference}",
                        state=RefundState.succeeded, amount=refund.amount, currency=refund.currency,
                        raw={})


async def _done_refund(db: Database, order_id: uuid.UUID, amount: int, key: str) -> Refund:
    refund = await db.run(lambda s: request_refund(
        s, order_id, amount=amount, reason=None, requested_by="staff:a", now=utcnow(),
        idempotency_key=key))
    assert await db.run(lambda s: complete_refund(s, order_id, _succeeded(refund), utcnow())) \
        == "refunded"
    return refund


async def _as_before_credit_notes(db: Database, completed: dict[uuid.UUID, datetime]) -> None:
    """What migration 0015 found: done refunds without a number, and no counter of theirs."""
    async def run(s: Any) -> None:
        await s.execute(update(Refund).values(credit_note_number=None))
        await s.execute(delete(ReceiptCounter).where(ReceiptCounter.name.startswith("credit_note")))
        for refund_id, at in completed.items():
            await s.execute(update(Refund).where(Refund.id == refund_id).values(completed_at=at))
    await db.run(run)


async def _numbers(db: Database) -> dict[uuid.UUID, str | None]:
    async with db.read() as s:
        rows = (await s.execute(select(Refund.id, Refund.credit_note_number))).all()
    return {r[0]: r[1] for r in rows}


async def _counter(db: Database, year: int) -> int | None:
    async with db.read() as s:
        row = await s.get(ReceiptCounter, f"credit_note:{year}")
    return row.value if row is not None else None


async def _jobs(db: Database, kind: str) -> list[OutboxJob]:
    async with db.read() as s:
        return list((await s.execute(select(OutboxJob).where(OutboxJob.kind == kind))).scalars())


async def _audits(db: Database) -> list[AuditEntry]:
    async with db.read() as s:
        return list((await s.execute(select(AuditEntry).where(
            AuditEntry.action == "credit_note.backfill").order_by(AuditEntry.at))).scalars())


# --- refunds done before credit notes ---------------------------------------------------------


async def test_the_backfill_numbers_old_refunds_by_completion_in_their_years_series(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """Three refunds done before credit notes, completed last year, this year, and this year a
    day earlier than the one made before it: numbered by completion, each in its completion
    year's series, from 1; a refund of a payment never credited gets none; read one at a time
    (`batch_size=1`) the pages lose nothing. The dry run counts and numbers nothing."""
    payer = await new_payer(db, settings)
    first, second = [await _credited(client, settings, payer) for _ in range(2)]
    a = await _done_refund(db, first, 500, "a")
    b = await _done_refund(db, first, 500, "b")
    c = await _done_refund(db, second, 700, "c")
    uncredited = await _uncredited(client, db, settings, payer)
    u = await _done_refund(db, uncredited, 1999, "u")
    year = utcnow().year
    await _as_before_credit_notes(db, {
        a.id: datetime(year - 1, 12, 31, 23, 30, tzinfo=UTC),
        b.id: datetime(year, 1, 3, 9, 0, tzinfo=UTC),
        c.id: datetime(year, 1, 2, 9, 0, tzinfo=UTC),
        u.id: datetime(year, 1, 1, 9, 0, tzinfo=UTC),
    })

    dry = await backfill_credit_notes(db, ACTOR, dry_run=True, batch_size=1)
    assert (dry.due, dry.numbered, dry.none_due, dry.count) == ({year - 1: 1, year: 2}, {}, 1, 3)
    assert set((await _numbers(db)).values()) == {None}
    assert await _counter(db, year) is None and await _audits(db) == []

    done = await backfill_credit_notes(db, ACTOR, batch_size=1)
    assert done.numbered == {year - 1: [f"C{year - 1}-000001"],
                             year: [f"C{year}-000001", f"C{year}-000002"]}
    assert (done.count, done.none_due) == (3, 1)
    numbers = await _numbers(db)
    assert numbers == {a.id: f"C{year - 1}-000001", c.id: f"C{year}-000001",
                       b.id: f"C{year}-000002", u.id: None}
    assert (await _counter(db, year - 1), await _counter(db, year)) == (1, 2)
    # The order's receipt it corrects is the one issued; the credit note is there to read.
    assert (await order_row(db, first)).receipt_number is not None
    r = await client.get(f"/api/v1/refunds/{c.id}/credit-note",
                         headers={**payer.auth, "Accept": "application/json"})
    assert r.status_code == 200 and r.json()["number"] == f"C{year}-000001", r.text

    audits = await _audits(db)
    assert [(e.target_id, e.after) for e in audits] == [
        (str(a.id), {"credit_note_number": f"C{year - 1}-000001"}),
        (str(c.id), {"credit_note_number": f"C{year}-000001"}),
        (str(b.id), {"credit_note_number": f"C{year}-000002"}),
    ]
    assert {e.actor for e in audits} == {f"cli:{getpass.getuser()}"}

    again = await backfill_credit_notes(db, ACTOR)
    assert (again.count, again.numbered, again.none_due) == (0, {}, 1)
    assert await _numbers(db) == numbers and await _counter(db, year) == 2
    assert len(await _audits(db)) == 3
    await assert_ledger_balanced(db)


async def test_the_backfill_emails_nothing(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """The payer was told of the refund when it was done: numbering its credit note now writes
    no job (no credit note e-mail, no notice), and a worker run after it sends nothing."""
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer)
    refund = await _done_refund(db, order, 500, "k")
    await run_worker(app, db, settings)  # the receipt and the refund's own messages
    await _as_before_credit_notes(db, {})
    inbox.messages.clear()
    jobs = len(await _jobs(db, CREDIT_NOTE_JOB)), len(await _jobs(db, DELIVER))
    assert (await backfill_credit_notes(db, ACTOR)).count == 1
    assert (len(await _jobs(db, CREDIT_NOTE_JOB)), len(await _jobs(db, DELIVER))) == jobs
    await run_worker(app, db, settings)
    assert inbox.to(payer.email) == []
    assert (await _numbers(db))[refund.id] == f"C{utcnow().year}-000001"


async def test_the_backfill_skips_a_refund_numbered_meanwhile(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A payer asking for an old refund's credit note numbers it (as before); the backfill then
    leaves it as it is and counts it nowhere, and takes the next number for the other."""
    payer = await new_payer(db, settings)
    order = await _credited(client, settings, payer)
    a = await _done_refund(db, order, 500, "a")
    b = await _done_refund(db, order, 500, "b")
    await _as_before_credit_notes(db, {})
    year = utcnow().year
    assert await db.run(lambda s: issue_credit_note(s, b.id, utcnow())) == f"C{year}-000001"
    done = await backfill_credit_notes(db, ACTOR)
    assert (done.numbered, done.none_due) == ({year: [f"C{year}-000002"]}, 0)
    assert (await _numbers(db))[a.id] == f"C{year}-000002"
    assert [e.target_id for e in await _audits(db)] == [str(a.id)]


@pytest.mark.postgres_only
async def test_the_backfill_beside_live_completions_leaves_no_gap_and_no_twice(
    fresh_db: Database, settings: Settings
) -> None:
    """On PostgreSQL, real connections: the backfill (two at once, pages of 2) numbers nine old
    refunds while the worker completes four new ones and a payer asks for an old one's credit
    note — every done refund one number, the year's series 1…13 without a gap."""
    db = fresh_db
    await db.run(load_demo_catalog)
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        payer = await new_payer(db, settings)
        orders = [await _credited(client, settings, payer, plan="explorer-50") for _ in range(4)]
    old = [await _done_refund(db, orders[n % 4], 300, f"old{n}") for n in range(9)]
    await _as_before_credit_notes(db, {})
    live = [
        await db.run(functools.partial(
            request_refund, order_id=orders[n], amount=300, reason=None, requested_by="staff:a",
            now=utcnow(), idempotency_key=f"live{n}"))
        for n in range(4)
    ]

    async def complete(refund: Refund) -> str:
        return await db.run(
            lambda s: complete_refund(s, refund.order_id, _succeeded(refund), utcnow()))

    await asyncio.gather(
        backfill_credit_notes(db, ACTOR, batch_size=2),
        backfill_credit_notes(db, ACTOR, batch_size=2),
        *(complete(r) for r in live),
        db.run(lambda s: issue_credit_note(s, old[4].id, utcnow())),
    )
    year = utcnow().year
    numbers = await _numbers(db)
    assert None not in numbers.values()
    assert sorted(n for n in numbers.values() if n) == [f"C{year}-{n:06d}" for n in range(1, 14)]
    assert await _counter(db, year) == 13
    # Each number the backfill gave is audited once, whichever of the two runs gave it.
    audited = [e.target_id for e in await _audits(db)]
    assert len(audited) == len(set(audited)) and len(audited) <= 9
    assert (await backfill_credit_notes(db, ACTOR)).count == 0
    await assert_ledger_balanced(db)


def test_simcharge_receipts_backfill_credit_notes(cli_env: str) -> None:
    """The command: `--dry-run` says what it would number, by year; then it numbers, says how
    many, audits as the OS user; run again, nothing new. A batch size of 0 is refused (exit 2)."""
    settings = get_settings()

    async def prepare() -> tuple[uuid.UUID, uuid.UUID]:
        db = Database.from_url(cli_env)
        try:
            await db.run(load_demo_catalog)
            app = create_app(settings, db=db, run_worker=False)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://testserver") as client:
                payer = await new_payer(db, settings)
                order = await _credited(client, settings, payer)
                uncredited = await _uncredited(client, db, settings, payer)
            refund = await _done_refund(db, order, 500, "cli")
            await _done_refund(db, uncredited, 1999, "cli-u")
            await _as_before_credit_notes(db, {})
            return refund.id, order
        finally:
            await db.dispose()

    refund_id, _ = asyncio.run(prepare())
    year = utcnow().year
    code, out = invoke("receipts", "backfill-credit-notes", "--batch-size", "0")
    assert code == 2, out
    code, out = invoke("receipts", "backfill-credit-notes", "--dry-run")
    assert code == 0, out
    assert f"  {year}  1\n" in out and "would number 1 credit note(s); 1 done refund(s) get none" \
        in out, out
    code, out = invoke("receipts", "backfill-credit-notes")
    assert code == 0, out
    assert f"  {year}  1: C{year}-000001" in out and "numbered 1 credit note(s)" in out, out
    code, out = invoke("receipts", "backfill-credit-notes")
    assert code == 0 and "numbered 0 credit note(s)" in out, out

    async def read() -> tuple[str | None, list[AuditEntry]]:
        db = Database.from_url(cli_env)
        try:
            return (await _numbers(db))[refund_id], await _audits(db)
        finally:
            await db.dispose()

    number, [entry] = asyncio.run(read())
    assert number == f"C{year}-000001"
    assert entry.actor == f"cli:{getpass.getuser()}" and entry.target_id == str(refund_id)
    assert entry.user_agent and entry.user_agent.startswith(
        "simcharge receipts backfill-credit-notes on ")


# --- refunds made at the provider -------------------------------------------------------------


def _dashboard_refund(settings: Settings, obj: dict[str, Any],
                      event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    return signed_event(settings, "refund.succeeded", obj, event_id=event_id)


async def test_a_refund_at_the_provider_tells_the_payer_once_with_its_credit_note(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """A refund made in the provider's dashboard: the payer gets the refund's e-mail with the
    credit note attached (and the portal notice). The same notification again (same event), and
    the same refund in a new notification, and the payment's status reporting the same total:
    nothing more is sent."""
    payer = await new_payer(db, settings)
    oid = await _credited(client, settings, payer)
    await run_worker(app, db, settings)
    inbox.messages.clear()
    row = await order_row(db, oid)
    obj = await sandbox_object(db, row.reference, refunded=700, refund_id="dashboard-1",
                               refund_amount=700)
    body, headers = _dashboard_refund(settings, obj, event_id="evt_dash_1")
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code == 200, r.text
    await run_worker(app, db, settings)
    year = utcnow().year
    [mail] = inbox.to(payer.email)
    assert f"C{year}-000001" in str(mail["Subject"]) and "$7.00" in str(mail["Subject"])
    plain = mail.get_body(preferencelist=("plain",))
    assert plain is not None and row.receipt_number is not None
    text = plain.get_content()
    assert "attached" in text and row.receipt_number in text, text
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == f"credit-note-C{year}-000001.pdf"
    notices = await _jobs(db, DELIVER)
    told = [j for j in notices if j.payload["template"] == "order.refunded"]
    assert len(told) == 1 and "email" not in told[0].payload["channels"]

    # Again: the same event, the same refund under a new event, and the status's total.
    for body, headers in (_dashboard_refund(settings, obj, event_id="evt_dash_1"),
                          _dashboard_refund(settings, obj, event_id="evt_dash_2")):
        r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
        assert r.status_code == 200, r.text
    status = PaymentStatus(PaymentState.partially_refunded, row.reference, None, None, 2000,
                           "USD", None, None, {}, refunded_amount=700)

    async def reported(s: Any) -> bool:
        locked = await s.get(Order, oid, with_for_update=True)
        return await note_refunded_status(s, locked, status, source="query", now=utcnow())

    assert await db.run(reported) is False
    await run_worker(app, db, settings)
    assert len(inbox.to(payer.email)) == 1
    assert len([j for j in await _jobs(db, DELIVER)
                if j.payload["template"] == "order.refunded"]) == 1
    assert len(await _jobs(db, CREDIT_NOTE_JOB)) == 1
    async with db.read() as s:
        refunds = (await s.execute(select(func.count()).select_from(Refund).where(
            Refund.order_id == oid))).scalar_one()
    assert refunds == 1 and (await order_row(db, oid)).refunded_amount == 700
    await assert_ledger_balanced(db)


async def test_a_refund_at_the_provider_of_an_uncredited_payment_is_told_without_credit_note(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """No receipt, so no credit note: the refund's notice goes by every channel at once, as
    one of ours does."""
    payer = await new_payer(db, settings)
    oid = await _uncredited(client, db, settings, payer)
    row = await order_row(db, oid)
    obj = await sandbox_object(db, row.reference, amount=1999, refunded=1999,
                               refund_id="dashboard-u", refund_amount=1999)
    body, headers = _dashboard_refund(settings, obj)
    assert (await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
            ).status_code == 200
    await run_worker(app, db, settings)
    [mail] = [m for m in inbox.to(payer.email) if "19.99" in str(m["Subject"])]
    assert not list(mail.iter_attachments())
    assert await _jobs(db, CREDIT_NOTE_JOB) == []


async def test_a_reversal_or_a_disputed_payment_refunded_is_not_announced(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """A chargeback the provider settled (PayPal's `PAYMENT.CAPTURE.REVERSED`), and money given
    back at the provider for a payment the payer disputed: recorded, numbered (finance's
    record), flagged — but no "we refunded" message to the payer."""
    payer = await new_payer(db, settings)
    reversed_, disputed = [await _credited(client, settings, payer) for _ in range(2)]
    await run_worker(app, db, settings)
    inbox.messages.clear()
    before = len(await _jobs(db, DELIVER))
    news = RefundResult(refund_id="8RU1", provider_refund_id="8RU1", state=RefundState.succeeded,
                        amount=2000, currency="USD", raw={})
    assert await db.run(lambda s: refund_not_ours(
        s, reversed_, news, utcnow(), source="webhook:WH-1", what="PAYMENT.CAPTURE.REVERSED"
    )) == "provider_refund"
    def dispute(s: Any) -> Any:
        s.add(ProviderEvent(provider="stripe", event_id="evt_du_1",
                            event_type="charge.dispute.created", order_id=disputed, payload={}))
        return s.flush()

    await db.run(dispute)
    news = RefundResult(refund_id="re_2", provider_refund_id="re_2", state=RefundState.succeeded,
                        amount=500, currency="USD", raw={})
    assert await db.run(lambda s: refund_not_ours(
        s, disputed, news, utcnow(), source="webhook:evt_2", what="charge.refunded"
    )) == "provider_refund"
    await run_worker(app, db, settings)
    assert inbox.to(payer.email) == []
    assert len(await _jobs(db, DELIVER)) == before and await _jobs(db, CREDIT_NOTE_JOB) == []
    numbers = [n for n in (await _numbers(db)).values() if n]
    assert len(numbers) == 2
    for oid in (reversed_, disputed):
        assert (await order_row(db, oid)).attention == "provider_refund"


async def test_a_refund_reported_before_its_payment_is_told_once_its_money_is_posted(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """Nothing is said while the refund waits for its payment (nothing posted, no credit note);
    told once the payment is known and its money posted."""
    payer = await new_payer(db, settings)
    order = await place(client, payer, plan="traveller-20")
    oid = uuid.UUID(order["id"])
    news = RefundResult(refund_id="re_early", provider_refund_id="re_early",
                        state=RefundState.succeeded, amount=600, currency="USD", raw={})
    assert await db.run(lambda s: refund_not_ours(
        s, oid, news, utcnow(), source="webhook:evt_e", what="charge.refunded"
    )) == "provider_refund"
    await run_worker(app, db, settings)
    assert [j for j in await _jobs(db, DELIVER) if j.payload["template"] == "order.refunded"] == []
    await pay_at_sandbox(client, settings, order)
    await client.post(f"/api/v1/orders/{oid}/check", headers=payer.auth)
    await run_worker(app, db, settings)
    row = await order_row(db, oid)
    assert row.refunded_amount == 600
    told = [m for m in inbox.to(payer.email) if "$6.00" in str(m["Subject"])]
    assert len(told) == 1, [str(m["Subject"]) for m in inbox.to(payer.email)]
    await assert_ledger_balanced(db)


async def test_order_rows_are_untouched_by_a_dry_run(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """A dry run locks and writes nothing: the orders keep their receipts as they were (an
    order credited but whose receipt the worker has not numbered yet stays unnumbered)."""
    payer = await new_payer(db, settings)
    oid = await _credited(client, settings, payer)
    await _done_refund(db, oid, 500, "d")
    await _as_before_credit_notes(db, {})
    await db.run(lambda s: s.execute(update(Order).where(Order.id == oid).values(
        receipt_number=None)))
    dry = await backfill_credit_notes(db, ACTOR, dry_run=True)
    assert dry.count == 1
    assert (await order_row(db, oid)).receipt_number is None
    assert await _counter(db, utcnow().year) is None
