"""The public catalog: what can be bought, and how to pay."""

from __future__ import annotations

from fastapi import APIRouter

from simcharge.api.deps import API_PREFIX, DB, Language
from simcharge.catalog import service
from simcharge.catalog.schemas import PaymentMethodView, PlanView, ZoneView

router = APIRouter(prefix=API_PREFIX, tags=["catalog"])


@router.get("/plans", response_model=list[PlanView], summary="Plans on sale, with prices")
async def list_plans(db: DB, language: Language) -> list[PlanView]:
    async with db.read() as session:
        return await service.list_plans(session, language)


@router.get(
    "/payment-methods",
    response_model=list[PaymentMethodView],
    summary="Payment methods with currencies, fees and limits",
)
async def list_payment_methods(db: DB, language: Language) -> list[PaymentMethodView]:
    async with db.read() as session:
        return await service.list_methods(session, language)


@router.get("/zones", response_model=list[ZoneView], summary="Charging zones by country")
async def list_zones(db: DB, language: Language) -> list[ZoneView]:
    async with db.read() as session:
        return await service.list_zones(session, language)
