"""Every query the ledger runs. Core statements: this is the hottest path in simcharge."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence, Sized
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from simcharge.db import dialect_name, table_of, upsert_insert
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, PendingStatus

accounts = table_of(LedgerAccount)
transfers = table_of(LedgerTransfer)

_TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")

_update_totals = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _TOTALS})
)



# PostgreSQL only, for the commonest batch — one posted or pending transfer — in one statement,
# sent as is on the session's asyncpg connection, in the session's transaction (the hottest
# statement in simcharge; SQLAlchemy's execution machinery cost it a third of its throughput,
# README "Performance").
# `locked` takes both rows in id order (one order for everyone: no deadlocks). The UPDATE's own
# WHERE then judges each account — right unit, within its bound, no overflow (summed in
# `numeric`, so nothing can raise) — and under READ COMMITTED PostgreSQL re-checks that WHERE
# against the newest version of a row it had to wait for, so the verdict is never stale. The
# transfer is inserted only if both accounts were updated (an id that already exists is
# skipped). The caller undoes whatever was updated when the transfer was not inserted.
# Scalar parameters keep the plan generic: planned once per connection, not at every call.
# $1 debit, $2 credit, $3 pending delta, $4 posted delta, $5 unit, then the transfer's columns.
_FAST_TRANSFER = """
WITH v(id, ddp, ddpo, dcp, dcpo) AS (
    VALUES ($1::uuid, $3::bigint, $4::bigint, 0::bigint, 0::bigint),
           ($2::uuid, 0, 0, $3::bigint, $4::bigint)
), locked AS (
    SELECT id FROM ledger_accounts WHERE id IN ($1::uuid, $2::uuid) ORDER BY id FOR UPDATE
), upd AS (
    UPDATE ledger_accounts a
       SET debits_pending = a.debits_pending + v.ddp, debits_posted = a.debits_posted + v.ddpo,
           credits_pending = a.credits_pending + v.dcp, credits_posted = a.credits_posted + v.dcpo
      FROM v JOIN locked ON locked.id = v.id
     WHERE a.id = v.id AND a.unit = $5
       AND a.debits_pending::numeric + v.ddp + a.debits_posted + v.ddpo <= 9223372036854775807
       AND a.credits_pending::numeric + v.dcp + a.credits_posted + v.dcpo <= 9223372036854775807
       AND (NOT a.debits_must_not_exceed_credits
            OR a.debits_pending::numeric + v.ddp + a.debits_posted + v.ddpo
               <= a.credits_posted::numeric + v.dcpo)
       AND (NOT a.credits_must_not_exceed_debits
            OR a.credits_pending::numeric + v.dcp + a.credits_posted + v.dcpo
               <= a.debits_posted::numeric + v.ddpo)
    RETURNING a.id
), ins AS (
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, unit, kind,
                                  pending_status, timeout_at, code, reference, created_at)
    SELECT $6, $1, $2, $7, $5, $8, $9, $10, $11, $12, $13
     WHERE (SELECT count(*) FROM upd) = 2
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT ARRAY(SELECT id FROM upd) AS updated, (SELECT count(*) FROM ins) AS inserted
"""

# Reverse `_FAST_TRANSFER` on the accounts it updated (still locked by us) when the transfer
# was not inserted: one account refused, or the id was a replay. $5: the accounts updated.
_UNDO_FAST_TRANSFER = """
UPDATE ledger_accounts a
   SET debits_pending = a.debits_pending - v.ddp, debits_posted = a.debits_posted - v.ddpo,
       credits_pending = a.credits_pending - v.dcp, credits_posted = a.credits_posted - v.dcpo
  FROM (VALUES ($1::uuid, $3::bigint, $4::bigint, 0::bigint, 0::bigint),
               ($2::uuid, 0, 0, $3::bigint, $4::bigint)) AS v(id, ddp, ddpo, dcp, dcpo)
 WHERE a.id = v.id AND a.id = ANY($5::uuid[])
