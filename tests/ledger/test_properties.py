"""Property tests: random sequences of ledger operations keep every invariant, on both databases.

After every operation:
- per unit, the balances of all accounts sum to zero (posted and pending alike);
- no bounded account has crossed its bound;
- every stored total equals what its transfers add up to;
- every pending transfer's status agrees with the transfers that resolved it;
- a refused transfer (or a failed linked chain) left no trace, and an accepted one is stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from simcharge.kit.ids import uuid7
from simcharge.ledger.models import TransferKind
from simcharge.ledger.service import (
    NewAccount,
    NewTransfer,
    TransferResult,
    create_accounts,
    create_transfers,
    expire_pending_transfers,
)

UNITS = ("USD", "VOICE_S")
# Per unit: an unbounded source, two wallets (debits <= credits) and a pool (credits <= debits).
LAYOUT = ("source", "wallet", "wallet", "pool")


@dataclass(frozen=True)
class Move:
    unit: int
    debit: int
    credit: int
    amount: int
    wrong_unit: bool
    pending: bool
    timeout: int
    linked: bool


@dataclass(frozen=True)
class Resolve:
    """Post (part of) or void a pending transfer: one made earlier, or one earlier in the same
    batch. In a batch it may be linked, like a move, so failed chains undo resolutions too."""

    which: int
    amount: int | None
    void: bool
    linked: bool


@dataclass(frozen=True)
class Tick:
    seconds: int


@dataclass(frozen=True)
class Replay:
    """Send an accepted transfer again: as it was, or with one field changed (`alter`)."""

    which: int
    alter: str | None


# Mostly well-formed moves between two accounts of one unit; now and then an invalid one
# (zero or negative amount, the wrong unit, the same account twice, an open chain).
_pairs = [(d, c) for d in range(len(LAYOUT)) for c in range(len(LAYOUT)) if d != c]
moves = st.builds(
    lambda unit, pair, same, amount, wrong_unit, pending, timeout, linked: Move(
        unit, pair[0], pair[0] if same else pair[1], amount, wrong_unit, pending, timeout, linked
    ),
    unit=st.integers(0, len(UNITS) - 1),
    pair=st.sampled_from(_pairs),
    same=st.sampled_from([False] * 19 + [True]),
    amount=st.one_of(st.integers(1, 400), st.integers(1, 40), st.sampled_from([0, -3])),
    wrong_unit=st.sampled_from([False] * 19 + [True]),
    pending=st.booleans(),
    timeout=st.sampled_from([0, 0, 5, 30]),
    linked=st.sampled_from([False, False, False, True]),
)
resolutions = st.builds(
    Resolve,
    which=st.integers(0, 1000),
    amount=st.one_of(st.none(), st.integers(0, 320)),
    void=st.booleans(),
    linked=st.sampled_from([False, False, True]),
)
operations = st.lists(
    st.one_of(
        # A batch: moves, and posts or voids among them (linked chains mix both).
        st.lists(st.one_of(moves, moves, resolutions), min_size=1, max_size=5),
        st.builds(Tick, seconds=st.integers(1, 40)),
        st.builds(
            Replay,
            which=st.integers(0, 1000),
            alter=st.sampled_from([None, None, "code", "kind", "key"]),
        ),
    ),
    min_size=1,
    max_size=25,
)


class Run:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.accounts: list[tuple[uuid.UUID, str]] = []
        self.sent: list[NewTransfer] = []
        self.pending: list[uuid.UUID] = []

    async def setup(self) -> None:
        new: list[NewAccount] = []
        for unit in UNITS:
            for role in LAYOUT:
                a = NewAccount(
                    unit=unit,
                    code=role,
                    debits_must_not_exceed_credits=role == "wallet",
                    credits_must_not_exceed_debits=role == "pool",
                )
                new.append(a)
                self.accounts.append((a.id, unit))
        await create_accounts(self.session, new)
        # Fund the wallets and give the pool room to be credited.
        opening = []
        for u, unit in enumerate(UNITS):
            source, w1, w2, pool = (self.accounts[u * len(LAYOUT) + i][0] for i in range(4))
            opening += [
                NewTransfer(uuid7(), 500, unit, source, w1),
                NewTransfer(uuid7(), 500, unit, source, w2),
                NewTransfer(uuid7(), 300, unit, pool, source),
            ]
        outcomes = await create_transfers(self.session, opening, now=self.now)
        assert all(o.result is TransferResult.ok for o in outcomes)

    def to_transfer(self, m: Move) -> NewTransfer:
        debit, unit = self.accounts[m.unit * len(LAYOUT) + m.debit]
        credit, _ = self.accounts[m.unit * len(LAYOUT) + m.credit]
        if m.wrong_unit:
            unit = next(u for u in UNITS if u != unit)
        return NewTransfer(
            id=uuid7(),
            amount=m.amount,
            unit=unit,
            debit_account_id=debit,
            credit_account_id=credit,
            kind=TransferKind.pending if m.pending else TransferKind.posted,
            timeout_s=m.timeout if m.pending else 0,
            linked=m.linked,
            code="prop",
        )

    def to_resolution(self, r: Resolve, candidates: list[uuid.UUID]) -> NewTransfer:
        return NewTransfer(
            id=uuid7(),
            amount=None if r.void else r.amount,
            kind=TransferKind.void_pending if r.void else TransferKind.post_pending,
            pending_id=candidates[r.which % len(candidates)],
            linked=r.linked,
            code="prop",
        )

    def altered(self, t: NewTransfer, alter: str | None) -> NewTransfer:
        """`t` with one field changed that a replay is compared on (each change valid on its
        own, so that the answer can only be `exists_with_different_fields`)."""
        if alter == "code":
            return replace(t, code="altered")
        swapped = {
            TransferKind.posted: TransferKind.pending,
            TransferKind.pending: TransferKind.posted,
            TransferKind.post_pending: TransferKind.void_pending,
            TransferKind.void_pending: TransferKind.post_pending,
        }
        if alter == "kind":
            return replace(t, kind=swapped[t.kind], timeout_s=0)
        if alter == "key":
            if t.pending_id is not None:  # another pending transfer
                return replace(t, pending_id=uuid7())
            other = next(
                a for a, unit in self.accounts
                if unit == t.unit and a not in (t.debit_account_id, t.credit_account_id)
            )
            return replace(t, debit_account_id=other)
        return t

    async def apply(self, op: Any) -> None:
        batch: list[NewTransfer]
        if isinstance(op, list):
            batch = []
            for item in op:
                if isinstance(item, Move):
                    batch.append(self.to_transfer(item))
                    continue
                # Pending transfers made before, and those made earlier in this batch.
                candidates = self.pending + [
                    b.id for b in batch if b.kind is TransferKind.pending
                ]
                if candidates:
                    batch.append(self.to_resolution(item, candidates))
            if not batch:
                return
        elif isinstance(op, Tick):
            self.now += timedelta(seconds=op.seconds)
            before = await snapshot(self.session)
            released = await expire_pending_transfers(self.session, now=self.now)
            after = await snapshot(self.session)
            assert (released == 0) == (before == after)
            return
        else:
            if not self.sent:
                return
            original = replace(self.sent[op.which % len(self.sent)], linked=False)
            batch = [self.altered(original, op.alter)]
        before = await snapshot(self.session)
        outcomes = await create_transfers(self.session, batch, now=self.now)
        stored = await stored_ids(self.session, [t.id for t in batch])
        for transfer, outcome in zip(batch, outcomes, strict=True):
            if outcome.result is TransferResult.ok:
                assert transfer.id in stored
                self.sent.append(transfer)
                if transfer.kind is TransferKind.pending:
                    self.pending.append(transfer.id)
            elif outcome.result in (
                TransferResult.exists,
                TransferResult.exists_with_different_fields,
            ):
                assert transfer.id in stored
            else:
                assert transfer.id not in stored, outcome
        if not any(o.result is TransferResult.ok for o in outcomes):
            assert await snapshot(self.session) == before, "a refused batch changed balances"
        if isinstance(op, Replay) and op.alter is None:
            assert outcomes[0].result is TransferResult.exists
        if isinstance(op, Replay) and op.alter is not None:
            assert outcomes[0].result is TransferResult.exists_with_different_fields


async def snapshot(session: AsyncSession) -> list[tuple[Any, ...]]:
    rows = await session.execute(
        text(
            "SELECT id, debits_pending, debits_posted, credits_pending, credits_posted "
            "FROM ledger_accounts ORDER BY id"
        )
    )
    return [tuple(r) for r in rows]


async def stored_ids(session: AsyncSession, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    from simcharge.ledger.repository import LedgerRepository

    return set(await LedgerRepository(session).get_transfers(ids))


async def check_invariants(session: AsyncSession) -> None:
    sums = await session.execute(
        text(
            "SELECT unit, SUM(credits_posted - debits_posted), SUM(credits_pending - debits_pending) "
            "FROM ledger_accounts GROUP BY unit"
        )
    )
    for unit, posted, pending in sums:
        assert (posted, pending) == (0, 0), f"{unit} does not balance: {posted}, {pending}"

    crossed = (
        await session.execute(
            text(
                "SELECT count(*) FROM ledger_accounts WHERE "
                "(debits_must_not_exceed_credits AND debits_pending + debits_posted > credits_posted) OR "
                "(credits_must_not_exceed_debits AND credits_pending + credits_posted > debits_posted)"
            )
        )
    ).scalar_one()
    assert crossed == 0

    mismatched = (
        await session.execute(
            text("""
        WITH moves AS (
            SELECT debit_account_id AS account, amount AS dp, 0 AS dpo, 0 AS cp, 0 AS cpo
              FROM ledger_transfers WHERE kind = 'pending' AND pending_status = 'pending'
            UNION ALL
            SELECT credit_account_id, 0, 0, amount, 0
              FROM ledger_transfers WHERE kind = 'pending' AND pending_status = 'pending'
            UNION ALL
            SELECT debit_account_id, 0, amount, 0, 0
              FROM ledger_transfers WHERE kind IN ('posted', 'post_pending')
            UNION ALL
            SELECT credit_account_id, 0, 0, 0, amount
              FROM ledger_transfers WHERE kind IN ('posted', 'post_pending')
        ), derived AS (
            SELECT account, SUM(dp) AS dp, SUM(dpo) AS dpo, SUM(cp) AS cp, SUM(cpo) AS cpo
              FROM moves GROUP BY account
        )
        SELECT count(*) FROM ledger_accounts a LEFT JOIN derived d ON d.account = a.id
         WHERE a.debits_pending <> COALESCE(d.dp, 0) OR a.debits_posted <> COALESCE(d.dpo, 0)
            OR a.credits_pending <> COALESCE(d.cp, 0) OR a.credits_posted <> COALESCE(d.cpo, 0)
    """)
        )
    ).scalar_one()
    assert mismatched == 0, "a stored balance differs from the sum of its transfers"

    inconsistent = (
        await session.execute(
            text("""
        SELECT count(*) FROM ledger_transfers p
         WHERE p.kind = 'pending' AND (
            (p.pending_status = 'pending') <> NOT EXISTS (
                SELECT 1 FROM ledger_transfers r WHERE r.pending_id = p.id)
            OR EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = p.id AND r.kind <>
                CASE p.pending_status WHEN 'posted' THEN 'post_pending'
                     WHEN 'voided' THEN 'void_pending' ELSE 'expire_pending' END))
    """)
        )
    ).scalar_one()
    assert inconsistent == 0, "a pending transfer's status disagrees with its resolution"


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(ops=operations)
async def test_random_operations_keep_the_ledger_sound(
    connection: AsyncConnection, ops: list[Any]
) -> None:
    savepoint = await connection.begin_nested()
    try:
        async with AsyncSession(bind=connection, expire_on_commit=False) as session:
            run = Run(session)
            await run.setup()
            for op in ops:
                await run.apply(op)
                await check_invariants(session)
    finally:
        await savepoint.rollback()
