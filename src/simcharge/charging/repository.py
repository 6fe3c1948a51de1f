"""The queries of batch charging: usage records already charged, the lines records name, the
records written (COPY on PostgreSQL) and the lines' last activity."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Uuid, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.models import UsageRecord
from simcharge.db import dialect_name, table_of
from simcharge.ledger.repository import driver_in_transaction
from simcharge.lines.models import Line

usage_table = table_of(UsageRecord)
lines_table = table_of(Line)

USAGE_COLUMNS = tuple(c.name for c in usage_table.columns)
"""A usage row as `insert_records` takes it: a tuple in this order. Its `id` is the hex text of
the UUID, `line_id` its text, `taken` JSON text."""
_ID, _LINE_ID, _TAKEN = (USAGE_COLUMNS.index(n) for n in ("id", "line_id", "taken"))
_SLICE = 5000
"""Values per `IN (…)` on SQLite (its limit on parameters is 32,766)."""

# Charging marks a line's activity after it has locked the line's accounts (its pots); a top-up
# locks the line first, then those accounts. Waiting here for a line another transaction holds
# would close that cycle, and PostgreSQL would kill one of the two after `deadlock_timeout` (1 s
# of both waiting). So a line held by someone else is skipped (`SKIP LOCKED`): the mark is a
# throttled timestamp (`nchf.ACTIVITY_EVERY`), a top-up marks the line itself, and the line's
# next usage marks it again. SQLite has no row locks: there it is a plain update.
_line_not_held = (
    select(lines_table.c.id)
    .where(lines_table.c.id == bindparam("b_id"))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
SET_LAST_ACTIVITY = (
    update(lines_table)
    .where(lines_table.c.id == _line_not_held)
    .values(last_activity_at=bindparam("b_at"))
)
"""Parameters `b_id` (the line) and `b_at`."""


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.postgres = dialect_name(session) == "postgresql"

    async def charged_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these usage record ids (hex text) are recorded already."""
        if not ids:
            return set()
        if self.postgres:
            driver = await driver_in_transaction(self.session)
            if driver is not None:
                # One array parameter, encoded by asyncpg from the text: nothing per id in
                # Python, and no statement with thousands of parameters to plan.
                found = await driver.fetch(
                    "SELECT replace(id::text, '-', '') FROM usage_records WHERE id = ANY($1::uuid[])",
                    ids,
                )
                return {r[0] for r in found}
            stmt = select(usage_table.c.id).where(
                usage_table.c.id == any_(bindparam("ids", type_=ARRAY(Uuid())))
            )
            rows = await self.session.execute(stmt, {"ids": [uuid.UUID(hex=i) for i in ids]})
            return {u.hex for u in rows.scalars()}
        charged: set[str] = set()
        for i in range(0, len(ids), _SLICE):
            part = [uuid.UUID(hex=h) for h in ids[i : i + _SLICE]]
            rows = await self.session.execute(
                select(usage_table.c.id).where(usage_table.c.id.in_(part))
            )
            charged.update(u.hex for u in rows.scalars())
        return charged

    async def charged_facts(self, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """What the usage records with these ids (hex text) were charged for: service,
        quantity, started_at, country, the line's MSISDN and IMSI, and the zone (`''` once the
        privacy sweep took the record's detail away) — to tell a record
        imported again from another one under the same id. Only for records found charged
        (`charged_ids`): few, unless a file is imported again."""
        facts: dict[str, tuple[Any, ...]] = {}
        cols = (
            usage_table.c.id,
            usage_table.c.service,
            usage_table.c.quantity,
            usage_table.c.started_at,
            usage_table.c.country,
            lines_table.c.msisdn,
            lines_table.c.imsi,
            usage_table.c.zone,
        )
        for i in range(0, len(ids), _SLICE):
            part = [uuid.UUID(hex=h) for h in ids[i : i + _SLICE]]
            stmt = (
                select(*cols)
                .join(lines_table, lines_table.c.id == usage_table.c.line_id)
                .where(usage_table.c.id.in_(part))
            )
            for row in await self.session.execute(stmt):
                facts[row[0].hex] = tuple(row[1:])
        return facts

    async def lines_named(self, msisdns: Collection[str], imsis: Collection[str]) -> list[Row[Any]]:
        """The lines with these numbers or IMSIs: id, msisdn, imsi, currency, account_id,
        last_activity_at, state."""
        cols = (
            lines_table.c.state,
            lines_table.c.id,
            lines_table.c.msisdn,
            lines_table.c.imsi,
            lines_table.c.currency,
            lines_table.c.account_id,
            lines_table.c.last_activity_at,
        )
        found: list[Row[Any]] = []
        for column, keys in ((lines_table.c.msisdn, msisdns), (lines_table.c.imsi, imsis)):
            ordered = sorted(keys)
            for i in range(0, len(ordered), _SLICE):
                stmt = select(*cols).where(column.in_(ordered[i : i + _SLICE]))
                found += await self.session.execute(stmt)
        return found

    async def insert_records(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Write usage rows (see `USAGE_COLUMNS`) as `rows` yields them. On PostgreSQL they are
        streamed with COPY: the server stores them while the caller computes the next ones."""
        if self.postgres:
            driver = await driver_in_transaction(self.session)
            if driver is not None:
                # asyncpg sends what it has encoded whenever its buffer fills (half a MB).
                await driver.copy_records_to_table(
                    "usage_records", records=rows, columns=USAGE_COLUMNS
                )
                return
        batch: list[dict[str, Any]] = []
        for row in rows:
            values = dict(zip(USAGE_COLUMNS, row, strict=True))
            values["id"] = uuid.UUID(hex=row[_ID])
            values["line_id"] = uuid.UUID(row[_LINE_ID])
            values["taken"] = json.loads(row[_TAKEN])
            batch.append(values)
            if len(batch) >= _SLICE:
                await self.session.execute(usage_table.insert(), batch)
                batch = []
        if batch:
            await self.session.execute(usage_table.insert(), batch)

    async def set_last_activity(self, latest: dict[uuid.UUID, datetime]) -> None:
        """Mark these lines' activity, skipping any another transaction holds
        (`SET_LAST_ACTIVITY`)."""
        if latest:
            await self.session.execute(
                SET_LAST_ACTIVITY, [{"b_id": k, "b_at": v} for k, v in latest.items()]
            )
