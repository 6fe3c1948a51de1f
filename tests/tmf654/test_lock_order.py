"""Transfers that run at the same time wait for each other, never deadlock."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.lines.models import Bucket, Line
from simcharge.tmf654 import service
from simcharge.tmf654.models import BalanceAction
from simcharge.tmf654.service import Holder
from tests.orders.helpers import assert_ledger_balanced
from tests.tmf654.helpers import MB, new_holder, totals
from tests.tmf654.helpers import Holder as Funded

WAITING = text(
    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
    " WHERE c.relname = :table AND NOT l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def waiting_for(db: Database, table: str, count: int) -> None:
    """Until `count` transactions wait for a lock on `table`."""
    for _ in range(1000):
        async with db.read() as s:
            if (await s.execute(WAITING, {"table": table})).scalar_one() >= count:
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} transactions came to wait for {table}")


@pytest.mark.postgres_only
@pytest.mark.parametrize("usage", ["monetary", "data"])
async def test_transfers_between_two_lines_both_ways_at_once_do_not_deadlock(
    fresh_db: Database, settings: Settings, usage: str
) -> None:
    """A → B and B → A at once. Each holds its giver's line, then inserts rows naming the
    other line (the action's receiver; for data, the receiver's new bucket too), whose
    foreign-key check takes a key-share lock on it: a giver held FOR UPDATE refused that lock,
    and the two waited for each other (40P01)."""
    a, b = await new_holder(fresh_db), await new_holder(fresh_db)

    async def give(giver: Funded, receiver: Funded) -> BalanceAction:
        # One transaction, not `run`: `run` would retry the deadlock and hide it.
        async with fresh_db.transaction() as s:
            line = await s.get(Line, giver.line.id)
            other = await s.get(Line, receiver.line.id)
            assert line is not None and other is not None
            if usage == "data":
                source = Holder(line, giver.data_bucket, "DATA_B",
                                await s.get(Bucket, giver.data_bucket))
                amount = 100 * MB
            else:
                source, amount = Holder(line, line.wallet_account_id, "USD", None), 500
            return await service.transfer(
                s, settings, source=source, receiver=other, amount=amount, actor="race",
                key=f"to-{other.id}", request={}, reason=None,
            )

    async with fresh_db.engine.connect() as gate:
        # Holds back the first insert of each transfer (its fee account's, which names no
        # line) until both hold their giver and wait there: the order in which they
        # deadlocked.
        await gate.execute(text("LOCK TABLE ledger_accounts IN EXCLUSIVE MODE"))
        both = asyncio.gather(give(a, b), give(b, a), return_exceptions=True)
        await waiting_for(fresh_db, "ledger_accounts", 2)
        await gate.rollback()
    results = await asyncio.wait_for(both, 30)

    assert [type(r) for r in results] == [BalanceAction, BalanceAction], results
    for h in (a, b):
        if usage == "data":
            # Each gave 100 MB (fee 0.10) and received them in a bucket of its own.
            assert await totals(fresh_db, h.data_bucket) == (400 * MB, 0)
            assert await totals(fresh_db, h.line.wallet_account_id) == (2000 - 10, 0)
        else:
            # Each gave 5.00 (fee 2 % + 0.10) and received 5.00.
            assert await totals(fresh_db, h.line.wallet_account_id) == (2000 - 20, 0)
    await assert_ledger_balanced(fresh_db)


@pytest.mark.postgres_only
async def test_copies_of_one_request_at_once_answer_the_one_action(
    fresh_db: Database, settings: Settings
) -> None:
    """Four copies of a transfer (the portal's and TMF654's) and of a top-up, each copy with the
    same Idempotency-Key, at once: one action, the money moved once, and every copy answered with
    it (the losers of the race used to hit the action's primary key: a 500)."""
    import httpx

    from simcharge.app import create_app
    from simcharge.lines.service import credit_wallet
    from tests.orders.helpers import new_payer
    from tests.tmf654.helpers import BASE, api_key
    from tests.tmf654.test_api import ALL, transfer_body

    db = fresh_db
    app = create_app(settings, db=db, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        me, friend = await new_payer(db, settings), await new_payer(db, settings)
        await db.run(lambda s: credit_wallet(s, me.line, 2000, source=f"test:{me.line.id}"))
        friend_before, _ = await totals(db, friend.line.wallet_account_id)
        url = f"/api/v1/me/lines/{me.line.id}/transfers"
        headers = {**me.auth, "Idempotency-Key": "same-key-1"}
        body = {"to": friend.line.msisdn, "usage_type": "monetary", "amount": 500}
        answers = await asyncio.gather(
            *(client.post(url, json=body, headers=headers) for _ in range(4)))
        assert [r.status_code for r in answers] == [201] * 4, [r.text for r in answers]
        assert len({r.json()["id"] for r in answers}) == 1
        assert await totals(db, friend.line.wallet_account_id) == (friend_before + 500, 0)

        giver, receiver = await new_holder(db), await new_holder(db, wallet=0)
        key = {**await api_key(db, *ALL), "Idempotency-Key": "tmf-copy-1"}
        gift = transfer_body(giver, receiver, "monetary", {"amount": 5, "units": "USD"},
                             str(giver.line.wallet_account_id))
        topup = {"amount": {"amount": 1, "units": "USD"}, "usageType": "monetary",
                 "bucket": {"id": str(receiver.line.wallet_account_id)},
                 "partyAccount": {"id": str(receiver.account_id)}}
        for path, sent in (("/transferBalance", gift), ("/topupBalance", topup)):
            answers = await asyncio.gather(
                *(client.post(BASE + path, json=sent, headers=key) for _ in range(4)))
            assert [r.status_code for r in answers] == [201] * 4, [r.text for r in answers]
            assert len({r.json()["id"] for r in answers}) == 1
            key = {**key, "Idempotency-Key": "tmf-copy-2"}
    async with db.read() as s:
        made = (await s.execute(text(
            "SELECT count(*) FROM balance_actions WHERE idempotency_key IN "
            "('same-key-1', 'tmf-copy-1', 'tmf-copy-2')"))).scalar_one()
    assert made == 3
    assert await totals(db, receiver.line.wallet_account_id) == (600, 0)  # 5.00 given, 1.00 topped up
    await assert_ledger_balanced(db)
