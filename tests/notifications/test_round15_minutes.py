"""Review round 15 of notifications: a message says a moment to the minute.

Before, the `datetime` filter wrote Babel's medium time, with seconds: "valid until Dec 10,
2026, 4:00:00 AM UTC+08:00". A deadline or a sign-in to the second says nothing more to its
reader, and costs an SMS characters. Now the locale's short time (Babel's own pattern: "h:mm a"
in English, "H:mm" in Spanish, "HH:mm" in Simplified Chinese, "Bh:mm" in Traditional Chinese),
with the date and the offset from UTC as before. The portal, the back office and receipts
keep their seconds (`moment_text` without `to_the_minute`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.i18n import LANGUAGES
from simcharge.kit.moments import moment_text
from simcharge.notifications.service import notify
from simcharge.notifications.templates import TEMPLATES_DIR, render
from simcharge.notifications.transports import dev_mailbox
from tests.conftest import SmtpInbox
from tests.notifications.test_round9 import BASE
from tests.notifications.test_round14_messages import (
    MSISDN,
    WARNINGS,
    _customer,
    _drain,
    _mail_text,
    _sms_to,
)

# 04:00:37 on Dec 10 in Manila: the seconds are not written, and not rounded up either.
MOMENT = "2026-12-09T20:00:37+00:00"
WRITTEN = {
    "en": "Dec 10, 2026, 4:00 AM UTC+08:00",
    "es": "10 dic 2026, 4:00 UTC+08:00",
    "fil": "Dis 10, 2026, 4:00 AM UTC+08:00",
    "zh-Hans": "2026年12月10日 04:00 UTC+08:00",
    "zh-Hant": "2026年12月10日 凌晨4:00 UTC+08:00",
}
SECONDS = re.compile(r"\d:\d\d:\d\d")

# Every template that writes a moment with the filter, and the param it writes.
MOMENTS: dict[str, dict[str, Any]] = {
    **{name: {**params, "msisdn": MSISDN} for name, params in WARNINGS.items()},
    "security.new_device": {"device": "Firefox", "ip": "192.0.2.1"},
}
_PARAM = {
    "line.validity_ending": "validity_end",
    "line.grace_ending": "freeze_on",
    "line.freeze_warning": "freeze_on",
    "line.termination_warning": "terminate_on",
    "line.entered_grace": "grace_ends",
    "security.new_device": "time",
}


def _plain(text: str) -> str:
    return text.replace("\u202f", " ")


def test_every_template_that_writes_a_moment_is_checked_here() -> None:
    using = {p.stem for p in TEMPLATES_DIR.glob("*.jinja") if "|datetime" in p.read_text()}
    assert using == set(MOMENTS)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", sorted(MOMENTS))
def test_every_message_says_its_moment_to_the_minute(name: str, language: str) -> None:
    params = {**BASE, **MOMENTS[name], _PARAM[name]: MOMENT}
    message = render(name, language, params, zone="Asia/Manila")
    for part in (message.text, message.html, message.sms):
        assert WRITTEN[language] in _plain(part), (language, part)
        assert not SECONDS.search(part), (language, part)


def test_the_minute_is_babels_short_time_with_the_same_date_and_offset() -> None:
    when = datetime.fromisoformat(MOMENT)
    for language in LANGUAGES:
        minute = moment_text(language, when, None, "Asia/Manila", to_the_minute=True)
        full = moment_text(language, when, None, "Asia/Manila")
        assert _plain(minute) == WRITTEN[language]
        # The same date before and offset after; only the seconds go.
        assert SECONDS.search(full) and full.endswith(" UTC+08:00")
        assert full.split(" ")[0] == minute.split(" ")[0]
    # Mexico's Spanish writes its own clock, to the minute too.
    assert _plain(moment_text("es", when, "es_MX", "Asia/Manila", to_the_minute=True)) == (
        "10 dic 2026, 4:00 a.m. UTC+08:00"
    )
    # A moment at UTC: no offset, only "UTC".
    assert _plain(moment_text("en", datetime(2026, 12, 31, 9, 0, 59, tzinfo=UTC),
                              to_the_minute=True)) == "Dec 31, 2026, 9:00 AM UTC"  # fmt: skip


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
async def test_the_warning_as_sent_says_the_minute(
    db: Database, settings: Settings, inbox: SmtpInbox, language: str
) -> None:
    """By the worker, over SMTP and the SMS transport, in the reader's language and zone."""
    account_id, email, phone = await _customer(db, language=language, time_zone="Asia/Manila")
    dev_mailbox.clear()
    params = {"msisdn": MSISDN, "days_left": 1, "validity_end": MOMENT}
    await db.run(lambda s: notify(s, account_id=account_id, template="line.validity_ending",
                                  params=params))  # fmt: skip
    await _drain(db, settings)
    text = _mail_text(inbox, email)
    [sms] = _sms_to(phone)
    for part in (text, sms):
        assert WRITTEN[language] in part, part
        assert not SECONDS.search(part), part
    if language == "zh-Hans":
        assert "2026年12月10日 04:00 UTC+08:00" in text
    else:
        assert "until Dec 10, 2026, 4:00 AM UTC+08:00 (1 day)" in text
