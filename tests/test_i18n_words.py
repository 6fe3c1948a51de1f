"""What each language's reader sees in the words around numbers: plural agreement, one message
per meaning, ISO 4217 decimals, units and times in the staff member's language, list punctuation.
Each docstring says what was wrong before (the fifth review round)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.money import format_money
from simcharge.kit.translations import translate
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant, grant_units
from simcharge.notifications.templates import render
from tests.factories import load_demo_catalog
from tests.portal.helpers import new_customer, sign_in


@pytest.fixture
async def shop(db: Database) -> None:
    """The demo catalog in the test's database."""
    await db.run(load_demo_catalog)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


SAMPLE = {
    "operator": "simcharge",
    "base_url": "https://top.example",
    "username": "maria",
}


# 1. One msgid, two meanings: a closed *ticket* reads "deregistered" in Chinese.


def test_a_closed_ticket_is_not_called_deregistered_in_chinese() -> None:
    """`N_("Closed")` is both a terminated line (portal/web.py LINE_STATES) and a closed
    ticket (portal/help.py TICKET_STATES). The zh catalogs translate it for the line — 已注销 /
    已註銷 ("cancelled/deregistered", what one says of a phone number) — so a customer's closed
    question on the Help page reads "deregistered". The two need separate messages (msgctxt)."""
    from simcharge.portal.help import TICKET_STATES
    from simcharge.portal.web import LINE_STATES

    assert translate("zh-Hans", LINE_STATES["terminated"]) == "已注销"  # right for a line
    assert translate("zh-Hans", TICKET_STATES["closed"]) == "已关闭"
    assert translate("zh-Hant", TICKET_STATES["closed"]) == "已關閉"


# 2. Receipts count days without plural forms.


def test_a_receipt_says_valid_1_day_not_1_days() -> None:
    """orders/receipts.py writes `valid {days} days` and `line valid {days} more days` with a
    plain gettext, not a plural message nor Babel's day count (which the portal's home page
    uses for the very same package): a 1-day pass's PDF receipt says "valid 1 days" /
    "válido 1 días"."""
    from simcharge.orders.receipts import _units

    grant = {"amount": 1024**3, "unit": "DATA_B", "validity_days": 1}
    assert "1 days" not in _units("en", grant), _units("en", grant)
    assert "1 días" not in _units("es", grant), _units("es", grant)


# 3. "1 codes are left".


@pytest.mark.parametrize(("language", "wrong"), [("en", "1 codes"), ("es", "Quedan 1 códigos")])
def test_the_recovery_code_alert_agrees_with_one_code_left(language: str, wrong: str) -> None:
    """security.recovery_code_used.jinja is a plain `{% trans %}` with `{{ remaining }} codes
    are left`: with one recovery code left (the moment the alert matters most) the e-mail and
    SMS say "1 codes are left." / "Quedan 1 códigos." It needs `{% pluralize remaining %}`."""
    message = render("security.recovery_code_used", language, {**SAMPLE, "remaining": 1})
    for block in (message.text, message.html, message.sms):
        assert wrong not in block, block


# 4. The dashboard's "quedan" with a singular.


