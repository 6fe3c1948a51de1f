"""Queries about the catalog."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.catalog.models import PaymentMethod, Plan, PlanPrice, Zone


class CatalogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def zones(self) -> Sequence[Zone]:
        return (await self.session.execute(select(Zone).order_by(Zone.code))).scalars().all()

    async def methods(self, *, enabled_only: bool) -> Sequence[PaymentMethod]:
        stmt = select(PaymentMethod).order_by(PaymentMethod.sort_order, PaymentMethod.code)
        if enabled_only:
            stmt = stmt.where(PaymentMethod.enabled.is_(True))
        return (await self.session.execute(stmt)).scalars().all()

    async def method_by_code(self, code: str) -> PaymentMethod | None:
        stmt = select(PaymentMethod).where(PaymentMethod.code == code)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def plans(self, *, active_only: bool) -> Sequence[Plan]:
        stmt = select(Plan).order_by(Plan.sort_order, Plan.code)
        if active_only:
            stmt = stmt.where(Plan.active.is_(True))
        return (await self.session.execute(stmt)).scalars().all()

    async def plan_by_code(self, code: str) -> Plan | None:
        return (
            await self.session.execute(select(Plan).where(Plan.code == code))
        ).scalar_one_or_none()

    async def prices_by_plan(self) -> dict[uuid.UUID, dict[str, int]]:
        found: dict[uuid.UUID, dict[str, int]] = {}
        for p in (await self.session.execute(select(PlanPrice))).scalars():
            found.setdefault(p.plan_id, {})[p.currency] = p.amount
        return found

    async def prices_of(self, plan_id: uuid.UUID) -> dict[str, int]:
        stmt = select(PlanPrice).where(PlanPrice.plan_id == plan_id)
        return {p.currency: p.amount for p in (await self.session.execute(stmt)).scalars()}

    async def replace_prices(self, plan_id: uuid.UUID, prices: Sequence[PlanPrice]) -> None:
        await self.session.execute(delete(PlanPrice).where(PlanPrice.plan_id == plan_id))
        self.session.add_all(prices)