"""


FastTransfer = tuple[Any, ...]
"""The 13 parameters of `_FAST_TRANSFER`, in order (`ledger.service` builds them)."""


# PostgreSQL, for batches of many transfers (a batch import's chunk posts one per bucket or wallet
# it took from): the rows as arrays in one statement each, not one parameter set per row through
# SQLAlchemy's executemany (≈ 40 µs of Python per row).
_BULK_FROM = 64

_INSERT_TRANSFERS_BULK = """
INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, unit, kind,
                              pending_id, pending_status, timeout_at, code, reference, created_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::varchar[],
                     $6::varchar[], $7::uuid[], $8::varchar[], $9::timestamptz[], $10::varchar[],
                     $11::varchar[], $12::timestamptz[])
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
_TRANSFER_COLUMNS = ("id", "debit_account_id", "credit_account_id", "amount", "unit", "kind",
                     "pending_id", "pending_status", "timeout_at", "code", "reference",
                     "created_at")  # fmt: skip

LOCKED_COLUMNS = ("id", "unit", "debits_must_not_exceed_credits", "credits_must_not_exceed_debits",
                  *_TOTALS)  # fmt: skip
_LOCK_ACCOUNTS_BULK = f"""
SELECT {", ".join(LOCKED_COLUMNS)} FROM ledger_accounts WHERE id = ANY($1::uuid[])
 ORDER BY id FOR UPDATE
"""  # noqa: S608 - column names from this module

_WRITE_TOTALS_BULK = """
UPDATE ledger_accounts a
   SET debits_pending = v.dp, debits_posted = v.dpo, credits_pending = v.cp, credits_posted = v.cpo
  FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
       AS v(id, dp, dpo, cp, cpo)
 WHERE a.id = v.id
"""


def _pool_connection(session: Session) -> Any:
    return session.connection().connection


