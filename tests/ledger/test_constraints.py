"""The database's own guards: writes that bypass the ledger service and break an invariant are
refused by the database itself (CHECK constraints, unique keys), on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger.models import PendingStatus, TransferKind
from simcharge.ledger.repository import accounts, transfers
from simcharge.ledger.service import NewTransfer, post_transfers
from tests.factories import create_ledger_account


class Books:
    """A funded wallet (debits must not exceed credits), a pool (credits must not exceed
    debits), an unbounded source and a sink; a reservation on the wallet that was voided
    (`closed`, by the transfer `void`) and one still open (`pending`)."""

    source: uuid.UUID
    wallet: uuid.UUID
    pool: uuid.UUID
    sink: uuid.UUID
    closed: uuid.UUID
    void: uuid.UUID
    pending: uuid.UUID


@pytest.fixture
async def books(session: AsyncSession) -> Books:
    b = Books()
    b.source = await create_ledger_account(session)
    b.wallet = await create_ledger_account(session, bounded="debits")
    b.pool = await create_ledger_account(session, bounded="credits")
    b.sink = await create_ledger_account(session)
    b.closed, b.void, b.pending = uuid7(), uuid7(), uuid7()
    reserve = TransferKind.pending
    await post_transfers(
        session,
        [
            NewTransfer(uuid7(), 100, "USD", b.source, b.wallet),
            NewTransfer(uuid7(), 50, "USD", b.pool, b.source),
            NewTransfer(b.closed, 30, "USD", b.wallet, b.sink, kind=reserve),
        ],
    )
    await post_transfers(
        session, [NewTransfer(b.void, kind=TransferKind.void_pending, pending_id=b.closed)]
    )
    await post_transfers(session, [NewTransfer(b.pending, 30, "USD", b.wallet, b.sink, kind=reserve)])
    return b


def _transfer(**values: Any) -> dict[str, Any]:
    return {
        "id": uuid7(),
        "amount": 1,
        "unit": "USD",
        "kind": TransferKind.posted.value,
        "pending_id": None,
        "pending_status": None,
        "timeout_at": None,
        "code": "raw",
        "reference": None,
        "created_at": utcnow(),
        **values,
    }


def _set(account: Callable[[Books], uuid.UUID], **values: Any) -> Callable[[Books], Any]:
    return lambda b: update(accounts).where(accounts.c.id == account(b)).values(**values)


def _add(**values: Any) -> Callable[[Books], Any]:
    def build(b: Books) -> Any:
        row = {"debit_account_id": b.wallet, "credit_account_id": b.sink}
        row.update({k: v(b) if callable(v) else v for k, v in values.items()})
        return insert(transfers).values(_transfer(**row))

    return build


# Each entry: a write the service never makes, and the guard that refuses it.
REFUSED = {
    # ck_ledger_accounts_debits_within_credits: a wallet spending more than it holds
    "wallet overdrawn": _set(lambda b: b.wallet, debits_posted=accounts.c.credits_posted + 1),
    "wallet reserved beyond its credits": _set(
        lambda b: b.wallet, debits_pending=accounts.c.debits_pending + 71
    ),
    # ck_ledger_accounts_credits_within_debits: a pool credited more than it was debited
    "pool over-credited": _set(lambda b: b.pool, credits_posted=accounts.c.debits_posted + 1),
    # ck_ledger_accounts_one_bound_only
    "both bounds": _set(lambda b: b.wallet, credits_must_not_exceed_debits=True),
    # ck_ledger_accounts_debits_not_negative / credits_not_negative
    "negative debits": _set(lambda b: b.sink, debits_posted=-1),
    "negative pending credits": _set(lambda b: b.sink, credits_pending=-1),
    # uq_ledger_transfers_pending_id: a pending transfer is resolved once
    "posting a voided reservation": _add(
        kind=TransferKind.post_pending.value, pending_id=lambda b: b.closed
    ),
    "expiring a voided reservation": _add(
        kind=TransferKind.expire_pending.value, pending_id=lambda b: b.closed
    ),
    # pk_ledger_transfers: the id is the idempotency key
    "duplicate id": _add(id=lambda b: b.void),
    # ck_ledger_transfers_amount_not_negative, accounts_differ
    "negative amount": _add(amount=-1),
    "same account twice": _add(credit_account_id=lambda b: b.wallet),
    # ck_ledger_transfers_status_only_when_pending, pending_id_when_resolving
    "status on a posted transfer": _add(pending_status=PendingStatus.pending.value),
    "pending without a status": _add(kind=TransferKind.pending.value),
    "post without pending_id": _add(kind=TransferKind.post_pending.value),
    "pending_id on a posted transfer": _add(pending_id=lambda b: b.pending),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_the_database_refuses_what_the_ledger_must_never_write(
    session: AsyncSession, books: Books, case: str
) -> None:
    stmt = REFUSED[case](books)
    before = await _state(session)
    savepoint = await session.begin_nested()
    with pytest.raises(IntegrityError):
        await session.execute(stmt)
    await savepoint.rollback()
    assert await _state(session) == before


async def test_the_same_writes_within_the_bounds_are_accepted(
    session: AsyncSession, books: Books
) -> None:
    """The guards refuse only what breaks them: the writes above, kept in bounds, succeed."""
    await session.execute(
        update(accounts)
        .where(accounts.c.id == books.wallet)
        .values(debits_posted=accounts.c.credits_posted - accounts.c.debits_pending)
    )
    await session.execute(
        update(accounts)
        .where(accounts.c.id == books.pool)
        .values(credits_posted=accounts.c.debits_posted)
    )
    await session.execute(
        insert(transfers).values(
            _transfer(
                debit_account_id=books.wallet,
                credit_account_id=books.sink,
                kind=TransferKind.post_pending.value,
                pending_id=books.pending,
            )
        )
    )


async def _state(session: AsyncSession) -> tuple[list[Any], list[Any]]:
    rows = await session.execute(select(accounts).order_by(accounts.c.id))
    moved = await session.execute(select(transfers.c.id).order_by(transfers.c.id))
    return [tuple(r) for r in rows], list(moved.scalars())
