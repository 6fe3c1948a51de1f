"""`/api/v1/admin/…`: the back office's actions for the operator's own tools — a staff bearer
token (`POST /admin/session`, password + authenticator code) or an API key with scopes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.api.deps import API_PREFIX, DB, AppSettings
from simcharge.backoffice import audit
from simcharge.backoffice.audit import Actor
from simcharge.backoffice.deps import api_actor, require
from simcharge.backoffice.roles import Permission, permissions_of
from simcharge.backoffice.schemas import AuditEntryOut, StaffLoginIn, StaffTokenOut
from simcharge.backoffice.staff import StaffLoginFailed, end_session, sign_in
from simcharge.kit.clock import utcnow

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])
AuditReader = Annotated[Actor, require(Permission.audit_read)]


@router.post("/session", response_model=StaffTokenOut, summary="Staff sign-in (token)")
async def staff_session(
    body: StaffLoginIn, request: Request, db: DB, settings: AppSettings
) -> StaffTokenOut:
    """Password and authenticator code at once (a staff member enrols at `/backoffice` first)."""
    ip = request.client.host if request.client else None
    ua = request.headers.get("user-agent")
    now = utcnow()

    async def attempt(s: AsyncSession) -> StaffTokenOut | None:
        found = await sign_in(
            s,
            settings,
            username=body.username,
            password=body.password,
            code=body.code,
            ip=ip,
            user_agent=ua,
            now=now,
        )
        if found is None:
            await audit.record(
                s,
                Actor(
                    name=f"staff:{body.username.strip().casefold()[:60]}",
                    permissions=frozenset(),
                    ip=ip,
                    user_agent=ua,
                ),
                "staff.login_failed",
                details={"via": "api"},
            )
            return None
        staff, issued = found
        actor = Actor(
            name=f"staff:{staff.username}",
            permissions=frozenset(),
            staff=staff,
            ip=ip,
            user_agent=ua,
        )
        await audit.record(
            s, actor, "staff.login", target_type="staff", target_id=staff.id, details={"via": "api"}
        )
        return StaffTokenOut(
            token=issued.token,
            expires_at=issued.row.expires_at,
            username=staff.username,
            role=staff.role,
            permissions=sorted(p.value for p in permissions_of(staff.role)),
        )

    out = await db.run(attempt)
    if out is None:
        raise StaffLoginFailed()
    return out


@router.delete("/session", status_code=204, summary="End this staff token")
async def end_staff_session(db: DB, actor: Annotated[Actor, Depends(api_actor)]) -> None:
    if actor.session_id is None:
        return
    sid = actor.session_id

    async def end(s: AsyncSession) -> None:
        await end_session(s, sid, utcnow())
        await audit.record(
            s,
            actor,
            "staff.logout",
            target_type="staff",
            target_id=actor.staff_id,
            details={"via": "api"},
        )

    await db.run(end)


@router.get("/audit", response_model=list[AuditEntryOut], summary="The audit log, newest first")
async def audit_log(
    actor: AuditReader,
    db: DB,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    who: Annotated[str | None, Query(max_length=80, description="`staff:<name>`…")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditEntryOut]:
    async with db.read() as s:
        rows = await audit.entries(
            s,
            target_type=target_type,
            target_id=target_id,
            actor=who,
            action=action,
            limit=limit,
        )
    return [AuditEntryOut.model_validate(r) for r in rows]
