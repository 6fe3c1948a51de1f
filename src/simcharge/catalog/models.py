"""Zones, payment methods and plans. Texts are kept per language (`{"en": …, "zh-Hans": …}`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class Zone(Base):
    """Countries (ISO 3166-1 alpha-2) charged alike; one zone may be the catch-all default."""

    __tablename__ = "zones"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    names: Mapped[dict[str, str]] = mapped_column()
    countries: Mapped[list[str]] = mapped_column()
    is_default: Mapped[bool] = mapped_column(default=False)


class PaymentMethod(Base):
    __tablename__ = "payment_methods"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    provider: Mapped[str] = mapped_column(String(16))
    """`stripe`, `paypal`, `alipay`, `wechatpay` or `sandbox`."""
    names: Mapped[dict[str, str]] = mapped_column()
    descriptions: Mapped[dict[str, str]] = mapped_column(default=dict)
    currencies: Mapped[list[str]] = mapped_column()
    fee_percent_bp: Mapped[int] = mapped_column(default=0)
    """Fee as basis points of the price (349 = 3.49 %)."""
    fee_fixed: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Fixed fee per currency, in minor units."""
    min_amount: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_amount: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    names: Mapped[dict[str, str]] = mapped_column()
    descriptions: Mapped[dict[str, str]] = mapped_column(default=dict)
    wallet_credit: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Money put in the line's wallet, per wallet currency, in minor units."""
    buckets: Mapped[list[Any]] = mapped_column(default=list)
    """Unit grants: `{"unit": "DATA_B", "amount": 1073741824, "validity_days": 30, "zones": []}`."""
    validity_days: Mapped[int] = mapped_column(default=0)
    """How far the line's validity is extended."""
    methods: Mapped[list[str]] = mapped_column(default=list)
    """Payment methods that may sell it; empty: all."""
    active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    """Raised each time a catalog load changes the plan; orders keep the version they sold."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PlanPrice(Base):
    __tablename__ = "plan_prices"
    __table_args__ = (UniqueConstraint("plan_id", "currency"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column()
    """Minor units."""
