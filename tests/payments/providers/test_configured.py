"""Which providers the settings make available."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from simcharge.config import Settings
from simcharge.payments.providers import PaymentProvider, configured_providers
from simcharge.payments.providers.alipay import AlipayProvider
from simcharge.payments.providers.paypal import SANDBOX_API, PayPalProvider
from simcharge.payments.providers.stripe import StripeProvider
from simcharge.payments.providers.wechatpay import WeChatPayProvider

from .conftest import private_pem, public_pem


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)


@pytest.fixture
def every_credential(
    tmp_path: Path, merchant_key: rsa.RSAPrivateKey, provider_key: rsa.RSAPrivateKey
) -> dict[str, Any]:
    key_file = tmp_path / "apiclient_key.pem"
    key_file.write_text(private_pem(merchant_key), encoding="utf-8")
    return {
        "stripe_secret_key": "sk_test_1",
        "stripe_webhook_secret": "whsec_1",
        "paypal_client_id": "client",
        "paypal_client_secret": "secret",
        "paypal_webhook_id": "WH1",
        "paypal_api_base": SANDBOX_API,
        "alipay_app_id": "2021000000000000",
        "alipay_private_key": private_pem(merchant_key, pkcs1=True),
        "alipay_public_key": public_pem(provider_key),
        "wechatpay_mchid": "1230000109",
        "wechatpay_appid": "wxd678efh567hg6787",
        "wechatpay_serial_no": "5157F09E",
        "wechatpay_private_key_file": key_file,
        "wechatpay_apiv3_key": "0123456789abcdefghijABCDEFGHIJ01",
        "wechatpay_platform_keys": {"PUB_KEY_ID_1": public_pem(provider_key)},
    }


async def test_every_provider_with_its_credentials_is_offered(every_credential: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as client:
        found = configured_providers(settings(**every_credential), client)
    assert set(found) == {"stripe", "paypal", "alipay", "wechatpay"}
    assert isinstance(found["stripe"], StripeProvider)
    assert isinstance(found["paypal"], PayPalProvider)
    assert isinstance(found["alipay"], AlipayProvider)
    assert isinstance(found["wechatpay"], WeChatPayProvider)
    assert all(isinstance(p, PaymentProvider) and p.name == name for name, p in found.items())
    assert found["paypal"].config.api_base == SANDBOX_API


async def test_a_provider_missing_any_credential_is_not_offered(
    every_credential: dict[str, Any],
) -> None:
    for missing in ("stripe_webhook_secret", "paypal_webhook_id", "alipay_public_key",
                    "wechatpay_platform_keys"):
        kw = {k: v for k, v in every_credential.items() if k != missing}
        async with httpx.AsyncClient() as client:
            found = configured_providers(settings(**kw), client)
        assert len(found) == 3, missing
    async with httpx.AsyncClient() as client:
        assert configured_providers(settings(), client) == {}


async def test_a_broken_key_stops_the_start_naming_the_setting(
    every_credential: dict[str, Any],
) -> None:
    kw = {**every_credential, "alipay_private_key": "not a key!"}
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="SIMCHARGE_ALIPAY_"):
            configured_providers(settings(**kw), client)
    kw = {**every_credential, "wechatpay_apiv3_key": "short"}
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="SIMCHARGE_WECHATPAY_"):
            configured_providers(settings(**kw), client)


def test_secrets_stay_hidden_and_platform_keys_come_from_json(
    monkeypatch: pytest.MonkeyPatch, provider_key: rsa.RSAPrivateKey
) -> None:
    monkeypatch.setenv("SIMCHARGE_STRIPE_SECRET_KEY", "sk_live_very_secret")
    monkeypatch.setenv(
        "SIMCHARGE_WECHATPAY_PLATFORM_KEYS", json.dumps({"PUB_KEY_ID_1": public_pem(provider_key)})
    )
    s = settings()
    assert "sk_live_very_secret" not in repr(s)
    assert s.stripe_secret_key is not None
    assert s.stripe_secret_key.get_secret_value() == "sk_live_very_secret"
    assert s.wechatpay_platform_keys == {"PUB_KEY_ID_1": public_pem(provider_key)}


def test_a_private_key_comes_inline_or_from_a_file_not_both(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        settings(alipay_private_key="x", alipay_private_key_file=tmp_path / "k.pem")
