"""Names as a search compares them (`fold`): kept beside each customer's name
(`accounts.display_name_folded`, written with the name) and applied to what staff type, in
Python both times — so the two can never be folded differently, and the search reads a plain
column (`LIKE`, no function per row: folding in SQL made it five to nine times slower)."""

from __future__ import annotations

import re
import unicodedata

FOLDED_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
"""The combining marks a search ignores: the diacritics' blocks (acute, cedilla, tilde, ring,
the Vietnamese stacks…) — not the vowel signs of Indic scripts nor the voicing marks of kana,
which change the letter rather than accent it."""
_MARKS = re.compile(f"[{FOLDED_MARKS}]")


def fold(text: str) -> str:
    """`text` as a name search compares it: NFKD (accents apart from their letters, ligatures
    and compatibility forms spelt out), the marks of `FOLDED_MARKS` dropped, case-folded
    ("García", "GARCIA", "garcía" are all "garcia"; "Weiß" is "weiss"). It can be longer than
    `text` ("ß" is "ss", a Hangul syllable its two or three letters): the column it is kept in
    has no length."""
    bare = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return _MARKS.sub("", unicodedata.normalize("NFKD", bare.casefold()))
