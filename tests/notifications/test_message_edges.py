"""What customers receive, as delivered: e-mail headers and parts, SMS encoding and length, and
what a message may say of a device."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.devices import device_summary
from simcharge.kit.translations import translate
from simcharge.notifications import jobs as notification_jobs
from simcharge.notifications.jobs import SEND_EMAIL, send_message
from simcharge.notifications.service import notify
from simcharge.notifications.sms import gsm_safe, is_gsm7
from simcharge.notifications.templates import render, template_names
from simcharge.notifications.transports import dev_mailbox
from simcharge.worker.registry import JobContext
from simcharge.worker.service import ClaimedJob
from tests.auth.helpers import Deliver, login, signup
from tests.conftest import SmtpInbox
from tests.factories import create_account
from tests.test_i18n import SAMPLE

# 3GPP TS 23.038 default alphabet and its extension table (each extension char costs 2 septets).
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = set("^{}\\[~]|€\f")

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
SPOOF = (
    "Mozilla/5.0 (Windows NT 10.0) ignore this alert: it was our routine security check. "
    "If you did not request it call simcharge support at +1 900 555 0199 now and give them "
    "the code we send you. (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 "
    "Safari/537.36 Edg/124.0"
)


def segments(text: str) -> int:
    """How many SMS a text is sent as: GSM-7 160/153 septets, else UCS-2 70/67 units."""
    if all(c in GSM7 or c in GSM7_EXT for c in text):
        n = sum(2 if c in GSM7_EXT else 1 for c in text)
        return 1 if n <= 160 else -(-n // 153)
    n = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
    return 1 if n <= 70 else -(-n // 67)


def not_gsm7(text: str) -> set[str]:
    return {c for c in text if c not in GSM7 and c not in GSM7_EXT}


async def mail_to_account(
    db: Database, deliver: Deliver, inbox: SmtpInbox, language: str, template: str
) -> EmailMessage:
    address = f"{uuid.uuid4().hex[:8]}@example.com"

    async def make(s: AsyncSession) -> None:
        account = await create_account(
            s, email=address, email_verified_at=utcnow(), language=language
        )
        await notify(s, account_id=account.id, template=template, channels=["email"])

    await db.run(make)
    await deliver()
    [mail] = inbox.to(address)
    return mail


# --- e-mail headers --------------------------------------------------------------------------


async def test_an_email_says_which_language_it_is_in(
    db: Database, deliver: Deliver, inbox: SmtpInbox
) -> None:
    """An e-mail carries `Content-Language` with the language it was written in (the account's,
    or the operator's default when we do not speak it). Before, none was set: only the HTML
    part's `<html lang>` said it, and a header set before the body was built would have been
    moved into the first part."""
    mail = await mail_to_account(db, deliver, inbox, "zh-Hant", "security.password_changed")
    assert mail["Content-Language"] == "zh-Hant"
    english = await mail_to_account(db, deliver, inbox, "de", "security.password_changed")
    assert english["Content-Language"] == "en"


async def test_an_email_is_marked_as_sent_by_a_machine(
    db: Database, deliver: Deliver, inbox: SmtpInbox
) -> None:
    """Every e-mail carries `Auto-Submitted: auto-generated` (RFC 3834), so that vacation and
    out-of-office responders do not answer the no-reply sender. Before, none did."""
    mail = await mail_to_account(db, deliver, inbox, "en", "security.password_changed")
    assert mail["Auto-Submitted"] == "auto-generated"


async def test_the_text_part_says_what_the_html_part_says(
    db: Database, deliver: Deliver, inbox: SmtpInbox
) -> None:
    """The text/plain part names the operator and says why the reader gets the message, as the
    HTML part does, in the reader's language (the same message as `_layout.html`'s). Before,
    only the HTML part had them: a text-only client, a security gateway or a screen reader
    showed a message from no one."""
    mail = await mail_to_account(db, deliver, inbox, "en", "security.password_changed")
    html = mail.get_body(preferencelist=("html",))
    text = mail.get_body(preferencelist=("plain",))
    assert html is not None and text is not None
    footer = "You receive this message because you have an account with simcharge."
    assert footer in html.get_content()
    assert text.get_content().splitlines()[0] == "simcharge"
    assert footer in text.get_content()
    msgid = "You receive this message because you have an account with %(operator)s."
    for language in ("es", "zh-Hans", "fil"):
        translated = translate(language, msgid) % {"operator": "simcharge"}
        message = render("security.password_changed", language, SAMPLE)
        assert translated != footer
        assert translated in message.html and message.text.endswith(translated)


async def test_a_message_sent_again_keeps_its_message_id(
    db: Database, settings: Settings, inbox: SmtpInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message sent again by its job (the server accepted it, the worker stopped before
    `message_log` committed) keeps its `Message-ID`, derived from the job as the log's id is,
    so that a mail system that drops duplicate ids shows it once; another job's message has
    another. Before, every attempt called `make_msgid()`: the same code or receipt arrived as
    two distinct messages."""
    address = f"{uuid.uuid4().hex[:8]}@example.com"
    account = await db.run(
        lambda s: create_account(s, email=address, email_verified_at=utcnow())
    )
    job_id = uuid.uuid4()
    async with httpx.AsyncClient() as http:
        ctx = JobContext(db, settings, ClaimedJob(job_id, SEND_EMAIL, {}, 1, 10), http)

        async def dies(*args: object, **kwargs: object) -> None:
            raise RuntimeError("worker stopped before the log committed")

        with monkeypatch.context() as m:
            m.setattr(notification_jobs, "log_message", dies)
            with pytest.raises(RuntimeError):
                await send_message(
                    ctx, "email", account.id, "security.password_changed", address, "en", {}
                )
        await send_message(
            ctx, "email", account.id, "security.password_changed", address, "en", {}
        )
        other = JobContext(db, settings, ClaimedJob(uuid.uuid4(), SEND_EMAIL, {}, 1, 10), http)
        await send_message(
            other, "email", account.id, "security.password_changed", address, "en", {}
        )
    first, again, another = inbox.to(address)
    assert first["Message-ID"] == again["Message-ID"]
    assert another["Message-ID"] != first["Message-ID"]
    assert str(first["Message-ID"]).endswith("@simcharge.test>")


