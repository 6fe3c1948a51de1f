"""Every worker job run twice: the outbox is at least once — a worker may die after a handler's
effect and before the job is marked done, and the job runs again once its lease has run out (or,
its worker stalled past the lease, while the first run still goes on). The outcome is as after
one run: no second e-mail or SMS, no second provider call that would double an effect, no
second ledger transfer, no second receipt number, the ledger balanced.

Each test runs the job the way the worker does (`service.claim`, the registered handler, then
`service.finish`): a first worker runs it and dies before marking it done, its lease runs out,
a second worker claims it (attempt 2) and runs it to the end.

What was wrong (the tests that failed before this round's fixes):

- `test_a_dead_email_job_retried_by_staff_sends_its_message`: an e-mail or SMS job that used up
  its attempts on a transient failure (the SMTP server down for hours) logged the message as
  `failed` under the job's log id, and was buried. Retried from the back office once the server
  was back ("back in the queue now, attempts from zero"), it found that log row, took it for
  "already sent", sent nothing and ended `done`: the customer never got the message and nothing
  said so. The run after a `failed` log now sends, and the row says `sent`.
- `test_a_stale_worker_failing_does_not_undo_a_staff_retry`: `service.fail` rescheduled or
  buried a job by id and worker alone, whatever its state. A worker stalled past its lease on
  the last attempt, whose job the next claim buried as abandoned and staff then retried, buried
  it again when its own run failed at last — the retry silently undone, the job dead with the
  stale worker's error. Like `finish`, `renew` and `release`, it now touches only a job still
  running under that worker.
- `test_a_worker_whose_lease_ran_out_does_not_run_its_own_job_a_second_time`: a job whose lease
  ran out while its first run was still going (the renewals failed: a busy or unreachable
  database) was claimed back by the same worker — the only one in the embedded mode — which
  started a second run beside the first. Both kept running (the lease, renewed under the same
  worker id, looked like theirs), so every effect of the handler was done twice at once. The
  worker now keeps the run in hand under the lease it took back and starts no second one.

The others held on the code as it was; they stay as guards (a code's job retried after burial
must not end `done` on an old `failed` row either: its sealed code is gone, so it ends dead).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.kit.crypto import seal
from simcharge.kit.ids import uuid7
from simcharge.ledger.models import LedgerTransfer, TransferKind
from simcharge.ledger.service import NewTransfer, post_transfers
from simcharge.lines.service import UnitGrant
from simcharge.notifications.models import MessageLog, Notice
from simcharge.notifications.service import notify
from simcharge.orders.models import Order, ReceiptCounter, Refund, SandboxPayment
from simcharge.orders.refunds import request_refund
from simcharge.payments.sandbox import DELIVER_WEBHOOK
from simcharge.worker import service
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.registry import JobContext
from simcharge.worker.runner import Worker, load_jobs
from tests.conftest import SmtpInbox
from tests.factories import create_account, create_ledger_account, ledger_account, load_demo_catalog
from tests.orders.helpers import assert_ledger_balanced, new_payer, pay_at_sandbox, place

REGISTRY = load_jobs()


# --- running a job as the worker does -----------------------------------------------------------


async def enqueue(db: Database, kind: str, payload: dict[str, Any]) -> uuid.UUID:
    key = f"twice:{kind}:{uuid.uuid4()}"

    async def write(s: AsyncSession) -> uuid.UUID:
        assert await service.enqueue(s, kind, payload, dedupe_key=key)
        found = await s.execute(select(OutboxJob.id).where(OutboxJob.dedupe_key == key))
        return found.scalar_one()

    return await db.run(write)


async def claim_all(db: Database, kind: str, worker_id: str) -> list[service.ClaimedJob]:
    """Every due job of `kind`, claimed by `worker_id` (in the order the worker takes them)."""
    claimed = await db.run(lambda s: service.claim(s, worker_id, 100, kinds={kind}))
    assert claimed, f"no {kind} job due"
    return claimed


async def claim(db: Database, kind: str, worker_id: str) -> service.ClaimedJob:
    """The one due job of `kind`, claimed by `worker_id`."""
    claimed = await claim_all(db, kind, worker_id)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def run(
    db: Database, settings: Settings, job: service.ClaimedJob, http: httpx.AsyncClient
) -> None:
    await REGISTRY.handlers[job.kind](JobContext(db, settings, job, http, {}), job.payload)


async def lease_runs_out(db: Database, job_id: uuid.UUID) -> None:
    await db.run(
        lambda s: s.execute(
            update(OutboxJob)
            .where(OutboxJob.id == job_id)
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
    )


async def run_twice(
    db: Database, settings: Settings, kind: str, http: httpx.AsyncClient
) -> list[service.ClaimedJob]:
    """Run the due jobs of `kind` on a worker that dies before marking them done, then — their
    leases run out — on another that finishes them. Returns the second claims."""
    first = await claim_all(db, kind, "dies")
    for job in first:
        await run(db, settings, job, http)
    for job in first:
        await lease_runs_out(db, job.id)
    second = await claim_all(db, kind, "finishes")
    assert sorted((j.id, j.attempts) for j in second) == sorted((j.id, 2) for j in first)
    scrub = kind in REGISTRY.scrubbed
    for job in second:
        await run(db, settings, job, http)
        await db.run(lambda s, j=job: service.finish(s, j.id, "finishes", scrub=scrub))
    async with db.read() as s:
        for job in second:
            row = await s.get(OutboxJob, job.id)
            assert row is not None and row.status == JobStatus.done
    return second


async def jobs_of(db: Database, kind: str) -> list[OutboxJob]:
    async with db.read() as s:
        return list((await s.execute(select(OutboxJob).where(OutboxJob.kind == kind))).scalars())


async def transfers(db: Database, **where: Any) -> list[LedgerTransfer]:
    async with db.read() as s:
        stmt = select(LedgerTransfer)
        for name, value in where.items():
            stmt = stmt.where(getattr(LedgerTransfer, name) == value)
        return list((await s.execute(stmt)).scalars())


@pytest.fixture
async def http(db: Database, settings: Settings) -> Any:
    """The worker's HTTP client, reaching the app (the sandbox's webhooks)."""
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


# --- the ledger, the outbox, charging -----------------------------------------------------------


async def test_expire_pending_run_twice_releases_once(
    db: Database, settings: Settings, http: httpx.AsyncClient
) -> None:
    async def reserve(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID]:
        a, b = await create_ledger_account(s), await create_ledger_account(s)
        await post_transfers(
            s, [NewTransfer(uuid7(), 500, "USD", a, b, kind=TransferKind.pending, timeout_s=1)]
        )
        return a, b

    a, b = await db.run(reserve)
    clock.freeze(utcnow() + timedelta(seconds=5))
    await enqueue(db, "ledger.expire_pending", {})
    await run_twice(db, settings, "ledger.expire_pending", http)
    assert len(await transfers(db, kind=TransferKind.expire_pending.value)) == 1
    async with db.read() as s:
        debtor, creditor = await ledger_account(s, a), await ledger_account(s, b)
    assert (debtor.debits_pending, debtor.debits_posted, creditor.credits_pending) == (0, 0, 0)


async def test_prune_run_twice_forgets_old_jobs_once_and_keeps_the_rest(
    db: Database, settings: Settings, http: httpx.AsyncClient
) -> None:
    old, recent = await enqueue(db, "x.old", {}), await enqueue(db, "x.recent", {})
    now = utcnow()
    for job_id, finished in ((old, now - timedelta(days=8)), (recent, now - timedelta(days=6))):
        await db.run(
            lambda s, j=job_id, f=finished: s.execute(
                update(OutboxJob).where(OutboxJob.id == j).values(status="done", finished_at=f)
            )
        )
    await enqueue(db, "outbox.prune", {})
    await run_twice(db, settings, "outbox.prune", http)
    async with db.read() as s:
        assert await s.get(OutboxJob, old) is None
        assert await s.get(OutboxJob, recent) is not None


async def test_expire_sessions_run_twice_releases_a_session_once(
    db: Database, settings: Settings, http: httpx.AsyncClient
) -> None:
    from simcharge.charging.models import ChargingSession, SessionState
    from tests.charging.helpers import MIB, balances, body, make_line, nchf, rg

    DATA = 200  # the demo catalog's data rating group

    t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
    api = await nchf(http, db)
    r = await api.create(body(t.supi, 0, [rg(DATA, requested={"totalVolume": 10 * MIB})]))
    assert r.status_code == 201, r.text
    async with db.transaction() as s:
        for cs in (await s.execute(select(ChargingSession))).scalars():
            cs.deadline = utcnow() - timedelta(seconds=1)
    await enqueue(db, "charging.expire_sessions", {})
    await run_twice(db, settings, "charging.expire_sessions", http)
    async with db.read() as s:
        states = (await s.execute(select(ChargingSession.state))).scalars().all()
    assert states == [SessionState.timed_out.value]
    assert len(await transfers(db, kind=TransferKind.void_pending.value)) == 1
    assert (await balances(db, t.line)).units[0].remaining == 100 * MIB
    await assert_ledger_balanced(db)


@pytest.mark.postgres_only
async def test_the_ledger_and_charging_sweeps_run_by_two_workers_at_once_release_once(
    fresh_db: Database, settings: Settings
) -> None:
    """A worker stalled past its lease and the one that took the job over both run it."""
    from simcharge.charging.models import ChargingSession
    from tests.charging.helpers import MIB, balances, body, make_line, nchf, rg

    db = fresh_db

    async def reserve(s: AsyncSession) -> list[uuid.UUID]:
        a, b = await create_ledger_account(s), await create_ledger_account(s)
        held = [
            NewTransfer(uuid7(), 5, "USD", a, b, kind=TransferKind.pending, timeout_s=1)
            for _ in range(30)
        ]
        await post_transfers(s, held)
        return [a, b]

    a, _b = await db.run(reserve)
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        t = await make_line(db, grants=[UnitGrant("DATA_B", 100 * MIB, 30)])
        api = await nchf(client, db)
        for n in range(5):
            r = await api.create(
                body(t.supi, 0, [rg(200, requested={"totalVolume": MIB})]) | {"chargingId": n}
            )
            assert r.status_code == 201, r.text
        async with db.transaction() as s:
            for cs in (await s.execute(select(ChargingSession))).scalars():
                cs.deadline = utcnow() - timedelta(seconds=1)
        clock.freeze(utcnow() + timedelta(seconds=5))
        for kind in ("ledger.expire_pending", "charging.expire_sessions"):
            await enqueue(db, kind, {})
            first = await claim(db, kind, "stalled")
            await lease_runs_out(db, first.id)
            second = await claim(db, kind, "newcomer")
            outcomes = await asyncio.gather(
                run(db, settings, first, client),
                run(db, settings, second, client),
                return_exceptions=True,
            )
            assert [o for o in outcomes if o is not None] == []
    assert len(await transfers(db, kind=TransferKind.expire_pending.value)) == 30
    assert len(await transfers(db, kind=TransferKind.void_pending.value)) == 5
    async with db.read() as s:
        debtor = await ledger_account(s, a)
    assert (debtor.debits_pending, debtor.debits_posted) == (0, 0)
    assert (await balances(db, t.line)).units[0].remaining == 100 * MIB
    await assert_ledger_balanced(db)


# --- notifications ------------------------------------------------------------------------------


async def account(db: Database) -> uuid.UUID:
    async def make(s: AsyncSession) -> uuid.UUID:
        a = await create_account(
            s,
            email=f"twice{uuid.uuid4().hex[:8]}@example.com",
            email_verified_at=utcnow(),
            phone="+14155552001",
            phone_verified_at=utcnow(),
        )
        return a.id

    return await db.run(make)


async def message_log(db: Database, account_id: uuid.UUID) -> list[tuple[str, str]]:
    async with db.read() as s:
        rows = await s.execute(
            select(MessageLog.channel, MessageLog.status).where(
                MessageLog.account_id == account_id
            )
        )
        return sorted((c, st) for c, st in rows)


async def test_deliver_and_its_channels_run_twice_write_and_send_once(
    db: Database, settings: Settings, http: httpx.AsyncClient, inbox: SmtpInbox
) -> None:
    from simcharge.notifications.transports import dev_mailbox

    account_id = await account(db)
    await db.run(lambda s: notify(s, account_id=account_id, template="security.password_changed"))
    await run_twice(db, settings, "notifications.deliver", http)
    assert len(await jobs_of(db, "notifications.email")) == 1
    assert len(await jobs_of(db, "notifications.sms")) == 1
    await run_twice(db, settings, "notifications.email", http)
    await run_twice(db, settings, "notifications.sms", http)
    async with db.read() as s:
        notices = (await s.execute(select(Notice).where(Notice.account_id == account_id))).all()
    assert len(notices) == 1
    assert len(inbox.messages) == 1
    assert len([m for m in dev_mailbox if m.channel == "sms"]) == 1
    assert await message_log(db, account_id) == [("email", "sent"), ("sms", "sent")]


async def code_job(db: Database, settings: Settings, account_id: uuid.UUID, to: str) -> None:
    sealed = seal(settings.secret_key, "outbox-code", b"123456")
    payload = {
        "account_id": str(account_id),
        "channel": "email",
        "purpose": "verify_email",
        "target": to,
        "language": "en",
        "sealed": sealed,
    }
    await enqueue(db, "notifications.code", payload)


async def test_a_code_job_run_twice_sends_one_code(
    db: Database, settings: Settings, http: httpx.AsyncClient, inbox: SmtpInbox
) -> None:
    account_id = await account(db)
    to = f"code{uuid.uuid4().hex[:6]}@example.com"
    await code_job(db, settings, account_id, to)
    await run_twice(db, settings, "notifications.code", http)
    assert len(inbox.to(to)) == 1 and inbox.last_code(to) == "123456"
    [row] = await jobs_of(db, "notifications.code")
    assert row.payload == {}  # emptied once done: no code outlives its job


async def _kill_smtp(settings: Settings) -> Settings:
    # A port nothing listens on: the SMTP server is down (a transient failure).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return settings.model_copy(update={"smtp_port": port})


async def test_a_dead_email_job_retried_by_staff_sends_its_message(
    db: Database, settings: Settings, http: httpx.AsyncClient, inbox: SmtpInbox
) -> None:
    """Its last attempt failed for now (the server down): buried, logged `failed`. Retried once
    the server is back, it sends, and its log row says `sent` (one row: the job's)."""
    account_id = await account(db)
    await db.run(
        lambda s: notify(
            s, account_id=account_id, template="security.password_changed", channels=["email"]
        )
    )
    await run_twice(db, settings, "notifications.deliver", http)
    down = await _kill_smtp(settings)
    await db.run(
        lambda s: s.execute(
            update(OutboxJob).where(OutboxJob.kind == "notifications.email").values(max_attempts=1)
        )
    )
    worker = Worker(db, down, concurrency=1)
    await worker.drain()
    await worker.close()
    [job] = await jobs_of(db, "notifications.email")
    assert job.status == JobStatus.dead
    assert await message_log(db, account_id) == [("email", "failed")]
    assert inbox.messages == []

    assert await db.run(lambda s: service.requeue_dead(s, job.id))  # staff's retry
    worker = Worker(db, settings, concurrency=1)
    await worker.drain()
    await worker.close()
    [job] = await jobs_of(db, "notifications.email")
    assert job.status == JobStatus.done
    assert len(inbox.messages) == 1
    assert await message_log(db, account_id) == [("email", "sent")]


async def test_a_dead_code_job_retried_does_not_hide_its_failure(
    db: Database, settings: Settings, http: httpx.AsyncClient, inbox: SmtpInbox
) -> None:
    """A code's job buried after failing for now has lost its sealed code: retried, it cannot
    send it, and says so (dead again), instead of ending `done` on the old `failed` row."""
    account_id = await account(db)
    to = f"code{uuid.uuid4().hex[:6]}@example.com"
    await code_job(db, settings, account_id, to)
    await db.run(
        lambda s: s.execute(
            update(OutboxJob).where(OutboxJob.kind == "notifications.code").values(max_attempts=1)
        )
    )
    worker = Worker(db, await _kill_smtp(settings), concurrency=1)
    await worker.drain()
    await worker.close()
    [job] = await jobs_of(db, "notifications.code")
    assert (job.status, job.payload) == (JobStatus.dead, {})
    assert await db.run(lambda s: service.requeue_dead(s, job.id))
    worker = Worker(db, settings, concurrency=1)
    await worker.drain()
    await worker.close()
    [job] = await jobs_of(db, "notifications.code")
    assert job.status == JobStatus.dead
    assert inbox.messages == []


# --- payments -----------------------------------------------------------------------------------


async def paid_order(
    db: Database, settings: Settings, http: httpx.AsyncClient, *, credit: bool = True
) -> tuple[dict[str, Any], Any]:
    """A traveller-20 order (20.00 USD) paid at the sandbox; credited (`check`) when `credit`."""
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    order = await place(http, payer, plan="traveller-20")
    await pay_at_sandbox(http, settings, order)
    if credit:
        r = await http.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
        assert r.json()["state"] == "fulfilled", r.text
    return order, payer


async def grants_of(db: Database, order_id: str) -> list[LedgerTransfer]:
    return [
        t
        for t in await transfers(db)
        if t.reference is not None and order_id in t.reference and t.code != "refund"
    ]


async def test_deliver_webhook_run_twice_credits_once(
    db: Database, settings: Settings, http: httpx.AsyncClient
) -> None:
    """The sandbox's webhook sent twice (a provider sends copies too): credited once."""
    order, _ = await paid_order(db, settings, http, credit=False)
    await run_twice(db, settings, DELIVER_WEBHOOK, http)
    async with db.read() as s:
        row = await s.get(Order, uuid.UUID(order["id"]))
        assert row is not None and row.state == "fulfilled"
    assert len(await jobs_of(db, "orders.receipt")) == 1
    await assert_ledger_balanced(db)


async def test_capture_run_twice_credits_once(
    db: Database, settings: Settings, http: httpx.AsyncClient
) -> None:
    from simcharge.payments.webhooks import CAPTURE_JOB

    order, _ = await paid_order(db, settings, http, credit=False)
    await enqueue(db, CAPTURE_JOB, {"order_id": order["id"]})
    await run_twice(db, settings, CAPTURE_JOB, http)
    async with db.read() as s:
        row = await s.get(Order, uuid.UUID(order["id"]))
        assert row is not None and row.state == "fulfilled"
    assert len(await jobs_of(db, "orders.receipt")) == 1
    counted = len(await transfers(db))
    await enqueue(db, CAPTURE_JOB, {"order_id": order["id"]})
    await run_twice(db, settings, CAPTURE_JOB, http)
    assert len(await transfers(db)) == counted
    await assert_ledger_balanced(db)


async def test_reconcile_run_twice_credits_once(
    db: Database, settings: Settings, http: httpx.AsyncClient
) -> None:
    from simcharge.orders.models import Payment

    order, _ = await paid_order(db, settings, http, credit=False)
    await db.run(
        lambda s: s.execute(
            update(Payment)
            .where(Payment.order_id == uuid.UUID(order["id"]))
            .values(next_check_at=utcnow() - timedelta(seconds=1))
        )
    )
    await enqueue(db, "payments.reconcile", {})
    await run_twice(db, settings, "payments.reconcile", http)
    async with db.read() as s:
        row = await s.get(Order, uuid.UUID(order["id"]))
        assert row is not None and row.state == "fulfilled"
    assert len(await jobs_of(db, "orders.receipt")) == 1
    await assert_ledger_balanced(db)


async def test_receipt_run_twice_numbers_and_mails_once(
    db: Database, settings: Settings, http: httpx.AsyncClient, inbox: SmtpInbox
) -> None:
    order, payer = await paid_order(db, settings, http)
    await run_twice(db, settings, "orders.receipt", http)
    async with db.read() as s:
        row = await s.get(Order, uuid.UUID(order["id"]))
        counters = (await s.execute(select(func.sum(ReceiptCounter.value)))).scalar_one()
    assert row is not None and row.receipt_number is not None
    assert counters == 1
    mails = inbox.to(payer.email)
    assert len(mails) == 1
    [attached] = [p.get_filename() for p in mails[0].iter_attachments()]
    assert attached == f"receipt-{row.receipt_number}.pdf"


async def refund_job(db: Database, order: dict[str, Any], key: str = "k1") -> Refund:
    oid = uuid.UUID(order["id"])
    return await db.run(
        lambda s: request_refund(
            s, oid, amount=None, reason="twice", requested_by="staff:t", now=utcnow(),
            idempotency_key=key,
        )
    )


async def refunded_state(db: Database, order: dict[str, Any]) -> tuple[Any, ...]:
    async with db.read() as s:
        row = await s.get(Order, uuid.UUID(order["id"]))
        assert row is not None
        sandbox = (
            await s.execute(
                select(SandboxPayment).where(SandboxPayment.reference == order["reference"])
            )
        ).scalar_one()
        states = (
            await s.execute(select(Refund.state).where(Refund.order_id == row.id))
        ).scalars().all()
    return row.state, row.refunded_amount, sandbox.refunded, len(sandbox.refunds), list(states)


async def test_refund_run_twice_refunds_once(
    db: Database, settings: Settings, http: httpx.AsyncClient
) -> None:
    order, _ = await paid_order(db, settings, http)
    await refund_job(db, order)
    await run_twice(db, settings, "payments.refund", http)
    assert await refunded_state(db, order) == ("refunded", 2000, 2000, 1, ["succeeded"])
    assert len(await transfers(db, code="refund")) >= 1
    posted = len(await transfers(db, code="refund"))
    await assert_ledger_balanced(db)
    # The sandbox's webhooks (the payment's and the refund's), twice each: nothing more.
    await run_twice(db, settings, DELIVER_WEBHOOK, http)
    assert len(await transfers(db, code="refund")) == posted
    assert await refunded_state(db, order) == ("refunded", 2000, 2000, 1, ["succeeded"])


@pytest.mark.postgres_only
async def test_refund_run_by_two_workers_at_once_refunds_once(
    fresh_db: Database, settings: Settings
) -> None:
    """A worker stalled past its lease and the one that took the job over both run it."""
    db = fresh_db
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        order, _ = await paid_order(db, settings, client)
        await refund_job(db, order)
        first = await claim(db, "payments.refund", "stalled")
        await lease_runs_out(db, first.id)
        second = await claim(db, "payments.refund", "newcomer")
        outcomes = await asyncio.gather(
            run(db, settings, first, client),
            run(db, settings, second, client),
            return_exceptions=True,
        )
        assert [o for o in outcomes if o is not None] == []
    assert await refunded_state(db, order) == ("refunded", 2000, 2000, 1, ["succeeded"])
    await assert_ledger_balanced(db)


@pytest.mark.postgres_only
async def test_reconcile_run_by_two_workers_at_once_credits_once(
    fresh_db: Database, settings: Settings
) -> None:
    from simcharge.orders.models import Payment

    db = fresh_db
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        order, _ = await paid_order(db, settings, client, credit=False)
        await db.run(
            lambda s: s.execute(
                update(Payment)
                .where(Payment.order_id == uuid.UUID(order["id"]))
                .values(next_check_at=utcnow() - timedelta(seconds=1))
            )
        )
        await enqueue(db, "payments.reconcile", {})
        first = await claim(db, "payments.reconcile", "stalled")
        await lease_runs_out(db, first.id)
        second = await claim(db, "payments.reconcile", "newcomer")
        outcomes = await asyncio.gather(
            run(db, settings, first, client),
            run(db, settings, second, client),
            return_exceptions=True,
        )
        assert [o for o in outcomes if o is not None] == []
    async with db.read() as s:
        row = await s.get(Order, uuid.UUID(order["id"]))
        assert row is not None and row.state == "fulfilled"
    assert len(await jobs_of(db, "orders.receipt")) == 1
    await assert_ledger_balanced(db)


# --- the lifecycle ------------------------------------------------------------------------------


async def test_sweep_and_its_warning_run_twice_move_and_warn_once(
    db: Database, settings: Settings, http: httpx.AsyncClient, inbox: SmtpInbox
) -> None:
    from tests.lifecycle.test_lifecycle import DAY, MINUTE, T, new_line, reload
    from tests.lifecycle.test_queued_warnings import FREEZE, IDLE_SINCE, notices_of

    # Passes start the day before; the line's freeze (inactivity) is 6.5 days away.
    clock.freeze(T - DAY)
    await enqueue(db, "lifecycle.sweep", {})
    await run_twice(db, settings, "lifecycle.sweep", http)
    line = await new_line(db, validity_end=T + 30 * DAY, last_activity_at=IDLE_SINCE)
    clock.freeze(T)
    await enqueue(db, "lifecycle.sweep", {})
    await run_twice(db, settings, "lifecycle.sweep", http)
    warnings = [
        j
        for j in await jobs_of(db, "lifecycle.warning")
        if j.payload.get("line_id") == str(line.id)
    ]
    assert len(warnings) == 1
    clock.freeze(T + MINUTE)
    await run_twice(db, settings, "lifecycle.warning", http)
    assert len(await jobs_of(db, "notifications.email")) == 1
    await run_twice(db, settings, "notifications.email", http)
    notices = await notices_of(db, line)
    assert [(t, p["freeze_on"]) for t, p in notices] == [
        ("line.freeze_warning", FREEZE.isoformat())
    ]
    assert len(inbox.messages) == 1
    assert (await reload(db, line)).state == "active"


# --- the lease ----------------------------------------------------------------------------------


async def test_a_stale_worker_failing_does_not_undo_a_staff_retry(db: Database) -> None:
    """On its last attempt the worker stalls past its lease; the next claim buries the job as
    abandoned; staff retry it. The stalled run then fails: the job stays in the queue."""
    job_id = await enqueue(db, "x.stale", {})
    await db.run(
        lambda s: s.execute(update(OutboxJob).where(OutboxJob.id == job_id).values(max_attempts=1))
    )
    [stale] = await db.run(lambda s: service.claim(s, "stalled", 1, kinds={"x.stale"}))
    await lease_runs_out(db, job_id)
    assert await db.run(lambda s: service.claim(s, "other", 1, kinds={"x.stale"})) == []
    async with db.read() as s:
        row = await s.get(OutboxJob, job_id)
        assert row is not None and row.status == JobStatus.dead
    assert await db.run(lambda s: service.requeue_dead(s, job_id))
    # Nothing changed, and the worker is told so (its metric says `lost`, not a retry).
    assert await db.run(lambda s: service.fail(s, stale, "stalled", "ValueError: late")) is None
    assert await db.run(lambda s: service.finish(s, job_id, "stalled")) is False
    async with db.read() as s:
        row = await s.get(OutboxJob, job_id, populate_existing=True)
        assert row is not None
        assert (row.status, row.attempts, row.last_error) == (
            JobStatus.pending,
            0,
            f"{service.ABANDONED}",
        )
    [again] = await db.run(lambda s: service.claim(s, "other", 1, kinds={"x.stale"}))
    assert again.id == job_id


async def test_a_worker_whose_lease_ran_out_does_not_run_its_own_job_a_second_time(
    fresh_db: Database, settings: Settings
) -> None:
    """The job runs; its lease runs out (the renewals failed: a busy database) and the same
    worker's next claim takes it back — as it would in the embedded mode, one worker alone. It
    keeps running once, under the lease taken back, and ends done."""
    from simcharge.worker.registry import Registry

    registry = Registry()
    starts: list[int] = []
    started, go_on = asyncio.Event(), asyncio.Event()

    @registry.job("slow")
    async def slow(ctx: JobContext, payload: dict[str, Any]) -> None:
        starts.append(ctx.job.attempts)
        started.set()
        await go_on.wait()

    db = fresh_db
    job_id = await enqueue(db, "slow", {})
    quick = settings.model_copy(update={"worker_poll_seconds": 0.02})
    worker = Worker(db, quick, registry=registry, concurrency=2, worker_id="alone")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    await lease_runs_out(db, job_id)

    async def attempts() -> int:
        async with db.read() as s:
            row = await s.get(OutboxJob, job_id, populate_existing=True)
            assert row is not None
            return row.attempts

    for _ in range(500):  # the worker's next poll takes the job back
        if await attempts() == 2:
            break
        await asyncio.sleep(0.02)
    assert await attempts() == 2
    for _ in range(10):  # what the worker does with its claim, one loop turn after it
        await asyncio.sleep(0.02)
    go_on.set()
    stop.set()
    await asyncio.wait_for(running, 10)
    assert starts == [1]
    async with db.read() as s:
        row = await s.get(OutboxJob, job_id)
        assert row is not None and (row.status, row.locked_by) == (JobStatus.done, "alone")
