"""Usage alerts: a wallet running low, a bucket 80 % used, a bucket used up — each sent once.

Computed from what the charging code saw before and after it posted (`Snapshot`), written to
the outbox in the same transaction; the dedupe keys make every alert once only (the low-balance
key carries the wallet's credits, so a top-up re-arms it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.consumption import Pot
from simcharge.notifications.service import notice
from simcharge.worker.service import NewJob, enqueue_many


@dataclass(frozen=True, slots=True)
class Snapshot:
    posted_balance: int


@dataclass(frozen=True, slots=True)
class LineContact:
    line_id: uuid.UUID
    account_id: uuid.UUID | None
    msisdn: str
    currency: str


def snapshot(pots: Iterable[Pot]) -> dict[uuid.UUID, Snapshot]:
    return {p.account_id: Snapshot(p.posted_balance) for p in pots}


def alerts_for(
    line: LineContact,
    pots: Iterable[Pot],
    before: dict[uuid.UUID, Snapshot],
    *,
    low_balance: int,
) -> list[NewJob]:
    """The notices due because posted balances moved from `before` to the pots' current ones."""
    if line.account_id is None:
        return []
    jobs: list[NewJob] = []
    for pot in pots:
        old = before.get(pot.account_id)
        if old is None or old.posted_balance == pot.posted_balance:
            continue
        if pot.is_wallet:
            if pot.posted_balance < low_balance <= old.posted_balance:
                jobs.append(
                    notice(
                        account_id=line.account_id,
                        line_id=line.line_id,
                        template="balance.low",
                        params={
                            "msisdn": line.msisdn,
                            "balance": pot.posted_balance,
                            "currency": line.currency,
                        },
                        dedupe_key=f"usage:low:{pot.account_id}:{pot.credits}",
                    )
                )
            continue
        if pot.credits <= 0:
            continue
        used_before = pot.credits - old.posted_balance
        used_now = pot.credits - pot.posted_balance
        if used_now >= pot.credits > used_before:
            jobs.append(
                notice(
                    account_id=line.account_id,
                    line_id=line.line_id,
                    template="bucket.used_up",
                    params={"msisdn": line.msisdn, "unit": pot.unit},
                    dedupe_key=f"usage:bucket100:{pot.account_id}",
                )
            )
        elif used_now * 5 >= pot.credits * 4 > used_before * 5:
            jobs.append(
                notice(
                    account_id=line.account_id,
                    line_id=line.line_id,
                    template="bucket.used_80",
                    params={
                        "msisdn": line.msisdn,
                        "remaining": pot.posted_balance,
                        "unit": pot.unit,
                    },
                    dedupe_key=f"usage:bucket80:{pot.account_id}",
                )
            )
    return jobs


async def send_alerts(session: AsyncSession, jobs: list[NewJob]) -> None:
    if jobs:
        await enqueue_many(session, jobs)
