"""Which provider serves which payment method in this process."""

from __future__ import annotations

import httpx

from simcharge.catalog.models import PaymentMethod
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lifecycle.service import Policy
from simcharge.payments.providers import PaymentProvider, configured_providers
from simcharge.payments.sandbox import MERCHANT, SandboxProvider
from simcharge.payments.sandbox import NAME as SANDBOX


class Providers:
    """The adapters whose credentials are set, plus the sandbox when it is on. In demos the
    sandbox stands in for a method whose provider has no credentials (`sandbox_substitutes`),
    so every method of the catalog can be tried; a method nobody serves is not offered."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, db: Database) -> None:
        self.settings = settings
        self.lifecycle = Policy.of(settings)
        """The lifecycle's policy, for the line a credited payment brings back."""
        self.by_name: dict[str, PaymentProvider] = dict(configured_providers(settings, http))
        if settings.sandbox_on:
            self.by_name[SANDBOX] = SandboxProvider(db, settings)

    def merchant_of(self, name: str) -> str | None:
        """Our merchant id at a provider, when its notifications report one to compare."""
        s = self.settings
        return {
            "alipay": s.alipay_app_id,
            "wechatpay": s.wechatpay_mchid,
            "paypal": s.paypal_merchant_id,
            SANDBOX: MERCHANT,
        }.get(name)

    def named(self, name: str) -> PaymentProvider | None:
        return self.by_name.get(name)

    def serving(self, method: PaymentMethod) -> PaymentProvider | None:
        own = self.by_name.get(method.provider)
        if own is not None:
            return own
        if self.settings.sandbox_substitutes:
            return self.by_name.get(SANDBOX)
        return None