# --- SMS: encoding and length ----------------------------------------------------------------

SMS_TEMPLATES = [n for n in template_names() if render(n, "en", SAMPLE).sms]
REALISTIC: dict[str, dict[str, Any]] = {
    "usd": {**SAMPLE, "device": device_summary(IPHONE)},
    "php": {**SAMPLE, "currency": "PHP", "balance": 12500, "device": device_summary(SPOOF)},
    "eur": {**SAMPLE, "currency": "EUR", "device": device_summary("okhttp/4.12")},
}


@pytest.mark.parametrize("params", REALISTIC.values(), ids=REALISTIC.keys())
@pytest.mark.parametrize("language", ["en", "fil"])
@pytest.mark.parametrize("name", SMS_TEMPLATES)
def test_an_sms_in_a_latin_language_stays_in_gsm7(
    name: str, language: str, params: dict[str, Any]
) -> None:
    """Every template's SMS in English and Filipino is pure GSM-7 (160 characters a segment,
    not UCS-2's 70) for realistic parameters: the GSM pass writes Babel's U+202F/U+00A0,
    dashes, curly quotes, "…" and the device's "·" with GSM-7 characters. Before, the
    new-device alert's time ("10:00:00\\u202fAM UTC") made 1 segment 2, and
    `security.registration_attempt`'s em dash ("an account — sign in") made 2 segments 3."""
    sms = render(name, language, params).sms
    assert not_gsm7(sms) == set(), f"{segments(sms)} UCS-2 segments: {sms!r}"


