"""Messages queued before an account's closure (review round 12).

What was wrong: a notification queued before the holder closed the account went out after it.
Its delivery wrote a portal notice for the closed account (whose notices the closure had just
deleted), and a channel's job already fanned out — carrying the address or number the closure
erased — e-mailed or texted it. Now every such job, as it runs, finds the account closed, does
nothing customer-facing, says why in the log (`notifications.closed_account_skipped`) and ends
`done` at its first attempt: never retried. The closure's own confirmation (`account.closed`,
addressed in its job before the contacts were erased) still goes out, and a receipt queued before
the closure is still numbered and kept for finance, only not e-mailed.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account, AccountStatus
from simcharge.auth.models import CodePurpose
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.notifications import jobs as notification_jobs
from simcharge.notifications.models import MessageLog, Notice
from simcharge.notifications.service import SEND_EMAIL, notify, send_code
from simcharge.notifications.transports import dev_mailbox
from simcharge.orders.models import Order
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.service import enqueue
from tests.factories import load_demo_catalog
from tests.locks import until_waiting
from tests.notifications.test_delivery import run_worker
from tests.orders.helpers import (
    Payer,
    new_payer,
    order_row,
    pay_at_sandbox,
    place,
    sandbox_object,
    signed_event,
)
from tests.orders.helpers import run_worker as run_app_worker

PASSWORD = "correct horse battery"  # `create_account`'s
PHONE = "+14155557120"


class Recorder:
    """Stands in for the module's structlog logger (structlog caches a module's bound logger on
    first use, so `capture_logs` would not see it)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    error = warning


async def _with_phone(db: Database, payer: Payer) -> None:
    async def run(s: AsyncSession) -> None:
        await s.execute(
            update(Account)
            .where(Account.id == payer.account_id)
            .values(phone=PHONE, phone_verified_at=utcnow())
        )

    await db.run(run)


async def _queue_before_closure(db: Database, settings: Settings, payer: Payer) -> None:
    """What may wait in the outbox as the holder closes: a notification not yet delivered, the
    channels' jobs of one already fanned out (their address and number in them), a code."""

    async def run(s: AsyncSession) -> None:
        await notify(s, account_id=payer.account_id, template="security.password_changed")
        await notify(
            s, account_id=payer.account_id, template="security.password_changed",
            targets={"email": payer.email},
        )  # fmt: skip
        fanned = {"account_id": str(payer.account_id), "template": "security.password_changed",
                  "params": {}, "language": "en"}  # fmt: skip
        await enqueue(s, SEND_EMAIL, {**fanned, "to": payer.email})
        await enqueue(s, notification_jobs.SEND_SMS, {**fanned, "to": PHONE})
        await send_code(
            s, settings.secret_key, account_id=payer.account_id,
            purpose=CodePurpose.verify_email, channel="email", target=payer.email, code="123456",
            language="en",
        )  # fmt: skip

    await db.run(run)


