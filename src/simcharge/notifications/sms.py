"""What an SMS may be written in: GSM-7 (3GPP TS 23.038), 160 characters a segment, 153 in a
concatenated message. One character outside it sends the whole message as UCS-2: 70 characters
a segment, 67 concatenated — the same English text costs two or three times as much.

Typography that slips into Latin-script text (Babel's no-break spaces in times and amounts, a
dash, curly quotes, an ellipsis, a currency sign) is written with GSM-7 characters; a text that
needs UCS-2 anyway (Chinese, Spanish with its accents) is left as it is."""

from __future__ import annotations

import re

from babel.numbers import get_currency_symbol

GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The default alphabet."""
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
"""The extension table: each of these costs two septets."""

_GSM_EQUIVALENTS = str.maketrans(
    {
        # Spaces: Babel/CLDR put U+202F before "AM" and U+00A0 inside amounts.
        "\u00a0": " ",
        "\u2007": " ",
        "\u2009": " ",
        "\u200a": " ",
        "\u202f": " ",
        "\u2002": " ",
        "\u2003": " ",
        # Invisible marks (direction, joiners, byte order).
        "\u200b": "",
        "\u200c": "",
        "\u200d": "",
        "\u200e": "",
        "\u200f": "",
        "\u2060": "",
        "\ufeff": "",
        # Dashes, hyphens and the minus sign.
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        # The device names' separator ("Safari · iPhone").
        "\u00b7": "-",
        # Quotes.
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2026": "...",
    }
)


def is_gsm7(text: str) -> bool:
    return all(c in GSM7 or c in GSM7_EXTENSION for c in text)


def gsm_safe(text: str) -> str:
    """`text` with GSM-7 equivalents of its typography when that makes all of it GSM-7; else
    `text` unchanged: a message UCS-2 needs anyway keeps its own punctuation (Chinese "——",
    "……", full-width quotes) and its no-break spaces."""
    if is_gsm7(text):
        return text
    plain = text.translate(_GSM_EQUIVALENTS)
    return plain if is_gsm7(plain) else text


def sms_money(formatted: str, currency: str, locale: str) -> str:
    """An amount formatted for `locale` (`kit.money.format_money`) as an SMS writes it: its
    currency's symbol when that is GSM-7 ("$21.19", "€21.19"), else its ISO 4217 code
    ("PHP 21.19" for "₱21.19", "VND 123.456" for "123.456 ₫")."""
    if is_gsm7(formatted.translate(_GSM_EQUIVALENTS)):
        return formatted
    symbol = str(get_currency_symbol(currency, locale))
    if not symbol or symbol == currency or symbol not in formatted:
        return formatted
    # A code before the number is set apart from it, as CLDR writes "PHP 21.19".
    return re.sub(rf"{re.escape(currency)}(?=\d)", f"{currency} ", formatted.replace(symbol, currency))
