"""Delivering notifications: SMTP, a Twilio-compatible SMS API (respx), the outbox, the portal."""

from __future__ import annotations

import base64
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.auth.models import CodePurpose, SecurityEvent
from simcharge.config import Environment, Settings
from simcharge.db import Database
from simcharge.kit.clock import clock, utcnow
from simcharge.lifecycle.service import Policy, on_topup, sweep
from simcharge.lines.models import Line, LineState
from simcharge.notifications.models import MessageLog, Notice
from simcharge.notifications.service import notify, send_code
from simcharge.notifications.transports import dev_mailbox
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.runner import Worker
from tests.conftest import SmtpInbox
from tests.factories import create_account, create_line

TWILIO = "https://twilio.test"
SID = "AC" + "0" * 32
MESSAGES_URL = f"{TWILIO}/2010-04-01/Accounts/{SID}/Messages.json"


def twilio(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "sms_provider": "twilio",
            "twilio_account_sid": SID,
            "twilio_api_base": TWILIO,
            "twilio_auth_token": SecretStr("tw-secret"),
            "twilio_from": "+15005550006",
        }
    )


async def account_with_contacts(db: Database, language: str = "en") -> uuid.UUID:
    async def make(s: AsyncSession) -> uuid.UUID:
        a = await create_account(
            s,
            email=f"{uuid.uuid4().hex[:8]}@example.com",
            email_verified_at=utcnow(),
            phone="+14155552001",
            phone_verified_at=utcnow(),
            language=language,
        )
        return a.id

    return await db.run(make)


async def run_worker(db: Database, settings: Settings) -> int:
    worker = Worker(db, settings, concurrency=4)
    try:
        return await worker.drain()
    finally:
        await worker.close()


async def jobs_of(db: Database, kind: str) -> list[OutboxJob]:
    async with db.read() as s:
        return list((await s.execute(select(OutboxJob).where(OutboxJob.kind == kind))).scalars())


async def test_sms_through_twilio(db: Database, settings: Settings) -> None:
    cfg = twilio(settings)
    account_id = await account_with_contacts(db)
    await db.run(
        lambda s: send_code(
            s,
            cfg.secret_key,
            account_id=account_id,
            purpose=CodePurpose.verify_phone,
            channel="sms",
            target="+14155552001",
            code="482913",
            language="en",
        )
    )
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(MESSAGES_URL).respond(
            201,
            json={
                "sid": "SM" + "a" * 32,
                "status": "queued",
                "to": "+14155552001",
                "from": "+15005550006",
            },
        )
        await run_worker(db, cfg)
    request = route.calls.last.request
    form = parse_qs(request.content.decode())
    assert form["To"] == ["+14155552001"] and form["From"] == ["+15005550006"]
    assert "482913" in form["Body"][0]
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(f"{SID}:tw-secret".encode()).decode()
    )
    async with db.read() as s:
        log = (await s.execute(select(MessageLog).where(MessageLog.channel == "sms"))).scalar_one()
    assert (log.status, log.provider_id, log.target) == ("sent", "SM" + "a" * 32, "+1415***2001")
    assert "482913" not in str(log.subject) + str(log.error)


async def test_twilio_refusal_is_permanent_and_an_outage_is_retried(
    db: Database, settings: Settings
) -> None:
    cfg = twilio(settings)
    account_id = await account_with_contacts(db)
    await db.run(
        lambda s: notify(
            s, account_id=account_id, template="security.password_changed", channels=["sms"]
        )
    )
    with respx.mock() as mock:
        # Twilio's message names the number: what is kept, logged and shown to staff masks it.
        mock.post(MESSAGES_URL).respond(400, json={
            "code": 21211, "status": 400,
            "message": "The 'To' number +14155552001 is not a valid phone number."})
        await run_worker(db, cfg)
    [job] = await jobs_of(db, "notifications.sms")
    assert job.status == JobStatus.dead and "21211" in (job.last_error or "")
    assert "4155552001" not in (job.last_error or "") and "+1415***2001" in (job.last_error or "")
    async with db.read() as s:
        log = (await s.execute(select(MessageLog))).scalar_one()
    assert log.status == "failed" and "4155552001" not in (log.error or "")

    await db.run(
        lambda s: notify(
            s, account_id=account_id, template="security.totp_enabled", channels=["sms"]
        )
    )
    with respx.mock() as mock:
        mock.post(MESSAGES_URL).respond(503, text="upstream down")
        await run_worker(db, cfg)
    retried = [j for j in await jobs_of(db, "notifications.sms") if j.status == JobStatus.pending]
    assert len(retried) == 1 and retried[0].attempts == 1 and "503" in (retried[0].last_error or "")


