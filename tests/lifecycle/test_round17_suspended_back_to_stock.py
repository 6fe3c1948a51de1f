"""Seventeenth round: what becomes of a line suspended as lost or stolen when its account
closes. It goes back to stock **still suspended**: whoever attaches it next proves only that
they receive its SMS — possibly the person holding the stolen eSIM profile — so the suspension
holds until customer service resumes the line, once the profile is replaced. A line that was
not suspended goes back as it was. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from simcharge.accounts.models import Account
from simcharge.accounts.privacy import erase_account
from simcharge.accounts.service import attach_own_number
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.lifecycle.models import LineEvent
from simcharge.lifecycle.service import Policy, resume, suspend
from simcharge.lines.models import Line, LineState
from tests.factories import create_account, create_line

REASON = "SIM reported stolen, ticket T-R17"


async def _owned_line(
    db: Database, state: LineState, validity_end: datetime | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """An account with a line in `state`, suspended by customer service."""

    async def run(s: Any) -> tuple[uuid.UUID, uuid.UUID]:
        account = await create_account(s)
        made = await create_line(s, account_id=account.id, state=state)
        made.validity_end = validity_end
        await suspend(s, made, by="staff:ana", reason=REASON)
        return account.id, made.id

    return await db.run(run)


async def _close(db: Database, settings: Settings, account_id: uuid.UUID) -> None:
    async def run(s: Any) -> None:
        account = await s.get(Account, account_id)
        await erase_account(s, settings, account, utcnow())

    await db.run(run)


async def _line(db: Database, line_id: uuid.UUID) -> Line:
    async with db.read() as s:
        line = await s.get(Line, line_id, populate_existing=True)
        assert line is not None
        return line


async def _events(db: Database, line_id: uuid.UUID) -> list[tuple[str, str, str, str]]:
    async with db.read() as s:
        rows = (await s.execute(
            select(LineEvent).where(LineEvent.line_id == line_id)
            .order_by(LineEvent.created_at, LineEvent.id)
        )).scalars()  # fmt: skip
        return [(e.from_state, e.to_state, e.reason, e.actor) for e in rows]


async def test_a_suspended_line_goes_back_to_stock_suspended_and_stays_so_when_attached(
    db: Database, settings: Settings
) -> None:
    account_id, line_id = await _owned_line(
        db, LineState.active, validity_end=utcnow() + timedelta(days=10)
    )
    before = await _events(db, line_id)
    assert before[-1][:2] == ("active", "suspended")
    await _close(db, settings, account_id)

    line = await _line(db, line_id)
    assert (line.state, line.account_id, line.attached_at) == (LineState.suspended, None, None)
    assert await _events(db, line_id) == before  # closing changed nothing of the line's state

    # Whoever receives the line's SMS can attach it: they get it suspended, not in service.
    async def attach(s: Any) -> tuple[uuid.UUID, Line | None]:
        holder = await create_account(s, phone=line.msisdn, phone_verified_at=utcnow())
        return holder.id, await attach_own_number(s, holder, client=None, now=utcnow())

    holder_id, attached = await db.run(attach)
    assert attached is not None and attached.id == line_id
    line = await _line(db, line_id)
    assert (line.state, line.account_id) == (LineState.suspended, holder_id)

    # Customer service resumes it (the profile replaced): in service for its new holder.
    async def resumed(s: Any) -> LineState:
        locked = await s.get(Line, line_id, with_for_update=True)
        return await resume(s, locked, by="staff:ana", reason="new eSIM profile issued",
                            policy=Policy.of(settings), now=utcnow())

    assert await db.run(resumed) == LineState.active
    assert (await _line(db, line_id)).state == LineState.active


async def test_a_line_not_suspended_goes_back_as_it_was(
    db: Database, settings: Settings
) -> None:
    async def run(s: Any) -> tuple[uuid.UUID, uuid.UUID]:
        account = await create_account(s)
        made = await create_line(s, account_id=account.id, state=LineState.frozen)
        return account.id, made.id

    account_id, line_id = await db.run(run)
    before = await _events(db, line_id)
    await _close(db, settings, account_id)
    line = await _line(db, line_id)
    assert (line.state, line.account_id) == (LineState.frozen, None)
    assert await _events(db, line_id) == before
