"""Property: random transfers and reservations between lines conserve every unit; a refused one
changes nothing; once every reservation is settled nothing is left pending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from simcharge.config import Settings
from simcharge.errors import SimchargeError
from simcharge.ledger.models import LedgerAccount
from simcharge.lines.models import Line
from simcharge.lines.service import UnitGrant, credit_wallet, grant_units
from simcharge.tmf654 import service
from simcharge.tmf654.models import BalanceAction
from simcharge.tmf654.service import Holder
from tests.factories import create_line

MB = 1024 * 1024


@dataclass(frozen=True)
class Give:
    giver: int
    receiver: int
    data: bool
    amount: int


@dataclass(frozen=True)
class Reserve:
    line: int
    data: bool
    amount: int


@dataclass(frozen=True)
class Settle:
    which: int
    complete: bool
    share: float


operations = st.lists(
    st.one_of(
        st.builds(Give, st.integers(0, 2), st.integers(0, 2), st.booleans(),
                  st.integers(-5, 3000)),
        st.builds(Reserve, st.integers(0, 2), st.booleans(), st.integers(-5, 3000)),
        st.builds(Settle, st.integers(0, 20), st.booleans(), st.floats(0, 1.2)),
    ),
    min_size=1, max_size=12,
)


async def holdings(session: AsyncSession) -> dict[str, tuple[int, int]]:
    """Per unit: (sum of posted balances, sum of pending debits − credits) over all accounts."""
    rows = await session.execute(
        select(
            LedgerAccount.unit,
            func.sum(LedgerAccount.credits_posted - LedgerAccount.debits_posted),
            func.sum(LedgerAccount.credits_pending - LedgerAccount.debits_pending),
        ).group_by(LedgerAccount.unit)
    )
    return {unit: (int(posted), int(pending)) for unit, posted, pending in rows}


async def snapshot(session: AsyncSession) -> set[tuple[Any, ...]]:
    """Every account's totals: a refused action must leave them all as they were."""
    rows = await session.execute(select(
        LedgerAccount.id, LedgerAccount.debits_pending, LedgerAccount.debits_posted,
        LedgerAccount.credits_pending, LedgerAccount.credits_posted))
    return {tuple(r) for r in rows}


async def line_total(session: AsyncSession, lines: list[Line], unit: str) -> int:
    ids = [line.id for line in lines]
    value = (await session.execute(
        select(func.sum(LedgerAccount.credits_posted - LedgerAccount.debits_posted)).where(
            LedgerAccount.line_id.in_(ids), LedgerAccount.unit == unit)
    )).scalar_one()
    return int(value or 0)


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(ops=operations)
async def test_transfers_and_reservations_conserve_totals(
    connection: AsyncConnection, ops: list[Any]
) -> None:
    config = Settings(  # type: ignore[call-arg]
        _env_file=None, balance_transfer_daily_count=100, balance_transfer_fee_fixed=7,
        balance_transfer_min_amount=1,
    )
    savepoint = await connection.begin_nested()
    try:
        async with AsyncSession(bind=connection, expire_on_commit=False) as session:
            lines, data = [], []
            for _ in range(3):
                line = await create_line(session)
                await credit_wallet(session, line, 5000, source=f"p:{line.id}")
                [bucket] = await grant_units(session, line, [UnitGrant("DATA_B", 2000, 30)],
                                             source=f"p:{line.id}")
                lines.append(line)
                data.append(bucket)
            await session.flush()
            start_money = await line_total(session, lines, "USD")
            reservations: list[BalanceAction] = []

            async def holder(i: int, use_data: bool) -> Holder:
                line = lines[i]
                if use_data:
                    bucket = await session.get(service.Bucket, data[i])
                    return Holder(line, data[i], "DATA_B", bucket)
                return Holder(line, line.wallet_account_id, "USD", None)

            for op in ops:
                before = await snapshot(session)
                nested = await session.begin_nested()
                try:
                    if isinstance(op, Give):
                        await service.transfer(
                            session, config, source=await holder(op.giver, op.data),
                            receiver=lines[op.receiver], amount=op.amount, actor="prop",
                            key=None, request={}, reason=None,
                        )
                    elif isinstance(op, Reserve):
                        reservations.append(await service.reserve(
                            session, holder=await holder(op.line, op.data), amount=op.amount,
                            until=None, actor="prop", key=None, request={}, reason=None))
                    elif reservations:
                        action = reservations[op.which % len(reservations)]
                        await service.settle_reservation(
                            session, action, complete=op.complete,
                            amount=int(action.amount * op.share) if op.complete else None)
                    await nested.commit()
                except SimchargeError:
                    await nested.rollback()
                    assert await snapshot(session) == before, "a refusal changed balances"
                after = await holdings(session)
                for unit, (posted, pending) in after.items():
                    assert posted == 0 and pending == 0, (unit, after)
                # Money leaves the lines only as fees and settled charges.
                assert await line_total(session, lines, "USD") <= start_money
            # Settle what is still open: nothing stays reserved.
            for action in reservations:
                if await service.reservation_status(session, action) == "created":
                    await service.settle_reservation(session, action, complete=False)
            pending = (await session.execute(
                select(func.sum(LedgerAccount.debits_pending))
            )).scalar_one()
            assert int(pending or 0) == 0
    finally:
        await savepoint.rollback()
