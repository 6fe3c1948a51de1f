"""The smallest amount each provider can take in a currency, in ISO 4217 minor units.

A total that is not a multiple of it is refused at checkout (`LossyConversionError`): PayPal
takes whole HUF and TWD only (two decimals in ISO 4217), Stripe three-decimal amounts (KWD…)
ending in 0. Quotes round the fee up so that the total is a multiple of it, and the catalog
refuses prices and fixed fees that are not (a price is never rounded)."""

from __future__ import annotations

from simcharge.kit.money import minor_exponent
from simcharge.payments.providers.paypal import NO_DECIMALS
from simcharge.payments.providers.stripe import THREE_DECIMAL, WHOLE_UNITS_ONLY, stripe_exponent


def payable_step(provider: str, currency: str) -> int:
    """Minor units of `currency` that `provider` takes one step of (1 for most)."""
    exponent = minor_exponent(currency)
    if provider == "paypal" and currency in NO_DECIMALS:
        return int(10**exponent)
    if provider == "stripe":
        if currency in WHOLE_UNITS_ONLY:
            return int(10**exponent)
        if currency in THREE_DECIMAL:
            return 10
        return int(10 ** max(0, exponent - stripe_exponent(currency)))
    return 1


def round_up_to_step(minor: int, step: int) -> int:
    return -(-minor // step) * step
