"""Sixteenth round (a Spanish customer's walk): a percentage in the reader's own pattern. Every
locale got "#,##0.##%", so Spain read "comisión: 3,49% + 0,49 US$"; CLDR writes "3,49 %" there,
with a no-break space."""

from __future__ import annotations

from decimal import Decimal

import pytest
from babel import Locale

from simcharge.kit.units import percent_text


@pytest.mark.parametrize(
    ("locale", "fraction", "expected"),
    [
        ("en", "0.0349", "3.49%"),
        ("en", "0.02", "2%"),
        ("es_ES", "0.0349", "3,49\xa0%"),
        ("es_ES", "0.02", "2\xa0%"),
        ("es_MX", "0.0349", "3.49%"),
        ("fil", "0.035", "3.5%"),
        ("zh_Hans", "0.0349", "3.49%"),
        ("zh_Hant", "0.1", "10%"),
    ],
)
def test_a_percentage_is_written_as_the_locale_writes_it(
    locale: str, fraction: str, expected: str
) -> None:
    assert percent_text(Decimal(fraction), Locale.parse(locale)) == expected


def test_never_more_than_two_decimals() -> None:
    assert percent_text(Decimal("0.034999"), Locale.parse("en")) == "3.5%"
