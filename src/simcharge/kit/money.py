"""Money and units as integers: minor units of an ISO 4217 currency, or seconds, bytes, messages.

`Decimal` appears only at the edges (display, provider APIs); a conversion that would lose a
fraction raises instead of rounding.
"""

from __future__ import annotations

import copy
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import lru_cache

from babel.core import Locale
from babel.numbers import NumberPattern

from simcharge.kit.iso4217 import MINOR_UNITS

MINOR_BOUND = 2**63 - 1
"""The most any amount can be, in minor units or ledger units (a BIGINT): an amount read from
outside (a provider's answer) beyond it is no amount at all."""


class Unit(StrEnum):
    """The non-monetary units a ledger account can hold."""

    VOICE_S = "VOICE_S"
    """Seconds of voice calls."""
    DATA_B = "DATA_B"
    """Bytes of mobile data."""
    SMS = "SMS"
    """Text messages."""


class LossyConversionError(ValueError):
    """An amount has more decimal places than its currency's minor unit."""


def is_currency(code: str) -> bool:
    """An active ISO 4217 currency (see `kit.iso4217`)."""
    return code in MINOR_UNITS


def is_unit(code: str) -> bool:
    """A code a ledger account may hold: an ISO 4217 currency or one of `Unit`."""
    return code in Unit.__members__ or is_currency(code)


def minor_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit, as ISO 4217 gives them."""
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise ValueError(f"unknown currency {currency!r}") from None


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """`Decimal("10.50"), "USD"` → 1050. Raises if the amount has finer precision than allowed."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError) as exc:
        raise LossyConversionError(f"{amount!r} is not a number") from exc
    if not value.is_finite():
        raise LossyConversionError(f"{amount!r} is not a finite amount")
    scaled = value.scaleb(minor_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise LossyConversionError(
            f"{amount} has more decimals than {currency} allows ({minor_exponent(currency)})"
        )
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """1050, "USD" → Decimal("10.50")."""
    exp = minor_exponent(currency)
    return Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))


def format_money(minor: int, currency: str, locale: str | Locale = "en") -> str:
    """The amount in the locale's currency format, with the currency's ISO 4217 decimals: the
    amount charged, never CLDR's rounding for cash (COP 12,345.67, not 12,346; IQD 12.345)."""
    exponent = minor_exponent(currency)
    place = Locale.parse(locale) if isinstance(locale, str) else locale
    return str(
        _currency_pattern(place, exponent).apply(
            from_minor(minor, currency), place, currency=currency, currency_digits=False
        )
    )


@lru_cache(maxsize=256)
def _currency_pattern(locale: Locale, decimals: int) -> NumberPattern:
    pattern: NumberPattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (decimals, decimals)
    return pattern


def percent_of(minor: int, basis_points: int) -> int:
    """`basis_points`/10 000 of `minor`, rounded half up to the minor unit (fees are never float)."""
    numerator = minor * basis_points
    quotient, remainder = divmod(numerator, 10_000)
    return quotient + (1 if remainder * 2 >= 10_000 else 0)


def amounts_by_currency(raw: str) -> dict[str, int]:
    """`"JPY:150,BHD:400"` → `{"JPY": 150, "BHD": 400}`: an amount per ISO 4217 currency, in its
    minor units — how a setting says "the same value" in currencies whose minor units differ
    (100 is 1.00 US dollar but 100 yen and 0.100 dinar). Empty: none. Raises ValueError naming
    the part that is not `CUR:amount` (an amount at least zero), an unknown currency or one
    named twice."""
    amounts: dict[str, int] = {}
    for part in (p.strip() for p in raw.split(",")) if raw.strip() else ():
        code, sep, amount = part.partition(":")
        code, amount = code.strip(), amount.strip()
        if not sep or not amount.isascii() or not amount.isdigit() or len(amount) > 18:
            raise ValueError(f"{part!r} is not CURRENCY:amount in minor units")
        if not is_currency(code):
            raise ValueError(f"{code!r} is not an ISO 4217 currency")
        if code in amounts:
            raise ValueError(f"{code} is named twice")
        amounts[code] = int(amount)
    return amounts