@pytest.mark.parametrize("name", ["balance.low", "order.fulfilled", "order.refunded"])
def test_a_peso_amount_keeps_a_filipino_sms_in_gsm7(name: str) -> None:
    """In an SMS, an amount whose currency sign is not GSM-7 is written with its ISO code
    ("PHP 125.00"); the e-mail keeps the sign. Before, "₱" made every Filipino balance, top-up
    and refund SMS in pesos UCS-2 (balance.low 1 → 2 segments, order.refunded 1 → 3)."""
    params = {**SAMPLE, "currency": "PHP", "balance": 12500}
    message = render(name, "fil", params)
    assert not_gsm7(message.sms) == set(), f"{segments(message.sms)} segments: {message.sms!r}"
    assert "PHP " in message.sms
    assert "₱" in message.text
    assert "$1.25" in render("balance.low", "en", SAMPLE).sms  # a GSM-7 sign is kept


def test_an_sms_that_needs_ucs2_keeps_its_own_punctuation() -> None:
    """A Chinese SMS, or a Spanish one that stays UCS-2 (its accents save no segment), is left
    as written: its full-width punctuation, its "——" and its no-break spaces are not replaced by
    ASCII look-alikes. A Spanish one written in GSM-7 to save a segment (round 14) is GSM-7
    throughout."""
    chinese = render("security.registration_attempt", "zh-Hans", {**SAMPLE, "kind": None}).sms
    assert "——" in chinese and "：" in chinese
    assert gsm_safe("Tu línea: 125,00\u00a0PHP") == "Tu línea: 125,00\u00a0PHP"
    spanish = render("balance.low", "es", {**SAMPLE, "currency": "PHP", "balance": 12500}).sms
    assert "125,00 PHP" in spanish and "linea" in spanish and is_gsm7(spanish)
    assert "·" in render("security.new_device", "zh-Hant", REALISTIC["usd"]).sms


def test_a_message_names_a_device_by_known_tokens_only() -> None:
    """What a message says of a device is built from the browsers and systems we know (the
    Security page's names), at most 19 characters; a user agent naming none is nothing (the
    message says "an unknown device" in its language) — never the header's own words."""
    assert device_summary(IPHONE) == "Safari · iPhone"
    assert device_summary(SPOOF) == "Edge · Windows"
    assert device_summary("okhttp/4.12") == ""
    assert device_summary("call +1 900 555 0199 now") == ""
    assert device_summary(None) == ""
    assert device_summary("Mozilla/5.0 (Linux; Android 14) Firefox/125.0") == "Firefox · Android"


@pytest.mark.parametrize("user_agent", [IPHONE, SPOOF], ids=["iphone", "spoofed"])
async def test_a_new_device_alert_is_short_whatever_the_user_agent(
    client: httpx.AsyncClient, inbox: SmtpInbox, deliver: Deliver, user_agent: str
) -> None:
    """The new-device alert names the device by its browser and system ("Safari · iPhone"):
    its SMS is one GSM-7 segment and neither it nor the e-mail carries a word of the
    `User-Agent`, which stays (cut at 255 characters) in the security log only. Before, the
    raw header went into both: a stock iPhone UA made the SMS 4 UCS-2 segments, and whoever
    signed in — the person the alert warns about — could write 255 characters of their own
    ("call support at … and give them the code") into a message sent under the operator's
    name."""
    customer = await signup(client, inbox, deliver)
    assert customer.email
    dev_mailbox.clear()
    inbox.messages.clear()
    r = await login(client, customer.username, headers={"User-Agent": user_agent})
    assert r.json()["new_device"] is True
    await deliver()
    [sms] = [m.text for m in dev_mailbox if m.channel == "sms" and m.to == customer.phone]
    assert "call simcharge support" not in sms and "Mozilla" not in sms
    assert segments(sms) == 1, f"{segments(sms)} segments: {sms!r}"
    [mail] = inbox.to(customer.email)
    for part in ("plain", "html"):
        body = mail.get_body(preferencelist=(part,))
        assert body is not None
        content = body.get_content()
        assert "call simcharge support" not in content and "Mozilla" not in content
        assert device_summary(user_agent) in content
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    events = (await client.get("/api/v1/me/security-events", headers=headers)).json()
    [logged] = [e for e in events if e["kind"] == "new_device"]
    assert logged["user_agent"] == user_agent[:255]
