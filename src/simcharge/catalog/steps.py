"""The smallest amount each provider can take in a currency, in ISO 4217 minor units.

A total that is not a multiple of it is refused at checkout (`LossyConversionError`): PayPal
takes whole HUF and TWD only (two decimals in ISO 4217), Stripe three-decimal amounts (KWD…)
ending in 0. Quotes round the fee up so that the total is a multiple of it, and the catalog
refuses prices and fixed fees that are not (a price is never rounded). Each provider's module
declares its own rule (`amount_step`), next to the conversion that enforces it."""

from __future__ import annotations

from collections.abc import Callable

from simcharge.payments.providers import alipay, paypal, stripe, wechatpay

_AMOUNT_STEPS: dict[str, Callable[[str], int]] = {
    paypal.NAME: paypal.amount_step,
    stripe.NAME: stripe.amount_step,
}
"""The providers with an amount rule; the others (Alipay and WeChat Pay in fen, the sandbox)
take any amount."""


_ONLY_CURRENCY: dict[str, str] = {
    alipay.NAME: alipay.CURRENCY,
    wechatpay.NAME: wechatpay.CURRENCY,
}
"""The providers that take one currency only (domestic Alipay and WeChat Pay merchants: CNY);
their adapters refuse any other at checkout (`unsupported_currency`)."""


_CURRENCIES: dict[str, frozenset[str]] = {
    paypal.NAME: paypal.CURRENCIES,
}
"""The providers that take a known list of currencies only; the catalog refuses others (Stripe
takes some 135, which its account's country narrows further: not listed here)."""


def takes_currency(provider: str, currency: str) -> bool:
    """Whether `provider` takes `currency` at all, as far as its documentation lists them."""
    only = _ONLY_CURRENCY.get(provider)
    if only is not None:
        return currency == only
    listed = _CURRENCIES.get(provider)
    return listed is None or currency in listed


def only_currency(provider: str) -> str | None:
    """The one currency `provider` takes, if it takes one only (the catalog refuses others)."""
    return _ONLY_CURRENCY.get(provider)


def payable_step(provider: str, currency: str) -> int:
    """Minor units of `currency` that `provider` takes one step of (1 for most)."""
    rule = _AMOUNT_STEPS.get(provider)
    return rule(currency) if rule is not None else 1


def round_up_to_step(minor: int, step: int) -> int:
    return -(-minor // step) * step
