"""The public catalog: what can be bought, and how to pay."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request

from simcharge.api.deps import API_PREFIX, DB, Language
from simcharge.catalog import service
from simcharge.catalog.models import PaymentMethod
from simcharge.catalog.schemas import PaymentMethodView, PlanView, ZoneView
from simcharge.payments.registry import Providers

router = APIRouter(prefix=API_PREFIX, tags=["catalog"])


def _served(request: Request) -> Callable[[PaymentMethod], bool]:
    providers: Providers = request.app.state.providers
    return lambda method: providers.serving(method) is not None


@router.get("/plans", response_model=list[PlanView], summary="Plans on sale, with prices")
async def list_plans(db: DB, language: Language, request: Request) -> list[PlanView]:
    async with db.read() as session:
        return await service.list_plans(session, language, _served(request))


@router.get(
    "/payment-methods",
    response_model=list[PaymentMethodView],
    summary="Payment methods with currencies, fees and limits",
)
async def list_payment_methods(
    db: DB, language: Language, request: Request
) -> list[PaymentMethodView]:
    """Only methods that can be paid with here: a method whose provider has no credentials is
    not offered (in demos the sandbox stands in for it)."""
    async with db.read() as session:
        return await service.list_methods(session, language, _served(request))


@router.get("/zones", response_model=list[ZoneView], summary="Charging zones by country")
async def list_zones(db: DB, language: Language) -> list[ZoneView]:
    async with db.read() as session:
        return await service.list_zones(session, language)
