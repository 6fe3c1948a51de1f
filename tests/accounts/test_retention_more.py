"""The retention rules that were missing (`accounts.retention`): a dead job's payload, an MSISDN
in a security event's details, a closed account's tickets, used passkey challenges.

What was missing: a dead notification job kept the address, name and text it was to send until
staff acted on it (often never); a line-attach event kept the MSISDN in full for two years
after its address had gone; a closed account's tickets kept every message for ever; passkey
challenges were never deleted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.accounts.retention import (
    JOB_KEPT,
    PERSONAL_JOB_KINDS,
    RULES,
    masked_details,
    sweep,
)
from simcharge.auth.apikeys import create_api_key
from simcharge.auth.client import ClientInfo
from simcharge.auth.events import EventKind, record_event
from simcharge.auth.models import SecurityEvent
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.roles import Permission
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.notifications.transports import mask
from simcharge.tickets import service as tickets
from simcharge.tickets.models import Ticket, TicketMessage
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.runner import load_jobs
from tests.auth.helpers import problem
from tests.backoffice.helpers import new_staff, web_sign_in
from tests.factories import create_account

DAY = timedelta(days=1)
MSISDN = "+639171234567"
REMOVED = "Removed under the retention policy."


def _rule(name: str) -> Any:
    return next(r for r in RULES if r.name == name)


# --- dead jobs -------------------------------------------------------------------------------


def _dead_job(kind: str, payload: dict[str, Any], died: datetime) -> OutboxJob:
    return OutboxJob(
        id=uuid7(), kind=kind, payload=payload, status=JobStatus.dead.value, attempts=10,
        max_attempts=10, last_error="SMTP 550 s***@example.com: mailbox unavailable",
        created_at=died - DAY, run_at=died, finished_at=died, dedupe_key=f"t:{uuid.uuid4()}",
    )


async def _job(db: Database, job_id: uuid.UUID) -> OutboxJob:
    async with db.read() as s:
        found = await s.get(OutboxJob, job_id, populate_existing=True)
        assert found is not None
        return found


async def test_a_dead_notification_loses_what_names_someone_and_keeps_what_it_was(
    db: Database, settings: Settings
) -> None:
    now = utcnow()
    account_id = str(uuid.uuid4())
    email = {
        "account_id": account_id, "template": "order.fulfilled", "to": "someone@example.com",
        "language": "es", "params": {"msisdn": MSISDN, "name": "Ana Cruz"},
    }
    deliver = {
        "account_id": account_id, "template": "line.expiring", "channels": ["email", "sms"],
        "targets": {"email": "someone@example.com"}, "params": {"msisdn": MSISDN},
        "line_id": str(uuid.uuid4()), "about": {"state": "active"},
    }
    old_email = _dead_job("notifications.email", email, now - 91 * DAY)
    old_deliver = _dead_job("notifications.deliver", deliver, now - 200 * DAY)
    recent = _dead_job("notifications.sms", {**email, "to": MSISDN}, now - 89 * DAY)
    refund = _dead_job("payments.refund", {"refund_id": str(uuid.uuid4())}, now - 400 * DAY)
    waiting = OutboxJob(id=uuid7(), kind="notifications.email", payload=email,
                        status=JobStatus.pending.value, created_at=now - 400 * DAY,
                        run_at=now - 400 * DAY)

    async def seed(s: AsyncSession) -> None:
        s.add_all([old_email, old_deliver, recent, refund, waiting])

    await db.run(seed)
    assert (await sweep(db, settings, now=now, dry_run=True)).changed["outbox_jobs.dead"] == 2
    report = await sweep(db, settings, now=now)
    assert report.changed["outbox_jobs.dead"] == 2

    emptied = await _job(db, old_email.id)
    assert emptied.payload == {"account_id": account_id, "template": "order.fulfilled"}
    assert emptied.payload_removed_at == now
    # What the jobs screen shows stays: kind, status, attempts, the (masked) error, the dates.
    assert (emptied.kind, emptied.status, emptied.attempts, emptied.last_error) == (
        "notifications.email", "dead", 10, old_email.last_error
    )
    assert (emptied.created_at, emptied.finished_at) == (old_email.created_at, old_email.finished_at)
    fanned = await _job(db, old_deliver.id)
    assert fanned.payload == {
        "account_id": account_id, "template": "line.expiring", "channels": ["email", "sms"],
        "line_id": deliver["line_id"],
    }
    assert "someone@example.com" not in repr(fanned.payload) and MSISDN not in repr(fanned.payload)
    # Within the period, ids only, or not dead: as they were.
    assert (await _job(db, recent.id)).payload == recent.payload
    assert (await _job(db, refund.id)).payload == refund.payload
    assert (await _job(db, refund.id)).payload_removed_at is None
    assert (await _job(db, waiting.id)).payload == email
    assert (await sweep(db, settings, now=now)).changed["outbox_jobs.dead"] == 0


def test_every_kind_of_job_is_judged_personal_or_not() -> None:
    """A new kind of job must be put on one side: its payload names someone (emptied once dead
    for the period) or carries ids only (kept, retryable for ever)."""
    ids_only = {
        "payments.capture", "payments.refund", "orders.receipt", "orders.credit_note",
        "payments.reconcile", "ledger.expire_pending", "outbox.prune", "charging.expire_sessions",
        "lifecycle.sweep", "privacy.retention",
    }
    registered = set(load_jobs().handlers)
    assert set(PERSONAL_JOB_KINDS) <= registered
    assert registered - set(PERSONAL_JOB_KINDS) == ids_only
    assert not set(JOB_KEPT) & {"to", "target", "targets", "params", "sealed", "event", "url"}


async def test_a_dead_job_whose_payload_went_cannot_be_retried_but_can_be_discarded(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    now = utcnow()
    job = _dead_job(
        "notifications.email",
        {"account_id": str(uuid.uuid4()), "template": "account.welcome", "to": "a@example.com"},
        now - 100 * DAY,
    )
    await db.run(lambda s: s.add(job) or _noop())
    await sweep(db, settings, now=now)
    issued = await db.run(lambda s: create_api_key(s, "ops", ["jobs:read", "jobs:write"]))
    ops = {"Authorization": f"Bearer {issued.token}"}

    r = await client.post(f"/api/v1/admin/jobs/{job.id}/retry", headers=ops)
    assert r.status_code == 409, r.text
    assert problem(r)["type"].endswith("/job-payload-removed")
    assert problem(r)["field"] == "job_id"
    after = await _job(db, job.id)
    assert (after.status, after.attempts) == ("dead", 10)  # not half-queued
    # Even past the staff check (a retry racing the sweep): the queue takes it back never.
    from simcharge.worker.service import requeue_dead

    assert await db.run(lambda s: requeue_dead(s, job.id)) is False
    assert (await _job(db, job.id)).status == "dead"

    r = await client.post(
        f"/api/v1/admin/jobs/{job.id}/discard", headers=ops, json={"note": "customer gone"}
    )
    assert r.status_code == 200, r.text
    assert (await _job(db, job.id)).status == "done"


async def test_the_jobs_screen_offers_no_retry_for_an_emptied_job(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    now = utcnow()
    emptied = _dead_job("notifications.sms", {"template": "x", "to": MSISDN}, now - 100 * DAY)
    whole = _dead_job("payments.refund", {"refund_id": str(uuid.uuid4())}, now - 100 * DAY)
    await db.run(lambda s: s.add_all([emptied, whole]) or _noop())
    await sweep(db, settings, now=now)
    admin = await new_staff(db, settings, "admin")
    await web_sign_in(client, admin)
    page = (await client.get("/backoffice/jobs", params={"view": "dead"})).text
    assert f'/backoffice/jobs/{whole.id}/retry"' in page
    assert f'/backoffice/jobs/{emptied.id}/retry"' not in page
    assert f'/backoffice/jobs/{emptied.id}/discard"' in page
    assert "Its personal data was removed under the retention policy" in page


async def _noop() -> None:
    return None


@pytest.mark.postgres_only
async def test_two_sweeps_at_once_empty_each_dead_job_once(
    fresh_db: Database, settings: Settings
) -> None:
    now = utcnow()
    jobs = [
        _dead_job("notifications.email", {"to": f"p{i}@example.com"}, now - (100 + i) * DAY)
        for i in range(120)
    ]
    await fresh_db.run(lambda s: s.add_all(jobs) or _noop())
    small = settings.model_copy(update={"retention_batch_size": 10})
    reports = await asyncio.gather(*(sweep(fresh_db, small, now=now) for _ in range(4)))
    assert sum(r.changed["outbox_jobs.dead"] for r in reports) == len(jobs)
    async with fresh_db.read() as s:
        left = await s.scalar(
            select(func.count()).select_from(OutboxJob).where(
                OutboxJob.payload_removed_at.is_(None)
            )
        )
    assert left == 0


# --- security events' details ---------------------------------------------------------------


async def _event(db: Database, event_id: uuid.UUID) -> SecurityEvent:
    async with db.read() as s:
        found = await s.get(SecurityEvent, event_id, populate_existing=True)
        assert found is not None
        return found


async def test_a_line_attach_events_msisdn_is_masked_when_its_address_goes(
    db: Database, settings: Settings
) -> None:
    now = utcnow()
    client = ClientInfo(ip="203.0.113.9", user_agent="Mozilla/5.0 Firefox/130.0")
    ids = {name: uuid7() for name in ("requested", "attached", "no_client", "recent", "login")}

    async def seed(s: AsyncSession) -> uuid.UUID:
        account = await create_account(s)
        line = str(uuid.uuid4())
        for name, kind, details, age, who in (
            ("requested", EventKind.line_attach_requested, {"msisdn": MSISDN}, 91, client),
            ("attached", EventKind.line_attached, {"msisdn": MSISDN, "line_id": line}, 300, client),
            ("no_client", EventKind.line_attached, {"msisdn": MSISDN, "line_id": line}, 91, None),
            ("recent", EventKind.line_attached, {"msisdn": MSISDN, "line_id": line}, 89, client),
            ("login", EventKind.login, {"via": "login"}, 91, client),
        ):
            await record_event(
                s, kind, account_id=account.id, client=who, details=details,
                now=now - age * DAY, event_id=ids[name],
            )
        return account.id

    await db.run(seed)
    masked = mask("sms", MSISDN)
    assert masked == "+6391***4567" and MSISDN not in masked
    assert (await sweep(db, settings, now=now, dry_run=True)).changed[
        "security_events.details"
    ] == 3
    report = await sweep(db, settings, now=now)
    assert report.changed["security_events.details"] == 3
    assert report.changed["security_events.client"] == 3  # requested, attached, login
    requested = await _event(db, ids["requested"])
    assert (requested.ip, requested.user_agent, requested.details) == (None, None, {"msisdn": masked})
    attached = await _event(db, ids["attached"])
    assert attached.details["msisdn"] == masked and attached.details["line_id"]
    assert (await _event(db, ids["no_client"])).details["msisdn"] == masked
    recent = await _event(db, ids["recent"])
    assert recent.details["msisdn"] == MSISDN and recent.ip == "203.0.113.9"
    assert (await _event(db, ids["login"])).details == {"via": "login"}
    # Masked once: a masked number is not counted (nor masked) again.
    assert (await sweep(db, settings, now=now)).changed["security_events.details"] == 0
    assert masked_details({"msisdn": masked, "line_id": "x"}) == {"msisdn": masked, "line_id": "x"}


async def test_the_address_rules_setting_of_zero_keeps_the_msisdns_too(
    db: Database, settings: Settings
) -> None:
    """A setting of 0 for the address rule keeps the MSISDNs too (the same period)."""
    now = utcnow()
    event_id = uuid7()
    await db.run(lambda s: record_event(
        s, EventKind.line_attach_requested, account_id=None, details={"msisdn": MSISDN},
        now=now - 400 * DAY, event_id=event_id,
    ))
    forever = settings.model_copy(update={"retention_security_client_days": 0})
    report = await sweep(db, forever, now=now)
    assert "security_events.details" in report.kept
    assert (await _event(db, event_id)).details == {"msisdn": MSISDN}


# --- tickets of closed accounts --------------------------------------------------------------


async def _closed_account_with_ticket(
    db: Database, closed_at: datetime | None, *, status: str = "closed"
) -> tuple[uuid.UUID, uuid.UUID]:
    async def seed(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID]:
        account = await create_account(s)
        ticket = Ticket(
            id=uuid7(), number=f"T-{uuid.uuid4().hex[:8].upper()}", account_id=account.id,
            subject=f"Line {MSISDN} not working", status=status, priority="high",
            created_at=utcnow() - 1000 * DAY, updated_at=utcnow() - 1000 * DAY,
        )
        s.add(ticket)
        await s.flush()
        s.add_all([
            TicketMessage(ticket_id=ticket.id, author="customer", body=f"I am Ana, {MSISDN}",
                          created_at=utcnow() - 1000 * DAY),
            TicketMessage(ticket_id=ticket.id, author="staff", body="Called Ana back",
                          internal=True, created_at=utcnow() - 999 * DAY),
        ])
        if closed_at is not None:
            account.status = "closed"
            account.updated_at = closed_at
        await s.flush()
        return account.id, ticket.id

    return await db.run(seed)


async def _ticket(db: Database, ticket_id: uuid.UUID) -> tuple[Ticket, list[TicketMessage]]:
    async with db.read() as s:
        ticket = await s.get(Ticket, ticket_id, populate_existing=True)
        assert ticket is not None
        rows = await s.execute(
            select(TicketMessage).where(TicketMessage.ticket_id == ticket_id)
            .order_by(TicketMessage.created_at)
            .execution_options(populate_existing=True)
        )
        return ticket, list(rows.scalars())


async def test_a_closed_accounts_tickets_lose_their_text_after_the_period(
    db: Database, settings: Settings
) -> None:
    now = utcnow()
    _, due = await _closed_account_with_ticket(db, now - 731 * DAY)
    _, recent = await _closed_account_with_ticket(db, now - 729 * DAY)
    _, open_account = await _closed_account_with_ticket(db, None, status="resolved")
    before, _ = await _ticket(db, due)

    assert (await sweep(db, settings, now=now, dry_run=True)).changed[
        "tickets.closed_accounts"
    ] == 1
    assert (await sweep(db, settings, now=now)).changed["tickets.closed_accounts"] == 1
    ticket, messages = await _ticket(db, due)
    assert (ticket.subject, ticket.redacted_at) == ("", now)
    # The ticket stays for the books: number, status, priority, dates, who wrote when.
    assert (ticket.number, ticket.status, ticket.priority, ticket.created_at, ticket.updated_at) == (
        before.number, "closed", "high", before.created_at, before.updated_at
    )
    assert [(m.author, m.internal, m.body) for m in messages] == [
        ("customer", False, ""), ("staff", True, "")
    ]
    for kept in (recent, open_account):
        ticket, messages = await _ticket(db, kept)
        assert ticket.redacted_at is None and MSISDN in ticket.subject
        assert all(m.body for m in messages)
    assert (await sweep(db, settings, now=now)).changed["tickets.closed_accounts"] == 0


async def test_staff_see_a_redacted_ticket_as_removed_and_cannot_add_to_it(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    now = utcnow()
    account_id, ticket_id = await _closed_account_with_ticket(db, now - 800 * DAY)
    await sweep(db, settings, now=now)
    agent = await new_staff(db, settings, "admin")
    r = await client.post(
        f"/api/v1/admin/tickets/{ticket_id}/messages", headers=agent.auth,
        json={"body": "A note after the fact", "internal": True},
    )
    assert r.status_code == 409, r.text
    assert problem(r)["type"].endswith("/ticket-redacted")
    _, messages = await _ticket(db, ticket_id)
    assert len(messages) == 2  # nothing half-written

    await web_sign_in(client, agent)
    page = (await client.get(f"/backoffice/tickets/{ticket_id}")).text
    assert page.count(REMOVED) == 3  # the subject and both messages
    assert MSISDN not in page
    listing = (await client.get("/backoffice/tickets", params={"status": "closed"})).text
    customer = (await client.get(f"/backoffice/customers/{account_id}")).text
    for shown in (listing, customer):
        assert f"/backoffice/tickets/{ticket_id}" in shown and REMOVED in shown
        assert MSISDN not in shown


async def test_a_redacted_ticket_is_refused_by_the_service_too(
    db: Database, settings: Settings
) -> None:
    now = utcnow()
    _, ticket_id = await _closed_account_with_ticket(db, now - 800 * DAY)
    await sweep(db, settings, now=now)
    actor = Actor("staff:test", frozenset(Permission))
    with pytest.raises(tickets.TicketRedacted):
        await db.run(lambda s: tickets.staff_reply(
            s, actor, ticket_id, "note", internal=True, now=utcnow()
        ))


async def test_a_closed_account_is_dated_by_its_last_change(db: Database) -> None:
    """The rule counts from the tombstone's `updated_at` (its closure): nothing else changes a
    closed account, and were it touched later, its tickets would only wait longer."""
    account_id, _ = await _closed_account_with_ticket(db, utcnow() - 10 * DAY)
    async with db.read() as s:
        account = await s.get(Account, account_id)
        assert account is not None and account.status == "closed"
    assert _rule("tickets.closed_accounts").setting == "retention_closed_tickets_days"