async def _close(client: httpx.AsyncClient, payer: Payer) -> None:
    r = await client.post("/api/v1/me/close", headers=payer.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text


async def _jobs(db: Database) -> list[OutboxJob]:
    async with db.read() as s:
        return list(
            (
                await s.execute(
                    select(OutboxJob).where(OutboxJob.kind.like("notifications.%"))
                )
            ).scalars()
        )


async def test_jobs_queued_before_the_closure_tell_the_closed_account_nothing(
    client: httpx.AsyncClient, db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer = await new_payer(db, settings)
    await _with_phone(db, payer)
    await _queue_before_closure(db, settings, payer)
    await _close(client, payer)
    recorder = Recorder()
    monkeypatch.setattr(notification_jobs, "log", recorder)
    await run_worker(db, settings)

    # Only the closure's confirmation went out, once by e-mail and once by SMS.
    async with db.read() as s:
        logged = (
            await s.execute(
                select(MessageLog.channel, MessageLog.template, MessageLog.status).where(
                    MessageLog.account_id == payer.account_id
                )
            )
        ).all()
        notices = await s.scalar(
            select(func.count()).select_from(Notice).where(Notice.account_id == payer.account_id)
        )
    assert sorted(logged) == [("email", "account.closed", "sent"), ("sms", "account.closed", "sent")]
    assert sorted(m.channel for m in dev_mailbox if m.to in (payer.email, PHONE)) == ["email", "sms"]
    assert notices == 0  # no notice for an account no one can sign in to
    # Every job ended done at its first attempt: nothing left to retry.
    jobs = await _jobs(db)
    assert jobs and {(j.status, j.attempts) for j in jobs} == {(JobStatus.done, 1)}
    skipped = [kw for event, kw in recorder.events if event == "notifications.closed_account_skipped"]
    assert sorted(kw["kind"] for kw in skipped) == sorted(
        ["notifications.deliver", "notifications.deliver", "notifications.email",
         "notifications.sms", "notifications.code"]
    )  # fmt: skip
    assert {kw["reason"] for kw in skipped} == {"account-closed"}
    assert {kw["account_id"] for kw in skipped} == {str(payer.account_id)}


async def test_an_open_accounts_messages_still_go_out(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same jobs for an account still open: every message goes out (the guard is the
    closure, nothing else)."""
    payer = await new_payer(db, settings)
    await _with_phone(db, payer)
    await _queue_before_closure(db, settings, payer)
    recorder = Recorder()
    monkeypatch.setattr(notification_jobs, "log", recorder)
    await run_worker(db, settings)
    async with db.read() as s:
        logged = (
            await s.execute(
                select(MessageLog.channel, MessageLog.template).where(
                    MessageLog.account_id == payer.account_id
                )
            )
        ).all()
        notices = await s.scalar(
            select(func.count()).select_from(Notice).where(Notice.account_id == payer.account_id)
        )
    assert notices == 2
    # Each delivery's e-mail and SMS, the e-mail and SMS fanned out already, the code.
    assert sorted(logged) == sorted(
        [("email", "security.password_changed")] * 3 + [("sms", "security.password_changed")] * 3
        + [("email", "code.verify_email")]
    )
    assert not [e for e, _ in recorder.events if e == "notifications.closed_account_skipped"]


async def test_a_receipt_queued_before_the_closure_is_kept_for_finance_not_emailed(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Receipts and credit notes are finance's: the job still numbers, renders and keeps the
    document; only its e-mail, to an address the closure erased, does not go."""
    await db.run(load_demo_catalog)
    payer = await new_payer(db, settings)
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    row = await order_row(db, order["id"])
    body, headers = signed_event(
        settings, "payment.succeeded", await sandbox_object(db, row.reference)
    )
    r = await client.post("/api/v1/webhooks/sandbox", content=body, headers=headers)
    assert r.status_code < 400, r.text
    assert (await order_row(db, order["id"])).state == "fulfilled"
    await _close(client, payer)
    monkeypatch.setattr(notification_jobs, "log", Recorder())
    await run_app_worker(app, db, settings)
    async with db.read() as s:
        kept = await s.get(Order, uuid.UUID(order["id"]))
        logged = (
            await s.execute(
                select(MessageLog.template).where(MessageLog.account_id == payer.account_id)
            )
        ).scalars().all()
    assert kept is not None and kept.receipt_number  # numbered: finance has the receipt
    assert "order.receipt" not in logged
    assert not [m for m in dev_mailbox if m.to == payer.email and m.attachments]


@pytest.mark.postgres_only
async def test_a_delivery_racing_the_closure_waits_for_it_and_writes_nothing(
    fresh_db: Database, settings: Settings
) -> None:
    """Real connections: the closure holds the account and has deleted its notices in a
    transaction held open; the delivery, read before it commits, must wait and then see it —
    before, it read the account as open and wrote its notice once the closure had committed."""
    db = fresh_db
    payer = await new_payer(db, settings)
    await db.run(
        lambda s: notify(s, account_id=payer.account_id, template="security.password_changed")
    )
    holding, release = asyncio.Event(), asyncio.Event()

    async def closure() -> None:
        # What `privacy.close_account` does to these rows, in a transaction held open meanwhile.
        async with db.transaction() as s:
            await s.get(Account, payer.account_id, with_for_update=True)
            await s.execute(delete(Notice).where(Notice.account_id == payer.account_id))
            await s.execute(
                update(Account)
                .where(Account.id == payer.account_id)
                .values(status=AccountStatus.closed.value, email=None, email_verified_at=None)
            )
            holding.set()
            await release.wait()

    closing = asyncio.create_task(closure())
    await holding.wait()
    delivering = asyncio.create_task(run_worker(db, settings))
    await until_waiting(db, 1)
    assert not delivering.done()  # waits for the closure's lock on the account
    release.set()
    await closing
    await delivering
    async with db.read() as s:
        notices = await s.scalar(
            select(func.count()).select_from(Notice).where(Notice.account_id == payer.account_id)
        )
        logged = await s.scalar(
            select(func.count())
            .select_from(MessageLog)
            .where(MessageLog.account_id == payer.account_id)
        )
    assert (notices, logged) == (0, 0)
    assert {(j.status, j.attempts) for j in await _jobs(db)} == {(JobStatus.done, 1)}
