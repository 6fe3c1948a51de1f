"""Queries about lines and buckets."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Row, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import insert_if_absent, table_of
from simcharge.driver_reads import AnyOf, DriverRead
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Bucket, Line

ledger_accounts = table_of(LedgerAccount)
buckets = table_of(Bucket)


# Built once (the customer's pages ask on every view): no construction or cache key per call.
_OF_ACCOUNT = select(Line).where(Line.account_id == bindparam("account")).order_by(Line.created_at)
LINES_OF_ACCOUNT = DriverRead(
    select(*table_of(Line).c)
    .where(Line.account_id == bindparam("account"))
    .order_by(Line.created_at)
)
"""The account's lines (`LineFacts` rows), oldest first."""

_HOLDINGS = (
    select(
        ledger_accounts.c.id,
        ledger_accounts.c.line_id,
        ledger_accounts.c.unit,
        ledger_accounts.c.debits_pending,
        ledger_accounts.c.debits_posted,
        ledger_accounts.c.credits_posted,
        buckets.c.id.label("bucket_id"),
        buckets.c.initial_amount,
        buckets.c.zones,
        buckets.c.expires_at,
        buckets.c.source,
        buckets.c.created_at,
    )
    .outerjoin(buckets, buckets.c.id == ledger_accounts.c.id)
)
HOLDINGS_OF_ACCOUNT = DriverRead(
    _HOLDINGS.where(
        AnyOf(
            ledger_accounts.c.line_id,
            select(Line.id).where(Line.account_id == bindparam("account")),
        )
    )
)
"""The ledger accounts (wallets and buckets) of every line of an account, for
`lines.service.holdings_from`."""


class LineRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, line_id: uuid.UUID, *, lock: bool = False) -> Line | None:
        stmt = select(Line).where(Line.id == line_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_msisdn(self, msisdn: str, *, lock: bool = False) -> Line | None:
        """The line of this number; with `lock`, held until the transaction ends and read as
        committed after any wait (a decision about its owner depends on it)."""
        stmt = select(Line).where(Line.msisdn == msisdn)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_imsi(self, imsi: str) -> Line | None:
        return (
            await self.session.execute(select(Line).where(Line.imsi == imsi))
        ).scalar_one_or_none()

    async def of_account(self, account_id: uuid.UUID) -> Sequence[Line]:
        return (await self.session.execute(_OF_ACCOUNT, {"account": account_id})).scalars().all()

    async def existing_identifiers(
        self, msisdns: Collection[str], iccids: Collection[str], imsis: Collection[str]
    ) -> Sequence[Line]:
        conditions = [Line.msisdn.in_(list(msisdns)), Line.iccid.in_(list(iccids))]
        if imsis:
            conditions.append(Line.imsi.in_(list(imsis)))
        return (await self.session.execute(select(Line).where(or_(*conditions)))).scalars().all()

    async def wallet_and_buckets(self, line: Line) -> tuple[Row[Any], list[Row[Any]]]:
        """The wallet's ledger row, and every bucket with its ledger totals, soonest expiry first."""
        wallet = (
            await self.session.execute(
                select(ledger_accounts).where(ledger_accounts.c.id == line.wallet_account_id)
            )
        ).one()
        stmt = (
            select(
                buckets.c.id,
                buckets.c.unit,
                buckets.c.initial_amount,
                buckets.c.zones,
                buckets.c.expires_at,
                buckets.c.source,
                buckets.c.created_at,
                ledger_accounts.c.debits_pending,
                ledger_accounts.c.debits_posted,
                ledger_accounts.c.credits_posted,
            )
            .join(ledger_accounts, ledger_accounts.c.id == buckets.c.id)
            .where(buckets.c.line_id == line.id)
            .order_by(buckets.c.unit, buckets.c.expires_at, buckets.c.created_at)
        )
        return wallet, list(await self.session.execute(stmt))

    async def insert_buckets_if_absent(self, rows: list[dict[str, Any]]) -> None:
        # Rows as parameters (not `.values(rows)`): one cached statement whatever their number,
        # sent as one multi-row INSERT by SQLAlchemy's insertmanyvalues.
        await self.session.execute(insert_if_absent(self.session, buckets, "id"), rows)

    async def insert_bucket_if_absent(self, values: dict[str, Any]) -> None:
        await self.session.execute(insert_if_absent(self.session, buckets, "id"), values)
