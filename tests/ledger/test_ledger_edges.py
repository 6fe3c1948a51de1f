"""The ledger at its edges: damage `verify_ledger` must see, accounts `ensure_accounts` must
refuse, races on PostgreSQL, and one scenario that gives the same books on both databases.

(From a review of the ledger core; each test states the requirement and what was wrong.)"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.ledger.audit import verify_ledger
from simcharge.ledger.models import LedgerTransfer, TransferKind
from simcharge.ledger.service import (
    MAX_AMOUNT,
    AccountExistsDifferently,
    NewAccount,
    NewTransfer,
    TransferResult,
    commit_transfers,
    create_transfers,
    ensure_accounts,
    expire_pending_transfers,
    post_transfers,
    system_account,
)
from tests.factories import create_ledger_account, ledger_account, transfer_count
from tests.ledger.test_properties import check_invariants
from tests.ledger.test_service import funded, t

R = TransferResult


def _key(session: AsyncSession, value: uuid.UUID) -> object:
    return value if session.bind.dialect.name == "postgresql" else value.hex  # type: ignore[attr-defined]


# --- verify -------------------------------------------------------------------------------------


async def test_a_pending_only_mismatch_is_reported(session: AsyncSession) -> None:
    """A stored total that differs from its transfers only in the pending columns (both sides,
    so every unit still sums to zero) is reported for each account."""
    _, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    await post_transfers(session, [t(wallet, sink, 100, kind=TransferKind.pending)])
    await session.execute(
        text("UPDATE ledger_accounts SET debits_pending = debits_pending - 40 WHERE id = :id"),
        {"id": _key(session, wallet)},
    )
    await session.execute(
        text("UPDATE ledger_accounts SET credits_pending = credits_pending - 40 WHERE id = :id"),
        {"id": _key(session, sink)},
    )
    report = await verify_ledger(session)
    assert not report.ok
    assert len(report.mismatched) == 2


async def test_verify_reports_a_transfer_between_accounts_that_do_not_exist(
    session: AsyncSession,
) -> None:
    """A transfer naming accounts that do not exist (damage, a bad restore) is a violation, one
    per missing account. `ledger_transfers` has no foreign keys; `verify_ledger` joined from the
    accounts and so never saw such a transfer: the books 'balanced'."""
    await funded(session, 1000)
    debit, credit = uuid7(), uuid7()
    session.add(LedgerTransfer(id=uuid7(), debit_account_id=debit, credit_account_id=credit,
                               amount=500, unit="USD", kind="posted", code="damage"))
    await session.flush()
    report = await verify_ledger(session)
    assert not report.ok
    assert sorted(report.missing_accounts) == sorted(
        f"{a} does not exist, yet transfers move its units" for a in (debit, credit))
    assert report.mismatched == []


async def test_verify_reports_a_post_larger_than_its_reservation(session: AsyncSession) -> None:
    """A `post_pending` row that posts more than its reservation (which the ledger refuses:
    `exceeds_pending_transfer_amount`) is a violation, even with totals damaged to agree with
    it. Resolutions were never compared with their reservations: every sum matched, so
    `verify_ledger` called the books sound."""
    _, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    pid = uuid7()
    await post_transfers(session, [t(wallet, sink, 100, id=pid, kind=TransferKind.pending)])
    await post_transfers(
        session, [NewTransfer(uuid7(), 100, kind=TransferKind.post_pending, pending_id=pid)]
    )
    # Damage: the post says 300, and the totals were made to agree.
    await session.execute(
        text("UPDATE ledger_transfers SET amount = 300 WHERE pending_id = :p"),
        {"p": _key(session, pid)},
    )
    await session.execute(
        text("UPDATE ledger_accounts SET debits_posted = debits_posted + 200 WHERE id = :id"),
        {"id": _key(session, wallet)},
    )
    await session.execute(
        text("UPDATE ledger_accounts SET credits_posted = credits_posted + 200 WHERE id = :id"),
        {"id": _key(session, sink)},
    )
    report = await verify_ledger(session)
    assert report.mismatched == []
    [fault] = report.bad_resolutions
    assert f"reservation {pid}" in fault
    assert "reserved 100, less than the 300 posted" in fault


async def test_verify_reports_a_reservation_still_pending_after_its_void(
    session: AsyncSession,
) -> None:
    """A reservation whose status still says `pending` though a `void_pending` row resolved it
    (the totals still holding it, so every sum agrees) is a violation: the sweep would later
    try to expire it and hit the unique `pending_id` index forever. A reservation's status was
    never compared with the row that resolves it."""
    _, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    pid = uuid7()
    await post_transfers(session, [t(wallet, sink, 100, id=pid, kind=TransferKind.pending)])
    session.add(LedgerTransfer(id=uuid7(), debit_account_id=wallet, credit_account_id=sink,
                               amount=100, unit="USD", kind="void_pending", pending_id=pid,
                               code="damage"))
    await session.flush()
    report = await verify_ledger(session)
    [fault] = report.bad_resolutions
    assert fault.endswith("stands pending"), fault


async def test_verify_reports_each_way_a_resolution_can_disagree_with_its_reservation(
    session: AsyncSession,
) -> None:
    """Each resolving row is checked against its reservation: the reservation exists and is a
    pending transfer; a void releases exactly what was reserved; the accounts and unit are the
    reservation's; and a reservation marked resolved has a row that resolves it."""
    _, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    other = await create_ledger_account(session)
    voided, posted, lost, plain = uuid7(), uuid7(), uuid7(), uuid7()
    await post_transfers(session, [
        t(wallet, sink, 100, id=voided, kind=TransferKind.pending),
        t(wallet, sink, 100, id=posted, kind=TransferKind.pending),
        t(wallet, sink, 50, id=lost, kind=TransferKind.pending),
        t(wallet, sink, 10, id=plain),
        NewTransfer(uuid7(), kind=TransferKind.void_pending, pending_id=voided),
        NewTransfer(uuid7(), 60, kind=TransferKind.post_pending, pending_id=posted),
    ])
    assert (await verify_ledger(session)).ok
    # Damage, each kind once (sums left aside: only the resolutions are looked at here).
    await session.execute(text("UPDATE ledger_transfers SET amount = 90 WHERE pending_id = :p"),
                          {"p": _key(session, voided)})
    await session.execute(
        text("UPDATE ledger_transfers SET credit_account_id = :o WHERE pending_id = :p"),
        {"o": _key(session, other), "p": _key(session, posted)})
    await session.execute(
        text("UPDATE ledger_transfers SET pending_status = 'expired' WHERE id = :p"),
        {"p": _key(session, lost)})
    gone = uuid7()
    session.add_all([
        LedgerTransfer(id=uuid7(), debit_account_id=wallet, credit_account_id=sink, amount=5,
                       unit="USD", kind="void_pending", pending_id=gone, code="damage"),
        LedgerTransfer(id=uuid7(), debit_account_id=wallet, credit_account_id=sink, amount=10,
                       unit="USD", kind="void_pending", pending_id=plain, code="damage"),
    ])
    await session.flush()
    faults = sorted((await verify_ledger(session)).bad_resolutions)
    assert len(faults) == 5, faults
    expected = {
        voided: "reserved 100, not the 90 released",
        posted: "names other accounts or another unit",
        lost: "is marked expired but no transfer resolves it",
        gone: "does not exist",
        plain: "is a posted transfer, not a pending one",
    }
    for pid, why in expected.items():
        assert any(f"reservation {pid}" in f and why in f for f in faults), (pid, faults)


