"""The ledger service, behaviour by behaviour, on the real databases."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database
from simcharge.kit.clock import clock
from simcharge.kit.ids import uuid7
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.models import LedgerAccount, LedgerTransfer, PendingStatus, TransferKind
from simcharge.ledger.repository import LedgerRepository, driver_in_transaction
from simcharge.ledger.service import (
    MAX_TIMEOUT_S,
    NewTransfer,
    TransferRejected,
    TransferResult,
    create_transfers,
    expire_pending_transfers,
    post_transfers,
)
from tests.factories import create_ledger_account, ledger_account, transfer_count

R = TransferResult


async def funded(
    session: AsyncSession, amount: int = 1000, unit: str = "USD"
) -> tuple[uuid.UUID, uuid.UUID]:
    """An unbounded source and a wallet (debits must not exceed credits) holding `amount`."""
    source = await create_ledger_account(session, unit)
    wallet = await create_ledger_account(session, unit, bounded="debits")
    await post_transfers(session, [NewTransfer(uuid7(), amount, unit, source, wallet)])
    return source, wallet


def t(
    debit: uuid.UUID, credit: uuid.UUID, amount: int, unit: str = "USD", **kw: object
) -> NewTransfer:
    return NewTransfer(
        id=kw.pop("id", None) or uuid7(),
        amount=amount,
        unit=unit,  # type: ignore[arg-type]
        debit_account_id=debit,
        credit_account_id=credit,
        **kw,
    )  # type: ignore[arg-type]


async def test_posted_transfer_moves_the_amount(session: AsyncSession) -> None:
    source, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    [outcome] = await create_transfers(session, [t(wallet, sink, 300)])
    assert outcome.result is R.ok
    w = await ledger_account(session, wallet)
    s = await ledger_account(session, sink)
    assert (w.credits_posted, w.debits_posted, w.balance) == (1000, 300, 700)
    assert s.credits_posted == 300
    src = await ledger_account(session, source)
    assert src.debits_posted == 1000


async def test_same_id_same_fields_is_exists_and_changes_nothing(session: AsyncSession) -> None:
    _, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    transfer = t(wallet, sink, 100)
    assert [o.result for o in await create_transfers(session, [transfer])] == [R.ok]
    before = await transfer_count(session)
    assert [o.result for o in await create_transfers(session, [transfer])] == [R.exists]
    assert await transfer_count(session) == before
    assert (await ledger_account(session, wallet)).balance == 900


async def test_replay_is_exists_even_when_the_balance_has_since_run_out(
    session: AsyncSession,
) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    transfer = t(wallet, sink, 100)
    await create_transfers(session, [transfer])
    assert [o.result for o in await create_transfers(session, [transfer])] == [R.exists]


@pytest.mark.parametrize(
    "change", ["amount", "debit", "credit", "unit", "kind", "code", "reference"]
)
async def test_same_id_other_fields_is_an_error(session: AsyncSession, change: str) -> None:
    _, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    other = await create_ledger_account(session)
    tid = uuid7()
    await create_transfers(session, [t(wallet, sink, 100, id=tid, code="a", reference="r")])
    variants = {
        "amount": t(wallet, sink, 101, id=tid, code="a", reference="r"),
        "debit": t(other, sink, 100, id=tid, code="a", reference="r"),
        "credit": t(wallet, other, 100, id=tid, code="a", reference="r"),
        "unit": t(wallet, sink, 100, "CNY", id=tid, code="a", reference="r"),
        "kind": t(wallet, sink, 100, id=tid, code="a", reference="r", kind=TransferKind.pending),
        "code": t(wallet, sink, 100, id=tid, code="b", reference="r"),
        "reference": t(wallet, sink, 100, id=tid, code="a", reference="s"),
    }
    [outcome] = await create_transfers(session, [variants[change]])
    assert outcome.result is R.exists_with_different_fields
    assert (await ledger_account(session, wallet)).balance == 900
    with pytest.raises(TransferRejected) as info:
        await post_transfers(session, [variants[change]])
    assert info.value.reason is R.exists_with_different_fields
    assert info.value.status == 409


async def test_bounded_account_cannot_go_below_zero(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    before = await transfer_count(session)
    [outcome] = await create_transfers(session, [t(wallet, sink, 101)])
    assert outcome.result is R.exceeds_credits
    assert await transfer_count(session) == before
    assert (await ledger_account(session, wallet)).balance == 100


async def test_credits_must_not_exceed_debits(session: AsyncSession) -> None:
    limit_holder = await create_ledger_account(session, bounded="credits")
    other = await create_ledger_account(session)
    # An account that may only be credited up to what it has been debited (a "refund pool").
    assert (await create_transfers(session, [t(other, limit_holder, 1)]))[
        0
    ].result is R.exceeds_debits
    await post_transfers(session, [t(limit_holder, other, 50)])
    assert (await create_transfers(session, [t(other, limit_holder, 50)]))[0].result is R.ok
    assert (await create_transfers(session, [t(other, limit_holder, 1)]))[
        0
    ].result is R.exceeds_debits


async def test_independent_transfers_in_one_batch_fail_alone(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    outcomes = await create_transfers(
        session, [t(wallet, sink, 60), t(wallet, sink, 60), t(wallet, sink, 40)]
    )
    assert [o.result for o in outcomes] == [R.ok, R.exceeds_credits, R.ok]
    assert (await ledger_account(session, wallet)).balance == 0


async def test_linked_chain_is_all_or_nothing(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    a = await create_ledger_account(session)
    b = await create_ledger_account(session)
    before = await transfer_count(session)
    outcomes = await create_transfers(
        session,
        [
            t(wallet, a, 60, linked=True),
            t(wallet, b, 60),  # fails: only 40 left
            t(wallet, b, 10),  # a chain of its own: succeeds
        ],
    )
    assert [o.result for o in outcomes] == [R.linked_event_failed, R.exceeds_credits, R.ok]
    assert await transfer_count(session) == before + 1
    assert (await ledger_account(session, a)).credits_posted == 0
    assert (await ledger_account(session, wallet)).balance == 90


async def test_open_chain_fails_whole(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    a = await create_ledger_account(session)
    outcomes = await create_transfers(
        session, [t(wallet, a, 10, linked=True), t(wallet, a, 10, linked=True)]
    )
    assert [o.result for o in outcomes] == [R.linked_event_failed, R.linked_event_chain_open]
    assert (await ledger_account(session, wallet)).balance == 100


async def test_post_transfers_raises_and_leaves_no_trace(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    a = await create_ledger_account(session)
    before = await transfer_count(session)
    with pytest.raises(TransferRejected) as info:
        await post_transfers(session, [t(wallet, a, 50), t(wallet, a, 51)])
    assert info.value.reason is R.exceeds_credits
    assert info.value.extra()["results"][0]["result"] == "linked_event_failed"
    assert await transfer_count(session) == before
    assert (await ledger_account(session, wallet)).balance == 100


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda a, b: NewTransfer(uuid.UUID(int=0), 1, "USD", a, b), R.id_must_not_be_zero),
        (lambda a, b: NewTransfer(uuid7(), 0, "USD", a, b), R.amount_must_not_be_zero),
        (lambda a, b: NewTransfer(uuid7(), -5, "USD", a, b), R.amount_must_not_be_negative),
        (lambda a, b: NewTransfer(uuid7(), 2**63, "USD", a, b), R.amount_too_large),
        (lambda a, b: NewTransfer(uuid7(), 1, "USD", None, b), R.debit_account_id_required),
        (lambda a, b: NewTransfer(uuid7(), 1, "USD", a, None), R.credit_account_id_required),
        (lambda a, b: NewTransfer(uuid7(), 1, None, a, b), R.unit_required),
        (lambda a, b: NewTransfer(uuid7(), 1, "USD", a, a), R.accounts_must_be_different),
        (
            lambda a, b: NewTransfer(uuid7(), 1, "USD", a, b, timeout_s=5),
            R.timeout_reserved_for_pending_transfer,
        ),
        (
            lambda a, b: NewTransfer(
                uuid7(), 1, "USD", a, b, kind=TransferKind.pending, timeout_s=-1
            ),
            R.timeout_must_not_be_negative,
        ),
        (
            lambda a, b: NewTransfer(
                uuid7(), 1, "USD", a, b, kind=TransferKind.pending, timeout_s=10**12
            ),
            R.timeout_too_large,
        ),
        (
            lambda a, b: NewTransfer(uuid7(), 1, "USD", a, b, pending_id=uuid7()),
            R.pending_id_must_be_zero,
        ),
        (
            lambda a, b: NewTransfer(uuid7(), 1, kind=TransferKind.post_pending),
            R.pending_id_required,
        ),
        (lambda a, b: NewTransfer(uuid7(), 1, "USD", a, uuid7()), R.credit_account_not_found),
        (lambda a, b: NewTransfer(uuid7(), 1, "USD", uuid7(), b), R.debit_account_not_found),
        (
            lambda a, b: NewTransfer(uuid7(), 1, "CNY", a, b),
            R.transfer_must_have_the_same_unit_as_accounts,
        ),
        (
            lambda a, b: NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=uuid7()),
            R.pending_transfer_not_found,
        ),
        (
            lambda a, b: NewTransfer(uuid7(), kind=TransferKind.expire_pending, pending_id=uuid7()),
            R.kind_not_allowed,
        ),
    ],
)
async def test_invalid_transfers_are_refused_with_their_reason(
    session: AsyncSession, make: object, expected: TransferResult
) -> None:
    a = await create_ledger_account(session)
    b = await create_ledger_account(session)
    before = await transfer_count(session)
    [outcome] = await create_transfers(session, [make(a, b)])  # type: ignore[operator]
    assert outcome.result is expected
    assert await transfer_count(session) == before


async def test_a_pending_timeout_is_at_most_max_timeout_s(session: AsyncSession) -> None:
    """A timeout whose end is no date (10^12 s is 31,700 years) is a result, not an
    OverflowError; up to `MAX_TIMEOUT_S` (about 136 years) it is a reservation like another."""
    source, wallet = await funded(session, 1000)
    now = datetime(2026, 12, 6, tzinfo=UTC)
    for timeout_s in (MAX_TIMEOUT_S + 1, 10**12, 10**20):
        hold = t(wallet, source, 10, kind=TransferKind.pending, timeout_s=timeout_s)
        [outcome] = await create_transfers(session, [hold], now=now)
        assert outcome.result is R.timeout_too_large
    hold = t(wallet, source, 10, kind=TransferKind.pending, timeout_s=MAX_TIMEOUT_S)
    [outcome] = await create_transfers(session, [hold], now=now)
    assert outcome.result is R.ok
    stored = await session.get(LedgerTransfer, hold.id, populate_existing=True)
    assert stored is not None
    assert stored.timeout_at == now + timedelta(seconds=MAX_TIMEOUT_S)
    assert (await ledger_account(session, wallet)).debits_pending == 10


async def test_accounts_of_different_units_cannot_trade(session: AsyncSession) -> None:
    usd = await create_ledger_account(session, "USD")
    secs = await create_ledger_account(session, "VOICE_S")
    [outcome] = await create_transfers(session, [t(usd, secs, 1, "USD")])
    assert outcome.result is R.accounts_must_have_the_same_unit


async def test_overflow_is_refused(session: AsyncSession) -> None:
    a = await create_ledger_account(session)
    b = await create_ledger_account(session)
    await post_transfers(session, [t(a, b, 2**63 - 10)])
    [outcome] = await create_transfers(session, [t(a, b, 11)])
    assert outcome.result is R.overflow


# --- pending transfers ------------------------------------------------------------------------


async def reserve(
    session: AsyncSession, wallet: uuid.UUID, sink: uuid.UUID, amount: int, timeout_s: int = 0
) -> uuid.UUID:
    pid = uuid7()
    await post_transfers(
        session, [t(wallet, sink, amount, kind=TransferKind.pending, timeout_s=timeout_s, id=pid)]
    )
    return pid


async def test_pending_reserves_then_post_in_part_releases_the_rest(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 60)
    w = await ledger_account(session, wallet)
    assert (w.debits_pending, w.balance) == (60, 40)
    # The reservation counts against the bound: only 40 can still be spent.
    assert (await create_transfers(session, [t(wallet, sink, 41)]))[0].result is R.exceeds_credits
    [o] = await create_transfers(
        session, [NewTransfer(uuid7(), 25, kind=TransferKind.post_pending, pending_id=pid)]
    )
    assert o.result is R.ok
    w = await ledger_account(session, wallet)
    s = await ledger_account(session, sink)
    assert (w.debits_pending, w.debits_posted, w.balance) == (0, 25, 75)
    assert (s.credits_pending, s.credits_posted) == (0, 25)
    status = (
        await session.execute(select(LedgerTransfer.pending_status).where(LedgerTransfer.id == pid))
    ).scalar_one()
    assert status == PendingStatus.posted


async def test_post_without_amount_posts_everything(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 60)
    await post_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.post_pending, pending_id=pid)]
    )
    assert (await ledger_account(session, wallet)).balance == 40


async def test_void_releases_everything(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 60)
    await post_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=pid)]
    )
    w = await ledger_account(session, wallet)
    assert (w.debits_pending, w.debits_posted, w.balance) == (0, 0, 100)


async def test_a_pending_transfer_is_resolved_once(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 60)
    await post_transfers(
        session, [NewTransfer(uuid7(), 10, kind=TransferKind.post_pending, pending_id=pid)]
    )
    results = await create_transfers(
        session,
        [
            NewTransfer(uuid7(), 10, kind=TransferKind.post_pending, pending_id=pid),
            NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=pid),
        ],
    )
    assert [o.result for o in results] == [R.pending_transfer_already_posted] * 2
    pid2 = await reserve(session, wallet, sink, 5)
    await post_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=pid2)]
    )
    [o] = await create_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.post_pending, pending_id=pid2)]
    )
    assert o.result is R.pending_transfer_already_voided


async def test_post_checks_amount_and_fields_against_the_pending(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    other = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 60)
    results = await create_transfers(
        session,
        [
            NewTransfer(uuid7(), 61, kind=TransferKind.post_pending, pending_id=pid),
            NewTransfer(
                uuid7(), 10, kind=TransferKind.post_pending, pending_id=pid, credit_account_id=other
            ),
            NewTransfer(uuid7(), 10, "CNY", kind=TransferKind.post_pending, pending_id=pid),
            NewTransfer(uuid7(), 10, kind=TransferKind.void_pending, pending_id=pid),
        ],
    )
    assert [o.result for o in results] == [
        R.exceeds_pending_transfer_amount,
        R.pending_transfer_has_different_fields,
        R.pending_transfer_has_different_fields,
        R.pending_transfer_has_different_fields,
    ]
    posted = await create_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.post_pending, pending_id=uuid7())]
    )
    assert posted[0].result is R.pending_transfer_not_found
    # Posting a transfer that is not pending:
    plain = t(wallet, sink, 1)
    await post_transfers(session, [plain])
    [o] = await create_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.post_pending, pending_id=plain.id)]
    )
    assert o.result is R.pending_transfer_not_pending


async def test_pending_and_post_in_one_batch(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = uuid7()
    outcomes = await create_transfers(
        session,
        [
            t(wallet, sink, 50, kind=TransferKind.pending, id=pid),
            NewTransfer(uuid7(), 20, kind=TransferKind.post_pending, pending_id=pid),
        ],
    )
    assert [o.result for o in outcomes] == [R.ok, R.ok]
    w = await ledger_account(session, wallet)
    assert (w.debits_pending, w.debits_posted) == (0, 20)
    status = (
        await session.execute(select(LedgerTransfer.pending_status).where(LedgerTransfer.id == pid))
    ).scalar_one()
    assert status == PendingStatus.posted


async def pending_status_of(session: AsyncSession, pid: uuid.UUID) -> str | None:
    return (
        await session.execute(select(LedgerTransfer.pending_status).where(LedgerTransfer.id == pid))
    ).scalar_one()


@pytest.mark.parametrize("kind", [TransferKind.post_pending, TransferKind.void_pending])
async def test_failed_chain_leaves_the_pending_unresolved(
    session: AsyncSession, kind: TransferKind
) -> None:
    """A post or void that succeeded inside a linked chain whose later member fails is undone
    with the chain: the reservation is still pending, still held, and can be resolved later."""
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 60)
    before = await transfer_count(session)
    resolve = NewTransfer(
        uuid7(), 10 if kind is TransferKind.post_pending else None, kind=kind, pending_id=pid,
        linked=True,
    )
    outcomes = await create_transfers(session, [resolve, t(wallet, sink, 1000)])
    assert [o.result for o in outcomes] == [R.linked_event_failed, R.exceeds_credits]
    assert await pending_status_of(session, pid) == PendingStatus.pending
    assert await transfer_count(session) == before
    w = await ledger_account(session, wallet)
    assert (w.debits_pending, w.debits_posted, w.balance) == (60, 0, 40)
    # A later chain in the same batch sees the reservation unresolved too.
    outcomes = await create_transfers(
        session,
        [
            NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=pid, linked=True),
            t(wallet, sink, 1000),
            NewTransfer(uuid7(), 60, kind=TransferKind.post_pending, pending_id=pid),
        ],
    )
    assert [o.result for o in outcomes] == [R.linked_event_failed, R.exceeds_credits, R.ok]
    assert await pending_status_of(session, pid) == PendingStatus.posted
    w = await ledger_account(session, wallet)
    assert (w.debits_pending, w.debits_posted, w.balance) == (0, 60, 40)


async def test_a_pending_status_changes_only_while_it_is_pending(session: AsyncSession) -> None:
    """The status write is a conditional transition (`… WHERE pending_status = 'pending'`), not
    an overwrite: a resolved transfer keeps its status whatever a later write asks for."""
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    posted, open_ = await reserve(session, wallet, sink, 10), await reserve(session, wallet, sink, 10)
    await post_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.post_pending, pending_id=posted)]
    )
    repo = LedgerRepository(session)
    inserted, changed = await repo.write_batch(
        [], [], {posted: PendingStatus.voided, open_: PendingStatus.voided}
    )
    assert (inserted, changed) == (set(), {open_})
    assert await pending_status_of(session, posted) == PendingStatus.posted
    assert await pending_status_of(session, open_) == PendingStatus.voided


async def test_a_batch_whose_insert_meets_an_existing_id_writes_no_totals_and_no_status(
    session: AsyncSession,
) -> None:
    """The batch's write: the totals and the pending statuses only if every transfer was
    inserted. When one id exists already, only the others' rows are written (the caller takes
    them back and evaluates again), never a total or a status."""
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 10)
    replayed = uuid7()
    await post_transfers(session, [t(wallet, sink, 1, id=replayed)])
    before = await ledger_account(session, wallet)
    fresh = uuid7()
    rows = [
        {"id": fresh, "debit_account_id": wallet, "credit_account_id": sink, "amount": 5,
         "unit": "USD", "kind": "posted", "pending_id": None, "pending_status": None,
         "timeout_at": None, "code": "t", "reference": None, "created_at": clock.now()},
        {"id": replayed, "debit_account_id": wallet, "credit_account_id": sink, "amount": 5,
         "unit": "USD", "kind": "posted", "pending_id": None, "pending_status": None,
         "timeout_at": None, "code": "t", "reference": None, "created_at": clock.now()},
    ]  # fmt: skip
    inserted, resolved = await LedgerRepository(session).write_batch(
        rows, [(wallet, (0, 0, 0, 0))], {pid: PendingStatus.voided}
    )
    assert (inserted, resolved) == ({fresh}, set())
    after = await ledger_account(session, wallet)
    assert (after.debits_pending, after.debits_posted, after.credits_posted) == (
        before.debits_pending,
        before.debits_posted,
        before.credits_posted,
    )
    assert await pending_status_of(session, pid) == PendingStatus.pending


async def test_a_reservation_made_and_posted_in_one_batch_is_stored_posted(
    session: AsyncSession,
) -> None:
    """A pending transfer created and resolved by the same batch is written resolved (on
    PostgreSQL the batch's writes are one statement, whose status update cannot see the rows
    its own insert adds)."""
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = uuid7()
    outcomes = await post_transfers(
        session,
        [
            t(wallet, sink, 30, kind=TransferKind.pending, id=pid),
            NewTransfer(uuid7(), 20, kind=TransferKind.post_pending, pending_id=pid),
        ],
    )
    assert [o.result for o in outcomes] == [R.ok, R.ok]
    assert await pending_status_of(session, pid) == PendingStatus.posted
    w = await ledger_account(session, wallet)
    assert (w.debits_pending, w.debits_posted, w.balance) == (0, 20, 80)
    books = await verify_ledger(session)
    assert books.ok, books.violations


@pytest.mark.postgres_only("the ledger's own statements")
async def test_a_batch_is_two_statements_on_postgresql(db: Database) -> None:
    """A batch the one-statement path does not take — here a reservation posted and the next
    one made, as a charging update does — reads and locks in one statement and writes in one."""

    async def setup(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        _, wallet = await funded(s, 100)
        sink = await create_ledger_account(s)
        return wallet, sink, await reserve(s, wallet, sink, 10)

    wallet, sink, pid = await db.run(setup)

    def post_and_reserve(pending_id: uuid.UUID) -> list[NewTransfer]:
        return [
            NewTransfer(uuid7(), 4, kind=TransferKind.post_pending, pending_id=pending_id),
            t(wallet, sink, 10, kind=TransferKind.pending),
        ]

    sent: list[str] = []
    async with db.transaction() as s:
        driver = await driver_in_transaction(s)
        assert driver is not None
        # A first batch on this connection, not counted: asyncpg looks up the types of its
        # results (the rows of the read) once per connection.
        [_, warm] = await post_transfers(s, post_and_reserve(pid))
        driver.add_query_logger(lambda query: sent.append(query.query))
        outcomes = await post_transfers(s, post_and_reserve(warm.id))
        await asyncio.sleep(0)  # asyncpg reports its statements from the event loop
        assert [o.result for o in outcomes] == [R.ok, R.ok]
    assert len(sent) == 2, sent
    async with db.read() as s:
        w = await ledger_account(s, wallet)
        assert (w.debits_pending, w.debits_posted) == (10, 8)
        assert await pending_status_of(s, pid) == PendingStatus.posted
        assert await pending_status_of(s, warm.id) == PendingStatus.posted


@pytest.mark.postgres_only("its driver connection")
async def test_a_repository_kept_across_a_commit_writes_in_the_new_transaction(
    db: Database,
) -> None:
    """The repository's asyncpg connection is the one of the session's current transaction:
    after a commit it is looked up again (the old one may be serving someone else by then), so
    what it writes is rolled back with the transaction it was written in."""

    async def setup(s: AsyncSession) -> uuid.UUID:
        _, wallet = await funded(s, 100)
        return await reserve(s, wallet, await create_ledger_account(s), 10)

    pid = await db.run(setup)
    async with db.transaction() as s:
        repo = LedgerRepository(s)
        first = await repo._pg_driver()
        assert first is not None
        await s.commit()
        await s.execute(select(1))  # a new transaction, perhaps on another connection
        again = await repo._pg_driver()
        assert again is not None and again.is_in_transaction()
        assert s.sync_session.get_transaction() is repo._driver_of
        assert await repo.write_batch([], [], {pid: PendingStatus.voided}) == (set(), {pid})
        await s.rollback()
    async with db.read() as s:
        assert await pending_status_of(s, pid) == PendingStatus.pending


async def test_timed_out_reservation_cannot_be_posted_and_is_released_by_the_sweep(
    session: AsyncSession,
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock.freeze(start)
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = await reserve(session, wallet, sink, 60, timeout_s=30)
    assert await expire_pending_transfers(session, now=start + timedelta(seconds=29)) == 0
    clock.freeze(start + timedelta(seconds=31))
    [o] = await create_transfers(
        session, [NewTransfer(uuid7(), 10, kind=TransferKind.post_pending, pending_id=pid)]
    )
    assert o.result is R.pending_transfer_expired
    assert (await ledger_account(session, wallet)).debits_pending == 60
    assert await expire_pending_transfers(session) == 1
    w = await ledger_account(session, wallet)
    assert (w.debits_pending, w.balance) == (0, 100)
    assert await expire_pending_transfers(session) == 0
    row = (
        await session.execute(select(LedgerTransfer).where(LedgerTransfer.pending_id == pid))
    ).scalar_one()
    assert (row.kind, row.amount) == ("expire_pending", 60)
    [o] = await create_transfers(
        session, [NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=pid)]
    )
    assert o.result is R.pending_transfer_expired


async def test_replayed_pending_transfer_compares_its_timeout(session: AsyncSession) -> None:
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    pid = uuid7()
    first = t(wallet, sink, 10, kind=TransferKind.pending, timeout_s=60, id=pid)
    await post_transfers(session, [first])
    assert (await create_transfers(session, [first]))[0].result is R.exists
    other = t(wallet, sink, 10, kind=TransferKind.pending, timeout_s=61, id=pid)
    assert (await create_transfers(session, [other]))[0].result is R.exists_with_different_fields


@pytest.mark.parametrize("change", ["pending_id", "kind", "amount", "debit", "unit"])
async def test_replayed_resolution_with_other_fields_is_an_error(
    session: AsyncSession, change: str
) -> None:
    """A post (or void) replayed under its id must name the same pending transfer, the same
    kind and amount; accounts and unit, when given, must be the pending transfer's."""
    _, wallet = await funded(session, 100)
    sink = await create_ledger_account(session)
    first, second = await reserve(session, wallet, sink, 30), await reserve(session, wallet, sink, 30)
    tid = uuid7()
    post = NewTransfer(tid, 10, kind=TransferKind.post_pending, pending_id=first)
    assert (await create_transfers(session, [post]))[0].result is R.ok
    assert (await create_transfers(session, [post]))[0].result is R.exists
    with_accounts = NewTransfer(
        tid, 10, "USD", wallet, sink, kind=TransferKind.post_pending, pending_id=first
    )
    assert (await create_transfers(session, [with_accounts]))[0].result is R.exists
    variants = {
        "pending_id": replace(post, pending_id=second),
        "kind": replace(post, kind=TransferKind.void_pending, amount=None),
        "amount": replace(post, amount=11),
        "debit": replace(with_accounts, debit_account_id=sink, credit_account_id=wallet),
        "unit": replace(post, unit="CNY"),
    }
    before = await ledger_account(session, wallet)
    [outcome] = await create_transfers(session, [variants[change]])
    assert outcome.result is R.exists_with_different_fields
    after = await ledger_account(session, wallet)
    assert (after.debits_pending, after.debits_posted) == (
        before.debits_pending,
        before.debits_posted,
    )
    assert await pending_status_of(session, second) == PendingStatus.pending


