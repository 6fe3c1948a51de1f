"""Every query the ledger runs. Core statements: this is the hottest path in simcharge."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Row, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from simcharge.db import dialect_name, insert_if_absent, table_of, upsert_insert
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, PendingStatus

TransferRow = dict[str, Any]

accounts = table_of(LedgerAccount)
transfers = table_of(LedgerTransfer)

_TOTALS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")

_update_totals = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _TOTALS})
)



# LOCK ORDER. Every statement that locks ledger accounts takes them in one order: the accounts
# of lines (wallets, buckets: `line_id` set) first, then the operator's (`line_id` NULL), each
# group by id — `ORDER BY line_id IS NULL, id`. Charging locks a line's pots first
# (`charging.consumption.lock_pots`, by id) and only then, through the ledger, the operator
# account it pays into; by plain id order a transfer between the same two accounts (a TMF654
# reservation, the expiry of a reservation) took the operator's first whenever its id was the
# smaller, and the two deadlocked.

# PostgreSQL only, for the commonest batch — one posted or pending transfer — in one statement,
# sent as is on the session's asyncpg connection, in the session's transaction (or alone, below):
# the hottest statement in simcharge, which SQLAlchemy's execution machinery cost a third of its
# throughput (README "Performance").
# `locked` takes both rows in the lock order (see `LOCK ORDER`). The UPDATE's own
# WHERE then judges each account — right unit, within its bound, no overflow (summed in
# `numeric`, so nothing can raise) — and under READ COMMITTED PostgreSQL re-checks that WHERE
# against the newest version of a row it had to wait for, so the verdict is never stale. The
# transfer is inserted only if both accounts were updated (an id that already exists is
# skipped). The caller undoes whatever was updated when the transfer was not inserted.
# Scalar parameters keep the plan generic: planned once per connection, not at every call.
# $1 debit, $2 credit, $3 pending delta, $4 posted delta, $5 unit, then the transfer's columns.
_FAST_TRANSFER_CTES = """
WITH v(id, ddp, ddpo, dcp, dcpo) AS (
    VALUES ($1::uuid, $3::bigint, $4::bigint, 0::bigint, 0::bigint),
           ($2::uuid, 0, 0, $3::bigint, $4::bigint)
), locked AS (
    SELECT id FROM ledger_accounts WHERE id IN ($1::uuid, $2::uuid)
     ORDER BY line_id IS NULL, id FOR UPDATE
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
"""
_FAST_TRANSFER = _FAST_TRANSFER_CTES + """
SELECT ARRAY(SELECT id FROM upd) AS updated, (SELECT count(*) FROM ins) AS inserted
"""  # noqa: S608 - constant text

# The same statement alone, committed by itself (`commit_transfers`): with no transaction
# around it to undo an update in, a transfer not inserted must leave nothing behind, so the
# statement then fails on purpose (division by zero) and PostgreSQL rolls all of it back.
_FAST_TRANSFER_ALONE = _FAST_TRANSFER_CTES + """
SELECT 1 / (SELECT count(*)::int FROM ins)
"""  # noqa: S608 - constant text

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


# PostgreSQL, for every batch the one-statement path does not take (a top-up's transfers, a charging
# update's post and new reservation, a batch import's chunk): two statements, one that reads and
# locks, one that writes, the rows as arrays, sent as is on the session's asyncpg connection in
# the session's transaction. Not five through SQLAlchemy's execution machinery (cache keys, `IN`
# lists expanded at each call, a parameter set per row for executemany), which cost an Nchf
# update more Python than the rest of its ledger work; and the shared operator accounts stay
# locked for one round trip before the commit, not four (README "Performance").
_TRANSFER_COLUMNS = ("id", "debit_account_id", "credit_account_id", "amount", "unit", "kind",
                     "pending_id", "pending_status", "timeout_at", "code", "reference",
                     "created_at")  # fmt: skip

LOCKED_COLUMNS = ("id", "unit", "debits_must_not_exceed_credits", "credits_must_not_exceed_debits",
                  *_TOTALS)  # fmt: skip

_TRANSFERS_BY_ID = f"""
SELECT {", ".join(c.name for c in transfers.c)} FROM ledger_transfers WHERE id = ANY($1::uuid[])
"""  # noqa: S608 - column names from the table

# A batch's reads in one statement: the pending transfers it resolves (in id order), then the
# accounts it names and theirs, in the lock order (see `LOCK ORDER`). The accounts' ids are one
# array (`= ANY`, an index scan), not `IN (subquery)` OR'ed together, which the planner answers
# with a sequential scan.
_LOCK_BATCH = f"""
WITH p AS (
    SELECT {", ".join(c.name for c in transfers.c)} FROM ledger_transfers
     WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE
), a AS (
    SELECT {", ".join(LOCKED_COLUMNS)} FROM ledger_accounts
     WHERE id = ANY($2::uuid[] || ARRAY(SELECT debit_account_id FROM p)
                               || ARRAY(SELECT credit_account_id FROM p))
     ORDER BY line_id IS NULL, id FOR UPDATE
)
SELECT ARRAY(SELECT ROW(p.*) FROM p) AS pending, ARRAY(SELECT ROW(a.*) FROM a) AS accounts
"""  # noqa: S608 - column names from this module

# A batch's writes in one statement: the new transfers; then, only if every one of them was
# inserted (none hit an existing id), the accounts' totals and the pending transfers' statuses —
# a status only where the transfer is still `pending` (a transition, not an overwrite). Returns
# the ids inserted and the pending transfers resolved.
_WRITE_BATCH = """
WITH ins AS (
    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, unit, kind,
                                  pending_id, pending_status, timeout_at, code, reference,
                                  created_at)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::varchar[],
                         $6::varchar[], $7::uuid[], $8::varchar[], $9::timestamptz[],
                         $10::varchar[], $11::varchar[], $12::timestamptz[])
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), totals AS (
    UPDATE ledger_accounts a
       SET debits_pending = v.dp, debits_posted = v.dpo, credits_pending = v.cp,
           credits_posted = v.cpo
      FROM unnest($13::uuid[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[])
           AS v(id, dp, dpo, cp, cpo)
     WHERE a.id = v.id AND (SELECT count(*) FROM ins) = cardinality($1::uuid[])
), statuses AS (
    UPDATE ledger_transfers t SET pending_status = v.status
      FROM unnest($18::uuid[], $19::varchar[]) AS v(id, status)
     WHERE t.id = v.id AND t.pending_status = 'pending'
       AND (SELECT count(*) FROM ins) = cardinality($1::uuid[])
    RETURNING t.id
)
SELECT ARRAY(SELECT id FROM ins) AS inserted, ARRAY(SELECT id FROM statuses) AS resolved
"""

# Accounts created unless they exist: a top-up names its bucket accounts and the operator
# accounts of its shard, nine rows, all in one statement rather than a parameter set each. The
# same statement names the accounts it did not create that may not be the ones asked for: those
# missing from its snapshot, or there with another unit, code, key, line or bound. Nearly always
# none (an operator account made long ago, as asked), so the caller reads nothing more; the
# others it reads again (`get_accounts`) before judging, since an account a concurrent
# transaction made while this statement waited for it is not in this statement's snapshot.
_ACCOUNT_COLUMNS = tuple(c.name for c in accounts.c)
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
_INSERT_ACCOUNTS_IF_ABSENT = f"""
WITH v ({", ".join(_ACCOUNT_COLUMNS)}) AS (
    SELECT * FROM unnest({", ".join(
        f"${i}::{c.type.compile(dialect=_PG)}[]" for i, c in enumerate(accounts.c, 1)
    )})
), ins AS (
    INSERT INTO ledger_accounts ({", ".join(_ACCOUNT_COLUMNS)})
    SELECT * FROM v
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT ARRAY(
    SELECT v.id FROM v LEFT JOIN ledger_accounts a ON a.id = v.id
     WHERE v.id NOT IN (SELECT id FROM ins)
       AND (a.id IS NULL OR a.unit <> v.unit OR a.code <> v.code
            OR a.key IS DISTINCT FROM v.key OR a.line_id IS DISTINCT FROM v.line_id
            OR a.debits_must_not_exceed_credits <> v.debits_must_not_exceed_credits
            OR a.credits_must_not_exceed_debits <> v.credits_must_not_exceed_debits)
)
"""  # noqa: S608 - column names and types from the table
"""Any conflict, not only the id's: two transactions creating the same account at once (an
operator shard's first transfers) may meet first on its `key`'s unique index, which an
`ON CONFLICT (id)` does not arbitrate — the second would fail with a unique violation instead of
finding the account made. An account's id derives from its key (`ledger.chart`), so the two
conflicts are normally the same account; when they are not (the key is another id's), the
caller refuses (`ledger.service.AccountExistsDifferently`)."""

ACCOUNT_FIELDS = ("unit", "code", "key", "line_id", "debits_must_not_exceed_credits",
                  "credits_must_not_exceed_debits")  # fmt: skip
"""What `ensure_accounts` compares between the account asked for and the one that exists."""

_INSERT_ACCOUNTS_ANY_CONFLICT: dict[str, Any] = {}
"""`INSERT … ON CONFLICT DO NOTHING RETURNING id` of accounts, per database (see above)."""

_DELETE_TRANSFERS = "DELETE FROM ledger_transfers WHERE id = ANY($1::uuid[])"


def _pool_connection(session: Session) -> Any:
    return session.connection().connection


async def driver_in_transaction(session: AsyncSession) -> Any | None:
    """The asyncpg connection under `session`, inside the session's transaction — or None.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it runs itself;
    a statement sent straight to the driver before that would run in autocommit. So the
    adapter's transaction is started here (the BEGIN it would send anyway), and asyncpg is
    asked whether it now is in a transaction. If the adapter ever stops offering this, None
    sends the caller back to SQLAlchemy's own execution path, which is correct, only slower.

    What the session holds unflushed is flushed first, as SQLAlchemy would before a query of
    its own: a statement sent straight to the driver must see it too (a bucket or an account
    added just before it is charged or moved)."""
    if session.new or session.dirty or session.deleted:
        await session.flush()
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


async def try_transfer_alone(driver: Any, params: FastTransfer) -> bool:
    """The one-statement transfer on an asyncpg connection in no transaction, committed by
    itself. True: written; False: nothing written (refused, or the id exists)."""
    try:
        await driver.fetchval(_FAST_TRANSFER_ALONE, *params)
    except asyncpg.DivisionByZeroError:
        return False
    return True


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._driver: Any | None = None
        self._driver_of: Any = None
        """The session's transaction `_driver` was found in (`_pg_driver`)."""

    async def _pg_driver(self) -> Any | None:
        """On PostgreSQL, the asyncpg connection in the session's transaction — looked up once
        per transaction of the session (after a commit the connection may be another's); None
        elsewhere, or if it cannot be had. What the session holds unflushed is flushed first,
        as SQLAlchemy would before a query of its own (an account or bucket added just before
        its first transfer)."""
        session = self.session
        if session.new or session.dirty or session.deleted:
            await session.flush()
        transaction = session.sync_session.get_transaction()
        if transaction is None or transaction is not self._driver_of:
            driver = None
            if dialect_name(session) == "postgresql":
                driver = await driver_in_transaction(session)
            self._driver, self._driver_of = driver, session.sync_session.get_transaction()
        return self._driver

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

    async def lock_batch(
        self, pending_ids: Collection[uuid.UUID], account_ids: Collection[uuid.UUID]
    ) -> tuple[dict[uuid.UUID, TransferRow], dict[uuid.UUID, Sequence[Any]]]:
        """What a batch reads, locked: the pending transfers it resolves, then the accounts —
        the batch's own and those of its pending transfers — in the lock order (see `LOCK
        ORDER`). The accounts come as rows of `LOCKED_COLUMNS`. One
        statement on PostgreSQL."""
        driver = await self._pg_driver()
        if driver is not None:
            found = await driver.fetchrow(_LOCK_BATCH, list(pending_ids), list(account_ids))
            names = [c.name for c in transfers.c]
            pending = {row[0]: dict(zip(names, row, strict=True)) for row in found["pending"]}
            return pending, {row[0]: tuple(row) for row in found["accounts"]}
        pending = await self.get_transfers(pending_ids, lock=True)
        ids = set(account_ids)
        for p in pending.values():
            ids.update((p["debit_account_id"], p["credit_account_id"]))
        if not ids:
            return pending, {}
        stmt = (
            select(*(accounts.c[name] for name in LOCKED_COLUMNS))
            .where(accounts.c.id.in_(sorted(ids)))
            .order_by(accounts.c.line_id.is_(None), accounts.c.id)
            .with_for_update()
        )
        return pending, {row[0]: row for row in await self.session.execute(stmt)}

    async def get_transfers(
        self, ids: Collection[uuid.UUID], *, lock: bool = False
    ) -> dict[uuid.UUID, TransferRow]:
        if not ids:
            return {}
        if not lock:
            driver = await self._pg_driver()
            if driver is not None:
                return {row["id"]: dict(row) for row in await driver.fetch(_TRANSFERS_BY_ID, list(ids))}
        stmt = select(transfers).where(transfers.c.id.in_(list(ids)))
        if lock:
            stmt = stmt.order_by(transfers.c.id).with_for_update()
        result = await self.session.execute(stmt)
        return {row.id: dict(row._mapping) for row in result}

    async def write_batch(
        self,
        rows: Sequence[TransferRow],
        totals: Sequence[tuple[uuid.UUID, Sequence[int]]],
        statuses: dict[uuid.UUID, PendingStatus],
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """Write what a batch decided: insert its transfers (an id that exists already is
        skipped); then, only if every one of them was inserted, the accounts' new totals and the
        pending transfers' statuses, each written only where the transfer is still `pending` (a
        transition, not an overwrite). Returns the ids inserted and the pending transfers
        resolved. One statement on PostgreSQL."""
        # A pending transfer created and resolved in the same batch is inserted resolved: the
        # statement's status update would not see the row its own insert adds.
        statuses = dict(statuses)
        born_resolved: set[uuid.UUID] = set()
        if statuses:
            rows = list(rows)
            for i, row in enumerate(rows):
                status = statuses.pop(row["id"], None)
                if status is not None:
                    rows[i] = {**row, "pending_status": status.value}
                    born_resolved.add(row["id"])
        driver = await self._pg_driver()
        if driver is not None:
            found = await driver.fetchrow(
                _WRITE_BATCH,
                *([row[name] for row in rows] for name in _TRANSFER_COLUMNS),
                [account_id for account_id, _ in totals],
                *([values[k] for _, values in totals] for k in range(len(_TOTALS))),
                list(statuses),
                [status.value for status in statuses.values()],
            )
            return set(found["inserted"]), {*found["resolved"], *born_resolved}
        inserted: set[uuid.UUID] = set()
        if rows:
            stmt = insert_if_absent(self.session, transfers, "id", returning=("id",))
            result = await self.session.execute(stmt, list(rows))
            inserted = set(result.scalars())
        if len(inserted) != len(rows):
            return inserted, set()
        if totals:
            params = [
                {"b_id": account_id, **{f"b_{n}": v for n, v in zip(_TOTALS, values, strict=True)}}
                for account_id, values in totals
            ]
            await self.session.execute(_update_totals, params)
        resolved: set[uuid.UUID] = set()
        by_status: dict[PendingStatus, list[uuid.UUID]] = {}
        for tid, status in statuses.items():
            by_status.setdefault(status, []).append(tid)
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
            resolved.update((await self.session.execute(stmt)).scalars())
        return inserted, resolved | born_resolved

    async def delete_transfers(self, ids: Collection[uuid.UUID]) -> None:
        if not ids:
            return
        driver = await self._pg_driver()
        if driver is not None:
            await driver.execute(_DELETE_TRANSFERS, list(ids))
        else:
            await self.session.execute(delete(transfers).where(transfers.c.id.in_(list(ids))))

    async def insert_accounts(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(accounts), list(rows))

    async def insert_accounts_if_absent(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Insert the accounts that conflict with none (by id or by key), in id order: two
        transactions creating the same new accounts (an operator shard's first top-ups) then
        wait for each other in one order, never crosswise. Returns the ids of the accounts not
        created that may differ from the row asked for (read them again to judge); the others
        were created or exist as asked. One statement on PostgreSQL."""
        if not rows:
            return set()
        rows = sorted(rows, key=lambda row: row["id"])
        driver = await self._pg_driver()
        if driver is not None:
            columns = ([row[name] for row in rows] for name in _ACCOUNT_COLUMNS)
            return set(await driver.fetchval(_INSERT_ACCOUNTS_IF_ABSENT, *columns))
        stmt = _INSERT_ACCOUNTS_ANY_CONFLICT.get(dialect_name(self.session))
        if stmt is None:
            stmt = upsert_insert(self.session, accounts).on_conflict_do_nothing()
            stmt = stmt.returning(accounts.c.id)
            _INSERT_ACCOUNTS_ANY_CONFLICT[dialect_name(self.session)] = stmt
        inserted = set((await self.session.execute(stmt, list(rows))).scalars())
        return {row["id"] for row in rows} - inserted

    async def account_ids_by_key(self, keys: Collection[str]) -> dict[str, uuid.UUID]:
        if not keys:
            return {}
        stmt = select(accounts.c.key, accounts.c.id).where(accounts.c.key.in_(list(keys)))
        return {key: account_id for key, account_id in await self.session.execute(stmt)}

    async def get_accounts(self, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Row[Any]]:
        if not ids:
            return {}
        result = await self.session.execute(select(accounts).where(accounts.c.id.in_(list(ids))))
        return {row.id: row for row in result}

    async def lock_expirable_holds_of_lines(self, line_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Lock, in id order, the reservations still pending with a timeout (those the sweep may
        release) that hold something back on these lines' accounts."""
        if not line_ids:
            return []
        theirs = select(accounts.c.id).where(
            accounts.c.line_id.in_(list(line_ids)), accounts.c.debits_pending > 0
        )
        stmt = (
            select(transfers.c.id)
            .where(
                transfers.c.debit_account_id.in_(theirs),
                transfers.c.pending_status == PendingStatus.pending.value,
                transfers.c.timeout_at.is_not(None),
            )
            .order_by(transfers.c.id)
            .with_for_update(of=transfers)
        )
        return list((await self.session.execute(stmt)).scalars())

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
