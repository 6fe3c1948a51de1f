"""Payment provider adapters behind one protocol (`base.PaymentProvider`).

`configured_providers` builds the adapters whose credentials are all set; the adapters'
modules are imported only then (the Stripe SDK is large).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
]


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
    return found