async def driver_in_transaction(session: AsyncSession) -> Any | None:
    """The asyncpg connection under `session`, inside the session's transaction — or None.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it runs itself;
    a statement sent straight to the driver before that would run in autocommit. So the
    adapter's transaction is started here (the BEGIN it would send anyway), and asyncpg is
    asked whether it now is in a transaction. If the adapter ever stops offering this, None
    sends the caller back to SQLAlchemy's own execution path, which is correct, only slower."""
    fairy = await session.run_sync(_pool_connection)
    driver = fairy.driver_connection
    if driver is None:
        return None
    if not driver.is_in_transaction():
        start = getattr(fairy.dbapi_connection, "_start_transaction", None)
        if start is None:
            return None
        await start()
    return driver if driver.is_in_transaction() else None


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def try_transfer(self, params: FastTransfer) -> tuple[list[uuid.UUID], bool]:
        """PostgreSQL: the one-statement transfer. Returns the accounts it updated and whether
        the transfer was inserted; when it was not, the updates must be reversed with
        `undo_try_transfer`."""
        driver = await driver_in_transaction(self.session)
        if driver is not None:
            result = await driver.fetchrow(_FAST_TRANSFER, *params)
            updated, inserted = result["updated"], result["inserted"]
        else:
            connection = await self.session.connection()
            found: Any = (await connection.exec_driver_sql(_FAST_TRANSFER, params)).one()
            updated, inserted = found[0], found[1]
        return list(updated or ()), bool(inserted)

    async def undo_try_transfer(self, params: FastTransfer, updated: list[uuid.UUID]) -> None:
        undo = (*params[:4], updated)
        driver = await driver_in_transaction(self.session)
        if driver is not None:
            await driver.execute(_UNDO_FAST_TRANSFER, *undo)
        else:
            await (await self.session.connection()).exec_driver_sql(_UNDO_FAST_TRANSFER, undo)

    async def lock_accounts(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Sequence[Any]]:
        """The accounts, locked in id order (one order for everyone: fewer deadlocks), as rows
        of `LOCKED_COLUMNS`."""
        if not ids:
            return {}
        ordered = sorted(ids)
        driver = await self._bulk_driver(ordered)
        if driver is not None:
            return {row[0]: row for row in await driver.fetch(_LOCK_ACCOUNTS_BULK, ordered)}
        stmt = (
            select(*(accounts.c[name] for name in LOCKED_COLUMNS))
            .where(accounts.c.id.in_(ordered))
            .order_by(accounts.c.id)
            .with_for_update()
        )
        return {row[0]: row for row in await self.session.execute(stmt)}

    async def get_transfers(
        self, ids: Collection[uuid.UUID], *, lock: bool = False
    ) -> dict[uuid.UUID, dict[str, Any]]:
        if not ids:
            return {}
        stmt = select(transfers).where(transfers.c.id.in_(list(ids)))
        if lock:
            stmt = stmt.with_for_update()
        result = await self.session.execute(stmt)
        return {row.id: dict(row._mapping) for row in result}

    async def _bulk_driver(self, rows: Sized) -> Any | None:
        """The asyncpg connection for a statement over `rows` as arrays, or None."""
        if len(rows) < _BULK_FROM or dialect_name(self.session) != "postgresql":
            return None
        return await driver_in_transaction(self.session)

    async def insert_transfers(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Insert new transfers; ids that already exist are skipped. Returns the ids inserted."""
        if not rows:
            return set()
        driver = await self._bulk_driver(rows)
        if driver is not None:
            columns = [[row[name] for row in rows] for name in _TRANSFER_COLUMNS]
            return {r[0] for r in await driver.fetch(_INSERT_TRANSFERS_BULK, *columns)}
        stmt = upsert_insert(self.session, transfers).on_conflict_do_nothing(index_elements=["id"])
        result = await self.session.execute(stmt.returning(transfers.c.id), list(rows))
        return set(result.scalars())

    async def delete_transfers(self, ids: Collection[uuid.UUID]) -> None:
        if ids:
            await self.session.execute(delete(transfers).where(transfers.c.id.in_(list(ids))))

    async def write_totals(self, totals: Iterable[tuple[uuid.UUID, Sequence[int]]]) -> None:
        listed = list(totals)
        driver = await self._bulk_driver(listed)
        if driver is not None:
            ids = [account_id for account_id, _ in listed]
            columns = [[values[k] for _, values in listed] for k in range(len(_TOTALS))]
            await driver.execute(_WRITE_TOTALS_BULK, ids, *columns)
            return
        params = [
            {"b_id": account_id, **{f"b_{n}": v for n, v in zip(_TOTALS, values, strict=True)}}
            for account_id, values in listed
        ]
        if params:
            await self.session.execute(_update_totals, params)

    async def write_pending_statuses(
        self, statuses: dict[uuid.UUID, PendingStatus]
    ) -> set[uuid.UUID]:
        """Resolve pending transfers: each status is written only where the row is still
        `pending` (a transition, not an overwrite). Returns the ids that were changed."""
        by_status: dict[PendingStatus, list[uuid.UUID]] = {}
        for tid, status in statuses.items():
            by_status.setdefault(status, []).append(tid)
        changed: set[uuid.UUID] = set()
        for status, ids in by_status.items():
            stmt = (
                update(transfers)
                .where(
                    transfers.c.id.in_(ids),
                    transfers.c.pending_status == PendingStatus.pending.value,
                )
                .values(pending_status=status.value)
                .returning(transfers.c.id)
            )
            changed.update((await self.session.execute(stmt)).scalars())
        return changed

    async def insert_accounts(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(accounts), list(rows))

    async def insert_accounts_if_absent(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            stmt = upsert_insert(self.session, accounts).on_conflict_do_nothing(
                index_elements=["id"]
            )
            await self.session.execute(stmt, list(rows))

    async def get_accounts(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Row[Any]]:
        if not ids:
            return {}
        result = await self.session.execute(select(accounts).where(accounts.c.id.in_(list(ids))))
        return {row.id: row for row in result}

    async def due_pending_ids(self, now: datetime, limit: int) -> list[uuid.UUID]:
        stmt = (
            select(transfers.c.id)
            .where(
                transfers.c.pending_status == PendingStatus.pending.value,
                transfers.c.timeout_at <= now,
            )
            .order_by(transfers.c.timeout_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def account_transfers(
        self, account_id: uuid.UUID, *, limit: int, before: datetime | None = None
    ) -> list[Row[Any]]:
        stmt = select(transfers).where(
            or_(
                transfers.c.debit_account_id == account_id,
                transfers.c.credit_account_id == account_id,
            )
        )
        if before is not None:
            stmt = stmt.where(transfers.c.created_at < before)
        stmt = stmt.order_by(transfers.c.created_at.desc(), transfers.c.id.desc()).limit(limit)
        return list(await self.session.execute(stmt))
