"""Many concurrent transactions moving money among a few hot accounts."""

from __future__ import annotations

import asyncio
import random
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database
from simcharge.kit.ids import uuid7
from simcharge.ledger.service import (
    NewAccount,
    NewTransfer,
    TransferResult,
    create_accounts,
    create_transfers,
)
from tests.ledger.test_properties import check_invariants

TASKS = 32
TRANSFERS_PER_TASK = 15
HOT = 4
FUNDING = 100


async def test_32_concurrent_tasks_on_hot_accounts_lose_nothing(fresh_db: Database) -> None:
    source = NewAccount(unit="USD", code="source")
    wallets = [
        NewAccount(unit="USD", code="wallet", debits_must_not_exceed_credits=True)
        for _ in range(HOT)
    ]

    async def setup(session: AsyncSession) -> None:
        await create_accounts(session, [source, *wallets])
        await create_transfers(
            session, [NewTransfer(uuid7(), FUNDING, "USD", source.id, w.id) for w in wallets]
        )

    await fresh_db.run(setup)
    results: list[TransferResult] = []
    ids = [w.id for w in wallets]

    async def mover(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(TRANSFERS_PER_TASK):
            debit, credit = rng.sample(ids, 2)
            transfer = NewTransfer(uuid7(), rng.randint(1, 60), "USD", debit, credit)
            # A second, linked leg now and then: both legs or neither.
            batch = [transfer]
            if rng.random() < 0.3:
                third = rng.choice([i for i in ids if i not in (debit, credit)])
                batch = [
                    NewTransfer(transfer.id, transfer.amount, "USD", debit, credit, linked=True),
                    NewTransfer(uuid7(), rng.randint(1, 60), "USD", credit, third),
                ]

            async def move(
                session: AsyncSession, batch: list[NewTransfer] = batch
            ) -> list[TransferResult]:
                return [o.result for o in await create_transfers(session, batch)]

            results.extend(await fresh_db.run(move))

    await asyncio.gather(*(mover(seed) for seed in range(TASKS)))

    ok = results.count(TransferResult.ok)
    refused = results.count(TransferResult.exceeds_credits) + results.count(
        TransferResult.linked_event_failed
    )
    assert ok + refused == len(results)
    assert ok > 0 and refused > 0, "the test should both move money and hit the bounds"
    async with fresh_db.read() as session:
        await check_invariants(session)
        held = (
            await session.execute(
                text(
                    "SELECT SUM(credits_posted - debits_posted) FROM ledger_accounts WHERE code = 'wallet'"
                )
            )
        ).scalar_one()
        assert held == FUNDING * HOT
        stored = (
            await session.execute(
                text("SELECT count(*) FROM ledger_transfers WHERE debit_account_id <> :s"),
                {"s": _hex(source.id, fresh_db)},
            )
        ).scalar_one()
        assert stored == ok


def _hex(value: uuid.UUID, db: Database) -> object:
    return value if db.dialect == "postgresql" else value.hex
