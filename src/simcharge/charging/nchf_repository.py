"""The rows an Nchf update reads and writes besides the ledger's: its charging session, locked,
with its line; then the session written back with the update's usage records.

The network sends these many times a second, so each is one statement. On PostgreSQL they go
as they are on the session's asyncpg connection, in the session's transaction (as the ledger's
one-statement transfer does): SQLAlchemy's execution machinery costs several times what the
statement does. Elsewhere the same through SQLAlchemy Core. Either way the objects returned
are not tracked by the ORM: what is written is written here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.models import ChargingSession, UsageRecord
from simcharge.db import dialect_name, table_of
from simcharge.ledger.repository import driver_in_transaction
from simcharge.lines.models import Line

sessions = table_of(ChargingSession)
lines = table_of(Line)
usage_records = table_of(UsageRecord)


def _attributes(model: type[Any]) -> dict[str, str]:
    """A model's attribute names and their columns' names."""
    return {a.key: a.columns[0].name for a in sa_inspect(model).column_attrs}


SESSION_COLUMNS = _attributes(ChargingSession)
LINE_COLUMNS = _attributes(Line)
WRITTEN = ("state", "zone", "country", "sequence", "answers", "groups", "deadline", "updated_at")
"""What an update changes in its session (attribute and column names alike)."""
_JSON = frozenset({"answers", "groups", "taken"})

# Column names come from the models and the code, never from a request; values are bound.
_LOCK = (
    "SELECT "  # noqa: S608
    + ", ".join(
        [f"s.{c} AS s_{a}" for a, c in SESSION_COLUMNS.items()]
        + [f"l.{c} AS l_{a}" for a, c in LINE_COLUMNS.items()]
    )
    + " FROM charging_sessions s JOIN lines l ON l.id = s.line_id WHERE s.id = $1 FOR UPDATE OF s"
)
_SAVE = (
    "UPDATE charging_sessions SET "  # noqa: S608
    + ", ".join(f"{c} = ${i}" for i, c in enumerate(WRITTEN, start=2))
    + " WHERE id = $1"
)


def _from_json(value: Any) -> Any:
    # SQLAlchemy's asyncpg dialect installs a JSON codec on its connections; be sure anyway.
    return json.loads(value) if isinstance(value, str) else value


class ChargingSessions:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _driver(self) -> Any | None:
        if dialect_name(self.session) != "postgresql":
            return None
        return await driver_in_transaction(self.session)

    async def lock(self, ref: uuid.UUID) -> tuple[ChargingSession, Line] | None:
        """The session `ref` locked for the update, and its line; None if there is none."""
        driver = await self._driver()
        if driver is not None:
            row = await driver.fetchrow(_LOCK, ref)
            if row is None:
                return None
            values: Any = row
        else:
            stmt = (
                select(
                    *(sessions.c[c].label(f"s_{a}") for a, c in SESSION_COLUMNS.items()),
                    *(lines.c[c].label(f"l_{a}") for a, c in LINE_COLUMNS.items()),
                )
                .join(lines, lines.c.id == sessions.c.line_id)
                .where(sessions.c.id == ref)
                .with_for_update(of=sessions)
            )
            found = (await self.session.execute(stmt)).one_or_none()
            if found is None:
                return None
            values = found._mapping
        cs = ChargingSession(**{a: values[f"s_{a}"] for a in SESSION_COLUMNS})
        cs.answers, cs.groups = _from_json(cs.answers), _from_json(cs.groups)
        return cs, Line(**{a: values[f"l_{a}"] for a in LINE_COLUMNS})

    async def save(self, cs: ChargingSession, records: Sequence[dict[str, Any]]) -> None:
        """Write what an update changed in `cs`, and its usage records: one statement on
        PostgreSQL (`WITH recorded AS (INSERT …) UPDATE …`)."""
        driver = await self._driver()
        if driver is None:
            if records:
                await self.session.execute(usage_records.insert(), list(records))
            await self.session.execute(
                update(sessions)
                .where(sessions.c.id == cs.id)
                .values({c: getattr(cs, c) for c in WRITTEN})
            )
            return
        params: list[Any] = [cs.id]
        params += [
            json.dumps(getattr(cs, c)) if c in _JSON else getattr(cs, c) for c in WRITTEN
        ]
        sql = _SAVE
        if records:
            columns = list(records[0])
            rows = []
            for record in records:
                rows.append(
                    "("
                    + ", ".join(f"${len(params) + i}" for i in range(1, len(columns) + 1))
                    + ")"
                )
                params += [json.dumps(record[c]) if c in _JSON else record[c] for c in columns]
            sql = (
                f"WITH recorded AS (INSERT INTO usage_records ({', '.join(columns)}) "  # noqa: S608
                f"VALUES {', '.join(rows)}) {_SAVE}"
            )
        await driver.execute(sql, *params)