async def test_a_reservation_past_its_timeout_is_counted_not_a_violation(
    session: AsyncSession,
) -> None:
    """Between two runs of the sweep a reservation past its timeout is normal: `verify_ledger`
    counts it (`overdue_reservations`) and the books still verify. (The CLI's help and the
    README said `ledger verify` failed on one; it never did.)"""
    _, wallet = await funded(session, 1000)
    sink = await create_ledger_account(session)
    await post_transfers(session, [t(wallet, sink, 70, kind=TransferKind.pending, timeout_s=60)])
    later = await verify_ledger(session, now=utcnow() + timedelta(minutes=5))
    assert later.ok
    assert (later.open_reservations, later.overdue_reservations) == (1, 1)


# --- accounts -----------------------------------------------------------------------------------


async def test_ensure_accounts_leaves_an_account_that_exists_as_asked(
    session: AsyncSession,
) -> None:
    """The same accounts ensured again (a retried top-up, the next charge) change nothing and
    say nothing, whether all, some or none of them exist."""
    known = system_account(f"edges:{uuid.uuid4()}", "USD", "test")
    await ensure_accounts(session, [known])
    fresh = NewAccount(unit="DATA_B", code="bucket", line_id=uuid7(),
                       debits_must_not_exceed_credits=True)
    await ensure_accounts(session, [known, fresh])
    await ensure_accounts(session, [fresh, known])
    assert (await ledger_account(session, fresh.id)).unit == "DATA_B"


