"""The ledger's one lock order: a line's accounts before the operator's, whatever their ids.

Charging locks a line's pots first and then, through the ledger, the operator account it pays
into. A transfer between the same two accounts elsewhere (a TMF654 reservation, a reservation's
expiry) used to lock them by id alone, so it took an operator account with the smaller id first:
each transaction held what the other waited for, and PostgreSQL killed one (40P01)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from simcharge.charging.consumption import lock_pots
from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger.models import TransferKind
from simcharge.ledger.service import NewAccount, NewTransfer, create_transfers, ensure_accounts
from tests.charging.helpers import make_line


def _deadlocked(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, asyncpg.DeadlockDetectedError) or (
            isinstance(seen, DBAPIError) and "deadlock" in str(seen).lower()
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@pytest.mark.postgres_only
@pytest.mark.parametrize("others", [1, 2], ids=["one-statement", "batch"])
async def test_charging_and_a_transfer_to_a_smaller_operator_id_do_not_deadlock(
    fresh_db: Database, others: int
) -> None:
    db = fresh_db
    t = await make_line(db, money=10_000)
    wallet = t.line.wallet_account_id
    # An operator account whose id sorts before every line's: by id alone it was locked first.
    sink = NewAccount(unit="USD", code="revenue", id=uuid.UUID(int=uuid7().int % 2**64),
                      key=f"test-sink:{uuid.uuid4()}")  # fmt: skip
    assert sink.id < wallet
    await db.run(lambda s: ensure_accounts(s, [sink]))
    pots_held = asyncio.Event()

    def hold(amount: int) -> NewTransfer:
        return NewTransfer(id=uuid7(), amount=amount, unit="USD", debit_account_id=wallet,
                           credit_account_id=sink.id, kind=TransferKind.pending, code="quota",
                           reference="test:lock-order")  # fmt: skip

    async def charging() -> None:
        # As an Nchf update: the line's pots first, its rating, then the ledger batch.
        async with db.transaction() as s:
            await lock_pots(s, [t.line.id])
            pots_held.set()
            await asyncio.sleep(0.3)
            await create_transfers(s, [hold(100)])

    async def reservation() -> None:
        # As a TMF654 reservation on the same wallet (others=2: the ledger's general path).
        await pots_held.wait()
        async with db.transaction() as s:
            await create_transfers(s, [hold(10) for _ in range(others)])

    results = await asyncio.gather(charging(), reservation(), return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException) and _deadlocked(r)], results
    assert results == [None, None]