async def test_postgres_fast_path_runs_inside_the_callers_transaction(fresh_db: Database) -> None:
    """The one-statement path talks to asyncpg directly: it must still be in the session's
    transaction (rolled back with it), and it must really be taken."""
    db = fresh_db
    if db.dialect != "postgresql":
        pytest.skip("the one-statement path is PostgreSQL's")

    async def setup(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID]:
        return await funded(s, 100)

    _, wallet = await db.run(setup)
    sink = await db.run(create_ledger_account)
    transfer = t(wallet, sink, 40)
    async with db.transaction() as s:
        assert await driver_in_transaction(s) is not None
        assert [o.result for o in await create_transfers(s, [transfer])] == [R.ok]
        assert (await ledger_account(s, wallet)).balance == 60
        await s.rollback()
    async with db.read() as s:
        assert (await ledger_account(s, wallet)).balance == 100
        assert await LedgerRepository(s).get_transfers([transfer.id]) == {}


@pytest.mark.postgres_only("statements straight to asyncpg exist only there")
async def test_statements_sent_straight_to_the_driver_see_what_the_session_holds_unflushed(
    session: AsyncSession,
) -> None:
    """An account added to the session and not yet flushed, then moved in one statement sent
    straight to asyncpg (the one-statement path): the statement must find it, as SQLAlchemy's
    own query would after its autoflush."""
    _, wallet = await funded(session, 100)
    sink = uuid7()
    session.add(
        LedgerAccount(id=sink, unit="USD", code="test", debits_must_not_exceed_credits=False,
                      credits_must_not_exceed_debits=False, debits_pending=0, debits_posted=0,
                      credits_pending=0, credits_posted=0, created_at=datetime.now(UTC))
    )
    assert session.new
    driver = await driver_in_transaction(session)
    assert driver is not None and not session.new
    assert await driver.fetchval("SELECT count(*) FROM ledger_accounts WHERE id = $1", sink) == 1
    assert [o.result for o in await create_transfers(session, [t(wallet, sink, 30)])] == [R.ok]
    assert (await ledger_account(session, sink)).credits_posted == 30


