"""The audit log: who did what to what, with before/after and from where. Append-only."""

from __future__ import annotations

import getpass
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.backoffice.models import AuditEntry, StaffUser
from simcharge.backoffice.roles import Permission
from simcharge.db import Database
from simcharge.kit.clock import utcnow


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting in the back office: a signed-in staff member or an API key."""

    name: str
    """`staff:<username>` or `apikey:<prefix>`."""
    permissions: frozenset[Permission]
    staff: StaffUser | None = None
    session_id: uuid.UUID | None = None
    ip: str | None = None
    user_agent: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def staff_id(self) -> uuid.UUID | None:
        return self.staff.id if self.staff is not None else None

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def command_line_actor(command: str) -> Actor:
    """Whoever runs a `simcharge` command on a server: `cli:<OS user>`, from that host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(
        name=f"cli:{user}"[:80],
        permissions=frozenset(),
        ip=None,
        user_agent=f"simcharge {command} on {socket.gethostname()}",
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: uuid.UUID | str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Write one audit entry in the caller's transaction (so it exists iff the action does)."""
    entry = AuditEntry(
        at=now or utcnow(),
        staff_id=actor.staff_id,
        actor=actor.name,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        before=_plain(before) if before is not None else None,
        after=_plain(after) if after is not None else None,
        details=_plain(details or {}),
        ip=actor.ip,
        user_agent=(actor.user_agent or "")[:255] or None,
    )
    session.add(entry)
    await session.flush()
    return entry


def read_details(found: int, **filters: Any) -> dict[str, Any]:
    """What a list read was asked for (the filters given) and how many it found."""
    return {**{k: v for k, v in filters.items() if v}, "found": found}


async def record_read(
    db: Database,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: uuid.UUID | str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Personal or financial data read by staff (a search, a customer, orders, tickets, a
    report): its own small transaction after the read, as nothing else changed."""
    await db.run(
        lambda s: record(
            s, actor, action, target_type=target_type, target_id=target_id, details=details
        )
    )


def target_id_of(text: str | None) -> str | None:
    """A target id as the log keeps it: an id typed or pasted with spaces around it or in
    capitals (`0192…-ABCD`) is the same id; anything else is matched as typed, trimmed."""
    typed = (text or "").strip()
    if not typed:
        return None
    try:
        return str(uuid.UUID(typed))
    except ValueError:
        return typed


def entries_query(
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 100,
) -> Select[AuditEntry]:
    """The statement of `entries`. Every filter is an exact match on an indexed column: a
    target (`ix_audit_entries_target`, or `ix_audit_entries_target_id` for an id alone), who
    (`ix_audit_entries_actor`); an action alone reads the log newest first."""
    target_id = target_id_of(target_id)
    stmt = select(AuditEntry)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    if before is not None:
        at, last = before
        stmt = stmt.where(
            or_(AuditEntry.at < at, and_(AuditEntry.at == at, AuditEntry.id < last))
        )
    if target_type:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if actor:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    return stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)


async def entries(
    session: AsyncSession,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
    limit: int = 100,
) -> Sequence[AuditEntry]:
    """Newest first, filtered; `since` inclusive, `until` exclusive; `before` the (time, id)
    of the last entry of the page before (the next page: older ones)."""
    stmt = entries_query(
        target_type=target_type, target_id=target_id, actor=actor, action=action, since=since,
        until=until, before=before, limit=limit,
    )
    return (await session.execute(stmt)).scalars().all()
