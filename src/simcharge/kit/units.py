"""Quantities of units as a reader of a language writes them: minutes, MB/GB, SMS (translated
words, the locale's number format). The portal, the back office, e-mails, SMS and receipts all say
it the same way."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.numbers import format_decimal, format_percent

from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.money import format_money
from simcharge.kit.translations import N_, translate


@lru_cache(maxsize=16)
def locale_of(language: str) -> Locale:
    """The language's Babel locale (parsed once)."""
    return Locale.parse(BABEL_LOCALES.get(language, "en"))


@lru_cache(maxsize=64)
def parsed_locale(locale: str) -> Locale:
    """A regional locale (`es_MX`), parsed once."""
    return Locale.parse(locale)


def locale_for(language: str, locale: str | None) -> Locale:
    """The locale numbers are written and read in: a regional one (`es_MX`, a page's
    `Visitor.locale`), else the language's own."""
    return parsed_locale(locale) if locale is not None else locale_of(language)


def percent_text(fraction: Decimal, loc: Locale) -> str:
    """A fraction as a percentage in `loc`'s own pattern, with up to two decimals: "3.49%",
    Spain's "3,49 %" (a no-break space before the sign, as CLDR writes it; until the sixteenth
    round every locale got "#,##0.##%")."""
    pattern = loc.percent_formats[None].pattern.replace("#,##0", "#,##0.##", 1)
    return str(format_percent(fraction, pattern, locale=loc))


def shown_number(amount: int, unit: str) -> int | float | None:
    """The number `units_text` writes for `amount` of a unit: whole minutes, MB to one decimal
    (GB to two from 1,024 MB), SMS; None for money."""
    if unit == "VOICE_S":
        return amount // 60
    if unit == "DATA_B":
        mb = amount / 1024 / 1024
        return round(mb / 1024, 2) if mb >= 1024 else round(mb, 1)
    if unit == "SMS":
        return amount
    return None


def shown_count(amount: int, unit: str) -> int:
    """The number `units_text` writes for `amount` (minutes, MB or GB, SMS), as a count for
    gettext's plural rules. A fraction (1.5 GB) and money (written with its decimals, "1.00")
    count as 2: CLDR's "other" in every language we speak."""
    shown = shown_number(amount, unit)
    if shown is None:
        return 2
    return int(shown) if shown == int(shown) else 2


@lru_cache(maxsize=8192)
def units_text(language: str, amount: int, unit: str, locale: str | None = None) -> str:
    """Seconds as minutes, bytes as MB/GB, messages as SMS, in the reader's number format
    (`locale`: a regional one, else the language's)."""
    loc = locale_for(language, locale)
    n = shown_number(amount, unit)
    if n is None:
        return format_money(amount, unit, loc)
    text = format_decimal(n, locale=loc)
    if unit == "VOICE_S":
        return translate(language, N_("{n} min")).format(n=text)
    if unit == "DATA_B":
        big = amount / 1024 / 1024 >= 1024
        return translate(language, N_("{n} GB") if big else N_("{n} MB")).format(n=text)
    return translate(language, N_("{n} SMS")).format(n=text)
