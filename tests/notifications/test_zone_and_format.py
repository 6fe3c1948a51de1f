"""Messages in the recipient's time zone and number format: the e-mail (received by a real SMTP
server) and the SMS of a notice write its times in the recipient account's zone — daylight
saving time included — and its dates as that zone's, its money in the account's regional
format (`es_MX`: "USD1,234.56", not Spain's "1.234,56 US$"); read when the message is
rendered (a zone chosen while it waited is the one used). An account without a zone, and an
address without an account (a staff member's), get the operator's zone."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.notifications.service import notify, reading_for, reading_of, tell_staff
from simcharge.notifications.transports import dev_mailbox
from simcharge.worker.runner import Worker
from tests.conftest import SmtpInbox
from tests.factories import create_account, load_demo_catalog
from tests.orders.helpers import new_payer
from tests.orders.test_receipts import _paid
from tests.orders.test_receipts import _text as pdf_text

WINTER = "2026-01-15T17:00:00+00:00"
SUMMER = "2026-07-15T17:00:00+00:00"
VALIDITY_END = "2026-12-06T20:00:00+00:00"  # Dec 7, 04:00 in Manila


async def _account(db: Database, **fields: Any) -> tuple[uuid.UUID, str, str]:
    email, phone = f"{uuid.uuid4().hex[:10]}@example.com", f"+1415555{uuid.uuid4().int % 10000:04d}"

    async def make(s: AsyncSession) -> uuid.UUID:
        account = await create_account(
            s, email=email, email_verified_at=utcnow(), phone=phone, phone_verified_at=utcnow(),
            **fields,
        )  # fmt: skip
        return account.id

    return await db.run(make), email, phone


async def _send(
    db: Database, settings: Settings, account_id: uuid.UUID, template: str, params: dict[str, Any]
) -> None:
    await db.run(lambda s: notify(s, account_id=account_id, template=template, params=params))
    await _drain(db, settings)


async def _drain(db: Database, settings: Settings) -> None:
    worker = Worker(db, settings, concurrency=2)
    try:
        await worker.drain()
    finally:
        await worker.close()


def _text(inbox: SmtpInbox, address: str) -> str:
    [mail] = inbox.to(address)
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content()).replace("\u202f", " ")


def _sms(phone: str) -> str:
    [sms] = [m.text for m in dev_mailbox if m.channel == "sms" and m.to == phone]
    return sms.replace("\u202f", " ")


async def test_an_email_and_an_sms_say_the_recipients_local_time_dst_correct(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    account_id, email, phone = await _account(db, language="en", time_zone="America/New_York")
    await _send(db, settings, account_id, "security.new_device",
                {"device": "Firefox", "ip": "192.0.2.1", "time": WINTER})  # fmt: skip
    assert "Jan 15, 2026, 12:00 PM UTC−05:00" in _text(inbox, email)
    assert "Jan 15, 2026, 12:00 PM UTC-05:00" in _sms(phone)  # GSM-7's minus
    inbox.messages.clear()
    dev_mailbox.clear()
    await _send(db, settings, account_id, "security.new_device",
                {"device": "Firefox", "ip": "192.0.2.1", "time": SUMMER})  # fmt: skip
    assert "Jul 15, 2026, 1:00 PM UTC−04:00" in _text(inbox, email)
    assert "Jul 15, 2026, 1:00 PM UTC-04:00" in _sms(phone)


async def test_money_in_the_accounts_regional_format_and_dates_in_its_zone(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    account_id, email, phone = await _account(
        db, language="es", time_zone="Asia/Manila", format_locale="es_MX"
    )
    await _send(db, settings, account_id, "balance.low",
                {"msisdn": "+14155550101", "balance": 123456, "currency": "USD"})  # fmt: skip
    assert "USD1,234.56" in _text(inbox, email) and "1.234,56" not in _text(inbox, email)
    assert "1,234.56" in _sms(phone)
    inbox.messages.clear()
    await _send(db, settings, account_id, "line.validity_ending",
                {"msisdn": "+14155550101", "validity_end": VALIDITY_END, "days_left": 1})  # fmt: skip
    # The moment in Manila (04:00 on the 7th), not a day: UTC's is 20:00 on the 6th.
    assert "7 dic 2026, 4:00 a.m. UTC+08:00" in _text(inbox, email)


async def test_a_spanish_reader_without_a_format_gets_the_languages_own(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    account_id, email, _ = await _account(db, language="es")
    await _send(db, settings, account_id, "balance.low",
                {"msisdn": "+14155550101", "balance": 123456, "currency": "USD"})  # fmt: skip
    assert "1.234,56" in _text(inbox, email)


async def test_a_format_of_another_language_is_not_applied(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """An `es_MX` chosen while reading Spanish says nothing of an English reader's numbers."""
    account_id, email, _ = await _account(db, language="en", format_locale="es_MX")
    await _send(db, settings, account_id, "balance.low",
                {"msisdn": "+14155550101", "balance": 123456, "currency": "EUR"})  # fmt: skip
    assert "€1,234.56" in _text(inbox, email)


