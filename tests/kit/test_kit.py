"""Money, ids, languages, phone numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from simcharge.kit.i18n import negotiate_language, normalize_language, pick_language
from simcharge.kit.ids import derived_id, uuid7
from simcharge.kit.money import (
    LossyConversionError,
    format_money,
    from_minor,
    is_currency,
    is_unit,
    percent_of,
    to_minor,
)
from simcharge.kit.phone import InvalidPhoneNumber, normalize_e164


def test_minor_units_per_currency() -> None:
    assert to_minor("10.50", "USD") == 1050
    assert to_minor(Decimal("68"), "CNY") == 6800
    assert to_minor("500", "JPY") == 500
    assert to_minor("1.234", "KWD") == 1234
    assert from_minor(1050, "USD") == Decimal("10.50")
    assert str(from_minor(5, "USD")) == "0.05"


def test_minor_units_are_iso_4217s_not_the_display_digits_of_cldr() -> None:
    # CLDR (Babel) shows HUF, IDR and IQD without decimals; ISO 4217 gives them 2, 2 and 3, and a
    # stored amount must keep its meaning whatever Babel release is installed.
    assert to_minor("1000.50", "HUF") == 100050
    assert to_minor("1.5", "IDR") == 150
    assert to_minor("0.125", "IQD") == 125
    assert to_minor("1.2345", "CLF") == 12345
    assert is_currency("XCG") and is_currency("ZWG")
    # metals, the testing code and withdrawn currencies hold no wallet
    assert not any(is_currency(code) for code in ("XAU", "XTS", "XXX", "DEM", "HRK", "usd"))
    with pytest.raises(ValueError, match="unknown currency"):
        to_minor("1", "DEM")


@pytest.mark.parametrize("bad", ["10.001", "0.5", "nan", "abc", "Infinity"])
def test_lossy_or_invalid_amounts_raise(bad: str) -> None:
    with pytest.raises(LossyConversionError):
        to_minor(bad, "JPY" if bad == "0.5" else "USD")


def test_units_and_formatting() -> None:
    assert is_unit("USD") and is_unit("VOICE_S") and is_unit("DATA_B") and not is_unit("MINUTES")
    assert format_money(123456, "USD", "en") == "$1,234.56"
    assert format_money(6800, "CNY", "zh_Hans_CN") == "¥68.00"
    assert format_money(1050, "USD", "es") == "10,50\xa0US$"


def test_percent_rounds_half_up_to_the_minor_unit() -> None:
    assert percent_of(1000, 349) == 35  # 34.9
    assert percent_of(100, 50) == 1  # 0.5 → 1
    assert percent_of(100, 49) == 0  # 0.49 → 0
    assert percent_of(0, 349) == 0


def test_ids() -> None:
    a, b = uuid7(), uuid7()
    assert a.version == 7 and a != b and a.int >> 80 <= b.int >> 80
    assert derived_id("order", 1) == derived_id("order", 1) != derived_id("order", 2)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("zh-TW,zh;q=0.9", "zh-Hant"),
        ("zh-CN", "zh-Hans"),
        ("zh-Hant-HK", "zh-Hant"),
        ("fr-FR,es;q=0.5", "es"),
        ("tl-PH", "fil"),
        ("de, en;q=0", "en"),
        ("es;q=0.2, fil;q=0.8", "fil"),
        ("garbage;;q=x", "en"),
    ],
)
def test_language_negotiation(header: str | None, expected: str) -> None:
    assert negotiate_language(header) == expected


def test_language_normalisation() -> None:
    assert normalize_language("es-MX") == "es"
    assert normalize_language("xx") is None


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("zh", "zh-Hans"), ("zh-CN", "zh-Hans"), ("zh-Hans-SG", "zh-Hans"), ("cmn", "zh-Hans"),
        ("zh-TW", "zh-Hant"), ("zh-Hant-HK", "zh-Hant"), ("zh-HK", "zh-Hant"),
        # The subtag saying Traditional may come later, and Cantonese is written in it: these
        # fell back to English (`yue…`, `cmn-TW`) or to Simplified (`zh-yue`, `zh-cmn-Hant`).
        ("zh-cmn-Hant", "zh-Hant"), ("zh-yue", "zh-Hant"), ("yue", "zh-Hant"),
        ("yue-HK", "zh-Hant"), ("cmn-TW", "zh-Hant"), ("cmn-Hant-TW", "zh-Hant"),
    ],
)
def test_every_way_of_naming_chinese_picks_its_script(tag: str, expected: str) -> None:
    assert normalize_language(tag) == expected


def test_an_explicit_choice_then_the_browser_then_the_operators_default() -> None:
    assert pick_language(None, "zh-TW", accept_language="es", default="fil") == "zh-Hant"
    assert pick_language("xx", None, accept_language="es-MX", default="fil") == "es"
    assert pick_language(None, accept_language="de", default="fil") == "fil"
    assert pick_language(accept_language=None, default="fil") == "fil"
    # an operator's default we do not speak falls back to English
    assert pick_language(accept_language="de", default="de") == "en"


def test_phone_numbers() -> None:
    assert normalize_e164("+1 (415) 555-0100") == "+14155550100"
    assert normalize_e164("0917 123 4567", region="PH") == "+639171234567"
    for bad in ("", "12", "+999 123", "hello"):
        with pytest.raises(InvalidPhoneNumber):
            normalize_e164(bad)


def test_quantities_read_alike_everywhere_in_the_readers_language() -> None:
    from simcharge.kit.units import units_text
    from simcharge.notifications.templates import environment

    assert units_text("en", 15000, "VOICE_S") == "250 min"
    assert units_text("zh-Hans", 15000, "VOICE_S") == "250 分钟"
    assert units_text("es", 5 * 1024**3 // 2, "DATA_B") == "2,5 GB"
    # e-mails, SMS and receipts use the same words as the portal
    for language in ("en", "zh-Hans", "zh-Hant", "fil", "es"):
        for amount, unit in ((15000, "VOICE_S"), (512 * 1024**2, "DATA_B"), (50, "SMS")):
            assert environment(language).filters["units"](amount, unit) == units_text(
                language, amount, unit
            )


def test_moments_read_alike_everywhere_in_utc() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from simcharge.kit.moments import moment_text
    from simcharge.notifications.templates import environment as message_environment
    from simcharge.portal.web import environment as page_environment

    when = datetime(2026, 12, 31, 18, 30, tzinfo=UTC)
    assert moment_text("en", when).replace("\u202f", " ") == "Dec 31, 2026, 6:30:00 PM UTC"
    # the same instant seen from Shanghai is still written in the reader's zone (UTC here)
    assert moment_text("en", when.astimezone(timezone(timedelta(hours=8)))) == moment_text(
        "en", when
    )
    # pages, e-mails, SMS and receipts use the same words (the filters take the reader's zone
    # from the render's context: `reader_zone`, UTC when none is named); messages say the
    # moment to the minute, the same date and offset
    for language in ("en", "zh-Hans", "zh-Hant", "fil", "es"):
        text = moment_text(language, when)
        to_the_minute = moment_text(language, when, to_the_minute=True)
        assert "UTC" in to_the_minute and "30:00" in text and "30:00" not in to_the_minute
        page = page_environment(language).from_string("{{ when|datetime }}")
        message = message_environment(language).from_string("{{ when|datetime }}")
        assert page.render(when=when) == text
        assert message.render(when=when) == to_the_minute
        assert message.render(when=when.isoformat()) == to_the_minute
