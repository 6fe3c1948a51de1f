"""What a mail server's refusal means for the next attempt (RFC 5321 §4.2.1: 4yz transient, 5yz
permanent), against real aiosmtpd servers.

Every SMTP failure but a 5yz to `RCPT` was treated as transient: a message the server refused
for good at `DATA` (spam, size, policy: 554, 552) and a message to an address with non-ASCII
characters (`josé@…`, which registration accepts) sent to a server without SMTPUTF8 (RFC 6531)
were tried again until the job's attempts ran out, each attempt refused the same way. And a 4yz
to `RCPT` (a busy or full mailbox, greylisting) was given up at once. Now a refusal the next
attempt keeps ends the job at once (the message log says `failed`), and one it may not keeps it
queued. What would refuse every message — our credentials, our sender, TLS — stays transient
(`test_smtp.py`): once the operator mends the settings, the queued messages go.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.notifications.models import MessageLog
from simcharge.notifications.service import notify
from simcharge.notifications.transports import DeliveryFailed, send_email
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.runner import Worker
from tests.factories import create_account


class Server:
    """Takes mail, or answers `DATA` / `RCPT` with a reply given by the test."""

    def __init__(self) -> None:
        self.data_reply = "250 OK"
        self.rcpt_reply: str | None = None
        self.received: list[tuple[str, list[str]]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return self.data_reply


def _serve(handler: Server, *, smtputf8: bool) -> Iterator[tuple[Server, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def plain_server() -> Iterator[tuple[Server, int]]:
    """A server without SMTPUTF8 (aiosmtpd's default, as many relays)."""
    yield from _serve(Server(), smtputf8=False)


@pytest.fixture
def utf8_server() -> Iterator[tuple[Server, int]]:
    yield from _serve(Server(), smtputf8=True)


def to(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port,
                                       "smtp_tls": "none"})  # fmt: skip


async def test_a_non_ascii_address_without_smtputf8_is_refused_for_good(
    settings: Settings, plain_server: tuple[Server, int]
) -> None:
    server, port = plain_server
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(to(settings, port), "josé.pérez@example.com", "Hi", "text", None)
    assert failed.value.transient is False
    assert "SMTPUTF8" in str(failed.value) and "pérez" not in str(failed.value)
    assert server.received == []


async def test_a_server_with_smtputf8_takes_the_address_as_written(
    settings: Settings, utf8_server: tuple[Server, int]
) -> None:
    server, port = utf8_server
    await send_email(to(settings, port), "josé.pérez@example.com", "Hola", "texto", None)
    [(_, recipients)] = server.received
    assert recipients == ["josé.pérez@example.com"]


@pytest.mark.parametrize(("reply", "transient"), [
    ("554 5.7.1 Message rejected as spam", False),
    ("552 5.3.4 Message size exceeds fixed limit", False),
    ("451 4.3.0 Temporary local problem, try later", True),
])  # fmt: skip
async def test_a_reply_to_data_says_whether_to_try_again(
    settings: Settings, plain_server: tuple[Server, int], reply: str, transient: bool
) -> None:
    server, port = plain_server
    server.data_reply = reply
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(to(settings, port), "ana@example.com", "Hi", "text", None)
    assert failed.value.transient is transient
    assert reply[:3] in str(failed.value)


@pytest.mark.parametrize(("reply", "transient"), [
    ("450 4.2.1 <{to}>: mailbox busy, try again later", True),
    ("452 4.2.2 <{to}>: mailbox full", True),
    ("550 5.1.1 <{to}>: Recipient address rejected: User unknown", False),
])  # fmt: skip
async def test_a_reply_to_rcpt_says_whether_to_try_again(
    settings: Settings, plain_server: tuple[Server, int], reply: str, transient: bool
) -> None:
    server, port = plain_server
    address = "ana.lopez@example.com"
    server.rcpt_reply = reply.format(to=address)
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(to(settings, port), address, "Hi", "text", None)
    assert failed.value.transient is transient
    assert reply[:3] in str(failed.value) and "ana.lopez" not in str(failed.value)


async def _mail_job(db: Database, settings: Settings, email: str) -> tuple[OutboxJob, MessageLog | None]:
    async def make(s: AsyncSession) -> uuid.UUID:
        account = await create_account(s, email=email, email_verified_at=utcnow())
        await notify(s, account_id=account.id, template="security.password_changed",
                     channels=["email"])  # fmt: skip
        return account.id

    account_id = await db.run(make)
    worker = Worker(db, settings, concurrency=2)
    try:
        await worker.drain()
    finally:
        await worker.close()
    async with db.read() as s:
        job = (
            await s.execute(
                select(OutboxJob)
                .where(OutboxJob.kind == "notifications.email")
                .order_by(OutboxJob.created_at.desc())
                .limit(1)
            )
        ).scalar_one()
        log = (
            await s.execute(select(MessageLog).where(MessageLog.account_id == account_id))
        ).scalar_one_or_none()
    return job, log


async def test_the_job_ends_at_the_first_refusal_for_good(
    db: Database, settings: Settings, plain_server: tuple[Server, int]
) -> None:
    """One attempt, not `max_attempts`: the message log says failed, and why."""
    server, port = plain_server
    address = f"josé.{uuid.uuid4().hex[:6]}@example.com"
    job, log = await _mail_job(db, to(settings, port), address)
    assert job.attempts == 1 and job.max_attempts > 1
    assert job.status == JobStatus.dead, job.last_error
    assert log is not None and log.status == "failed" and "SMTPUTF8" in (log.error or "")
    assert server.received == []


async def test_the_job_waits_after_a_refusal_for_now(
    db: Database, settings: Settings, plain_server: tuple[Server, int]
) -> None:
    server, port = plain_server
    server.data_reply = "451 4.7.1 Greylisted, please try again later"
    job, log = await _mail_job(db, to(settings, port), f"ana.{uuid.uuid4().hex[:6]}@example.com")
    assert job.status == JobStatus.pending and job.attempts == 1
    assert "451" in (job.last_error or "")
    assert log is None  # not failed: the message log says so only when the job gives up
