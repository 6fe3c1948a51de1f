"""Review round 14 of notifications: every message as its reader receives it (a real SMTP server,
the SMS transport's outbox), on SQLite and PostgreSQL where an account or a line is read.

What was wrong before this round:

- The lifecycle's warnings (`line.validity_ending`, `line.grace_ending`, `line.freeze_warning`,
  `line.termination_warning`, `line.entered_grace`) named a day for a moment: "valid until
  December 10" for a line ending 04:00 in Manila on December 10 — a customer topping up that
  evening was too late. They now name the moment in the reader's zone, as every message does.
- The code that adds a line went to the SIM's holder in the asker's language, saying "your code
  to add this line to your account": the holder may be someone else. It now says someone asked
  to add this line to an account, to ignore it if that was not them and never to share the
  code, in the holder's language (the operator's for a line no account holds).
- "If this was not you, change your password…" after a password change, a reset or a contact
  change — which the intruder has just made impossible. Those alerts now say what still works.
- `security.registration_attempt` said "this address or number" whatever was tried: an SMS
  could claim the number was used when only the address was.
- `ticket.opened` said customer service "will answer you here": answers are read in the account.
- Spanish notices were 3–4 UCS-2 segments; their accents are now dropped when that saves one,
  as a code's were, and every notice is held to `NOTICE_SEGMENTS`.
- `bucket.used_up` named no allowance; `line.gift_received` pointed at a "dashboard" the portal
  does not have; `staff.password_changed` had an SMS never sent; the English new-device alert
  said "Your account was signed in to from a new device".
- Catalogs: Chinese said 关闭 (a closed question) for a line closed for good (注销/註銷);
  Traditional Chinese and Filipino named a Security page by another title than the page's; stray
  spaces around Chinese dates and plans, and between two Chinese sentences; "simcharge："
  (full-width) in Chinese codes but "simcharge: " in notices; Spanish "para"/"por" and
  "(2 días)"/"(dentro de 1 día)".
- A message's language was fixed when it was queued, its zone read when it was sent: both are
  now read when it is sent.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts import service as accounts
from simcharge.accounts.models import Account
from simcharge.auth.client import ClientInfo
from simcharge.auth.models import CodePurpose
from simcharge.auth.throttle import RateLimits
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.i18n import LANGUAGES
from simcharge.notifications.jobs import ATTACH_LINE, reader_language
from simcharge.notifications.service import notify, send_code
from simcharge.notifications.sms import NOTICE_SEGMENTS, encoding, is_gsm7, segments
from simcharge.notifications.templates import render
from simcharge.notifications.transports import dev_mailbox
from simcharge.worker.runner import Worker
from tests.auth.helpers import Deliver, new_identity, register, signup
from tests.conftest import SmtpInbox
from tests.factories import create_account, create_line
from tests.notifications.test_round9 import BASE, CALL_SITES

MSISDN = "+639171234567"
ENDS = "2026-12-09T20:00:00+00:00"  # 04:00 on Dec 10 in Manila
MANILA_MOMENT = "Dec 10, 2026, 4:00 AM UTC+08:00"  # to the minute
HERE = ClientInfo(ip="192.0.2.14", user_agent="pytest-round14/1.0")

WARNINGS: dict[str, dict[str, Any]] = {
    "line.validity_ending": {"days_left": 1, "validity_end": ENDS},
    "line.grace_ending": {"days_left": 1, "freeze_on": ENDS},
    "line.freeze_warning": {"days_left": 1, "freeze_on": ENDS},
    "line.termination_warning": {"days_left": 1, "terminate_on": ENDS, "reactivation": "topup"},
    "line.entered_grace": {"grace_ends": ENDS},
}


async def _drain(db: Database, settings: Settings) -> None:
    worker = Worker(db, settings, concurrency=2)
    try:
        await worker.drain()
    finally:
        await worker.close()


async def _customer(db: Database, **fields: Any) -> tuple[uuid.UUID, str, str]:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    phone = f"+1415556{uuid.uuid4().int % 10000:04d}"

    async def make(s: AsyncSession) -> uuid.UUID:
        account = await create_account(
            s, email=email, email_verified_at=utcnow(), phone=phone, phone_verified_at=utcnow(),
            **fields,
        )  # fmt: skip
        return account.id

    return await db.run(make), email, phone


def _mail_text(inbox: SmtpInbox, address: str) -> str:
    [mail] = inbox.to(address)
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content()).replace("\u202f", " ").replace("\r\n", "\n")


def _sms_to(phone: str) -> list[str]:
    return [m.text.replace("\u202f", " ") for m in dev_mailbox if m.channel == "sms" and m.to == phone]


# 1. A moment, not a day.


@pytest.mark.parametrize("name", sorted(WARNINGS))
async def test_a_lifecycle_warning_names_the_moment_in_the_readers_zone(
    db: Database, settings: Settings, inbox: SmtpInbox, name: str
) -> None:
    """By e-mail and SMS, as the worker sends them: 04:00 on Dec 10 in Manila, with the offset —
    never "December 10" alone, which a customer would read as the whole day."""
    account_id, email, phone = await _customer(db, language="en", time_zone="Asia/Manila")
    dev_mailbox.clear()
    await db.run(lambda s: notify(s, account_id=account_id, template=name,
                                  params={"msisdn": MSISDN, **WARNINGS[name]}))  # fmt: skip
    await _drain(db, settings)
    text = _mail_text(inbox, email)
    [sms] = _sms_to(phone)
    assert MANILA_MOMENT in text and MANILA_MOMENT in sms, (text, sms)
    assert "December 10" not in text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_every_language_writes_the_warnings_time(name: str, language: str) -> None:
    message = render(name, language, {**BASE, "msisdn": MSISDN, **WARNINGS[name]},
                     zone="Asia/Manila")  # fmt: skip
    assert "UTC+08:00" in message.text and "UTC+08:00" in message.sms
    assert "4:00" in message.text and ":00:00" not in message.text  # to the minute


# 2. The code that adds a line, to whoever holds it.


async def test_the_attach_code_goes_to_the_holder_in_the_holders_language(
    db: Database, settings: Settings
) -> None:
    """Asked by an English reader for a line a Spanish reader's account holds: the SMS is the
    holder's — in Spanish, the language their account reads; the text says someone asked, to
    ignore it if that was not them, never to share it."""
    asker_id, _, _ = await _customer(db, language="en")
    holder_id, _, _ = await _customer(db, language="es")
    line = await db.run(lambda s: create_line(s, account_id=holder_id))

    async def ask(s: AsyncSession) -> None:
        asker = await s.get(Account, asker_id)
        assert asker is not None
        await accounts.request_line_attach(
            s, settings, asker, line.msisdn, client=HERE, now=utcnow(), limits=RateLimits()
        )

    dev_mailbox.clear()
    await db.run(ask)
    await _drain(db, settings)
    [sms] = _sms_to(line.msisdn)
    english = render(ATTACH_LINE, "en", {**BASE, "code": "000000", "minutes": 10}).sms
    assert "someone asked to add this line to an account" in english
    assert "Not you? Ignore this message. Never share the code." in english
    assert "your account is" not in english
    [code] = re.findall(r"\b\d{6}\b", sms)
    assert sms == render(ATTACH_LINE, "es", {**BASE, "code": code, "minutes": 10}).sms
    async with db.read() as s:
        assert await reader_language(s, ATTACH_LINE, line.msisdn, None, "en", settings) == "es"


async def test_the_attach_code_for_a_line_no_one_holds_is_in_the_operators_language(
    db: Database, settings: Settings
) -> None:
    spanish_operator = settings.model_copy(update={"default_language": "es"})
    line = await db.run(lambda s: create_line(s, account_id=None))
    asker_id, _, _ = await _customer(db, language="zh-Hans")
    async with db.read() as s:
        asker = await s.get(Account, asker_id)
        assert await reader_language(s, ATTACH_LINE, line.msisdn, asker, "zh-Hans",
                                     spanish_operator) == "es"  # fmt: skip
        # Every other message is its account's, read now; a staff member's (no account) is
        # the one it was queued in.
        assert await reader_language(s, "line.attached", "x", asker, "en",
                                     spanish_operator) == "zh-Hans"  # fmt: skip
        assert await reader_language(s, "staff.password_changed", "x", None, "fil",
                                     spanish_operator) == "fil"  # fmt: skip


# 3. What still works when the intruder changed the password or a contact.


@pytest.mark.parametrize(
    ("name", "params", "advice"),
    [
        ("security.password_changed", {}, "reset your password at once with a code sent to"),
        ("security.password_reset", {}, "reset your password at once with a code sent to"),
        ("security.contact_changed", {"kind": "email", "new": "m***@example.com"},
         "contact customer service now to get your account back"),
        ("security.contact_changed", {"kind": "phone", "new": "+1415***0101"},
         "contact customer service now to get your account back"),
    ],
)
async def test_an_alert_after_a_takeover_gives_advice_that_can_be_followed(
    db: Database, settings: Settings, inbox: SmtpInbox, name: str, params: dict[str, Any],
    advice: str,
) -> None:
    account_id, email, _ = await _customer(db, language="en")
    await db.run(lambda s: notify(s, account_id=account_id, template=name, params=params,
                                  channels=["email"]))  # fmt: skip
    await _drain(db, settings)
    text = _mail_text(inbox, email)
    assert advice in text and "change your password at once" not in text, text
    # Other alerts keep the advice that works while the account is still its owner's.
    assert "change your password at once" in render("security.totp_disabled", "en", BASE).text


# 4. Which contact was tried.


async def test_a_registration_attempt_names_the_contact_that_was_tried(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver
) -> None:
    """Registering with the holder's phone (a fresh address): the holder's SMS and e-mail say
    their phone number was tried, not "address or number"; with their address, the address."""
    holder = await signup(client, inbox, deliver)
    assert holder.phone and holder.email
    inbox.messages.clear()
    dev_mailbox.clear()
    name, fresh_email, _ = new_identity(with_phone=False)
    r = await register(client, username=name, email=fresh_email, phone=holder.phone)
    assert r.status_code == 202
    await deliver()
    [sms] = _sms_to(holder.phone)
    assert "Someone tried to use your phone number for another account." in sms
    assert "address" not in sms
    [mail] = inbox.to(holder.email)
    assert mail["Subject"] == "Someone tried to use your phone number"

    # The same holder's address tried within the hour: told too (one alert an hour per
    # contact tried, not per holder), saying the address.
    inbox.messages.clear()
    dev_mailbox.clear()
    name, _, _ = new_identity(with_phone=False)
    r = await register(client, username=name, email=holder.email, phone=None)
    assert r.status_code == 202
    await deliver()
    [mail] = inbox.to(holder.email)
    assert mail["Subject"] == "Someone tried to use your e-mail address"
    # …and the phone again within the hour: not told twice.
    inbox.messages.clear()
    dev_mailbox.clear()
    name, fresh_email, _ = new_identity(with_phone=False)
    r = await register(client, username=name, email=fresh_email, phone=holder.phone)
    assert r.status_code == 202
    await deliver()
    assert inbox.to(holder.email) == [] and _sms_to(holder.phone) == []

    # Another holder: their address.
    other = await signup(client, inbox, deliver)
    assert other.phone and other.email
    inbox.messages.clear()
    dev_mailbox.clear()
    name, _, _ = new_identity(with_phone=False)
    r = await register(client, username=name, email=other.email, phone=None)
    assert r.status_code == 202
    await deliver()
    [mail] = inbox.to(other.email)
    assert mail["Subject"] == "Someone tried to use your e-mail address"
    [sms] = _sms_to(other.phone)
    assert "Someone tried to use your e-mail address for another account." in sms
    assert "number" not in sms


# 5, 8, 9, 12, 13: what the English says.


def test_the_english_says_what_the_portal_shows() -> None:
    opened = render("ticket.opened", "en", {**BASE, "ticket": "T-1", "subject": "x"}).text
    assert "will answer in your account; we will e-mail you when they do." in opened
    assert "answer you here" not in opened
    for unit, word in (("DATA_B", "data"), ("VOICE_S", "minutes"), ("SMS", "SMS")):
        used_up = render("bucket.used_up", "en", {**BASE, "msisdn": MSISDN, "unit": unit})
        assert f"Your {word} allowance on your line {MSISDN} is used up." in used_up.sms
        assert f"Your {word} allowance" in used_up.text
    gift = render("line.gift_received", "en", {**BASE, "msisdn": MSISDN}).text
    assert "under My lines in your account" in gift and "dashboard" not in gift
    for by in ("self", "admin"):
        staff = render("staff.password_changed", "en", {**BASE, "username": "a", "by": by})
        assert staff.sms == "" and staff.text
    device = render("security.new_device", "en",
                    {**BASE, "device": "Firefox", "ip": "192.0.2.1",
                     "time": "2026-12-07T10:00:00+00:00"}).sms  # fmt: skip
    assert "Someone signed in to your account from a new device: Firefox" in device


# 7. Segments.


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_notice_sms_fits_its_cap_in_every_language(language: str) -> None:
    """Every branch of every template (the call sites' params), a 16-digit number and a
    20-character operator name: at most `NOTICE_SEGMENTS`; a code, one."""
    longest = {"operator": "Globe Travel eSIM Co", "msisdn": "+639171234567890"}
    assert len(longest["operator"]) == 20 and len(longest["msisdn"]) == 16
    for name, variants in CALL_SITES.items():
        for params in variants:
            full = {**BASE, **params, **{k: v for k, v in longest.items()
                                        if k == "operator" or "msisdn" in params}}  # fmt: skip
            sms = render(name, language, full, zone="Asia/Manila").sms
            cap = 1 if name.startswith("code.") else NOTICE_SEGMENTS
            assert segments(sms) <= cap, f"{name} {language}: {segments(sms)} {encoding(sms)}: {sms}"


def test_the_spanish_frozen_notice_is_gsm7_and_half_as_long() -> None:
    """The longest Spanish notice, 202 characters: four UCS-2 segments before, two in GSM-7."""
    sms = render("line.frozen", "es",
                 {**BASE, "msisdn": MSISDN, "reactivation": "owner_topup"}).sms  # fmt: skip
    assert is_gsm7(sms) and segments(sms) == 2, sms
    assert "Tu linea" in sms and "atencion al cliente" in sms
    # Chinese can lose nothing: UCS-2, as written.
    chinese = render("line.frozen", "zh-Hans",
                     {**BASE, "msisdn": MSISDN, "reactivation": "owner_topup"}).sms  # fmt: skip
    assert encoding(chinese) == "ucs2" and "，" in chinese


# 6, 10, 11, 14: the catalogs.


def test_the_catalogs_say_what_the_portal_says() -> None:
    line = {**BASE, "msisdn": MSISDN}
    warn = {**line, **WARNINGS["line.termination_warning"]}
    for language, word in (("zh-Hans", "注销"), ("zh-Hant", "註銷")):
        for name, params in (("line.terminated", line), ("line.termination_warning", warn)):
            message = render(name, language, params, zone="Asia/Manila")
            assert word in message.subject + message.text, (name, language, message.text)
            assert "关闭" not in message.text + message.subject
            assert "關閉" not in message.text + message.subject
        # No space between two Chinese sentences, nor around a date or a plan.
        text = render("line.termination_warning", language, warn, zone="Asia/Manila").sms
        assert "。 " not in text and "于2026年" in text.replace("於", "于"), text
        grace = render("line.entered_grace", language, {**line, "grace_ends": ENDS}).text
        assert "请在2026年" in grace.replace("請", "请"), grace
        plan = {"en": "Traveller", "zh-Hans": "旅行套餐", "zh-Hant": "旅行方案"}
        receipt = render("order.receipt", language,
                         {**line, "plan": plan, "total": 100, "currency": "USD",
                          "receipt": "R1"}).text  # fmt: skip
        assert f"值{plan[language]}。" in receipt, receipt
        # One SMS prefix: the notices' "simcharge: ", the codes' too.
        code = render("code.verify_phone", language, {**BASE, "code": "1", "minutes": 10}).sms
        assert code.startswith("simcharge: ") and "simcharge：" not in code
    assert "「安全性」頁面" in render("security.totp_disabled", "zh-Hant", BASE).text
    fil = render("security.totp_disabled", "fil", BASE).text
    assert "pahinang Seguridad" in fil and "Security page" not in fil
    for params in CALL_SITES["order.refunded"]:
        refunded = render("order.refunded", "es", {**BASE, **params})
        assert " por +" not in refunded.text + refunded.sms and "pago para" in refunded.text
    for days in (1, 2):
        valid = render("line.validity_ending", "es",
                       {**line, "days_left": days, "validity_end": ENDS}).text  # fmt: skip
        assert f"(dentro de {days} día" in valid


# 15. The language read when the message is sent.


async def test_a_message_is_in_the_language_its_account_reads_when_it_is_sent(
    db: Database, settings: Settings, inbox: SmtpInbox
) -> None:
    """Queued in English (a notice and a code), the account then switched to Spanish: both go
    out in Spanish, as its zone would be read then too."""
    account_id, email, phone = await _customer(db, language="en")
    await db.run(lambda s: notify(s, account_id=account_id, template="line.attached",
                                  params={"msisdn": MSISDN}, channels=["email"]))  # fmt: skip
    await db.run(lambda s: send_code(
        s, settings.secret_key, account_id=account_id, purpose=CodePurpose.verify_phone,
        channel="sms", target=phone, code="424242", language="en",
    ))  # fmt: skip

    async def switch(s: AsyncSession) -> None:
        await s.execute(update(Account).where(Account.id == account_id).values(language="es"))

    await db.run(switch)
    dev_mailbox.clear()
    await _drain(db, settings)
    assert "Se ha añadido la línea" in _mail_text(inbox, email)
    [sms] = _sms_to(phone)
    assert "424242" in sms and "tu código es" in sms, sms
