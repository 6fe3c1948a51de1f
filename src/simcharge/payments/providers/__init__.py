"""Payment provider adapters behind one protocol (`base.PaymentProvider`).

`configured_providers` builds the adapters whose credentials are all set; the adapters'
modules are imported only then (the Stripe SDK is large). Each adapter's calls to its provider
are counted there (`simcharge_provider_calls_total{provider,call,outcome}`, `count_calls`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from simcharge.payments.providers.base import (
    Checkout,
    CheckoutRequest,
    Dispute,
    ListedRefund,
    Notification,
    NotificationRejected,
    PaymentFlow,
    PaymentProvider,
    PaymentState,
    PaymentStatus,
    ProviderError,
    RefundRequest,
    RefundResult,
    RefundState,
    WebhookReply,
)

if TYPE_CHECKING:
    import httpx

    from simcharge.config import Settings

__all__ = [
    "Checkout",
    "CheckoutRequest",
    "Dispute",
    "ListedRefund",
    "Notification",
    "NotificationRejected",
    "PaymentFlow",
    "PaymentProvider",
    "PaymentState",
    "PaymentStatus",
    "ProviderError",
    "RefundRequest",
    "RefundResult",
    "RefundState",
    "WebhookReply",
    "configured_providers",
    "count_calls",
]

COUNTED_CALLS = (
    "create_checkout", "query", "capture", "close", "refund", "query_refund", "find_refund"
)
"""The adapters' methods that call the provider's API (a notification is verified, not asked
for: `simcharge_webhooks_total` counts those)."""
UNREACHABLE_CODES = frozenset({"timeout", "network_error"})
"""`ProviderError` codes for a call that got no answer (`_common.send`, the Stripe client)."""


def call_outcome(exc: BaseException | None) -> str:
    """`ok`, `unreachable` (no answer: a network error, a timeout) or `error` (an answer we
    cannot use: a refusal, a 5xx, a malformed body)."""
    if exc is None:
        return "ok"
    if isinstance(exc, ProviderError) and exc.code in UNREACHABLE_CODES:
        return "unreachable"
    return "error"


def _counted(
    provider: str, call: str, method: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    from simcharge.metrics import PROVIDER_CALLS

    @functools.wraps(method)
    async def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await method(*args, **kwargs)
        except Exception as exc:
            PROVIDER_CALLS.labels(provider, call, call_outcome(exc)).inc()
            raise
        PROVIDER_CALLS.labels(provider, call, "ok").inc()
        return result

    return counted


def count_calls(adapter: PaymentProvider) -> PaymentProvider:
    """`adapter`, its calls to the provider counted in `simcharge_provider_calls_total` (its
    bound methods wrapped on the instance: it stays an instance of its class)."""
    for call in COUNTED_CALLS:
        method = getattr(adapter, call, None)
        if method is not None and not getattr(method, "__wrapped__", None):
            setattr(adapter, call, _counted(adapter.name, call, method))
    return adapter


def _private_key(inline: SecretStr | None, path: Path | None) -> SecretStr | None:
    if inline is not None:
        return inline
    if path is not None:
        return SecretStr(path.read_text(encoding="utf-8"))
    return None


def configured_providers(
    settings: Settings, client: httpx.AsyncClient
) -> dict[str, PaymentProvider]:
    """An adapter for each provider whose required credentials are all set, by provider name.

    A method whose credentials are missing is not offered. A credential that is set but does
    not load (a broken PEM, a short APIv3 key) raises ValueError naming the setting: better to
    refuse to start than to fail at the first payment.
    """
    found: dict[str, PaymentProvider] = {}
    s = settings
    if s.stripe_secret_key and s.stripe_webhook_secret:
        from simcharge.payments.providers import stripe

        stripe_config = stripe.StripeConfig(
            s.stripe_secret_key,
            s.stripe_webhook_secret,
            api_base=s.stripe_api_base or stripe.LIVE_API,
        )
        found["stripe"] = stripe.StripeProvider(stripe_config, client)
    if s.paypal_client_id and s.paypal_client_secret and s.paypal_webhook_id:
        from simcharge.payments.providers.paypal import LIVE_API, PayPalConfig, PayPalProvider

        found["paypal"] = PayPalProvider(
            PayPalConfig(
                s.paypal_client_id,
                s.paypal_client_secret,
                s.paypal_webhook_id,
                api_base=s.paypal_api_base or LIVE_API,
            ),
            client,
        )
    alipay_key = _private_key(s.alipay_private_key, s.alipay_private_key_file)
    if s.alipay_app_id and alipay_key and s.alipay_public_key:
        from simcharge.payments.providers.alipay import LIVE_GATEWAY, AlipayConfig, AlipayProvider

        config = AlipayConfig(
            s.alipay_app_id,
            alipay_key,
            s.alipay_public_key,
            gateway=s.alipay_gateway or LIVE_GATEWAY,
            seller_id=s.alipay_seller_id or None,
        )
        try:
            found["alipay"] = AlipayProvider(config, client)
        except ValueError as exc:
            raise ValueError(f"Alipay keys (SIMCHARGE_ALIPAY_*): {exc}") from exc
    wechat_key = _private_key(s.wechatpay_private_key, s.wechatpay_private_key_file)
    if (
        s.wechatpay_mchid
        and s.wechatpay_appid
        and s.wechatpay_serial_no
        and wechat_key
        and s.wechatpay_apiv3_key
        and s.wechatpay_platform_keys
    ):
        from simcharge.payments.providers import wechatpay

        wechat_config = wechatpay.WeChatPayConfig(
            s.wechatpay_mchid,
            s.wechatpay_appid,
            s.wechatpay_serial_no,
            wechat_key,
            s.wechatpay_apiv3_key,
            dict(s.wechatpay_platform_keys),
            api_base=s.wechatpay_api_base or wechatpay.LIVE_API,
        )
        try:
            found["wechatpay"] = wechatpay.WeChatPayProvider(wechat_config, client)
        except ValueError as exc:
            raise ValueError(f"WeChat Pay keys (SIMCHARGE_WECHATPAY_*): {exc}") from exc
    return {name: count_calls(adapter) for name, adapter in found.items()}
