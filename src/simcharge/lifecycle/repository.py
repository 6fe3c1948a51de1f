"""The lifecycle's set-based queries: each picks at most `limit` rows by an indexed range."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, insert, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import table_of, upsert_insert
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, PendingStatus
from simcharge.lifecycle.models import LifecycleMark, LineEvent
from simcharge.lines.models import Bucket, Line, LineState

lines = table_of(Line)
buckets = table_of(Bucket)
accounts = table_of(LedgerAccount)
transfers = table_of(LedgerTransfer)
events = table_of(LineEvent)
marks = table_of(LifecycleMark)

REFUND_HOLD = "clawback"
"""The code of a refund's pending transfers that take back what the order granted."""

_available = accounts.c.credits_posted - accounts.c.debits_posted - accounts.c.debits_pending


class LifecycleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def change_states(
        self,
        *,
        from_state: LineState,
        to_state: LineState,
        due: ColumnElement[bool],
        now: datetime,
        limit: int,
    ) -> list[Row[Any]]:
        """Move up to `limit` lines in `from_state` for which `due` holds to `to_state`, in one
        statement; rows locked by someone else (a top-up) are skipped, not waited for."""
        condition = and_(lines.c.state == from_state.value, due)
        chosen = (
            select(lines.c.id)
            .where(condition)
            .order_by(lines.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(lines)
            .where(lines.c.id.in_(chosen), condition)
            .values(state=to_state.value, state_changed_at=now)
            .returning(
                lines.c.id,
                lines.c.account_id,
                lines.c.msisdn,
                lines.c.currency,
                lines.c.wallet_account_id,
                lines.c.validity_end,
                lines.c.last_activity_at,
            )
        )
        return list(await self.session.execute(stmt))

    async def start_activity_clocks(self, limit: int) -> int:
        """Lines in service that never had activity count from when they entered their state."""
        chosen = (
            select(lines.c.id)
            .where(
                lines.c.state.in_([LineState.active.value, LineState.grace.value]),
                lines.c.last_activity_at.is_(None),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        result = await self.session.execute(
            update(lines)
            .where(lines.c.id.in_(chosen), lines.c.last_activity_at.is_(None))
            .values(last_activity_at=lines.c.state_changed_at)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def add_events(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(events), list(rows))

    async def expired_buckets(
        self, now: datetime, since: datetime | None, limit: int
    ) -> list[Row[Any]]:
        """Buckets past their end that still hold units nobody reserved."""
        stmt = (
            select(
                buckets.c.id,
                buckets.c.unit,
                buckets.c.line_id,
                _available.label("available"),
                accounts.c.debits_posted,
            )
            .join(accounts, accounts.c.id == buckets.c.id)
            .where(buckets.c.expires_at <= now, _available > 0)
            .order_by(buckets.c.expires_at, buckets.c.id)
            .limit(limit)
        )
        if since is not None:
            stmt = stmt.where(buckets.c.expires_at > since)
        return list(await self.session.execute(stmt))

    async def holdings(self, line_ids: Sequence[uuid.UUID]) -> list[Row[Any]]:
        """Every ledger account of these lines (wallet and buckets) that holds something."""
        if not line_ids:
            return []
        stmt = select(
            accounts.c.id, accounts.c.unit, accounts.c.line_id, _available.label("available")
        ).where(accounts.c.line_id.in_(list(line_ids)), _available > 0)
        return list(await self.session.execute(stmt))

    async def open_holds(self, line_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Pending transfers still holding something of these lines' accounts (a TMF654
        reservation, a charging session's quota), oldest first. Not a refund's hold on what the
        order granted (`orders.refunds._clawback`, code `clawback`): that is no longer the
        line's, and the refund posts it once the provider has paid the money back."""
        if not line_ids:
            return []
        # Only accounts that hold something back: a terminated line seldom does, and its
        # transfers are not walked then.
        theirs = select(accounts.c.id).where(
            accounts.c.line_id.in_(list(line_ids)), accounts.c.debits_pending > 0
        )
        stmt = (
            select(transfers.c.id)
            .where(
                transfers.c.debit_account_id.in_(theirs),
                transfers.c.pending_status == PendingStatus.pending.value,
                transfers.c.code != REFUND_HOLD,
            )
            .order_by(transfers.c.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def mark(
        self, name: str, default: datetime, *, formerly: str | None = None
    ) -> tuple[datetime, uuid.UUID | None]:
        """The pass's mark, locked until the transaction ends (one pass at a time). A new mark
        starts at `default`, or where the mark once named `formerly` stands, if there is one."""
        last_id = None
        if formerly is not None:
            before = (
                await self.session.execute(
                    select(marks.c.at, marks.c.last_id).where(marks.c.name == formerly)
                )
            ).first()
            if before is not None:
                default, last_id = before.at, before.last_id
        await self.session.execute(
            upsert_insert(self.session, marks)
            .values(name=name, at=default, last_id=last_id)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = (
            await self.session.execute(
                select(marks.c.at, marks.c.last_id).where(marks.c.name == name).with_for_update()
            )
        ).one()
        return row.at, row.last_id

    async def set_mark(self, name: str, at: datetime, last_id: uuid.UUID | None) -> None:
        await self.session.execute(
            update(marks).where(marks.c.name == name).values(at=at, last_id=last_id)
        )

    async def lines_in_window(
        self,
        *,
        state: LineState,
        column: str,
        after: datetime,
        after_id: uuid.UUID | None,
        until: datetime,
        limit: int,
        also: str | None = None,
        by: str | None = None,
    ) -> list[Row[Any]]:
        """Lines in `state` whose `column` (`anchor`) — or, with `by`, that column (`key`) — is
        in (after[, after_id], until], in keyset order; with `also`, that column too
        (`other`)."""
        anchor = lines.c[column]
        col = lines.c[by] if by else anchor
        start = col > after if after_id is None else or_(
            col > after, and_(col == after, lines.c.id > after_id)
        )
        other = (lines.c[also] if also else null()).label("other")
        stmt = (
            select(
                lines.c.id, lines.c.account_id, lines.c.msisdn, anchor.label("anchor"), other,
                col.label("key"),
            )
            .where(lines.c.state == state.value, start, col <= until, anchor.is_not(None))
            .order_by(col, lines.c.id)
            .limit(limit)
        )
        return list(await self.session.execute(stmt))

    async def count_by_state(self) -> dict[str, int]:
        rows = await self.session.execute(
            select(lines.c.state, func.count()).group_by(lines.c.state)
        )
        return {state: int(n) for state, n in rows}