async def test_an_unreachable_smtp_server_is_retried(db: Database, settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cfg = settings.model_copy(update={"smtp_port": closed_port})
    account_id = await account_with_contacts(db)
    await db.run(
        lambda s: notify(
            s, account_id=account_id, template="security.password_changed", channels=["email"]
        )
    )
    await run_worker(db, cfg)
    [job] = await jobs_of(db, "notifications.email")
    assert (
        job.status == JobStatus.pending and job.attempts == 1 and "SMTP" in (job.last_error or "")
    )


async def test_the_lifecycle_contract_reaches_the_customer_in_their_language(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """Other modules enqueue `notifications.deliver` with this payload (see notifications.service)."""
    account_id = await account_with_contacts(db, language="zh-Hans")
    from simcharge.worker.service import enqueue

    await db.run(
        lambda s: enqueue(
            s,
            "notifications.deliver",
            {
                "account_id": str(account_id),
                "template": "line.validity_ending",
                "params": {"msisdn": "+14155550101", "validity_end": "2026-12-01", "days_left": 7},
                "channels": ["email", "sms", "portal"],
                "line_id": None,
            },
        )
    )
    await run_worker(db, settings)
    [mail] = inbox.messages
    assert mail["Subject"] == "您的号码 +14155550101 即将到期"
    assert "2026年12月1日" in mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    async with db.read() as s:
        notice = (
            await s.execute(select(Notice).where(Notice.account_id == account_id))
        ).scalar_one()
    assert notice.template == "line.validity_ending"


async def test_a_delivery_run_again_writes_nothing_more(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """A job runs at least once: its worker may die after the fan-out committed and before the
    job was marked done, and another worker then runs it again."""
    account_id = await account_with_contacts(db)
    await db.run(lambda s: notify(s, account_id=account_id, template="security.password_changed"))
    await run_worker(db, settings)
    [job] = await jobs_of(db, "notifications.deliver")

    async def lease_ran_out(s: AsyncSession) -> None:
        await s.execute(
            update(OutboxJob)
            .where(OutboxJob.id == job.id)
            .values(status="running", locked_until=utcnow() - timedelta(seconds=1))
        )

    await db.run(lease_ran_out)
    await run_worker(db, settings)
    [again] = await jobs_of(db, "notifications.deliver")
    assert again.status == JobStatus.done and again.attempts == 2
    async with db.read() as s:
        notices = (await s.execute(select(Notice).where(Notice.account_id == account_id))).all()
        alerts = (
            await s.execute(select(SecurityEvent).where(SecurityEvent.account_id == account_id))
        ).all()
    assert len(notices) == 1 and len(alerts) == 1
    assert len(await jobs_of(db, "notifications.email")) == 1
    assert len(await jobs_of(db, "notifications.sms")) == 1
    assert len(inbox.messages) == 1


async def test_an_email_or_sms_run_again_after_it_was_sent_is_not_sent_again(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """The same for the channels' jobs: a worker that sent the message and logged it may die
    before marking the job done; the run after its lease sends nothing more (the log's row,
    named after the job, says it went) and the job ends done."""
    account_id = await account_with_contacts(db)
    await db.run(lambda s: notify(s, account_id=account_id, template="security.password_changed"))
    await run_worker(db, settings)
    assert len(inbox.messages) == 1
    sent = await jobs_of(db, "notifications.email") + await jobs_of(db, "notifications.sms")

    async def leases_ran_out(s: AsyncSession) -> None:
        await s.execute(
            update(OutboxJob)
            .where(OutboxJob.id.in_([j.id for j in sent]))
            .values(status="running", locked_until=utcnow() - timedelta(seconds=1))
        )

    await db.run(leases_ran_out)
    await run_worker(db, settings)
    assert len(inbox.messages) == 1
    for j in await jobs_of(db, "notifications.email") + await jobs_of(db, "notifications.sms"):
        assert (j.status, j.attempts) == (JobStatus.done, 2)
    async with db.read() as s:
        logged = (await s.execute(select(MessageLog.channel, MessageLog.status).where(
            MessageLog.account_id == account_id))).all()
    assert sorted(logged) == [("email", "sent"), ("sms", "sent")]  # each handed over once


T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def owned_line(db: Database, n: int, **facts: object) -> Line:
    async def make(s: AsyncSession) -> Line:
        account = await create_account(
            s,
            email=f"warned{n}@example.com",
            email_verified_at=utcnow(),
            phone=f"+1415555{3000 + n}",
            phone_verified_at=utcnow(),
        )
        line = await create_line(s, account_id=account.id, state=facts.pop("state"))
        for name, value in facts.items():
            setattr(line, name, value)
        await s.flush()
        return line

    return await db.run(make)


async def test_a_lifecycle_warning_the_line_outgrew_in_the_queue_is_not_sent(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """Queued by the sweep, a warning waits for a worker; a top-up meanwhile (a new validity
    end, or out of grace) makes it false: nothing of it goes out. One still true does. (The
    clock is the sweep's: a warning is judged again against the time it goes out.)"""
    clock.freeze(T - timedelta(days=1))
    try:
        await _outgrown_warnings(db, settings, inbox)
    finally:
        clock.unfreeze()


async def _outgrown_warnings(db: Database, settings: Settings, inbox: SmtpInbox) -> None:
    policy = Policy.of(settings)
    await sweep(db, policy, now=T - timedelta(days=1))
    clock.freeze(T)
    soon = T + timedelta(hours=12)
    ending = await owned_line(
        db, 1, state=LineState.active, validity_end=soon, last_activity_at=T
    )
    in_grace = await owned_line(
        db, 2, state=LineState.grace, validity_end=T - timedelta(days=29),
        state_changed_at=soon - policy.grace, last_activity_at=T,
    )
    untouched = await owned_line(
        db, 3, state=LineState.active, validity_end=soon, last_activity_at=T
    )
    await sweep(db, policy, now=T)
    # Each queued as a warning judged again when it goes out (`lifecycle.warning`).
    assert len(await jobs_of(db, "lifecycle.warning")) == 3

    async def top_up(s: AsyncSession) -> None:
        for line_id in (ending.id, in_grace.id):
            line = await s.get(Line, line_id)
            assert line is not None
            if line.state == LineState.active:
                line.validity_end = soon + timedelta(days=30)  # a plan's validity
            on_topup(s, line, now=T + timedelta(minutes=1), actor="order:x", by_owner=True,
                     policy=policy)

    clock.freeze(T + timedelta(minutes=1))
    await db.run(top_up)
    await run_worker(db, settings)
    assert all(j.status == JobStatus.done for j in await jobs_of(db, "lifecycle.warning"))
    assert all(j.status == JobStatus.done for j in await jobs_of(db, "notifications.deliver"))
    assert [m["To"] for m in inbox.messages] == ["warned3@example.com"]
    assert [m.to for m in dev_mailbox if m.channel == "sms"] == ["+14155553003"]
    async with db.read() as s:
        notices = (await s.execute(select(Notice.line_id))).scalars().all()
    assert notices == [untouched.id]


async def test_a_line_warning_about_what_a_line_does_not_have_is_buried(
    db: Database, settings: Settings
) -> None:
    account_id = await account_with_contacts(db)
    for about in ({"msisdn": "+14155553001"}, {"state": "active"}):  # not a fact; no line
        await db.run(
            lambda s, about=about: notify(
                s, account_id=account_id, template="line.validity_ending", about=about,
                line_id=None if "state" in about else uuid.uuid4(),
            )
        )
    await run_worker(db, settings)
    jobs = await jobs_of(db, "notifications.deliver")
    assert [j.status for j in jobs] == [JobStatus.dead, JobStatus.dead]
    assert await jobs_of(db, "notifications.email") == []


async def test_only_verified_contacts_are_messaged(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    async def make(s: AsyncSession) -> uuid.UUID:
        return (await create_account(s, email="unverified@example.com")).id

    account_id = await db.run(make)
    await db.run(lambda s: notify(s, account_id=account_id, template="security.password_changed"))
    await run_worker(db, settings)
    assert inbox.messages == []
    assert [j.kind for j in await jobs_of(db, "notifications.email")] == []


async def test_bad_payloads_are_buried_not_retried(db: Database, settings: Settings) -> None:
    from simcharge.worker.service import enqueue

    await db.run(lambda s: enqueue(s, "notifications.deliver", {"template": "x"}))
    await db.run(
        lambda s: enqueue(
            s,
            "notifications.code",
            {
                "account_id": str(uuid.uuid4()),
                "sealed": "junk",
                "channel": "email",
                "target": "a@b.c",
                "purpose": "unlock",
            },
        )
    )
    await run_worker(db, settings)
    for kind in ("notifications.deliver", "notifications.code"):
        [job] = await jobs_of(db, kind)
        assert job.status == JobStatus.dead
    [code_job] = await jobs_of(db, "notifications.code")
    assert code_job.payload == {}  # a buried code job keeps nothing sealed either


async def test_notify_refuses_unknown_channels(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="unknown channels"):
        await notify(session, account_id=uuid.uuid4(), template="x", channels=["pigeon"])


@pytest.mark.parametrize("env", [Environment.test, Environment.production])
async def test_the_dev_mailbox_exists_in_development_only(
    db: Database, settings: Settings, inbox: SmtpInbox, env: Environment
) -> None:
    account_id = await account_with_contacts(db)
    await db.run(
        lambda s: notify(
            s, account_id=account_id, template="security.totp_disabled", channels=["email", "sms"]
        )
    )
    await run_worker(db, settings)
    dev = create_app(
        settings.model_copy(update={"env": Environment.development}), db=db, run_worker=False
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dev), base_url="http://t") as c:
        page = await c.get("/dev/mailbox")
        assert page.status_code == 200 and "Two-step verification is off" in page.text
        assert len((await c.get("/dev/mailbox.json")).json()) == 2
    # Anywhere else (a staging server runs as `test`) the codes it shows stay unpublished.
    other = create_app(
        settings.model_copy(
            update={"env": env, "base_url": "https://x.example", "secret_key": "p" * 40}
        ),
        db=db,
        run_worker=False,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other), base_url="https://x.example"
    ) as c:
        for path in ("/dev/mailbox", "/dev/mailbox.json"):
            assert (await c.get(path)).status_code == 404


async def test_a_refused_address_is_kept_masked(settings: Settings) -> None:
    """A real SMTP server refuses the recipient, naming it in its reply: the failure kept with
    the job (logged, shown to staff) says the code and a masked address, not the address."""
    import socket

    from aiosmtpd.controller import Controller

    from simcharge.notifications.transports import DeliveryFailed, send_email

    class Refusing:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              rcpt_options: list[str]) -> str:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(Refusing(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        cfg = settings.model_copy(update={"smtp_port": port, "smtp_host": "127.0.0.1"})
        with pytest.raises(DeliveryFailed) as failed:
            await send_email(cfg, "alice.smith@example.com", "Hi", "text", None)
    finally:
        controller.stop()
    said = str(failed.value)
    assert "alice.smith" not in said and "a***@example.com" in said and "550" in said
    assert failed.value.transient is False
