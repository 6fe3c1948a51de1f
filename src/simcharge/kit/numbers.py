"""Numbers as people type them on a page, read strictly in the page's number format: the
customer portal's amounts (`portal.transfers`) and the back office's (`parse_amount`)."""

from __future__ import annotations

import re
from functools import lru_cache

from babel import Locale
from babel.numbers import get_decimal_symbol, get_group_symbol


@lru_cache(maxsize=64)
def written_number(loc: Locale, *, signed: bool = False) -> re.Pattern[str]:
    """An amount as a person writes it in `loc`'s number format: ASCII digits, grouped by
    thousands with its grouping separator or not at all, and at most one decimal separator
    followed by digits (`1,000.50`, `1000.50`, `5` in English; `1.000,50`, `5,50` in Spain's
    Spanish); `signed`: a leading `-` may take back (a back-office adjustment). No `+`, exponent,
    underscore, leading decimal separator or other digits (Arabic-Indic, full-width): those are
    not understood — `Decimal` alone would read `1_0`, `1E+1` or `٥`, and the page would then
    show a number nobody typed. How many decimals the unit takes is said after."""
    group, decimal = get_group_symbol(loc), get_decimal_symbol(loc)
    groups = re.escape(group)
    if group.isspace():  # a (narrow) no-break space: typed as a space
        groups = f"[{re.escape(group)} ]"
    sign = "-?" if signed else ""
    return re.compile(
        rf"{sign}(?:[0-9]{{1,3}}(?:{groups}[0-9]{{3}})+|[0-9]+)(?:{re.escape(decimal)}[0-9]+)?"
    )