@pytest.mark.parametrize(
    ("field", "value"),
    [("unit", "EUR"), ("code", "other"), ("line_id", uuid.UUID(int=7)),
     ("debits_must_not_exceed_credits", True), ("credits_must_not_exceed_debits", True)],
)
async def test_ensure_accounts_refuses_an_existing_id_with_other_fields(
    session: AsyncSession, field: str, value: object
) -> None:
    """An account asked for whose id exists with another unit, code, line or bound raises
    `AccountExistsDifferently` naming the field (TigerBeetle's `exists_with_different_…`).
    It used to do nothing: the caller believed it had, say, a EUR account, and the transfers it
    then posted were refused far away (`accounts_must_have_the_same_unit`)."""
    key = f"edges:{uuid.uuid4()}"
    await ensure_accounts(session, [system_account(key, "USD", "test")])
    asked = replace(system_account(key, "USD", "test"), **{field: value})
    with pytest.raises(AccountExistsDifferently) as refused:
        await ensure_accounts(session, [asked])
    assert refused.value.fields == [field]
    assert refused.value.account_id == asked.id
    assert (await ledger_account(session, asked.id)).unit == "USD"


async def test_ensure_accounts_refuses_a_key_that_is_another_accounts_on_both_databases(
    session: AsyncSession,
) -> None:
    """The same key under another id raises `AccountExistsDifferently` naming the account that
    holds the key, on both databases. SQLite (`ON CONFLICT (id)`) raised an IntegrityError;
    PostgreSQL (`ON CONFLICT DO NOTHING`, any constraint) silently created nothing, and a
    transfer to the id then found no account."""
    key = f"edges:{uuid.uuid4()}"
    first = NewAccount(unit="USD", code="test", key=key)
    await ensure_accounts(session, [first])
    other = NewAccount(unit="USD", code="test", key=key)
    with pytest.raises(AccountExistsDifferently) as refused:
        await ensure_accounts(session, [other])
    assert (refused.value.account_id, refused.value.owner) == (other.id, first.id)
    assert refused.value.fields == []


# --- concurrency on PostgreSQL (real connections) -----------------------------------------------


async def _wallet_and_sink(db: Database, funding: int) -> tuple[uuid.UUID, uuid.UUID]:
    async def setup(s: AsyncSession) -> tuple[uuid.UUID, uuid.UUID]:
        _, wallet = await funded(s, funding)
        return wallet, await create_ledger_account(s)

    return await db.run(setup)


async def _totals(db: Database, *ids: uuid.UUID) -> list[tuple[int, int, int, int]]:
    async with db.read() as s:
        out = []
        for i in ids:
            a = await ledger_account(s, i)
            out.append((a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted))
        return out


@pytest.mark.postgres_only
async def test_racing_lone_debits_and_holds_never_overdraw(fresh_db: Database) -> None:
    """40 lone transfers (half posted via `commit_transfers`, half pending via `create_transfers`
    in a transaction) race for a wallet of 100, 7 each: exactly 14 fit."""
    wallet, sink = await _wallet_and_sink(fresh_db, 100)

    async def one(i: int) -> TransferResult:
        if i % 2:
            [o] = await commit_transfers(fresh_db, [t(wallet, sink, 7)])
            return o.result

        async def hold(s: AsyncSession) -> TransferResult:
            [o] = await create_transfers(s, [t(wallet, sink, 7, kind=TransferKind.pending)])
            return o.result

        return await fresh_db.run(hold)

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert results.count(R.ok) == 14, results
    [w, _] = await _totals(fresh_db, wallet, sink)
    assert w[0] + w[1] == 98
    async with fresh_db.read() as s:
        await check_invariants(s)
        assert (await verify_ledger(s)).ok