async def test_no_zone_of_its_own_is_the_operators_and_the_zone_is_read_when_rendered(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    manila = settings.model_copy(update={"operator_timezone": "Asia/Manila"})
    account_id, email, _ = await _account(db, language="en")
    await db.run(lambda s: notify(s, account_id=account_id, template="security.new_device",
                                  params={"device": "Firefox", "ip": "192.0.2.1", "time": WINTER},
                                  channels=["email"]))  # fmt: skip
    await _drain(db, manila)
    assert "Jan 16, 2026, 1:00 AM UTC+08:00" in _text(inbox, email)

    # Queued, then the customer chooses a zone: the message says the one chosen.
    inbox.messages.clear()
    await db.run(lambda s: notify(s, account_id=account_id, template="security.new_device",
                                  params={"device": "Firefox", "ip": "192.0.2.1", "time": WINTER},
                                  channels=["email"]))  # fmt: skip

    async def choose(s: AsyncSession) -> None:
        await s.execute(
            update(Account).where(Account.id == account_id).values(time_zone="Europe/Madrid")
        )

    await db.run(choose)
    await _drain(db, manila)
    assert "Jan 15, 2026, 6:00 PM UTC+01:00" in _text(inbox, email)


async def test_an_address_without_an_account_gets_the_operators_zone(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    manila = settings.model_copy(update={"operator_timezone": "Asia/Manila"})
    to = f"staff-{uuid.uuid4().hex[:8]}@example.com"
    await db.run(lambda s: tell_staff(
        s, staff_id=uuid.uuid4(), to=to, language="en", template="security.new_device",
        params={"device": "Firefox", "ip": "192.0.2.1", "time": WINTER}, dedupe_key=to,
    ))  # fmt: skip
    await _drain(db, manila)
    assert "Jan 16, 2026, 1:00 AM UTC+08:00" in _text(inbox, to)
    async with db.read() as s:
        assert (await reading_for(s, None, manila)).zone == "Asia/Manila"


async def test_a_zone_the_database_no_longer_knows_is_the_operators(
    db: Database, settings: Settings
) -> None:
    account = Account(username="x", password_hash="x", time_zone="Atlantis/Capital")
    assert reading_of(account, settings).zone == settings.operator_timezone
    assert reading_of(None, settings).locale is None


async def test_a_receipt_is_dated_in_the_operators_zone_and_names_it(
    db: Database, settings: Settings
) -> None:
    """The operator's document, not the customer's page: the payer's own zone (New York) does
    not move its date; the operator's (Manila) does, and is named. Its money follows the
    payer's format."""
    manila = settings.model_copy(update={"operator_timezone": "Asia/Manila"})
    await db.run(load_demo_catalog)
    payer = await new_payer(db, manila, language="es")

    async def choose(s: AsyncSession) -> None:
        await s.execute(update(Account).where(Account.id == payer.account_id)
                        .values(time_zone="America/New_York", format_locale="es_MX"))  # fmt: skip

    await db.run(choose)
    app = create_app(manila, db=db, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        order = await _paid(client, manila, payer)
        r = await client.get(f"/api/v1/orders/{order['id']}/receipt", headers=payer.auth)
    text = pdf_text(r.content)
    date_line = next(x for x in text.splitlines() if x.startswith("Fecha"))
    assert "UTC+08:00 (Asia/Manila)" in date_line and "05:00" not in date_line, date_line
    assert "US$" not in text and "USD20.00" in text, text
