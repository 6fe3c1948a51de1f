"""Lines and balances for the operator's integrations (API key with `lines:read`)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query

from simcharge.api.deps import API_PREFIX, DB, require_scope
from simcharge.lines import service
from simcharge.lines.schemas import LineBalances, LineView

router = APIRouter(prefix=API_PREFIX, tags=["lines"], dependencies=[require_scope("lines:read")])


@router.get("/lines", response_model=LineView, summary="Find a line by its number")
async def find_line(db: DB, msisdn: str = Query(examples=["+14155550100"])) -> LineView:
    async with db.read() as session:
        return LineView.model_validate(await service.find_line_by_msisdn(session, msisdn))


@router.get("/lines/{line_id}", response_model=LineView, summary="A line")
async def get_line(db: DB, line_id: uuid.UUID) -> LineView:
    async with db.read() as session:
        return LineView.model_validate(await service.get_line(session, line_id))


@router.get(
    "/lines/{line_id}/balances",
    response_model=LineBalances,
    summary="Money and units a line holds, with validity",
)
async def get_balances(db: DB, line_id: uuid.UUID) -> LineBalances:
    async with db.read() as session:
        line = await service.get_line(session, line_id)
        return await service.line_balances(session, line)