@pytest.mark.postgres_only
async def test_post_and_void_racing_on_one_reservation_resolve_it_once(
    fresh_db: Database,
) -> None:
    """For each of 12 reservations a post (in part) and a void race on two connections:
    exactly one of them succeeds, the other says why, and the books balance."""
    wallet, sink = await _wallet_and_sink(fresh_db, 10_000)
    pids = [uuid7() for _ in range(12)]
    await fresh_db.run(lambda s: post_transfers(
        s, [t(wallet, sink, 100, id=p, kind=TransferKind.pending) for p in pids]))

    async def resolve(pid: uuid.UUID, void: bool) -> TransferResult:
        kind = TransferKind.void_pending if void else TransferKind.post_pending
        tr = NewTransfer(uuid7(), None if void else 60, kind=kind, pending_id=pid)

        async def go(s: AsyncSession) -> TransferResult:
            [o] = await create_transfers(s, [tr])
            return o.result

        return await fresh_db.run(go)

    results = await asyncio.gather(
        *(resolve(p, v) for p in pids for v in (False, True))
    )
    for i in range(len(pids)):
        pair = results[2 * i : 2 * i + 2]
        assert pair.count(R.ok) == 1, pair
    async with fresh_db.read() as s:
        await check_invariants(s)
        assert (await verify_ledger(s)).ok


@pytest.mark.postgres_only
async def test_post_racing_the_timeout_sweep_resolves_once(fresh_db: Database) -> None:
    """A post (with a `now` before the timeout) races the sweep (after it): one wins."""
    wallet, sink = await _wallet_and_sink(fresh_db, 10_000)
    pids = [uuid7() for _ in range(10)]
    start = utcnow()
    await fresh_db.run(lambda s: post_transfers(
        s, [t(wallet, sink, 100, id=p, kind=TransferKind.pending, timeout_s=5) for p in pids],
        now=start))

    async def post(pid: uuid.UUID) -> TransferResult:
        async def go(s: AsyncSession) -> TransferResult:
            [o] = await create_transfers(
                s, [NewTransfer(uuid7(), kind=TransferKind.post_pending, pending_id=pid)],
                now=start + timedelta(seconds=4))
            return o.result

        return await fresh_db.run(go)

    async def sweep() -> int:
        return await fresh_db.run(
            lambda s: expire_pending_transfers(s, now=start + timedelta(seconds=6), limit=3))

    outs = await asyncio.gather(*(post(p) for p in pids), *(sweep() for _ in range(5)))
    posted = sum(1 for o in outs[: len(pids)] if o is R.ok)
    expired = sum(outs[len(pids):])
    # Sweep more until none is left.
    expired += await fresh_db.run(
        lambda s: expire_pending_transfers(s, now=start + timedelta(seconds=6), limit=100))
    assert posted + expired == len(pids)
    async with fresh_db.read() as s:
        await check_invariants(s)
        assert (await verify_ledger(s, now=start)).ok


@pytest.mark.postgres_only
async def test_two_batches_locking_accounts_crosswise_do_not_deadlock(
    fresh_db: Database,
) -> None:
    """Two general-path batches naming the same four accounts in opposite orders, many times
    at once, each allowed a single attempt: a deadlock would surface as an error."""

    async def setup(s: AsyncSession) -> list[uuid.UUID]:
        source = await create_ledger_account(s)
        accs = [await create_ledger_account(s, bounded="debits") for _ in range(4)]
        await post_transfers(s, [t(source, a, 1_000_000) for a in accs])
        return accs

    a, b, c, d = await fresh_db.run(setup)

    async def batch(forward: bool) -> None:
        legs = [(a, b), (c, d)] if forward else [(d, c), (b, a)]
        tr = [t(x, y, 1) for x, y in legs]
        await fresh_db.run(lambda s: create_transfers(s, tr), attempts=1)

    await asyncio.wait_for(asyncio.gather(*(batch(i % 2 == 0) for i in range(40))), 60)
    async with fresh_db.read() as s:
        await check_invariants(s)


# --- SQLite and PostgreSQL, the same scenario ---------------------------------------------------

