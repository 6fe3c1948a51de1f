"""What a line holds for charging (its "pots": buckets and wallet), and taking from them.

The consumption order: buckets of the usage's unit that are in scope for its zone and valid at
its time (granted before it, not yet expired), soonest expiring first (never-expiring last), then
the wallet at the tariff. The caller turns what was taken into ledger transfers — posted
(batch) or pending (quota) — so a bounded account is never overdrawn: nothing is taken beyond
what a pot holds."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.charging.rating import Rate
from simcharge.db import dialect_name, table_of
from simcharge.ledger.models import LedgerAccount
from simcharge.ledger.repository import driver_in_transaction
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
    starts_at: datetime | None = None
    """A bucket is valid from when it was granted…"""
    expires_at: datetime | None = None
    """… until it expires (never, if None)."""
    order: tuple[Any, ...] = ()
    batch_debit: int = 0
    """What a batch chunk took from it so far (one transfer per pot and chunk)."""
    ref: str = ""
    """The account id as text, as usage records' `taken` name it."""

    def in_scope(self, unit: str, zone: str, at: datetime) -> bool:
        return (
            not self.is_wallet
            and self.unit == unit
            and self.available > 0
            and (not self.zones or zone in self.zones)
            and (self.starts_at is None or self.starts_at <= at)
            and (self.expires_at is None or self.expires_at > at)
        )


@dataclass
class LinePots:
    line_id: uuid.UUID
    wallet: Pot
    buckets: list[Pot] = field(default_factory=list)
    """In the consumption order."""
    by_unit: dict[str, list[Pot]] = field(init=False, repr=False)
    """The buckets of each unit, in the consumption order."""

    def __post_init__(self) -> None:
        self.by_unit = {}
        for bucket in self.buckets:
            self.by_unit.setdefault(bucket.unit, []).append(bucket)

    def usable(self, unit: str, zone: str, at: datetime) -> list[Pot]:
        return [b for b in self.buckets if b.in_scope(unit, zone, at)]

    def pot(self, account_id: uuid.UUID) -> Pot | None:
        if account_id == self.wallet.account_id:
            return self.wallet
        return next((b for b in self.buckets if b.account_id == account_id), None)


# PostgreSQL: the same rows as the statement below, fetched by asyncpg in the session's
# transaction without SQLAlchemy's execution machinery and its conversion of every value (an
# Nchf update's pots: a tenth of its server's CPU; a batch import's chunk: ≈ 10 µs per account).
# One line (an Nchf request) by `=`, planned once per connection; many (a chunk) by `= ANY`.
_POTS = """
SELECT a.id, a.line_id, a.unit, a.code, a.debits_pending, a.debits_posted, a.credits_posted,
       b.zones, b.expires_at, b.created_at
  FROM ledger_accounts a LEFT JOIN buckets b ON b.id = a.id
"""
_POTS_OF_LINE = _POTS + " WHERE a.line_id = $1::uuid ORDER BY a.id"
_POTS_OF_LINES = _POTS + " WHERE a.line_id = ANY($1::uuid[]) ORDER BY a.id"
_LOCK = " FOR UPDATE OF a"


async def _pot_rows(
    session: AsyncSession, line_ids: list[uuid.UUID], lock: bool
) -> Iterable[Sequence[Any]]:
    if dialect_name(session) == "postgresql":
        driver = await driver_in_transaction(session)
        if driver is not None:
            one = len(line_ids) == 1
            query = (_POTS_OF_LINE if one else _POTS_OF_LINES) + (_LOCK if lock else "")
            return await driver.fetch(query, line_ids[0] if one else line_ids)  # type: ignore[no-any-return]
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
        .where(accounts.c.line_id.in_(line_ids))
        .order_by(accounts.c.id)
    )
    if lock:
        stmt = stmt.with_for_update(of=accounts)
    return await session.execute(stmt)


async def lock_pots(
    session: AsyncSession, line_ids: Collection[uuid.UUID], *, lock: bool = True
) -> dict[uuid.UUID, LinePots]:
    """Every ledger account of the lines (wallet and buckets), locked in id order, with what
    each bucket is for. The ledger locks them again when it writes: no one changes them in
    between."""
    if not line_ids:
        return {}
    wallets: dict[uuid.UUID, Pot] = {}
    found: dict[uuid.UUID, list[Pot]] = {}
    for row in await _pot_rows(session, sorted(line_ids), lock):
        account_id, line_id, unit, code, pending, debits, credits, zones, expires_at, since = row
        posted = credits - debits
        pot = Pot(
            account_id=account_id,
            line_id=line_id,
            unit=unit,
            available=posted - pending,
            posted_balance=posted,
            credits=credits,
            is_wallet=code == "wallet",
            zones=tuple(zones or ()),
            starts_at=since,
            expires_at=expires_at,
            order=(expires_at is None, expires_at or _FAR, since or _FAR, account_id),
            ref=str(account_id),
        )
        if pot.is_wallet:
            wallets[line_id] = pot
        elif code == "bucket":
            found.setdefault(line_id, []).append(pot)
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


class Taking:
    """What one usage took: units from buckets (in order), units and money from the wallet, and
    `short`: the native units that nothing could pay for."""

    __slots__ = ("bucket_units", "from_buckets", "short", "wallet_money", "wallet_units")

    def __init__(
        self,
        from_buckets: list[tuple[Pot, int]],
        bucket_units: int,
        wallet_units: int,
        wallet_money: int,
        short: int,
    ) -> None:
        self.from_buckets = from_buckets
        self.bucket_units = bucket_units
        self.wallet_units = wallet_units
        self.wallet_money = wallet_money
        self.short = short


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
    from_buckets: list[tuple[Pot, int]] = []
    left = units
    zone = rate.zone
    # `Pot.in_scope`, inlined: this loop runs for every usage record of a batch.
    for pot in pots.by_unit.get(unit, ()):
        if left <= 0:
            break
        available = pot.available
        if (
            available <= 0
            or (pot.zones and zone not in pot.zones)
            or (pot.expires_at is not None and pot.expires_at <= at)
            or (pot.starts_at is not None and pot.starts_at > at)
        ):
            continue
        n = left if left < available else available
        pot.available = available - n
        from_buckets.append((pot, n))
        left -= n
    bucket_units = units - left
    wallet_units = money = 0
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
            wallet_units = n
        left -= n
    return Taking(from_buckets, bucket_units, wallet_units, money, left)


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
