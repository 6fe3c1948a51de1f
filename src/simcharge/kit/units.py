"""Quantities of units as a reader of a language writes them: minutes, MB/GB, SMS (translated
words, the locale's number format). The portal, the back office, e-mails, SMS and receipts all say
it the same way."""

from __future__ import annotations

from functools import lru_cache

from babel import Locale
from babel.numbers import format_decimal

from simcharge.kit.i18n import BABEL_LOCALES
from simcharge.kit.money import format_money
from simcharge.kit.translations import N_, translate


@lru_cache(maxsize=16)
def locale_of(language: str) -> Locale:
    """The language's Babel locale (parsed once)."""
    return Locale.parse(BABEL_LOCALES.get(language, "en"))


@lru_cache(maxsize=8192)
def units_text(language: str, amount: int, unit: str) -> str:
    """Seconds as minutes, bytes as MB/GB, messages as SMS, in the reader's number format."""
    loc = locale_of(language)
    if unit == "VOICE_S":
        n = format_decimal(amount // 60, locale=loc)
        return translate(language, N_("{n} min")).format(n=n)
    if unit == "DATA_B":
        mb = amount / 1024 / 1024
        if mb >= 1024:
            n = format_decimal(round(mb / 1024, 2), locale=loc)
            return translate(language, N_("{n} GB")).format(n=n)
        return translate(language, N_("{n} MB")).format(n=format_decimal(round(mb, 1), locale=loc))
    if unit == "SMS":
        return translate(language, N_("{n} SMS")).format(n=format_decimal(amount, locale=loc))
    return format_money(amount, unit, loc)