_SEEN: dict[int, object] = {}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_same_scenario_gives_the_same_books_on_both_databases(
    session: AsyncSession, seed: int
) -> None:
    """A seeded scenario (lone transfers — PostgreSQL's one statement — and batches, chains,
    reservations posted in part, voided and timed out, replays alike and altered, amounts near
    2^63) run on each database: every result and every account's totals must be the same."""
    import random
    from datetime import UTC, datetime

    rng = random.Random(seed)

    def nid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128) | 1)

    now = datetime(2026, 1, 1, tzinfo=UTC)
    accounts = []
    for i in range(6):
        a = NewAccount(unit="USD", code=f"a{i}", id=nid(),
                       debits_must_not_exceed_credits=i in (1, 2),
                       credits_must_not_exceed_debits=i == 3)
        accounts.append(a)
    from simcharge.ledger.service import create_accounts

    await create_accounts(session, accounts)
    ids = [a.id for a in accounts]
    results: list[str] = []
    sent: list[NewTransfer] = []
    pendings: list[uuid.UUID] = []
    await create_transfers(session, [NewTransfer(nid(), 1000, "USD", ids[0], ids[1]),
                                     NewTransfer(nid(), 1000, "USD", ids[0], ids[2]),
                                     NewTransfer(nid(), 500, "USD", ids[3], ids[0])], now=now)

    def move() -> NewTransfer:
        d, c = rng.sample(range(6), 2)
        amount = rng.choice([rng.randint(1, 300), rng.randint(1, 30), MAX_AMOUNT - rng.randint(0, 3),
                             0, -1])
        pending = rng.random() < 0.4
        return NewTransfer(nid(), amount, rng.choice(["USD"] * 9 + ["EUR"]), ids[d], ids[c],
                           kind=TransferKind.pending if pending else TransferKind.posted,
                           timeout_s=rng.choice([0, 0, 5]) if pending else 0,
                           linked=rng.random() < 0.25)

    for _ in range(60):
        r = rng.random()
        if r < 0.1:
            now += timedelta(seconds=rng.randint(1, 8))
            results.append(f"expired {await expire_pending_transfers(session, now=now)}")
            continue
        if r < 0.2 and sent:
            orig = replace_linked(rng.choice(sent))
            alter = rng.choice([None, "amount", "unit", "debit"])
            if alter == "amount" and orig.amount is not None:
                orig = _replace(orig, amount=orig.amount + 1)
            elif alter == "unit" and orig.unit is not None:
                orig = _replace(orig, unit="EUR")
            elif alter == "debit" and orig.debit_account_id is not None:
                orig = _replace(orig, debit_account_id=next(
                    i for i in ids if i not in (orig.debit_account_id, orig.credit_account_id)))
            batch = [orig]
        else:
            batch = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                if pendings and rng.random() < 0.35:
                    void = rng.random() < 0.4
                    batch.append(NewTransfer(
                        nid(), None if void else rng.choice([None, rng.randint(0, 150)]),
                        kind=TransferKind.void_pending if void else TransferKind.post_pending,
                        pending_id=rng.choice(pendings), linked=rng.random() < 0.25))
                else:
                    batch.append(move())
        outcomes = await create_transfers(session, batch, now=now)
        for tr, o in zip(batch, outcomes, strict=True):
            results.append(o.result.value)
            if o.result is R.ok:
                sent.append(tr)
                if tr.kind is TransferKind.pending:
                    pendings.append(tr.id)
    totals = []
    for i in ids:
        a = await ledger_account(session, i)
        totals.append((a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted))
    fingerprint = (results, totals, await transfer_count(session))
    report = await verify_ledger(session, now=now)
    assert report.ok, report.violations
    if seed in _SEEN:
        assert _SEEN[seed] == fingerprint
    else:
        _SEEN[seed] = fingerprint


def replace_linked(tr: NewTransfer) -> NewTransfer:
    return _replace(tr, linked=False)


def _replace(tr: NewTransfer, **kw: object) -> NewTransfer:
    return replace(tr, **kw)  # type: ignore[arg-type]


@pytest.mark.postgres_only
async def test_one_id_sent_at_once_on_disjoint_accounts_is_written_once(
    fresh_db: Database,
) -> None:
    """The same transfer id sent at once by 12 transactions, each naming other accounts (so no
    row lock orders them) and alternately alone or in a batch: exactly one is written, the
    others answer `exists_with_different_fields`, and only that one moved money."""

    async def setup(s: AsyncSession) -> list[tuple[uuid.UUID, uuid.UUID]]:
        out = []
        for _ in range(12):
            _, w = await funded(s, 100)
            out.append((w, await create_ledger_account(s)))
        return out

    pairs = await fresh_db.run(setup)
    same = uuid7()

    async def send(i: int) -> TransferResult:
        w, sink = pairs[i]
        batch = [t(w, sink, 10, id=same)]
        if i % 2:
            batch = [replace_linked(batch[0]), t(w, sink, 1)]

        async def go(s: AsyncSession) -> TransferResult:
            return (await create_transfers(s, batch))[0].result

        return await fresh_db.run(go)

    results = await asyncio.gather(*(send(i) for i in range(12)))
    assert results.count(R.ok) == 1, results
    assert results.count(R.exists_with_different_fields) == 11, results
    async with fresh_db.read() as s:
        await check_invariants(s)
        assert (await verify_ledger(s)).ok
