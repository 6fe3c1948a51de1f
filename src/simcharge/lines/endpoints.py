"""Lines and balances for the operator's integrations (API key with `lines:read`).

Each answer holds personal data (a line's number, ICCID, owner and last activity; its
balances), so each read is audited as the back office's reads are (`audit.record_read`: a
small transaction of its own after the read) — `line.view` or `line.balances`, by
`apikey:<prefix>`, on the line, with its owner's id and the key's client; never the number."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from simcharge.api.deps import API_PREFIX, DB, Integration, require_scope
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.lines import service
from simcharge.lines.models import Line
from simcharge.lines.schemas import LineBalances, LineView

router = APIRouter(prefix=API_PREFIX, tags=["lines"])

Reader = Annotated[Integration, require_scope("lines:read")]


def api_actor(request: Request, key: Integration) -> Actor:
    """An API key as its audit entries name it (`apikey:<prefix>`), from where it called."""
    return Actor(
        name=f"apikey:{key.key_prefix}", permissions=frozenset(), scopes=key.scopes,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def read_facts(key: Integration, line: Line, **more: Any) -> dict[str, Any]:
    """What a line read records besides its target: whose line it was when read (a line
    changes hands) and the key's client (the same across the key's rotations)."""
    return {"account_id": line.account_id, "client": key.client_id, **more}


async def _record(
    db: DB, request: Request, key: Integration, action: str, line: Line, **more: Any
) -> None:
    await audit.record_read(
        db, api_actor(request, key), action, target_type="line", target_id=line.id,
        details=read_facts(key, line, **more),
    )


@router.get("/lines", response_model=LineView, summary="Find a line by its number")
async def find_line(
    db: DB, key: Reader, request: Request, msisdn: str = Query(examples=["+14155550100"])
) -> LineView:
    async with db.read() as session:
        line = await service.find_line_by_msisdn(session, msisdn)
        view = LineView.model_validate(line)
    await _record(db, request, key, "line.view", line, by="msisdn")
    return view


@router.get("/lines/{line_id}", response_model=LineView, summary="A line")
async def get_line(db: DB, key: Reader, request: Request, line_id: uuid.UUID) -> LineView:
    async with db.read() as session:
        line = await service.get_line(session, line_id)
        view = LineView.model_validate(line)
    await _record(db, request, key, "line.view", line)
    return view


@router.get(
    "/lines/{line_id}/balances",
    response_model=LineBalances,
    summary="Money and units a line holds, with validity",
)
async def get_balances(
    db: DB, key: Reader, request: Request, line_id: uuid.UUID
) -> LineBalances:
    async with db.read() as session:
        line = await service.get_line(session, line_id)
        balances = await service.line_balances(session, line)
    await _record(db, request, key, "line.balances", line)
    return balances
