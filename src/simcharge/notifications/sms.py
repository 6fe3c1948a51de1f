"""What an SMS may be written in: GSM-7 (3GPP TS 23.038), 160 characters a segment, 153 in a
concatenated message. One character outside it sends the whole message as UCS-2: 70 characters
a segment, 67 concatenated — the same English text costs two or three times as much.

Typography that slips into Latin-script text (Babel's no-break spaces in times and amounts, a
dash, curly quotes, an ellipsis, a currency sign) is written with GSM-7 characters; a text that
needs UCS-2 anyway (Chinese, Spanish with its accents) is left as it is.

A letter outside GSM-7 ("ó", "í", "á" in Spanish; "é", "ñ" and "ü" are GSM-7 and stay) is
written without its accent ("código" → "codigo") when that makes the whole message GSM-7 in
fewer segments: a one-time code then arrives as ONE message, read at a glance and typed before
it expires (a Spanish code to reset a password, unlock an account or add a line is 90–125
characters: two or more segments in UCS-2, one in GSM-7), and a notice costs its reader fewer
messages (the Spanish frozen-line notice under `owner_topup`, 202 characters, was four UCS-2
segments, and is two in GSM-7). A message that saves nothing so keeps its spelling, and one in
a script GSM-7 cannot write (Chinese) is never touched. `NOTICE_SEGMENTS` is what the tests hold
every notice to, in every language."""

from __future__ import annotations

import re
import unicodedata

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


NOTICE_SEGMENTS = 3
"""The most segments a notice's SMS (any template but a code's) may be, in any language, with
a 16-digit number and a 20-character operator name (`tests/notifications/test_sms_segments.py`).
A code's is one."""

SEGMENT_LIMITS = {"gsm7": (160, 153), "ucs2": (70, 67)}
"""Per encoding: what one message holds, and what each part of a concatenated one holds (the
rest of its 140 octets carries the header that joins the parts)."""


def is_gsm7(text: str) -> bool:
    return all(c in GSM7 or c in GSM7_EXTENSION for c in text)


def encoding(text: str) -> str:
    """`gsm7` or `ucs2`: how a network sends `text`."""
    return "gsm7" if is_gsm7(text) else "ucs2"


def length(text: str) -> int:
    """`text`'s length in its encoding's units: GSM-7 septets (an extension character is an
    escape and itself: 2), or UTF-16 code units (a character beyond the BMP, an emoji: 2)."""
    if is_gsm7(text):
        return sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def segments(text: str) -> int:
    """How many messages `text` is sent (and billed) as: GSM-7 160, or 153 a part; UCS-2 70,
    or 67 a part."""
    single, part = SEGMENT_LIMITS[encoding(text)]
    n = length(text)
    return 1 if n <= single else -(-n // part)


def _plain_letter(c: str) -> str:
    """A letter outside GSM-7 without its accents ("ó" → "o", "ç" → "c"), else `c`."""
    if c in GSM7 or c in GSM7_EXTENSION:
        return c
    base = "".join(b for b in unicodedata.normalize("NFD", c) if not unicodedata.combining(b))
    return base if base and is_gsm7(base) else c


def gsm_safe(text: str, *, spell_plain: bool = True) -> str:
    """`text` with GSM-7 equivalents of its typography when that makes all of it GSM-7; else
    `text` unchanged: a message UCS-2 needs anyway keeps its own punctuation (Chinese "——",
    "……", full-width quotes) and its no-break spaces. With `spell_plain` (every SMS we send),
    its letters outside GSM-7 also lose their accents when that makes it GSM-7 in fewer
    segments."""
    if is_gsm7(text):
        return text
    plain = text.translate(_GSM_EQUIVALENTS)
    if is_gsm7(plain):
        return plain
    if spell_plain:
        spelled = "".join(_plain_letter(c) for c in plain)
        if is_gsm7(spelled) and segments(spelled) < segments(text):
            return spelled
    return text


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