async def test_a_large_batch_moves_reserves_and_replays_like_a_small_one(
    session: AsyncSession,
) -> None:
    """Batches of many transfers (a batch import's chunk) are written as arrays on PostgreSQL:
    the same results, the same totals, replays recognised among new transfers."""
    source = await create_ledger_account(session)
    sink = await create_ledger_account(session)
    wallets = [await create_ledger_account(session, bounded="debits") for _ in range(80)]
    fill = [t(source, w, 100) for w in wallets]
    assert {o.result for o in await create_transfers(session, fill)} == {R.ok}
    spend = [t(w, sink, 30) for w in wallets]
    spend += [t(w, sink, 10, kind=TransferKind.pending, timeout_s=60) for w in wallets]
    assert [o.result for o in await create_transfers(session, spend)] == [R.ok] * 160
    # Replays among new transfers: inserted, found existing, and evaluated again.
    again = spend[:40] + [t(w, sink, 5) for w in wallets] + [t(wallets[0], sink, 1000)]
    results = [o.result for o in await create_transfers(session, again)]
    assert results == [R.exists] * 40 + [R.ok] * 80 + [R.exceeds_credits]
    for w in wallets:
        account = await ledger_account(session, w)
        assert (account.credits_posted, account.debits_posted, account.debits_pending) == (
            100,
            35,
            10,
        )
    reserved = await LedgerRepository(session).get_transfers([x.id for x in spend[80:]])
    assert {r["pending_status"] for r in reserved.values()} == {PendingStatus.pending.value}
    assert all(
        r["timeout_at"] == r["created_at"] + timedelta(seconds=60) for r in reserved.values()
    )
    books = await verify_ledger(session)
    assert books.ok, books.violations
