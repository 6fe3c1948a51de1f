"""Queries about lines and buckets."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Row, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import table_of, upsert_insert
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Bucket, Line

ledger_accounts = table_of(LedgerAccount)
buckets = table_of(Bucket)


class LineRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, line_id: uuid.UUID, *, lock: bool = False) -> Line | None:
        stmt = select(Line).where(Line.id == line_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_msisdn(self, msisdn: str) -> Line | None:
        return (
            await self.session.execute(select(Line).where(Line.msisdn == msisdn))
        ).scalar_one_or_none()

    async def by_imsi(self, imsi: str) -> Line | None:
        return (
            await self.session.execute(select(Line).where(Line.imsi == imsi))
        ).scalar_one_or_none()

    async def of_account(self, account_id: uuid.UUID) -> Sequence[Line]:
        stmt = select(Line).where(Line.account_id == account_id).order_by(Line.created_at)
        return (await self.session.execute(stmt)).scalars().all()

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
        await self.session.execute(
            upsert_insert(self.session, buckets)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["id"])
        )

    async def insert_bucket_if_absent(self, values: dict[str, Any]) -> None:
        await self.session.execute(
            upsert_insert(self.session, buckets)
            .values(values)
            .on_conflict_do_nothing(index_elements=["id"])
        )