@pytest.mark.usefixtures("shop")
async def test_the_spanish_dashboard_agrees_with_one_day_left(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """"The line stays active until %(date)s (%(days)s left)." is translated "(quedan
    %(days)s)" and `days` is Babel's "1 día": a line with a day left reads "(quedan 1 día)".
    The notifications already pluralize the same thing ("te queda 1 GB" is tested in
    tests/test_i18n.py); the portal message needs a plural form too (queda / quedan)."""
    customer = await new_customer(db, settings, language="es")

    async def soon(s: AsyncSession) -> None:
        line = await s.get(Line, customer.line.id)
        assert line is not None
        line.validity_end = utcnow() + timedelta(hours=12)
        line.last_activity_at = utcnow()

    await db.run(soon)
    sign_in(client, customer)
    client.cookies.set("sc_lang", "es")
    shown = text_of((await client.get("/account")).text)
    assert "1 día" in shown, shown
    assert "quedan 1 día" not in shown


@pytest.mark.usefixtures("shop")
async def test_the_spanish_dashboard_agrees_with_one_gb_left(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """"%(left)s left of %(total)s" → "Quedan %(left)s de %(total)s": a 1 GB bundle shows
    "Quedan 1 GB de 1 GB" (and "Quedan 1 min", "Quedan 1 SMS"). Same agreement the e-mails
    get right with `units_count`."""
    customer = await new_customer(db, settings, language="es", with_units=False)

    async def grant(s: AsyncSession) -> None:
        line = await s.get(Line, customer.line.id)
        assert line is not None
        await grant_units(s, line, [UnitGrant("DATA_B", 1024**3, 30, ())], source="review:1")

    await db.run(grant)
    sign_in(client, customer)
    client.cookies.set("sc_lang", "es")
    shown = text_of((await client.get("/account")).text)
    assert "1 GB de 1 GB" in shown, shown
    assert "Quedan 1 GB" not in shown


# 5. Money rounded to CLDR's digits instead of the ISO 4217 minor unit.


@pytest.mark.parametrize(
    ("minor", "currency", "locale", "expected"),
    [
        (1234567, "COP", "es", "12.345,67"),
        (12345, "IDR", "en", "123.45"),
        (12345, "HUF", "en", "123.45"),
        (12345, "IQD", "en", "12.345"),
    ],
)
def test_money_is_shown_with_its_iso_4217_decimals(
    minor: int, currency: str, locale: str, expected: str
) -> None:
    """kit/money.format_money quantizes to ISO 4217 (kit.iso4217: COP, IDR, HUF have 2
    decimals, IQD 3) and then lets Babel format with CLDR's currency digits (0 for all four),
    which rounds: COP 12,345.67 is shown "12.346 COP", IDR 123.45 "IDR123", IQD 12.345 "IQD12".
    A receipt or a price then shows an amount other than the one charged. Fix:
    `format_currency(..., decimal_quantization=False)` (never rounds; from_minor already has
    the right exponent) or a pattern with the ISO number of decimals."""
    shown = format_money(minor, currency, locale)
    assert expected in shown, shown


# 6. Back office: amounts of units and times not in the staff member's locale.


def test_the_back_office_writes_units_in_the_staff_members_language() -> None:
    """backoffice/web.py `_units` formats with f-strings: "1.5 MB" for a Spanish-speaking
    agent (es writes 1,5), "100 min" in Chinese (the portal, e-mails and receipts say
    "100 分钟", kit/units says "The portal, the back office, e-mails, SMS and receipts all say
    it the same way"). It should call kit.units.units_text."""
    from simcharge.backoffice.web import environment

    es = environment("es").filters["units"]
    zh = environment("zh-Hans").filters["units"]
    assert es(1536 * 1024, "DATA_B") == "1,5 MB"
    assert zh(6000, "VOICE_S") == "100 分钟"


def test_the_back_office_says_which_zone_its_times_are_in() -> None:
    """backoffice/web.py's `when` filter is Babel's "short" datetime in UTC with no zone
    ("12/5/26, 2:30 PM"): an agent in Manila reading a customer's payment or sign-in time takes
    it for local time. The portal and messages use kit.moments.moment_text, which says UTC."""
    from simcharge.backoffice.web import environment

    when = environment("en").filters["when"]
    assert "UTC" in when(datetime(2026, 12, 5, 14, 30, tzinfo=UTC))


# 7. Chinese pages joining lists with ASCII ", " and "; ".


@pytest.mark.usefixtures("shop")
async def test_a_package_summary_in_chinese_uses_chinese_list_punctuation(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """topup.html joins a package's contents with hard-coded ", " and "; " ("100 分鐘, 1 GB,
    20 則簡訊; 30 天"); in Chinese a list is "100 分鐘、1 GB、20 則簡訊；30 天". Babel's
    `format_list` (or translated separators) gives each locale its own."""
    customer = await new_customer(db, settings, language="zh-Hant")
    sign_in(client, customer)
    client.cookies.set("sc_lang", "zh-Hant")
    shown = text_of((await client.get("/account/topup")).text)
    assert "100 分鐘" in shown
    assert "分鐘, " not in shown and "簡訊; " not in shown, shown
