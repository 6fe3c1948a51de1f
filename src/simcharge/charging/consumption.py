"""What a line holds for charging (its "pots": buckets and wallet), and taking from them.

The consumption order: buckets of the usage's unit that are in scope for its zone and valid at
its time, soonest expiring first (never-expiring last), then the wallet at the tariff. The
caller turns what was taken into ledger transfers — posted (batch) or pending (quota) — so a
bounded account is never overdrawn: nothing is taken beyond what a pot holds."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.rating import Rate
from simcharge.db import table_of
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Bucket

accounts = table_of(LedgerAccount)
buckets = table_of(Bucket)

_FAR = datetime.max.replace(tzinfo=UTC)


@dataclass(slots=True)
class Pot:
    """A bucket or the wallet of a line, as the charging code sees it while it holds the lock."""

    account_id: uuid.UUID
    line_id: uuid.UUID
    unit: str
    available: int
    """What may still be taken (posted credits − posted debits − reservations)."""
    posted_balance: int
    """Posted credits − posted debits (reservations not deducted): for alerts."""
    credits: int
    is_wallet: bool
    zones: tuple[str, ...] = ()
    expires_at: datetime | None = None
    order: tuple[Any, ...] = ()

    def in_scope(self, unit: str, zone: str, at: datetime) -> bool:
        return (
            not self.is_wallet
            and self.unit == unit
            and self.available > 0
            and (not self.zones or zone in self.zones)
            and (self.expires_at is None or self.expires_at > at)
        )


@dataclass
class LinePots:
    line_id: uuid.UUID
    wallet: Pot
    buckets: list[Pot] = field(default_factory=list)

    def usable(self, unit: str, zone: str, at: datetime) -> list[Pot]:
        return [b for b in self.buckets if b.in_scope(unit, zone, at)]

    def pot(self, account_id: uuid.UUID) -> Pot | None:
        if account_id == self.wallet.account_id:
            return self.wallet
        return next((b for b in self.buckets if b.account_id == account_id), None)


async def lock_pots(
    session: AsyncSession, line_ids: Collection[uuid.UUID], *, lock: bool = True
) -> dict[uuid.UUID, LinePots]:
    """Every ledger account of the lines (wallet and buckets), locked in id order, with what
    each bucket is for. The ledger locks them again when it writes: no one changes them in
    between."""
    if not line_ids:
        return {}
    stmt = (
        select(
            accounts.c.id,
            accounts.c.line_id,
            accounts.c.unit,
            accounts.c.code,
            accounts.c.debits_pending,
            accounts.c.debits_posted,
            accounts.c.credits_posted,
            buckets.c.zones,
            buckets.c.expires_at,
            buckets.c.created_at,
        )
        .outerjoin(buckets, buckets.c.id == accounts.c.id)
        .where(accounts.c.line_id.in_(sorted(line_ids)))
        .order_by(accounts.c.id)
    )
    if lock:
        stmt = stmt.with_for_update(of=accounts)
    wallets: dict[uuid.UUID, Pot] = {}
    found: dict[uuid.UUID, list[Pot]] = {}
    for r in await session.execute(stmt):
        posted = r.credits_posted - r.debits_posted
        pot = Pot(
            account_id=r.id,
            line_id=r.line_id,
            unit=r.unit,
            available=posted - r.debits_pending,
            posted_balance=posted,
            credits=r.credits_posted,
            is_wallet=r.code == "wallet",
            zones=tuple(r.zones or ()),
            expires_at=r.expires_at,
            order=(r.expires_at is None, r.expires_at or _FAR, r.created_at or _FAR, r.id),
        )
        if pot.is_wallet:
            wallets[r.line_id] = pot
        elif r.code == "bucket":
            found.setdefault(r.line_id, []).append(pot)
    result: dict[uuid.UUID, LinePots] = {}
    for line_id, wallet in wallets.items():
        line_buckets = sorted(found.get(line_id, []), key=lambda p: p.order)
        result[line_id] = LinePots(line_id, wallet, line_buckets)
    return result


def affordable_units(rate: Rate, money: int, units_before: int = 0, paid_before: int = 0) -> int:
    """The most units the wallet can still pay for with `money`, after `units_before` units
    paid `paid_before` in the same call or session (costs are cumulative)."""
    budget = paid_before + money
    if units_before == 0 and rate.minimum > budget:
        return 0
    if rate.price == 0:
        return 2**62
    return max(0, budget * rate.per_units // rate.price - units_before)


@dataclass
class Taking:
    """What one usage took: units from buckets (in order), units and money from the wallet."""

    from_buckets: list[tuple[Pot, int]] = field(default_factory=list)
    wallet_units: int = 0
    wallet_money: int = 0
    short: int = 0
    """Native units that nothing could pay for."""

    @property
    def bucket_units(self) -> int:
        return sum(n for _, n in self.from_buckets)


def take(
    pots: LinePots,
    rate: Rate,
    unit: str,
    units: int,
    at: datetime,
    *,
    wallet_units_before: int = 0,
    wallet_paid_before: int = 0,
) -> Taking:
    """Take `units` (rated) from the line's pots in the consumption order, as far as they go,
    and lower their `available`; the rest is `short`."""
    taking = Taking()
    left = units
    for pot in pots.usable(unit, rate.zone, at):
        if left <= 0:
            break
        n = min(left, pot.available)
        pot.available -= n
        taking.from_buckets.append((pot, n))
        left -= n
    if left > 0:
        wallet = pots.wallet
        n = min(
            left,
            affordable_units(rate, wallet.available, wallet_units_before, wallet_paid_before),
        )
        if n > 0:
            money = rate.cost(wallet_units_before + n) - rate.cost(wallet_units_before)
            # The minimum was paid already when units were paid before in the same session.
            money = max(0, min(money, wallet.available))
            wallet.available -= money
            taking.wallet_units = n
            taking.wallet_money = money
        left -= n
    taking.short = left
    return taking


def capacity(pots: LinePots, rate: Rate, unit: str, at: datetime, wu: int, wm: int) -> int:
    """How many more rated units the line could pay for now."""
    in_buckets = sum(p.available for p in pots.usable(unit, rate.zone, at))
    return in_buckets + affordable_units(rate, pots.wallet.available, wu, wm)


def max_raw(rate: Rate, rated_target: int) -> int:
    """The largest usage whose rated quantity does not exceed `rated_target`."""
    if rated_target < rate.first_increment:
        return 0
    steps = (rated_target - rate.first_increment) // rate.next_increment
    return rate.first_increment + steps * rate.next_increment


def touched_pots(pots: Iterable[LinePots]) -> Iterable[Pot]:
    for p in pots:
        yield p.wallet
        yield from p.buckets
